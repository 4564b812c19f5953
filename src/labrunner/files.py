"""Writing labrunner's files: the one atomic-write helper, and errors that say what went wrong.

Readers must see the old file or the whole new one, never a part, so every write goes to a
temporary file in the same folder and is renamed over the target. The new file is an ordinary
one for whoever shares the machine: a new file gets the mode the umask gives (not mkstemp's
0600), a file that existed keeps its mode (a researcher's 0664 FINDINGS.md stays 0664), and a
target that is a symbolic link is written through the link (the link stays a link).

A write that fails raises StorageError naming the file and the reason in words: "no space left
on device (12 KiB free)", a read-only folder, a folder where the file should be. Logs that grow
line by line (run.log, metrics.jsonl) are appended unbuffered, so that a full disk loses only the
lines it could not take and closing them never fails; and each attempt holds a little disk space
back (SpaceReserve), so that a disk filled by the handler, or by a sibling, still gets its record.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from labrunner.errors import StorageError

__all__ = ["AppendLog", "SpaceReserve", "atomic_write_bytes", "atomic_write_text", "atomic_writer", "free_space_text",
           "is_disk_full", "link_or_copy", "overwrite_in_place", "storage_error"]

_NEW_FILE_MODE = 0o666  # the kernel applies the umask, as it does for any file a program creates
_TEMP_NAME_CHARS = 50  # of the target's name in the temporary name: a 255-byte name must still fit
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_READ_ONLY = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def atomic_write_text(path: Path | str, text: str, durable: bool = True) -> None:
    """Write UTF-8 text atomically, byte for byte (no newline translation: CRLF files stay CRLF)."""
    atomic_write_bytes(path, text.encode("utf-8"), durable)


def atomic_write_bytes(path: Path | str, data: bytes, durable: bool = True) -> None:
    with atomic_writer(path, durable) as handle:
        handle.write(data)


@contextlib.contextmanager
def atomic_writer(path: Path | str, durable: bool = True) -> Iterator[BinaryIO]:
    """A binary handle whose content replaces `path` when the block ends without an error.
    `durable`: on disk before the rename (records); scratch files read back at once skip it."""
    shown = Path(path)
    target = _write_target(shown)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            raise StorageError(shown, "it is a folder where labrunner writes a file; move the folder away and run again",
                               errno.EISDIR)
        fd, tmp = _open_temp(target)
        with os.fdopen(fd, "wb") as handle:
            _keep_mode_and_owner(handle.fileno(), target)
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
        tmp = None
    except StorageError:
        raise
    except OSError as exc:
        raise storage_error(exc, shown) from exc
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def overwrite_in_place(path: Path | str, data: bytes) -> None:
    """Rewrite an existing small file in place, not atomically: on a full disk this needs no new
    block where an atomic write needs a whole new file. Only for records that would otherwise
    not be written at all."""
    shown = Path(path)
    try:
        with open(_write_target(shown), "r+b") as handle:
            handle.write(data)
            handle.truncate()
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise storage_error(exc, shown) from exc


def _write_target(path: Path) -> Path:
    """The file to replace: the one a symbolic link points to, so that the link stays a link."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def link_or_copy(source: Path, target: Path) -> None:
    """Put `source` at `target` (replacing it) without a second copy of its bytes where the file
    system allows a hard link, else as a copy."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(source, target)


def _open_temp(target: Path) -> tuple[int, Path]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        # os.urandom is what secrets.token_hex reads; importing secrets (hmac, hashlib) cost every job
        tmp = target.with_name(f".{target.name[:_TEMP_NAME_CHARS]}.{os.urandom(4).hex()}.tmp")
        try:
            return os.open(tmp, flags, _NEW_FILE_MODE), tmp
        except FileExistsError:
            continue


def _keep_mode_and_owner(fd: int, target: Path) -> None:
    try:
        before = os.stat(target)
    except FileNotFoundError:
        return
    os.fchmod(fd, before.st_mode & 0o7777)
    if (before.st_uid, before.st_gid) != (os.getuid(), os.getgid()):
        with contextlib.suppress(PermissionError):  # only root (or a group member) may give it back
            os.fchown(fd, before.st_uid, before.st_gid)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL


def storage_error(exc: OSError, path: Path) -> StorageError:
    """An OSError from writing `path`, as a StorageError whose reason a person can act on."""
    if exc.errno in _DISK_FULL:
        reason = f"no space left on device ({free_space_text(path)})"
    elif exc.errno in _READ_ONLY:
        reason = f"{exc.strerror or exc} (is the folder read-only, or owned by someone else?)"
    else:
        reason = exc.strerror or str(exc)
    return StorageError(path, reason, exc.errno)


def free_space_text(path: Path | str) -> str:
    """How much the file system holding `path` has free, for people: "12.0 KiB free on /mnt"."""
    folder = Path(os.path.abspath(path))
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        free_bytes = shutil.disk_usage(folder).free
    except OSError:
        return "free space unknown"
    return f"{_size_text(free_bytes)} free on the file system of {folder}"


def _size_text(size_bytes: int) -> str:
    if size_bytes < 1024:
        return f"{size_bytes} bytes"
    value = float(size_bytes)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit}"


class AppendLog:
    """A file appended to line by line (run.log, metrics.jsonl), without a buffer: a write that
    fails (a full disk) raises StorageError at once and is not retried when the file is closed,
    and O_APPEND keeps lines from processes appending at the same time whole."""

    def __init__(self, path: Path | str, fresh: bool = False) -> None:
        """`fresh`: start the file empty (a step's log), rather than append to it (run.log)."""
        self.name = str(path)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | (os.O_TRUNC if fresh else 0)
        try:
            self._fd = os.open(path, flags, _NEW_FILE_MODE)
        except OSError as exc:
            raise storage_error(exc, Path(path)) from exc

    def write(self, text: str) -> int:
        if self._fd < 0:
            raise ValueError(f"{self.name} is closed")  # as a closed file object says
        data = text.encode("utf-8", errors="replace")
        try:
            written = os.write(self._fd, data)  # the whole line, nearly always: metrics.jsonl writes one per step
            if written < len(data):
                view = memoryview(data)[written:]
                while view:
                    view = view[os.write(self._fd, view):]
        except OSError as exc:
            raise storage_error(exc, Path(self.name)) from exc
        return len(text)

    def flush(self) -> None:
        """Nothing to flush: every write went to the file."""

    # what code that prints to a redirected sys.stdout may ask of it
    encoding = "utf-8"

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def __enter__(self) -> "AppendLog":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SpaceReserve:
    """Disk space an attempt holds back for its own records, given back when a record cannot be
    written for lack of space: the handler that filled the disk, and its siblings running at the
    time, still get a record that says what happened instead of a lost run."""

    def __init__(self, path: Path | None) -> None:
        self._path = path

    @classmethod
    def claim(cls, path: Path, size_bytes: int) -> "SpaceReserve":
        """Hold `size_bytes` back in `path`; holds nothing when the disk has no room already."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600)
        except OSError:
            return cls(None)
        try:
            _allocate(fd, size_bytes)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            return cls(None)
        os.close(fd)
        return cls(path)

    def release(self) -> bool:
        """Give the space back; True when there was some to give."""
        path, self._path = self._path, None
        if path is None:
            return False
        path.unlink(missing_ok=True)
        return True


def _allocate(fd: int, size_bytes: int) -> None:
    """Real blocks, not a sparse file: posix_fallocate, or zeros where the file system lacks it."""
    try:
        os.posix_fallocate(fd, 0, size_bytes)
        return
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    except AttributeError:  # pragma: no cover - macOS has no posix_fallocate
        pass
    chunk = b"\0" * 65536
    for _ in range(0, size_bytes, len(chunk)):
        os.write(fd, chunk)
