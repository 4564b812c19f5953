"""Every CPU figure of labrunner's performance budgets, measured against its baseline in the same
run, printed as one table; exits 1 when a budget is missed.

    python benchmarks/run.py              # the full set: about 15 minutes on 2 cores
    python benchmarks/run.py --quick      # a CI smoke run at small sizes (under a minute); not judged
    python benchmarks/run.py --only log_metrics,validate --json out.json

Each figure runs the baseline and labrunner in turns and takes medians, so that the load of a
shared machine weighs on both alike. The GPU figure is benchmarks/gpu_logging.py, on a GPU machine.
docs/performance.md says what each budget protects, and holds the latest table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from common import (
    BIN, alternate, make_plain, make_project, run_timed, shape, snakemake, temporary,
)

RESULTS = "results"


@dataclass(frozen=True)
class Sizes:
    dry_run_subs: tuple[int, ...]
    completed_subs: int  # no-op re-invocation, aggregation, validate
    overhead_subs: int
    log_calls: int
    repeats: int  # of the quick measurements (a few seconds each); the slow ones use fewer


FULL = Sizes(dry_run_subs=(1000, 10000), completed_subs=1000, overhead_subs=100, log_calls=10000, repeats=7)
QUICK = Sizes(dry_run_subs=(20, 100), completed_subs=10, overhead_subs=4, log_calls=300, repeats=1)


@dataclass(frozen=True)
class Figure:
    """One row of the table. `kind`: ratio (labrunner / baseline), extra_s (labrunner - baseline,
    per job) or absolute_s (labrunner alone)."""

    key: str
    name: str
    kind: str
    budget: float
    labrunner: float
    baseline: float | None = None
    unit: str = "s"

    @property
    def measured(self) -> float:
        if self.kind == "ratio":
            assert self.baseline is not None
            return self.labrunner / self.baseline
        if self.kind == "extra_s":
            assert self.baseline is not None
            return self.labrunner - self.baseline
        return self.labrunner

    @property
    def within(self) -> bool:
        return self.measured <= self.budget

    def row(self, judged: bool) -> list[str]:
        baseline = f"{self.baseline:.3f} {self.unit}" if self.baseline is not None else "-"
        compared = {"ratio": f"{self.measured:.2f}x", "extra_s": f"+{self.measured:.3f} s", "absolute_s": "-"}[self.kind]
        budget = {"ratio": f"<= {self.budget}x", "extra_s": f"<= +{self.budget} s", "absolute_s": f"<= {self.budget} s"}[self.kind]
        verdict = ("within" if self.within else "OVER") if judged else "(quick: not judged)"
        return [self.name, baseline, f"{self.labrunner:.3f} {self.unit}", compared, budget, verdict]


# --- the figures -----------------------------------------------------------------------------------

def dry_run(n_subs: int, repeats: int) -> Figure:
    project, plain = make_project(n_subs), make_plain(n_subs)
    with temporary(project, plain):
        command = snakemake("-n", "--quiet")
        plain_s, labrunner_s = alternate(lambda: run_timed(command, plain).wall_s,
                                         lambda: run_timed(command, project).wall_s, repeats)
    return Figure(f"dry_run_{n_subs}", f"`snakemake -n`, {n_subs:,} subs, fresh tree (vs a plain Snakefile of the same shape)",
                  "ratio", 1.15, labrunner_s, plain_s)


def completed_project_figures(n_subs: int, repeats: int, log: Callable[[str], None]) -> list[Figure]:
    """No-op re-invocation, aggregation and validate, on a project whose n_subs subs have run."""
    project, plain = make_project(n_subs), make_plain(n_subs)
    with temporary(project, plain):
        log(f"  running {n_subs:,} no-op subs once for real (the completed state the next figures need)...")
        full_run = run_timed(snakemake("--cores", "2", "--quiet"), project)
        log(f"  ...{full_run.wall_s:.0f} s")
        run_timed(snakemake("--cores", "2", "--quiet"), plain)
        command = snakemake("--cores", "2", "--quiet")
        plain_s, noop_s = alternate(lambda: run_timed(command, plain).wall_s,
                                    lambda: run_timed(command, project).wall_s, repeats)
        plan = project / "research" / "research_plan.yaml"
        aggregate_file = project / RESULTS / "exp-0" / "results.yaml"
        sub_result = project / RESULTS / "exp-0" / "s0" / "result.yaml"

        def aggregate() -> float:
            # an edited plan rebuilds every aggregate and reruns no sub (Snakemake compares the
            # content of an input that is newer, so a touch would not do)
            with plan.open("a") as handle:
                handle.write(f"# edited {time.time_ns()}\n")
            before = {path: path.stat().st_mtime_ns for path in (aggregate_file, sub_result)}
            elapsed_s = run_timed(command, project).wall_s
            if aggregate_file.stat().st_mtime_ns == before[aggregate_file] or sub_result.stat().st_mtime_ns != before[sub_result]:
                raise RuntimeError("the plan edit did not rebuild the aggregates alone: the figure would measure something else")
            return elapsed_s

        noop_again_s, aggregate_s = alternate(lambda: run_timed(command, project).wall_s, aggregate, max(1, repeats // 2))
        validate_s = statistics.median(run_timed([str(BIN / "labrunner"), "validate"], project).wall_s
                                       for _ in range(repeats))
    return [
        Figure(f"noop_{n_subs}", f"no-op re-invocation, {n_subs:,} completed subs (vs the plain Snakefile, outputs present)",
               "ratio", 1.1, noop_s, plain_s),
        Figure(f"aggregate_{n_subs}", f"aggregation of {n_subs:,} results after a plan edit (beyond a no-op re-invocation)",
               "absolute_s", 2.0, aggregate_s - noop_again_s),
        Figure(f"validate_{n_subs}", f"`labrunner validate`, {n_subs:,} subs", "absolute_s", 0.3, validate_s),
    ]


def per_sub_overhead(n_subs: int, repeats: int) -> Figure:
    """CPU time per no-op sub (W&B disabled, --cores 2) against a `python -c pass` job, both
    through Snakemake, each from a fresh tree; only the subs' own targets, no aggregates."""
    project = make_project(n_subs)
    plain = make_plain(n_subs, job_command=f"{sys.executable} -c pass && touch {{output}}")
    lab_targets = [f"{RESULTS}/{exp}/s{s}/result.yaml" for exp, subs in shape(n_subs) for s in range(subs)]
    plain_targets = [f"out/{exp}/s{s}/result.yaml" for exp, subs in shape(n_subs) for s in range(subs)]

    def fresh_run(root: Path, outputs: str, targets: list[str]) -> float:
        for folder in (root / outputs, root / ".snakemake"):
            shutil.rmtree(folder, ignore_errors=True)
        return run_timed(snakemake(*targets, "--cores", "2", "--quiet"), root).cpu_s / n_subs

    with temporary(project, plain):
        plain_s, labrunner_s = alternate(lambda: fresh_run(plain, "out", plain_targets),
                                         lambda: fresh_run(project, RESULTS, lab_targets), repeats)
    return Figure(f"per_sub_{n_subs}", f"per-sub overhead, no-op handler, W&B disabled, {n_subs} subs at --cores 2 "
                  "(vs `python -c pass` jobs), CPU time per job", "extra_s", 0.2, labrunner_s, plain_s, unit="core-s")


