"""Result and failure records: the files the pipeline's reruns hinge on.

`result.yaml` exists only for a sub that succeeded and is written atomically, so Snakemake never
sees a half-written target. `failure.yaml` always exists once the pipeline knows the sub:

    status: none       never failed
    status: running    an attempt started; `last_failure` keeps the failure before it
    status: failed     the last attempt failed: error, traceback, handler line, hint, metrics
    status: resolved   a success after earlier failures; `last_failure` keeps the last one

Each attempt rewrites it with new content (run id, times), which is what makes Snakemake rerun a
failed sub even when nothing else changed. Every final record is also kept under `history/`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
from pathlib import Path
from typing import Any

import yaml

from labrunner import parsed
from labrunner.errors import Issue, RecordError, StorageError
from labrunner.executor import current_executor
from labrunner.files import SpaceReserve, atomic_write_text, free_space_text, is_disk_full, overwrite_in_place
from labrunner.layout import RunPaths
from labrunner.redact import redact_data
from labrunner.yamlio import dump_yaml, plain_copy

try:
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

__all__ = [
    "COMPLETED", "FAILED", "NONE", "RESOLVED", "RUNNING",
    "checked_text", "damage_of", "last_failure_of", "mark_running", "next_attempt", "now_iso", "read_failure", "read_record", "record_damage",
    "record_missing_result", "set_aside",
    "write_failure", "write_final", "write_none", "write_result",
]

NONE, RUNNING, FAILED, RESOLVED, COMPLETED = "none", "running", "failed", "resolved", "completed"
RECORD_RESERVE_BYTES = 1 << 20  # held back per attempt for its records: a full record with a long traceback, twice
_SHORT_TEXT_CHARS = 500  # of a message in a record written on a full disk, which must stay within one block
_CHECKSUM_PREFIX = "# labrunner-sha256: "


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def checked_text(record: dict[str, Any]) -> str:
    """YAML text ending in a checksum line, so truncation and edits on disk can be detected."""
    body = dump_yaml(redact_data(record))
    return f"{body}{_CHECKSUM_PREFIX}{hashlib.sha256(body.encode('utf-8')).hexdigest()}\n"


def verify_text(text: str) -> str | None:
    """None when the text is whole; otherwise what is wrong with it."""
    body, sep, tail = text.rpartition(_CHECKSUM_PREFIX)
    if not sep:
        return "it has no checksum line (truncated, or written by hand)"
    if hashlib.sha256(body.encode("utf-8")).hexdigest() != tail.strip():
        return "its checksum does not match (edited or corrupted)"
    return None


def damage_of(path: Path) -> str | None:
    """What is wrong with a record file on disk, or None when it is whole."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return f"cannot be read: {exc}"
    return None if text.strip() == "status: none" else verify_text(text)


def set_aside(path: Path) -> Path:
    """Move a damaged record into its run's history/ folder; return where it went."""
    path = Path(path)
    target = path.parent / "history" / f"{_file_stamp(now_iso())}-damaged-{path.name}"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
    return target


def record_damage(paths: RunPaths, problem: str) -> Path:
    """Set a damaged result aside and say so in failure.yaml, with new content: the aggregates
    take it as an input, so the next run rebuilds them and, with them, this sub."""
    kept = set_aside(paths.result)
    stamp = now_iso()
    record = {
        "run_id": f"damaged-{stamp}", "ended_at": stamp,
        "error": {"type": "DamagedRecord", "message": f"{paths.result} was damaged ({problem}); it was moved to {kept}",
                  "traceback": None, "handler_line": None, "hint": "nothing to fix: the sub is rebuilt by the next run"},
    }
    write_failure(paths, record, last_failure_of(read_failure(paths)))
    return kept


