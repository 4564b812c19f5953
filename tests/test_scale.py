"""Scale-out: the GPU each job asks for, on Modal and through Snakemake executor plugins (SLURM),
visible in a dry run; the workflow itself is unchanged."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from labrunner.pipeline import Pipeline
from workflow_support import BIN, PLAN, load, run, snakemake, snapshot, write_project

pytestmark = pytest.mark.slow

GPU_PLAN = (PLAN.replace("defaults: {timeout_min: 2}", "defaults: {timeout_min: 2, backend: modal}")
            .replace("    type: claim\n", "    type: claim\n    gpu: A10G\n")
            .replace("  e2-next:\n", "  e2-next:\n    gpu: H100:2\n"))


def job_resources(dry_run_output: str) -> dict[str, str]:
    """exp/run -> the resources line of each run_sub job in a dry run."""
    found = {}
    for block in dry_run_output.split("rule ")[1:]:
        if block.startswith("run_sub:"):
            wildcards = re.search(r"wildcards: exp=([^,\s]+), run=(\S+)", block)
            resources = re.search(r"resources: ([^\n]*)", block)
            assert wildcards and resources, block
            found[f"{wildcards[1]}/{wildcards[2]}"] = resources[1]
    return found


@pytest.fixture
def gpu_project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "proj", GPU_PLAN)


def test_scale_modal_dry_run_shows_each_jobs_gpu(gpu_project: Path) -> None:
    done = snakemake(gpu_project, "-n")
    assert done.returncode == 0, done.stdout[-2000:]
    resources = job_resources(done.stdout)
    assert "modal_gpu=A10G" in resources["e1-tiny/a"] and "gpu=0" in resources["e1-tiny/a"]
    assert "modal_gpu=H100:2" in resources["e2-next/d"]


def test_scale_stub_run_asks_for_no_gpu(gpu_project: Path) -> None:
    done = snakemake(gpu_project, "-n", "--config", "stub=true")
    assert done.returncode == 0, done.stdout[-2000:]
    assert not any("gpu" in line for line in job_resources(done.stdout).values())


def test_scale_validate_shows_each_subs_gpu(gpu_project: Path) -> None:
    done = subprocess.run([str(BIN / "labrunner"), "validate"], cwd=gpu_project, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert re.search(r"a\s+handlers/e1-tiny/a.py::a\s+\[modal gpu=A10G", done.stdout)
    assert re.search(r"d\s+handlers/e2-next/d.py::d\s+\[modal gpu=H100:2", done.stdout)


def test_scale_slurm_dry_run_maps_the_plans_gpus(gpu_project: Path) -> None:
    pytest.importorskip("snakemake_executor_plugin_slurm")
    done = snakemake(gpu_project, "-n", "--executor", "slurm", "--jobs", "10", "--config", "backend=local",
                     "--default-resources", "slurm_account=lab", "slurm_partition=gpu")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    resources = job_resources(done.stdout)
    assert set(resources) == {"e1-tiny/a", "e1-tiny/b", "e1-tiny/c", "e2-next/d"}
    assert "gpu=1, gpu_model=a10g" in resources["e1-tiny/a"] and "slurm_partition=gpu" in resources["e1-tiny/a"]
    assert "gpu=2, gpu_model=h100" in resources["e2-next/d"]


def test_scale_slurm_plugin_turns_the_resources_into_sbatch_gpus() -> None:
    utils = pytest.importorskip("snakemake_executor_plugin_slurm.utils")
    # the plugin's own translation of a job's resources (the boundary: no cluster here)
    job = SimpleNamespace(resources=SimpleNamespace(get={"gpu": 2, "gpu_model": "h100"}.get))
    assert utils.set_gres_string(job).strip() == "--gpus=h100:2"


# --- time, memory and the submitting side -------------------------------------------------------

LIMITS_PLAN = (PLAN.replace("defaults: {timeout_min: 2}", "defaults: {timeout_min: 2, mem_mb: 3000}")
               .replace("d]\n", "d]\n    timeout_min: 60\n    mem_mb: 64000\n"))


def test_scale_dry_run_shows_each_jobs_time_and_memory(tmp_path: Path) -> None:
    project = write_project(tmp_path / "proj", LIMITS_PLAN)
    done = snakemake(project, "-n")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    resources = job_resources(done.stdout)
    # timeout_min, plus W&B's 2 min of time-outs and the 2 min margin
    assert "runtime=6" in resources["e1-tiny/a"] and "mem_mb=3000" in resources["e1-tiny/a"]
    assert "runtime=64" in resources["e2-next/d"] and "mem_mb=64000" in resources["e2-next/d"]


def test_scale_jobs_leave_parse_time_work_to_the_submitting_side(tmp_path: Path) -> None:
    project = write_project(tmp_path / "proj")
    assert run(project).returncode == 0
    results = project / "results" / "e1-tiny"
    damaged = results / "b" / "result.yaml"
    damaged.write_text(damaged.read_text()[:40])
    (results / "c" / "result.yaml").unlink()  # deleted after it was written
    before = snapshot(results)

    # a job reads the Snakefile in remote mode, as a SLURM job does: it moves and rewrites nothing
    job = snakemake(project, "--mode", "remote", "-n", "results/e1-tiny/a/result.yaml")
    assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-2000:]
    assert snapshot(results) == before

    main = snakemake(project, "-n")
    assert "results/e1-tiny/b/result.yaml is damaged" in main.stderr
    assert "results/e1-tiny/c/result.yaml is gone although its last attempt completed" in main.stderr
    assert not damaged.exists()
    assert load(results / "c" / "failure.yaml")["error"]["type"] == "ResultMissing"

    # a job checks only its own handler (`labrunner run` does): the submitting side checked them all
    (project / "handlers" / "e1-tiny" / "b.py").unlink()
    assert snakemake(project, "--mode", "remote", "-n", "results/e1-tiny/a/result.yaml").returncode == 0
    main = snakemake(project, "-n")
    assert main.returncode != 0 and "handlers/e1-tiny/b.py" in main.stdout + main.stderr


def test_scale_executor_without_a_shared_file_system_is_refused(tmp_path: Path) -> None:
    project = write_project(tmp_path / "proj")
    done = snakemake(project, "-n", "--shared-fs-usage", "persistence", "sources", "software-deployment")
    assert done.returncode != 0
    assert "labrunner needs the results folder on a file system shared with the jobs" in done.stdout + done.stderr
    assert not (project / "results").exists()


PATTERN_PLAN = """\
project: {name: Sweep}
wandb: {mode: disabled}
experiments:
  e1:
    success_criteria:
      acc: {target: 0.9, acceptable: 0.8}
    sub_experiments: [x, y]
