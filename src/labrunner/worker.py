"""The handler's own process: import the handler, call it, report the outcome as JSON.

Started by the supervisor (`labrunner.execution`) as `python -m labrunner.worker CONTEXT_JSON
OUTCOME_JSON CRASH_TXT`. Anything the handler raises becomes an outcome with its traceback, the
handler line and a hint; crashes that kill the interpreter (segfault, abort) leave a Python
traceback in CRASH_TXT through faulthandler, which the supervisor reads.
"""

from __future__ import annotations

import faulthandler
import importlib
import importlib.util
import json
import linecache
import os
import random
import re
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from labrunner.convert import validate_return
from labrunner.files import SpaceReserve, atomic_write_text, is_disk_full
from labrunner.hints import hint_for
from labrunner.provenance import handler_environment
from labrunner.redact import redact_data
from labrunner.jobspec import SUPERVISOR_PID_ENV, RunContext
from labrunner.runner import ExperimentRunner, detect_device

__all__ = ["HandlerTerminated", "error_outcome", "handler_frame", "handler_location", "is_project_file", "main"]

OUTCOME_VERSION = 1
OUTCOME_RESERVE_BYTES = 1 << 20  # an outcome with a long traceback, with room to spare


class HandlerTerminated(BaseException):
    """SIGTERM turned into an exception, so the handler's `finally` blocks run and the
    traceback shows where it was. A BaseException, so `except Exception` does not swallow it."""


EXIT_SUPERVISOR_GONE = 3
DUPLICATE_STOP_WINDOW_S = 2.0  # a second stop signal this soon after the first is the same stop, heard twice
LEFTOVER_THREADS_GRACE_S = 2.0  # after the outcome is written, how long threads the handler left get to end
_PR_SET_PDEATHSIG = 1


class _HandlerStops:
    """SIGTERM and SIGINT as the handler's process sees them.

    The first one becomes an exception in the handler (HandlerTerminated, KeyboardInterrupt), so
    its `finally` blocks run and the record shows where it was. SLURM's scancel and container
    runtimes signal every process of a job, so the worker hears one stop twice, directly and
    through its supervisor: a repeat within DUPLICATE_STOP_WINDOW_S, or any stop once the
    handler has finished and the outcome is being written, is only noted, never raised, so that
    it cannot cut the report short. (One that is never obeyed is the supervisor's to kill.)
    """

    def __init__(self) -> None:
        self.received: list[str] = []
        self.reporting = False
        self._last_raised_s = -float("inf")

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self.received.append(name)
        now = time.monotonic()
        if self.reporting or now - self._last_raised_s < DUPLICATE_STOP_WINDOW_S:
            return
        self._last_raised_s = now
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise HandlerTerminated(f"the handler process received {name}")


_STOPS = _HandlerStops()


