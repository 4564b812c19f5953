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
import random
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType, ModuleType, TracebackType
from typing import Any, NoReturn

from labrunner.convert import validate_return
from labrunner.files import SpaceReserve, atomic_write_text, is_disk_full
from labrunner.hints import hint_for
from labrunner.redact import redact_data
from labrunner.runner import ExperimentRunner, RunContext, detect_device

__all__ = ["HandlerTerminated", "error_outcome", "handler_frame", "handler_location", "is_project_file", "main"]

OUTCOME_VERSION = 1
OUTCOME_RESERVE_BYTES = 1 << 20  # an outcome with a long traceback, with room to spare


class HandlerTerminated(BaseException):
    """SIGTERM turned into an exception, so the handler's `finally` blocks run and the
    traceback shows where it was. A BaseException, so `except Exception` does not swallow it."""


def _on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    raise HandlerTerminated(f"the handler process received {signal.Signals(signum).name}")


def import_handler(context: RunContext) -> Any:
    """Import the handler module by its dotted name under the project root, so that it can use
    relative imports and `from handlers.common import ...` alike."""
    root = Path(context.project_root)
    handler_path = (root / context.handler_file).resolve()
    for entry in reversed([str(handler_path.parent), str(root), *context.sys_path]):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    module: ModuleType
    try:
        relative = handler_path.relative_to(root.resolve()).with_suffix("")
        dotted = ".".join(relative.parts)
        module = importlib.import_module(dotted)
    except (ValueError, ModuleNotFoundError) as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name and not _is_prefix(exc.name, handler_path, root):
            raise  # the handler itself imports something missing: report that, not a fallback
        spec = importlib.util.spec_from_file_location(f"labrunner_handler_{context.sub_id}", handler_path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return getattr(module, context.handler_function)


def _is_prefix(missing: str, handler_path: Path, root: Path) -> bool:
    """Whether the missing module is the handler's own package path (a folder name that is not
    a valid module path, say), rather than something the handler imports."""
    try:
        parts = handler_path.relative_to(root.resolve()).with_suffix("").parts
    except ValueError:
        return True
    return any(".".join(parts[:depth]) == missing for depth in range(1, len(parts) + 1))


_OWN_PACKAGE = Path(__file__).resolve().parent


def is_project_file(filename: str, project_root: Path) -> bool:
    """Code the researcher wrote: under the project root, not labrunner, not installed packages."""
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


def error_outcome(exc: BaseException, project_root: Path, extra_warnings: list[str]) -> dict[str, Any]:
    frame = handler_frame(exc.__traceback__, project_root)
    error_type = type(exc).__name__
    message = str(exc)
    if isinstance(exc, KeyboardInterrupt):
        error_type, message = "Interrupted", "the handler was interrupted (SIGINT / Ctrl-C)"
    elif isinstance(exc, HandlerTerminated):
        error_type = "Terminated"
    text = "".join(traceback.format_exception(exc))
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
        }
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a record
        outcome = error_outcome(exc, root, runner.warnings if runner else [])
        outcome["device"] = _device_used()
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


def main(argv: list[str] | None = None) -> int:
    context_path, outcome_path, crash_path = (argv or sys.argv[1:])[:3]
    crash_file = open(crash_path, "w", encoding="utf-8")  # noqa: SIM115 - must outlive this frame
    faulthandler.enable(crash_file, all_threads=True)
    faulthandler.register(signal.SIGUSR1, crash_file, all_threads=True)  # the supervisor's "where are you?"
    signal.signal(signal.SIGTERM, _on_sigterm)
    context = RunContext.from_json(Path(context_path).read_text(encoding="utf-8"))
    reserve = SpaceReserve.claim(Path(f"{outcome_path}.reserve"), OUTCOME_RESERVE_BYTES)  # for a disk the handler fills
    started = time.time()
    outcome = run(context)
    outcome["worker_duration_s"] = round(time.time() - started, 3)
    write_outcome(Path(outcome_path), outcome, reserve)
    reserve.release()
    sys.stdout.flush()
    return 0 if outcome["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
