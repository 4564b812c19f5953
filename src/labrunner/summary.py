"""What labrunner prints: the plan summary, one run's outcome, the status table."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from labrunner import compute
from labrunner.invocation import rerun_command
from labrunner.layout import RunPaths

if TYPE_CHECKING:  # `labrunner run` prints describe_run without loading pydantic's plan models
    from labrunner.plan import Plan

__all__ = ["describe_failure", "describe_run", "end_of_run", "plan_summary", "status_report"]


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
        if exp.requires:
            tags.append("requires " + ", ".join(exp.requires))
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
            if crit.compare is not None:
                pairing = "paired by seed" if crit.paired_by else "unpaired"
                source = f"; {crit.metric} of {crit.compare.treatment} minus {crit.compare.baseline}, {pairing}"
            lines.append(f"    criterion {metric}: {tiers} ({crit.resolved().direction} is better{source})")
    for gate_id, gate in plan.gates.items():
        unlocks = f" -> {gate.unlocks}" if gate.unlocks else ""
        decided = f" (decided {gate.decision.verdict}" + (f" by {gate.decision.by}" if gate.decision.by else "") + ")" \
            if gate.decision else ""
        lines.append(f"  gate {gate_id}: {', '.join(gate.experiments)}{unlocks}{decided}")
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
        if not isinstance(value, (int, float)) or isinstance(value, bool) or crit.compare is not None:
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


def status_rows(plan: Plan, stub: bool = False, ignore_gates: bool = False) -> tuple[list[list[str]], dict[str, int], list[tuple[str, Any]], Any]:
    """Rows of the status table, totals by sub status, the runs that need attention with their
    state, and the project view (experiments and gates) they come from."""
    from labrunner.aggregate import collect_project
    from labrunner.state import RunStatus, run_states

    view = collect_project(plan, stub, ignore_gates)
    rows: list[list[str]] = []
    totals = {status.value: 0 for status in RunStatus}
    attention: list[tuple[str, Any]] = []
    for exp_id, results in view.experiments.items():
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
        held_by = results.get("held_by")
        for state in run_states(plan, exp_id, stub):
            label = state.spec.key + (f" (seed {state.seed})" if len(state.spec.seeds) > 1 else "")
            if state.status == RunStatus.PENDING and held_by:
                attention.append((label, ("held", held_by, state)))
            elif state.status != RunStatus.COMPLETED:
                attention.append((label, (state.status.value, None, state)))
    return rows, totals, attention, view


def _attention_lines(plan: Plan, label: str, kind: str, why: str | None, state: Any) -> list[str]:
    """What one run that is not completed needs, in a few lines."""
    rel = os.path.relpath(state.paths.run_dir, plan.root)
    if kind in ("failed", "interrupted", "damaged"):
        return ["", f"{kind.upper()} {label}", *describe_failure(state.record, indent="    "),
                f"    details: {rel}/failure.yaml, {rel}/run.log"]
    if kind == "stale":
        return ["", f"STALE {label}: {'; '.join(state.stale)} (its result is from an earlier run; it reruns next time)"]
    if kind == "held":
        return ["", f"HELD {label}: {why}"]
    if kind == "running":
        who = state.holder.describe() if state.holder else "another process"
        return ["", f"RUNNING {label}: {who}"]
    return []


def _gate_lines(gates: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = []
    for gate_id, gate in gates.items():
        line = f"  {gate_id}: {gate['status']}"
        if gate.get("decision"):
            decision = gate["decision"]
            who = f" by {decision['by']}" if decision.get("by") else ""
            when = f" on {decision['date']}" if decision.get("date") else ""
            line += f" (decided {decision['verdict']}{who}{when}; computed: {gate['computed_status']})"
        if gate.get("blockers"):
            line += " — " + "; ".join(gate["blockers"])
        lines.append(line)
        if gate.get("disagreement"):
            lines.append(f"    ⚠ the decision disagrees with the results: {gate['disagreement']}")
    return lines


def _experiment_lines(experiments: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = []
    for exp_id, results in experiments.items():
        assessment = results.get("assessment") or {}
        line = f"  {exp_id}: {results['status']}"
        if assessment.get("recommendation"):
            line += f", recommendation {assessment['recommendation']}"
            if assessment.get("confidence"):
                line += f" (confidence {assessment['confidence']})"
        if results.get("held_by"):
            line += f" — {results['held_by']}"
        lines.append(line)
        lines += [f"    note: {note}" for note in results.get("gates_ignored") or []]
        if (results.get("compute") or {}).get("runs"):
            lines.append(f"    compute: {compute.describe(results['compute'])}")
    return lines


def status_report(plan: Plan, stub: bool = False, only_attention: bool = False,
                  ignore_gates: bool = False) -> tuple[str, bool]:
    """The status table, totals, experiments and gates, every run that needs attention with why,
    and how to rerun; (text, anything failed)."""
    from tabulate import tabulate

    rows, totals, attention, view = status_rows(plan, stub, ignore_gates)
    shown = [row for row in rows if not row[2].startswith("completed")] if only_attention and len(rows) > _TABLE_ROW_LIMIT else rows
    title = f"{plan.model.project.name or plan.root.name}" + (" (stub tree)" if stub else "")
    headers = ["experiment", "sub", "status", "seeds", "duration", "key metrics", "verdict"]
    lines = [f"labrunner status: {title}", tabulate(shown, headers=headers, tablefmt="simple") if shown else "(nothing to show)"]
    if len(shown) < len(rows):
        lines.append(f"({len(rows) - len(shown)} completed sub-experiments not shown; `labrunner status` lists all)")
    failed = totals["failed"] + totals["damaged"] + totals["interrupted"]
    line = (f"Completed: {totals['completed']}  Failed: {failed}  Pending: {totals['pending']}  "
            f"Held: {totals['held']}  Skipped: {totals['skipped']}")
    for key, name in (("stale", "Stale"), ("running", "Running")):
        if totals[key]:
            line += f"  {name}: {totals[key]}"
    lines += ["", line]
    if spent := compute.project_line(view.experiments):
        lines.append(f"Compute: {spent}")
    lines += ["", "Experiments:", *_experiment_lines(view.experiments)]
    if view.gates:
        lines += ["Gates:", *_gate_lines(view.gates)]
    failures = [item for item in attention if item[1][0] in ("failed", "interrupted", "damaged")]
    for label, (kind, why, state) in attention:
        lines += _attention_lines(plan, label, kind, why, state)
    to_run = [item for item in attention if item[1][0] in ("failed", "interrupted", "damaged", "stale", "pending")]
    if to_run:
        lines += ["", f"Rerun what failed or is missing (nothing else reruns): {rerun_command(plan.root, stub)}"]
        if failures:
            _, (_, _, state) = failures[0]
            seed = f" --seed {state.seed}" if len(state.spec.seeds) > 1 else ""
            lines.append(f"Or one sub alone:  labrunner run {state.spec.experiment_id} {state.spec.sub_id}{seed}"
                         + (" --stub" if stub else ""))
    return "\n".join(lines), bool(failures)


def print_run_summary(plan: Plan, stub: bool, success: bool, ignore_gates: bool = False) -> None:
    """The end-of-run summary Snakemake prints (onsuccess / onerror)."""
    import sys

    try:
        text, _ = status_report(plan, stub, only_attention=True, ignore_gates=ignore_gates)
    except Exception as exc:  # noqa: BLE001 - a summary must never hide the run's own outcome
        text = f"labrunner: could not build the summary: {exc}"
    from labrunner.redact import redact

    heading = "labrunner: run finished" if success else "labrunner: run finished with failures"
    print(redact(f"\n{heading}\n{text}"), file=sys.stderr if not success else sys.stdout, flush=True)


def end_of_run(pipeline: Any, success: bool) -> str | None:
    """What the workflow's hooks do at the end of every run: bring the write-up up to date with
    the records (see labrunner.writeup), print the summary, and say why a run whose jobs all
    succeeded must still fail (its results are not current: the plan or code changed while it
    ran), so that exit status 0 always means there is nothing left to do. Returns that reason."""
    from labrunner.errors import LabrunnerError
    from labrunner.plan import load_plan_cached
    from labrunner.state import RunStatus, run_states, runs_read_once
    from labrunner.writeup import refresh_quietly

    plan, changed = pipeline.plan, None
    try:  # the write-up describes the plan as it is now, if it was edited during the run
        plan = load_plan_cached(pipeline.plan.path, pipeline.plan.root)
    except LabrunnerError as exc:
        changed = f"the plan is no longer valid: {exc}"
    with runs_read_once():  # the write-up, the summary and the check below see the runs as of one moment
        refresh_quietly(plan, pipeline.stub, pipeline.ignore_gates)
        print_run_summary(plan, pipeline.stub, success, pipeline.ignore_gates)
        stale = [state.key for exp_id in plan.active_experiments for state in run_states(plan, exp_id, pipeline.stub)
                 if state.status == RunStatus.STALE]
    if changed is None and pipeline.plan_digest() != pipeline.plan_digest(refresh=True):
        changed = f"{pipeline.plan.path} changed while the run was going"
    if changed is None and not stale:
        return None
    parts = [changed] if changed else []
    if stale:
        parts.append(f"{len(stale)} result(s) do not match the plan or code now: {', '.join(stale[:10])}"
                     + (" ..." if len(stale) > 10 else ""))
    problem = "labrunner: " + "; ".join(parts) + ". Run the same command again to bring them up to date."
    if not success:  # the run fails anyway; say this too, it explains part of what the summary shows
        print(problem, file=sys.stderr)
        return None
    return problem