def record_missing_result(paths: RunPaths, previous: dict[str, Any]) -> None:
    """Say in failure.yaml that a run's result is gone although its last attempt completed:
    deleted by hand, or by Snakemake, which deletes the output of a job it takes for failed (a
    cluster job cancelled, or out of time, just after labrunner wrote the result). The new
    content is newer than the aggregates, so the next run rebuilds the sub."""
    kept = _kept_result(paths, previous)
    result = read_record(kept, verify=False) if kept else {}
    executor = result.get("executor") or {}
    job_id = executor.get("job_id")
    by = f" by SLURM job {job_id}" if job_id else ""
    written = f", written{by} at {result.get('ended_at')}," if result else ""
    stamp = now_iso()
    record = {
        "run_id": f"missing-{stamp}", "ended_at": stamp, "executor": executor or None,
        "missing_result": ({"run_id": result.get("run_id"), "ended_at": result.get("ended_at"), "kept": str(kept)}
                           if kept else None),
        "error": {"type": "ResultMissing",
                  "message": (f"{paths.result} of the attempt {result.get('run_id') or previous.get('run_id') or ''}"
                              f"{written} is gone although that attempt completed: deleted by hand, or by Snakemake, "
                              "which deletes the output of a job it takes for failed (a cluster job cancelled, or out "
                              "of time, as it finished); "
                              + (f"it is kept as {kept}" if kept else "its record is kept under history/")),
                  "traceback": None, "handler_line": None,
                  "hint": ("nothing to fix in the code: the sub is rebuilt by the next run"
                           + (f"; `sacct -j {job_id}` says how the job ended" if job_id else ""))},
    }
    write_failure(paths, record, last_failure_of(previous))


def _kept_result(paths: RunPaths, previous: dict[str, Any]) -> Path | None:
    """The history copy of the result the last attempt wrote: the one `resolved` names, else the
    one written last (by the file's time: names stamped to the second may tie)."""
    if not paths.history.is_dir():
        return None
    run_id = previous.get("run_id") if previous.get("status") == RESOLVED else None
    kept = paths.history.glob(f"*-{run_id}.result.yaml" if run_id else "*.result.yaml")
    return max(kept, key=lambda path: path.stat().st_mtime_ns, default=None)


# Records already read by this process, by absolute path: the text as read and its verified
# content. An invocation reads each record several times (the aggregate steps, then the end-of-run
# write-up, summary and check, all in Snakemake's process); reading a file is cheap, parsing and
# verifying its YAML is not, and the same text always parses the same. The text, not the file's
# inode, time and size: two writes within one tick of the clock can leave all three unchanged.
_RECORD_CACHE: dict[str, tuple[str, dict[str, Any]]] = {}
_RECORD_CACHE_MAX = 50_000  # records kept; past that the cache starts again
_PARSED_KIND = "record"  # how labrunner.parsed names a record's text read by this loader


