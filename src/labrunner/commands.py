"""The `labrunner` commands that set a project up and speak JSON: init, new, guide, and the
`--json` forms of validate and status. cli.py holds the parser and the other commands.

Exit codes, the same for every command (docs/cli.md):
    0    done: the plan is valid, nothing failed, the files were written or kept
    1    the command ran and found a problem to act on: an invalid plan, a failed or damaged
         sub-experiment (status), an edit that would leave the plan invalid (new)
    2    the command line itself is wrong (argparse's usage error)
    3    refused, nothing was run or changed: `labrunner run` of a sub that is held (a dependency
         or a gate) or that another attempt is running
    130  interrupted (Ctrl-C)
    141  the reader of the output went away (`labrunner status | head`), as for SIGPIPE
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from labrunner.errors import LabrunnerError

__all__ = ["EXIT_CODES", "HANDLERS", "add_commands", "cmd_status_json", "cmd_validate_json"]

EXIT_CODES = """\
exit status:
  0    done: the plan is valid, nothing failed, the files were written or kept
  1    a problem to act on: an invalid plan, a failed sub-experiment (status), an edit
       that would leave the plan invalid (new)
  2    the command line is wrong
  3    refused, nothing run or changed (run: the sub is held, or another attempt runs it)
  130  interrupted
  141  the reader of the output went away (`labrunner status | head`)"""


def add_commands(commands: Any) -> None:
    """Add init, new and guide to the `labrunner` subparsers."""
    init = commands.add_parser("init", help="make this repository (or DIR) a labrunner project",
                               epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    init.add_argument("dir", nargs="?", type=Path, default=Path("."), help="project folder (default: here)")

    new = commands.add_parser("new", help="add an experiment or a sub-experiment, with handler templates")
    kinds = new.add_subparsers(dest="kind", required=True, metavar="KIND")
    experiment = kinds.add_parser("experiment", help="add an experiment to the plan", epilog=EXIT_CODES,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_argument("id", help="experiment id, e.g. e1-baseline")
    experiment.add_argument("--sub", action="append", default=[], metavar="SUB", required=True,
                            help="a sub-experiment id (repeat for several)")
    experiment.add_argument("--metric", action="append", default=[], metavar="NAME:higher|lower[:T,A,F]",
                            help="a success criterion: its direction, and optionally its target, acceptable "
                                 "and failure thresholds (without them it is written commented out, to fill in)")
    experiment.add_argument("--plan", type=Path, default=None)
    sub = kinds.add_parser("sub", help="add a sub-experiment to an experiment of the plan", epilog=EXIT_CODES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.add_argument("experiment", help="experiment id")
    sub.add_argument("sub", help="sub-experiment id")
    sub.add_argument("--plan", type=Path, default=None)

    commands.add_parser("guide", help="print the loop for coding agents (init writes it into AGENTS.md)")


def _plan_path(value: Path | None) -> Path:
    from labrunner.plan import DEFAULT_PLAN_PATH

    return value if value is not None else DEFAULT_PLAN_PATH


def _project_root(plan_path: Path) -> Path:
    from labrunner.plan import project_root_for

    return project_root_for(plan_path)


def cmd_init(args: argparse.Namespace) -> int:
    from labrunner.scaffold import init_project

    print("\n".join(init_project(args.dir)))
    return 0


def cmd_new(args: argparse.Namespace) -> int:
    from labrunner.scaffold import new_experiment, new_sub, parse_metric

    plan_path = _plan_path(args.plan)
    root = _project_root(plan_path)
    if args.kind == "experiment":
        metrics = [parse_metric(text) for text in args.metric]
        report = new_experiment(root, plan_path, args.id, args.sub, metrics)
    else:
        report = new_sub(root, plan_path, args.experiment, args.sub)
    print("\n".join(report))
    return 0


def cmd_guide(args: argparse.Namespace) -> int:
    from labrunner.scaffold import guide_text

    print(guide_text(), end="")
    return 0


def _print_json(document: dict[str, Any]) -> None:
    """Strict JSON on stdout (status_json.jsonable spells NaN as text), secrets masked: an error
    message or a finding can hold a token (see labrunner.redact)."""
    from labrunner.redact import redact_data

    print(json.dumps(redact_data(document), indent=2, allow_nan=False))


def _complain(command: str, error: LabrunnerError) -> None:
    from labrunner.redact import redact

    print(redact(f"labrunner {command}: {error}"), file=sys.stderr)


def cmd_validate_json(args: argparse.Namespace) -> int:
    from labrunner.plan import load_plan
    from labrunner.status_json import VALIDATE_SCHEMA, error_document, validate_document

    try:
        document = validate_document(load_plan(_plan_path(args.plan)))
    except LabrunnerError as exc:
        _print_json(error_document(VALIDATE_SCHEMA, exc))
        _complain("validate", exc)
        return 1
    _print_json(document)
    return 0


def cmd_status_json(args: argparse.Namespace) -> int:
    from labrunner import parsed
    from labrunner.plan import load_plan
    from labrunner.status_json import STATUS_SCHEMA, error_document, status_document

    try:
        plan = load_plan(_plan_path(args.plan), check_handlers=False)
        with parsed.kept_for(plan.root):  # every record is read: most as the last run parsed them
            document = status_document(plan, stub=args.stub)
    except LabrunnerError as exc:
        _print_json(error_document(STATUS_SCHEMA, exc))
        _complain("status", exc)
        return 1
    _print_json(document)
    return 0 if document["ok"] else 1


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {"init": cmd_init, "new": cmd_new, "guide": cmd_guide}
