"""Unit tests for what running under a Snakemake executor needs: the executor and job id in every
record, the time and memory each job asks for, what a result deleted after it was written (as
Snakemake does to a job a cluster cancels as it finishes) is recorded with, and the file-system
requirement.
The real cluster runs are in test_slurm.py."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from conftest import EXP, PLAN_FILE, SUB, ProjectFactory, RunHandler, one_sub_plan
from labrunner.errors import ConfigError, PlanError
from labrunner.executor import current_executor
from labrunner.findings import render_experiment_findings
from labrunner.pipeline import RUNTIME_MARGIN_MIN, Pipeline
from labrunner.plan import load_plan
from labrunner.records import read_record

OK = "def s1(runner):\n    return {'finding': 'fine', 'metrics': {'acc': 0.9}}\n"


@pytest.fixture
def in_slurm_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables SLURM sets in a job's processes."""
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURMD_NODENAME", "node7")


@pytest.fixture
def outside_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLURM_JOB_ID", "SLURMD_NODENAME"):
        monkeypatch.delenv(name, raising=False)


def test_executor_inside_a_slurm_job_is_its_job_id_and_node(in_slurm_job: None) -> None:
    assert current_executor() == {"name": "slurm", "job_id": "4242", "node": "node7"}


def test_executor_outside_a_scheduler_is_local_on_this_host(outside_slurm: None) -> None:
    assert current_executor() == {"name": "local", "node": platform.node()}


def test_executor_is_in_result_and_failure_records(run_handler: RunHandler, make_project: ProjectFactory,
                                                   in_slurm_job: None) -> None:
    root = make_project(one_sub_plan())
    failed = run_handler("def s1(runner):\n    raise ValueError('no')\n", root=root)
    assert read_record(failed.paths.failure)["executor"] == {"name": "slurm", "job_id": "4242", "node": "node7"}

    done = run_handler(OK, root=root)
    assert read_record(done.paths.result)["executor"]["job_id"] == "4242"


def test_executor_names_the_lost_slurm_job(run_handler: RunHandler, make_project: ProjectFactory,
                                           in_slurm_job: None) -> None:
    from labrunner.layout import RunPaths
    from labrunner.records import mark_running

    root = make_project(one_sub_plan())
    paths = RunPaths(root / "results" / EXP / SUB)
    paths.run_dir.mkdir(parents=True)
    mark_running(paths, "lostrun", "2024-01-01T00:00:00+00:00", 12345, "local")  # then SLURM's kill at the time limit

    lost = read_record(run_handler(OK, root=root).paths.failure)["last_failure"]
    assert lost["error"]["type"] == "Lost" and "SLURM job 4242" in lost["error"]["message"]
    assert "sacct -j 4242" in lost["error"]["hint"]


def test_executor_column_in_the_findings_appendix(tmp_path: Path) -> None:
    results = {"experiment": "e1", "status": "completed", "subs": {
        "a": {"status": "completed", "seed": 0, "backend": "local", "params": {},
              "executor": {"name": "slurm", "job_id": "17", "node": "node7"}},
        "b": {"status": "failed", "seed": 0, "params": {}, "executor": {"name": "local", "node": "laptop"}},
    }}
    text = render_experiment_findings(results, Path("research/experiments/e1/FINDINGS.md"), tmp_path,
                                      "results/e1/results.yaml").blocks["appendix"]
    assert "| Backend | Executor |" in text
    assert "| local | slurm job 17 on node7 |" in text and "| local on laptop |" in text


# --- time and memory per job ---------------------------------------------------------------------

def pipeline(make_project: ProjectFactory, plan: dict | str, monkeypatch: pytest.MonkeyPatch, **files: str) -> Pipeline:
    root = make_project(plan, {f"handlers/{EXP}/{SUB}.py": OK, **files})
    monkeypatch.chdir(root)  # Snakemake's paths are relative to where it runs
    return Pipeline(load_plan(root / PLAN_FILE), workdir=root)


