"""Running one sub-experiment: attempts, supervision, records.

`run_sub` is what a Snakemake job (or `labrunner run`) calls. It marks the attempt's start in
failure.yaml, starts the W&B run, asks a backend to run the handler once per attempt (retrying
failed attempts up to `retries`), forwards logged metrics to W&B as they arrive, and writes the
result or failure record. The local backend supervises the handler in a child process, so a
timeout, a segfault or a SIGKILL of the handler still ends in a failure record, and every process
the handler started ends with its attempt (see `labrunner.proctree`).
"""

from __future__ import annotations

import json
import os
import platform
import re
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from labrunner import __version__
from labrunner.attempt_tracking import AttemptTracking
from labrunner.compute import compute_facts
from labrunner.executor import current_executor
from labrunner.files import AppendLog, SpaceReserve, is_disk_full, storage_error
from labrunner.hints import hint_for
from labrunner.layout import RunPaths, results_root as default_results_root, run_dir
from labrunner.jobspec import SUPERVISOR_PID_ENV, RunContext, SubSpec
from labrunner.proctree import ATTEMPT_MARK_ENV, TREE_SCAN_EVERY_S, ProcessTree
from labrunner.records import RECORD_RESERVE_BYTES, COMPLETED, FAILED, mark_running, now_iso, write_final
from labrunner.redact import redact, secret_values
from labrunner.locks import RunLock
from labrunner.provenance import git_state, record_environment
from labrunner.sources import code_hashes, file_sha256
from labrunner.tracking import NullTracker, Tracker

if TYPE_CHECKING:
    from labrunner.jobspec import RunPlan

__all__ = ["AttemptRequest", "Backend", "LocalBackend", "SubRun", "run_sub"]

TERMINATE_GRACE_S = 10.0  # after SIGINT/SIGTERM, how long a handler gets to write its record
TIMEOUT_DUMP_WAIT_S = 1.0  # after asking a timed-out handler for its stack


@dataclass(frozen=True)
class AttemptRequest:
    """One attempt of one sub: what a backend needs to run the handler once."""

    context: RunContext
    paths: RunPaths
    timeout_s: float
    gpu: str | None
    label: str  # "<exp>/<sub>" or "<exp>/<sub>#seed", prefixed to console lines
    console: TextIO


class Backend(ABC):
    """Runs one attempt of a handler and reports the outcome as data (never raises for a
    handler's failure): {"status": "completed", "finding", "metrics", ...} or
    {"status": "failed", "error": {"type", "message", "traceback", "handler_line", "hint"}}."""

    name: str = "backend"

    @abstractmethod
    def run_attempt(self, request: AttemptRequest) -> dict[str, Any]: ...


