"""Every process a handler started, found and stopped when its attempt ends.

Killing the handler's process group is not enough: a grandchild that calls `setsid()` (a
daemon, `subprocess.Popen(..., start_new_session=True)`, a server a library starts) leaves the
group and would keep running, and writing into the results folder, after the job. Two nets
catch such processes on Linux, read from /proc:

- the environment mark: the supervisor gives the handler's process an environment variable
  unique to the attempt; every process started below it inherits it, session or not;
- the family tree: while the handler runs, its descendants are noted (pid and start time)
  every TREE_SCAN_EVERY_S, which also catches one that cleared its environment.

A process that both clears its environment and leaves the tree within one scan is missed. Where
there is no /proc (macOS), only the process group is killed.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ATTEMPT_MARK_ENV", "ProcessTree", "Sweep"]

ATTEMPT_MARK_ENV = "LABRUNNER_ATTEMPT_MARK"
TREE_SCAN_EVERY_S = 0.5
SWEEP_WAIT_S = 2.0  # how long killed processes get to disappear before they count as survivors
_PROC = Path("/proc")


@dataclass(frozen=True)
class _Process:
    pid: int
    ppid: int
    pgid: int
    start_ticks: int  # with the pid, names one process even after the pid is reused
    state: str


@dataclass
class Sweep:
    """What the sweep found outside the handler's process group: killed, or still running."""

    killed: list[str] = field(default_factory=list)  # "pid 123 (sleep 60)"
    survived: list[str] = field(default_factory=list)

    def warnings(self) -> list[str]:
        found = []
        if self.killed:
            found.append(f"the handler left {_count(self.killed)} running outside its process group, in a session or "
                         f"group of {'their' if len(self.killed) > 1 else 'its'} own ({', '.join(self.killed)}); "
                         "killed when the attempt ended")
        if self.survived:
            found.append(f"{_count(self.survived)} the handler started could not be killed and still "
                         f"{'run' if len(self.survived) > 1 else 'runs'}: {', '.join(self.survived)}")
        return found


def _count(items: list[str]) -> str:
    return f"{len(items)} process{'es' if len(items) > 1 else ''}"


class ProcessTree:
    """The processes below one handler process (its `root_pid`), marked with `mark`."""

    def __init__(self, root_pid: int, mark: str) -> None:
        self.root_pid = root_pid
        self._mark = f"{ATTEMPT_MARK_ENV}={mark}".encode()
        self._seen: dict[int, int] = {}  # pid -> start ticks of every descendant noted so far
        self.available = _PROC.is_dir()

    def scan(self) -> None:
        """Note the handler's living descendants (cheap: one read of /proc/*/stat)."""
        if not self.available:
            return
        table = _process_table()
        for pid in _descendants(table, {self.root_pid}):
            self._seen.setdefault(pid, table[pid].start_ticks)

    def sweep(self) -> Sweep:
        """Kill what is left of the tree, once the handler's process and group are gone."""
        result = Sweep()
        if not self.available:
            return result
        described: dict[int, str] = {}  # those outside the handler's group: the group was killed already
        alive = self._leftovers()
        for _ in range(5):  # a process may fork while we kill: look again until nothing is left
            if not alive:
                break
            for pid, process in alive.items():
                if process.pgid != self.root_pid:
                    described.setdefault(pid, _describe(pid))
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            _wait_gone(set(alive), SWEEP_WAIT_S)
            alive = self._leftovers()
        result.survived = [described.get(pid) or _describe(pid) for pid in sorted(alive)]
        result.killed = [text for pid, text in sorted(described.items()) if pid not in alive]
        return result

    def _leftovers(self) -> dict[int, _Process]:
        table = _process_table()
        own = {os.getpid(), *_ancestors(table, os.getpid())}
        found = {pid for pid, ticks in self._seen.items() if pid in table and table[pid].start_ticks == ticks}
        found |= {pid for pid in table if pid not in own and self._marked(pid)}
        found |= _descendants(table, found)
        return {pid: table[pid] for pid in sorted(found - own) if table[pid].state not in ("Z", "X")}

    def _marked(self, pid: int) -> bool:
        try:
            environ = (_PROC / str(pid) / "environ").read_bytes()
        except OSError:  # gone, or another user's
            return False
        return self._mark in environ.split(b"\0")


def _process_table() -> dict[int, _Process]:
    table = {}
    for entry in os.listdir(_PROC):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()  # the command name may hold spaces and brackets
        table[int(entry)] = _Process(int(entry), int(fields[1]), int(fields[2]), int(fields[19]), fields[0].decode())
    return table


def _descendants(table: dict[int, _Process], roots: set[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for process in table.values():
        children.setdefault(process.ppid, []).append(process.pid)
    found: set[int] = set()
    pending = list(roots)
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found and child not in roots:
                found.add(child)
                pending.append(child)
    return found


def _ancestors(table: dict[int, _Process], pid: int) -> set[int]:
    found: set[int] = set()
    while pid in table and table[pid].ppid not in found and table[pid].ppid > 0:
        pid = table[pid].ppid
        found.add(pid)
    return found


def _describe(pid: int) -> str:
    try:
        command = " ".join((_PROC / str(pid) / "cmdline").read_bytes().decode(errors="replace").replace("\0", " ").split())
    except OSError:
        command = ""
    return f"pid {pid} ({command[:80]})" if command else f"pid {pid}"


def _wait_gone(pids: set[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        table = _process_table()
        if not any(pid in table and table[pid].state not in ("Z", "X") for pid in pids):
            return
        time.sleep(0.02)
