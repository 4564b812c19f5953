"""Sweeps in the aggregate: one table row per combination, the best one named, and a plot.

A sweep (a sub with `grid:`, see `labrunner.grid`) runs as one sub per combination; here those
subs come back together. The best combination per criterion metric is found by the same
`evaluate_criterion` as any best-of-k choice, so it is presented as a selection among k
combinations with its interval widened for it, never as a single measurement.
matplotlib is imported only by the plot.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from labrunner import layout, verdicts
from labrunner.files import atomic_writer
from labrunner.plan import Criterion, Plan, SubSpec

__all__ = ["collect_sweeps", "sweep_figure", "sweep_plot_path", "write_sweep_plots"]

_MAX_METRICS = 4  # rows of panels when no criterion says which metrics matter


def sweep_plot_path(experiment_id: str, sweep_id: str, stub: bool = False) -> Path:
    """results/<exp>/sweeps/<sub>.png, relative to the project root (the rule's `sweeps` folder)."""
    return layout.experiment_results_dir(experiment_id, stub) / "sweeps" / f"{sweep_id}.png"


def collect_sweeps(plan: Plan, experiment_id: str, subs: Mapping[str, Any],
                   observations: Mapping[str, Sequence[verdicts.Observation]], stub: bool = False) -> dict[str, Any]:
    """results.yaml's `sweeps`: per swept sub, its combinations with their means, the best, and
    where its plot goes (named here, not when it is drawn, so that the same records always give
    the same results.yaml)."""
    experiment = plan.experiments[experiment_id]
    criteria = {metric: crit for metric, crit in experiment.success_criteria.items() if crit.compare is None}
    sweeps: dict[str, Any] = {}
    for sweep_id, specs in plan.sweeps(experiment_id).items():
        metrics = _sweep_metrics(specs, subs, criteria)
        sweeps[sweep_id] = {
            "params": list(specs[0].swept),
            "metrics": metrics,
            "combinations": [_combination(spec, subs[spec.sub_id], metrics) for spec in specs],
            "best": _best(specs, criteria, observations, plan.model.defaults.borderline_pct),
            "plot": sweep_plot_path(experiment_id, sweep_id, stub).as_posix(),
        }
    return sweeps


def _sweep_metrics(specs: Sequence[SubSpec], subs: Mapping[str, Any], criteria: Mapping[str, Criterion]) -> list[str]:
    """The criterion metrics the sweep reports; without any, the first numeric metrics it reports."""
    reported: dict[str, None] = {}
    for spec in specs:
        for run in _runs(subs[spec.sub_id]):
            for name, value in (run.get("metrics") or {}).items():
                if _is_number(value):
                    reported.setdefault(name, None)
    judged = [metric for metric in criteria if metric in reported]
    return judged or list(reported)[:_MAX_METRICS]


def _combination(spec: SubSpec, sub: Mapping[str, Any], metrics: Sequence[str]) -> dict[str, Any]:
    runs = [run for run in _runs(sub) if run.get("status", sub["status"]) == "completed"]
    means = {}
    for metric in metrics:
        values = [float(run["metrics"][metric]) for run in runs if _is_number((run.get("metrics") or {}).get(metric))]
        if values:
            means[metric] = statistics.fmean(values) if all(math.isfinite(v) for v in values) else float("nan")
    return {"sub": spec.sub_id, "params": dict(spec.swept), "status": sub["status"], "n_seeds": len(runs),
            "metrics": means}


def _best(specs: Sequence[SubSpec], criteria: Mapping[str, Criterion],
          observations: Mapping[str, Sequence[verdicts.Observation]], borderline_pct: float) -> dict[str, Any]:
    """Per criterion metric, the best combination as a best-of-k selection (see evaluate_criterion)."""
    ids = {spec.sub_id: spec for spec in specs}
    best = {}
    for metric, crit in criteria.items():
        inside = [obs for obs in observations.get(metric, ()) if obs.sub_id in ids]
        if not inside:
            continue
        verdict = verdicts.evaluate_criterion(metric, crit.resolved(from_sub=None), inside, borderline_pct=borderline_pct)
        if verdict.level in (verdicts.NOT_MEASURED, verdicts.INVALID) or verdict.source_sub is None:
            continue
        best[metric] = {"sub": verdict.source_sub, "params": dict(ids[verdict.source_sub].swept),
                        **{key: value for key, value in verdict.to_dict().items()
                           if key in ("value", "n_seeds", "ci95", "level", "confidence", "candidates", "sentence")}}
    return best


def _runs(sub: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(sub.get("seeds") or [sub])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- the plot -----------------------------------------------------------------------------------


def sweep_figure(sweep_id: str, sweep: Mapping[str, Any], subs: Mapping[str, Any],
                 criteria: Mapping[str, Mapping[str, Any]]) -> Any:
    """The metric against each swept parameter: a row of panels per metric, a column per parameter.

    In each panel one line per combination of the other swept parameters (its mean over seeds;
    the seeds as dots), the criterion's thresholds dashed, and the best combination ringed.
    Lines carry gid "series", so they can be told from threshold lines.
    """
    from matplotlib.figure import Figure

    params, metrics = sweep["params"], sweep["metrics"] or ["(no metric reported)"]
    figure = Figure(figsize=(4.2 * len(params), 3.2 * len(metrics)), layout="constrained")
    axes = figure.subplots(len(metrics), len(params), squeeze=False)
    for row, metric in enumerate(metrics):
        for column, param in enumerate(params):
            _panel(axes[row][column], metric, param, sweep, subs, criteria.get(metric) or {})
    figure.suptitle(f"sweep {sweep_id}")
    return figure


def _panel(axis: Any, metric: str, param: str, sweep: Mapping[str, Any], subs: Mapping[str, Any],
           crit: Mapping[str, Any]) -> None:
    combinations = sweep["combinations"]
    values = _distinct([combo["params"][param] for combo in combinations])
    numeric = all(_is_number(value) for value in values)
    position = {value: (float(value) if numeric else float(index)) for index, value in enumerate(values)}
    others = [name for name in sweep["params"] if name != param]
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for combo in combinations:
        label = ", ".join(f"{name}={combo['params'][name]}" for name in others) or "mean over seeds"
        groups.setdefault(label, []).append(combo)
    for index, (label, group) in enumerate(groups.items()):
        points = sorted(((position[combo["params"][param]], combo) for combo in group if metric in combo["metrics"]),
                        key=lambda point: point[0])
        xs = [x for x, _ in points]
        axis.plot(xs, [combo["metrics"][metric] for _, combo in points], marker="o", color=f"C{index}", label=label,
                  gid="series")
        for x, combo in points:
            seeds = [run["metrics"][metric] for run in _runs(subs[combo["sub"]])
                     if _is_number((run.get("metrics") or {}).get(metric))]
            axis.scatter([x] * len(seeds), seeds, color=f"C{index}", s=8, alpha=0.5, zorder=3)
    best = (sweep.get("best") or {}).get(metric)
    if best is not None:
        axis.scatter([position[best["params"][param]]], [best["value"]], s=160, facecolors="none",
                     edgecolors="black", zorder=4, label=f"best of {len(best['candidates']) or 1}")
    colors = {"target": "tab:green", "acceptable": "tab:orange", "failure": "tab:red"}
    for tier in ("target", "acceptable", "failure"):
        if crit.get(tier) is not None:
            axis.axhline(crit[tier], color=colors[tier], linestyle="--", linewidth=1, label=f"{tier} {crit[tier]:g}")
    if numeric and len(values) > 1 and min(values) > 0 and max(values) / min(values) >= 20:
        axis.set_xscale("log")
    if not numeric:
        axis.set_xticks(range(len(values)), [str(value) for value in values])
    axis.set_xlabel(param)
    axis.set_ylabel(metric)
    direction = crit.get("direction")
    axis.set_title(f"{metric} ({direction} is better)" if direction else metric, fontsize=10)
    axis.legend(fontsize=7, loc="best")


def _distinct(values: Sequence[Any]) -> list[Any]:
    seen: list[Any] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


def write_sweep_plots(results: Mapping[str, Any], folder: Path) -> list[Path]:
    """One PNG per sweep in `folder` (made even when there is none: it is the rule's output)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for sweep_id, sweep in (results.get("sweeps") or {}).items():
        path = folder / f"{sweep_id}.png"
        with atomic_writer(path) as handle:
            sweep_figure(sweep_id, sweep, results["subs"], results["criteria"]).savefig(handle, format="png", dpi=110)
        written.append(path)
    return written
