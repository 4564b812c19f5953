"""The rerun hint repeats the last run's command line: recorded when a real run starts (not in a
dry run), rebuilt with the target first and without the options that force reruns; and what it
prints is a command Snakemake accepts."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from labrunner.invocation import Invocation, capture, last_run, last_run_path, rerun_command
from workflow_support import BIN, fail_next, run, snakemake, write_project


def record(root: Path, *args: str, targets: tuple[str, ...] = (), stub: bool = False) -> None:
    Invocation("snakemake", args).save(root, stub, targets)


def test_rerun_hint_without_a_recorded_run(tmp_path: Path) -> None:
    assert rerun_command(tmp_path, stub=False) == "snakemake research/FINDINGS.md"
    assert rerun_command(tmp_path, stub=True) == "snakemake stub/research/FINDINGS.md --config stub=true"


@pytest.mark.parametrize(("args", "targets", "hint"), [
    (["--cores", "8", "research/FINDINGS.md", "--config", "backend=modal"], ("research/FINDINGS.md",),
     "snakemake research/FINDINGS.md --cores 8 --config backend=modal"),
    (["--executor", "slurm", "--jobs", "50", "--default-resources", "slurm_account=mylab", "slurm_partition=gpu"], (),
     "snakemake research/FINDINGS.md --executor slurm --jobs 50 --default-resources slurm_account=mylab "
     "slurm_partition=gpu"),
    (["-F", "--cores", "2", "--forcerun", "run_sub", "aggregate_experiment", "--config", "plan=my plan.yaml"], (),
     "snakemake research/FINDINGS.md --cores 2 --config 'plan=my plan.yaml'"),
    (["--cores", "2", "results/e1/results.yaml", "--until=run_sub", "-j", "3"], ("results/e1/results.yaml",),
     "snakemake research/FINDINGS.md --cores 2 -j 3"),
], ids=["modal", "slurm", "forced", "one-experiment"])
def test_rerun_hint_repeats_the_options_with_the_target_first(args: list[str], targets: tuple[str, ...], hint: str,
                                                              tmp_path: Path) -> None:
    record(tmp_path, *args, targets=targets)

    assert rerun_command(tmp_path, stub=False) == hint


def test_rerun_hint_of_each_tree_is_its_own(tmp_path: Path) -> None:
    record(tmp_path, "--cores", "3", "--config", "stub=true", stub=True)
    record(tmp_path, "--cores", "5")

    assert rerun_command(tmp_path, stub=True) == "snakemake stub/research/FINDINGS.md --cores 3 --config stub=true"
    assert rerun_command(tmp_path, stub=False) == "snakemake research/FINDINGS.md --cores 5"


def test_unreadable_record_falls_back_to_the_plain_hint(tmp_path: Path) -> None:
    path = last_run_path(tmp_path, stub=False)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")

    assert last_run(tmp_path, stub=False) is None
    assert rerun_command(tmp_path, stub=False) == "snakemake research/FINDINGS.md"


def test_capture_names_the_program_as_it_can_be_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    program = str(BIN / "snakemake")
    monkeypatch.chdir(BIN.parent.parent)

    on_path = capture([program, "--cores", "2"], search_path=str(BIN))
    off_path = capture([program, "--cores", "2"], search_path=str(tmp_path))

    assert on_path == Invocation("snakemake", ("--cores", "2"))
    assert off_path is not None and off_path.program == os.path.relpath(program)
    assert capture(["/usr/bin/python3", "-m", "pytest"]) is None  # Snakemake's Python API: not our argv


@pytest.mark.slow
def test_workflow_records_real_runs_not_dry_runs_and_the_hint_parses(tmp_path: Path) -> None:
    project = write_project(tmp_path / "proj")
    assert snakemake(project, "-n", "--cores", "7").returncode == 0
    assert last_run(project, stub=False) is None  # a dry run runs nothing: nothing to repeat

    fail_next(project, "b")
    done = run(project, "research/FINDINGS.md", "--config", "backend=local")

    assert done.returncode != 0
    recorded = json.loads(last_run_path(project, stub=False).read_text())
    assert (recorded["program"], recorded["args"], recorded["targets"]) == (
        "snakemake", ["--cores", "2", "research/FINDINGS.md", "--config", "backend=local"], ["research/FINDINGS.md"])
    hint = "snakemake research/FINDINGS.md --cores 2 --config backend=local"
    assert f"Rerun what failed or is missing (nothing else reruns): {hint}" in done.stdout + done.stderr
    # the hint is a command Snakemake reads as meant: the target is a target, not a --config item
    again = snakemake(project, *shlex.split(hint)[1:], "-n")
    assert again.returncode == 0, again.stderr
    assert "e1-tiny/b" in again.stdout.replace("exp=e1-tiny, run=b", "e1-tiny/b")


@pytest.mark.slow
def test_slurm_rerun_hint_is_a_command_snakemake_accepts(tmp_path: Path) -> None:
    pytest.importorskip("snakemake_executor_plugin_slurm")
    project = write_project(tmp_path / "proj")
    record(project, "--executor", "slurm", "--jobs", "50", "--default-resources", "slurm_account=lab",
           "slurm_partition=gpu")

    hint = rerun_command(project, stub=False)
    done = snakemake(project, *shlex.split(hint)[1:], "-n")

    assert done.returncode == 0, done.stderr[-2000:]
    assert "slurm_partition=gpu" in done.stdout and "rule project_findings" in done.stdout