class _OutputPump(threading.Thread):
    """Copies the handler's output to the console (prefixed) and to run.log.

    Whole lines go to both as they come. A progress bar (tqdm, or anything that redraws its line
    after a carriage return) never ends its line until it is done, so its updates are shown as
    lines of their own: the latest state at most once every PROGRESS_CONSOLE_EVERY_S on the
    console and once every PROGRESS_LOG_EVERY_S in run.log (so a stalled bar shows where it
    stopped, without flooding either); the final state, ended by a newline, always reaches both.
    """

    def __init__(self, stream: Any, log: TextIO, console: TextIO, label: str) -> None:
        super().__init__(name="labrunner-output", daemon=True)
        self._stream, self._log, self._console, self._label = stream, log, console, label
        self._secrets = secret_values()
        self._line = b""  # the current line, not yet ended by a newline
        self._log_closed = False
        self._log_failed = False  # a full disk: the console goes on, run.log does not
        self._log_note = ""
        self._shown = {"console": _Throttle(PROGRESS_CONSOLE_EVERY_S), "log": _Throttle(PROGRESS_LOG_EVERY_S)}

    def run(self) -> None:
        descriptor = self._stream.fileno()
        try:
            while not self._log_closed:
                ready, _, _ = select.select([descriptor], [], [], self._next_progress_due_s())
                if ready:
                    chunk = os.read(descriptor, _READ_BYTES)
                    if not chunk:
                        break
                    self._feed(chunk)
                self._show_progress()
            if self._line and not self._log_closed:
                self._emit_line(_visible(self._line))
        finally:
            self._stream.close()  # here, not by the supervisor: closing blocks while a read is pending

    def _feed(self, chunk: bytes) -> None:
        data = self._line + chunk
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            self._emit_line(_visible(data[start:end]))
            start = end + 1
        self._line = data[start:]
        if len(self._line) > _MAX_LINE_BYTES and b"\r" not in self._line:  # output that never ends a line
            self._emit_line(self._line)
            self._line = b""

    def _emit_line(self, raw: bytes) -> None:
        text = redact(raw.decode("utf-8", errors="replace"), self._secrets)
        self._write_log(text)
        self._write_console(text)
        if self._log_note:  # after the line run.log could not take, said once
            self._write_console(self._log_note, prefixed=False)
            self._log_note = ""
        for throttle in self._shown.values():
            throttle.line_ended()

    def _show_progress(self) -> None:
        if b"\r" not in self._line:
            return
        state = _visible(self._line)
        now = time.monotonic()
        for where, throttle in self._shown.items():
            if throttle.due(state, now):
                text = redact(state.decode("utf-8", errors="replace"), self._secrets)
                self._write_log(text) if where == "log" else self._write_console(text)

    def _next_progress_due_s(self) -> float | None:
        if b"\r" not in self._line:
            return None
        state, now = _visible(self._line), time.monotonic()
        waits = [throttle.wait_s(state, now) for throttle in self._shown.values()]
        pending = [wait for wait in waits if wait is not None]
        return min(pending) if pending else None

    def _write_log(self, text: str) -> None:
        if self._log_failed:
            return
        try:
            self._log.write(text + "\n")
            self._log.flush()
        except ValueError:  # run.log is closed: the attempt is over, a process it left still writes
            self._log_closed = True
        except OSError as exc:  # a full disk: keep the console going and the handler's pipe drained
            self._log_failed = True
            self._log_note = f"labrunner: the rest of this output is not in run.log: {exc}\n"

    def _write_console(self, text: str, prefixed: bool = True) -> None:
        try:
            self._console.write(f"[{self._label}] {text}\n" if prefixed else text)
            self._console.flush()
        except (OSError, ValueError):
            pass  # a closed console must not stop run.log


PROGRESS_CONSOLE_EVERY_S = 2.0
PROGRESS_LOG_EVERY_S = 30.0
_READ_BYTES = 65536
_MAX_LINE_BYTES = 65536


def _visible(line: bytes) -> bytes:
    """What a terminal shows of a line redrawn after carriage returns: its last non-empty part
    (without the padding that progress bars add to cover a longer earlier state)."""
    if b"\r" not in line:
        return line
    parts = [part for part in line.split(b"\r") if part.strip()]
    return parts[-1].rstrip() if parts else line.replace(b"\r", b"")


@dataclass
class _Throttle:
    """When the next progress state of the current line may be shown on one output."""

    every_s: float
    last_shown_s: float = -float("inf")
    last_state: bytes | None = None

    def wait_s(self, state: bytes, now: float) -> float | None:
        if state == self.last_state:
            return None
        return max(0.0, self.last_shown_s + self.every_s - now)

    def due(self, state: bytes, now: float) -> bool:
        if self.wait_s(state, now) != 0.0:
            return False
        self.last_shown_s, self.last_state = now, state
        return True

    def line_ended(self) -> None:
        self.last_state = None