def import_handler(context: RunContext) -> Any:
    """Load the handler file by its path, so that nothing in its folder can shadow a library.

    A sub named `numpy` or `statistics` has a handler file of that name; with its folder first on
    `sys.path`, every `import numpy` in that experiment would find the handler instead. So the
    folder goes last on `sys.path` (a plain `import helper` of a file beside the handler still
    works, but never hides an installed or standard module), the project root goes first
    (`from handlers.common import ...`), and the file is loaded under a module name of our own
    choosing: its dotted path below the project root (`handlers.e1.numpy`, importable again, so
    pickled classes and spawned DataLoader workers find it), or a labrunner name for a file that
    has no such path.
    """
    root = Path(context.project_root).resolve()
    handler_path = (root / context.handler_file).resolve()
    for entry in reversed([str(root), *context.sys_path]):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    if str(handler_path.parent) not in sys.path:
        sys.path.append(str(handler_path.parent))
    name = _module_name(handler_path, root, context.sub_id)
    spec = importlib.util.spec_from_file_location(name, handler_path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the handler file {handler_path} (not a Python source file?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return getattr(module, context.handler_function)


def _module_name(handler_path: Path, root: Path, sub_id: str) -> str:
    """`handlers.e1.s1` for handlers/e1/s1.py: a name inside the project's own package, never a
    bare top-level name that a library could have."""
    try:
        parts = handler_path.with_suffix("").relative_to(root).parts
    except ValueError:
        parts = ()
    if len(parts) >= 2 and all(part and "." not in part for part in parts):
        return ".".join(parts)
    return f"labrunner_handler_{re.sub(r'[^0-9A-Za-z_]', '_', sub_id)}"


_OWN_PACKAGE = Path(__file__).resolve().parent


def is_project_file(filename: str, project_root: Path) -> bool:
    """Code the researcher wrote: under the project root, not labrunner, not installed packages.
    Frozen and generated code (`<frozen os>`, `<string>`) is nobody's file: resolved, such a name
    would land under the working directory, which is the project root."""
    if filename.startswith("<"):
        return False
    path = Path(filename).resolve()
    return (path.is_relative_to(project_root.resolve()) and not path.is_relative_to(_OWN_PACKAGE)
            and "site-packages" not in path.parts)


def handler_location(filename: str, line: int | None, function: str | None, project_root: Path) -> dict[str, Any]:
    """Where in the handler's code a failure happened, as records store it."""
    code = linecache.getline(filename, line).strip() if line else ""
    return {"file": _relative(filename, project_root), "line": line, "function": function, "code": code or None}


def handler_frame(tb: TracebackType | None, project_root: Path) -> traceback.FrameSummary | None:
    """The deepest frame in the project's own code."""
    chosen = None
    for frame in traceback.extract_tb(tb):
        if is_project_file(frame.filename, project_root):
            chosen = frame
    return chosen


def error_outcome(exc: BaseException, project_root: Path, extra_warnings: list[str],
                  signals_received: Sequence[str] = ()) -> dict[str, Any]:
    """The failure outcome for an exception. `signals_received` tells a Ctrl-C from outside
    (a SIGINT reached the process) from a handler that raised KeyboardInterrupt itself."""
    frame = handler_frame(exc.__traceback__, project_root)
    error_type = type(exc).__name__
    message = exception_message(exc)
    if isinstance(exc, KeyboardInterrupt):
        if "SIGINT" in signals_received:
            error_type, message = "Interrupted", "the handler was interrupted (SIGINT / Ctrl-C)"
        else:
            message = "the handler's code raised KeyboardInterrupt itself; no Ctrl-C or SIGINT reached its process"
    elif isinstance(exc, HandlerTerminated):
        error_type = "Terminated"
    elif isinstance(exc, SystemExit):
        message = f"the handler called sys.exit({_safe_repr(exc.code)}) instead of returning a result"
    text = "".join(traceback.format_exception(exc))  # copes with a broken __str__ itself
    location = handler_location(frame.filename, frame.lineno, frame.name, project_root) if frame else None
    return {
        "status": "failed",
        "error": {
            "type": error_type,
            "message": message if message.strip() else error_type,
            "traceback": text,
            "handler_line": location,
            "hint": hint_for(error_type, message, text),
        },
        "warnings": extra_warnings,
    }


def exception_message(exc: BaseException) -> str:
    """str(exc), or what can be said without it: a record must survive an exception whose
    __str__ (or __repr__) itself raises."""
    try:
        return str(exc)
    except BaseException as broken:  # noqa: BLE001 - any failure of user code here is reported, not raised
        return f"<the {type(exc).__name__}'s message cannot be shown: its __str__ raised {type(broken).__name__}>"


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except BaseException as broken:  # noqa: BLE001
        return f"<{type(value).__name__} whose __repr__ raised {type(broken).__name__}>"


def _relative(filename: str, root: Path) -> str:
    try:
        return Path(filename).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return filename


def run(context: RunContext) -> dict[str, Any]:
    """Call the handler and return the outcome (completed or failed) as plain data."""
    root = Path(context.project_root)
    runner: ExperimentRunner | None = None
    try:
        handler = import_handler(context)
        _seed_loaded_libraries(context.seed)
        runner = ExperimentRunner(context)
        returned = handler(runner)
        _STOPS.reporting = True  # from here a stop is noted, not raised: see _HandlerStops
        runner.flush()  # metric lines still waiting for the GPU, before the outcome is reported
        output = validate_return(returned, runner.results.resolve)
        artifacts = output.artifacts + [name for name in runner.results.saved if name not in output.artifacts]
        return {
            "status": "completed",
            "finding": output.finding,
            "metrics": output.metrics,
            "artifacts": artifacts,
            "details": output.extra,
            "warnings": runner.warnings + output.warnings,
            "device": _device_used(),
            "environment": handler_environment(),
        }
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a record
        _STOPS.reporting = True
        if runner is not None:
            runner.close()  # also after SIGINT/SIGTERM (raised here): every line logged reaches metrics.jsonl
        outcome = error_outcome(exc, root, runner.warnings if runner else [], _STOPS.received)
        outcome["device"] = _device_used()
        outcome["environment"] = handler_environment()
        return outcome
    finally:
        if runner is not None:
            runner.close()


def _seed_loaded_libraries(seed: int) -> None:
    """Seed before the handler runs, without importing numpy or torch for handlers that do not."""
    random.seed(seed)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(seed % 2**32)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def _device_used() -> str:
    """A handler that never imported torch ran on the cpu; asking torch would cost a second."""
    return detect_device() if "torch" in sys.modules else "cpu"


def write_outcome(path: Path, outcome: dict[str, Any], reserve: SpaceReserve | None = None) -> None:
    """Atomically; on a full disk, into the space the worker held back at its start."""
    text = json.dumps(redact_data({"version": OUTCOME_VERSION, **outcome}), allow_nan=True)
    try:
        atomic_write_text(path, text, durable=False)  # read back by the supervisor as soon as this process exits
    except OSError as exc:
        if reserve is None or not is_disk_full(exc) or not reserve.release():
            raise
        atomic_write_text(path, text, durable=False)


def _die_with_supervisor() -> None:
    """On Linux, ask the kernel to kill this process when its supervisor dies (killed outright,
    say), so that no orphaned handler keeps a GPU busy; then check that the supervisor did not die
    before we asked. Done here, first thing, not in a `preexec_fn`: Python code run between fork
    and exec can deadlock on a lock that one of the supervisor's threads held at the fork."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    expected = os.environ.get(SUPERVISOR_PID_ENV)
    if expected and os.getppid() != int(expected):
        print(f"labrunner: the supervising process ({expected}) is gone; the handler does not start", file=sys.stderr)
        sys.stderr.flush()
        os._exit(EXIT_SUPERVISOR_GONE)


def _end_despite_leftover_threads(outcome: dict[str, Any], outcome_path: Path, code: int) -> None:
    """Python waits for every non-daemon thread before it exits, so a thread the handler left
    running would hold its sub until the timeout. A watchdog gives such threads a short grace,
    then names them in the outcome and ends the process: the outcome is already written."""

    def watch() -> None:
        time.sleep(LEFTOVER_THREADS_GRACE_S)
        while True:
            left = [thread.name for thread in threading.enumerate()
                    if thread.is_alive() and not thread.daemon and thread is not threading.main_thread()]
            if left:
                break
            time.sleep(LEFTOVER_THREADS_GRACE_S)  # a slow exit with no thread to blame: not ours to cut short
        warning = (f"the handler left {len(left)} non-daemon thread{'s' if len(left) > 1 else ''} running after it "
                   f"{'returned' if outcome['status'] == 'completed' else 'failed'} ({', '.join(left)}); the process "
                   f"was ended {LEFTOVER_THREADS_GRACE_S:g}s later instead of waiting for "
                   f"{'them' if len(left) > 1 else 'it'} (join threads before returning, or start them with daemon=True)")
        outcome["warnings"] = [*outcome.get("warnings", []), warning]
        print(f"labrunner: {warning}", file=sys.stderr)
        write_outcome(outcome_path, outcome)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    threading.Thread(target=watch, name="labrunner-exit-watchdog", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    context_path, outcome_path, crash_path = (argv or sys.argv[1:])[:3]
    _die_with_supervisor()
    crash_file = open(crash_path, "w", encoding="utf-8")  # noqa: SIM115 - must outlive this frame
    faulthandler.enable(crash_file, all_threads=True)
    faulthandler.register(signal.SIGUSR1, crash_file, all_threads=True)  # the supervisor's "where are you?"
    _STOPS.install()
    context = RunContext.from_json(Path(context_path).read_text(encoding="utf-8"))
    reserve = SpaceReserve.claim(Path(f"{outcome_path}.reserve"), OUTCOME_RESERVE_BYTES)  # for a disk the handler fills
    started = time.time()
    outcome = run(context)
    outcome["worker_duration_s"] = round(time.time() - started, 3)
    if outcome["status"] == "completed" and _STOPS.received:
        received = ", ".join(dict.fromkeys(_STOPS.received))
        outcome["warnings"] = [*outcome.get("warnings", []), f"the handler's process received {received} but returned a result"]
    write_outcome(Path(outcome_path), outcome, reserve)
    reserve.release()
    sys.stdout.flush()
    code = 0 if outcome["status"] == "completed" else 1
    _end_despite_leftover_threads(outcome, Path(outcome_path), code)
    return code


if __name__ == "__main__":
    sys.exit(main())
