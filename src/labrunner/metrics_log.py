"""metrics.jsonl of one attempt: every log_metrics call, in call order, without waiting for the GPU.

Reading a number held on a GPU (`.item()`, `.cpu()`) makes the CPU wait until the GPU has run
everything queued before it, so a loop that logs its loss every step drains the GPU's queue every
step: a GPU-bound loop ran 1.24x slower (issue 11). Here such a number is not read when logged:

- CUDA: it is copied into pinned host memory with `non_blocking=True` and a CUDA event is
  recorded behind the copy. Its line is written once the event has completed, as seen at the
  next call or by a thread that looks every POLL_S (so that the lines of a handler that logs
  rarely still reach the disk, and W&B, while it runs), and at the latest at `flush()`.
- MPS: torch cannot read an MPS value without waiting for all the queued work, so the value is
  cloned on the device (keeping the value it had when logged, whatever the handler does next) and
  the pending values are read together, in the handler's thread, once the oldest is
  MPS_READ_EVERY_S old: one wait per interval instead of one per call.
- other devices: read at once.

Lines are written in call order: a line of plain numbers waits behind a pending one. At most
MAX_PENDING_LINES wait; past that the oldest is waited for, which happens only when the CPU runs
that far ahead of the device. The worker flushes on return, on failure and on SIGINT/SIGTERM
(which reach the handler's thread as exceptions); a process killed outright (SIGKILL, a segfault)
loses the lines still pending.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from labrunner.convert import device_scalar, to_number
from labrunner.files import AppendLog

__all__ = ["MAX_PENDING_LINES", "MPS_READ_EVERY_S", "POLL_S", "MetricsLog"]

_PLAIN_NUMBERS = (float, int)  # exactly these types: bool and numpy scalars go through to_number

POLL_S = 0.2
MPS_READ_EVERY_S = 2.0
MAX_PENDING_LINES = 1024  # a CUDA launch queue holds about 1,000 kernels: a loop is rarely this far ahead


class _Read(Protocol):
    """A number on its way from a device; `value()` is a CPU tensor holding it (it may wait)."""

    def done(self) -> bool: ...
    def value(self) -> Any: ...
    def release(self) -> None: ...


class _CudaRead:
    """A non-blocking copy into pinned memory, and the event that says when it has landed."""

    def __init__(self, torch: Any, tensor: Any, pool: "_PinnedPool") -> None:
        self._source: Any = tensor  # held until read: its memory must not be reused before the copy runs
        self._pool = pool
        self._host = pool.host(torch, tensor.dtype)
        self._host.copy_(tensor, non_blocking=True)
        self._event = pool.event(torch)
        self._event.record(torch.cuda.current_stream(tensor.device))
        self._landed = False

    def done(self) -> bool:
        self._landed = self._landed or bool(self._event.query())
        return self._landed

    def value(self) -> Any:
        if not self.done():  # at flush, or past the bound: wait only if it has not landed
            self._event.synchronize()
        self._source = None
        return self._host

    def release(self) -> None:
        """Once its value is read: the pinned memory and the event serve a later call."""
        self._pool.give_back(self._host, self._event)


class _PinnedPool:
    """Pinned host scalars and CUDA events, reused: allocating pinned memory and creating an event
    cost far more CPU time than the copy itself, and a loop that logs every step would pay that
    every step (it showed in a launch-bound loop, where the CPU sets the pace)."""

    def __init__(self) -> None:
        self._hosts: dict[Any, list[Any]] = {}
        self._events: list[Any] = []

    def host(self, torch: Any, dtype: Any) -> Any:
        free = self._hosts.setdefault(dtype, [])
        return free.pop() if free else torch.empty((), dtype=dtype, device="cpu", pin_memory=True)

    def event(self, torch: Any) -> Any:
        return self._events.pop() if self._events else torch.cuda.Event()

    def give_back(self, host: Any, event: Any) -> None:
        self._hosts.setdefault(host.dtype, []).append(host)
        self._events.append(event)


class _MpsRead:
    """A copy on the device; it can only be read by waiting for the device's whole queue."""

    def __init__(self, tensor: Any) -> None:
        self._copy = tensor.clone()

    def done(self) -> bool:
        return False  # nothing says so without waiting: read in batches (MPS_READ_EVERY_S)

    def value(self) -> Any:
        return self._copy.cpu()

    def release(self) -> None:
        self._copy = None


def _start_read(tensor: Any, pool: _PinnedPool) -> _Read | None:
    kind = tensor.device.type
    if kind == "cuda":
        return _CudaRead(sys.modules["torch"], tensor, pool)
    if kind == "mps":
        return _MpsRead(tensor)
    return None  # XLA, XPU, ...: read at once, waiting


@dataclass
class _Line:
    step: int | _Read | None
    time_s: float
    metrics: dict[str, float | int | _Read]
    logged_s: float
    reads: list[_Read]

    def ready(self) -> bool:
        return all(read.done() for read in self.reads)

    def batch_due(self, now_s: float) -> bool:
        """A value that cannot say when it is ready (MPS) and has waited long enough."""
        return now_s - self.logged_s >= MPS_READ_EVERY_S and any(isinstance(read, _MpsRead) for read in self.reads)


