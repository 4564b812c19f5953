"""From per-sub records to per-experiment results: results.yaml, metric tables, plot, gates.

`collect_experiment` reads whatever records exist, so the same function serves the aggregate
rules (where every sub has completed) and `labrunner status` (where some have failed or not
run yet). pandas and matplotlib are imported only by the functions that write tables and plots.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import math
import os
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labrunner import compute, verdicts
from labrunner.curves import write_curve_plots
from labrunner.errors import RecordError
from labrunner.files import atomic_write_bytes, atomic_write_text, atomic_writer
from labrunner.layout import RunPaths
from labrunner.plan import Criterion, Plan, resolved_direction
from labrunner.report import gather_artifacts
from labrunner.records import read_record
from labrunner.state import (
    ExperimentStatus, RunState, RunStatus, experiment_status, previous_result, record_changes, run_states, sub_status,
)
from labrunner.sweeps import collect_sweeps, write_sweep_plots
from labrunner.wording import SIGNIFICANT_DIGITS
from labrunner.yamlio import load_yaml_cached, write_yaml

__all__ = [
    "ProjectView", "collect_experiment", "collect_gates", "collect_project", "hold_reason", "write_experiment_outputs",
    "write_gates",
]

SKIPPED = RunStatus.SKIPPED.value


def _project_path(plan: Plan, path: Path) -> str:
    return os.path.relpath(path, plan.root)


def _error(record: Mapping[str, Any]) -> dict[str, Any]:
    error = record.get("error") or {}
    return {key: error.get(key) for key in ("type", "message", "handler_line", "hint")}


def _run_entry(plan: Plan, state: RunState, held_by: str | None) -> dict[str, Any]:
    """What results.yaml says about one run. Only a current result carries `metrics`: a stale
    one, or the last good result of a run whose latest attempt failed, is under `earlier`."""
    record = state.record
    status = RunStatus.HELD if held_by and state.status == RunStatus.PENDING else state.status
    entry: dict[str, Any] = {"seed": state.seed, "status": status.value}
    if status == RunStatus.COMPLETED:
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
            run_id=record.get("run_id"),
            ended_at=record.get("ended_at"),
        )
        if record.get("warnings"):
            entry["warnings"] = record["warnings"]
        last = _last_failure(state.paths.failure)
        if last:
            entry["last_failure"] = last
        entry.update(_provenance(plan, state))
        previous = _previous(state.paths, record)
        if previous:
            entry["previous"] = previous
    elif status == RunStatus.STALE:
        entry["stale"] = list(state.stale)
    elif status in (RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.DAMAGED):
        entry["error"] = _error(record)
        entry["attempts"] = record.get("attempts")
        entry["ended_at"] = record.get("ended_at") or record.get("started_at")
        entry["record_file"] = _project_path(plan, state.paths.failure)
        for key in ("duration_s", "device"):
            if record.get(key) is not None:
                entry[key] = record[key]
        entry.update(_provenance(plan, state))
    elif status == RunStatus.RUNNING:
        entry["running"] = state.holder.describe() if state.holder else "an attempt is running"
    elif status == RunStatus.HELD:
        entry["held_by"] = held_by
    if state.earlier:
        entry["earlier"] = state.earlier
    if record.get("executor"):  # the job that made the record: SLURM job id and node, or local
        entry["executor"] = record["executor"]
    if record.get("modal_call_id"):
        entry["modal_call_id"] = record["modal_call_id"]
    return entry


def _provenance(plan: Plan, state: RunState) -> dict[str, Any]:
    """Where a run's numbers come from (labrunner.provenance) and what it cost (labrunner.compute,
    priced with the plan's table as it is now); only what the record holds."""
    record = state.record
    entry: dict[str, Any] = {}
    if state.status == RunStatus.COMPLETED:
        entry["result_file"] = _project_path(plan, state.paths.result)
    for key in ("git", "environment"):
        if record.get(key):
            entry[key] = record[key]
    if record.get("compute"):
        entry["compute"] = compute.estimate(record["compute"], record.get("backend"),
                                            plan.model.defaults.gpu_price_per_hour)
    return entry


