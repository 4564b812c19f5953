"""`labrunner status --json` and `labrunner validate --json`: the state for programs and agents.

The status document is built from the same data as the status table and results.yaml
(aggregate.collect_project: experiments, holds and gates, from labrunner.state): each experiment appears in the shape of its
results.yaml, with every field it has, so a state that aggregation learns appears here without
a change. What this module adds: where each run's records are, the totals, the failures with
the file to fix, and `next`, the exact commands that make progress. docs/cli.md documents the
schema; SCHEMA_VERSION changes when a field is removed or changes meaning (never for an added one).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

from labrunner import layout
from labrunner.errors import InputError, LabrunnerError
from labrunner.invocation import last_run, rerun_command
from labrunner.plan import Plan

__all__ = ["SCHEMA_VERSION", "error_document", "jsonable", "status_document", "validate_document"]

SCHEMA_VERSION = 1
STATUS_SCHEMA = "labrunner.status"
VALIDATE_SCHEMA = "labrunner.validate"
# runs whose latest attempt did not end in a current result: what `ok` and the exit status count
_NEEDS_ATTENTION = ("failed", "interrupted", "damaged")
# run states that the rerun command makes progress on (held runs wait for others; running ones run)
_RERUN = {"failed", "interrupted", "damaged", "stale", "pending"}
_RECORD_FILES = {"result": "result.yaml", "failure": "failure.yaml", "metrics": "metrics.jsonl", "log": "run.log"}


def jsonable(value: Any) -> Any:
    """Plain JSON: NaN and infinities as the strings "NaN", "Infinity", "-Infinity" (JSON has no
    such numbers), dates as ISO text, paths and anything else as text."""
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(item) for item in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return value if math.isfinite(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


def _records(plan: Plan, run_dir: Path) -> dict[str, Any]:
    """Where a run's records are (relative to the project root); None for a file not written yet."""
    files = {name: (os.path.relpath(run_dir / file, plan.root) if (run_dir / file).exists() else None)
             for name, file in _RECORD_FILES.items()}
    return {"dir": os.path.relpath(run_dir, plan.root), **files}


def _with_records(plan: Plan, exp_id: str, results: dict[str, Any], stub: bool) -> dict[str, Any]:
    """The experiment's results with `records` on every run (the sub itself, or each seed)."""
    root = plan.root / layout.results_root(stub)
    specs = {spec.sub_id: spec for spec in plan.subs(exp_id)}
    for sub_id, sub in results["subs"].items():
        spec = specs.get(sub_id)
        if spec is None:  # skipped: nothing runs, nothing is recorded
            continue
        if sub.get("seeds"):
            for run in sub["seeds"]:
                run["records"] = _records(plan, layout.run_dir(root, exp_id, sub_id, run["seed"], spec.seeds))
        else:
            sub["records"] = _records(plan, layout.run_dir(root, exp_id, sub_id, spec.seeds[0], spec.seeds))
    return results


