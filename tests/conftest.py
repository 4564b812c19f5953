"""Fixtures for the unit tests: throwaway projects under tmp_path, and one-sub runs through the
real LocalBackend (a child process per attempt, no mocks)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import textwrap
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from labrunner.execution import SubRun, run_sub
from labrunner.plan import load_plan

PLAN_FILE = Path("research/research_plan.yaml")
EXP = "e1-demo"
SUB = "s1"

ProjectFactory = Callable[..., Path]
RunHandler = Callable[..., SubRun]


@pytest.fixture(autouse=True)
def _isolated_wandb(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test depends on, or writes to, the W&B settings of the machine it runs on."""
    home = tmp_path_factory.mktemp("wandb-home")
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_PROJECT", "WANDB_ENTITY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("WANDB_DIR", str(home / "dir"))


@pytest.fixture
def make_project(tmp_path: Path) -> ProjectFactory:
    """make_project(plan, {"handlers/e1/s1.py": "def s1(runner): ..."}) -> the project root.

    `plan` is a dict (dumped as YAML) or YAML text (dedented, written as it stands, so that
    tests can rely on its line numbers). Handler sources are dedented too.
    """

    def make(plan: Mapping[str, Any] | str, files: Mapping[str, str] | None = None, name: str = "project") -> Path:
        root = tmp_path / name
        text = plan if isinstance(plan, str) else yaml.safe_dump(dict(plan), sort_keys=False)
        write(root / PLAN_FILE, textwrap.dedent(text))
        for relative, source in (files or {}).items():
            write(root / relative, textwrap.dedent(source))
        return root

    return make


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def assert_plain(value: Any) -> None:
    """Only the types that YAML and JSON write without tags: what records must hold."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str, key
            assert_plain(item)
    elif isinstance(value, list):
        for item in value:
            assert_plain(item)
    else:
        assert value is None or type(value) in (bool, int, float, str), type(value)


def one_sub_plan(wandb_mode: str = "disabled", **sub_settings: Any) -> dict[str, Any]:
    """A plan with one experiment (EXP) and one sub (SUB) whose handler is handlers/EXP/SUB.py."""
    return {
        "project": {"name": "Demo"},
        "defaults": {"timeout_min": 1, "retries": 0, "seeds": [0]},
        "wandb": {"project": "demo", "mode": wandb_mode},
        "experiments": {EXP: {"sub_experiments": {SUB: dict(sub_settings)}}},
    }


@pytest.fixture
def run_handler(make_project: ProjectFactory) -> RunHandler:
    """run_handler(source, **sub_settings) runs one sub whose handler is `source` (the text of
    handlers/EXP/SUB.py) through run_sub and the LocalBackend. Pass `root` to run again in the
    same project (the handler file is rewritten), `console` to see what was printed."""

    def run(source: str, *, wandb_mode: str = "disabled", stub: bool = False, root: Path | None = None,
            console: io.StringIO | None = None, **sub_settings: Any) -> SubRun:
        if root is None:
            root = make_project(one_sub_plan(wandb_mode, **sub_settings), {f"handlers/{EXP}/{SUB}.py": source})
        else:
            write(root / "handlers" / EXP / f"{SUB}.py", textwrap.dedent(source))
        plan = load_plan(root / PLAN_FILE)
        return run_sub(plan, plan.sub(EXP, SUB), stub=stub, console=console or io.StringIO())

    return run


MountFactory = Callable[..., Path]


@pytest.fixture
def small_fs() -> Iterator[MountFactory]:
    """small_fs(path, size_kib=256, read_only=False) mounts a tmpfs of that size at `path`: a real
    file system that really fills up (ENOSPC) or refuses writes (EROFS). Unmounted after the test.
    Mounting needs root; elsewhere the test is skipped, saying so."""
    mounted: list[Path] = []

    def mount(path: Path, size_kib: int = 256, read_only: bool = False) -> Path:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("needs root to mount a small file system (a real full disk); run the tests as root to include it")
        path.mkdir(parents=True, exist_ok=True)
        options = f"size={size_kib}k" + (",ro" if read_only else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill_disk(folder: Path) -> Path:
    """Write into `folder` until its file system has not one byte left; return the filler."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as handle:
        for size in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    handle.write(b"x" * size)
            except OSError:
                continue
    return filler

def result_record(plan: Any, exp: str, sub: str, metrics: Mapping[str, Any], seed: int = 0,
                  **fields: Any) -> dict[str, Any]:
    """A result record as run_sub writes it for the plan and code as they are now (a current
    result): the params, seed, handler and code hashes that the write-up compares."""
    from labrunner.sources import code_hashes

    spec = plan.sub(exp, sub)
    record = {"experiment": exp, "sub": sub, "seed": seed, "finding": f"{sub} done", "metrics": dict(metrics),
              "artifacts": [], "params": spec.params_for(False), "run_id": f"r-{sub}-{seed}",
              "ended_at": "2026-01-01T00:00:00+00:00", "duration_s": 1.0, "attempts": 1,
              "handler": {"file": spec.handler_file.as_posix(), "function": spec.handler_function},
              "code": code_hashes(plan.root, spec.handler_file)}
    record.update(fields)
    return record
