"""The `labrunner` command: validate a plan, run one sub-experiment, show the status table.
init, new, guide and the --json forms live in labrunner.commands, with the exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from labrunner.errors import LabrunnerError

if TYPE_CHECKING:
    from labrunner.execution import Backend
    from labrunner.plan import Plan

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    from labrunner.commands import EXIT_CODES, add_commands

    parser = argparse.ArgumentParser(prog="labrunner", description="Run a research plan's experiments.",
                                     epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check research_plan.yaml and its handlers; print a summary")
    validate.add_argument("--plan", type=Path, default=None, help="plan file (default: research/research_plan.yaml)")
    validate.add_argument("--json", action="store_true", help="print the result as JSON (schema in docs/cli.md)")

    run = commands.add_parser("run", help="run one sub-experiment and write its records")
    run.add_argument("experiment", help="experiment id")
    run.add_argument("sub", help="sub-experiment id (or SUB/seed-N, as in the results tree)")
    run.add_argument("--seed", type=int, default=None, help="seed (default: the sub's first seed)")
    run.add_argument("--stub", action="store_true", help="use stub_params and the stub results tree")
    run.add_argument("--plan", type=Path, default=None)
    run.add_argument("--results-dir", type=Path, default=None, help="results root (default: results, or stub/results)")
    run.add_argument("--backend", choices=("local", "modal"), default=None, help="override the plan's backend")

    status = commands.add_parser("status", help="table of what passed, failed, is pending")
    status.add_argument("--plan", type=Path, default=None)
    status.add_argument("--stub", action="store_true", help="show the stub tree")
    status.add_argument("--json", action="store_true", help="print everything as JSON, with the next commands "
                        "(schema in docs/cli.md)")
    add_commands(commands)
    return parser


def _plan_path(value: Path | None) -> Path:
    from labrunner.plan import DEFAULT_PLAN_PATH

    return value if value is not None else DEFAULT_PLAN_PATH


def cmd_validate(args: argparse.Namespace) -> int:
    if args.json:
        from labrunner.commands import cmd_validate_json

        return cmd_validate_json(args)
    from labrunner.plan import load_plan
    from labrunner.summary import plan_summary

    plan = load_plan(_plan_path(args.plan))
    print(plan_summary(plan))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from labrunner.execution import run_sub
    from labrunner.plan import load_plan

    from labrunner.pipeline import BACKEND_ENV, split_run

    sub_id, run_seed = split_run(args.sub)
    seed = args.seed if args.seed is not None else run_seed
    plan = load_plan(_plan_path(args.plan), check_handlers=(args.experiment, sub_id))
    spec = plan.sub(args.experiment, sub_id)
    if seed is not None and seed not in spec.seeds:
        seeds = ", ".join(map(str, spec.seeds))
        raise LabrunnerError(f"seed {seed} is not among the seeds of {spec.key} in the plan ({seeds})")
    backend = _backend(args.backend or os.environ.get(BACKEND_ENV) or spec.backend, plan)
    outcome = run_sub(plan, spec, seed, stub=args.stub, results_root=args.results_dir, backend=backend)
    from labrunner.summary import describe_run

    print(describe_run(outcome.record, outcome.paths, plan.root), file=sys.stdout if outcome.ok else sys.stderr)
    code = EXIT_OK if outcome.ok else EXIT_FAILED
    if outcome.tracking_hung:
        # wandb's exit hooks would wait on the call that already hung; the records are written
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _backend(name: str, plan: Plan) -> Backend:
    from labrunner.execution import LocalBackend

    if name == "local":
        return LocalBackend()
    from labrunner.backends import PROJECT_ROOT_ENV

    os.environ[PROJECT_ROOT_ENV] = str(plan.root.resolve())  # the Modal image carries this project
    from labrunner.backends.modal_backend import ModalBackend

    return ModalBackend(secret_name=plan.model.defaults.modal_secret)


def cmd_status(args: argparse.Namespace) -> int:
    if args.json:
        from labrunner.commands import cmd_status_json

        return cmd_status_json(args)
    from labrunner.plan import load_plan
    from labrunner.summary import status_report

    plan = load_plan(_plan_path(args.plan), check_handlers=False)
    text, failed = status_report(plan, stub=args.stub)
    print(text)
    return EXIT_FAILED if failed else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from labrunner.commands import HANDLERS

    handlers = {"validate": cmd_validate, "run": cmd_run, "status": cmd_status, **HANDLERS}
    try:
        return handlers[args.command](args)
    except LabrunnerError as exc:
        print(f"labrunner {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("labrunner: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
