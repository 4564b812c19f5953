"""Scale-out: the GPU each job asks for, on Modal and through Snakemake executor plugins (SLURM),
visible in a dry run; the workflow itself is unchanged."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from workflow_support import BIN, PLAN, snakemake, write_project

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
