"""The `labrunner` command: validate a plan, run one sub-experiment, show the status table.
init, new, guide and the --json forms live in labrunner.commands, with the exit codes."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from labrunner.errors import LabrunnerError, RunRefusedError

if TYPE_CHECKING:
    from labrunner.execution import Backend
    from labrunner.jobspec import JobPlan, RunPlan, SubSpec
    from labrunner.plan import Plan

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3  # REFUSED: not run, nothing changed
EXIT_CLOSED_PIPE = 128 + 13  # what a program killed by SIGPIPE returns: `labrunner status | head`


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
    run.add_argument("--ignore-gates", action="store_true",
                     help="run even if a gate its experiment requires has not passed")
    run.add_argument("--ignore-holds", action="store_true",
                     help="run even if a dependency has not completed or a required gate has not passed")
    run.add_argument("--spec", default=None, help=argparse.SUPPRESS)  # params/seed/handler fixed by Snakemake
    run.add_argument("--from-snakemake", action="store_true", help=argparse.SUPPRESS)

    status = commands.add_parser("status", help="table of what passed, failed, is pending")
    status.add_argument("--plan", type=Path, default=None)
    status.add_argument("--stub", action="store_true", help="show the stub tree")
    status.add_argument("--json", action="store_true", help="print everything as JSON, with the next commands "
                        "(schema in docs/cli.md)")
    add_commands(commands)
    return parser


def _plan_path(value: Path | None) -> Path:
    from labrunner.layout import DEFAULT_PLAN_PATH

    return value if value is not None else DEFAULT_PLAN_PATH


def cmd_validate(args: argparse.Namespace) -> int:
    if args.json:
        from labrunner.commands import cmd_validate_json

        return cmd_validate_json(args)
    from labrunner.plan import load_plan
    from labrunner.summary import plan_summary

    plan = load_plan(_plan_path(args.plan))
    _say(plan_summary(plan))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from labrunner.execution import run_sub
    from labrunner.jobspec import BACKEND_ENV
    from labrunner.layout import split_run

    sub_id, run_seed = split_run(args.sub)
    seed = args.seed if args.seed is not None else run_seed
    cached = _cached_job_plan(args, sub_id)
    plan: RunPlan = cached if cached is not None else _load_run_plan(args, sub_id)
    spec = cached.spec if cached is not None else _whole(plan).sub(args.experiment, sub_id)
    if args.spec is not None:
        spec, seed = _with_job_spec(spec, args.spec)
    if seed is not None and seed not in spec.seeds:
        seeds = ", ".join(map(str, spec.seeds))
        raise LabrunnerError(f"seed {seed} is not among the seeds of {spec.key} in the plan ({seeds})")
    if not args.ignore_holds and cached is None:  # a cached experiment has no dependency or required gate
        _refuse_if_held(args, _whole(plan), spec)
    backend = _backend(args.backend or os.environ.get(BACKEND_ENV) or spec.backend, plan)
    outcome = run_sub(plan, spec, seed, stub=args.stub, results_root=args.results_dir, backend=backend)
    from labrunner.summary import describe_run

    _say(describe_run(outcome.record, outcome.paths, plan.root), sys.stdout if outcome.ok else sys.stderr)
    code = EXIT_OK if outcome.ok else EXIT_FAILED
    if outcome.tracking_hung:
        # wandb's exit hooks would wait on the call that already hung; the records are written
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _whole(plan: RunPlan) -> Plan:
    """The loaded plan, for what needs all of it (the sub's lookup, holds, Modal): a job given a
    JobPlan never asks for those (_cached_job_plan)."""
    from labrunner.plan import Plan

    if not isinstance(plan, Plan):
        raise TypeError(f"expected a loaded Plan here, got {type(plan).__name__}")
    return plan


def _refuse_if_held(args: argparse.Namespace, plan: Plan, spec: SubSpec) -> None:
    from labrunner.aggregate import hold_reason
    from labrunner.errors import RunHeldError

    held_by = hold_reason(plan, args.experiment, args.stub, ignore_gates=args.ignore_gates)
    if held_by:
        how = ("--config ignore_gates=true runs it anyway while a gate has not passed" if args.from_snakemake
               else "--ignore-holds runs it anyway")
        raise RunHeldError(f"{spec.key} is held: {held_by}. It was not run, and nothing was changed ({how})")


def _cached_job_plan(args: argparse.Namespace, sub_id: str) -> JobPlan | None:
    """A Snakemake job's plan from the job cache (labrunner.jobcache), when it has the job's
    experiment and the job runs locally; None: load the plan."""
    if args.spec is None or not args.from_snakemake:
        return None
    from labrunner.jobcache import read_job_plan
    from labrunner.jobspec import BACKEND_ENV
    from labrunner.layout import results_root

    results = args.results_dir if args.results_dir is not None else results_root(args.stub)
    cached = read_job_plan(_plan_path(args.plan), Path.cwd(), results, args.experiment, sub_id)
    if cached is None or (args.backend or os.environ.get(BACKEND_ENV) or cached.spec.backend) != "local":
        return None  # a Modal job imports modal anyway: the plan's load is nothing beside it
    return cached


def _load_run_plan(args: argparse.Namespace, sub_id: str) -> Plan:
    from labrunner.plan import load_plan

    path = _plan_path(args.plan)
    if not args.from_snakemake:
        return load_plan(path, root=None, check_handlers=(args.experiment, sub_id))
    # a job runs where Snakemake runs: the project root, wherever the plan file lives
    from labrunner.jobcache import remember_plan
    from labrunner.layout import results_root

    digest = _digest_or_none(path)
    plan = load_plan(path, root=Path.cwd(), check_handlers=(args.experiment, sub_id))
    if digest is not None and args.spec is not None:  # the next jobs read this plan from the job cache
        remember_plan(plan, digest, args.results_dir if args.results_dir is not None else results_root(args.stub))
    return plan


def _digest_or_none(path: Path) -> str | None:
    """The plan file's digest as the load starts; None when it cannot be read (load_plan says why)."""
    from labrunner.sources import file_sha256

    try:
        return file_sha256(path)
    except OSError:
        return None


def _with_job_spec(spec: SubSpec, text: str) -> tuple[SubSpec, int]:
    """The sub as Snakemake fixed it when it built the DAG (params, seed, handler): the plan file
    may have been edited since, and the result must say what it was really made with."""
    import dataclasses
    import json

    try:
        job = json.loads(text)
        file, _, function = str(job["handler"]).partition("::")
        params, seed = dict(job["params"]), int(job["seed"])
    except (ValueError, KeyError, TypeError) as exc:
        raise LabrunnerError(f"--spec: expected the JSON spec Snakemake passes ({{params, seed, handler}}), "
                             f"got {text[:200]!r}: {exc}") from None
    return dataclasses.replace(spec, params=params, stub_params={}, handler_file=Path(file),
                               handler_function=function), seed


def _backend(name: str, plan: RunPlan) -> Backend:
    from labrunner.execution import LocalBackend

    if name == "local":
        return LocalBackend()
    whole = _whole(plan)  # a JobPlan is only ever local (_cached_job_plan)
    from labrunner.backends import PROJECT_ROOT_ENV

    os.environ[PROJECT_ROOT_ENV] = str(whole.root.resolve())  # the Modal image carries this project
    from labrunner.backends.modal_backend import ModalBackend

    return ModalBackend(secret_name=whole.model.defaults.modal_secret)


def cmd_status(args: argparse.Namespace) -> int:
    if args.json:
        from labrunner.commands import cmd_status_json

        return cmd_status_json(args)
    from labrunner import parsed
    from labrunner.plan import load_plan
    from labrunner.summary import status_report

    plan = load_plan(_plan_path(args.plan), check_handlers=False)
    with parsed.kept_for(plan.root):  # every record is read: most as the last run parsed them
        text, failed = status_report(plan, stub=args.stub)
    _say(text)
    return EXIT_FAILED if failed else EXIT_OK


def _say(text: str, stream: TextIO | None = None) -> None:
    """Print what labrunner has to say, secrets masked: a handler's error message or finding
    can hold a token, and the console is copied into Snakemake's log."""
    from labrunner.redact import redact

    print(redact(text), file=stream or sys.stdout)


def _storage_error(exc: OSError) -> LabrunnerError | None:
    """A full disk or a read-only folder met outside labrunner's own writers (a mkdir, say)."""
    from labrunner.files import is_disk_full, storage_error

    if is_disk_full(exc) or exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return storage_error(exc, Path(exc.filename or "."))
    return None


def _reader_left() -> int:
    """The reader of our output went away (`labrunner status | head`): stop quietly. Output
    goes to /dev/null from here on, so that Python's last flush at exit does not complain."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_CLOSED_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from labrunner.commands import HANDLERS

    handlers = {"validate": cmd_validate, "run": cmd_run, "status": cmd_status, **HANDLERS}
    try:
        code = handlers[args.command](args)
        sys.stdout.flush()  # here, where a closed pipe can be handled, not at exit
        return code
    except BrokenPipeError:
        return _reader_left()
    except RunRefusedError as exc:
        _say(f"labrunner {args.command}: {exc}", sys.stderr)
        return EXIT_REFUSED
    except LabrunnerError as exc:
        _say(f"labrunner {args.command}: {exc}", sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        problem = _storage_error(exc)
        if problem is None:
            raise
        _say(f"labrunner {args.command}: {problem}", sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("labrunner: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
