"""FINDINGS.md: generated blocks inside a document that belongs to the researcher.

Generated text sits between `<!-- labrunner:begin NAME -->` and `<!-- labrunner:end NAME -->`.
Regeneration replaces what is between each pair and nothing else: every byte outside the
markers (line endings included) is the researcher's and stays as it was. A block the
researcher deleted is not brought back. The first version of a file is a full write-up
skeleton, with prompts in the parts only a person can write.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labrunner import compute
from labrunner.errors import FindingsError, Issue
from labrunner.files import atomic_write_text
from labrunner.traceability import (
    Links, change_line, changed_subs, commit_cell, compute_cell, compute_line, curve_lines, device_cell,
)
from labrunner.wording import SIGNIFICANT_DIGITS, fmt_interval, fmt_signed

__all__ = ["findings_stamp", "merge_blocks", "render_experiment_findings", "render_project_findings", "write_findings"]

_MARKER = re.compile(r"<!-- labrunner:(?P<kind>begin|end) (?P<name>[A-Za-z0-9_-]+) -->")
_LEVEL_MARK = {"target met": "✅", "acceptable": "☑️", "misses acceptable": "⚠️", "failure": "❌",
               "not measured": "❔", "invalid": "⛔"}
_STATUS_MARK = {"completed": "✅", "failed": "❌", "pending": "⏳", "running": "⏳", "skipped": "⏭️",
                "damaged": "⛔", "passed": "✅", "interrupted": "⏹️", "stale": "♻️", "held": "⏸️"}


@dataclass(frozen=True)
class Document:
    """A FINDINGS file: its block names, and the template used when it does not exist yet."""

    title: str
    blocks: dict[str, str]  # name -> generated content
    template: Sequence[str | tuple[str, str]]  # literal text, or ("block", name)


def _block(name: str, content: str) -> str:
    return f"<!-- labrunner:begin {name} -->\n{_escape_comments(content).rstrip()}\n<!-- labrunner:end {name} -->"


def _escape_comments(content: str) -> str:
    """Generated text holds what handlers returned (findings, metric names, errors). An HTML comment
    opener in it would be read as a marker by the next regeneration, or hide the rest of the page
    when rendered; escaped, it shows as written."""
    return content.replace("<!--", "&lt;!--")


def _spans(text: str, path: str) -> list[tuple[str, int, int]]:
    """(name, start of content, end of content) for every block; FindingsError if malformed."""
    spans, open_name, open_end, seen = [], None, 0, set()
    for match in _MARKER.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        kind, name = match["kind"], match["name"]
        if kind == "begin":
            if open_name is not None:
                raise FindingsError([Issue(path, name, f"block {name!r} begins inside block {open_name!r}; "
                                           f"add <!-- labrunner:end {open_name} --> before it", line)])
            if name in seen:
                raise FindingsError([Issue(path, name, f"block {name!r} appears twice; delete one of them", line)])
            open_name, open_end = name, match.end()
        else:
            if open_name != name:
                raise FindingsError([Issue(path, name, f"end marker of {name!r} without its begin marker", line)])
            spans.append((name, open_end, match.start()))
            seen.add(name)
            open_name = None
    if open_name is not None:
        raise FindingsError([Issue(path, open_name, f"block {open_name!r} has no end marker "
                                   f"(<!-- labrunner:end {open_name} -->)", None)])
    return spans


def merge_blocks(existing: str, blocks: Mapping[str, str], path: str = "FINDINGS.md") -> str:
    """Replace the content of each known block in `existing`; leave every other byte alone."""
    newline = "\r\n" if "\r\n" in existing else "\n"
    pieces, cursor = [], 0
    for name, start, end in _spans(existing, path):
        if name not in blocks:
            continue
        pieces.append(existing[cursor:start])
        pieces.append(newline + _escape_comments(blocks[name]).rstrip().replace("\n", newline) + newline)
        cursor = end
    pieces.append(existing[cursor:])
    return "".join(pieces)


def _first_version(document: Document) -> str:
    parts = []
    for item in document.template:
        if isinstance(item, tuple):
            parts.append(_block(item[1], document.blocks[item[1]]))
        else:
            parts.append(item.rstrip("\n"))
    return "\n\n".join(parts) + "\n"


def write_findings(path: Path, document: Document) -> None:
    """Create the file from its template, or regenerate its blocks in place."""
    path = Path(path)
    if path.exists():
        with path.open("r", encoding="utf-8", newline="") as handle:
            existing = handle.read()
        text = merge_blocks(existing, document.blocks, str(path))
        if text == existing:
            return
    else:
        text = _first_version(document)
    atomic_write_text(path, text)  # byte for byte: CRLF files stay CRLF; a symlink stays a link


# --- formatting helpers -------------------------------------------------------------------------

def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{SIGNIFICANT_DIGITS}g}"
    return str(value)


def _link(target: str, findings_path: Path, root: Path, label: str | None = None) -> str:
    relative = os.path.relpath(root / target, (root / findings_path).parent)
    return f"[{label or Path(target).name}]({Path(relative).as_posix()})"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _tier(crit: Mapping[str, Any], tier: str) -> str:
    value = crit.get(tier)
    if value is None:
        return "—"
    higher = crit.get("direction") == "higher"
    sign = ("≤ " if higher else "≥ ") if tier == "failure" else ("≥ " if higher else "≤ ")
    return sign + _num(value)


def _stub_banner(stub: bool) -> str:
    return ("**STUB RUN** — tiny settings (stub_params) to check the pipeline end to end; "
            "the numbers below mean nothing.\n\n") if stub else ""


# --- one experiment -----------------------------------------------------------------------------

def _status_block(results: Mapping[str, Any], results_file: str) -> str:
    assessment = results.get("assessment") or {}
    status = results["status"]
    line = f"**Status:** {_STATUS_MARK.get(status, '')} {status}"
    if assessment.get("recommendation"):
        line += f" · **Recommendation:** {assessment['recommendation']}"
    if assessment.get("confidence"):
        line += f" · **Confidence:** {assessment['confidence']}"
    counts = results.get("counts") or {}
    total = sum(counts.get(key, 0) for key in counts if key != "skipped")
    tally = f"{counts.get('completed', 0)} of {total} sub-experiments completed"
    for key in ("failed", "interrupted", "damaged", "running", "stale", "pending", "held", "skipped"):
        if counts.get(key):
            tally += f", {counts[key]} {key}"
    lines = [_stub_banner(bool(results.get("stub"))) + line, "", tally + "."]
    if results.get("held_by"):
        lines += ["", f"**Held:** {results['held_by']}."]
    for note in results.get("gates_ignored") or []:
        lines += ["", f"**Gate ignored:** {note}."]
    reasons = assessment.get("reasons") or []
    if reasons and assessment.get("recommendation") != "proceed":
        lines += ["", "Why:"] + [f"- {reason}" for reason in reasons]
    borderline = assessment.get("borderline") or []
    if borderline:
        lines += ["", f"**Borderline, for human review:** {', '.join(borderline)}."]
    changed = changed_subs(results)
    if changed:
        lines += ["", f"**Changed since their previous results:** {', '.join(changed)} (see the sub-experiments)."]
    if line := compute_line(results):
        lines += ["", line]
    lines += ["", f"_Generated by labrunner from `{results_file}` at {results.get('generated_at', '')}._"]
    return "\n".join(lines)


def _key_metrics_block(results: Mapping[str, Any], links: Links) -> str:
    criteria = results.get("criteria") or {}
    if not criteria:
        return "No success criteria in the plan: add `success_criteria` to this experiment to get verdicts."
    lines = ["| Metric | Value | Target | Acceptable | Failure | Result |", "|---|---|---|---|---|---|"]
    sentences = []
    for metric, crit in criteria.items():
        verdict = (results.get("verdicts") or {}).get(metric) or {}
        level = verdict.get("level", "not measured")
        value = _value_cell(verdict, links, results.get("subs") or {})
        result = f"{_LEVEL_MARK.get(level, '')} {level}" + (" (borderline)" if verdict.get("borderline") else "")
        lines.append(f"| {_cell(_metric_cell(metric, crit))} | {_cell(value)} | {_tier(crit, 'target')} | {_tier(crit, 'acceptable')} "
                     f"| {_tier(crit, 'failure')} | {result} |")
        if verdict.get("sentence"):
            sentences.append(f"- {verdict['sentence']}.")
    return "\n".join(lines + [""] + sentences)


def _metric_cell(metric: str, crit: Mapping[str, Any]) -> str:
    compare = crit.get("compare")
    return f"{metric} ({crit.get('metric')}: {compare['treatment']} − {compare['baseline']})" if compare else metric


def _value_cell(verdict: Mapping[str, Any], links: Links, subs: Mapping[str, Any]) -> str:
    """The value (linked to the records it comes from), where it came from (a best-of-k selection
    says so) and over how many seeds. A comparison's difference links nowhere: its per-seed table
    below does."""
    value = verdict.get("value")
    if value is None:
        return "—"
    shown = fmt_signed(value) if verdict.get("comparison") else links.sub(_num(value), subs.get(verdict.get("source_sub")))
    candidates = verdict.get("candidates") or []
    source = f"best of {len(candidates)}: {verdict.get('source_sub')}" if candidates else verdict.get("source_sub")
    if verdict.get("comparison"):
        source = "paired" if verdict["comparison"].get("method") == "paired t" else "Welch"
    detail = [part for part in (source, f"{verdict['n_seeds']} seeds" if verdict.get("n_seeds", 0) > 1 else None) if part]
    return shown + (f" ({', '.join(detail)})" if detail else "")


def _comparisons_section(results: Mapping[str, Any], links: Links) -> str:
    """Per comparison criterion, the per-seed table its verdict rests on."""
    parts = []
    for name, verdict in (results.get("verdicts") or {}).items():
        detail = verdict.get("comparison")
        if not detail:
            continue
        treatment, baseline, paired = detail["treatment"], detail["baseline"], detail["method"] == "paired t"
        df = f", {detail['df']:.3g} df" if detail.get("df") is not None else ""
        lines = [f"### Comparison: {name}", "",
                 f"{detail['metric']}, {treatment} minus {baseline}: {detail['method']} interval{df}.", "",
                 f"| Seed | {_cell(treatment)} | {_cell(baseline)} | Difference |", "|---|---|---|---|"]
        subs = results.get("subs") or {}
        for row in detail["rows"]:
            difference = fmt_signed(row["difference"]) if row.get("difference") is not None else "—"
            values = [links.seed(_num(row.get(side)), subs.get(sub_id), row["seed"])
                      for side, sub_id in (("treatment", treatment), ("baseline", baseline))]
            lines.append(f"| {row['seed']} | {values[0]} | {values[1]} | {difference} |")
        ci = f" (95% CI {fmt_interval(verdict['ci95'])})" if verdict.get("ci95") else ""
        what = "mean of the differences" if paired else "difference of the means"
        lines.append(f"| **Mean** | {_num(detail['treatment_mean'])} | {_num(detail['baseline_mean'])} "
                     f"| **{fmt_signed(verdict['value'])}**{ci}, {what} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _sweeps_section(results: Mapping[str, Any], links: Links) -> str:
    """Per sweep: one row per combination, the best per criterion metric in bold and named."""
    parts = []
    for sweep_id, sweep in (results.get("sweeps") or {}).items():
        params, metrics, best = sweep["params"], sweep["metrics"], sweep.get("best") or {}
        lines = [f"### Sweep: {sweep_id} ({', '.join(params)})", "",
                 "| " + " | ".join([*map(_cell, params), "Sub", "Status", "Seeds", *map(_cell, metrics)]) + " |",
                 "|" + "---|" * (len(params) + 3 + len(metrics))]
        for combo in sweep["combinations"]:
            cells = [_num(combo["params"][param]) for param in params]
            cells += [combo["sub"], combo["status"], str(combo["n_seeds"])]
            for metric in metrics:
                value = combo["metrics"].get(metric)
                text = links.sub(_num(value), (results.get("subs") or {}).get(combo["sub"])) if value is not None else ""
                cells.append(f"**{text}**" if (best.get(metric) or {}).get("sub") == combo["sub"] else text)
            lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
        lines.append("")
        for metric, choice in best.items():
            setting = ", ".join(f"{key}={_num(value)}" for key, value in choice["params"].items())
            lines.append(f"- Best {metric}: {setting} (`{choice['sub']}`): {choice['sentence']}.")
        if not best:
            lines.append("- No criterion ranks these combinations: add a success criterion on one of their metrics.")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _sweep_plot_lines(results: Mapping[str, Any], findings_path: Path, root: Path) -> list[str]:
    return [f"![sweep {sweep_id}]({Path(os.path.relpath(root / sweep['plot'], (root / findings_path).parent)).as_posix()})"
            for sweep_id, sweep in (results.get("sweeps") or {}).items() if sweep.get("plot")]


def _runs_of(sub: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(sub.get("seeds") or [sub])


def _sub_block(results: Mapping[str, Any], findings_path: Path, root: Path, links: Links) -> str:
    parts = []
    preferred = [crit.get("metric") or name for name, crit in (results.get("criteria") or {}).items()]
    for sub_id, sub in (results.get("subs") or {}).items():
        status = sub["status"]
        runs = _runs_of(sub)
        seeds = f", {len(runs)} seeds" if sub.get("seeds") else ""
        title = f"### {sub_id}" + (f" — {sub['name']}" if sub.get("name") and sub["name"] != sub_id else "")
        lines = [f"{title}", "", f"{_STATUS_MARK.get(status, '')} **{status}**{seeds}"]
        if status == "skipped":
            lines[-1] += f": {sub.get('skip_reason')}"
            parts.append("\n".join(lines))
            continue
        for run in runs:
            prefix = f"seed {run.get('seed')}: " if sub.get("seeds") else ""
            lines += _run_lines(run, prefix)
            changed = change_line(run, prefix, preferred)
            if changed:
                lines.append(f"\n_{changed}._")
        metrics = sub.get("metrics") or {}
        if metrics:
            if sub.get("seeds"):
                lines += ["", "| Metric | Mean | Per seed |", "|---|---|---|"]
                for name, mean in metrics.items():
                    per_seed = ", ".join(links.run(_num((run.get("metrics") or {}).get(name)), run) for run in runs)
                    lines.append(f"| {_cell(name)} | {links.sub(_num(mean), sub)} | {per_seed} |")
            else:
                lines += ["", "| Metric | Value |", "|---|---|"] + [f"| {_cell(k)} | {links.run(_num(v), sub)} |"
                                                                   for k, v in metrics.items()]
        artifacts = [path for run in runs for path in run.get("artifacts") or []]
        if artifacts:
            lines += ["", "Artifacts: " + ", ".join(_link(path, findings_path, root) for path in artifacts)]
        wandb_links = [_wandb_text(run, root) for run in runs if (run.get("wandb") or {}).get("mode") not in (None, "disabled")]
        if wandb_links:
            lines += ["", "W&B: " + "; ".join(wandb_links)]
            if any("offline" in link for link in wandb_links):
                lines.append("(offline runs upload with `wandb sync <path>`)")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) if parts else "No sub-experiments."


def _run_lines(run: Mapping[str, Any], prefix: str) -> list[str]:
    """The finding of a run, or why it has none now; an earlier result is shown as not current."""
    lines = []
    if run.get("finding"):
        lines.append(f"\n> {prefix}{run['finding']}")
    if run.get("error"):
        error = run["error"]
        where = error.get("handler_line") or {}
        at = f" at `{where.get('file')}:{where.get('line')}`" if where else ""
        lines.append(f"\n> {prefix}**{run['status']}**: {error.get('type')}: {error.get('message')}{at}")
        if error.get("hint"):
            lines.append(f"> hint: {error['hint']}")
    if run.get("stale"):
        lines.append(f"\n> {prefix}**stale**: {'; '.join(run['stale'])}. It reruns next time.")
    if run.get("held_by"):
        lines.append(f"\n> {prefix}**held**: {run['held_by']}.")
    if run.get("running"):
        lines.append(f"\n> {prefix}**running**: {run['running']}.")
    earlier = run.get("earlier")
    if earlier and run.get("status") != "completed":
        values = ", ".join(f"{name}={_num(value)}" for name, value in (earlier.get("metrics") or {}).items())
        lines.append(f"\n_{prefix}from an earlier run, not current ({earlier.get('why_not_current')}; "
                     f"{earlier.get('ended_at') or 'time unknown'}): {values or 'no metrics'}. "
                     "Not used in any verdict._")
    if run.get("last_failure"):
        last = run["last_failure"]
        lines.append(f"\n_{prefix}an earlier attempt failed ({last.get('type')}: {last.get('message')}); since resolved._")
    return lines


def _wandb_text(run: Mapping[str, Any], root: Path) -> str:
    info = run.get("wandb") or {}
    label = f"seed {run.get('seed')}" if run.get("seed") is not None else "run"
    if info.get("url"):
        return f"[{label}]({info['url']})"
    if info.get("path"):
        path = info["path"]
        shown = os.path.relpath(path, root) if os.path.isabs(path) else path
        return f"{label}: offline `{shown}`"
    return f"{label}: {info.get('mode')} run {info.get('id', '')}".strip()


def _confidence_block(results: Mapping[str, Any]) -> str:
    verdicts = results.get("verdicts") or {}
    if not verdicts:
        return "No criteria, so no confidence assessment."
    overall = (results.get("assessment") or {}).get("confidence") or "not assessed"
    lines = [f"Overall: **{overall}** (the weakest criterion's).", ""]
    for metric, verdict in verdicts.items():
        confidence = verdict.get("confidence") or "n/a"
        ci = verdict.get("ci95")
        widened = f", widened for the best of {len(verdict['candidates'])}" if verdict.get("candidates") else ""
        averaged = ("mean difference" if (verdict.get("comparison") or {}).get("method") == "paired t"
                    else "difference of means" if verdict.get("comparison") else "mean")
        basis = (f"{averaged} of {verdict['n_seeds']} seeds, 95% CI {fmt_interval(ci)}{widened}" if ci
                 else "single run, no interval" if verdict.get("n_seeds") == 1 else verdict.get("level", ""))
        lines.append(f"- {metric}: {confidence} ({basis})")
        lines += [f"  - {note}" for note in verdict.get("notes") or []]
    return "\n".join(lines)


def _plots_block(results: Mapping[str, Any], findings_path: Path, root: Path) -> str:
    lines: list[str] = []
    if results.get("plot"):
        lines.append(f"![criteria]({Path(os.path.relpath(root / results['plot'], (root / findings_path).parent)).as_posix()})")
    for sub_id, sub in (results.get("subs") or {}).items():
        images = [path for path in (_runs_of(sub)[0].get("artifacts") or []) if path.lower().endswith((".png", ".svg", ".jpg"))]
        for image in images:
            relative = Path(os.path.relpath(root / image, (root / findings_path).parent)).as_posix()
            lines.append(f"![{sub_id}: {Path(image).name}]({relative})")
    curves = curve_lines(results, Links(findings_path, root))
    if curves:
        lines.append("\n".join(curves))
    return "\n\n".join(lines) if lines else "No plots."


def _appendix_block(results: Mapping[str, Any], results_file: str, links: Links) -> str:
    lines = [f"Full record: `{results_file}`; per-run records under each sub's folder (the Record column).", "",
             "| Sub | Seed | Params | Record | Commit | Backend | Executor | Device | Duration | Compute | Attempts | W&B |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for sub_id, sub in (results.get("subs") or {}).items():
        if sub["status"] == "skipped":
            continue
        params = ", ".join(f"{k}={v}" for k, v in (sub.get("params") or {}).items())
        for run in _runs_of(sub):
            wandb = run.get("wandb") or {}
            tracked = wandb.get("url") or (f"{wandb.get('mode')} {wandb.get('id', '')}".strip() if wandb else "")
            duration = f"{run['duration_s']:.1f}s" if isinstance(run.get("duration_s"), (int, float)) else ""
            backend = " ".join(filter(None, (run.get("backend"), run.get("modal_call_id"))))
            record = run.get("result_file") or run.get("record_file")
            lines.append(f"| {sub_id} | {_num(run.get('seed'))} | {_cell(params)} "
                         f"| {links.to(Path(record).name, record) if record else ''} | {commit_cell(run, links)} "
                         f"| {_cell(backend)} | {_cell(_executor_cell(run.get('executor')))} | {_cell(device_cell(run))} "
                         f"| {duration} | {_cell(compute_cell(run))} | {_num(run.get('attempts'))} | {_cell(tracked)} |")
    return "\n".join(lines)


def _executor_cell(executor: Mapping[str, Any] | None) -> str:
    """"slurm job 42 on node1", "local on host": where the job ran, as its scheduler names it."""
    if not executor:
        return ""
    job = f" job {executor['job_id']}" if executor.get("job_id") else ""
    return f"{executor.get('name')}{job} on {executor.get('node')}"


def render_experiment_findings(results: Mapping[str, Any], findings_path: Path, root: Path,
                               results_file: str) -> Document:
    """The experiment FINDINGS document for one results.yaml."""
    title = results.get("name") or results["experiment"]
    links = Links(Path(findings_path), root)
    blocks = {
        "status": _status_block(results, results_file),
        "key-metrics": "\n\n".join(part for part in (_key_metrics_block(results, links), _comparisons_section(results, links),
                                                       _sweeps_section(results, links)) if part),
        "sub-results": _sub_block(results, findings_path, root, links),
        "confidence": _confidence_block(results),
        "plots": "\n\n".join(_sweep_plot_lines(results, findings_path, root) + [_plots_block(results, findings_path, root)]),
        "appendix": _appendix_block(results, results_file, links),
    }
    prompt = "> **To write:** "
    template: list[str | tuple[str, str]] = [
        f"# {title} — findings",
        ("block", "status"),
        "## Summary\n\n" + prompt + "two or three sentences: what was tested, what was found, and what it means "
        "for the hypothesis. Everything outside the `labrunner` markers is yours and is kept as written.",
        "## Key metrics",
        ("block", "key-metrics"),
        "## Results by sub-experiment",
        ("block", "sub-results"),
        "## Analysis\n\n" + prompt + "why the numbers came out this way; surprises; what the plots show.",
        "## Implications\n\n" + prompt + "what this changes in the plan: which claims hold, which experiments "
        "to run or drop next.",
        "## Confidence",
        ("block", "confidence"),
        prompt + "what could make these results wrong (data, seeds, leakage, tuning on the test set).",
        "## Plots",
        ("block", "plots"),
        "## Next steps\n\n" + prompt + "concrete next runs, with the sub-experiments to add to the plan.",
        "## Appendix: configuration and runs",
        ("block", "appendix"),
    ]
    return Document(title=title, blocks=blocks, template=template)


# --- the project --------------------------------------------------------------------------------

def findings_stamp(experiments: Mapping[str, Mapping[str, Any]]) -> str:
    """When the project write-up's data was made: the newest experiment aggregate. Derived from
    the inputs, not the clock, so that regenerating unchanged data leaves the file as it was."""
    return max((str(r["generated_at"]) for r in experiments.values() if r.get("generated_at")), default="")


def _key_result(results: Mapping[str, Any]) -> str:
    for metric, verdict in (results.get("verdicts") or {}).items():
        if verdict.get("value") is not None:
            return f"{metric} {_num(verdict['value'])}: {verdict.get('level')}"
    return "—"


def _compute_text(results: Mapping[str, Any]) -> str:
    summary = results.get("compute") or {}
    return compute.describe(summary) if summary.get("runs") else "—"


def _decision_text(decision: Mapping[str, Any] | None) -> str:
    if not decision:
        return "—"
    text = decision["verdict"] + (f" by {decision['by']}" if decision.get("by") else "")
    text += f" ({decision['date']})" if decision.get("date") else ""
    return text + (f": {decision['note']}" if decision.get("note") else "")


def render_project_findings(project: Mapping[str, Any], experiments: Mapping[str, Mapping[str, Any]],
                            gates: Mapping[str, Mapping[str, Any]], findings_paths: Mapping[str, str],
                            findings_path: Path, root: Path, stub: bool, generated_at: str) -> Document:
    """The project FINDINGS document: the experiments table and gate progress."""
    name = project.get("name") or root.name
    done = sum(1 for results in experiments.values() if results.get("status") == "completed")
    gate_counts = {status: sum(1 for gate in gates.values() if gate.get("status") == status)
                   for status in ("passed", "failed", "pending")}
    status_lines = [_stub_banner(stub).rstrip()] if stub else []
    if project.get("hypothesis"):
        status_lines.append(f"**Hypothesis:** {project['hypothesis']}")
    status_lines.append(f"**Progress:** {done} of {len(experiments)} experiments completed; gates: "
                        + ", ".join(f"{count} {status}" for status, count in gate_counts.items()) + ".")
    if spent := compute.project_line(experiments):
        status_lines.append(f"**Compute in total:** {spent}.")
    status_lines.append(f"_Generated by labrunner at {generated_at}._")
    table = ["| Experiment | Type | Phase | Status | Sub-experiments | Recommendation | Key result | Compute |",
             "|---|---|---|---|---|---|---|---|"]
    for exp_id, results in experiments.items():
        counts = results.get("counts") or {}
        total = sum(value for key, value in counts.items() if key != "skipped")
        subs = f"{counts.get('completed', 0)}/{total}" + (f" ({counts['skipped']} skipped)" if counts.get("skipped") else "")
        link = _link(findings_paths[exp_id], findings_path, root, results.get("name") or exp_id)
        recommendation = (results.get("assessment") or {}).get("recommendation") or "—"
        table.append(f"| {link} | {results.get('type') or ''} | {_num(results.get('phase'))} "
                     f"| {_STATUS_MARK.get(results['status'], '')} {results['status']} | {subs} | {recommendation} "
                     f"| {_cell(_key_result(results))} | {_cell(_compute_text(results))} |")
    gate_table = (["| Gate | Experiments | Status | Computed | Decision | Blocked by | Unlocks |",
                   "|---|---|---|---|---|---|---|"] if gates else [])
    flags = []
    for gate_id, gate in gates.items():
        blockers = "; ".join(gate.get("blockers") or []) or "—"
        computed = gate.get("computed_status", gate["status"])
        decision = _decision_text(gate.get("decision"))
        gate_table.append(f"| {_cell(gate.get('name') or gate_id)} | {', '.join(gate.get('experiments') or [])} "
                          f"| {_STATUS_MARK.get(gate['status'], '')} {gate['status']} | {computed} | {_cell(decision)} "
                          f"| {_cell(blockers)} | {_cell(gate.get('unlocks') or '')} |")
        if gate.get("disagreement"):
            flags.append(f"- ⚠️ **{gate.get('name') or gate_id}: the recorded decision disagrees with the results:** "
                         f"{gate['disagreement']}.")
    if flags:
        gate_table += [""] + flags
    blocks = {
        "status": "\n\n".join(line for line in status_lines if line),
        "experiments": "\n".join(table),
        "gates": "\n".join(gate_table) if gate_table else "No gates in the plan.",
    }
    prompt = "> **To write:** "
    template: list[str | tuple[str, str]] = [
        f"# {name} — findings",
        ("block", "status"),
        "## Summary\n\n" + prompt + "where the project stands, in a paragraph. Everything outside the "
        "`labrunner` markers is yours and is kept as written.",
        "## Experiments",
        ("block", "experiments"),
        "## Gates",
        ("block", "gates"),
        "## Decisions\n\n" + prompt + "what was decided at each gate, and why.",
        "## Next steps\n\n" + prompt + "what to run next.",
    ]
    return Document(title=name, blocks=blocks, template=template)
