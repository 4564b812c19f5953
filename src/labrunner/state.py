"""What each run of the plan is now: its records on disk, compared with the plan and the code.

Every report (results.yaml, the metric tables, FINDINGS, gates.yaml, `labrunner status`) and the
pipeline's own decisions (which runs wait, which are held) ask this module, so that they cannot
disagree. A result counts as current only when it was made with the params, seed, handler and
code that the plan and the files have now; any other result is `stale`: shown, if at all, as
from an earlier run, and never passed to a criterion or a gate. A failed run keeps its latest
earlier result beside it for the same purpose.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labrunner import layout, locks, sources
from labrunner.errors import RecordError
from labrunner.layout import RunPaths
from labrunner.plan import Plan, SubSpec
from labrunner.records import read_record

__all__ = ["ExperimentStatus", "RunState", "RunStatus", "experiment_status", "previous_result", "read_state",
           "record_changes", "run_dirs", "run_states", "run_states_now", "runs_read_once", "stale_reasons", "sub_status"]


class RunStatus(str, enum.Enum):
    """What one run (one sub, one seed) is now. The one vocabulary of records, aggregates,
    FINDINGS, the status table and the pipeline."""

    COMPLETED = "completed"  # a current result
    FAILED = "failed"  # the latest attempt failed
    INTERRUPTED = "interrupted"  # stopped from outside (Ctrl-C, SIGTERM) or lost (killed outright)
    RUNNING = "running"  # an attempt holds the run's lock now
    STALE = "stale"  # a result made with other params, seed or code than the plan and files have now
    PENDING = "pending"  # no result yet
    HELD = "held"  # not run: waits for a dependency, or a gate has not passed
    DAMAGED = "damaged"  # a record on disk cannot be read back
    SKIPPED = "skipped"  # `skip:` in the plan

    def __str__(self) -> str:
        return self.value


class ExperimentStatus(str, enum.Enum):
    COMPLETED = "completed"  # every sub that runs has a current result
    FAILED = "failed"  # some sub failed, was interrupted, or its record is damaged
    HELD = "held"  # nothing failed, and some sub waits for a dependency or a gate
    PENDING = "pending"  # nothing failed or held; some sub has no current result yet

    def __str__(self) -> str:
        return self.value


# error types of an attempt stopped from outside rather than failing on its own
_STOPPED = frozenset({"Interrupted", "Terminated", "Lost", "ResultMissing"})


@dataclass(frozen=True)
class RunState:
    """One run as it stands: its status, the record that says so, and why a result is not current."""

    spec: SubSpec
    seed: int
    paths: RunPaths
    status: RunStatus
    record: dict[str, Any] = field(default_factory=dict)  # the result or failure record behind the status
    stale: tuple[str, ...] = ()  # why a result is not current (params, seed, handler, code)
    earlier: dict[str, Any] | None = None  # the latest result that is not current, for display only
    holder: locks.LockHolder | None = None  # who runs it now

    @property
    def key(self) -> str:
        return self.spec.key if len(self.spec.seeds) <= 1 else f"{self.spec.key}#seed{self.seed}"


def _canonical(value: Any) -> str:
    """A comparable text for params as YAML gives them (NaN equals NaN here, 1 equals 1.0 not)."""
    return json.dumps(value, sort_keys=True, default=str, allow_nan=True)


def _changed_keys(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    keys = sorted(set(before) | set(after))
    parts = []
    for key in keys:
        old, new = before.get(key, "unset"), after.get(key, "unset")
        if _canonical(old) != _canonical(new):
            parts.append(f"{key} {_short(old)} -> {_short(new)}")
    return ", ".join(parts) or "params changed"


def _short(value: Any, limit: int = 40) -> str:
    text = value if isinstance(value, str) else _canonical(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def stale_reasons(record: Mapping[str, Any], spec: SubSpec, seed: int, stub: bool, root: Path) -> tuple[str, ...]:
    """Why a result record does not match what the plan and the code say now; () when current."""
    reasons = []
    if record.get("seed") != seed:
        reasons.append(f"seed {record.get('seed')} -> {seed}")
    params = spec.params_for(stub)
    recorded_params = record.get("params") or {}
    if _canonical(recorded_params) != _canonical(params):
        reasons.append("params changed: " + _changed_keys(recorded_params, params))
    handler = record.get("handler") or {}
    now = f"{spec.handler_file.as_posix()}::{spec.handler_function}"
    was = f"{handler.get('file')}::{handler.get('function')}"
    if was != now:
        reasons.append(f"handler changed: {was} -> {now}")
        return tuple(reasons)
    current = sources.code_hashes(root, spec.handler_file)
    recorded = record.get("code")
    if recorded is None:  # a record from before code hashes were kept: the handler's own hash only
        recorded = {spec.handler_file.as_posix(): handler.get("sha256")}
        current = {key: value for key, value in current.items() if key in recorded}
    changed = sorted(path for path in set(recorded) | set(current) if recorded.get(path) != current.get(path))
    if changed:
        reasons.append("code changed: " + ", ".join(changed))
    return tuple(reasons)


def record_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[str, ...]:
    """What differs between two results of one run (its previous result and the current one): the
    seed, the params, the handler, the project modules it imports. () when they ran the same."""
    reasons = []
    if before.get("seed") != after.get("seed"):
        reasons.append(f"seed {before.get('seed')} -> {after.get('seed')}")
    if _canonical(before.get("params") or {}) != _canonical(after.get("params") or {}):
        reasons.append("params changed: " + _changed_keys(before.get("params") or {}, after.get("params") or {}))
    was, now = before.get("handler") or {}, after.get("handler") or {}
    if (was.get("file"), was.get("function")) != (now.get("file"), now.get("function")):
        return (*reasons, f"handler changed: {was.get('file')}::{was.get('function')} -> {now.get('file')}::{now.get('function')}")
    handler_file = now.get("file")
    code_was = before.get("code") or {handler_file: was.get("sha256")}  # an older record: the handler's hash only
    code_now = after.get("code") or {handler_file: now.get("sha256")}
    if code_was.get(handler_file) != code_now.get(handler_file):
        reasons.append("handler changed")
    if "code" in before and "code" in after:
        modules = sorted(path for path in set(code_was) | set(code_now)
                         if path != handler_file and code_was.get(path) != code_now.get(path))
        if modules:
            reasons.append("module changed: " + ", ".join(modules))
    return tuple(reasons)


def previous_result(paths: RunPaths, run_id: str | None) -> dict[str, Any] | None:
    """The result this run had before the one with `run_id`, from history/ (every final record is
    kept there); None for a run's first result. Lists the folder, and reads a record only when
    there is one: the common first run costs no read. Ordered by the files' times: the names are
    stamped to the second, and a quick rerun ties."""
    try:
        kept = [entry for entry in paths.history.iterdir() if entry.name.endswith(".result.yaml")]
    except OSError:
        return None
    own = f"-{run_id}.result.yaml"
    written = {entry: entry.stat().st_mtime_ns for entry in kept}
    current = max((mtime for entry, mtime in written.items() if entry.name.endswith(own)), default=None)
    earlier = sorted((mtime, entry.name) for entry, mtime in written.items()
                     if not entry.name.endswith(own) and (current is None or mtime <= current))
    for _, name in reversed(earlier):
        try:
            return read_record(paths.history / name)
        except RecordError:
            continue
    return None


def _earlier(record: Mapping[str, Any], why: str) -> dict[str, Any]:
    """What an earlier result said, marked as not current."""
    return {"run_id": record.get("run_id"), "ended_at": record.get("ended_at"), "finding": record.get("finding"),
            "metrics": dict(record.get("metrics") or {}), "why_not_current": why}


def read_state(spec: SubSpec, seed: int, paths: RunPaths, stub: bool, root: Path) -> RunState:
    """The state of one run from its files, compared with the plan and the code now."""
    try:
        result = read_record(paths.result) if paths.result.exists() else None
        failure = read_record(paths.failure) if paths.failure.exists() else {}
    except RecordError as exc:
        return RunState(spec, seed, paths, RunStatus.DAMAGED, {"error": {"type": "RecordError", "message": str(exc)}})
    status = failure.get("status")
    if status == "running":
        holder = locks.holder_of(paths.lock)
        if holder is not None:
            return RunState(spec, seed, paths, RunStatus.RUNNING, failure, holder=holder,
                            earlier=_earlier(result, "an attempt is running now") if result else None)
        # nobody holds the lock: that attempt died without a record (killed outright, machine lost)
        lost = {**failure, "error": {"type": "Lost", "message": (
            f"the attempt started at {failure.get('started_at')} on {failure.get('host')} (pid {failure.get('pid')}) "
            "ended without writing a record: it was killed outright (SIGKILL, a lost machine)"),
            "hint": "nothing to fix in the code if it was a lost machine; the next run reruns it"}}
        return RunState(spec, seed, paths, RunStatus.INTERRUPTED, lost, earlier=_previous(result, paths))
    if status == "failed" and result is None:
        error_type = (failure.get("error") or {}).get("type")
        kind = RunStatus.INTERRUPTED if error_type in _STOPPED else RunStatus.FAILED
        return RunState(spec, seed, paths, kind, failure, earlier=_previous(None, paths))
    if result is not None:
        reasons = stale_reasons(result, spec, seed, stub, root)
        if reasons:
            return RunState(spec, seed, paths, RunStatus.STALE, result, stale=reasons,
                            earlier=_earlier(result, "; ".join(reasons)))
        return RunState(spec, seed, paths, RunStatus.COMPLETED, result)
    return RunState(spec, seed, paths, RunStatus.PENDING, failure if status == "held" else {},
                    earlier=_previous(None, paths))


def _previous(result: Mapping[str, Any] | None, paths: RunPaths) -> dict[str, Any] | None:
    record = result or previous_result(paths, None)  # the newest result kept, by the files' times
    return _earlier(record, "its latest attempt did not complete") if record else None


def run_dirs(plan: Plan, experiment_id: str, stub: bool = False) -> Iterable[tuple[SubSpec, int, RunPaths]]:
    """Every run (sub, seed) of an experiment with its folder, in plan order; skipped subs left out."""
    results_root = plan.root / layout.results_root(stub)
    for spec in plan.subs(experiment_id):
        for seed in spec.seeds:
            yield spec, seed, RunPaths(layout.run_dir(results_root, experiment_id, spec.sub_id, seed, spec.seeds))


def run_states(plan: Plan, experiment_id: str, stub: bool = False) -> list[RunState]:
    """One state per (sub, seed) of an experiment, in plan order; skipped subs are left out."""
    if _READ_ONCE is not None:
        key = (id(plan), experiment_id, stub)
        if key not in _READ_ONCE:
            _READ_ONCE[key] = (plan, run_states_now(plan, experiment_id, stub))  # the plan kept: its id stays its own
        return list(_READ_ONCE[key][1])
    return run_states_now(plan, experiment_id, stub)


def run_states_now(plan: Plan, experiment_id: str, stub: bool = False) -> list[RunState]:
    """run_states read from the files, whatever runs_read_once says."""
    return [read_state(spec, seed, paths, stub, plan.root) for spec, seed, paths in run_dirs(plan, experiment_id, stub)]


# (id(plan), experiment, stub) -> (plan, states) inside runs_read_once(); None outside
_READ_ONCE: dict[tuple[int, str, bool], tuple[Plan, list[RunState]]] | None = None


@contextmanager
def runs_read_once() -> Iterator[None]:
    """Inside the block, run_states reads each experiment's runs once: the end of a run reports
    them several ways at one moment (the write-up, the summary, what is stale), and reading and
    checking 2,000 records four times cost as much as the aggregates themselves. The states are
    shared, so the block is for readers only; outside it every call reads the files."""
    global _READ_ONCE
    outer = _READ_ONCE
    _READ_ONCE = {} if outer is None else outer
    try:
        yield
    finally:
        _READ_ONCE = outer


_RUN_PRECEDENCE = (RunStatus.DAMAGED, RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.RUNNING, RunStatus.HELD,
                   RunStatus.STALE, RunStatus.PENDING)


def sub_status(statuses: Iterable[RunStatus]) -> RunStatus:
    """A sub's status from its seeds' statuses: the one that needs attention first."""
    present = set(statuses)
    return next((status for status in _RUN_PRECEDENCE if status in present), RunStatus.COMPLETED)


def experiment_status(sub_statuses: Iterable[RunStatus]) -> ExperimentStatus:
    present = set(sub_statuses)
    if present <= {RunStatus.COMPLETED, RunStatus.SKIPPED}:
        return ExperimentStatus.COMPLETED
    if present & {RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.DAMAGED}:
        return ExperimentStatus.FAILED
    if RunStatus.HELD in present:
        return ExperimentStatus.HELD
    return ExperimentStatus.PENDING
