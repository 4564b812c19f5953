"""Unit tests for labrunner.records: records read back as written, damage is detected, the
failure before an attempt is kept, and secrets never reach the disk."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from conftest import MountFactory, fill_disk
from labrunner.errors import RecordError, StorageError
from labrunner.files import SpaceReserve
from labrunner.layout import RunPaths
from labrunner.records import (
    FAILED,
    NONE,
    RUNNING,
    checked_text,
    mark_running,
    read_failure,
    read_record,
    write_failure,
    write_final,
    write_result,
)


@pytest.fixture
def paths(tmp_path: Path) -> RunPaths:
    paths = RunPaths(tmp_path / "results" / "e1" / "s1")
    paths.run_dir.mkdir(parents=True)
    return paths


def record(**fields: object) -> dict[str, object]:
    return {"experiment": "e1", "sub": "s1", "run_id": "r1", "ended_at": "2024-01-01T00:00:00+00:00", **fields}


def test_records_result_reads_back_as_written(paths: RunPaths) -> None:
    metrics = {"acc": 0.97, "lr": 1e-05, "loss": math.inf, "n": 450}

    write_result(paths, record(metrics=metrics, traceback_like="line one\nline two\n"), None)

    read = read_record(paths.result)
    assert read["status"] == "completed"
    assert read["metrics"] == metrics and type(read["metrics"]["lr"]) is float
    assert read["traceback_like"] == "line one\nline two\n"
    assert read_record(paths.failure) == {"status": NONE}
    assert [path.name.endswith(".result.yaml") for path in paths.history.iterdir()] == [True]
    assert not list(paths.run_dir.glob(".*.tmp"))


def test_records_a_run_id_spelled_like_a_number_stays_text_in_every_file(paths: RunPaths, tmp_path: Path) -> None:
    from labrunner.yamlio import load_yaml, write_yaml

    write_result(paths, record(run_id="6697979726e9"), None)  # digits, an e, digits: a float to labrunner's YAML

    assert read_record(paths.result)["run_id"] == "6697979726e9"
    write_yaml(tmp_path / "results.yaml", {"run_id": "6697979726e9", "lr": 1e-05})  # an aggregate, read as plans are
    assert load_yaml(tmp_path / "results.yaml") == {"run_id": "6697979726e9", "lr": 1e-05}


def test_records_a_record_read_again_is_a_fresh_copy_until_the_file_changes(paths: RunPaths) -> None:
    write_result(paths, record(metrics={"acc": 0.5}), None)
    first = read_record(paths.result)
    first["metrics"]["acc"] = 0.0  # a caller changing what it read changes nobody else's copy

    assert read_record(paths.result)["metrics"] == {"acc": 0.5}
    write_result(paths, record(metrics={"acc": 0.75}), None)
    assert read_record(paths.result)["metrics"] == {"acc": 0.75}
    paths.result.write_text(paths.result.read_text().replace("0.75", "0.125"))  # edited in place: damage, seen
    with pytest.raises(RecordError, match="checksum does not match"):
        read_record(paths.result)


def test_records_nan_reads_back_as_nan(paths: RunPaths) -> None:
    write_result(paths, record(metrics={"loss": math.nan}), None)

    assert math.isnan(read_record(paths.result)["metrics"]["loss"])
    assert math.isnan(yaml.safe_load(paths.result.read_text())["metrics"]["loss"])  # plain YAML readers too


@pytest.mark.parametrize(("damage", "problem"), [
    (lambda text: text[: len(text) // 2], "it has no checksum line"),
    (lambda text: text.replace("0.97", "0.99"), "its checksum does not match"),
])
def test_records_damage_is_detected(damage: object, problem: str, paths: RunPaths) -> None:
    write_result(paths, record(metrics={"acc": 0.97}), None)
    paths.result.write_text(damage(paths.result.read_text()))  # type: ignore[operator]

    with pytest.raises(RecordError, match=f"{paths.result}: record is damaged: {problem}"):
        read_record(paths.result)


def test_records_missing_or_invalid_record_is_an_error(paths: RunPaths) -> None:
    with pytest.raises(RecordError, match="record not found"):
        read_record(paths.result)
    paths.result.write_text("- a list\n")
    with pytest.raises(RecordError, match="expected a mapping with a 'status' key"):
        read_record(paths.result, verify=False)


def test_records_unreadable_failure_counts_as_none(paths: RunPaths) -> None:
    paths.failure.write_text("status: failed\ntruncat")

    failure = read_failure(paths)

    assert failure["status"] == NONE and "record is damaged" in failure["warning"]


def test_records_attempt_keeps_the_failure_before_it(paths: RunPaths) -> None:
    write_failure(paths, record(error={"type": "ValueError", "message": "first"}), None)

    kept = mark_running(paths, "r2", "2024-01-02T00:00:00+00:00", 42, "local")

    running = read_record(paths.failure)
    assert running["status"] == RUNNING and running["run_id"] == "r2" and running["pid"] == 42
    assert kept is not None and kept["error"]["message"] == "first" and kept["status"] == FAILED
    assert running["last_failure"] == kept


def test_records_success_after_failure_is_resolved(paths: RunPaths) -> None:
    write_failure(paths, record(error={"type": "ValueError", "message": "first"}), None)
    kept = mark_running(paths, "r2", "2024-01-02T00:00:00+00:00", 42, "local")

    write_result(paths, record(run_id="r2", metrics={}), kept)

    failure = read_record(paths.failure)
    assert failure["status"] == "resolved" and failure["last_failure"]["error"]["message"] == "first"
    assert read_record(paths.result)["run_id"] == "r2"


def test_records_secrets_are_redacted(paths: RunPaths, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef0123")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-3f9a8b7c6d")

    write_failure(paths, record(error={"message": "401 for key 0123456789abcdef0123 and as-3f9a8b7c6d"}), None)

    text = paths.failure.read_text()
    assert "0123456789abcdef0123" not in text and "as-3f9a8b7c6d" not in text
    assert read_record(paths.failure)["error"]["message"] == "401 for key *** and ***"
    for path in paths.history.iterdir():
        assert "0123456789abcdef0123" not in path.read_text()


def test_records_checked_text_ends_with_checksum() -> None:
    text = checked_text({"status": "completed"})

    assert text.startswith("status: completed\n")
    assert text.splitlines()[-1].startswith("# labrunner-sha256: ")


# --- a full disk: never `status: running` left behind, never a record that looks like a kill ---

FAILED_RECORD = {"status": "failed", "experiment": "e1", "sub": "s1", "run_id": "r2", "ended_at": "2024-01-02T00:00:00+00:00",
                 "error": {"type": "OSError", "message": "[Errno 28] No space left on device: 'work/checkpoint.pt'",
                           "traceback": "Traceback (most recent call last):\n" + "  a frame\n" * 2000,
                           "handler_line": {"file": "handlers/e1/s1.py", "line": 7, "function": "s1", "code": "save()"},
                           "hint": "the disk is full"},
                 "warnings": []}


@pytest.fixture
def full_disk_run(tmp_path: Path, small_fs: MountFactory) -> RunPaths:
    """A run whose attempt has started (failure.yaml says running) on a disk that is now full."""
    paths = RunPaths(small_fs(tmp_path / "disk", size_kib=1024) / "e1" / "s1")
    paths.run_dir.mkdir(parents=True)
    mark_running(paths, "r2", "2024-01-02T00:00:00+00:00", 42, "local")
    return paths


def test_records_full_disk_record_is_written_into_the_reserved_space(full_disk_run: RunPaths) -> None:
    reserve = SpaceReserve.claim(full_disk_run.internal / "reserve", 256 * 1024)
    fill_disk(full_disk_run.run_dir)

    written = write_final(full_disk_run, FAILED_RECORD, None, reserve)

    failure = read_record(full_disk_run.failure)
    assert failure["status"] == "failed" and failure["error"]["traceback"].count("a frame") == 2000  # the whole record
    assert failure["warnings"][0].startswith("no space left on device: 0 bytes free on the file system of ")
    assert written["warnings"] == failure["warnings"]


def test_records_full_disk_without_room_writes_a_short_record_in_place(full_disk_run: RunPaths) -> None:
    fill_disk(full_disk_run.run_dir)

    write_final(full_disk_run, FAILED_RECORD, None, reserve=None)

    failure = read_record(full_disk_run.failure)  # whole: its checksum holds
    assert failure["status"] == "failed" and failure["run_id"] == "r2"
    assert failure["error"]["type"] == "OSError" and failure["error"]["traceback"] is None
    assert failure["error"]["handler_line"]["line"] == 7
    assert failure["warnings"] == [f"only this short record could be written: cannot write {full_disk_run.failure}: "
                                   f"no space left on device (0 bytes free on the file system of {full_disk_run.run_dir})"]


def test_records_full_disk_result_becomes_a_failure_that_keeps_the_finding(full_disk_run: RunPaths) -> None:
    fill_disk(full_disk_run.run_dir)
    completed = {"status": "completed", "experiment": "e1", "sub": "s1", "run_id": "r2", "finding": "it works",
                 "metrics": {"acc": 0.9}, "ended_at": "2024-01-02T00:00:00+00:00", "warnings": []}

    written = write_final(full_disk_run, completed, None, reserve=None)

    assert not full_disk_run.result.exists()
    failure = read_record(full_disk_run.failure)
    assert written["status"] == failure["status"] == "failed"
    assert failure["error"]["type"] == "DiskFull"
    assert failure["error"]["message"].startswith("the handler completed, but its result could not be written: cannot write ")
    assert failure["unrecorded_result"] == {"finding": "it works", "metrics": {"acc": 0.9}}


def test_records_full_disk_with_nothing_writable_puts_the_outcome_in_the_error(tmp_path: Path, small_fs: MountFactory) -> None:
    paths = RunPaths(small_fs(tmp_path / "disk", size_kib=64) / "e1" / "s1")
    paths.run_dir.mkdir(parents=True)
    fill_disk(paths.run_dir)  # not even the attempt's start could be marked

    with pytest.raises(StorageError) as caught:
        write_final(paths, FAILED_RECORD, None, reserve=None)

    assert "no space left on device (0 bytes free" in str(caught.value)
    assert str(caught.value).endswith("so here is the outcome: e1/s1 failed: OSError: [Errno 28] No space left on device: "
                                      "'work/checkpoint.pt'")


def test_records_read_again_follow_every_change_and_are_copies(paths: RunPaths) -> None:
    # records read once are kept by their text (the end of a run reads each several times)
    write_result(paths, record(metrics={"acc": 0.97}), None)
    for _ in range(2):  # the first read and one from what was kept
        read = read_record(paths.result)
        read["metrics"]["acc"] = 0.0  # the caller's copy: the next read is not affected
    assert read_record(paths.result)["metrics"]["acc"] == 0.97

    text = paths.result.read_text()
    paths.result.write_text(text.replace("0.97", "0.99"))  # same size, within the clock's tick
    with pytest.raises(RecordError, match="its checksum does not match"):
        read_record(paths.result)
    assert read_record(paths.result, verify=False)["metrics"]["acc"] == 0.99
    with pytest.raises(RecordError, match="its checksum does not match"):  # refused again once read unverified
        read_record(paths.result)

    write_result(paths, record(metrics={"acc": 0.5}), None)
    assert read_record(paths.result)["metrics"]["acc"] == 0.5