"""


def plain_handler(name: str, acc: float) -> str:
    return f'def {name}(runner):\n    return {{"finding": "ok", "metrics": {{"acc": {acc}}}}}\n'


def dry_run_jobs(project: Path, *args: str) -> set[str]:
    done = snakemake(project, "-n", *args)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return set(re.findall(r"output: (results/\S+/result\.yaml)", done.stdout))


def test_scale_handlers_at_their_place_are_one_input_pattern_with_the_same_reruns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a pattern costs Snakemake nothing per job, where an input function is called for every job
    project = write_project(tmp_path / "proj", PATTERN_PLAN)
    (project / "handlers" / "e1").mkdir()
    for name in ("x", "y"):
        (project / "handlers" / "e1" / f"{name}.py").write_text(plain_handler(name, 0.9))
    monkeypatch.chdir(project)
    assert Pipeline.from_config({}).handler_input_pattern == "handlers/{exp}/{run}.py"

    # a run the plan does not have is named, although no input function is there to say so
    done = snakemake(project, "-n", "results/e1/zz/result.yaml")
    assert done.returncode != 0 and "e1/zz is not a sub-experiment run of the plan" in done.stdout + done.stderr

    assert run(project).returncode == 0
    (project / "handlers" / "e1" / "x.py").write_text(plain_handler("x", 0.95))
    assert dry_run_jobs(project) == {"results/e1/x/result.yaml"}  # an edited handler reruns its sub alone

    # a handler that imports a project module: one input function again, so the module is an input
    (project / "handlers" / "e1" / "y.py").write_text("from handlers.helpers import scale\n" + plain_handler("y", 0.9))
    assert Pipeline.from_config({}).handler_input_pattern is None
    assert run(project).returncode == 0
    (project / "handlers" / "helpers.py").write_text("def scale(x):\n    return 2 * x\n")
    assert dry_run_jobs(project) == {"results/e1/y/result.yaml"}


def test_scale_a_profile_without_threads_is_told_how_to_make_aggregates_fast(tmp_path: Path) -> None:
    project = write_project(tmp_path / "proj", PATTERN_PLAN)
    (project / "handlers" / "e1").mkdir()
    for name in ("x", "y"):
        (project / "handlers" / "e1" / f"{name}.py").write_text(plain_handler(name, 0.9))
    done = run(project)
    assert done.returncode == 0 and "force-use-threads" not in done.stderr, done.stderr[-2000:]

    config = project / "profiles" / "default" / "config.yaml"
    config.write_text(config.read_text().replace("force-use-threads: true\n", ""))
    (project / "research" / "research_plan.yaml").write_text(PATTERN_PLAN + "# criteria edited\n")
    done = run(project)
    assert done.returncode == 0, done.stderr[-2000:]  # slower, and still right
    assert "lacks `force-use-threads: true`" in done.stderr and "profiles/default/config.yaml" in done.stderr


def test_scale_the_next_invocation_takes_the_records_as_parsed_and_follows_every_change(tmp_path: Path) -> None:
    # every aggregation reads every record; what a run parsed is kept for the next one (by the
    # text's digest, see labrunner.parsed), which must still see each record as it is now
    project = write_project(tmp_path / "proj", PATTERN_PLAN)
    (project / "handlers" / "e1").mkdir()
    for name in ("x", "y"):
        (project / "handlers" / "e1" / f"{name}.py").write_text(plain_handler(name, 0.9))
    assert run(project).returncode == 0
    store = project / ".snakemake" / "labrunner" / "parsed-yaml.jsonl"
    kept = store.read_text()
    assert kept.count('"status":"completed","experiment":"e1"') == 2  # both result records

    (project / "handlers" / "e1" / "x.py").write_text(plain_handler("x", 0.95))
    done = run(project)
    assert done.returncode == 0, done.stderr[-2000:]
    results = load(project / "results" / "e1" / "results.yaml")
    assert results["subs"]["x"]["metrics"]["acc"] == 0.95 and results["subs"]["y"]["metrics"]["acc"] == 0.9
    assert "0.95" in (project / "research" / "experiments" / "e1" / "FINDINGS.md").read_text()
    assert store.read_text().count('"status":"completed","experiment":"e1"') == 3  # and the new one kept