def _runs(exp_id: str, sub_id: str, sub: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One entry per run of a sub: (experiment, sub, seed, the run's dict)."""
    if sub.get("seeds"):
        return [{"experiment": exp_id, "sub": sub_id, "seed": run.get("seed"), "run": run} for run in sub["seeds"]]
    return [{"experiment": exp_id, "sub": sub_id, "seed": sub.get("seed"), "run": sub}]


def _failure(entry: Mapping[str, Any], several_seeds: bool, handler_file: str) -> dict[str, Any]:
    run = entry["run"]
    error = run.get("error") or {}
    where = error.get("handler_line") or {}
    seed = f" --seed {entry['seed']}" if several_seeds else ""
    return {
        "experiment": entry["experiment"], "sub": entry["sub"], "seed": entry["seed"], "status": run.get("status"),
        "error": error,
        "fix": {"file": where.get("file") or handler_file, "line": where.get("line")},
        "records": run.get("records"),
        "run_one": f"labrunner run {entry['experiment']} {entry['sub']}{seed}",
    }


def status_document(plan: Plan, stub: bool = False, ignore_gates: bool = False) -> dict[str, Any]:
    """Everything `labrunner status` knows, as one JSON-ready document (schema in docs/cli.md)."""
    from labrunner.aggregate import collect_project

    view = collect_project(plan, stub, ignore_gates)
    experiments = {exp_id: _with_records(plan, exp_id, view.experiments[exp_id], stub)
                   for exp_id in plan.active_experiments if exp_id in view.experiments}
    sub_totals: Counter[str] = Counter()
    run_totals: Counter[str] = Counter()
    failures = []
    for exp_id, results in experiments.items():
        specs = {spec.sub_id: spec for spec in plan.subs(exp_id)}
        for sub_id, sub in results["subs"].items():
            sub_totals[sub["status"]] += 1
            if sub_id not in specs:
                continue
            for entry in _runs(exp_id, sub_id, sub):
                status = entry["run"].get("status", sub["status"])
                run_totals[status] += 1
                if status in _NEEDS_ATTENTION:
                    failures.append(_failure(entry, len(specs[sub_id].seeds) > 1, specs[sub_id].handler_file.as_posix()))
    previous = last_run(plan.root, stub)
    document = {
        "schema": STATUS_SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "project": {"name": plan.model.project.name or plan.root.name, "root": str(plan.root.resolve()),
                    "plan": str(plan.path)},
        "stub": stub,
        "ok": not failures,
        "totals": {"subs": dict(sub_totals), "runs": dict(run_totals)},
        "experiments": experiments,
        "gates": view.gates,
        "failures": failures,
        "last_run": None if previous is None else {**previous.to_json(), "command": previous.command_line()},
        "next": _next_steps(plan, stub, failures, experiments, set(run_totals)),
    }
    return jsonable(document)


def _next_steps(plan: Plan, stub: bool, failures: list[dict[str, Any]], experiments: Mapping[str, Mapping[str, Any]],
                statuses: set[str]) -> list[dict[str, Any]]:
    """What makes progress, in order: fix each failure; rerun; see to what holds an experiment;
    or, when every run is done, write the findings."""
    steps: list[dict[str, Any]] = []
    for failure in failures:
        if failure["status"] != "failed":
            continue  # interrupted or damaged: nothing to fix, the rerun finishes it
        error = failure["error"]
        steps.append({"action": "fix", "file": failure["fix"]["file"], "line": failure["fix"]["line"],
                      "why": f"{failure['experiment']}/{failure['sub']}: {error.get('type')}: {error.get('message')}",
                      "hint": error.get("hint"), "check": failure["run_one"]})
    if statuses & _RERUN:
        steps.append({"action": "run", "command": rerun_command(plan.root, stub),
                      "why": "reruns what failed, was interrupted, is stale or missing; nothing else reruns"})
    for exp_id, results in experiments.items():
        if results.get("held_by"):
            steps.append({"action": "unblock", "experiment": exp_id, "why": results["held_by"]})
    if statuses <= {"completed", "skipped"}:
        findings = [layout.project_findings_path(stub).as_posix()] + [
            layout.experiment_findings_path(exp_id, stub).as_posix() for exp_id in plan.active_experiments]
        steps.append({"action": "write_findings", "files": findings,
                      "why": "every sub is done: write the prose outside the <!-- labrunner:begin/end --> blocks"})
    return steps


def error_document(schema: str, error: LabrunnerError) -> dict[str, Any]:
    """A command that could not do its work at all (the plan is invalid, say), for programs."""
    problems = ([{"file": issue.file, "line": issue.line, "key": issue.key, "message": issue.message}
                 for issue in error.issues] if isinstance(error, InputError) else [])
    return {"schema": schema, "schema_version": SCHEMA_VERSION, "ok": False,
            "error": {"type": type(error).__name__, "message": str(error)}, "problems": problems}


def validate_document(plan: Plan) -> dict[str, Any]:
    """The valid plan as `labrunner validate` summarizes it: each sub's handler and settings."""
    experiments: dict[str, Any] = {}
    for exp_id, experiment in plan.experiments.items():
        subs = {}
        for spec in plan.subs_by_experiment.get(exp_id, ()):
            subs[spec.sub_id] = {"handler": f"{spec.handler_file.as_posix()}::{spec.handler_function}",
                                 "backend": spec.backend, "gpu": spec.gpu, "seeds": list(spec.seeds),
                                 "timeout_min": spec.timeout_min, "retries": spec.retries, "skip": spec.skip_reason}
        experiments[exp_id] = {
            "name": experiment.name or exp_id, "type": experiment.type, "phase": experiment.phase,
            "archived": experiment.archived, "dependencies": list(experiment.dependencies),
            "criteria": {metric: {"target": crit.target, "acceptable": crit.acceptable, "failure": crit.failure,
                                  "direction": crit.resolved().direction, "from": crit.from_sub}
                         for metric, crit in experiment.success_criteria.items()},
            "subs": subs,
        }
    gates = {gate_id: {"name": gate.name or gate_id, "experiments": list(gate.experiments), "unlocks": gate.unlocks}
             for gate_id, gate in plan.gates.items()}
    return jsonable({"schema": VALIDATE_SCHEMA, "schema_version": SCHEMA_VERSION, "ok": True, "plan": str(plan.path),
                     "problems": [], "experiments": experiments, "gates": gates})