def _previous(paths: RunPaths, record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The run's result before this one, with what changed in between (run-to-run changes)."""
    before = previous_result(paths, record.get("run_id"))
    if before is None:
        return None
    return {"run_id": before.get("run_id"), "ended_at": before.get("ended_at"),
            "metrics": dict(before.get("metrics") or {}), "changes": list(record_changes(before, record))}


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
    if crit.value_range is not None:
        data["range"] = list(crit.value_range)
    if crit.compare is not None:
        data.update(compare={"treatment": crit.compare.treatment, "baseline": crit.compare.baseline},
                    metric=crit.metric, paired_by=crit.paired_by)
    return data


def _measured_metric(name: str, crit: Criterion) -> str:
    """The metric a criterion reads from the subs: its own name, or a comparison's `metric`."""
    return crit.metric if crit.compare is not None and crit.metric else name


def judge_criteria(plan: Plan, experiment_id: str, observations: Mapping[str, list[verdicts.Observation]],
                   subs: Mapping[str, Any]) -> list[verdicts.Verdict]:
    """One verdict per criterion: comparisons on their pair of subs; `from: <swept sub>` picks the
    best of that sweep's combinations (a selection, like a criterion without from:)."""
    experiment = plan.experiments[experiment_id]
    borderline_pct = plan.model.defaults.borderline_pct
    sweeps = plan.sweeps(experiment_id)
    reported = {sub_id: sorted({name for run in (sub.get("seeds") or [sub]) for name in (run.get("metrics") or {})})
                for sub_id, sub in subs.items()}
    judged = []
    for name, crit in experiment.success_criteria.items():
        values = observations[_measured_metric(name, crit)]
        if crit.compare is not None:
            judged.append(verdicts.evaluate_comparison(name, crit.resolved(), values, borderline_pct=borderline_pct,
                                                       reported=reported))
            continue
        if crit.from_sub in sweeps:
            combinations = {spec.sub_id for spec in sweeps[crit.from_sub]}
            values = [obs for obs in values if obs.sub_id in combinations]
            crit = crit.resolved(from_sub=None)
        judged.append(verdicts.evaluate_criterion(name, crit.resolved(), values, borderline_pct=borderline_pct))
    return judged




def collect_experiment(plan: Plan, experiment_id: str, stub: bool = False, states: list[RunState] | None = None,
                       held_by: str | None = None, gates_ignored: list[str] | None = None) -> dict[str, Any]:
    """Everything results.yaml says about one experiment, from the records on disk as they are
    now. `held_by` says why the runs without a result do not run (a dependency or a gate)."""
    experiment = plan.experiments[experiment_id]
    states = run_states(plan, experiment_id, stub) if states is None else states
    subs: dict[str, Any] = {}
    observations: dict[str, list[verdicts.Observation]] = {
        _measured_metric(name, crit): [] for name, crit in experiment.success_criteria.items()}
    for spec in plan.subs(experiment_id, include_skipped=True):
        if spec.skip_reason is not None:
            subs[spec.sub_id] = {"name": spec.name, "status": SKIPPED, "skip_reason": spec.skip_reason}
            continue
        sub_states = [state for state in states if state.spec.sub_id == spec.sub_id]
        runs = [_run_entry(plan, state, held_by) for state in sub_states]
        completed = [run for run in runs if run["status"] == RunStatus.COMPLETED]
        status = sub_status(RunStatus(run["status"]) for run in runs)
        sub: dict[str, Any] = {"name": spec.name, "status": status.value, "params": spec.params_for(stub)}
        if len(spec.seeds) == 1 and runs:
            sub.update({key: value for key, value in runs[0].items() if key != "status"})
        else:
            sub["metrics"] = _mean_metrics(completed)
            sub["seeds"] = runs
        subs[spec.sub_id] = sub
        for run in completed:  # only current results are judged
            for metric in observations:
                value = (run.get("metrics") or {}).get(metric)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    observations[metric].append(verdicts.Observation(spec.sub_id, run["seed"], float(value)))
    status = experiment_status(RunStatus(sub["status"]) for sub in subs.values())
    judged = judge_criteria(plan, experiment_id, observations, subs)
    counts = {key.value: sum(1 for sub in subs.values() if sub["status"] == key) for key in RunStatus}
    result: dict[str, Any] = {
        "experiment": experiment_id,
        "name": experiment.name or experiment_id,
        "type": experiment.type,
        "phase": experiment.phase,
        "status": status.value,
        "stub": stub,
        "counts": {key: value for key, value in counts.items() if value or key in ("completed", "failed", "pending", "skipped")},
        "dependencies": list(experiment.dependencies),
        "requires": list(experiment.requires),
        "subs": subs,
        "criteria": {metric: _criterion_dict(crit) for metric, crit in experiment.success_criteria.items()},
        "verdicts": {verdict.metric: verdict.to_dict() for verdict in judged},
        "assessment": _assessment(status, judged, held_by),
    }
    if held_by and status == ExperimentStatus.HELD:
        result["held_by"] = held_by
    if gates_ignored:
        result["gates_ignored"] = gates_ignored
    result["compute"] = compute.total(run["compute"] for sub in subs.values() for run in (sub.get("seeds") or [sub])
                                      if run.get("compute"))
    sweeps = collect_sweeps(plan, experiment_id, subs, observations, stub)
    if sweeps:
        result["sweeps"] = sweeps
    if experiment.info:
        result["plan_notes"] = experiment.info
    return result


@dataclass(frozen=True)
class ProjectView:
    """Every active experiment's results and every gate, as the records say now."""

    experiments: dict[str, dict[str, Any]]
    gates: dict[str, dict[str, Any]]


def _upstream_order(plan: Plan, wanted: Iterable[str]) -> list[str]:
    """The wanted experiments and everything they wait for (dependencies, the experiments of the
    gates they require), each after what it waits for. The plan has no cycles (validated)."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(exp_id: str) -> None:
        if exp_id in seen or exp_id not in plan.experiments or plan.experiments[exp_id].archived:
            return
        seen.add(exp_id)
        experiment = plan.experiments[exp_id]
        for upstream in [*experiment.dependencies,
                         *(e for g in experiment.requires if g in plan.gates for e in plan.gates[g].experiments)]:
            visit(upstream)
        order.append(exp_id)

    for exp_id in wanted:
        visit(exp_id)
    return order


def collect_project(plan: Plan, stub: bool = False, ignore_gates: bool = False,
                    only: Iterable[str] | None = None) -> ProjectView:
    """The experiments (all active ones, or `only` these and what they wait for) and the gates,
    as the records say now. An experiment whose dependency has not completed, or whose required
    gate has not passed, has its runs without a result reported as held, with the reason."""
    wanted = list(only) if only is not None else plan.active_experiments
    experiments: dict[str, dict[str, Any]] = {}
    gates: dict[str, dict[str, Any]] = {}
    for exp_id in _upstream_order(plan, wanted):
        held_by, ignored = _requirements(plan, exp_id, experiments, gates, ignore_gates)
        experiments[exp_id] = collect_experiment(plan, exp_id, stub, held_by=held_by, gates_ignored=ignored)
    for gate_id in plan.gates:
        if gate_id not in gates and all(e in experiments for e in plan.gates[gate_id].experiments):
            gates[gate_id] = _gate(plan, gate_id, experiments)
    return ProjectView(experiments, gates)


def _requirements(plan: Plan, exp_id: str, experiments: Mapping[str, Mapping[str, Any]],
                  gates: dict[str, dict[str, Any]], ignore_gates: bool) -> tuple[str | None, list[str]]:
    """(why the experiment's runs are held, or None; the gates ignored for this run)."""
    experiment = plan.experiments[exp_id]
    reasons, ignored = [], []
    for dep in experiment.dependencies:
        upstream = experiments.get(dep)
        if upstream is not None and upstream["status"] != ExperimentStatus.COMPLETED:
            reasons.append(f"waits for {dep} ({_why_not_done(upstream)})")
    for gate_id in experiment.requires:
        if gate_id not in gates:
            gates[gate_id] = _gate(plan, gate_id, experiments)
        gate = gates[gate_id]
        if gate["status"] == verdicts.GATE_PASSED:
            continue
        blockers = "; ".join(gate.get("blockers") or []) or gate["status"]
        if ignore_gates:
            ignored.append(f"{gate_id} is {gate['status']} ({blockers}); this run ignores it (ignore_gates=true)")
        else:
            reasons.append(f"held by {gate_id} ({gate['status']}: {blockers})")
    return ("; ".join(reasons) or None), ignored


def hold_reason(plan: Plan, experiment_id: str, stub: bool = False, ignore_gates: bool = False) -> str | None:
    """Why the runs of an experiment must not start now (a dependency that has not completed, a
    required gate that has not passed), from the records as they are now; None when they may."""
    view = collect_project(plan, stub, ignore_gates, only=[experiment_id])
    held_by, _ = _requirements(plan, experiment_id, view.experiments, dict(view.gates), ignore_gates)
    return held_by


def _why_not_done(results: Mapping[str, Any]) -> str:
    status = results["status"]
    if status == ExperimentStatus.HELD and results.get("held_by"):
        return f"held: {results['held_by']}"
    counts = results.get("counts") or {}
    parts = [f"{counts[key]} {key}" for key in ("failed", "interrupted", "damaged", "running", "stale", "pending", "held")
             if counts.get(key)]
    return f"{status}: " + ", ".join(parts) if parts else status


_CONFIDENCE_ORDER = ("low", "medium", "high")


def _assessment(status: str, judged: list[verdicts.Verdict], held_by: str | None = None) -> dict[str, Any]:
    """Recommendation, borderline flags and overall confidence (the weakest verdict's)."""
    confidences = [v.confidence for v in judged if v.confidence]
    overall = min(confidences, key=_CONFIDENCE_ORDER.index) if confidences else None
    assessment: dict[str, Any] = {
        "borderline": [v.metric for v in judged if v.borderline],
        "confidence": overall,
    }
    if status == ExperimentStatus.COMPLETED:
        recommendation = verdicts.recommend(judged)
        assessment["recommendation"] = recommendation.decision
        assessment["reasons"] = list(recommendation.reasons)
    else:
        assessment["recommendation"] = None
        why = f" ({held_by})" if held_by and status == ExperimentStatus.HELD else ""
        assessment["reasons"] = [f"experiment is {status}{why}: no recommendation until every sub-experiment "
                                 "has a current result"]
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
    """One row per run (sub, seed), one column per metric; criterion metrics first (a DataFrame)."""
    import pandas as pd

    frame = pd.DataFrame(_table_rows(results))
    if frame.empty:
        return frame
    return frame[_column_order(results, list(frame.columns))]


def _column_order(results: Mapping[str, Any], columns: list[str]) -> list[str]:
    criteria = [m for m in results["criteria"] if m in columns]
    return ["sub", "seed", "status", *criteria, *(c for c in columns if c not in ("sub", "seed", "status", *criteria))]


Table = tuple[list[str], list[list[Any]]]  # column names; rows of values as a DataFrame of the rows holds them


def metrics_table(results: Mapping[str, Any]) -> Table | None:
    """The table of metrics_frame without pandas (whose import costs half a second in every
    aggregate job): each column's values as pandas would hold them (an int column with a blank
    becomes floats, as it does there), None for a blank. None where a column holds something
    whose conversion is not mirrored here (a list, a NaN, an int past 64 bits): then use pandas."""
    rows = _table_rows(results)
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    columns = _column_order(results, list(seen)) if rows else []
    converted = [_as_pandas_holds([row.get(column) for row in rows]) for column in columns]
    if any(values is None for values in converted):
        return None
    return columns, [list(row) for row in zip(*converted)] if columns else []


def _as_pandas_holds(values: list[Any]) -> list[Any] | None:
    """One column's values as a DataFrame built from dicts holds them (None: not mirrored here)."""
    present = [value for value in values if value is not None]
    if not all(type(value) in (bool, int, float, str) for value in present):
        return None
    if any(type(value) is float and not math.isfinite(value) for value in present):
        return None
    if any(type(value) is int and not -2**63 <= value < 2**63 for value in present):
        return None
    numbers = [value for value in present if type(value) in (int, float)]
    if present and len(numbers) == len(present) and (len(present) < len(values) or float in map(type, numbers)):
        return [None if value is None else float(value) for value in values]  # int64 with a blank: float64
    return values


def _csv_cell(value: Any) -> str:
    return "" if value is None else repr(value) if type(value) is float else str(value)


def metrics_csv(results: Mapping[str, Any]) -> str:
    """metrics.csv: what `metrics_frame(results).to_csv(index=False)` writes, without pandas where it can."""
    table = metrics_table(results)
    if table is None:
        return str(metrics_frame(results).to_csv(index=False))
    columns, rows = table
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_csv_cell(value) for value in row] for row in rows)
    return buffer.getvalue() if columns else "\n"


