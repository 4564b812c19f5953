"""From per-sub records to per-experiment results: results.yaml, metric tables, plot, gates.

`collect_experiment` reads whatever records exist, so the same function serves the aggregate
rules (where every sub has completed) and `labrunner status` (where some have failed or not
run yet). pandas and matplotlib are imported only by the functions that write tables and plots.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labrunner import layout, verdicts
from labrunner.errors import RecordError
from labrunner.layout import RunPaths
from labrunner.plan import Criterion, Plan, SubSpec, resolved_direction
from labrunner.records import COMPLETED, FAILED, RUNNING, read_record
from labrunner.yamlio import load_yaml, write_yaml

__all__ = [
    "RunState", "collect_experiment", "collect_gates", "run_states", "write_experiment_outputs", "write_gates",
]

PENDING, SKIPPED, DAMAGED = "pending", "skipped", "damaged"


@dataclass(frozen=True)
class RunState:
    """What the records on disk say about one run (one sub, one seed)."""

    spec: SubSpec
    seed: int
    paths: RunPaths
    status: str  # completed | failed | running | pending | damaged
    record: dict[str, Any]  # the result record, the failure record, or {}


def _read_state(spec: SubSpec, seed: int, paths: RunPaths) -> RunState:
    try:
        if paths.result.exists():
            return RunState(spec, seed, paths, COMPLETED, read_record(paths.result))
        failure = read_record(paths.failure) if paths.failure.exists() else {}
    except RecordError as exc:
        return RunState(spec, seed, paths, DAMAGED, {"error": {"type": "RecordError", "message": str(exc)}})
    if failure:
        status = failure.get("status")
        if status == FAILED:
            return RunState(spec, seed, paths, FAILED, failure)
        if status == RUNNING:
            return RunState(spec, seed, paths, RUNNING, failure)
    return RunState(spec, seed, paths, PENDING, {})


def run_states(plan: Plan, experiment_id: str, stub: bool = False) -> list[RunState]:
    """One state per (sub, seed) of an experiment, in plan order; skipped subs are left out."""
    results_root = plan.root / layout.results_root(stub)
    states = []
    for spec in plan.subs(experiment_id):
        for seed in spec.seeds:
            paths = RunPaths(layout.run_dir(results_root, experiment_id, spec.sub_id, seed, spec.seeds))
            states.append(_read_state(spec, seed, paths))
    return states


def _sub_status(states: list[RunState]) -> str:
    statuses = {state.status for state in states}
    for status in (DAMAGED, FAILED, RUNNING, PENDING):
        if status in statuses:
            return status
    return COMPLETED


def _experiment_status(sub_statuses: Iterable[str]) -> str:
    statuses = set(sub_statuses)
    if statuses <= {COMPLETED, SKIPPED}:
        return verdicts.COMPLETED
    if statuses & {FAILED, DAMAGED}:
        return verdicts.FAILED
    return verdicts.PENDING


def _project_path(plan: Plan, path: Path) -> str:
    return os.path.relpath(path, plan.root)


def _run_entry(plan: Plan, state: RunState) -> dict[str, Any]:
    record = state.record
    entry: dict[str, Any] = {"seed": state.seed, "status": state.status}
    if state.status == COMPLETED:
        run_dir = state.paths.run_dir
        entry.update(
            finding=record.get("finding"),
            metrics=record.get("metrics") or {},
            artifacts=[_project_path(plan, run_dir / name) for name in record.get("artifacts") or []],
            duration_s=record.get("duration_s"),
            attempts=record.get("attempts"),
            backend=record.get("backend"),
            device=record.get("device"),
            wandb=record.get("wandb"),
        )
        if record.get("warnings"):
            entry["warnings"] = record["warnings"]
    elif state.status in (FAILED, DAMAGED):
        error = record.get("error") or {}
        entry["error"] = {key: error.get(key) for key in ("type", "message", "handler_line", "hint")}
        entry["attempts"] = record.get("attempts")
    if record.get("executor"):  # the job that made the record: SLURM job id and node, or local
        entry["executor"] = record["executor"]
    if record.get("modal_call_id"):
        entry["modal_call_id"] = record["modal_call_id"]
    failure_file = state.paths.failure
    last = _last_failure(failure_file) if state.status == COMPLETED else None
    if last:
        entry["last_failure"] = last
    return entry


def _last_failure(path: Path) -> dict[str, Any] | None:
    """A completed run's earlier failure, kept in failure.yaml (`status: resolved`)."""
    try:
        record = read_record(path) if path.exists() else {}
    except RecordError:
        return None
    last = record.get("last_failure") if record.get("status") == "resolved" else None
    if not last:
        return None
    error = last.get("error") or {}
    return {"type": error.get("type"), "message": error.get("message"), "at": last.get("ended_at") or last.get("started_at")}


