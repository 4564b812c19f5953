"""GPU budget: a CUDA training loop that logs its loss tensor every step through
`runner.log_metrics` runs within 1.03x of the same loop without logging (issue 11).

Two loops, each timed without logging, with `runner.log_metrics({"loss": loss})` every step and
with `loss.item()` every step, alternately (the order rotates each round), median of --repeats:

- GPU-bound: an MLP of width 1024 (3 linear layers), batch 4096, 2,000 steps: the budgeted case,
  where a wait per step drains the GPU's queue;
- launch-bound: width 256, batch 256, 2,000 steps: the CPU is the bottleneck (not budgeted).

Then two checks on the GPU: the values in metrics.jsonl are the ones `.item()` reads, in step
order; and no log_metrics call makes a synchronising call (torch's CUDA sync debug mode, set to
raise). Needs only torch and labrunner (from this checkout when it is not installed): the runner
is built around a temporary run folder, without Snakemake.

    python benchmarks/gpu_logging.py --json gpu.json     # on a GPU machine
    python benchmarks/gpu_logging.py --device cpu        # smoke run of this script, small sizes

Without a CUDA GPU (and without --device cpu) it says so and exits 0. Exits 1 when the GPU-bound
ratio is over budget or a check fails.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BUDGET_RATIO = 1.03
VARIANTS = ("no logging", "log_metrics", ".item()")


@dataclass(frozen=True)
class Loop:
    name: str
    width: int
    batch: int
    steps: int
    budgeted: bool


@dataclass
class LoopResult:
    loop: Loop
    times_s: dict[str, list[float]] = field(default_factory=dict)

    def median_s(self, variant: str) -> float:
        return statistics.median(self.times_s[variant])

    def ratio(self, variant: str) -> float:
        return self.median_s(variant) / self.median_s("no logging")


def import_labrunner() -> Any:
    try:
        import labrunner.runner
    except ImportError:  # a bare checkout: use its sources
        sys.path.insert(0, str(REPO / "src"))
        import labrunner.runner
    return labrunner.runner


def make_runner(run_root: Path, name: str) -> Any:
    """An ExperimentRunner as a handler gets it, around a fresh run folder."""
    runner_module = import_labrunner()
    run_dir = run_root / name
    run_dir.mkdir(parents=True)
    context = runner_module.RunContext(
        experiment_id="bench", sub_id=name, params={}, seed=0, stub=False, run_dir=str(run_dir),
        project_root=str(run_root), handler_file="bench.py", handler_function="run", run_id=name)
    return runner_module.ExperimentRunner(context)


def build(torch: Any, loop: Loop, device: str) -> tuple[Any, Any, Any, Any]:
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Linear(loop.width, loop.width), nn.ReLU(), nn.Linear(loop.width, loop.width), nn.ReLU(),
                          nn.Linear(loop.width, loop.width)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    inputs = torch.randn(loop.batch, loop.width, device=device)
    targets = torch.randn(loop.batch, loop.width, device=device)
    return model, optimizer, inputs, targets


def train(torch: Any, parts: tuple[Any, Any, Any, Any], steps: int, log: Callable[[Any, int], None]) -> None:
    model, optimizer, inputs, targets = parts
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        optimizer.step()
        log(loss, step)


def timed_run(torch: Any, parts: tuple[Any, Any, Any, Any], steps: int, variant: str, run_root: Path,
              synchronize: Callable[[], None]) -> float:
    """Wall time of `steps` steps, the GPU's queue empty at both ends; log_metrics's final flush included."""
    runner = make_runner(run_root, f"run-{time.monotonic_ns()}") if variant == "log_metrics" else None
    def log(loss: Any, step: int) -> None:
        if variant == "log_metrics":
            runner.log_metrics({"loss": loss}, step=step)
        elif variant == ".item()":
            loss.item()

    synchronize()
    start = time.perf_counter()
    train(torch, parts, steps, log)
    if runner is not None:
        runner.flush()
    synchronize()
    elapsed_s = time.perf_counter() - start
    if runner is not None:
        runner.close()
    return elapsed_s


def measure(torch: Any, loop: Loop, device: str, repeats: int, run_root: Path) -> LoopResult:
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    parts = build(torch, loop, device)
    result = LoopResult(loop, {variant: [] for variant in VARIANTS})
    for variant in VARIANTS:  # warm-up: kernels chosen, allocator and pinned memory primed
        timed_run(torch, parts, min(50, loop.steps), variant, run_root, synchronize)
    for round_index in range(repeats):
        order = VARIANTS[round_index % 3:] + VARIANTS[:round_index % 3]  # no variant always first
        for variant in order:
            result.times_s[variant].append(timed_run(torch, parts, loop.steps, variant, run_root, synchronize))
    return result


def check_values(torch: Any, device: str, run_root: Path, steps: int = 200) -> dict[str, Any]:
    """The values written are the ones `.item()` reads, every step, in order."""
    runner = make_runner(run_root, "check-values")
    parts = build(torch, Loop("check", 256, 256, steps, False), device)
    kept: list[Any] = []

    def log(loss: Any, step: int) -> None:
        runner.log_metrics({"loss": loss}, step=step)
        kept.append(loss.detach().clone())

    train(torch, parts, steps, log)
    runner.close()
    lines = [json.loads(line) for line in (runner.run_dir / "metrics.jsonl").read_text().splitlines()]
    # the shortest decimal written reads back as the same float32 that .item() gives
    written = [(line["step"], float(torch.tensor(line["metrics"]["loss"], dtype=torch.float32))) for line in lines]
    same = written == [(step, value.item()) for step, value in enumerate(kept)]
    return {"lines": len(written), "steps": steps, "in_order_and_equal": same}


def check_no_sync(torch: Any, run_root: Path, steps: int = 100) -> dict[str, Any]:
    """No log_metrics call makes a synchronising CUDA call: torch raises on one in this mode."""
    runner = make_runner(run_root, "check-sync")
    parts = build(torch, Loop("check", 256, 256, steps, False), "cuda")
    error: str | None = None

    def log(loss: Any, step: int) -> None:
        torch.cuda.set_sync_debug_mode("error")
        try:
            runner.log_metrics({"loss": loss}, step=step)
        finally:
            torch.cuda.set_sync_debug_mode(0)

    try:
        train(torch, parts, steps, log)
    except RuntimeError as exc:
        error = str(exc).splitlines()[0]
    runner.close()
    return {"calls": steps, "synchronising_call": error}


def report(results: list[LoopResult], judged: bool) -> list[str]:
    lines = [f"{'loop':<40} {'no logging':>11} {'log_metrics':>12} {'.item()':>9} {'log_metrics':>12} {'.item()':>8}  budget",
             f"{'':<40} {'':>11} {'':>12} {'':>9} {'ratio':>12} {'ratio':>8}"]
    for result in results:
        loop = result.loop
        label = f"{loop.name} (w{loop.width} b{loop.batch} x{loop.steps})"
        if not loop.budgeted:
            verdict = "(not budgeted)"
        elif not judged:
            verdict = "(not judged off a GPU)"
        else:
            verdict = f"<= {BUDGET_RATIO}x " + ("within" if result.ratio("log_metrics") <= BUDGET_RATIO else "OVER")
        lines.append(f"{label:<40} {result.median_s('no logging'):>10.3f}s {result.median_s('log_metrics'):>11.3f}s "
                     f"{result.median_s('.item()'):>8.3f}s {result.ratio('log_metrics'):>11.3f}x "
                     f"{result.ratio('.item()'):>7.3f}x  {verdict}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cpu: a smoke run of this script (small sizes unless given), not a measurement")
    parser.add_argument("--steps", type=int, help="steps per timed run (default 2000; 40 with --device cpu)")
    parser.add_argument("--repeats", type=int, help="timed runs per variant (default 5; 1 with --device cpu)")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("torch is not installed here: no GPU figure (the GPU figure is still owed)")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"No CUDA GPU here (torch {torch.__version__}): nothing measured; the GPU figure is still owed. "
              "Run this script on a GPU machine, or pass --device cpu for a smoke run.")
        return 0
    on_gpu = args.device == "cuda"
    steps = args.steps or (2000 if on_gpu else 40)
    repeats = args.repeats or (5 if on_gpu else 1)
    loops = [Loop("GPU-bound", 1024, 4096, steps, True), Loop("launch-bound", 256, 256, steps, False)]
    if not on_gpu:
        loops = [Loop("GPU-bound (cpu smoke)", 64, 64, steps, True), Loop("launch-bound (cpu smoke)", 32, 32, steps, False)]
    card = torch.cuda.get_device_name() if on_gpu else platform.processor() or platform.machine()
    print(f"device: {card}; torch {torch.__version__}, CUDA {torch.version.cuda}; {platform.node()}")
    with tempfile.TemporaryDirectory(prefix="labrunner-gpu-bench-") as tmp:
        run_root = Path(tmp)
        results = [measure(torch, loop, args.device, repeats, run_root) for loop in loops]
        checks = {"values": check_values(torch, args.device, run_root)}
        if on_gpu:
            checks["no_sync"] = check_no_sync(torch, run_root)
    print("\n".join(report(results, judged=on_gpu)))
    values = checks["values"]
    print(f"check: {values['lines']} of {values['steps']} values in metrics.jsonl, in step order and equal to "
          f".item(): {'yes' if values['in_order_and_equal'] else 'NO'}")
    if on_gpu:
        sync_error = checks["no_sync"]["synchronising_call"]
        print(f"check: {checks['no_sync']['calls']} log_metrics calls under torch.cuda.set_sync_debug_mode('error'): "
              + ("no synchronising call" if sync_error is None else f"a SYNCHRONISING CALL: {sync_error}"))
    over = on_gpu and any(r.loop.budgeted and r.ratio("log_metrics") > BUDGET_RATIO for r in results)
    failed = not values["in_order_and_equal"] or (on_gpu and checks["no_sync"]["synchronising_call"] is not None)
    if args.json:
        args.json.write_text(json.dumps({
            "device": card, "torch": torch.__version__, "cuda": torch.version.cuda, "host": platform.node(),
            "budget_ratio": BUDGET_RATIO, "repeats": repeats,
            "loops": [{**asdict(r.loop), "times_s": r.times_s,
                       "median_s": {variant: r.median_s(variant) for variant in VARIANTS},
                       "ratio": {variant: r.ratio(variant) for variant in VARIANTS[1:]}} for r in results],
            "checks": checks, "within_budget": not over, "checks_passed": not failed,
        }, indent=2) + "\n")
    return 1 if over or failed else 0


if __name__ == "__main__":
    sys.exit(main())