def metrics_markdown(results: Mapping[str, Any]) -> str:
    """The metric table as Markdown, with a per-sub mean table when subs ran several seeds (that
    summary, and a table metrics_table cannot mirror, with pandas)."""
    from tabulate import tabulate

    table = metrics_table(results)
    title = f"# Metrics: {results['name']}\n\n"
    if table is None:
        frame = metrics_frame(results)
        columns, rows = list(frame.columns), frame.astype(object).where(frame.notna(), None).values.tolist()
    else:
        columns, rows = table
    if not rows:
        return title + "No sub-experiment has results yet.\n"
    digits = f".{SIGNIFICANT_DIGITS}g"
    text = title + tabulate(rows, headers=columns, tablefmt="github", floatfmt=digits, missingval="") + "\n"
    subs = [row[0] for row in rows]
    if len(set(subs)) < len(subs):  # some sub ran several seeds
        text += _seed_summary(metrics_frame(results), digits)
    return text


def _seed_summary(frame: Any, digits: str) -> str:
    import pandas as pd
    from tabulate import tabulate

    multi = frame.groupby("sub", sort=False).filter(lambda group: len(group) > 1)
    numeric = multi.drop(columns=["seed", "status"]).apply(pd.to_numeric, errors="coerce").assign(sub=multi["sub"]).groupby("sub", sort=False)
    summary = (numeric.mean(numeric_only=True).map(lambda v: f"{v:{digits}}") + " ± "
               + numeric.std(numeric_only=True).map(lambda v: f"{v:{digits}}"))
    summary.insert(0, "n", numeric.size())
    return "\n## Mean ± sd over seeds\n\n" + tabulate(summary, headers="keys", tablefmt="github") + "\n"