def _mean_metrics(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-metric mean over the completed seeds of a sub (with sd and n when there are several)."""
    values: dict[str, list[float]] = {}
    for run in runs:
        for name, value in (run.get("metrics") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values.setdefault(name, []).append(float(value))
    means: dict[str, Any] = {}
    for name, series in values.items():
        finite = all(math.isfinite(v) for v in series)
        means[name] = statistics.fmean(series) if finite else next(v for v in series if not math.isfinite(v))
    return means


def _criterion_dict(crit: Criterion) -> dict[str, Any]:
    data = {"target": crit.target, "acceptable": crit.acceptable, "failure": crit.failure,
            "direction": resolved_direction(crit)}
    if crit.from_sub:
        data["from"] = crit.from_sub
    return data


def collect_experiment(plan: Plan, experiment_id: str, stub: bool = False,
                       states: list[RunState] | None = None) -> dict[str, Any]:
    """Everything results.yaml says about one experiment, from the records on disk."""
    experiment = plan.experiments[experiment_id]
    states = run_states(plan, experiment_id, stub) if states is None else states
    subs: dict[str, Any] = {}
    observations: dict[str, list[verdicts.Observation]] = {metric: [] for metric in experiment.success_criteria}
    for spec in plan.subs(experiment_id, include_skipped=True):
        if spec.skip_reason is not None:
            subs[spec.sub_id] = {"name": spec.name, "status": SKIPPED, "skip_reason": spec.skip_reason}
            continue
        sub_states = [state for state in states if state.spec.sub_id == spec.sub_id]
        runs = [_run_entry(plan, state) for state in sub_states]
        completed = [run for run in runs if run["status"] == COMPLETED]
        sub: dict[str, Any] = {"name": spec.name, "status": _sub_status(sub_states), "params": spec.params_for(stub)}
        if len(spec.seeds) == 1 and runs:
            sub.update({key: value for key, value in runs[0].items() if key != "status"})
        else:
            sub["metrics"] = _mean_metrics(completed)
            sub["seeds"] = runs
        subs[spec.sub_id] = sub
        for run in completed:
            for metric in observations:
                value = (run.get("metrics") or {}).get(metric)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    observations[metric].append(verdicts.Observation(spec.sub_id, run["seed"], float(value)))
    status = _experiment_status(sub["status"] for sub in subs.values())
    borderline_pct = plan.model.defaults.borderline_pct
    judged = [verdicts.evaluate_criterion(metric, crit.resolved(), observations[metric], borderline_pct=borderline_pct)
              for metric, crit in experiment.success_criteria.items()]
    counts = {key: sum(1 for sub in subs.values() if sub["status"] == key)
              for key in (COMPLETED, FAILED, RUNNING, PENDING, SKIPPED, DAMAGED)}
    result: dict[str, Any] = {
        "experiment": experiment_id,
        "name": experiment.name or experiment_id,
        "type": experiment.type,
        "phase": experiment.phase,
        "status": status,
        "stub": stub,
        "counts": {key: value for key, value in counts.items() if value or key in (COMPLETED, FAILED, PENDING, SKIPPED)},
        "dependencies": list(experiment.dependencies),
        "subs": subs,
        "criteria": {metric: _criterion_dict(crit) for metric, crit in experiment.success_criteria.items()},
        "verdicts": {verdict.metric: verdict.to_dict() for verdict in judged},
        "assessment": _assessment(status, judged),
    }
    if experiment.info:
        result["plan_notes"] = experiment.info
    return result


_CONFIDENCE_ORDER = ("low", "medium", "high")


def _assessment(status: str, judged: list[verdicts.Verdict]) -> dict[str, Any]:
    """Recommendation, borderline flags and overall confidence (the weakest verdict's)."""
    confidences = [v.confidence for v in judged if v.confidence]
    overall = min(confidences, key=_CONFIDENCE_ORDER.index) if confidences else None
    assessment: dict[str, Any] = {
        "borderline": [v.metric for v in judged if v.borderline],
        "confidence": overall,
    }
    if status == verdicts.COMPLETED:
        recommendation = verdicts.recommend(judged)
        assessment["recommendation"] = recommendation.decision
        assessment["reasons"] = list(recommendation.reasons)
    else:
        assessment["recommendation"] = None
        assessment["reasons"] = [f"experiment is {status}: no recommendation until every sub-experiment completes"]
    return assessment


def _table_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for sub_id, sub in results["subs"].items():
        if sub["status"] == SKIPPED:
            continue
        runs = sub.get("seeds") or [{"seed": sub.get("seed"), "status": sub["status"], "metrics": sub.get("metrics") or {}}]
        for run in runs:
            metrics = {name: _shown(value) for name, value in (run.get("metrics") or {}).items()}
            rows.append({"sub": sub_id, "seed": run.get("seed"), "status": run["status"], **metrics})
    return rows


def _shown(value: Any) -> Any:
    """A reported NaN or inf as text, so tables tell it apart from a metric a run did not report."""
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value


def metrics_frame(results: Mapping[str, Any]) -> Any:
    """One row per run (sub, seed), one column per metric; criterion metrics first."""
    import pandas as pd

    frame = pd.DataFrame(_table_rows(results))
    if frame.empty:
        return frame
    criteria = [m for m in results["criteria"] if m in frame.columns]
    others = [c for c in frame.columns if c not in ("sub", "seed", "status", *criteria)]
    return frame[["sub", "seed", "status", *criteria, *others]]


def metrics_markdown(results: Mapping[str, Any]) -> str:
    """The metric table as Markdown, with a per-sub mean table when subs ran several seeds."""
    import pandas as pd
    from tabulate import tabulate

    frame = metrics_frame(results)
    title = f"# Metrics: {results['name']}\n\n"
    if frame.empty:
        return title + "No sub-experiment has results yet.\n"
    shown = frame.astype(object).where(frame.notna(), None)  # a metric a run did not report: blank
    text = title + tabulate(shown, headers="keys", tablefmt="github", showindex=False, floatfmt=".4g", missingval="") + "\n"
    multi = frame.groupby("sub", sort=False).filter(lambda group: len(group) > 1)
    if not multi.empty:
        numeric = multi.drop(columns=["seed", "status"]).apply(pd.to_numeric, errors="coerce").assign(sub=multi["sub"]).groupby("sub", sort=False)
        summary = numeric.mean(numeric_only=True).round(6).astype(str) + " ± " + numeric.std(numeric_only=True).round(6).astype(str)
        summary.insert(0, "n", numeric.size())
        text += "\n## Mean ± sd over seeds\n\n" + tabulate(summary, headers="keys", tablefmt="github") + "\n"
    return text


def plot_criteria(results: Mapping[str, Any], path: Path) -> None:
    """One panel per criterion: each sub's value (mean and seeds), with the tier thresholds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    criteria = results["criteria"]
    panels = max(1, len(criteria))
    figure, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4), squeeze=False)
    colors = {"target": "tab:green", "acceptable": "tab:orange", "failure": "tab:red"}
    for axis, (metric, crit) in zip(axes[0], criteria.items() or [("no criteria", {})]):
        labels, means = [], []
        for position, (sub_id, sub) in enumerate(item for item in results["subs"].items() if item[1]["status"] != SKIPPED):
            runs = sub.get("seeds") or [sub]
            values = [run["metrics"][metric] for run in runs
                      if run.get("status", sub["status"]) == COMPLETED and metric in (run.get("metrics") or {})]
            labels.append(sub_id)
            finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
            means.append(statistics.fmean(finite) if finite else float("nan"))
            axis.scatter([position] * len(finite), finite, color="black", s=10, zorder=3)
        # the mean as a bar-width mark, not a bar from zero: differences of a point or two must show
        axis.scatter(range(len(labels)), means, marker="_", s=900, linewidths=2.5, color="tab:blue", zorder=2, label="mean")
        for tier in ("target", "acceptable", "failure"):
            if crit.get(tier) is not None:
                axis.axhline(crit[tier], color=colors[tier], linestyle="--", linewidth=1, label=f"{tier} {crit[tier]:g}")
        axis.set_xlim(-0.6, len(labels) - 0.4)
        axis.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        direction = crit.get("direction")
        axis.set_title(f"{metric} ({direction} is better)" if direction else metric, fontsize=10)
        if crit:
            axis.legend(fontsize=7, loc="best", markerscale=0.4)
    figure.suptitle(results["name"], fontsize=11)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=110)
    plt.close(figure)
    os.replace(tmp, path)


def write_experiment_outputs(plan: Plan, experiment_id: str, stub: bool, results_path: Path,
                             table_md: Path, table_csv: Path, plot_path: Path) -> dict[str, Any]:
    """The experiment aggregate: results.yaml, metrics.md, metrics.csv, criteria.png."""
    from labrunner.records import now_iso
    from labrunner.yamlio import atomic_write_text

    results = collect_experiment(plan, experiment_id, stub)
    results["generated_at"] = now_iso()
    frame = metrics_frame(results)
    atomic_write_text(Path(table_csv), frame.to_csv(index=False))
    atomic_write_text(Path(table_md), metrics_markdown(results))
    plot_criteria(results, Path(plot_path))
    results["plot"] = _project_path(plan, Path(plot_path).resolve())
    write_yaml(Path(results_path), results)
    return results


def experiment_outcome(results: Mapping[str, Any]) -> verdicts.ExperimentOutcome:
    failed = tuple(sub_id for sub_id, sub in results["subs"].items() if sub["status"] in (FAILED, DAMAGED))
    return verdicts.ExperimentOutcome(results["status"], results["assessment"].get("recommendation"), failed)


def collect_gates(plan: Plan, experiments: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Each gate's status and blockers, from the collected experiment results."""
    gates = {}
    for gate_id, gate in plan.gates.items():
        outcomes = {exp_id: experiment_outcome(experiments[exp_id]) if exp_id in experiments
                    else verdicts.ExperimentOutcome(verdicts.PENDING) for exp_id in gate.experiments}
        status = verdicts.gate_status(outcomes)
        gates[gate_id] = {"name": gate.name or gate_id, "experiments": list(gate.experiments), "unlocks": gate.unlocks,
                          "status": status.status, "blockers": list(status.blockers)}
    return gates


def load_results(paths: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """Experiment results.yaml files by experiment id."""
    loaded = {}
    for path in paths:
        data = load_yaml(Path(path), RecordError)
        if not isinstance(data, dict) or "experiment" not in data:
            raise RecordError.single(path, "experiment", "expected an experiment results file with an 'experiment' key")
        loaded[data["experiment"]] = data
    return loaded


def write_gates(plan: Plan, stub: bool, results_files: Iterable[Path], path: Path) -> dict[str, Any]:
    from labrunner.records import now_iso

    data = {"generated_at": now_iso(), "stub": stub, "gates": collect_gates(plan, load_results(results_files))}
    write_yaml(Path(path), data)
    return data
