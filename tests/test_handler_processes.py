"""The handler's process and everything it starts, through the real LocalBackend: subs named like
libraries, threads and processes a handler leaves behind, exceptions that cannot be printed, stop
signals heard twice, progress bars. Each test injects the real fault in a real handler."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import EXP, PLAN_FILE, SUB, ProjectFactory, RunHandler, one_sub_plan
from labrunner.execution import run_sub
from labrunner.plan import load_plan
from labrunner.records import read_record
from labrunner.worker import EXIT_SUPERVISOR_GONE, LEFTOVER_THREADS_GRACE_S, SUPERVISOR_PID_ENV

LINUX = sys.platform.startswith("linux")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def gone_within(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def kill_if_alive(pid: int) -> None:
    if alive(pid):  # clean up after a failed assertion
        os.kill(pid, signal.SIGKILL)


# --- imports -------------------------------------------------------------------------------------

LIBRARY_NAMED_HANDLERS = {
    f"handlers/{EXP}/numpy.py": """\
        import numpy as np


        def numpy(runner):
            return {"finding": "numpy works", "metrics": {"mean": float(np.mean([1, 2, 3]))}}
        """,
    f"handlers/{EXP}/statistics.py": """\
        import statistics as stats


        def statistics(runner):
            return {"finding": "statistics works", "metrics": {"mean": stats.mean([2, 4])}}
        """,
    f"handlers/{EXP}/other.py": """\
        import statistics
        import numpy

        import helper  # a file beside the handler still imports by its plain name
        from handlers.common import ANSWER


        def other(runner):
            value = numpy.float64(statistics.mean([1, 3])) + helper.ONE + ANSWER
            return {"finding": "both libraries work beside subs named like them", "metrics": {"value": float(value)}}
        """,
    f"handlers/{EXP}/helper.py": "ONE = 1\n",
    "handlers/common.py": "ANSWER = 40\n",
}


def test_handler_subs_named_like_libraries_do_not_shadow_them(make_project: ProjectFactory) -> None:
    plan = one_sub_plan()
    plan["experiments"][EXP]["sub_experiments"] = {"numpy": {}, "statistics": {}, "other": {}}
    root = make_project(plan, LIBRARY_NAMED_HANDLERS)
    loaded = load_plan(root / PLAN_FILE)

    outcomes = {sub: run_sub(loaded, loaded.sub(EXP, sub), console=io.StringIO()) for sub in ("numpy", "statistics", "other")}

    for sub, outcome in outcomes.items():
        assert outcome.ok, (sub, outcome.record.get("error"))
    assert outcomes["numpy"].record["metrics"] == {"mean": 2.0}
    assert outcomes["statistics"].record["metrics"] == {"mean": 3}
    assert outcomes["other"].record["metrics"] == {"value": 43.0}


def test_handler_classes_keep_an_importable_module_name(run_handler: RunHandler) -> None:
    # pickled objects (torch.save of a model, spawned DataLoader workers) name the handler's module
    source = """\
    import pickle


    class Model:
        pass


    def s1(runner):
        return {"finding": pickle.loads(pickle.dumps(Model())).__class__.__module__}
    """

    outcome = run_handler(source)

    assert outcome.ok, outcome.record.get("error")
    assert outcome.record["finding"] == f"handlers.{EXP}.{SUB}"


# --- what a handler leaves behind ------------------------------------------------------------------

def test_handler_leftover_thread_is_named_and_not_waited_for(run_handler: RunHandler) -> None:
    source = """\
    import threading
    import time


    def s1(runner):
        threading.Thread(target=time.sleep, args=(600,), name="stray-poller").start()
        return {"finding": "returned while a thread still runs"}
    """
    started = time.monotonic()

    outcome = run_handler(source, timeout_min=0.5)

    assert time.monotonic() - started < LEFTOVER_THREADS_GRACE_S + 8  # not the 30 s timeout
    assert outcome.ok, outcome.record.get("error")
    warnings = read_record(outcome.paths.result)["warnings"]
    assert any("left 1 non-daemon thread running after it returned (stray-poller)" in warning for warning in warnings), warnings


@pytest.mark.skipif(not LINUX, reason="reads /proc")
@pytest.mark.parametrize("how", ["new session", "new session, empty environment", "daemon (double fork)"])
def test_handler_process_that_leaves_its_group_is_killed_and_reported(how: str, run_handler: RunHandler, tmp_path: Path) -> None:
    pid_file = tmp_path / "escaped.pid"
    beacon = "import sys, time\nwhile True:\n    open(sys.argv[1], 'a').write('x')\n    time.sleep(0.05)\n"
    start = {
        "new session": "subprocess.Popen(command, start_new_session=True).pid",
        # no environment to inherit a mark from: found by its parentage, noted while the handler ran
        "new session, empty environment": "subprocess.Popen(command, start_new_session=True, env={}).pid",
        "daemon (double fork)": "daemon(command)",
    }[how]
    source = f"""\
    import os, subprocess, sys, time


    def daemon(command):
        if os.fork() == 0:  # the classic: fork, setsid, fork again, the middle one exits
            os.setsid()
            if os.fork() == 0:
                os.execv(command[0], command)
            os._exit(0)
        os.wait()
        return None


    def s1(runner):
        beacon = runner.work_dir / "beacon.txt"  # keeps writing into the results folder
        command = [sys.executable, "-c", {beacon!r}, str(beacon)]
        pid = {start}
        time.sleep(1.5)
        open({str(pid_file)!r}, "w").write(str(pid or _find(beacon)))
        return {{"finding": "left a process behind"}}


    def _find(beacon):
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and str(beacon) in open(f"/proc/{{entry}}/cmdline").read():
                    return int(entry)
            except OSError:
                pass
    """
    outcome = run_handler(source)
    pid = int(pid_file.read_text())
    try:
        assert outcome.ok, outcome.record.get("error")
        assert gone_within(pid, 1.0), f"pid {pid} survived the attempt"
        beacon_file = outcome.paths.run_dir / "work" / "beacon.txt"
        size = beacon_file.stat().st_size
        time.sleep(0.3)
        assert beacon_file.stat().st_size == size  # nothing writes into the results folder any more
        warnings = read_record(outcome.paths.result)["warnings"]
        assert any("the handler left 1 process running outside its process group" in warning and f"pid {pid} " in warning
                   for warning in warnings), warnings
    finally:
        kill_if_alive(pid)


# --- what a handler raises -------------------------------------------------------------------------

def test_handler_exception_whose_str_and_repr_raise_keeps_type_line_and_traceback(run_handler: RunHandler) -> None:
    source = """\
    class Unprintable(Exception):
        def __str__(self):
            raise RuntimeError("no str")

        def __repr__(self):
            raise RuntimeError("no repr")


    def s1(runner):
        raise Unprintable("secret state")
    """

    outcome = run_handler(source)

    error = read_record(outcome.paths.failure)["error"]
    assert error["type"] == "Unprintable"
    assert error["message"] == "<the Unprintable's message cannot be shown: its __str__ raised RuntimeError>"
    assert error["handler_line"] == {"file": f"handlers/{EXP}/{SUB}.py", "line": 10, "function": SUB,
                                     "code": 'raise Unprintable("secret state")'}
    assert f"handlers/{EXP}/{SUB}.py" in error["traceback"] and "Unprintable" in error["traceback"]


def test_handler_that_raises_keyboard_interrupt_itself_is_a_failure_and_retried(run_handler: RunHandler) -> None:
    source = """\
    def s1(runner):
        if runner.attempt == 1:
            raise KeyboardInterrupt
        return {"finding": f"worked on attempt {runner.attempt}"}
    """

    outcome = run_handler(source, retries=1)

    assert outcome.ok, outcome.record.get("error")
    record = read_record(outcome.paths.result)
    assert record["attempts"] == 2
    assert record["failed_attempts"] == [{
        "attempt": 1, "error_type": "KeyboardInterrupt",
        "message": "the handler's code raised KeyboardInterrupt itself; no Ctrl-C or SIGINT reached its process"}]


# --- stop signals from outside ----------------------------------------------------------------------

SLEEPER = """\
import os
import time


