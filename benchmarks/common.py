"""Shared helpers for the benchmark scripts: temporary projects and timing."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def snakemake_cmd() -> list[str]:
    return [str(BIN / "snakemake")]


def make_project(n_experiments: int, subs_per_experiment: int, handler_body: str, wandb_mode: str = "disabled") -> Path:
    """A labrunner project with the repo's Snakefile, rules and profile, and a generated plan."""
    root = Path(tempfile.mkdtemp(prefix="labrunner-bench-"))
    for item in ("Snakefile", "profiles"):
        source = REPO / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / item)
    lines = ["project: {name: bench}", f"wandb: {{mode: {wandb_mode}}}", "experiments:"]
    for e in range(n_experiments):
        exp = f"exp-{e}"
        lines += [f"  {exp}:", "    sub_experiments:"]
        handlers = root / "handlers" / exp
        handlers.mkdir(parents=True)
        for s in range(subs_per_experiment):
            sub = f"s{s}"
            lines.append(f"      {sub}: {{params: {{i: {s}}}}}")
            (handlers / f"{sub}.py").write_text(handler_body.replace("HANDLER", sub))
    (root / "research").mkdir()
    (root / "research" / "research_plan.yaml").write_text("\n".join(lines) + "\n")
    return root


def make_plain(n_jobs: int) -> Path:
    """The baseline: a plain Snakefile with n trivial jobs and nothing else."""
    root = Path(tempfile.mkdtemp(prefix="labrunner-bench-plain-"))
    (root / "Snakefile").write_text(
        f"N = range({n_jobs})\n\n"
        "rule all:\n    input: expand('out/{i}.txt', i=N)\n\n"
        "rule job:\n    output: 'out/{i}.txt'\n    shell: 'touch {output}'\n"
    )
    return root


def _once(command: list[str], cwd: Path, env: dict[str, str] | None) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env or os.environ.copy())
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed in {cwd}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return elapsed


def timed(command: list[str], cwd: Path, repeats: int = 3, env: dict[str, str] | None = None) -> float:
    """Median wall time of a command, in seconds; fails loudly if the command fails."""
    return statistics.median(_once(command, cwd, env) for _ in range(repeats))


def timed_pair(first: tuple[list[str], Path], second: tuple[list[str], Path], repeats: int = 7) -> tuple[float, float]:
    """Median wall times of two commands run alternately, so that a change in the machine's load
    during the measurement weighs on both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for index, (command, cwd) in enumerate((first, second)):
            times[index].append(_once(command, cwd, None))
    return statistics.median(times[0]), statistics.median(times[1])
