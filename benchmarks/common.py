"""What the benchmarks share: throwaway labrunner projects and plain Snakemake baselines of the
same shape, and timing that runs the two alternately, so that the load of a shared machine
weighs on both alike."""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SUBS_PER_EXPERIMENT = 50  # the measurements: 1,000 subs in 20 experiments
NOOP_HANDLER = 'def HANDLER(runner):\n    return {"finding": "nothing to see", "metrics": {"x": 1.0}}\n'
# the repository's own workflow, as a project holds it. Only the Snakefile and profile once the
# workflow ships inside the package (the thin Snakefile includes it); until then rules/, scripts/
# and envs/ beside them, which are copied when they exist.
WORKFLOW_FILES = ("Snakefile", "profiles", "rules", "scripts", "envs")


def copy_workflow(root: Path) -> None:
    """Put the repository's workflow files into a benchmark project: the one place that knows where they live."""
    for name in WORKFLOW_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name)
        elif source.is_file():
            shutil.copy2(source, root / name)


def bench_env() -> dict[str, str]:
    """W&B off whatever the caller's environment says, and this interpreter's tools first on PATH."""
    return {**os.environ, "WANDB_MODE": "disabled", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def snakemake(*args: str) -> list[str]:
    return [str(BIN / "snakemake"), *args]


def shape(n_subs: int) -> list[tuple[str, int]]:
    """(experiment id, number of subs) for n_subs subs, SUBS_PER_EXPERIMENT to an experiment."""
    experiments = max(1, -(-n_subs // SUBS_PER_EXPERIMENT))
    return [(f"exp-{e}", len(range(e, n_subs, experiments))) for e in range(experiments)]


def make_project(n_subs: int, handler_body: str = NOOP_HANDLER) -> Path:
    """A labrunner project: the repository's workflow, a plan of n_subs subs and a handler file each."""
    root = Path(tempfile.mkdtemp(prefix="labrunner-bench-"))
    copy_workflow(root)
    lines = ["project: {name: bench}", "wandb: {mode: disabled}", "experiments:"]
    for exp, subs in shape(n_subs):
        lines += [f"  {exp}:", "    success_criteria:", "      x: {target: 1.0, acceptable: 0.5, failure: 0.1}",
                  "    sub_experiments:"]
        handlers = root / "handlers" / exp
        handlers.mkdir(parents=True)
        for s in range(subs):
            lines.append(f"      s{s}: {{params: {{i: {s}}}}}")
            (handlers / f"s{s}.py").write_text(handler_body.replace("HANDLER", f"s{s}"))
    (root / "research").mkdir()
    (root / "research" / "research_plan.yaml").write_text("\n".join(lines) + "\n")
    return root


def make_plain(n_subs: int, job_command: str = "touch {output}") -> Path:
    """The baseline: a plain Snakefile whose DAG has the shape of labrunner's for n_subs subs (one
    job per sub with an input file, an aggregate and a findings job per experiment, a gates job and
    a project findings job), every job trivial."""
    root = Path(tempfile.mkdtemp(prefix="labrunner-bench-plain-"))
    experiments = shape(n_subs)
    for exp, subs in experiments:
        (root / "src" / exp).mkdir(parents=True)
        for s in range(subs):
            (root / "src" / exp / f"s{s}.py").write_text("")
    subs_of = {exp: [f"s{s}" for s in range(subs)] for exp, subs in experiments}
    (root / "Snakefile").write_text(
        f"SUBS = {subs_of!r}\n\n"
        "rule all:\n    input: 'out/FINDINGS.md'\n    default_target: True\n\n"
        f"rule sub:\n    input: 'src/{{exp}}/{{sub}}.py'\n    output: 'out/{{exp}}/{{sub}}/result.yaml'\n"
        f"    shell: {job_command!r}\n\n"
        "rule aggregate:\n    input: lambda w: expand('out/{exp}/{sub}/result.yaml', exp=w.exp, sub=SUBS[w.exp])\n"
        "    output: 'out/{exp}/results.yaml'\n    shell: 'touch {output}'\n\n"
        "rule findings:\n    input: 'out/{exp}/results.yaml'\n    output: 'out/{exp}/FINDINGS.md'\n    shell: 'touch {output}'\n\n"
        "rule gates:\n    input: expand('out/{exp}/results.yaml', exp=SUBS)\n    output: 'out/gates.yaml'\n"
        "    shell: 'touch {output}'\n\n"
        "rule project:\n    input: expand('out/{exp}/FINDINGS.md', exp=SUBS), 'out/gates.yaml'\n"
        "    output: 'out/FINDINGS.md'\n    shell: 'touch {output}'\n"
    )
    return root


@contextmanager
def temporary(*roots: Path) -> Iterator[None]:
    try:
        yield
    finally:
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class Timing:
    wall_s: float
    cpu_s: float  # user + system time of the command and every process it waited for


def run_timed(command: list[str], cwd: Path) -> Timing:
    """Run a command to completion; its wall and CPU time. Fails loudly if the command fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=bench_env())
    wall_s = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed in {cwd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return Timing(wall_s, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)


def alternate(first: Callable[[], float], second: Callable[[], float], repeats: int,
              pick: Callable[[list[float]], Any] = statistics.median) -> tuple[Any, Any]:
    """Medians (or what `pick` takes) of two measurements taken in turns (first, second, first, ...)."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        times[0].append(first())
        times[1].append(second())
    return pick(times[0]), pick(times[1])