def s1(runner):
    runner.log_metrics({"loss": 1.0}, step=0)
    print("ready", os.getpid(), flush=True)
    time.sleep(60)
    return {"finding": "never reached"}
"""


def start_cli_run(root: Path) -> tuple[subprocess.Popen[str], int]:
    """`labrunner run` on the one sub; returns it and the handler's pid once the handler is ready."""
    process = subprocess.Popen([sys.executable, "-m", "labrunner.cli", "run", EXP, SUB], cwd=root,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while True:
        line = process.stdout.readline()
        if "ready" in line:
            return process, int(line.split()[-1])
        assert line and time.monotonic() < deadline, "the handler did not start"


# what SLURM's scancel and container runtimes do: every process of the job gets SIGTERM at once, so
# the handler's process hears it directly and again through its supervisor, a moment later; each
# round is one `labrunner run`, and the order and gaps vary so that the later signals land at
# different points of the handler's report
SIGTERM_ROUNDS = [
    ("supervisor", "worker"),
    ("worker", "supervisor"),
    ("worker", 0.005, "supervisor"),
    ("worker", 0.02, "supervisor"),
    ("supervisor", 0.005, "worker"),
    ("worker", "supervisor", "worker"),
    ("worker", "supervisor", *[0.002, "worker"] * 50),  # a storm: each report step gets one
]


def test_handler_sigterm_to_every_process_of_the_job_is_recorded_as_terminated(make_project: ProjectFactory) -> None:
    root = make_project(one_sub_plan(retries=2), {f"handlers/{EXP}/{SUB}.py": SLEEPER})
    for steps in SIGTERM_ROUNDS:
        process, worker = start_cli_run(root)
        time.sleep(0.3)  # past its print, into the sleep
        try:
            for step in steps:
                if isinstance(step, float):
                    time.sleep(step)
                else:
                    with contextlib.suppress(ProcessLookupError):  # it may be done by now
                        os.kill(process.pid if step == "supervisor" else worker, signal.SIGTERM)
            _, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()

        assert process.returncode == 1, (steps, err)
        record = read_record(root / "results" / EXP / SUB / "failure.yaml")
        error = record["error"]
        assert error["type"] == "Terminated", (steps, error)
        assert "SIGTERM" in error["message"], steps
        assert (error["handler_line"] or {}).get("code") == "time.sleep(60)", (steps, error)
        assert f"handlers/{EXP}/{SUB}.py" in (error["traceback"] or ""), steps
        assert record["attempts"] == 1, steps  # stopped from outside: not retried
        assert record["metrics_logged"]["count"] == 1, steps


@pytest.mark.skipif(not LINUX, reason="PR_SET_PDEATHSIG is Linux's")
def test_handler_dies_when_its_supervisor_is_killed_outright(make_project: ProjectFactory) -> None:
    root = make_project(one_sub_plan(), {f"handlers/{EXP}/{SUB}.py": SLEEPER})
    process, worker = start_cli_run(root)
    try:
        process.kill()  # SIGKILL: the supervisor gets no chance to stop anything
        process.communicate(timeout=30)
        assert gone_within(worker, 5.0), "the handler outlived its supervisor"
    finally:
        kill_if_alive(worker)


def test_handler_process_whose_supervisor_is_already_gone_does_not_start(make_project: ProjectFactory, tmp_path: Path) -> None:
    # the supervisor died between starting the process and the process asking to die with it
    marker = tmp_path / "handler-ran"
    root = make_project(one_sub_plan(), {f"handlers/{EXP}/{SUB}.py": f"def s1(runner):\n    open({str(marker)!r}, 'w')\n"})
    context = {"experiment_id": EXP, "sub_id": SUB, "params": {}, "seed": 0, "stub": False, "run_dir": str(tmp_path / "run"),
               "project_root": str(root), "handler_file": f"handlers/{EXP}/{SUB}.py", "handler_function": SUB, "run_id": "r1"}
    (tmp_path / "context.json").write_text(json.dumps(context))
    env = {**os.environ, SUPERVISOR_PID_ENV: "1"}  # not this process's parent

    done = subprocess.run([sys.executable, "-m", "labrunner.worker", str(tmp_path / "context.json"), str(tmp_path / "outcome.json"),
                           str(tmp_path / "crash.txt")], env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode == EXIT_SUPERVISOR_GONE
    assert "the supervising process (1) is gone" in done.stderr
    assert not marker.exists() and not (tmp_path / "outcome.json").exists()


# --- output ----------------------------------------------------------------------------------------

class TimedConsole(io.StringIO):
    """A console that notes when each line reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        self.lines.append((time.monotonic(), text))
        return super().write(text)


def test_handler_progress_bar_reaches_the_console_live_and_throttled(run_handler: RunHandler) -> None:
    source = """\
    import sys
    import time


    def s1(runner):
        for step in range(1, 41):  # as tqdm draws: a carriage return, the bar, padding
            sys.stderr.write(f"\\rtraining {step}/40 " + " " * 5)
            sys.stderr.flush()
            time.sleep(0.1)
        sys.stderr.write("\\n")
        print("done", flush=True)
        return {"finding": "trained"}
    """
    console = TimedConsole()

    outcome = run_handler(source, console=console)

    assert outcome.ok, outcome.record.get("error")
    done_s = next(when for when, text in console.lines if text.endswith("] done\n"))
    progress = [(when, text) for when, text in console.lines if "] training " in text]
    assert progress[-1][1] == f"[{EXP}/{SUB}] training 40/40\n"  # the final state, without the padding
    live = [text for when, text in progress if when < done_s - 1.0]
    assert len(live) >= 2, progress  # shown while the bar ran, not only at its end
    assert len(progress) <= 5, progress  # one every 2 s and the last, not forty
    log_lines = [line for line in outcome.paths.log.read_text().splitlines() if line.startswith("training ")]
    assert log_lines[-1] == "training 40/40" and len(log_lines) <= 3, log_lines
    assert "\r" not in outcome.paths.log.read_text()