class MetricsLog:
    """Appends one JSON line per log_metrics call to metrics.jsonl, in call order."""

    def __init__(self, path: Path, run_id: str, attempt: int, warnings: list[str],
                 max_pending_lines: int = MAX_PENDING_LINES, clock: Callable[[], float] = time.monotonic) -> None:
        self._file = AppendLog(path)  # unbuffered: each line is on disk when written, a full disk fails the write
        self._warnings = warnings  # the runner's list: flagged values and unreadable ones go there
        self._max_pending_lines = max_pending_lines
        self._clock = clock
        self._nonfinite_seen: set[str] = set()
        self._unreadable_seen = False
        self._line_middle = f', "attempt": {attempt}, "run": {json.dumps(run_id)}, "metrics": {{'  # the same in every line
        self._json_keys: dict[str, str] = {}
        self._pending: deque[_Line] = deque()
        self._lock = threading.RLock()  # the poller writes too; reentrant, for a signal raised inside
        self._closing = threading.Event()
        self._poller: threading.Thread | None = None
        self._pool = _PinnedPool()

    @property
    def pending_lines(self) -> int:
        return len(self._pending)

    def append(self, metrics: Mapping[str, Any], step: Any, time_s: float) -> None:
        """Convert what needs no waiting now, so that a bad value is an error in the handler's call."""
        reads: list[_Read] = []
        values: dict[str, float | int | _Read] = {}
        for name, value in metrics.items():  # plain numbers first: the common case costs little
            values[name if type(name) is str else str(name)] = (
                value if type(value) in _PLAIN_NUMBERS else self._convert(value, f"metric {name!r}", reads))
        step_value = step if step is None or type(step) is int else self._convert_step(step, reads)
        with self._lock:
            if not self._pending and not reads:  # no device in play: on disk at once, as before
                self._emit(step_value, time_s, values)  # type: ignore[arg-type]
                return
            self._pending.append(_Line(step_value, time_s, values, self._clock(), reads))
            self._write_ready(handler_thread=True)
            while len(self._pending) > self._max_pending_lines:
                self._write_front()
        if reads and self._poller is None:
            self._poller = threading.Thread(target=self._poll, name="labrunner-metrics-log", daemon=True)
            self._poller.start()

    def flush(self) -> None:
        """Write every pending line, waiting for the device; raises OSError if the file cannot be written."""
        with self._lock:
            while self._pending:
                self._write_front()

    def close(self) -> None:
        """Flush and close; never raises: lines that cannot be written are named in a warning."""
        self._closing.set()
        if self._poller is not None:
            self._poller.join(timeout=5.0)
        try:
            self.flush()
        except OSError as exc:
            self._warnings.append(f"{len(self._pending)} metric lines could not be written to metrics.jsonl: {exc}")
            self._pending.clear()
        self._file.close()

    def _convert(self, value: Any, where: str, reads: list[_Read]) -> float | int | _Read:
        tensor = device_scalar(value)
        read = _start_read(tensor, self._pool) if tensor is not None else None
        if read is None:
            return to_number(value, where)
        reads.append(read)
        return read

    def _convert_step(self, step: Any, reads: list[_Read]) -> int | _Read | None:
        if step is None:
            return None
        tensor = device_scalar(step)
        if tensor is not None and not tensor.dtype.is_floating_point:
            read = _start_read(tensor, self._pool)
            if read is not None:
                reads.append(read)
                return read
        return int(to_number(step, "step"))

    def _write_ready(self, handler_thread: bool) -> None:
        while self._pending and self._pending[0].ready():
            self._write_front()
        if handler_thread and self._pending and self._pending[0].batch_due(self._clock()):
            self.flush()  # the first read waits for the device; the others are there by then

    def _write_front(self) -> None:
        self._write(self._pending[0])
        self._pending.popleft()  # after the write: a signal in between must not lose the line

    def _write(self, line: _Line) -> None:
        try:
            metrics = {name: _number(value, name) for name, value in line.metrics.items()}
            step = int(_number(line.step, "step")) if line.step is not None else None
        except Exception as exc:  # noqa: BLE001 - the device failed (a CUDA error is sticky): say so once
            if not self._unreadable_seen:
                self._unreadable_seen = True
                self._warnings.append(f"metrics logged at {line.time_s}s and later could not be read from the device "
                                      f"({type(exc).__name__}: {str(exc)[:200]}); metrics.jsonl lacks them")
            return
        for read in line.reads:  # read: their pinned memory and events serve later calls
            read.release()
        self._emit(step, line.time_s, metrics)

    def _emit(self, step: int | None, time_s: float, metrics: dict[str, float | int]) -> None:
        """Write one line, as json.dumps would write it (NaN and Infinity kept, as Python's json reads
        them), but built by hand: a third of the cost, for a call that loops make every step."""
        keys = self._json_keys
        parts = []
        for name, number in metrics.items():
            key = keys.get(name) or self._json_key(name)
            if type(number) is int or number - number == 0:  # finite: inf - inf and nan - nan are nan
                parts.append(f"{key}: {number!r}")
            else:
                parts.append(f"{key}: {self._nonfinite(name, number, step)}")
        self._file.write(f'{{"step": {"null" if step is None else step}, "time_s": {time_s!r}{self._line_middle}'
                         f'{", ".join(parts)}}}}}\n')

    def _nonfinite(self, name: str, number: float, step: int | None) -> str:
        """Flag a metric's first NaN or infinity (kept: it is what the handler computed)."""
        if name not in self._nonfinite_seen:
            self._nonfinite_seen.add(name)
            self._warnings.append(f"metric {name!r} was {number} at step {step}")
        return "NaN" if number != number else ("Infinity" if number > 0 else "-Infinity")

    def _json_key(self, name: str) -> str:
        key = self._json_keys[name] = json.dumps(name)
        return key

    def _poll(self) -> None:
        while not self._closing.wait(POLL_S):
            try:
                with self._lock:
                    self._write_ready(handler_thread=False)
            except Exception:  # noqa: BLE001 - metrics.jsonl cannot be written: the handler's next call raises it
                return


def _number(value: float | int | _Read, name: str) -> float | int:
    if isinstance(value, (int, float)):
        return value
    return to_number(value.value(), f"metric {name!r}")
