"""The library calls behind the aggregate rules: one function per rule, plain arguments.

The scripts in workflow/scripts/ read `snakemake.input/params/output` and call one of these; keeping the
logic here makes it testable without Snakemake and keeps the scripts free of logic.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path

from labrunner import layout
from labrunner.aggregate import load_results, write_experiment_outputs, write_gates
from labrunner.errors import LabrunnerError
from labrunner.files import AppendLog
from labrunner.findings import findings_stamp, render_experiment_findings, render_project_findings, write_findings
from labrunner.plan import Plan, load_plan
from labrunner.records import now_iso
from labrunner.redact import redact
from labrunner.report import write_findings_html

__all__ = ["aggregate_experiment", "experiment_findings", "gates", "logged", "project_findings"]


@contextlib.contextmanager
def logged(log_path: str | Path) -> Iterator[None]:
    """Send a step's output, and its traceback if it fails, to the rule's log file. An error of
    labrunner's own (a broken FINDINGS marker, a full disk) reaches the console as its message,
    which names the file and what to do; anything else with where it happened."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with AppendLog(log_path, fresh=True) as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):  # type: ignore[type-var]
        try:
            yield
        except LabrunnerError as exc:
            with contextlib.suppress(OSError):  # the log may be on the disk that is full
                traceback.print_exc(file=log)  # type: ignore[arg-type]
            print(redact(f"labrunner: step failed: {exc} (log: {log_path})"), file=sys.__stderr__)
            raise SystemExit(1) from None
        except BaseException:
            with contextlib.suppress(OSError):
                traceback.print_exc(file=log)  # type: ignore[arg-type]
            print(redact(f"labrunner: step failed, see {log_path}:\n{traceback.format_exc(limit=1)}"), file=sys.__stderr__)
            raise


def _plan(plan_path: str) -> Plan:
    """The plan as the rules see it: relative paths start where Snakemake runs (the project root)."""
    return load_plan(Path(plan_path), root=Path.cwd(), check_handlers=False)


def aggregate_experiment(plan_path: str, experiment_id: str, stub: bool, results: str, table_md: str,
                         table_csv: str, plot: str, ignore_gates: bool = False, sweeps: str | None = None,
                         curves: str | None = None, report: str | None = None) -> None:
    plan = _plan(plan_path)
    data = write_experiment_outputs(plan, experiment_id, stub, Path(results), Path(table_md), Path(table_csv), Path(plot),
                                    ignore_gates=ignore_gates, sweeps_dir=Path(sweeps) if sweeps else None,
                                    curves_dir=Path(curves) if curves else None, report_dir=Path(report) if report else None)
    print(f"{experiment_id}: {data['status']}, recommendation {data['assessment'].get('recommendation')}")


def gates(plan_path: str, stub: bool, results_files: Sequence[str], output: str) -> None:
    plan = _plan(plan_path)
    data = write_gates(plan, stub, [Path(p) for p in results_files], Path(output))
    for gate_id, gate in data["gates"].items():
        print(f"{gate_id}: {gate['status']}")


def experiment_findings(results_file: str, output: str, html: str | None = None) -> None:
    results = load_results([Path(results_file)])
    (experiment_id, data), = results.items()
    root = Path.cwd()
    write_findings(Path(output), render_experiment_findings(data, Path(output), root, results_file))
    if html:
        write_findings_html(Path(output), Path(html))
    print(f"{experiment_id}: wrote {output}")


def project_findings(plan_path: str, stub: bool, results_files: Sequence[str], gates_file: str, output: str,
                     html: str | None = None) -> None:
    plan = _plan(plan_path)
    experiments = load_results([Path(p) for p in results_files])
    from labrunner.yamlio import load_yaml

    gate_data = (load_yaml(Path(gates_file)) or {}).get("gates", {})
    paths = {exp_id: layout.experiment_findings_path(exp_id, stub).as_posix() for exp_id in experiments}
    document = render_project_findings(plan.model.project.model_dump(exclude_none=True), experiments, gate_data, paths,
                                       Path(output), Path.cwd(), stub, findings_stamp(experiments))
    write_findings(Path(output), document)
    if html:
        write_findings_html(Path(output), Path(html))
    print(f"wrote {output}")
