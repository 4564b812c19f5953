"""Unit tests for the `labrunner` command: validate prints a summary or every error (exit 1);
run exits 0 on success and 1 on failure, with what failed, where and a hint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import EXP, PLAN_FILE, SUB, MountFactory, ProjectFactory, fill_disk, one_sub_plan
from labrunner.cli import main
from labrunner.records import read_record
from test_plan import BROKEN_PLANS, RESEARCHER_HANDLERS, RESEARCHER_PLAN


def test_cli_validate_prints_a_summary(make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(make_project(RESEARCHER_PLAN, RESEARCHER_HANDLERS))

    code = main(["validate"])

    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("research/research_plan.yaml: valid. Vision study: 2 experiments, 4 sub-experiments "
                          "(3 runs with seeds), 1 gate")
    for text in ("e1-linear-vs-mlp  E1: Linear vs MLP  [claim; phase 1]", "handlers/e1-linear-vs-mlp/e1_2.py::run",
                 "e2_2             skipped: superseded by e1_2", "[after e1-linear-vs-mlp]",
                 "criterion accuracy: target 0.97, acceptable 0.95, failure 0.9 (higher is better)",
                 "criterion lpips: target 0.25, acceptable 0.35, failure 0.5 (lower is better)",
                 "gate gate_1: e1-linear-vs-mlp -> Phase 2"):
        assert text in out, text
    assert len(out.splitlines()) <= 25  # one screen


def test_cli_validate_prints_every_error(make_project: ProjectFactory, capsys: pytest.CaptureFixture[str]) -> None:
    text = RESEARCHER_PLAN
    kinds = ("typo key", "missing handler file", "wrong type", "gate naming an unknown experiment")
    for kind in kinds:
        old, new, *_rest = BROKEN_PLANS[kind]
        text = text.replace(old, new)
    root = make_project(text, RESEARCHER_HANDLERS)

    code = main(["validate", "--plan", str(root / PLAN_FILE)])

    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert "4 problems:" in captured.err
    for kind in kinds:
        key, fragment = BROKEN_PLANS[kind][2], BROKEN_PLANS[kind][4]
        assert any(key in line and fragment in line and str(root / PLAN_FILE) in line
                   for line in captured.err.splitlines()), kind


def test_cli_validate_missing_plan_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--plan", str(tmp_path / "plan.yaml")]) == 1
    assert "file not found" in capsys.readouterr().err


def test_cli_run_success_exits_0(make_project: ProjectFactory, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_project(one_sub_plan(), {f"handlers/{EXP}/{SUB}.py": "def s1(runner):\n    return {'finding': 'It works.'}\n"})

    code = main(["run", EXP, SUB, "--plan", str(root / PLAN_FILE)])

    out = capsys.readouterr().out
    assert code == 0
    assert f"{EXP}/{SUB}: completed in" in out and "It works." in out
    assert f"records: results/{EXP}/{SUB}/result.yaml" in out
    assert read_record(root / "results" / EXP / SUB / "result.yaml")["finding"] == "It works."


def test_cli_run_failure_exits_1_with_error_line_and_hint(make_project: ProjectFactory,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    source = "def s1(runner):\n    runner.log_metrics({'loss': 1.0}, step=0)\n    return 1 / 0\n"
    root = make_project(one_sub_plan(), {f"handlers/{EXP}/{SUB}.py": source})

    code = main(["run", EXP, SUB, "--plan", str(root / PLAN_FILE)])

    err = capsys.readouterr().err
    assert code == 1
    assert f"{EXP}/{SUB}: FAILED after" in err
    assert "error: ZeroDivisionError: division by zero" in err
    assert f"at:    handlers/{EXP}/{SUB}.py:3 in s1: return 1 / 0" in err
    assert "hint:  a denominator was zero" in err
    assert "logged before failing: 1 log_metrics call, last step 0" in err
    assert f"details: results/{EXP}/{SUB}/failure.yaml (traceback)" in err
    assert not (root / "results" / EXP / SUB / "result.yaml").exists()


def test_cli_run_stub_and_results_dir(make_project: ProjectFactory, tmp_path: Path) -> None:
    root = make_project(one_sub_plan(params={"epochs": 9}, stub_params={"epochs": 1}),
                        {f"handlers/{EXP}/{SUB}.py": "def s1(runner):\n    return {'finding': str(runner.params)}\n"})

    assert main(["run", EXP, SUB, "--plan", str(root / PLAN_FILE), "--stub", "--results-dir", "elsewhere"]) == 0

    assert read_record(root / "elsewhere" / EXP / SUB / "result.yaml")["finding"] == "{'epochs': 1}"


@pytest.mark.parametrize(("args", "message"), [
    (["e9", SUB], "unknown experiment 'e9'"),
    ([EXP, "s9"], "unknown sub-experiment 's9' (valid: s1)"),
    ([EXP, SUB, "--seed", "5"], f"seed 5 is not among the seeds of {EXP}/{SUB} in the plan (0)"),
])
def test_cli_run_unknown_names_exit_1(args: list[str], message: str, make_project: ProjectFactory,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    root = make_project(one_sub_plan(), {f"handlers/{EXP}/{SUB}.py": "def s1(runner):\n    return {'finding': 'x'}\n"})

    assert main(["run", *args, "--plan", str(root / PLAN_FILE)]) == 1

    assert message in capsys.readouterr().err
    assert not (root / "results").exists()


def test_cli_run_checks_the_handler_before_running(make_project: ProjectFactory, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_project(one_sub_plan(), {f"handlers/{EXP}/{SUB}.py": "def s1(runner, extra):\n    pass\n"})

    assert main(["run", EXP, SUB, "--plan", str(root / PLAN_FILE)]) == 1

    assert "must take one argument" in capsys.readouterr().err
    assert not (root / "results").exists()


def test_cli_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["run", EXP])
    assert caught.value.code == 2
    assert "usage: labrunner run" in capsys.readouterr().err


@pytest.mark.parametrize(("sig", "error_type"), [(signal.SIGINT, "Interrupted"), (signal.SIGTERM, "Terminated")])
def test_cli_run_stopped_from_outside_records_a_failure(sig: signal.Signals, error_type: str,
                                                        make_project: ProjectFactory) -> None:
    source = """\
    import time


    def s1(runner):
        runner.log_metrics({"loss": 1.0}, step=0)
        print("ready", flush=True)
        time.sleep(60)
    """
    root = make_project(one_sub_plan(retries=2), {f"handlers/{EXP}/{SUB}.py": source})
    process = subprocess.Popen([sys.executable, "-m", "labrunner.cli", "run", EXP, SUB], cwd=root,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        while "ready" not in process.stdout.readline():
            assert time.monotonic() < deadline and process.poll() is None
        process.send_signal(sig)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 1, err
    record = read_record(root / "results" / EXP / SUB / "failure.yaml")
    assert record["error"]["type"] == error_type
    assert record["attempts"] == 1  # a run stopped from outside is not retried
    assert record["metrics_logged"]["count"] == 1
    assert f"handlers/{EXP}/{SUB}.py" in record["error"]["traceback"]
    assert "run the same command again" in record["error"]["hint"]
    assert not (root / "results" / EXP / SUB / "result.yaml").exists()


def test_cli_module_entry_point(make_project: ProjectFactory) -> None:
    root = make_project(RESEARCHER_PLAN, RESEARCHER_HANDLERS)

    done = subprocess.run([sys.executable, "-m", "labrunner.cli", "validate"], cwd=root, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONWARNINGS": "error"})

    assert done.returncode == 0, done.stderr
    assert "valid." in done.stdout


# --- where the results cannot be written: a clear error, never a traceback ---------------------

OK_HANDLER = 'def s1(runner):\n    return {"finding": "fine", "metrics": {"acc": 1.0}}\n'


def _labrunner(root: Path, *args: str, stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "labrunner.cli", *args], cwd=root, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=120)


def test_cli_run_on_a_full_disk_says_so_without_a_traceback(make_project: ProjectFactory, small_fs: MountFactory) -> None:
    root = make_project(one_sub_plan(), {f"handlers/{EXP}/{SUB}.py": OK_HANDLER})
    fill_disk(small_fs(root / "results", size_kib=64))

    done = _labrunner(root, "run", EXP, SUB)

    assert done.returncode == 1
    assert done.stderr == (f"labrunner run: cannot write {root / 'results' / EXP / SUB / 'failure.yaml'}: no space left "
                           f"on device (0 bytes free on the file system of {root / 'results' / EXP / SUB})\n")


def test_cli_run_with_a_folder_where_failure_yaml_belongs_is_a_clear_error(make_project: ProjectFactory) -> None:
    root = make_project(one_sub_plan(), {f"handlers/{EXP}/{SUB}.py": OK_HANDLER})
    (root / "results" / EXP / SUB / "failure.yaml").mkdir(parents=True)

    done = _labrunner(root, "run", EXP, SUB)

    assert done.returncode == 1
    assert done.stderr == (f"labrunner run: cannot write {root / 'results' / EXP / SUB / 'failure.yaml'}: it is a folder "
                           "where labrunner writes a file; move the folder away and run again\n")


def test_cli_run_with_a_read_only_results_folder_is_a_clear_error(make_project: ProjectFactory,
                                                                  small_fs: MountFactory) -> None:
    root = make_project(one_sub_plan(), {f"handlers/{EXP}/{SUB}.py": OK_HANDLER})
    small_fs(root / "results", read_only=True)

    done = _labrunner(root, "run", EXP, SUB)

    assert done.returncode == 1
    assert done.stderr == (f"labrunner run: cannot write {root / 'results' / EXP}: Read-only file system (is the folder "
                           "read-only, or owned by someone else?)\n")


def test_cli_status_into_a_closed_pipe_stops_quietly(make_project: ProjectFactory) -> None:
    root = make_project(one_sub_plan(), {f"handlers/{EXP}/{SUB}.py": OK_HANDLER})
    read_end, write_end = os.pipe()
    os.close(read_end)  # `labrunner status | head`, once head has what it wants
    try:
        done = _labrunner(root, "status", stdout=write_end)
    finally:
        os.close(write_end)

    assert done.stderr == ""
    assert done.returncode == 141
