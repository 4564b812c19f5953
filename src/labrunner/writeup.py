"""The write-up always describes the present: every aggregate output rewritten from the records.

Snakemake runs an aggregate job only when every job it needs succeeded. After a sub fails (or is
interrupted, or is held by a gate during the run) the experiment's results.yaml, tables, plot,
FINDINGS, gates.yaml and the project FINDINGS would go on describing an earlier state: old
values under an old "completed", a gate still "passed". So at the end of every run the
workflow's hooks call `refresh`, which rewrites each of them from the records as they are now.

Each file rewritten here keeps the modification time it had; one that did not exist gets a time
older than its inputs. Snakemake decides what is out of date from modification times, so its view
is exactly what it was before the refresh: the next run reruns what failed or was left undone (the
failure records are inputs of the aggregates, see rules/aggregate.smk), no more and no less. Files
whose content would not change are not touched at all.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from labrunner import layout
from labrunner.aggregate import collect_gates, collect_project, write_experiment_files
from labrunner.errors import LabrunnerError
from labrunner.findings import findings_stamp, render_experiment_findings, render_project_findings, write_findings
from labrunner.plan import Plan
from labrunner.records import now_iso
from labrunner.report import write_findings_html
from labrunner.state import run_dirs
from labrunner.yamlio import load_yaml_cached, write_yaml

__all__ = ["refresh"]

# keys that change with every write, not with the state (`curves` is named as the plots are drawn)
_VOLATILE = ("generated_at", "plot", "curves")


def refresh(plan: Plan, stub: bool = False, ignore_gates: bool = False) -> list[str]:
    """Rewrite every write-up file whose content no longer matches the records; return their
    paths. Paths are relative to the project root, which must be the working directory."""
    view = collect_project(plan, stub, ignore_gates)
    written: list[str] = []
    results_files: dict[str, str] = {}
    experiments: dict[str, dict[str, Any]] = {}  # what each experiment's files say once refreshed
    for exp_id, results in view.experiments.items():
        results_path = layout.experiment_results_dir(exp_id, stub) / "results.yaml"
        results_files[exp_id] = results_path.as_posix()
        existing = _load(results_path)
        if existing is not None and _same(existing, results):
            results = existing  # unchanged: render from what is on disk, so the FINDINGS do not churn
        else:
            folder = results_path.parent
            outputs = [results_path, folder / "metrics.md", folder / "metrics.csv", folder / "criteria.png"]
            # the sweep and learning-curve plots and their folders, directory outputs of the same job
            sweep_plots = [Path(sweep["plot"]) for sweep in (results.get("sweeps") or {}).values()]
            curve_plots = [folder / "curves" / f"{sub_id}.png" for sub_id in results.get("subs") or {}]
            with _kept_mtimes([*outputs, folder / "sweeps", *sweep_plots, folder / "curves", *curve_plots, folder / "report"],
                              _experiment_inputs(plan, exp_id, stub)):
                write_experiment_files(plan, results, results_path, outputs[1], outputs[2], outputs[3], folder / "sweeps",
                                       folder / "curves", folder / "report")
            written += [path.as_posix() for path in [*outputs, *sweep_plots, *map(Path, results["curves"].values())]]
        experiments[exp_id] = results
        findings = layout.experiment_findings_path(exp_id, stub)
        document = render_experiment_findings(results, findings, Path.cwd(), results_path.as_posix())
        if _write_findings(findings, document, [results_path]):
            written.append(findings.as_posix())
        html = layout.experiment_findings_html_path(exp_id, stub)
        if _write_html(findings, html, [results_path]):
            written.append(html.as_posix())
    gates_path = layout.gates_path(stub)
    gates = collect_gates(plan, experiments)
    existing_gates = _load(gates_path)
    if existing_gates is None or existing_gates.get("gates") != gates or existing_gates.get("stub") != stub:
        inputs = [layout.experiment_results_dir(e, stub) / "results.yaml"
                  for e in {e for gate in plan.gates.values() for e in gate.experiments} if e in experiments]
        with _kept_mtimes([gates_path], [*inputs, plan.path]):
            write_yaml(gates_path, {"generated_at": now_iso(), "stub": stub, "gates": gates})
        written.append(gates_path.as_posix())
    project = layout.project_findings_path(stub)
    experiment_findings = {exp_id: layout.experiment_findings_path(exp_id, stub).as_posix() for exp_id in experiments}
    document = render_project_findings(plan.model.project.model_dump(exclude_none=True), experiments, gates,
                                       experiment_findings, project, Path.cwd(), stub, findings_stamp(experiments))
    inputs = [Path(p) for p in results_files.values()] + [Path(p) for p in experiment_findings.values()] + [gates_path, plan.path]
    if _write_findings(project, document, inputs):
        written.append(project.as_posix())
    html = layout.project_findings_html_path(stub)
    if _write_html(project, html, inputs):
        written.append(html.as_posix())
    return written


def refresh_quietly(plan: Plan, stub: bool, ignore_gates: bool) -> None:
    """`refresh` for the end-of-run hooks: a problem is reported, never raised, so that it cannot
    hide the outcome of the run itself."""
    try:
        written = refresh(plan, stub, ignore_gates)
    except (LabrunnerError, OSError) as exc:
        print(f"labrunner: the write-up could not be brought up to date: {exc}", file=sys.stderr)
        return
    shown = [path for path in written
             if not path.endswith(("metrics.md", "metrics.csv", "criteria.png", ".html")) and "/curves/" not in path]
    if shown:
        print(f"labrunner: brought the write-up up to date with the records: {', '.join(shown)}", file=sys.stderr)


def _load(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = load_yaml_cached(path)
    except LabrunnerError:
        return None
    return data if isinstance(data, dict) else None


def _same(existing: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    strip = lambda data: {key: value for key, value in data.items() if key not in _VOLATILE}  # noqa: E731
    return strip(existing) == strip(new)


def _experiment_inputs(plan: Plan, exp_id: str, stub: bool) -> list[Path]:
    """What the experiment's aggregate job reads: each run's records, and the plan."""
    root = plan.root
    files = [plan.path]
    for _spec, _seed, paths in run_dirs(plan, exp_id, stub):
        files += [paths.result, paths.failure]
    return [path if path.is_absolute() else root / path for path in files]


def _write_findings(path: Path, document: Any, inputs: Iterable[Path]) -> bool:
    before = path.read_bytes() if path.exists() else None
    with _kept_mtimes([path], inputs):
        write_findings(path, document)
    return path.read_bytes() != before


def _write_html(findings: Path, html: Path, inputs: Iterable[Path]) -> bool:
    """The HTML twin of a FINDINGS file (labrunner.report), an output of the same rule."""
    if not findings.exists():
        return False
    with _kept_mtimes([html], inputs):
        return write_findings_html(findings, html)


@contextmanager
def _kept_mtimes(outputs: Iterable[Path], inputs: Iterable[Path]) -> Iterator[None]:
    """Write outputs without changing what Snakemake sees: an existing file keeps its time; a new
    one gets a time one second older than the oldest of its inputs (so its job still needs to
    run, as it did before)."""
    outputs = [Path(path) for path in outputs]
    before = {path: path.stat().st_mtime_ns for path in outputs if path.exists()}
    yield
    oldest = min((path.stat().st_mtime_ns for path in inputs if Path(path).exists()), default=None)
    fallback = (oldest - 1_000_000_000) if oldest is not None else 0
    for path in outputs:
        if not path.exists():
            continue
        mtime_ns = before.get(path, max(fallback, 0))
        os.utime(path, ns=(path.stat().st_atime_ns, mtime_ns))