def test_runtime_covers_every_attempt_wandb_and_a_margin(make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = one_sub_plan(timeout_min=10, retries=2)
    plan["wandb"].update(init_timeout_s=90, finish_timeout_s=60)
    # 3 attempts of 10 min, 2.5 min of W&B time-outs, then the margin
    assert pipeline(make_project, plan, monkeypatch).runtime_min(EXP, SUB) == 33 + RUNTIME_MARGIN_MIN


def test_mem_mb_inherits_from_defaults_and_experiment(make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = one_sub_plan()
    plan["defaults"]["mem_mb"] = 4000
    plan["experiments"][EXP]["sub_experiments"]["s2"] = {"mem_mb": 16000}
    pipe = pipeline(make_project, plan, monkeypatch, **{f"handlers/{EXP}/s2.py": OK.replace("s1", "s2")})
    assert pipe.sets_memory
    assert (pipe.mem_mb(EXP, SUB), pipe.mem_mb(EXP, "s2")) == (4000, 16000)


def test_mem_mb_and_timeout_in_the_plan_summary(make_project: ProjectFactory) -> None:
    from labrunner.summary import plan_summary

    root = make_project(one_sub_plan(mem_mb=16000), {f"handlers/{EXP}/{SUB}.py": OK})
    assert f"{SUB}  " in plan_summary(load_plan(root / PLAN_FILE))
    assert "[local, 1 min, 16000 MB]" in plan_summary(load_plan(root / PLAN_FILE))


def test_mem_mb_unset_everywhere_asks_for_none(make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not pipeline(make_project, one_sub_plan(), monkeypatch).sets_memory


def test_mem_mb_for_some_subs_only_is_a_plan_error(make_project: ProjectFactory) -> None:
    plan = one_sub_plan(mem_mb=8000)
    plan["experiments"][EXP]["sub_experiments"]["s2"] = {}
    root = make_project(plan, {f"handlers/{EXP}/{SUB}.py": OK, f"handlers/{EXP}/s2.py": OK.replace("s1", "s2")})
    with pytest.raises(PlanError) as caught:
        load_plan(root / PLAN_FILE)
    message = str(caught.value)
    assert "defaults.mem_mb: missing: e1-demo/s1 has a mem_mb, so every sub needs one" in message
    assert "(e1-demo/s2)" in message


@pytest.mark.parametrize(("setting", "expected"), [
    ("mem_mb: 0", r"research_plan.yaml:1: defaults.mem_mb: expected greater than 0, got 0"),
    ("mem_mb: lots", r"defaults.mem_mb: expected a valid integer"),
    ("memory: 8000", "did you mean 'mem_mb'?"),
])
def test_mem_mb_bad_values_are_named(make_project: ProjectFactory, setting: str, expected: str) -> None:
    root = make_project(f"defaults: {{{setting}}}\nexperiments:\n  {EXP}:\n    sub_experiments: [{SUB}]\n",
                        {f"handlers/{EXP}/{SUB}.py": OK})
    with pytest.raises(PlanError, match=expected):
        load_plan(root / PLAN_FILE)


# --- a result deleted after it was written -------------------------------------------------------

def completed_project(run_handler: RunHandler, make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch,
                      first: str = OK) -> tuple[Path, Path]:
    root = make_project(one_sub_plan())
    run_handler(first, root=root)
    result = run_handler(OK, root=root).paths.result
    monkeypatch.chdir(root)
    return root, result


def marked(root: Path) -> list[str]:
    return Pipeline(load_plan(root / PLAN_FILE), workdir=root).mark_unrecorded_runs()


def test_result_deleted_after_it_was_written_names_its_job_and_copy(
        run_handler: RunHandler, make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch, in_slurm_job: None) -> None:
    root, result = completed_project(run_handler, make_project, monkeypatch)
    run_id = read_record(result)["run_id"]
    result.unlink()  # what Snakemake does to the output of a job it takes for failed

    assert marked(root) == [f"{EXP}/{SUB}"]
    failure = read_record(result.parent / "failure.yaml")
    assert failure["status"] == "failed" and failure["error"]["type"] == "ResultMissing"
    assert failure["missing_result"]["run_id"] == run_id
    assert read_record(root / failure["missing_result"]["kept"])["run_id"] == run_id  # kept in history/
    assert f"of the attempt {run_id}, written by SLURM job 4242 at" in failure["error"]["message"]
    assert "Snakemake, which deletes the output of a job it takes for failed" in failure["error"]["message"]
    assert failure["error"]["hint"].endswith("`sacct -j 4242` says how the job ended")
    assert failure["executor"]["job_id"] == "4242"
    assert marked(root) == []  # recorded once


def test_result_deleted_after_a_resolved_failure_names_the_resolving_result(
        run_handler: RunHandler, make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    root, result = completed_project(run_handler, make_project, monkeypatch,
                                     first="def s1(runner):\n    raise ValueError('first')\n")
    run_id = read_record(result)["run_id"]
    result.unlink()

    assert marked(root)
    failure = read_record(result.parent / "failure.yaml")
    assert failure["missing_result"]["run_id"] == run_id  # the resolving result, not an older one
    assert failure["last_failure"]["error"]["message"] == "first"


# --- the file system ---------------------------------------------------------------------------

def test_results_need_a_file_system_shared_with_the_jobs(make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = pipeline(make_project, one_sub_plan(), monkeypatch)
    pipe.require_shared_results(["input-output", "persistence", "sources"])
    with pytest.raises(ConfigError, match="a sub writes failure.yaml, metrics.jsonl, artifacts/, history/ and wandb/"):
        pipe.require_shared_results(["persistence", "sources", "software-deployment"])


def test_executor_scheduler_wake_up_timers_are_cancelled_at_the_end_of_a_run() -> None:
    import threading

    from labrunner.pipeline import cancel_scheduler_timers

    class JobScheduler:  # what Snakemake's scheduler does after each round
        def _schedule_reevalutation(self, delay: float) -> threading.Timer:
            timer = threading.Timer(delay, lambda: None)
            timer.start()
            return timer

    left = JobScheduler()._schedule_reevalutation(30.0)
    other = threading.Timer(30.0, lambda: None)  # anyone else's timer is not labrunner's to cancel
    other.start()
    try:
        assert cancel_scheduler_timers() == 1
        left.join(5)
        assert not left.is_alive() and other.is_alive()  # Python no longer waits for the scheduler's
    finally:
        other.cancel()
