"""The library calls behind the aggregate rules: one function per rule, plain arguments.

The rules (workflow/rules/aggregate.smk) call these from `run:` blocks, which Snakemake executes
inside its own process (the profile's `force-use-threads`): one Python start and one import of
labrunner, matplotlib and the plan per invocation, not one per job; a plan edit rebuilds every
aggregate, and 40 starts of Python with pandas and matplotlib had cost 16 s on 2 cores. Keeping
the logic here makes it testable without Snakemake and keeps the rules free of logic.

Because the steps run in threads of one process, nothing here redirects sys.stdout: a step
prints to the log it is given, and the steps run one at a time (`_ONE_STEP_AT_A_TIME`): pyplot
and the caches below are not made for threads, and the work is Python that holds the GIL anyway.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from labrunner import layout
from labrunner.aggregate import load_results, write_experiment_outputs, write_gates
from labrunner.errors import LabrunnerError
from labrunner.files import AppendLog
from labrunner.findings import findings_stamp, render_experiment_findings, render_project_findings, write_findings
from labrunner.plan import Plan, load_plan_cached
from labrunner.redact import redact
from labrunner.report import write_findings_html

__all__ = ["StepFailed", "aggregate_experiment", "aggregate_experiment_job", "experiment_findings", "experiment_findings_job",
           "gates", "gates_job", "logged", "project_findings", "project_findings_job"]

_ONE_STEP_AT_A_TIME = threading.Lock()


class StepFailed(Exception):
    """An aggregate step failed; the message says why and names its log, which holds the traceback.
    Snakemake reports it as the rule's error (an exception, not SystemExit: the step runs in one of
    Snakemake's threads, where SystemExit would escape its error handling)."""


@contextlib.contextmanager
def logged(log_path: str | Path) -> Iterator[TextIO]:
    """The rule's log file, opened fresh, for the step to print to; if the step fails, its
    traceback goes there too. An error of labrunner's own (a broken FINDINGS marker, a full disk)
    reaches the console as its message, which names the file and what to do; anything else with
    where it happened. Either way the step then raises StepFailed."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with _ONE_STEP_AT_A_TIME, AppendLog(log_path, fresh=True) as log:
        try:
            yield log  # type: ignore[misc]
        except LabrunnerError as exc:
            with contextlib.suppress(OSError):  # the log may be on the disk that is full
                traceback.print_exc(file=log)  # type: ignore[arg-type]
            message = redact(f"labrunner: step failed: {exc} (log: {log_path})")
            print(message, file=sys.stderr)
            raise StepFailed(message) from None
        except Exception as exc:
            with contextlib.suppress(OSError):
                traceback.print_exc(file=log)  # type: ignore[arg-type]
            print(redact(f"labrunner: step failed, see {log_path}:\n{traceback.format_exc(limit=1)}"), file=sys.stderr)
            raise StepFailed(redact(f"labrunner: step failed: {type(exc).__name__}: {exc} (log: {log_path})")) from exc


def _plan(plan_path: str) -> Plan:
    """The plan as the rules see it: relative paths start where Snakemake runs (the project root).
    Validated once per invocation while the file stays as it is (an edit during the run is read)."""
    return load_plan_cached(plan_path, Path.cwd())


def aggregate_experiment(plan_path: str, experiment_id: str, stub: bool, results: str, table_md: str,
                         table_csv: str, plot: str, ignore_gates: bool = False, sweeps: str | None = None,
                         curves: str | None = None, report: str | None = None, out: TextIO | None = None) -> None:
    plan = _plan(plan_path)
    data = write_experiment_outputs(plan, experiment_id, stub, Path(results), Path(table_md), Path(table_csv), Path(plot),
                                    ignore_gates=ignore_gates, sweeps_dir=Path(sweeps) if sweeps else None,
                                    curves_dir=Path(curves) if curves else None, report_dir=Path(report) if report else None)
    print(f"{experiment_id}: {data['status']}, recommendation {data['assessment'].get('recommendation')}",
          file=out or sys.stdout)


def gates(plan_path: str, stub: bool, results_files: Sequence[str], output: str, out: TextIO | None = None) -> None:
    plan = _plan(plan_path)
    data = write_gates(plan, stub, [Path(p) for p in results_files], Path(output))
    for gate_id, gate in data["gates"].items():
        print(f"{gate_id}: {gate['status']}", file=out or sys.stdout)


def experiment_findings(results_file: str, output: str, html: str | None = None, out: TextIO | None = None) -> None:
    results = load_results([Path(results_file)])
    (experiment_id, data), = results.items()
    root = Path.cwd()
    write_findings(Path(output), render_experiment_findings(data, Path(output), root, results_file))
    if html:
        write_findings_html(Path(output), Path(html))
    print(f"{experiment_id}: wrote {output}", file=out or sys.stdout)


def project_findings(plan_path: str, stub: bool, results_files: Sequence[str], gates_file: str, output: str,
                     html: str | None = None, out: TextIO | None = None) -> None:
    plan = _plan(plan_path)
    experiments = load_results([Path(p) for p in results_files])
    from labrunner.yamlio import load_yaml_cached

    gate_data = (load_yaml_cached(Path(gates_file)) or {}).get("gates", {})  # the end of the run reads it again
    paths = {exp_id: layout.experiment_findings_path(exp_id, stub).as_posix() for exp_id in experiments}
    document = render_project_findings(plan.model.project.model_dump(exclude_none=True), experiments, gate_data, paths,
                                       Path(output), Path.cwd(), stub, findings_stamp(experiments))
    write_findings(Path(output), document)
    if html:
        write_findings_html(Path(output), Path(html))
    print(f"wrote {output}", file=out or sys.stdout)


# --- the rules' run: blocks call these with Snakemake's own objects (named lists of files) ---------


def aggregate_experiment_job(input: Any, output: Any, params: Any, wildcards: Any, log: Any) -> None:
    with logged(log[0]) as out:
        aggregate_experiment(input.plan, wildcards.exp, params.stub, output.results, output.table_md, output.table_csv,
                             output.plot, ignore_gates=params.ignore_gates, sweeps=output.sweeps, curves=output.curves,
                             report=output.artifacts, out=out)


def gates_job(input: Any, output: Any, params: Any, wildcards: Any, log: Any) -> None:
    with logged(log[0]) as out:
        gates(input.plan, params.stub, input.results, output[0], out=out)


def experiment_findings_job(input: Any, output: Any, params: Any, wildcards: Any, log: Any) -> None:
    with logged(log[0]) as out:
        experiment_findings(input.results, output[0], output.html, out=out)


def project_findings_job(input: Any, output: Any, params: Any, wildcards: Any, log: Any) -> None:
    with logged(log[0]) as out:
        project_findings(input.plan, params.stub, input.results, input.gates, output[0], output.html, out=out)
