"""The job cache: what a Snakemake job of one sub needs of the plan, kept from a validated load.

Every sub's job used to load and validate the whole plan: parsing the YAML, building and running
the pydantic models, checking every experiment. For a no-op sub that was most of the job's CPU
time (issue 11: about 0.13 s of one core per job, on top of the ~0.06 s the rest costs). Now the
first job that loads a plan writes, for each experiment, one small JSON entry of its subs'
resolved settings and the plan's W&B settings, keyed by the SHA-256 of the plan file's bytes; the
other jobs read their experiment's entry and import neither pydantic nor the plan's models.

The result is the same as a full load, by construction:

- an entry is written only from a plan that loaded and validated, and only when the file's bytes
  did not change during the load, so a hit means "this exact file validated";
- what a job's load checks besides the file's content (its own handler file exists and defines
  the function) is checked again at every hit, the same way (`sources.resolve_handler`);
- anything else makes the job load the plan as before: no entry (the plan was edited since the
  last load), an entry that does not read back (damaged, another labrunner version), an
  experiment with dependencies or required gates (whether it is held is read from the records,
  with the whole plan), a backend other than local, a handler problem (the full load reports it,
  with the plan's line);
- an entry whose settings do not survive a round trip through JSON (a NaN, a key that is not a
  string) is not written, so that a hit never runs with settings that differ from the plan's.

Entries live in `<results>/.labrunner/plans/<digest>-<labrunner version>-f<format>/<exp>.json`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labrunner import __version__
from labrunner.jobspec import JobPlan, SubSpec, TrackingSettings
from labrunner.sources import file_sha256

if TYPE_CHECKING:
    from labrunner.plan import Plan

__all__ = ["CACHE_FORMAT", "checked_by_job", "entry_path", "read_job_plan", "remember_plan"]

CACHE_FORMAT = 1  # bump when an entry's fields change: older entries are then never read
_DIGEST_CHARS = 32


def entry_path(results_root: Path, digest: str, experiment_id: str) -> Path:
    folder = f"{digest[:_DIGEST_CHARS]}-{__version__}-f{CACHE_FORMAT}"
    return results_root / ".labrunner" / "plans" / folder / f"{experiment_id}.json"


def checked_by_job(run_sub: str, plan_sub: str) -> bool:
    """Whether the job of `run_sub` checks the handler of the plan's sub `plan_sub`: its own, or
    the sub whose grid it is a combination of (`<sub>.<values>`)."""
    return run_sub == plan_sub or run_sub.startswith(f"{plan_sub}.")


# --- reading (every job) --------------------------------------------------------------------------

def read_job_plan(plan_path: Path, root: Path, results_root: Path, experiment_id: str, sub_id: str) -> JobPlan | None:
    """The plan as the job of (experiment, sub) needs it, from the cache; None when the job must
    load the plan itself (see the module's docstring for each case)."""
    try:
        digest = file_sha256(plan_path)
        entry = json.loads(entry_path(root / results_root, digest, experiment_id).read_text(encoding="utf-8"))
        if entry["plan_sha256"] != digest or entry["needs_plan"] or sub_id not in entry["subs"]:
            return None
        if _handler_problems(entry, root, sub_id):
            return None
        return JobPlan(path=plan_path, root=root, tracking=_tracking_from(entry["tracking"]),
                       spec=_spec_from(entry["subs"][sub_id]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # no entry, or one that does not read back: the job loads the plan


def _handler_problems(entry: Mapping[str, Any], root: Path, sub_id: str) -> bool:
    """Whether the handler checks a full load makes for this job find a problem (the full load
    then reports it, with the plan's line)."""
    from labrunner import sources

    handlers_dir = Path(entry["handlers_dir"])
    for plan_sub, handler in entry["handlers"].items():
        if handler["check"] and checked_by_job(sub_id, plan_sub):
            _, _, problems = sources.resolve_handler(root, handlers_dir, plan_sub, handler["setting"], True)
            if problems:
                return True
    return False


def _spec_to(spec: SubSpec) -> dict[str, Any]:
    fields = asdict(spec)
    fields["handler_file"] = spec.handler_file.as_posix()
    return fields


def _spec_from(fields: Mapping[str, Any]) -> SubSpec:
    return SubSpec(**{**fields, "seeds": tuple(fields["seeds"]), "handler_file": Path(fields["handler_file"])})


def _tracking_from(fields: Mapping[str, Any]) -> TrackingSettings:
    return TrackingSettings(**{**fields, "tags": tuple(fields["tags"])})


# --- writing (a job that loaded the plan) -------------------------------------------------------

def remember_plan(plan: Plan, digest: str, results_root: Path) -> None:
    """Write the entries of every experiment of `plan`, which was loaded from a file whose bytes
    had `digest` before the load; nothing if the file has changed since (the entries would then
    describe a file that never validated). Never raises: the cache only saves time."""
    try:
        if file_sha256(plan.path) != digest:
            return
        for experiment_id in plan.subs_by_experiment:
            text = _entry_text(plan, digest, experiment_id)
            if text is not None:
                _write_if_changed(entry_path(plan.root / results_root, digest, experiment_id), text)
    except OSError:
        pass  # a full disk or a read-only tree: the next job loads the plan, as before


def _entry_text(plan: Plan, digest: str, experiment_id: str) -> str | None:
    """The entry as JSON; None when some setting would not read back as it is (see the docstring)."""
    from labrunner.plan import handlers_dir_of

    experiment = plan.experiments[experiment_id]
    specs = plan.subs_by_experiment[experiment_id]
    entry = {
        "format": CACHE_FORMAT,
        "labrunner": __version__,
        "plan_sha256": digest,
        "experiment": experiment_id,
        "needs_plan": bool(experiment.dependencies or experiment.requires),
        "handlers_dir": handlers_dir_of(experiment_id, experiment).as_posix(),
        "handlers": {str(sub_id): {"setting": settings.handler,
                                   "check": not experiment.archived and settings.skip in (None, False, "")}
                     for sub_id, settings in experiment.sub_experiments.items()},
        "tracking": asdict(plan.tracking),
        "subs": {spec.sub_id: _spec_to(spec) for spec in specs},
    }
    try:
        text = json.dumps(entry, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        return None
    read_back = json.loads(text)
    if (_tracking_from(read_back["tracking"]) != plan.tracking
            or [_spec_from(fields) for fields in read_back["subs"].values()] != sorted(specs, key=lambda s: s.sub_id)):
        return None
    return text


def _write_if_changed(path: Path, text: str) -> None:
    from labrunner.files import atomic_write_text

    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except (OSError, ValueError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text, durable=False)  # a cache: a lost entry costs one full load
