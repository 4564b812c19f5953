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
            lines.append(f"    {spec.sub_id:<16} {spec.handler_file.as_posix()}::{spec.handler_function}"
                         f"  [{where}, {spec.timeout_min:g} min{seeds}]")
        for metric, crit in exp.success_criteria.items():
            from labrunner.plan import resolved_direction

            tiers = ", ".join(f"{name} {value:g}" for name, value in crit.tiers())
            source = f", from {crit.from_sub}" if crit.from_sub else ""
            lines.append(f"    criterion {metric}: {tiers} ({resolved_direction(crit)} is better{source})")
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