def log_metrics_vs_wandb(calls: int, repeats: int) -> Figure:
    """runner.log_metrics until every value is in an offline W&B run (the handler's side writes
    metrics.jsonl, the supervisor's forwarder sends it on: here both in this process), against
    wandb.log called directly, `calls` times each; W&B's start and finish are outside the timing.
    The time is this process's CPU time (all its threads): all the work of both is done here, and
    unlike wall time it does not count the moments other programs on a shared machine had the CPU."""
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    from labrunner.execution import _MetricsForwarder
    from labrunner.runner import ExperimentRunner, RunContext
    from labrunner.tracking import TrackingRequest, start_tracking

    def raw(root: Path) -> float:
        run = wandb.init(project="bench", mode="offline", dir=str(root), reinit="create_new",
                         settings=wandb.Settings(console="off", silent=True))
        start = time.process_time()
        for step in range(calls):
            run.log({"s0/loss": 1.0 / (step + 1), "s0/step": step})
        elapsed_s = time.process_time() - start
        run.finish()
        return elapsed_s

    def labrunner(root: Path) -> float:
        tracker = start_tracking(TrackingRequest(mode="offline", project="bench", entity=None, group="bench", name="s0",
                                                 metric_prefix="s0/", config={}, run_dir=root))
        assert tracker.info()["mode"] == "offline", tracker.warnings
        runner = ExperimentRunner(RunContext("bench", "s0", {}, 0, False, str(root), str(root), "s0.py", "s0", "run0"))
        forwarder = _MetricsForwarder(root / "metrics.jsonl", "run0", tracker)
        forwarder.start()
        start = time.process_time()
        for step in range(calls):
            runner.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        forwarder.stop()  # its last read: every line is in the W&B run
        elapsed_s = time.process_time() - start
        runner.close()
        tracker.finish(0)
        return elapsed_s

    def in_fresh_folder(measure: Callable[[Path], float]) -> Callable[[], float]:
        def run() -> float:
            with tempfile.TemporaryDirectory(prefix="labrunner-bench-wandb-") as folder:
                return measure(Path(folder))
        return run

    in_fresh_folder(raw)()  # wandb's service starts once per process: not in the figure
    # The fastest turn of each, not the median: wandb.log's own CPU time is bimodal (0.68 or
    # 1.05 cpu-s for 10,000 identical calls in one process, either way on either side), so the
    # median of a few turns depends on how the slow ones fell; the fastest turns compare the two
    # at the same mode of W&B. The medians are printed beside the table.
    raw_turns, labrunner_turns = alternate(in_fresh_folder(raw), in_fresh_folder(labrunner), repeats, pick=list)
    _report_turns("wandb.log", raw_turns)
    _report_turns("log_metrics", labrunner_turns)
    raw_s, labrunner_s = min(raw_turns), min(labrunner_turns)
    return Figure(f"log_metrics_{calls}", f"`runner.log_metrics` x {calls:,}, W&B offline (vs `wandb.log` x {calls:,}), CPU time, fastest turn",
                  "ratio", 1.1, labrunner_s, raw_s, unit="cpu-s")


