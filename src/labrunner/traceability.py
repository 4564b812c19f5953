"""The parts of FINDINGS.md that say where each number came from and what changed it.

- A value read from one run links to that run's result.yaml; a mean over seeds links to the
  sub's folder, which holds every seed's result.
- A run whose result replaced an earlier one says how its metrics moved and why ("accuracy 0.912
  -> 0.934 after the rerun; handler changed"), from the `previous` that results.yaml keeps.
- The appendix shows each run's commit (and whether the tree was dirty, linking its patch), device,
  duration and compute; the status block, the compute of the experiment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labrunner import compute
from labrunner.wording import SIGNIFICANT_DIGITS

__all__ = ["Links", "change_line", "changed_subs", "commit_cell", "compute_cell", "compute_line", "curve_lines",
           "device_cell"]

MAX_CHANGED_METRICS = 4  # in one change line; criterion metrics first


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.{SIGNIFICANT_DIGITS}g}"
    return "" if value is None else str(value)


@dataclass(frozen=True)
class Links:
    """Relative links from one FINDINGS file to files under the project root."""

    findings_path: Path  # relative to root
    root: Path

    def href(self, target: str) -> str:
        return Path(os.path.relpath(self.root / target, (self.root / self.findings_path).parent)).as_posix()

    def to(self, text: str, target: str | None) -> str:
        """`text` as a link to `target`, or as it is when there is no target."""
        return f"[{text}]({self.href(target)})" if target and text else text

    def run(self, text: str, run: Mapping[str, Any] | None) -> str:
        """A value read from one run: a link to its result.yaml."""
        return self.to(text, (run or {}).get("result_file"))

    def sub(self, text: str, sub: Mapping[str, Any] | None) -> str:
        """A value of a sub: its result.yaml with one seed, its folder (every seed's result) with several."""
        if not sub:
            return text
        if not sub.get("seeds"):
            return self.run(text, sub)
        files = [run["result_file"] for run in sub["seeds"] if run.get("result_file")]
        return self.to(text, Path(files[0]).parent.parent.as_posix() if files else None)

    def seed(self, text: str, sub: Mapping[str, Any] | None, seed: Any) -> str:
        """A value of one seed of a sub."""
        runs = (sub or {}).get("seeds") or [sub or {}]
        return self.run(text, next((run for run in runs if run.get("seed") == seed), None))


def change_line(run: Mapping[str, Any], prefix: str, preferred: Sequence[str]) -> str | None:
    """"accuracy 0.912 -> 0.934 after the rerun; handler changed", for a run whose current result
    replaced an earlier one; None for a first result, or a rerun that changed neither the code,
    the params nor a metric."""
    previous = run.get("previous")
    if not previous or run.get("status") != "completed":
        return None
    before, after = previous.get("metrics") or {}, run.get("metrics") or {}
    moved = [name for name in after if name in before and _differs(before[name], after[name])]
    moved = ([name for name in preferred if name in moved] + [name for name in moved if name not in preferred])
    changes = list(previous.get("changes") or [])
    if not moved and not changes:
        return None
    shown = ", ".join(f"{name} {_num(before[name])} -> {_num(after[name])}" for name in moved[:MAX_CHANGED_METRICS])
    if len(moved) > MAX_CHANGED_METRICS:
        shown += f" (and {len(moved) - MAX_CHANGED_METRICS} more)"
    why = "; ".join(changes) if changes else "same code, params and seed"
    return f"{prefix}{shown or 'metrics unchanged'} after the rerun; {why}"


def _differs(before: Any, after: Any) -> bool:
    if isinstance(before, float) and isinstance(after, float):
        return f"{before:.{SIGNIFICANT_DIGITS}g}" != f"{after:.{SIGNIFICANT_DIGITS}g}"  # as the tables show them
    return before != after


def changed_subs(results: Mapping[str, Any]) -> list[str]:
    """"e1_2 (handler changed)": the subs whose current results follow a change of code or params."""
    found = []
    for sub_id, sub in (results.get("subs") or {}).items():
        reasons: dict[str, None] = {}
        for run in sub.get("seeds") or [sub]:
            if run.get("status") == "completed":
                for reason in (run.get("previous") or {}).get("changes") or []:
                    reasons.setdefault(reason, None)
        if reasons:
            found.append(f"{sub_id} ({'; '.join(reasons)})")
    return found


def commit_cell(run: Mapping[str, Any], links: Links) -> str:
    """"abc1234", "abc1234 +dirty" linking the patch, or "" outside git."""
    git = run.get("git") or {}
    commit = git.get("commit")
    if not commit:
        return ""
    if not git.get("dirty"):
        return f"`{commit[:7]}`"
    return f"`{commit[:7]}` " + links.to("+dirty", git.get("diff"))


def device_cell(run: Mapping[str, Any]) -> str:
    """"cuda (NVIDIA A100-SXM4-40GB)" when the handler's process named its GPU."""
    device = run.get("device") or ""
    gpu_name = (run.get("environment") or {}).get("gpu_name")
    return f"{device} ({gpu_name})" if gpu_name else device


def compute_cell(run: Mapping[str, Any]) -> str:
    """GPU-seconds and the estimated cost of one run; "" without a GPU."""
    facts = run.get("compute") or {}
    if not facts.get("gpu_s"):
        return ""
    count = f"{facts['gpu_count']}× " if (facts.get("gpu_count") or 1) > 1 else ""
    text = f"{facts['gpu_s']:.1f} GPU-s on {count}{facts.get('gpu')}"
    return text + (f", est. ${facts['cost_usd']:.4g}" if facts.get("cost_usd") is not None else "")


def compute_line(results: Mapping[str, Any]) -> str | None:
    """The experiment's compute, for its status block."""
    summary = results.get("compute")
    if not summary or not summary.get("runs"):
        return None
    return f"**Compute:** {compute.describe(summary)} (each run's latest record, its retries included)."


def curve_lines(results: Mapping[str, Any], links: Links) -> list[str]:
    """The learning curves drawn from the subs' metrics.jsonl (labrunner.curves)."""
    curves = results.get("curves") or {}
    if not curves:
        return []
    return ["### Learning curves", "",
            "Drawn by labrunner from what each sub logged with a step (`runner.log_metrics(..., step=...)`), "
            "one line per seed.",
            *[f"\n![{sub_id}: learning curves]({links.href(path)})" for sub_id, path in curves.items()]]
