"""labrunner.files: the one atomic-write helper, on real file systems that are full, read-only or
have a folder where a file belongs (small tmpfs mounts; see conftest.small_fs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import MountFactory, fill_disk
from labrunner.errors import StorageError
from labrunner.files import AppendLog, SpaceReserve, atomic_write_text


def test_files_new_file_follows_the_umask_and_an_existing_one_keeps_its_mode(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "new.yaml", "a: 1\n")
        kept = tmp_path / "kept.md"
        kept.write_text("old")
        kept.chmod(0o664)
        atomic_write_text(kept, "new")
    finally:
        os.umask(previous)

    assert (tmp_path / "new.yaml").stat().st_mode & 0o777 == 0o640
    assert kept.stat().st_mode & 0o777 == 0o664 and kept.read_text() == "new"


def test_files_symlink_is_written_through(tmp_path: Path) -> None:
    target = tmp_path / "notes" / "FINDINGS.md"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "FINDINGS.md"
    link.symlink_to(Path("notes") / "FINDINGS.md")

    atomic_write_text(link, "new\r\n")

    assert link.is_symlink() and target.read_bytes() == b"new\r\n"  # byte for byte: CRLF stays


def test_files_folder_where_the_file_belongs_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "failure.yaml").mkdir()

    with pytest.raises(StorageError) as caught:
        atomic_write_text(tmp_path / "failure.yaml", "status: none\n")

    assert str(caught.value) == (f"cannot write {tmp_path / 'failure.yaml'}: it is a folder where labrunner writes a "
                                 "file; move the folder away and run again")


def test_files_full_disk_names_the_file_and_the_free_space(tmp_path: Path, small_fs: MountFactory) -> None:
    disk = small_fs(tmp_path / "disk", size_kib=64)
    record = disk / "result.yaml"
    record.write_text("old: record\n")
    fill_disk(disk)

    with pytest.raises(StorageError) as caught:
        atomic_write_text(record, "new: record\n" * 1000)

    assert str(caught.value) == (f"cannot write {record}: no space left on device (0 bytes free on the file system "
                                 f"of {disk})")
    assert record.read_text() == "old: record\n"  # the old file is untouched
    assert sorted(path.name for path in disk.iterdir()) == ["filler", "result.yaml"]  # no temporary file left


def test_files_append_log_on_a_full_disk_fails_the_write_and_closes_cleanly(tmp_path: Path, small_fs: MountFactory) -> None:
    disk = small_fs(tmp_path / "disk", size_kib=64)
    fill_disk(disk)
    log = AppendLog(disk / "run.log")

    with pytest.raises(StorageError, match="no space left on device"):
        log.write("x" * 10_000 + "\n")
    log.close()  # a buffered file would raise here again, and hide the outcome of the run

    with pytest.raises(ValueError, match="is closed"):
        log.write("late\n")


def test_files_space_reserve_gives_room_back_on_a_full_disk(tmp_path: Path, small_fs: MountFactory) -> None:
    disk = small_fs(tmp_path / "disk", size_kib=512)
    reserve = SpaceReserve.claim(disk / ".labrunner" / "reserve", 256 * 1024)
    fill_disk(disk)
    with pytest.raises(StorageError):
        atomic_write_text(disk / "record.yaml", "x" * 100_000)

    assert reserve.release() and not reserve.release()
    atomic_write_text(disk / "record.yaml", "x" * 100_000)
    assert SpaceReserve.claim(disk / "again", 256 * 1024).release() is False  # a full disk holds nothing back


def test_files_aggregate_step_on_a_full_disk_prints_the_reason_not_a_traceback(
        tmp_path: Path, small_fs: MountFactory, capfd: pytest.CaptureFixture[str]) -> None:
    from labrunner import steps

    disk = small_fs(tmp_path / "disk", size_kib=64)
    fill_disk(disk)
    log = tmp_path / "aggregate.log"

    with pytest.raises(steps.StepFailed) as caught, steps.logged(log):
        atomic_write_text(disk / "metrics.csv", "x" * 100_000)

    message = (f"labrunner: step failed: cannot write {disk / 'metrics.csv'}: no space left on "
               f"device (0 bytes free on the file system of {disk}) (log: {log})")
    assert capfd.readouterr().err == message + "\n"
    assert str(caught.value) == message  # what Snakemake shows as the rule's error
    assert "Traceback (most recent call last)" in log.read_text()  # the details stay in the rule's log


def test_files_aggregate_rules_run_inside_snakemake_s_process() -> None:
    """The aggregate rules are run: blocks (no Python start per job) and the profile makes
    Snakemake run them in its own process rather than a new Snakemake per job."""
    from labrunner.workflow import PROFILE_TEMPLATE, WORKFLOW_DIR
    from labrunner.yamlio import load_yaml

    rules = (WORKFLOW_DIR / "rules" / "aggregate.smk").read_text()
    directives = [line.strip() for line in rules.splitlines() if line.startswith("    ") and line.strip().endswith(":")]
    assert directives.count("run:") == 4 and "script:" not in directives and "conda:" not in directives
    assert load_yaml(PROFILE_TEMPLATE)["force-use-threads"] is True
    assert (Path(__file__).parent.parent / "profiles" / "default" / "config.yaml").read_text() == PROFILE_TEMPLATE.read_text()
