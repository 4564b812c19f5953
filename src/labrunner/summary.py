"""What labrunner prints: the plan summary, one run's outcome, the status table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from labrunner.layout import RunPaths
from labrunner.plan import Plan

__all__ = ["describe_failure", "describe_run", "plan_summary"]


def plan_summary(plan: Plan) -> str:
    """One screen: experiments with their subs, criteria and dependencies, then gates."""
    model = plan.model
    subs = list(plan.subs(include_skipped=True))
    runs = sum(len(spec.seeds) for spec in subs if spec.skip_reason is None)
    title = model.project.name or plan.root.name
    lines = [f"{plan.path}: valid. {title}: {len(plan.active_experiments)} experiments, "
             f"{len(subs)} sub-experiments ({runs} runs with seeds), {_count(len(plan.gates), 'gate')}"]
    for exp_id, exp in plan.experiments.items():
        head = f"  {exp_id}" + (f"  {exp.name}" if exp.name and exp.name != exp_id else "")
        tags = [t for t in (exp.type, f"phase {exp.phase}" if exp.phase is not None else None) if t]
        if exp.archived:
            tags.append("archived")
        if exp.dependencies:
            tags.append("after " + ", ".join(exp.dependencies))
        lines.append(head + (f"  [{'; '.join(tags)}]" if tags else ""))
        for spec in plan.subs_by_experiment.get(exp_id, ()):
            where = spec.backend + (f" gpu={spec.gpu}" if spec.gpu else "")
            seeds = f" seeds={list(spec.seeds)}" if len(spec.seeds) > 1 else ""
            if spec.skip_reason:
                lines.append(f"    {spec.sub_id:<16} skipped: {spec.skip_reason}")
                continue
            memory = f", {spec.mem_mb} MB" if spec.mem_mb else ""
            lines.append(f"    {spec.sub_id:<16} {spec.handler_file.as_posix()}::{spec.handler_function}"
                         f"  [{where}, {spec.timeout_min:g} min{memory}{seeds}]")
        for metric, crit in exp.success_criteria.items():
            tiers = ", ".join(f"{name} {value:g}" for name, value in crit.tiers())
            source = f", from {crit.from_sub}" if crit.from_sub else ""
            lines.append(f"    criterion {metric}: {tiers} ({crit.resolved().direction} is better{source})")
    for gate_id, gate in plan.gates.items():
        unlocks = f" -> {gate.unlocks}" if gate.unlocks else ""
        lines.append(f"  gate {gate_id}: {', '.join(gate.experiments)}{unlocks}")
    return "\n".join(lines)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _where(location: dict[str, Any] | None) -> str | None:
    if not location:
        return None
    text = f"{location.get('file')}:{location.get('line')}"
    if location.get("function"):
        text += f" in {location['function']}"
    if location.get("code"):
        text += f": {location['code']}"
    return text


def describe_failure(record: dict[str, Any], indent: str = "  ") -> list[str]:
    """Error, handler line and hint of a failure record, as lines."""
    error = record.get("error") or {}
    lines = [f"{indent}error: {error.get('type')}: {_one_line(error.get('message'))}"]
    where = _where(error.get("handler_line"))
    if where:
        lines.append(f"{indent}at:    {where}")
    if error.get("hint"):
        lines.append(f"{indent}hint:  {error['hint']}")
    return lines


def _one_line(text: Any, limit: int = 300) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def describe_run(record: dict[str, Any], paths: RunPaths, root: Path) -> str:
    """What `labrunner run` prints at the end: the finding, or what failed and where to look."""
    rel = os.path.relpath(paths.run_dir, root)
    label = f"{record['experiment']}/{record['sub']}" + (f" (seed {record['seed']})" if "seed-" in rel else "")
    duration = f"{record.get('duration_s', 0):.1f}s"
    attempts = f", {record['attempts']} attempts" if record.get("attempts", 1) > 1 else ""
    if record.get("status") == "completed":
        lines = [f"{label}: completed in {duration}{attempts}: {record.get('finding')}",
                 f"  records: {rel}/result.yaml"]
    else:
        lines = [f"{label}: FAILED after {duration}{attempts}"] + describe_failure(record)
        logged = record.get("metrics_logged") or {}
        if logged.get("count"):
            calls = "1 log_metrics call" if logged["count"] == 1 else f"{logged['count']} log_metrics calls"
            lines.append(f"  logged before failing: {calls}, last step {logged.get('last_step')}")
        lines.append(f"  details: {rel}/failure.yaml (traceback), {rel}/run.log (output)")
    for warning in record.get("warnings") or []:
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)


# --- the status table -------------------------------------------------------------------------

_TABLE_ROW_LIMIT = 60  # past this, the end-of-run summary shows only the rows that need attention


def _sub_verdicts(plan: Plan, exp_id: str, sub_id: str, metrics: dict[str, Any]) -> str:
    """How this sub's own values stand against the experiment's criteria."""
    from labrunner import verdicts

    parts = []
    for metric, crit in plan.experiments[exp_id].success_criteria.items():
        value = metrics.get(metric)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        view = crit.resolved(from_sub=None)
        verdict = verdicts.evaluate_criterion(metric, view, [verdicts.Observation(sub_id, 0, float(value))],
                                              borderline_pct=plan.model.defaults.borderline_pct)
        parts.append(f"{metric}: {verdict.level}")
    return "; ".join(parts)


def _key_metrics(plan: Plan, exp_id: str, metrics: dict[str, Any]) -> str:
    names = [m for m in plan.experiments[exp_id].success_criteria if m in metrics] or list(metrics)[:3]
    return ", ".join(f"{name}={metrics[name]:.4g}" if isinstance(metrics[name], float) else f"{name}={metrics[name]}"
                     for name in names)


def status_rows(plan: Plan, stub: bool = False) -> tuple[list[list[str]], dict[str, int], list[tuple[str, Any]]]:
    """Rows of the status table, totals by sub status, and the failed runs with their records."""
    from labrunner.aggregate import collect_experiment, run_states

    rows: list[list[str]] = []
    totals = {"completed": 0, "failed": 0, "running": 0, "pending": 0, "skipped": 0, "damaged": 0}
    failures: list[tuple[str, Any]] = []
    for exp_id in plan.active_experiments:
        states = run_states(plan, exp_id, stub)
        results = collect_experiment(plan, exp_id, stub, states)
        for sub_id, sub in results["subs"].items():
            totals[sub["status"]] = totals.get(sub["status"], 0) + 1
            runs = sub.get("seeds") or [sub]
            done = sum(1 for run in runs if run.get("status", sub["status"]) == "completed")
            seeds = f"{done}/{len(runs)}" if sub.get("seeds") else ""
            durations = [run.get("duration_s") for run in runs if isinstance(run.get("duration_s"), (int, float))]
            duration = f"{sum(durations):.1f}s" if durations else ""
            metrics = sub.get("metrics") or {}
            status = sub["status"] if sub["status"] != "skipped" else f"skipped: {_one_line(sub.get('skip_reason'), 40)}"
            rows.append([exp_id, sub_id, status, seeds, duration, _key_metrics(plan, exp_id, metrics),
                         _sub_verdicts(plan, exp_id, sub_id, metrics)])
        for state in states:
            if state.status in ("failed", "damaged"):
                failures.append((f"{exp_id}/{state.spec.sub_id}" + (f" (seed {state.seed})" if len(state.spec.seeds) > 1 else ""), state))
    return rows, totals, failures


def status_report(plan: Plan, stub: bool = False, only_attention: bool = False) -> tuple[str, bool]:
    """The status table, totals, every failure with its hint, and how to rerun; (text, any failed)."""
    from tabulate import tabulate

    rows, totals, failures = status_rows(plan, stub)
    shown = [row for row in rows if not row[2].startswith("completed")] if only_attention and len(rows) > _TABLE_ROW_LIMIT else rows
    title = f"{plan.model.project.name or plan.root.name}" + (" (stub tree)" if stub else "")
    headers = ["experiment", "sub", "status", "seeds", "duration", "key metrics", "verdict"]
    lines = [f"labrunner status: {title}", tabulate(shown, headers=headers, tablefmt="simple") if shown else "(nothing to show)"]
    if len(shown) < len(rows):
        lines.append(f"({len(rows) - len(shown)} completed sub-experiments not shown; `labrunner status` lists all)")
    line = (f"Completed: {totals['completed']}  Failed: {totals['failed'] + totals['damaged']}  "
            f"Pending: {totals['pending']}  Skipped: {totals['skipped']}")
    if totals["running"]:
        line += f"  Running or interrupted: {totals['running']}"
    lines += ["", line]
    for label, state in failures:
        rel = os.path.relpath(state.paths.run_dir, plan.root)
        lines += ["", f"FAILED {label}"] + describe_failure(state.record, indent="    ")
        lines.append(f"    details: {rel}/failure.yaml, {rel}/run.log")
    if failures or totals["pending"] or totals["running"]:
        target = "stub/research/FINDINGS.md --config stub=true" if stub else "research/FINDINGS.md"
        lines += ["", f"Rerun what failed or is missing (nothing else reruns): snakemake --cores 4 {target}"]
        if failures:
            label, state = failures[0]
            seed = f" --seed {state.seed}" if len(state.spec.seeds) > 1 else ""
            lines.append(f"Or one sub alone:  labrunner run {state.spec.experiment_id} {state.spec.sub_id}{seed}"
                         + (" --stub" if stub else ""))
    return "\n".join(lines), bool(failures)


def print_run_summary(plan: Plan, stub: bool, success: bool) -> None:
    """The end-of-run summary Snakemake prints (onsuccess / onerror)."""
    import sys

    try:
        text, _ = status_report(plan, stub, only_attention=True)
    except Exception as exc:  # noqa: BLE001 - a summary must never hide the run's own outcome
        text = f"labrunner: could not build the summary: {exc}"
    heading = "labrunner: run finished" if success else "labrunner: run finished with failures"
    print(f"\n{heading}\n{text}", file=sys.stderr if not success else sys.stdout, flush=True)