def _report_turns(side: str, times: list[float]) -> None:
    print(f"  {side} turns: median {statistics.median(times):.3f}, fastest {min(times):.3f} "
          f"({', '.join(f'{t:.2f}' for t in times)})", file=sys.stderr, flush=True)


# --- the harness -----------------------------------------------------------------------------------

FIGURES = ("dry_run", "completed", "per_sub", "log_metrics")
GPU_ROW = ["CUDA loop logging its loss every step, GPU-bound (vs the loop without logging)", "-", "-", "-",
           "<= 1.03x", "on a GPU: benchmarks/gpu_logging.py (docs/performance.md)"]


def measure(only: set[str], sizes: Sizes, log: Callable[[str], None]) -> list[Figure]:
    figures: list[Figure] = []
    if "dry_run" in only:
        for n_subs in sizes.dry_run_subs:
            log(f"snakemake -n at {n_subs:,} subs...")
            figures.append(dry_run(n_subs, sizes.repeats if n_subs <= 1000 else max(1, sizes.repeats // 2)))
    if "completed" in only:
        log(f"no-op re-invocation, aggregation and validate at {sizes.completed_subs:,} completed subs...")
        figures += completed_project_figures(sizes.completed_subs, sizes.repeats, log)
    if "per_sub" in only:
        log(f"per-sub overhead at {sizes.overhead_subs} subs...")
        figures.append(per_sub_overhead(sizes.overhead_subs, max(1, sizes.repeats // 2)))
    if "log_metrics" in only:
        log(f"log_metrics x {sizes.log_calls:,} against wandb.log...")
        # wandb.log alone varies by +-10% between two identical runs: more turns than the others
        figures.append(log_metrics_vs_wandb(sizes.log_calls, 2 * sizes.repeats + 1))
    return figures


def table(figures: list[Figure], judged: bool) -> str:
    header = ["figure", "baseline", "labrunner", "ratio", "budget", "verdict"]
    rows = [figure.row(judged) for figure in figures] + [GPU_ROW]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |" for row in [header, *rows]]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def machine() -> str:
    return f"{platform.node()}: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat: checks the harness, judges nothing")
    parser.add_argument("--only", default=",".join(FIGURES), help=f"comma-separated subset of {', '.join(FIGURES)}")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    unknown = only - set(FIGURES)
    if unknown:
        parser.error(f"unknown figure {', '.join(sorted(unknown))}; choose from {', '.join(FIGURES)}")
    sizes = QUICK if args.quick else FULL
    started = time.monotonic()
    figures = measure(only, sizes, lambda line: print(line, file=sys.stderr, flush=True))
    judged = not args.quick
    print(f"labrunner performance budgets ({'quick smoke run, not judged' if args.quick else 'full run'}), "
          f"{time.strftime('%Y-%m-%d')}, {machine()}, {time.monotonic() - started:.0f} s")
    print(table(figures, judged))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "quick": args.quick, "figures": [
            {**asdict(figure), "measured": figure.measured, "within": figure.within} for figure in figures]}, indent=2) + "\n")
    return 0 if not judged or all(figure.within for figure in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
