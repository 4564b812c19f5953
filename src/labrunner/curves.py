"""Learning curves drawn from what handlers log, so that no handler has to draw them.

Every `runner.log_metrics(..., step=n)` call is a line of the run's metrics.jsonl (labrunner.runner).
For each sub whose current results logged metrics with steps, one figure: a panel per metric, a
line per seed. Only the lines of the attempt that made the current result count (the file keeps
every attempt's lines, failed ones included). matplotlib is imported only to draw.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from labrunner.files import atomic_write_text, atomic_writer, link_or_copy

__all__ = ["MAX_PANELS", "curve_figure", "read_curves", "write_curve_plots"]

MAX_PANELS = 9  # metrics drawn per sub; criterion metrics first
MAX_POINTS = 2000  # per line: a million steps would draw as a solid band anyway

Series = dict[str, list[tuple[float, float]]]  # metric -> [(step, value)]


def read_curves(metrics_path: Path, run_id: str | None, attempt: int | None) -> Series:
    """The stepped, finite numeric values one attempt logged, per metric, in the order logged."""
    series: Series = {}
    try:
        handle = metrics_path.open("rb")
    except OSError:
        return series
    with handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # a line cut short by a crash
            if not isinstance(entry, dict) or entry.get("run") != run_id or entry.get("attempt", 1) != attempt:
                continue
            step = entry.get("step")
            if not _is_number(step):
                continue
            for name, value in (entry.get("metrics") or {}).items():
                if _is_number(value) and math.isfinite(value):
                    series.setdefault(name, []).append((float(step), float(value)))
    return series


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def sub_curves(sub: Mapping[str, Any], root: Path) -> dict[int, Series]:
    """{seed: curves} of a sub's current results (results.yaml's view of the sub)."""
    found = {}
    for run in sub.get("seeds") or [sub]:
        if run.get("status", sub.get("status")) != "completed" or not run.get("result_file"):
            continue
        metrics_path = root / Path(run["result_file"]).parent / "metrics.jsonl"
        curves = read_curves(metrics_path, run.get("run_id"), run.get("attempts") or 1)
        if curves:
            found[int(run.get("seed") or 0)] = curves
    return found


def _metrics_order(by_seed: Mapping[int, Series], preferred: Sequence[str]) -> list[str]:
    logged: dict[str, None] = {}
    for curves in by_seed.values():
        for name in curves:
            logged.setdefault(name, None)
    first = [name for name in preferred if name in logged]
    return (first + [name for name in logged if name not in first])[:MAX_PANELS]


def curve_figure(title: str, by_seed: Mapping[int, Series], preferred: Sequence[str] = ()) -> Any:
    """A panel per metric (at most MAX_PANELS), a line per seed. Lines carry gid "series"."""
    from matplotlib.figure import Figure

    metrics = _metrics_order(by_seed, preferred)
    columns = min(3, len(metrics))
    rows = -(-len(metrics) // columns)
    figure = Figure(figsize=(4.0 * columns, 3.0 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, metric in enumerate(metrics):
        axis = axes[index // columns][index % columns]
        for position, (seed, curves) in enumerate(sorted(by_seed.items())):
            points = _thinned(curves.get(metric) or [])
            if not points:
                continue
            axis.plot([step for step, _ in points], [value for _, value in points], color=f"C{position}",
                      marker="o" if len(points) < 10 else None, label=f"seed {seed}", gid="series")
        axis.set_title(metric, fontsize=10)
        axis.set_xlabel("step")
        if len(by_seed) > 1:
            axis.legend(fontsize=7, loc="best")
    for index in range(len(metrics), rows * columns):  # the empty cells of the last row
        axes[index // columns][index % columns].set_visible(False)
    figure.suptitle(title)
    return figure


def _thinned(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= MAX_POINTS:
        return points
    every = -(-len(points) // MAX_POINTS)
    return points[::every] + ([points[-1]] if (len(points) - 1) % every else [])


def write_curve_plots(results: Mapping[str, Any], folder: Path, root: Path) -> dict[str, str]:
    """One PNG per sub with stepped metrics, in `folder` (made even when there is none: it is the
    rule's output); {sub: path relative to root} for results.yaml.

    Snakemake empties a directory output before its job runs, and the aggregate runs whenever any
    sub of the experiment changes; drawing every sub again each time would cost a second per six
    subs. So each drawing is kept in `.curves-cache/` beside the folder, named by what it shows
    (the runs that made the current results: their lines in metrics.jsonl never change), and
    linked into the folder; only the subs whose results changed are drawn again."""
    folder.mkdir(parents=True, exist_ok=True)
    cache = folder.parent / CACHE_DIR
    cache.mkdir(exist_ok=True)
    written, used = {}, set()
    preferred = [crit.get("metric") or metric for metric, crit in (results.get("criteria") or {}).items()]
    title = "{experiment} / {sub}: learning curves"
    for sub_id, sub in (results.get("subs") or {}).items():
        key = _drawing_key(sub, preferred)
        if key is None:
            continue
        drawn, nothing = cache / f"{sub_id}-{key}.png", cache / f"{sub_id}-{key}.none"
        used.update((drawn.name, nothing.name))
        if not drawn.exists() and not nothing.exists():
            by_seed = sub_curves(sub, root)
            if not by_seed:
                atomic_write_text(nothing, "")
                continue
            figure = curve_figure(title.format(experiment=results.get("experiment"), sub=sub_id), by_seed, preferred)
            with atomic_writer(drawn) as handle:
                figure.savefig(handle, format="png", dpi=100)
        if drawn.exists():
            path = folder / f"{sub_id}.png"
            link_or_copy(drawn, path)
            written[sub_id] = _relative(path, root)
    for stale in cache.iterdir():  # drawings of results that are no longer current
        if stale.name not in used:
            stale.unlink(missing_ok=True)
    return written


CACHE_DIR = ".curves-cache"  # beside the curves folder; no id names a hidden folder
_DRAWING_VERSION = "1"  # bump when curve_figure draws differently


def _drawing_key(sub: Mapping[str, Any], preferred: Sequence[str]) -> str | None:
    """What a sub's drawing shows: the run and attempt that made each seed's current result."""
    runs = [(run.get("seed"), run.get("run_id"), run.get("attempts")) for run in sub.get("seeds") or [sub]
            if run.get("status", sub.get("status")) == "completed" and run.get("result_file")]
    if not runs:
        return None
    text = json.dumps([_DRAWING_VERSION, MAX_PANELS, MAX_POINTS, list(preferred), runs], default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()