class LocalBackend(Backend):
    """Runs the handler in a child process of its own session, under a deadline."""

    name = "local"

    def run_attempt(self, request: AttemptRequest) -> dict[str, Any]:
        internal = request.paths.internal
        internal.mkdir(parents=True, exist_ok=True)
        attempt = request.context.attempt
        context_path = internal / f"context-{attempt}.json"
        outcome_path = internal / f"outcome-{attempt}.json"
        crash_path = internal / f"stack-{attempt}.txt"
        for stale in (outcome_path, crash_path):
            stale.unlink(missing_ok=True)
        context_path.write_text(request.context.to_json(), encoding="utf-8")
        tree_mark = f"{request.context.run_id}-{attempt}-{uuid.uuid4().hex[:8]}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", SUPERVISOR_PID_ENV: str(os.getpid()), ATTEMPT_MARK_ENV: tree_mark}
        command = [sys.executable, "-m", "labrunner.worker", str(context_path), str(outcome_path), str(crash_path)]
        with AppendLog(request.paths.log) as log:
            log.write(f"=== {request.label}: run {request.context.run_id}, attempt {attempt}, started {now_iso()} ===\n")
            log.flush()
            # signal forwarding is in place before the handler starts: a Ctrl-C at any moment
            # reaches it (or, arriving first, is passed on the moment it starts)
            with _StopSignals() as stops:
                # no preexec_fn: Python code between fork and exec can deadlock on a lock held by
                # one of our threads (metrics forwarder, W&B); the worker asks to die with us itself
                process = subprocess.Popen(
                    command, cwd=request.context.project_root, env=env, stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                )
                stops.attach(process.pid)
                tree = ProcessTree(process.pid, tree_mark)
                pump = _OutputPump(process.stdout, log, request.console, request.label)
                pump.start()
                timed_out = _wait(process, request.timeout_s, tree)
            _kill_group(process.pid)  # children the handler left behind die with it
            sweep = tree.sweep()  # and so do those that left its group
            pump.join(timeout=5.0)  # not longer: a process that could not be killed may hold the pipe for ever
        outcome = _read_outcome(outcome_path)
        if outcome is None:
            outcome = _death_outcome(process.returncode, timed_out, request, crash_path, stops.stopped)
        else:
            outcome = _stopped_from_outside_first(outcome, stops.stopped)
        outcome["warnings"] = [*outcome.get("warnings", []), *sweep.warnings()]
        return outcome


def _wait(process: subprocess.Popen[bytes], timeout_s: float, tree: ProcessTree) -> bool:
    """Wait for the handler, noting its descendants as it goes; past the deadline, take its
    stack, then stop it. True if timed out."""
    deadline_s = time.monotonic() + timeout_s
    while (left_s := deadline_s - time.monotonic()) > 0:
        try:
            process.wait(timeout=min(TREE_SCAN_EVERY_S, left_s))
            return False
        except subprocess.TimeoutExpired:
            tree.scan()
    _signal_group(process.pid, signal.SIGUSR1)  # faulthandler writes every thread's stack
    time.sleep(TIMEOUT_DUMP_WAIT_S)
    _signal_group(process.pid, signal.SIGKILL)
    process.wait()
    return True


def _stopped_from_outside_first(outcome: dict[str, Any], stopped: list[str]) -> dict[str, Any]:
    """A failure after this process forwarded a stop is that stop, whatever the handler then
    raised: a library that installs its own SIGINT/SIGTERM handler turns it into SystemExit or
    a KeyboardInterrupt of its own, and a stopped run must not be retried."""
    error = outcome.get("error") or {}
    if not stopped or outcome.get("status") != FAILED or error.get("type") in _STOP_TYPES:
        return outcome
    error_type = _STOP_TYPES[0] if stopped[0] == "SIGINT" else _STOP_TYPES[1]
    message = f"the run was stopped by {stopped[0]}; the handler then ended with {error.get('type')}: {error.get('message')}"
    return {**outcome, "error": {**error, "type": error_type, "message": message,
                                 "hint": hint_for(error_type, message, error.get("traceback") or "")}}


_STOP_TYPES = ("Interrupted", "Terminated")


