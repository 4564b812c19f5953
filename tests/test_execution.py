"""Unit tests for labrunner.execution: one sub run through the real LocalBackend. Handlers really
raise, hang, kill themselves, segfault and exit; each ends in a failure record that says what
happened, with the metrics logged before it."""

from __future__ import annotations

import io
import math
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import EXP, PLAN_FILE, SUB, ProjectFactory, RunHandler, assert_plain, one_sub_plan
from labrunner.execution import AttemptRequest, Backend, SubRun, run_sub
from labrunner.plan import load_plan
from labrunner.records import read_record

LOGS_THEN = """\
import os, signal, sys, time


def s1(runner):
    runner.log_metrics({{"loss": 0.9}}, step=0)
    runner.log_metrics({{"loss": 0.5}}, step=1)
    print("about to fail", flush=True)
    {failure}
    return {{"finding": "never reached"}}
"""


def failure_of(outcome: SubRun) -> dict[str, Any]:
    """The failure record on disk; a failed run leaves no result.yaml."""
    assert outcome.status == "failed", outcome.record
    assert not outcome.paths.result.exists()
    assert not outcome.paths.internal.exists()
    record = read_record(outcome.paths.failure)
    assert record["status"] == "failed"
    return record


def assert_partial_metrics(record: dict[str, Any]) -> None:
    assert record["metrics_logged"] == {"count": 2, "last_step": 1, "last": {"loss": 0.5}}


# --- success -----------------------------------------------------------------------------------

TENSOR_HANDLER = """\
import numpy as np
import torch


def s1(runner):
    weights = torch.nn.Parameter(torch.full((3,), 0.5))
    for epoch in runner.progress(range(3), desc="epochs"):
        loss = (weights * (epoch + 1)).sum()  # requires grad
        runner.log_metrics({"loss": loss, "lr": np.float32(0.01)}, step=np.int64(epoch))
    print("trained on", runner.device)
    path = runner.results.save_json_artifact("weights.json", {"w": weights})
    return {
        "finding": "Loss goes down.",
        "metrics": {"accuracy": torch.tensor(0.98, requires_grad=True) * 1, "n": np.int64(450),
                    "ece": np.float64(0.03), "per_class": torch.tensor([0.75])},
        "artifacts": [path],
        "confusion": np.eye(2),
    }
"""


def test_run_sub_tensors_and_numpy_give_a_result_of_plain_numbers(run_handler: RunHandler) -> None:
    outcome = run_handler(TENSOR_HANDLER)

    assert outcome.ok, outcome.record.get("error")
    text = outcome.paths.result.read_text()
    assert "!!" not in text  # no python tags: plain YAML
    record = yaml.safe_load(text)
    assert_plain(record)
    assert record["status"] == "completed"
    assert record["finding"] == "Loss goes down."
    assert record["metrics"] == {"accuracy": 0.98, "n": 450, "ece": 0.03, "per_class": 0.75}
    assert record["artifacts"] == ["artifacts/weights.json"]
    assert record["details"] == {"confusion": [[1.0, 0.0], [0.0, 1.0]]}
    assert (outcome.paths.artifacts / "weights.json").is_file()
    assert read_record(outcome.paths.failure) == {"status": "none"}


def test_run_sub_result_record_has_the_designed_fields(run_handler: RunHandler) -> None:
    outcome = run_handler('def s1(runner):\n    return {"finding": "ok", "metrics": {"a": 1}}\n',
                          params={"lr": 0.1}, gpu="T4")

    record = read_record(outcome.paths.result)
    for key in ("status", "finding", "metrics", "artifacts", "params", "seed", "stub", "backend", "device",
                "started_at", "ended_at", "duration_s", "attempts", "handler", "git", "code", "environment", "compute",
                "executor", "wandb", "warnings"):
        assert key in record, key
    assert (record["params"], record["seed"], record["stub"], record["backend"], record["gpu"]) == ({"lr": 0.1}, 0, False, "local", "T4")
    assert record["attempts"] == 1
    assert record["device"] == "cpu"
    assert record["handler"]["file"] == f"handlers/{EXP}/{SUB}.py"
    assert record["handler"]["function"] == SUB
    assert len(record["handler"]["sha256"]) == 64
    assert record["wandb"] == {"mode": "disabled"}
    assert 0 < record["duration_s"] < 60
    assert record["git"] == {"commit": None, "dirty": None}  # not in a git repository
    assert record["environment"]["python"] == platform.python_version() and "torch" not in record["environment"]
    assert record["compute"]["gpu"] == "T4" and record["compute"]["gpu_count"] == 1


