"""One attempt per run at a time.

Two supervisors of the same run (a Snakemake job and a `labrunner run` typed by hand, or two
Snakemake invocations) would share the run's scratch files and records and overwrite each
other's outcome. Each attempt therefore holds an exclusive `flock` on `<run>/.lock` for as long
as it runs. The kernel drops the lock when the holder dies, however it dies, so a lock can never
be left held by a dead process on this machine; the file also names the holder (pid, host,
start time) so that a refusal can say who holds it, and so that a holder that died without
clearing it is reported when the lock is taken over.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labrunner.errors import RunLockedError

__all__ = ["LockHolder", "RunLock", "holder_of"]


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or last held) a run's lock."""

    pid: int | None
    host: str | None
    since: str | None
    command: str | None = None

    def describe(self) -> str:
        where = f"pid {self.pid} on {self.host}" if self.host else f"pid {self.pid}"
        return where + (f" since {self.since}" if self.since else "")

    @classmethod
    def from_text(cls, text: str) -> "LockHolder | None":
        try:
            data: Any = json.loads(text) if text.strip() else None
        except json.JSONDecodeError:
            return None
        if not isinstance(data, dict):
            return None
        return cls(data.get("pid"), data.get("host"), data.get("since"), data.get("command"))


class RunLock:
    """An exclusive lock on one run, held from `acquire()` until `release()` (or the holder's
    death)."""

    def __init__(self, path: Path, label: str) -> None:
        self.path = Path(path)
        self.label = label
        self._fd: int | None = None

    def acquire(self, since: str, command: str = "") -> str | None:
        """Take the lock, or raise RunLockedError naming the holder. Returns a warning when a
        holder that died without releasing the lock is taken over."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = LockHolder.from_text(_read_fd(fd))
            os.close(fd)
            who = holder.describe() if holder else "another process"
            raise RunLockedError(f"{self.label} is already running: {who}. Wait for it to finish, or stop it "
                                 f"(its lock is {self.path}); nothing was changed") from None
        previous = LockHolder.from_text(_read_fd(fd))
        self._fd = fd
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": since, "command": command}
        os.ftruncate(fd, 0)
        try:
            os.pwrite(fd, json.dumps(record).encode("utf-8"), 0)
        except OSError:
            pass  # a full disk: the lock holds all the same; only a refusal cannot name its holder
        if previous is None:
            return None
        same_host = previous.host == socket.gethostname()
        how = "died" if same_host else "is gone, or runs on another machine that shares this folder"
        return (f"took over the lock of {self.label} left by {previous.describe()}, which {how} "
                "without releasing it")

    def release(self) -> None:
        """Clear the holder and drop the lock. The file stays: removing it would let a process
        that opened it a moment ago lock a file that no longer has a name."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def holder_of(path: Path) -> LockHolder | None:
    """The live holder of a run's lock, or None when nobody holds it (without taking it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return LockHolder.from_text(_read_fd(fd)) or LockHolder(None, None, None)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_fd(fd: int) -> str:
    try:
        return os.pread(fd, 4096, 0).decode("utf-8", errors="replace")
    except OSError:
        return ""