class _StopSignals:
    """While a handler runs, Ctrl-C / SIGTERM to this process go to the handler, which records
    them as a failure; one that does not exit within the grace period is killed."""

    def __init__(self) -> None:
        self.stopped: list[str] = []
        self._pid: int | None = None
        self._timers: list[threading.Timer] = []
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():  # signals can only be caught there
            self._previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def attach(self, pid: int) -> None:
        self._pid = pid
        for name in self.stopped:  # arrived while the handler was starting
            self._forward(signal.Signals[name])

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopped.append(signal.Signals(signum).name)
        if self._pid is not None:
            self._forward(signum)

    def _forward(self, signum: int) -> None:
        assert self._pid is not None
        _signal_group(self._pid, signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)
        timer = threading.Timer(TERMINATE_GRACE_S, _signal_group, (self._pid, signal.SIGKILL))
        timer.daemon = True
        timer.start()
        self._timers.append(timer)

    def __exit__(self, *exc_info: object) -> None:
        for timer in self._timers:  # the handler has exited: neither wait for the timer nor kill a reused pid
            timer.cancel()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_group(pid: int) -> None:
    _signal_group(pid, signal.SIGKILL)


def _read_outcome(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _death_outcome(returncode: int, timed_out: bool, request: AttemptRequest, crash_path: Path,
                   stopped: list[str]) -> dict[str, Any]:
    """A handler process that died without reporting: say how, with the stack it left."""
    stack = crash_path.read_text(encoding="utf-8", errors="replace").strip() if crash_path.exists() else ""
    if timed_out:
        minutes = request.timeout_s / 60
        error_type = "Timeout"
        message = f"the handler ran past its timeout of {minutes:g} min ({request.timeout_s:g} s) and was stopped"
    elif stopped:  # however the process then ended: a second signal may have cut its report short
        error_type = "Interrupted" if stopped[0] == "SIGINT" else "Terminated"
        ended = (f"did not stop within {TERMINATE_GRACE_S:g}s and was killed" if returncode == -signal.SIGKILL
                 else f"{_how_it_ended(returncode)} without reporting")
        message = f"the run was stopped by {stopped[0]} (the handler process then {ended})"
    elif returncode == -signal.SIGKILL:
        error_type = "Killed"
        message = "the handler process was killed by SIGKILL: the out-of-memory killer, or a kill from outside"
    elif returncode < 0:
        error_type = "Crash"
        message = f"the handler process crashed with {_signal_name(-returncode)}"
    else:
        error_type = "Exited"
        message = (f"the handler process exited with code {returncode} before reporting a result "
                   "(sys.exit() or os._exit() in the handler or a library it calls?)")
    return {
        "status": FAILED,
        "error": {"type": error_type, "message": message, "traceback": stack or None,
                  "handler_line": _stack_handler_line(stack, request.context), "hint": hint_for(error_type, message, stack)},
        "warnings": [],
        "exit": {"returncode": returncode},
    }


def _signal_name(number: int) -> str:
    return signal.Signals(number).name if number in signal.Signals._value2member_map_ else f"signal {number}"


def _how_it_ended(returncode: int) -> str:
    return f"died of {_signal_name(-returncode)}" if returncode < 0 else f"exited with code {returncode}"


_FAULTHANDLER_FRAME = re.compile(r'^\s*File "(?P<file>.+)", line (?P<line>\d+) in (?P<function>.+)$')


def _stack_handler_line(stack: str, context: RunContext) -> dict[str, Any] | None:
    """The innermost line of the project's own code in a faulthandler dump."""
    from labrunner.worker import handler_location, is_project_file  # the handler's process's modules: only on a crash

    root = Path(context.project_root)
    for line in stack.splitlines():  # faulthandler prints the innermost frame first
        match = _FAULTHANDLER_FRAME.match(line)
        if match and is_project_file(match["file"], root):
            return handler_location(match["file"], int(match["line"]), match["function"].strip(), root)
    return None


@dataclass
class _MetricsForwarder:
    """Tails metrics.jsonl while the handler runs and forwards this run's lines to W&B."""

    path: Path
    run_id: str
    tracker: Tracker
    attempt: int = 1  # its lines only: each attempt is a W&B run of its own
    offset: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _draining: threading.Lock = field(default_factory=threading.Lock)  # stop() drains while the loop may still be

    def start(self) -> None:
        self.offset = self.path.stat().st_size if self.path.exists() else 0
        self._thread = threading.Thread(target=self._loop, name="labrunner-metrics", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            self.drain()

    def drain(self) -> None:
        with self._draining:  # one reader at a time, so no line is sent twice
            self._drain()

    def _drain(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        end = chunk.rfind(b"\n") + 1  # only whole lines; a partial one is read next time
        self.offset += end
        self.tracker.log_lines([(entry.get("metrics", {}), entry.get("step"))
                                for entry in _parse_metric_lines(chunk[:end])
                                if entry.get("run") == self.run_id and entry.get("attempt", self.attempt) == self.attempt])

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.drain()


def _parse_metric_lines(chunk: bytes) -> list[dict[str, Any]]:
    """The entries of whole lines of metrics.jsonl: parsed in one go (a third of the cost of a parse
    per line, which a handler logging every step pays thousands of times), else line by line,
    skipping a damaged one."""
    try:  # whole lines, so a comma in place of each newline makes one array (a blank line does not)
        entries = json.loads(b"[" + chunk.rstrip(b"\n").replace(b"\n", b",") + b"]")
    except (json.JSONDecodeError, UnicodeDecodeError):
        entries = [_parse_metric_line(line) for line in chunk.splitlines() if line.strip()]
    return [entry for entry in entries if type(entry) is dict]


def _parse_metric_line(line: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return entry if isinstance(entry, dict) else None


def logged_metrics_summary(path: Path, run_id: str, attempt: int) -> dict[str, Any]:
    """What the handler logged in one attempt: how many calls, the last step, the last values."""
    count, last_step, last = 0, None, {}
    if path.exists():
        with path.open("rb") as handle:
            for line in handle:
                entry = _parse_metric_line(line)
                if entry and entry.get("run") == run_id and entry.get("attempt") == attempt:
                    count += 1
                    last_step = entry.get("step", last_step)
                    last.update(entry.get("metrics", {}))
    return {"count": count, "last_step": last_step, "last": last}


@dataclass(frozen=True)
class SubRun:
    """The outcome of `run_sub`: the record written and where."""

    status: str
    record: dict[str, Any]
    paths: RunPaths
    tracking_hung: bool = False  # a W&B call was abandoned: exit without waiting for wandb

    @property
    def ok(self) -> bool:
        return self.status == COMPLETED


def run_sub(plan: RunPlan, spec: SubSpec, seed: int | None = None, *, stub: bool = False,
            results_root: Path | None = None, backend: Backend | None = None,
            console: TextIO | None = None) -> SubRun:
    """Run one sub-experiment (one seed) with retries; write its records; never raise for a
    handler's failure."""
    seed = spec.seeds[0] if seed is None else seed
    backend = backend or LocalBackend()
    console = console or sys.stdout
    root = plan.root.resolve()
    relative_results = Path(results_root) if results_root is not None else default_results_root(stub)
    paths = RunPaths(root / run_dir(relative_results, spec.experiment_id, spec.sub_id, seed, spec.seeds))
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    label = spec.key if len(spec.seeds) <= 1 else f"{spec.key}#seed{seed}"
    started_at = now_iso()
    # one attempt per run at a time: a second one is refused here, before it touches anything
    lock = RunLock(paths.lock, label)
    lock_warning = lock.acquire(started_at, " ".join(sys.argv))
    try:
        with _DeferredStops() as stops:
            return _run_locked(plan, spec, seed, stub, backend, console, root, paths, label, started_at,
                               [lock_warning] if lock_warning else [], stops)
    finally:
        lock.release()


class _DeferredStops:
    """Outside an attempt (before it, between retries, while the records are written) a Ctrl-C or
    SIGTERM must not kill this process half-way through a record: the next run would call the
    attempt "Lost". It is noted instead: no new attempt starts, and the run ends once its record
    is written. During an attempt, _StopSignals takes over and forwards it to the handler."""

    def __init__(self) -> None:
        self.stopped: list[str] = []
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_DeferredStops":
        if threading.current_thread() is threading.main_thread():  # signals can only be caught there
            self._previous = {sig: signal.signal(sig, self._note) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.stopped.append(signal.Signals(signum).name)

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _stopped_before_attempt(stopped: list[str]) -> dict[str, Any]:
    name = stopped[0]
    error_type = "Interrupted" if name == "SIGINT" else "Terminated"
    message = f"the run was stopped by {name} before the attempt started"
    return {"status": FAILED, "error": {"type": error_type, "message": message, "traceback": None,
                                        "handler_line": None, "hint": hint_for(error_type, message, "")},
            "warnings": []}


def _run_locked(plan: RunPlan, spec: SubSpec, seed: int, stub: bool, backend: Backend, console: TextIO, root: Path,
                paths: RunPaths, label: str, started_at: str, warnings: list[str], stops: _DeferredStops) -> SubRun:
    run_id = uuid.uuid4().hex[:12]
    started_s = time.monotonic()
    code = code_hashes(root, spec.handler_file)  # the code this attempt runs, before it can change
    last_failure = mark_running(paths, run_id, started_at, os.getpid(), backend.name)
    reserve = SpaceReserve.claim(paths.internal / "reserve", RECORD_RESERVE_BYTES)  # for a disk that fills up
    # a new attempt supersedes the old result (kept under history/), as Snakemake would have it
    paths.result.unlink(missing_ok=True)
    params = spec.params_for(stub)
    facts = _RunFacts(code, git_state(root, code, paths.history))
    tracking = AttemptTracking(plan, spec, seed, stub, paths, params, {"git": facts.git, "code": code})
    tracker: Tracker = NullTracker()
    attempts: list[dict[str, Any]] = []
    outcome: dict[str, Any] = {}
    for attempt in range(1, spec.retries + 2):
        context = RunContext(
            experiment_id=spec.experiment_id, sub_id=spec.sub_id, params=params, seed=seed, stub=stub,
            run_dir=str(paths.run_dir), project_root=str(root), handler_file=spec.handler_file.as_posix(),
            handler_function=spec.handler_function, run_id=run_id, attempt=attempt,
        )
        request = AttemptRequest(context, paths, spec.timeout_min * 60.0, spec.gpu, label, console)
        if stops.stopped:  # stopped before this attempt (or between retries): it does not start
            outcome = _stopped_before_attempt(stops.stopped)
            attempts.append(outcome)
            break
        tracker = tracking.start()  # one W&B run per attempt
        forwarder = _MetricsForwarder(paths.metrics, run_id, tracker, attempt)
        forwarder.start()
        began_s = time.monotonic()
        try:
            outcome = backend.run_attempt(request)
        except Exception as exc:  # noqa: BLE001 - a backend that breaks is a failure, not a stuck record
            outcome = _backend_failure(exc, root)
        facts.attempts_s += time.monotonic() - began_s
        forwarder.stop()
        attempts.append(outcome)
        if outcome.get("status") == COMPLETED or _stopped_from_outside(outcome) or attempt > spec.retries:
            break
        record = _record(plan, spec, seed, stub, params, backend, run_id, started_at, started_s, attempt, outcome, paths)
        record.update(facts.fields(spec, stub, outcome), retrying=True)
        record["wandb"] = attempts[-1]["wandb"] = tracking.end(tracker, record)
        record["warnings"] = [*record["warnings"], *tracker.warnings]
        tracker = NullTracker()  # that run is finished: a stop before the next attempt must not end it again
        write_final(paths, record, last_failure, reserve)
        console.write(f"[{label}] attempt {attempt} failed ({outcome['error']['type']}); retrying\n")
    attempt_count = len(attempts)
    record = _record(plan, spec, seed, stub, params, backend, run_id, started_at, started_s, attempt_count, outcome, paths)
    record.update(facts.fields(spec, stub, outcome))
    record["wandb"] = tracking.end(tracker, record)
    record["warnings"] = warnings + list(record.get("warnings", [])) + tracker.warnings
    if attempt_count > 1:
        record["failed_attempts"] = [_attempt_summary(index + 1, item) for index, item in enumerate(attempts[:-1])]
    try:
        record = write_final(paths, record, last_failure if last_failure else None, reserve)
    finally:
        _cleanup_internal(paths)
    ok = record["status"] == COMPLETED  # a result the disk had no room for is a failure
    return SubRun(COMPLETED if ok else FAILED, record, paths, tracking.hung)


@dataclass
class _RunFacts:
    """What a record says about where its numbers came from, besides the outcome (see
    labrunner.provenance and labrunner.compute)."""

    code: dict[str, str]  # {path: sha256} of the handler and every project module it imports
    git: dict[str, Any]  # commit, dirty, the patch of a dirty tree
    attempts_s: float = 0.0  # time the attempts held their machine, retries included

    def fields(self, spec: SubSpec, stub: bool, outcome: dict[str, Any]) -> dict[str, Any]:
        environment = record_environment(outcome)
        return {"code": self.code, "git": self.git, "environment": environment,
                "compute": compute_facts(spec.gpu, stub, self.attempts_s, environment)}


def _backend_failure(exc: Exception, root: Path) -> dict[str, Any]:
    from labrunner.worker import error_outcome  # the handler's process's modules: only when a backend breaks

    outcome = error_outcome(exc, root, [])
    if isinstance(exc, OSError) and is_disk_full(exc):  # labrunner could not write its own files for this attempt
        exc = storage_error(exc, Path(exc.filename or root))
    outcome["error"]["message"] = f"the {type(exc).__name__} came from the backend, not the handler: {exc}"
    return outcome


def _stopped_from_outside(outcome: dict[str, Any]) -> bool:
    return outcome.get("error", {}).get("type") in _STOP_TYPES


def _attempt_summary(number: int, outcome: dict[str, Any]) -> dict[str, Any]:
    error = outcome.get("error", {})
    summary = {"attempt": number, "error_type": error.get("type"), "message": error.get("message")}
    if (outcome.get("wandb") or {}).get("id"):
        summary["wandb_id"] = outcome["wandb"]["id"]
    return summary


def _record(plan: RunPlan, spec: SubSpec, seed: int, stub: bool, params: dict[str, Any], backend: Backend, run_id: str,
            started_at: str, started_s: float, attempts: int, outcome: dict[str, Any], paths: RunPaths) -> dict[str, Any]:
    handler_path = plan.root / spec.handler_file
    record: dict[str, Any] = {
        "status": outcome.get("status", FAILED),
        "experiment": spec.experiment_id,
        "sub": spec.sub_id,
        "name": spec.name,
        "seed": seed,
        "stub": stub,
    }
    if outcome.get("status") == COMPLETED:
        record.update(finding=outcome["finding"], metrics=outcome["metrics"], artifacts=outcome["artifacts"])
        if outcome.get("details"):
            record["details"] = outcome["details"]
    else:
        record["error"] = outcome.get("error")
        record["metrics_logged"] = logged_metrics_summary(paths.metrics, run_id, attempts)
        if outcome.get("exit"):
            record["exit"] = outcome["exit"]
    record.update({
        "params": params,
        "backend": backend.name,
        "executor": current_executor(),  # the Snakemake executor's job (SLURM job id, node) or local
        "gpu": spec.gpu,
        "device": outcome.get("device", "cpu"),
        "started_at": started_at,
        "ended_at": now_iso(),
        "duration_s": round(time.monotonic() - started_s, 3),
        "attempts": attempts,
        "handler": {
            "file": spec.handler_file.as_posix(),
            "function": spec.handler_function,
            "sha256": file_sha256(handler_path) if handler_path.exists() else None,
        },
        "run_id": run_id,
        "warnings": list(outcome.get("warnings", [])),
        "labrunner": __version__,
        "host": platform.node(),
    })
    if outcome.get("modal_call_id"):  # the Modal call of the last attempt, for Modal's dashboard and logs
        record["modal_call_id"] = outcome["modal_call_id"]
    if outcome.get("backend_attempts", 1) > 1:  # a backend that had to call again (Modal, connection lost)
        record["backend_attempts"] = outcome["backend_attempts"]
    return record


def _cleanup_internal(paths: RunPaths) -> None:
    for item in paths.internal.glob("*"):
        item.unlink(missing_ok=True)
    try:
        paths.internal.rmdir()
    except OSError:
        pass
