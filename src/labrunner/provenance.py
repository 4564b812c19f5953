"""Where a number came from: the code, the tree and the software that made a record.

Every result and failure record carries:

- `git`: the commit, whether the tree differed from it, and, when it did, a patch saved in the
  run's history/ that turns the commit into the tree the attempt ran (the changes to tracked
  files, and the sub's own code files that git does not track yet). The commit and the patch
  together give back the code; the record's `code` hashes say which files of it the sub ran.
- `environment`: Python, numpy, torch and CUDA versions, the GPU and the host, as the handler's
  own process saw them. That process knows what the handler imported; the supervisor must not
  import torch to find out (a second of start-up, and the wrong machine on Modal).

Reading the tree costs a few `git` calls per job, none when the project is not in a repository.
"""

from __future__ import annotations

import hashlib
import platform
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labrunner.files import atomic_write_bytes

if TYPE_CHECKING:
    import subprocess

__all__ = ["GIT_TIMEOUT_S", "git_state", "handler_environment", "record_environment"]

GIT_TIMEOUT_S = 5.0  # per git call: a slow file system must not hold a job


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[bytes] | None:
    import subprocess  # here: the handler's process imports this module for handler_environment only

    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None


def git_state(root: Path, code_files: Iterable[str], history_dir: Path) -> dict[str, Any]:
    """{"commit", "dirty", "diff", "untracked"} of the repository holding `root`, as an attempt
    starts. `code_files` are the sub's handler and modules (relative to root): one that git does
    not track makes the tree dirty too, since the commit alone would not give it back. The patch
    is saved once per distinct content (history/tree-<sha>.diff) and named relative to root."""
    head = _git(root, "rev-parse", "HEAD")
    if head is None or head.returncode != 0:
        return {"commit": None, "dirty": None}  # not a repository, or one without a commit yet
    commit = head.stdout.decode().strip()
    status = _git(root, "status", "--porcelain=v1", "--untracked-files=no")
    tracked_changes = bool(status is not None and status.returncode == 0 and status.stdout.strip())
    untracked = _untracked(root, sorted(code_files))
    state: dict[str, Any] = {"commit": commit, "dirty": tracked_changes or bool(untracked)}
    if untracked:
        state["untracked"] = untracked
    if state["dirty"]:
        patch = _patch(root, tracked_changes, untracked)
        try:
            if patch:
                state["diff"] = _save_patch(patch, root, history_dir)
        except OSError as exc:  # a full disk must not stop the attempt; the record says what is missing
            state["diff_error"] = str(exc)
    return state


def _untracked(root: Path, code_files: list[str]) -> list[str]:
    """The code files git does not track (new handlers are often not committed yet)."""
    if not code_files:
        return []
    listed = _git(root, "ls-files", "-z", "--", *code_files)
    if listed is None or listed.returncode != 0:
        return []
    tracked = {name.decode() for name in listed.stdout.split(b"\0") if name}  # relative to root, as given
    return [path for path in code_files if path not in tracked]


def _patch(root: Path, tracked_changes: bool, untracked: list[str]) -> bytes:
    parts = []
    if tracked_changes:
        done = _git(root, "diff", "HEAD", "--binary", "--no-ext-diff", "--no-color")
        if done is not None and done.returncode == 0:
            parts.append(done.stdout)
    for path in untracked:  # as new files, so that `git apply` recreates them
        done = _git(root, "diff", "--no-index", "--binary", "--no-color", "--", "/dev/null", path)
        if done is not None and done.returncode in (0, 1):  # 1: the files differ, as they must
            parts.append(done.stdout)
    return b"".join(parts)


def _save_patch(patch: bytes, root: Path, history_dir: Path) -> str:
    digest = hashlib.sha256(patch).hexdigest()[:16]
    path = history_dir / f"tree-{digest}.diff"
    if not path.exists():
        atomic_write_bytes(path, patch)  # as git wrote it: a file in another encoding keeps its bytes
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def handler_environment() -> dict[str, Any]:
    """What the handler's process ran with. torch and numpy are reported only when the handler
    imported them (asking would import them); the GPU only when torch sees CUDA."""
    environment: dict[str, Any] = {"python": platform.python_version(), "host": platform.node()}
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        environment["numpy"] = getattr(numpy, "__version__", None)
    torch = sys.modules.get("torch")
    if torch is not None:
        environment["torch"] = getattr(torch, "__version__", None)
        environment["cuda"] = getattr(getattr(torch, "version", None), "cuda", None)
        environment.update(_torch_gpu(torch))
    return environment


def _torch_gpu(torch: Any) -> dict[str, Any]:
    try:
        if not torch.cuda.is_available():
            return {}
        count = torch.cuda.device_count()
        return {"gpu_name": torch.cuda.get_device_name(torch.cuda.current_device()), "gpus_visible": count}
    except Exception:  # noqa: BLE001 - a broken driver must not fail a handler that returned
        return {}


def record_environment(outcome: Mapping[str, Any]) -> dict[str, Any]:
    """The environment a record states: the handler process's own report, else (it died before
    it could report: a crash, a timeout, a kill) the supervisor's Python and host, saying so."""
    reported = outcome.get("environment")
    if isinstance(reported, Mapping) and reported:
        return dict(reported)
    return {"python": platform.python_version(), "host": platform.node(), "reported_by": "supervisor"}