def test_run_sub_metrics_jsonl_holds_every_log_call(run_handler: RunHandler) -> None:
    outcome = run_handler(TENSOR_HANDLER)

    lines = [yaml.safe_load(line) for line in outcome.paths.metrics.read_text().splitlines()]
    assert [(line["step"], line["metrics"]) for line in lines] == [
        (0, {"loss": 1.5, "lr": 0.01}), (1, {"loss": 3.0, "lr": 0.01}), (2, {"loss": 4.5, "lr": 0.01})]


def test_run_sub_output_goes_to_run_log_and_console(run_handler: RunHandler) -> None:
    source = """\
    import sys


    def s1(runner):
        print("to stdout")
        print("to stderr", file=sys.stderr)
        return {"finding": "ok"}
    """
    console = io.StringIO()

    outcome = run_handler(source, console=console)

    log = outcome.paths.log.read_text()
    assert "to stdout\n" in log and "to stderr\n" in log
    assert f"=== {EXP}/{SUB}: run {outcome.record['run_id']}, attempt 1" in log
    assert f"[{EXP}/{SUB}] to stdout\n" in console.getvalue()
    assert f"[{EXP}/{SUB}] to stderr\n" in console.getvalue()


def test_run_sub_keeps_secrets_out_of_log_and_records(run_handler: RunHandler, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-7f3a9c1e5b")
    source = """\
    import os


    def s1(runner):
        print("using", os.environ["MY_SERVICE_TOKEN"])
        raise RuntimeError("auth failed for " + os.environ["MY_SERVICE_TOKEN"])
    """

    outcome = run_handler(source)

    record = failure_of(outcome)
    assert "tok-7f3a9c1e5b" not in outcome.paths.log.read_text()
    assert "using ***" in outcome.paths.log.read_text()
    assert "tok-7f3a9c1e5b" not in outcome.paths.failure.read_text()
    assert record["error"]["message"] == "auth failed for ***"
    for path in outcome.paths.run_dir.rglob("*"):
        if path.is_file():
            assert "tok-7f3a9c1e5b" not in path.read_text(errors="replace"), path
    assert "environ" not in record and "env" not in record


def test_run_sub_stub_params_and_stub_tree(run_handler: RunHandler) -> None:
    source = 'def s1(runner):\n    return {"finding": f"epochs={runner.params[\'epochs\']} stub={runner.stub}"}\n'

    outcome = run_handler(source, stub=True, params={"epochs": 100, "lr": 0.1}, stub_params={"epochs": 1})

    assert outcome.ok
    assert outcome.record["finding"] == "epochs=1 stub=True"
    assert outcome.record["params"] == {"epochs": 1, "lr": 0.1}
    root = outcome.paths.run_dir.parents[3]
    assert outcome.paths.run_dir == root / "stub" / "results" / EXP / SUB
    assert not (root / "results").exists()


def test_run_sub_each_seed_has_its_own_folder(make_project: ProjectFactory) -> None:
    root = make_project(one_sub_plan(seeds=[3, 4]),
                        {f"handlers/{EXP}/{SUB}.py": 'def s1(runner):\n    return {"finding": f"seed {runner.seed}"}\n'})
    plan = load_plan(root / PLAN_FILE)
    spec = plan.sub(EXP, SUB)

    outcomes = [run_sub(plan, spec, seed, console=io.StringIO()) for seed in spec.seeds]

    assert [o.paths.run_dir for o in outcomes] == [root / "results" / EXP / SUB / f"seed-{seed}" for seed in (3, 4)]
    assert [read_record(o.paths.result)["finding"] for o in outcomes] == ["seed 3", "seed 4"]


def test_run_sub_handler_can_import_project_modules(run_handler: RunHandler, make_project: ProjectFactory) -> None:
    root = make_project(one_sub_plan(), {"handlers/__init__.py": "", "handlers/common.py": "ANSWER = 42\n"})

    outcome = run_handler("from handlers.common import ANSWER\n\n\ndef s1(runner):\n    return {'finding': f'{ANSWER}'}\n",
                          root=root)

    assert outcome.ok and outcome.record["finding"] == "42"


# --- failures ------------------------------------------------------------------------------------

def test_run_sub_handler_that_raises_gives_a_failure_record(run_handler: RunHandler) -> None:
    outcome = run_handler(LOGS_THEN.format(failure='outputs = {"logits": 1}\n    outputs["probs"]'))

    record = failure_of(outcome)
    error = record["error"]
    assert error["type"] == "KeyError"
    assert error["message"] == "'probs'"
    assert 'outputs["probs"]' in error["traceback"] and f"handlers/{EXP}/{SUB}.py" in error["traceback"]
    assert error["handler_line"] == {"file": f"handlers/{EXP}/{SUB}.py", "line": 9, "function": SUB,
                                     "code": 'outputs["probs"]'}
    assert "print its keys" in error["hint"]
    assert_partial_metrics(record)
    assert "about to fail" in outcome.paths.log.read_text()


def test_run_sub_error_raised_in_frozen_library_code_points_at_the_handler_line(run_handler: RunHandler) -> None:
    outcome = run_handler("import os\n\n\ndef s1(runner):\n    return os.environ['LABRUNNER_NO_SUCH_VARIABLE']\n")

    error = failure_of(outcome)["error"]  # os.environ's KeyError is raised in `<frozen os>`, nobody's file
    assert error["type"] == "KeyError"
    assert error["handler_line"]["file"] == f"handlers/{EXP}/{SUB}.py" and error["handler_line"]["line"] == 5


@pytest.mark.parametrize(("returned", "message"), [
    ("None", "the handler returned None (is a `return` missing?)"),
    ("{'metrics': {'acc': 0.9}}", "the returned dict has no 'finding' (keys: metrics)"),
    ("{'finding': ''}", "'finding' must be a non-empty sentence"),
    ("{'finding': 'x', 'metrics': {'acc': 'high'}}", "metric 'acc' must be a single number, got 'high'"),
    ("{'finding': 'x', 'artifacts': ['plot.png']}", "artifact 'plot.png' was not saved through runner.results"),
])
def test_run_sub_wrong_return_shape_is_a_failure(returned: str, message: str, run_handler: RunHandler) -> None:
    outcome = run_handler(LOGS_THEN.format(failure=f"return {returned}"))

    error = failure_of(outcome)["error"]
    assert error["type"] == "HandlerReturnError"
    assert message in error["message"]
    assert error["hint"].startswith("return a dict like {'finding'")


def test_run_sub_handler_that_hangs_is_stopped_at_its_timeout(run_handler: RunHandler) -> None:
    started = time.monotonic()

    outcome = run_handler(LOGS_THEN.format(failure="time.sleep(120)"), timeout_min=0.02)

    assert time.monotonic() - started < 20
    record = failure_of(outcome)
    error = record["error"]
    assert error["type"] == "Timeout"
    assert "ran past its timeout of 0.02 min (1.2 s)" in error["message"]
    assert "time.sleep(120)" in (error["handler_line"] or {}).get("code", ""), error
    assert f"handlers/{EXP}/{SUB}.py" in error["traceback"]  # where it was stuck, from faulthandler
    assert "raise timeout_min" in error["hint"]
    assert_partial_metrics(record)


def test_run_sub_handler_killed_by_sigkill_gives_a_failure_record(run_handler: RunHandler) -> None:
    outcome = run_handler(LOGS_THEN.format(failure="os.kill(os.getpid(), signal.SIGKILL)"))

    record = failure_of(outcome)
    assert record["error"]["type"] == "Killed"
    assert "killed by SIGKILL" in record["error"]["message"]
    assert "out-of-memory killer" in record["error"]["hint"]
    assert record["exit"] == {"returncode": -signal.SIGKILL}
    assert_partial_metrics(record)


@pytest.mark.parametrize(("failure", "signal_name"), [
    ("import ctypes; ctypes.string_at(0)", "SIGSEGV"),
    ("os.abort()", "SIGABRT"),
])
def test_run_sub_handler_that_crashes_gives_a_failure_record(failure: str, signal_name: str, run_handler: RunHandler) -> None:
    outcome = run_handler(LOGS_THEN.format(failure=failure))

    record = failure_of(outcome)
    error = record["error"]
    assert error["type"] == "Crash"
    assert error["message"] == f"the handler process crashed with {signal_name}"
    assert error["handler_line"]["file"] == f"handlers/{EXP}/{SUB}.py"
    assert error["handler_line"]["line"] == 8
    assert error["handler_line"]["code"] == failure
    assert "native code" in error["hint"]
    assert_partial_metrics(record)


def test_run_sub_handler_that_exits_gives_a_failure_record(run_handler: RunHandler) -> None:
    outcome = run_handler(LOGS_THEN.format(failure="os._exit(3)"))

    record = failure_of(outcome)
    assert record["error"]["type"] == "Exited"
    assert "exited with code 3 before reporting a result" in record["error"]["message"]
    assert record["exit"] == {"returncode": 3}
    assert_partial_metrics(record)


@pytest.mark.parametrize("code", ["0", "3", "'bad arguments'"])
def test_run_sub_handler_that_calls_sys_exit_gives_a_failure_record(code: str, run_handler: RunHandler) -> None:
    outcome = run_handler(LOGS_THEN.format(failure=f"sys.exit({code})"))

    record = failure_of(outcome)
    error = record["error"]
    assert error["type"] == "SystemExit"
    assert error["message"] == f"the handler called sys.exit({code}) instead of returning a result"
    assert error["handler_line"]["code"] == f"sys.exit({code})"
    assert error["hint"].startswith("return a dict instead of exiting")
    assert_partial_metrics(record)


def test_run_sub_missing_package_gives_a_hint(run_handler: RunHandler) -> None:
    outcome = run_handler("import package_that_is_not_installed\n\n\ndef s1(runner):\n    return {'finding': 'x'}\n")

    error = failure_of(outcome)["error"]
    assert error["type"] == "ModuleNotFoundError"
    assert error["hint"].startswith("install the missing package")
    assert error["handler_line"]["line"] == 1


def test_run_sub_two_failures_leave_different_failure_records(run_handler: RunHandler, make_project: ProjectFactory) -> None:
    root = make_project(one_sub_plan())
    failing = "def s1(runner):\n    raise ValueError('same error')\n"

    first = run_handler(failing, root=root)
    first_text, first_record = first.paths.failure.read_text(), failure_of(first)
    second = run_handler(failing, root=root)
    second_text, second_record = second.paths.failure.read_text(), failure_of(second)

    assert first_text != second_text
    assert first_record["run_id"] != second_record["run_id"]
    assert second_record["last_failure"]["run_id"] == first_record["run_id"]
    assert len(list(second.paths.history.glob("*.failure.yaml"))) == 2


def test_run_sub_failure_removes_an_earlier_result(run_handler: RunHandler, make_project: ProjectFactory) -> None:
    root = make_project(one_sub_plan())
    assert run_handler("def s1(runner):\n    return {'finding': 'fine'}\n", root=root).ok

    outcome = run_handler("def s1(runner):\n    raise ValueError('broken now')\n", root=root)

    assert failure_of(outcome)["error"]["message"] == "broken now"
    assert len(list(outcome.paths.history.glob("*.result.yaml"))) == 1  # the earlier result is kept there


def test_run_sub_success_after_a_failure_resolves_it(run_handler: RunHandler, make_project: ProjectFactory) -> None:
    root = make_project(one_sub_plan())
    failed = run_handler("def s1(runner):\n    raise ValueError('flaky')\n", root=root)

    outcome = run_handler("def s1(runner):\n    return {'finding': 'fixed'}\n", root=root)

    assert outcome.ok
    failure = read_record(outcome.paths.failure)
    assert failure["status"] == "resolved"
    assert failure["last_failure"]["run_id"] == failed.record["run_id"]
    assert read_record(outcome.paths.result)["finding"] == "fixed"


def test_run_sub_attempt_killed_outright_is_recorded_as_lost(run_handler: RunHandler, make_project: ProjectFactory) -> None:
    from labrunner.layout import RunPaths
    from labrunner.records import mark_running

    root = make_project(one_sub_plan())
    paths = RunPaths(root / "results" / EXP / SUB)
    paths.run_dir.mkdir(parents=True)
    mark_running(paths, "lostrun", "2024-01-01T00:00:00+00:00", 12345, "local")  # and then nothing: SIGKILL

    outcome = run_handler("def s1(runner):\n    raise ValueError('again')\n", root=root)

    lost = failure_of(outcome)["last_failure"]
    assert lost["run_id"] == "lostrun"
    assert lost["error"]["type"] == "Lost"


# --- retries -------------------------------------------------------------------------------------

FLAKY = """\
def s1(runner):
    runner.log_metrics({"attempt": runner.attempt}, step=runner.attempt)
    if runner.attempt < 3:
        raise RuntimeError(f"flaky on attempt {runner.attempt}")
    return {"finding": f"worked on attempt {runner.attempt}"}
"""


def test_run_sub_retries_record_the_attempts(run_handler: RunHandler) -> None:
    console = io.StringIO()

    outcome = run_handler(FLAKY, retries=2, console=console)

    assert outcome.ok
    record = read_record(outcome.paths.result)
    assert record["attempts"] == 3
    assert record["finding"] == "worked on attempt 3"
    assert record["failed_attempts"] == [
        {"attempt": 1, "error_type": "RuntimeError", "message": "flaky on attempt 1"},
        {"attempt": 2, "error_type": "RuntimeError", "message": "flaky on attempt 2"},
    ]
    assert "attempt 1 failed (RuntimeError); retrying" in console.getvalue()
    assert outcome.paths.log.read_text().count("=== ") == 3


def test_run_sub_retries_exhausted_is_a_failure(run_handler: RunHandler) -> None:
    outcome = run_handler(FLAKY, retries=1)

    record = failure_of(outcome)
    assert record["attempts"] == 2
    assert record["error"]["message"] == "flaky on attempt 2"
    assert record["metrics_logged"] == {"count": 1, "last_step": 2, "last": {"attempt": 2}}
    assert record["failed_attempts"] == [{"attempt": 1, "error_type": "RuntimeError", "message": "flaky on attempt 1"}]


# --- processes -----------------------------------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("ending", ["return {'finding': 'left a child behind'}", "raise ValueError('died')"])
def test_run_sub_leftover_child_processes_are_killed(ending: str, run_handler: RunHandler, tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    source = f"""\
    import subprocess, sys


    def s1(runner):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        {ending}
    """

    run_handler(source)

    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
    if _alive(pid):  # pragma: no cover - clean up after a failed assertion
        os.kill(pid, signal.SIGKILL)


def test_run_sub_nonfinite_metrics_are_kept_and_flagged(run_handler: RunHandler) -> None:
    source = """\
    def s1(runner):
        runner.log_metrics({"loss": float("nan")}, step=0)
        return {"finding": "diverged", "metrics": {"loss": float("nan"), "grad": float("inf"), "acc": 0.1}}
    """

    outcome = run_handler(source)

    assert outcome.ok
    record = read_record(outcome.paths.result)
    assert math.isnan(record["metrics"]["loss"]) and record["metrics"]["grad"] == math.inf
    assert "metric 'loss' was nan at step 0" in record["warnings"]
    assert "metric 'grad' is inf (kept, and judged invalid against its criteria)" in record["warnings"]


@pytest.mark.slow
def test_run_sub_process_that_leaves_the_group_does_not_stall_the_job(run_handler: RunHandler, tmp_path: Path) -> None:
    pid_file = tmp_path / "escaped.pid"
    source = f"""\
    import subprocess


    def s1(runner):
        escaped = subprocess.Popen(["sleep", "60"], start_new_session=True)  # keeps the output pipe open
        open({str(pid_file)!r}, "w").write(str(escaped.pid))
        return {{"finding": "left a daemon behind"}}
    """
    started = time.monotonic()
    try:
        outcome = run_handler(source)
        assert time.monotonic() - started < 15
        assert outcome.ok
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_run_sub_handler_that_runs_out_of_memory_gives_a_failure_record(run_handler: RunHandler) -> None:
    # the fault is bounded by an address-space limit, so the test cannot take the machine down
    outcome = run_handler("""
        import resource

        def s1(runner):
            runner.log_metrics({"loss": 1.0}, step=0)
            limit = 2 * 1024 ** 3
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            hoard = []
            while True:
                hoard.append(bytearray(256 * 1024 ** 2))
        """)

    assert outcome.status == "failed"
    error = outcome.record["error"]
    assert error["type"] == "MemoryError"
    assert "out of memory" in error["hint"]
    assert error["handler_line"]["code"] == "hoard.append(bytearray(256 * 1024 ** 2))"
    assert outcome.record["metrics_logged"]["count"] == 1
    assert not outcome.paths.result.exists()


def test_run_sub_disk_write_failure_gives_a_failure_record_that_says_so(run_handler: RunHandler, make_project: ProjectFactory) -> None:
    root = make_project(one_sub_plan(), {f"handlers/{EXP}/{SUB}.py": "def s1(runner):\n    return {'finding': 'x'}\n"})
    artifacts = root / "results" / EXP / SUB / "artifacts"
    artifacts.mkdir(parents=True)
    if subprocess.run(["chattr", "+i", str(artifacts)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i (an immutable folder, read-only even for root) is not available here")
    try:
        outcome = run_handler("""
            def s1(runner):
                path = runner.results.save_artifact("curve.csv", "a,b\\n1,2\\n")
                return {"finding": "saved", "artifacts": [path]}
            """, root=root)
    finally:
        subprocess.run(["chattr", "-i", str(artifacts)], check=True)

    assert outcome.status == "failed"
    error = outcome.record["error"]
    assert error["type"] == "ArtifactError"
    assert "could not write artifact 'curve.csv'" in error["message"] and "Operation not permitted" in error["message"]
    assert "not writable" in error["hint"]


class BrokenBackend(Backend):
    """A backend that cannot start the handler at all (its machine, its client library)."""

    name = "broken"

    def run_attempt(self, request: AttemptRequest) -> dict[str, Any]:
        raise ConnectionError("the scheduler refused the job")


def test_run_sub_backend_that_raises_leaves_a_failure_record_not_a_running_one(make_project: ProjectFactory) -> None:
    root = make_project(one_sub_plan(retries=1), {f"handlers/{EXP}/{SUB}.py": "def s1(runner):\n    return {'finding': 'x'}\n"})
    plan = load_plan(root / PLAN_FILE)

    outcome = run_sub(plan, plan.sub(EXP, SUB), backend=BrokenBackend(), console=io.StringIO())

    record = failure_of(outcome)  # not `status: running`, which would read as a job killed outright
    assert record["backend"] == "broken"
    assert record["error"]["type"] == "ConnectionError"
    assert record["error"]["message"] == "the ConnectionError came from the backend, not the handler: the scheduler refused the job"
    assert "test_execution.py" in record["error"]["traceback"]
    assert record["attempts"] == 2  # retried like any failure


STOP_OUTSIDE_ATTEMPT = '''
import io, os, signal, sys
from labrunner.execution import Backend, run_sub
from labrunner.plan import load_plan

class SignalsItself(Backend):
    """An attempt that ends, then a SIGTERM arrives while the supervisor writes its record (or
    before its retry), as when SLURM's scancel lands at that moment."""
    name = "local"
    def run_attempt(self, request):
        os.kill(os.getpid(), signal.SIGTERM)
        if sys.argv[2] == "completes":
            return {"status": "completed", "finding": "done", "metrics": {}, "artifacts": [], "warnings": []}
        return {"status": "failed", "error": {"type": "ValueError", "message": "flaky"}, "warnings": []}

plan = load_plan(sys.argv[1])
done = run_sub(plan, plan.sub("e1-demo", "s1"), backend=SignalsItself(), console=io.StringIO())
print("returned", done.status)
'''


@pytest.mark.parametrize("attempt", ["completes", "fails"])
def test_run_sub_stop_outside_an_attempt_waits_for_the_record(attempt: str, make_project: ProjectFactory) -> None:
    root = make_project(one_sub_plan(retries=2), {f"handlers/{EXP}/{SUB}.py": "def s1(runner):\n    return {}\n"})

    done = subprocess.run([sys.executable, "-c", STOP_OUTSIDE_ATTEMPT, str(root / PLAN_FILE), attempt],
                          capture_output=True, text=True, timeout=60, cwd=root)

    assert done.returncode == 0 and "returned" in done.stdout, done.stderr  # not killed mid-record
    run_dir = root / "results" / EXP / SUB
    if attempt == "completes":
        assert read_record(run_dir / "result.yaml")["status"] == "completed"
    else:  # the retry does not start: the stop is recorded, not "Lost" next time
        failure = read_record(run_dir / "failure.yaml")
        assert failure["status"] == "failed" and failure["error"]["type"] == "Terminated"
        assert failure["attempts"] == 2 and "before the attempt started" in failure["error"]["message"]


class _LinesTracker:
    """A tracker that keeps what the forwarder hands it (the W&B side is tests/test_tracking.py)."""

    def __init__(self) -> None:
        self.lines: list[tuple[dict[str, Any], int | None]] = []

    def log_lines(self, lines: list[tuple[dict[str, Any], int | None]]) -> None:
        self.lines.extend(lines)


def test_execution_forwarder_sends_this_attempts_whole_lines_in_order_past_damaged_ones(tmp_path: Path) -> None:
    from labrunner.execution import _MetricsForwarder

    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 0, "attempt": 1, "run": "old", "metrics": {"acc": 0.1}}\n')  # an earlier run's line
    tracker = _LinesTracker()
    forwarder = _MetricsForwarder(path, "r1", tracker, attempt=2)  # type: ignore[arg-type]
    forwarder.start()
    forwarder._stop.set()  # drained by hand below
    with path.open("ab") as handle:
        handle.write(b'{"step": 1, "attempt": 2, "run": "r1", "metrics": {"acc": 0.5}}\n'
                     b'{"step": 2, "attempt": 1, "run": "r1", "metrics": {"acc": 0.6}}\n'  # another attempt
                     b'{"step": 3, "attempt": 2, "run": "r1", "metrics": {"acc": NaN}}\n'
                     b'{"step": 4, "att\n'  # a damaged line
                     b'\n'
                     b'[1, 2]\n'
                     b'{"step": 5, "attempt": 2, "run": "r1", "metrics": {"acc": 0.7}}\n'
                     b'{"step": 6, "attempt": 2, "run": "r1", "met')  # still being written
    forwarder.drain()
    assert [(line[0]["acc"], line[1]) for line in tracker.lines][::2] == [(0.5, 1), (0.7, 5)]
    assert math.isnan(tracker.lines[1][0]["acc"]) and tracker.lines[1][1] == 3 and len(tracker.lines) == 3

    with path.open("ab") as handle:
        handle.write(b'rics": {"acc": 0.8}}\n')
    forwarder.stop()
    assert tracker.lines[-1] == ({"acc": 0.8}, 6) and len(tracker.lines) == 4