def read_record(path: Path, *, verify: bool = True) -> dict[str, Any]:
    """Read a record back (a copy the caller may change); RecordError names the file and what is
    wrong with it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecordError.single(path, "", "record not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError.single(path, "", f"record cannot be read: {exc}") from None
    key = os.path.abspath(path)
    cached = _RECORD_CACHE.get(key)
    if cached is not None and cached[0] == text:
        return plain_copy(cached[1])
    problem = verify_text(text) if text.strip() != "status: none" else None
    if verify and problem:
        raise RecordError.single(path, "", f"record is damaged: {problem}; delete it and rerun to rebuild it")
    data = parsed.lookup(_PARSED_KIND, text) if problem is None else parsed.MISSING
    if data is parsed.MISSING:
        try:
            data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader
        except yaml.YAMLError as exc:
            raise RecordError.single(path, "", f"record is not valid YAML: {exc}") from None
        if problem is None and isinstance(data, dict) and "status" in data:
            parsed.remember(_PARSED_KIND, text, data)
    if not isinstance(data, dict) or "status" not in data:
        raise RecordError([Issue(str(path), "status", "record is damaged: expected a mapping with a 'status' key")])
    if problem is None:  # only whole records: a damaged one must be refused again when verified
        if len(_RECORD_CACHE) >= _RECORD_CACHE_MAX:
            _RECORD_CACHE.clear()
        _RECORD_CACHE[key] = (text, plain_copy(data))
    return data


def read_failure(paths: RunPaths) -> dict[str, Any]:
    """The failure record, or `status: none` when there is none (or it cannot be read)."""
    if not paths.failure.exists():
        return {"status": NONE}
    try:
        return read_record(paths.failure)
    except RecordError as exc:
        return {"status": NONE, "warning": str(exc)}


def write_none(path: Path) -> None:
    atomic_write_text(Path(path), "status: none\n")


def last_failure_of(previous: dict[str, Any]) -> dict[str, Any] | None:
    """The failure worth keeping from the record an attempt is about to replace."""
    status = previous.get("status")
    if status == FAILED:
        return {key: value for key, value in previous.items() if key != "last_failure"}
    if status == RUNNING:
        job_id = (previous.get("executor") or {}).get("job_id")
        job = f", SLURM job {job_id}" if job_id else ""
        return {
            "status": FAILED,
            "run_id": previous.get("run_id"),
            "started_at": previous.get("started_at"),
            "executor": previous.get("executor"),
            "error": {
                "type": "Lost",
                "message": (f"the run started at {previous.get('started_at')} on {previous.get('host')} "
                            f"(pid {previous.get('pid')}{job}) ended without writing a record: it was killed outright "
                            "(SIGKILL, a lost machine, a cluster's time or memory limit) before it could"),
                "traceback": None,
                "handler_line": None,
                "hint": ("nothing to fix in the code if it was a lost machine; see run.log of that run for its last output"
                         + (f"; `sacct -j {job_id}` says how the job ended" if job_id else "")),
            },
        }
    if status == RESOLVED:
        return previous.get("last_failure")
    return None


def mark_running(paths: RunPaths, run_id: str, started_at: str, pid: int, backend: str) -> dict[str, Any] | None:
    """Mark an attempt's start in failure.yaml so that a run killed outright reruns next time.
    Returns the failure the record held before (kept inside it)."""
    last = last_failure_of(read_failure(paths))
    record = {"status": RUNNING, "run_id": run_id, "started_at": started_at, "host": socket.gethostname(),
              "pid": pid, "backend": backend, "executor": current_executor(), "last_failure": last}
    atomic_write_text(paths.failure, checked_text(record))
    return last


_ATTEMPTS_FILE = ".attempts"  # in the run folder; an id never names a hidden file


def next_attempt(paths: RunPaths) -> tuple[int, str]:
    """(this attempt's number among every attempt of the run, across jobs: 1 for the first ever;
    the run folder's token). Counted in the run folder when the attempt starts, under the run's
    lock, so that an attempt killed before it wrote any record still has its number, and the next
    one gets another. The token is drawn when the folder is first used and kept with the count:
    a W&B run id made from both is the same for the same attempt, and never the same for an
    attempt of another copy of the project, or of this one after its results were deleted."""
    counter = paths.run_dir / _ATTEMPTS_FILE
    try:
        token, count = counter.read_text(encoding="utf-8").split()
        before = int(count)
    except (OSError, ValueError):  # none yet, or unreadable: count what the history holds
        token, before = os.urandom(4).hex(), _recorded_attempts(paths)  # what secrets.token_hex reads, without its imports
    try:
        atomic_write_text(counter, f"{token} {before + 1}\n")
    except OSError:  # a full disk: the attempt runs all the same (its record says why it failed)
        pass
    return before + 1, token


def _recorded_attempts(paths: RunPaths) -> int:
    try:
        return sum(1 for entry in paths.history.iterdir() if entry.name.endswith((".result.yaml", ".failure.yaml")))
    except OSError:
        return 0


def _file_stamp(iso_time: str) -> str:
    """An ISO time usable in a file name on every system (no ':' or '+'), still sorting by time."""
    return iso_time.replace(":", "").replace("+", "p")


def _history(paths: RunPaths, record: dict[str, Any], kind: str, text: str) -> None:
    stamp = _file_stamp(str(record.get("ended_at") or now_iso()))
    try:
        atomic_write_text(paths.history / f"{stamp}-{record.get('run_id', 'run')}.{kind}.yaml", text)
    except StorageError as exc:
        if not is_disk_full(exc):
            raise  # a copy: on a full disk the record itself matters more than its copy


def write_failure(paths: RunPaths, record: dict[str, Any], last_failure: dict[str, Any] | None) -> None:
    full = {**record, "status": FAILED, "last_failure": last_failure}
    text = checked_text(full)
    atomic_write_text(paths.failure, text)
    _history(paths, record, "failure", checked_text({**record, "status": FAILED}))


def write_result(paths: RunPaths, record: dict[str, Any], last_failure: dict[str, Any] | None) -> None:
    """failure.yaml first, then result.yaml, so the target is never older than its input."""
    if last_failure is None:
        write_none(paths.failure)
    else:
        atomic_write_text(paths.failure, checked_text({"status": RESOLVED, "run_id": record.get("run_id"),
                                                       "resolved_at": record.get("ended_at"), "last_failure": last_failure}))
    text = checked_text({**record, "status": COMPLETED})
    _history(paths, record, "result", text)
    atomic_write_text(paths.result, text)


def write_final(paths: RunPaths, record: dict[str, Any], last_failure: dict[str, Any] | None,
                reserve: SpaceReserve | None = None) -> dict[str, Any]:
    """Write an attempt's record (its result when it completed, else its failure); return the
    record as written.

    A full disk must not leave `status: running` behind (the next run would call it a kill): the
    space the attempt holds in reserve is given back and the write tried again; failing that, a
    short failure record that says the disk is full is written over failure.yaml in place (the
    attempt marked its start there, so rewriting it needs no new block). Raises StorageError,
    with the outcome in its message for the console, when not even that can be written.
    """
    record = _with_disk_full_note(record, paths)
    write = write_result if record.get("status") == COMPLETED else write_failure
    try:
        write(paths, record, last_failure)
        return redact_data(record)
    except StorageError as exc:
        if not is_disk_full(exc):
            raise
        problem = exc
    if reserve is not None and reserve.release():
        try:
            write(paths, record, last_failure)
            return redact_data(record)
        except StorageError as exc:
            if not is_disk_full(exc):
                raise
            problem = exc
    short = _disk_full_record(record, last_failure, problem)
    try:
        overwrite_in_place(paths.failure, checked_text(short).encode("utf-8"))
    except OSError:  # not even that: the console is all that is left (the cli masks secrets)
        outcome = f"{record.get('experiment')}/{record.get('sub')} {_outcome_line(record)}"
        raise StorageError(problem.path, f"{problem.reason}; no record could be written, so here is the outcome: "
                           f"{outcome}", problem.errno) from None
    return redact_data(short)


def _with_disk_full_note(record: dict[str, Any], paths: RunPaths) -> dict[str, Any]:
    """A handler that failed because the disk is full: say how much was free, and where."""
    message = str((record.get("error") or {}).get("message") or "")
    if "No space left on device" not in message and "Disk quota exceeded" not in message:
        return record
    note = f"no space left on device: {free_space_text(paths.run_dir)} at the end of the attempt"
    return {**record, "warnings": [*(record.get("warnings") or []), note]}


def _clip(text: Any) -> Any:
    if not isinstance(text, str) or len(text) <= _SHORT_TEXT_CHARS:
        return text
    return text[:_SHORT_TEXT_CHARS] + " [...]"


def _disk_full_record(record: dict[str, Any], last_failure: dict[str, Any] | None, problem: StorageError) -> dict[str, Any]:
    """The record of an attempt whose full record did not fit on the disk: what happened, in
    well under one block (no traceback, messages clipped)."""
    short = {key: record.get(key) for key in
             ("experiment", "sub", "name", "seed", "stub", "run_id", "started_at", "ended_at", "attempts", "backend", "host")}
    if record.get("status") == COMPLETED:
        error = {"type": "DiskFull", "message": f"the handler completed, but its result could not be written: {problem}",
                 "traceback": None, "handler_line": None,
                 "hint": "free disk space (`df -h` shows how much is left), then run again"}
        metrics = record.get("metrics") or {}
        short["unrecorded_result"] = {"finding": _clip(record.get("finding")), "metrics": dict(list(metrics.items())[:20])}
    else:
        original = record.get("error") or {}
        error = {"type": original.get("type"), "message": _clip(original.get("message")), "traceback": None,
                 "handler_line": original.get("handler_line"), "hint": _clip(original.get("hint"))}
    short["error"] = error
    short["warnings"] = [f"only this short record could be written: {problem}"]
    earlier = (last_failure or {}).get("error") or {}
    short["last_failure"] = ({"status": FAILED, "run_id": (last_failure or {}).get("run_id"),
                              "error": {"type": earlier.get("type"), "message": _clip(earlier.get("message"))}}
                             if last_failure else None)
    return {**short, "status": FAILED}


def _outcome_line(record: dict[str, Any]) -> str:
    if record.get("status") == COMPLETED:
        return f"completed: {_clip(record.get('finding'))}; metrics {record.get('metrics')}"
    error = record.get("error") or {}
    return f"failed: {error.get('type')}: {_clip(error.get('message'))}"