CRITERIA_CACHE_DIR = ".criteria-cache"  # beside criteria.png; no id names a hidden folder
_CRITERIA_DRAWING_VERSION = "1"  # bump when plot_criteria draws differently


def write_criteria_plot(results: Mapping[str, Any], path: Path) -> None:
    """criteria.png, drawn only when what it shows changed.

    Snakemake deletes the plot before the aggregate job runs, and the job runs after any edit of
    the plan (a comment included) or any sub's new record; drawing it takes a third of a second
    per experiment. So the drawing is kept in `.criteria-cache/` beside it, named by what it shows
    (see _criteria_key), and copied into place (a copy, not a link: the plot gets the time it is
    written, as Snakemake expects of an output); only a changed picture is drawn again."""
    cache = path.parent / CRITERIA_CACHE_DIR
    drawn = cache / f"{path.stem}-{_criteria_key(results)}.png"
    if not drawn.exists():
        cache.mkdir(parents=True, exist_ok=True)
        plot_criteria(results, drawn)
        for stale in cache.iterdir():  # drawings of results that are no longer current
            if stale.name != drawn.name:
                stale.unlink(missing_ok=True)
    atomic_write_bytes(path, drawn.read_bytes())


def _criteria_key(results: Mapping[str, Any]) -> str:
    """What plot_criteria shows: the title, the criteria, each run's status and criterion
    metrics, a comparison's verdict; and the matplotlib that draws it."""
    criteria = results["criteria"]
    subs = [(sub_id, sub["status"], [(run.get("status", sub["status"]),
                                      {name: value for name, value in (run.get("metrics") or {}).items()
                                       if name in criteria})
                                     for run in sub.get("seeds") or [sub]])
            for sub_id, sub in results["subs"].items()]
    compared = {metric: (results.get("verdicts") or {}).get(metric) for metric, crit in criteria.items()
                if crit.get("compare")}
    text = json.dumps([_CRITERIA_DRAWING_VERSION, _matplotlib_version(), results["name"], criteria, compared, subs],
                      default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@functools.cache
def _matplotlib_version() -> str:
    """Asked once per process: reading a package's metadata takes a millisecond each time."""
    from importlib.metadata import version

    return version("matplotlib")


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
        if crit.get("compare"):
            draw_comparison(axis, metric, crit, (results.get("verdicts") or {}).get(metric) or {})
            continue
        labels, means = [], []
        for position, (sub_id, sub) in enumerate(item for item in results["subs"].items() if item[1]["status"] != SKIPPED):
            runs = sub.get("seeds") or [sub]
            values = [run["metrics"][metric] for run in runs
                      if run.get("status", sub["status"]) == RunStatus.COMPLETED and metric in (run.get("metrics") or {})]
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
    with atomic_writer(path) as handle:
        figure.savefig(handle, format="png", dpi=110)
    plt.close(figure)


def draw_comparison(axis: Any, name: str, crit: Mapping[str, Any], verdict: Mapping[str, Any]) -> None:
    """A comparison criterion's panel: each seed's difference (or each side's values, unpaired),
    the mean difference with its 95% interval, zero and the tiers."""
    detail = verdict.get("comparison") or {}
    rows = detail.get("rows") or []
    treatment, baseline = crit["compare"]["treatment"], crit["compare"]["baseline"]
    if detail.get("method") == "paired t":
        differences = [row["difference"] for row in rows if row["difference"] is not None]
        axis.scatter([0.0] * len(differences), differences, color="black", s=12, zorder=3, label="per seed")
    else:
        for x, side in ((-0.15, "treatment"), (0.15, "baseline")):
            values = [row[side] - detail["baseline_mean"] for row in rows if row[side] is not None]
            axis.scatter([x] * len(values), values, s=12, zorder=3, label=f"{side} seeds − baseline mean")
    if verdict.get("value") is not None:
        ci = verdict.get("ci95")
        error = [[verdict["value"] - ci[0]], [ci[1] - verdict["value"]]] if ci else None
        axis.errorbar([0.0], [verdict["value"]], yerr=error, fmt="_", markersize=30, capsize=8, color="tab:blue",
                      zorder=2, label="mean, 95% CI" if ci else "mean")
    axis.axhline(0.0, color="grey", linewidth=0.8)
    colors = {"target": "tab:green", "acceptable": "tab:orange", "failure": "tab:red"}
    for tier in ("target", "acceptable", "failure"):
        if crit.get(tier) is not None:
            axis.axhline(crit[tier], color=colors[tier], linestyle="--", linewidth=1, label=f"{tier} {crit[tier]:g}")
    axis.set_xlim(-0.6, 0.6)
    axis.set_xticks([0.0], [f"{treatment} − {baseline}"])
    axis.set_title(f"{name}: {crit.get('metric')} difference ({crit.get('direction')} is better)", fontsize=10)
    axis.legend(fontsize=7, loc="best", markerscale=0.6)


def write_experiment_outputs(plan: Plan, experiment_id: str, stub: bool, results_path: Path,
                             table_md: Path, table_csv: Path, plot_path: Path, ignore_gates: bool = False,
                             sweeps_dir: Path | None = None, curves_dir: Path | None = None,
                             report_dir: Path | None = None) -> dict[str, Any]:
    """The experiment aggregate: results.yaml, metrics.md, metrics.csv, criteria.png, sweeps/<sub>.png,
    curves/<sub>.png, and report/ (the artifacts a report page can show)."""
    results = collect_project(plan, stub, ignore_gates, only=[experiment_id]).experiments[experiment_id]
    write_experiment_files(plan, results, results_path, table_md, table_csv, plot_path, sweeps_dir, curves_dir,
                           report_dir)
    return results


def write_experiment_files(plan: Plan, results: dict[str, Any], results_path: Path, table_md: Path, table_csv: Path,
                           plot_path: Path, sweeps_dir: Path | None = None, curves_dir: Path | None = None,
                           report_dir: Path | None = None) -> None:
    from labrunner.records import now_iso

    previous = _previous_results(Path(results_path))
    results["generated_at"] = now_iso()
    atomic_write_text(Path(table_csv), metrics_csv(results))
    atomic_write_text(Path(table_md), metrics_markdown(results))
    write_criteria_plot(results, Path(plot_path))
    results["plot"] = _project_path(plan, Path(plot_path).resolve())
    if sweeps_dir is not None:
        write_sweep_plots(results, Path(sweeps_dir))
    if curves_dir is not None:  # named as drawn: which subs logged steps is known only from their metrics.jsonl
        results["curves"] = write_curve_plots(results, Path(curves_dir), plan.root)
    if report_dir is not None:
        gather_artifacts(results, Path(report_dir), plan.root)
    if previous is not None and {**previous, "generated_at": None} == {**results, "generated_at": None}:
        # the same results as before (a plan comment, a rerun that changed nothing): the time they
        # were generated stands, and the file, which reads as exactly these results, stays as it
        # is; so do the FINDINGS made from it and their HTML
        results["generated_at"] = previous["generated_at"]
        return
    write_yaml(Path(results_path), results)


def _previous_results(path: Path) -> dict[str, Any] | None:
    """The results.yaml this aggregate replaces, if any and readable."""
    try:
        data = load_yaml_cached(path, RecordError) if path.exists() else None
    except RecordError:
        return None
    return data if isinstance(data, dict) and data.get("generated_at") else None


def experiment_outcome(results: Mapping[str, Any]) -> verdicts.ExperimentOutcome:
    failed = tuple(sub_id for sub_id, sub in results["subs"].items()
                   if sub["status"] in (RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.DAMAGED))
    why = None
    if results["status"] in (ExperimentStatus.PENDING, ExperimentStatus.HELD):
        why = results.get("held_by") or _why_not_done(results)
    return verdicts.ExperimentOutcome(results["status"], results["assessment"].get("recommendation"), failed, why)


def _gate(plan: Plan, gate_id: str, experiments: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One gate: its computed status from the experiments now, a person's recorded decision, and
    the status that acts (the decision's where there is one), with any disagreement flagged."""
    gate = plan.gates[gate_id]
    outcomes = {exp_id: experiment_outcome(experiments[exp_id]) if exp_id in experiments
                else verdicts.ExperimentOutcome(verdicts.PENDING) for exp_id in gate.experiments}
    computed = verdicts.gate_status(outcomes)
    entry: dict[str, Any] = {"name": gate.name or gate_id, "experiments": list(gate.experiments), "unlocks": gate.unlocks,
                             "status": computed.status, "computed_status": computed.status,
                             "blockers": list(computed.blockers)}
    decision = gate.decision
    if decision is not None:
        entry["decision"] = decision.model_dump(exclude_none=True)
        entry["status"] = verdicts.GATE_PASSED if decision.verdict == "proceed" else verdicts.GATE_FAILED
        who = f" by {decision.by}" if decision.by else ""
        if decision.verdict == "proceed" and computed.status != verdicts.GATE_PASSED:
            entry["disagreement"] = (f"decided proceed{who}, but the computed status is {computed.status}"
                                     + (f": {'; '.join(computed.blockers)}" if computed.blockers else ""))
        elif decision.verdict != "proceed" and computed.status == verdicts.GATE_PASSED:
            entry["disagreement"] = f"decided {decision.verdict}{who}, but every experiment of the gate passes"
    return entry


def collect_gates(plan: Plan, experiments: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Each gate's status and blockers, from the collected experiment results."""
    return {gate_id: _gate(plan, gate_id, experiments) for gate_id in plan.gates}


def load_results(paths: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """Experiment results.yaml files by experiment id."""
    loaded = {}
    for path in paths:
        data = load_yaml_cached(Path(path), RecordError)
        if not isinstance(data, dict) or "experiment" not in data:
            raise RecordError.single(path, "experiment", "expected an experiment results file with an 'experiment' key")
        loaded[data["experiment"]] = data
    return loaded


def write_gates(plan: Plan, stub: bool, results_files: Iterable[Path], path: Path) -> dict[str, Any]:
    from labrunner.records import now_iso

    data = {"generated_at": now_iso(), "stub": stub, "gates": collect_gates(plan, load_results(results_files))}
    write_yaml(Path(path), data)
    return data
