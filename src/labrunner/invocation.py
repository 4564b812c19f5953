"""The last Snakemake command line, so that the rerun hint is the command that was really used.

A run on a cluster (`--executor slurm --jobs 50 --default-resources ...`), on Modal
(`--config backend=modal`) or in the stub tree must be rerun with the same options: a hint that
says `snakemake --cores 4` would run it somewhere else. The workflow records the command line on
the submitting side when a run starts (rules/common.smk, `onstart`: not in dry runs, not in
remote jobs), one file per tree; `labrunner status` and the end-of-run summary rebuild the
command from it, with the target first: `--config` and `--default-resources` take every word
after them, so a target written after them is swallowed.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labrunner import layout

__all__ = ["Invocation", "capture", "last_run", "last_run_path", "rerun_command"]

RECORD_DIR = Path(".snakemake") / "labrunner"
RECORD_VERSION = 1
# options that make one run do more than "what is missing or failed": never repeated
_DROPPED_FLAGS = frozenset({"-F", "--forceall", "-f", "--force", "-n", "--dry-run", "--dryrun", "--touch", "-t"})
_DROPPED_WITH_VALUES = frozenset({"-R", "--forcerun", "--until", "-U", "--omit-from", "-O"})


def last_run_path(root: Path, stub: bool) -> Path:
    return root / RECORD_DIR / ("last-run-stub.json" if stub else "last-run.json")


@dataclass(frozen=True)
class Invocation:
    """One Snakemake command line: the program as the user would type it, and its arguments."""

    program: str
    args: tuple[str, ...]
    targets: tuple[str, ...] = ()
    recorded_at: str | None = None

    def command_line(self) -> str:
        return " ".join([self.program, *map(shlex.quote, self.args)])

    def to_json(self) -> dict[str, Any]:
        return {"version": RECORD_VERSION, "program": self.program, "args": list(self.args),
                "targets": list(self.targets), "recorded_at": self.recorded_at}

    def save(self, root: Path, stub: bool, targets: Iterable[str] = ()) -> None:
        """Record this command line as the tree's last run; `targets` as Snakemake parsed them."""
        from labrunner.records import now_iso
        from labrunner.yamlio import atomic_write_text

        record = {**self.to_json(), "targets": sorted(targets), "recorded_at": now_iso()}
        atomic_write_text(last_run_path(root, stub), json.dumps(record, indent=1) + "\n")


def _as_typed(program: str, search_path: str | None) -> str:
    """`snakemake` when that is what the PATH finds, else the path as it can be typed here."""
    if os.path.basename(program) == "__main__.py":
        return "python -m snakemake"
    found = shutil.which("snakemake", path=search_path)
    if found and os.path.realpath(found) == os.path.realpath(program):
        return "snakemake"
    relative = os.path.relpath(program)
    return relative if not relative.startswith("..") else program


def capture(argv: Sequence[str], search_path: str | None = None) -> Invocation | None:
    """The command line of this Snakemake process (sys.argv), read while the Snakefile is parsed,
    with the PATH of the user's shell (before labrunner puts its own bin folder first); None when
    Snakemake was not started from a command line (its Python API), whose argv is another's."""
    program = argv[0] if argv else ""
    if os.path.basename(program) != "snakemake" and not program.endswith(os.path.join("snakemake", "__main__.py")):
        return None
    return Invocation(_as_typed(program, search_path), tuple(argv[1:]))


def last_run(root: Path, stub: bool) -> Invocation | None:
    """The last recorded run of this tree; None when there is none or it cannot be read."""
    try:
        data = json.loads(last_run_path(root, stub).read_text(encoding="utf-8"))
        return Invocation(str(data["program"]), tuple(map(str, data["args"])), tuple(map(str, data.get("targets") or ())),
                          data.get("recorded_at"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _options(invocation: Invocation) -> list[str]:
    """The arguments without the targets and without the options that force reruns."""
    kept: list[str] = []
    skipping = False
    for word in invocation.args:
        if skipping and not word.startswith("-"):
            continue
        skipping = False
        name = word.split("=", 1)[0]
        if name in _DROPPED_WITH_VALUES:
            skipping = "=" not in word
            continue
        if word in _DROPPED_FLAGS or word in invocation.targets:
            continue
        kept.append(word)
    return kept


def default_target(stub: bool) -> str:
    return layout.project_findings_path(stub).as_posix()


def rerun_command(root: Path, stub: bool) -> str:
    """The command that reruns what failed or is missing, with the last run's options."""
    invocation = last_run(root, stub)
    target = default_target(stub)
    if invocation is None:
        return f"snakemake {target}" + (" --config stub=true" if stub else "")
    return " ".join([invocation.program, shlex.quote(target), *map(shlex.quote, _options(invocation))])
