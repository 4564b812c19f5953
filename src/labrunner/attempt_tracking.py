"""One W&B run per attempt of a sub: started before the handler, ended with the attempt's record.

An attempt's run has a stable id (`tracking.attempt_run_id`, from the sub, the seed and the
attempt's number across every job of the run), the record's provenance in its config (commit,
dirty tree and its patch, the code's hashes; the handler's environment once it is known), and
ends either completed, with the summary metrics and the handler's artifacts as a W&B artifact,
or failed: tagged `failed` and finished with exit code 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labrunner.jobspec import SubSpec
from labrunner.layout import RunPaths
from labrunner.records import COMPLETED, next_attempt
from labrunner.tracking import (
    NullTracker, Tracker, TrackingRequest, attempt_run_id, effective_mode, start_tracking,
)

if TYPE_CHECKING:
    from labrunner.jobspec import RunPlan

__all__ = ["AttemptTracking"]


@dataclass
class AttemptTracking:
    """The W&B runs of one job's attempts (one sub, one seed)."""

    plan: RunPlan  # a whole Plan, or the JobPlan of a Snakemake job
    spec: SubSpec
    seed: int
    stub: bool
    paths: RunPaths
    params: dict[str, Any]
    provenance: Mapping[str, Any]  # {"git": ..., "code": ...} as the attempt starts
    hung: bool = False  # a W&B call was abandoned: no further run is started in this process
    _mode: str = field(init=False)

    def __post_init__(self) -> None:
        self._mode = effective_mode(self.plan.tracking.mode)

    def start(self) -> Tracker:
        """The tracker of the attempt about to run (counted even when W&B is off, so that the
        numbers stay the numbers of attempts)."""
        number, token = next_attempt(self.paths)
        if self.hung:
            return NullTracker("disabled", ["W&B hung in an earlier attempt of this job; this attempt is not tracked"])
        return start_tracking(self._request(number, token))

    def end(self, tracker: Tracker, record: Mapping[str, Any]) -> dict[str, Any]:
        """Close the attempt's run from its record; return the record's `wandb` (paths relative
        to the project root)."""
        tracker.add_config({"environment": record.get("environment")})
        if record.get("status") == COMPLETED:
            tracker.summary(record.get("metrics") or {})
            files = [(self.paths.run_dir / name, name) for name in record.get("artifacts") or []]
            tracker.log_artifacts(f"{self.spec.experiment_id}.{self.spec.sub_id}.seed{self.seed}",
                                  [(path, name) for path, name in files if path.is_file()],
                                  {"run_id": record.get("run_id"), "git": self.provenance.get("git")})
        else:
            tracker.mark_failed((record.get("error") or {}).get("type"))
        tracker.finish(0 if record.get("status") == COMPLETED else 1)
        self.hung = self.hung or bool(getattr(tracker, "hung", False))
        return _portable_paths(tracker.info(), self.plan.root.resolve())

    def _request(self, number: int, token: str) -> TrackingRequest:
        settings = self.plan.tracking
        spec, seed = self.spec, self.seed
        project = settings.project
        name = f"{spec.sub_id}-seed{seed}" if len(spec.seeds) > 1 else spec.sub_id
        git = self.provenance.get("git") or {}
        return TrackingRequest(
            mode=self._mode,
            project=project,
            entity=settings.entity,
            group=spec.experiment_id,
            name=name if number == 1 else f"{name} (attempt {number})",
            metric_prefix=f"{spec.sub_id}/",
            config={"params": self.params, "seed": seed, "experiment": spec.experiment_id, "sub": spec.sub_id,
                    "stub": self.stub, "attempt": number,
                    "provenance": {"commit": git.get("commit"), "dirty": git.get("dirty"), "diff": git.get("diff"),
                                   "handler": f"{spec.handler_file.as_posix()}::{spec.handler_function}",
                                   "code": dict(self.provenance.get("code") or {})}},
            run_dir=self.paths.run_dir,
            tags=tuple(settings.tags) + (("stub",) if self.stub else ()),
            job_type="stub" if self.stub else "sub-experiment",
            init_timeout_s=settings.init_timeout_s,
            finish_timeout_s=settings.finish_timeout_s,
            run_id=attempt_run_id(project, spec.experiment_id, spec.sub_id, seed, self.stub, number, token),
            attempt=number,
        )


def _portable_paths(info: dict[str, Any], root: Path) -> dict[str, Any]:
    """Record paths relative to the project root, so records stay true when the folder moves."""
    path = info.get("path")
    if path and Path(path).is_absolute() and Path(path).resolve().is_relative_to(root):
        info = {**info, "path": Path(path).resolve().relative_to(root).as_posix()}
    return info
