"""What one job runs with, as plain dataclasses: a sub's resolved settings (`SubSpec`), the
plan's W&B settings (`TrackingSettings`), and what the handler's process is handed (`RunContext`).

They live apart from `labrunner.plan` so that the job of one sub can hold them without importing
pydantic and the plan's models: a no-op sub's job must cost little more than starting Python
(docs/performance.md), and the validation models alone cost more CPU than the rest of the job's
imports together. `labrunner.jobcache` fills them from the job cache; `labrunner.plan` from a
validated plan.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

__all__ = ["BACKEND_ENV", "JobPlan", "RunContext", "RunPlan", "SUPERVISOR_PID_ENV", "SubSpec", "TrackingSettings"]

BACKEND_ENV = "LABRUNNER_BACKEND"  # `--config backend=...`, passed by the workflow to its jobs
SUPERVISOR_PID_ENV = "LABRUNNER_SUPERVISOR_PID"  # set by the supervisor: who the handler's process must die with


@dataclass(frozen=True)
class SubSpec:
    """One sub-experiment with every setting resolved (plan defaults -> experiment -> sub)."""

    experiment_id: str
    sub_id: str
    name: str
    params: Mapping[str, Any]
    stub_params: Mapping[str, Any]
    seeds: tuple[int, ...]
    backend: str
    gpu: str | None
    timeout_min: float
    retries: int
    handler_file: Path  # relative to the project root
    handler_function: str
    skip_reason: str | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    sweep: str | None = None  # the sub whose grid this combination comes from
    swept: Mapping[str, Any] = field(default_factory=dict)  # this combination's grid values
    mem_mb: int | None = None  # None: the plan sets no memory anywhere (Snakemake's default applies)

    @property
    def key(self) -> str:
        return f"{self.experiment_id}/{self.sub_id}"

    def params_for(self, stub: bool) -> dict[str, Any]:
        """The params a handler sees: stub_params merged over params in stub mode."""
        return {**self.params, **self.stub_params} if stub else dict(self.params)


@dataclass(frozen=True)
class TrackingSettings:
    """The plan's `wandb:` block as a job's W&B runs need it, the project name resolved."""

    mode: str  # as the plan says it; WANDB_MODE may override it (tracking.effective_mode)
    project: str
    entity: str | None
    tags: tuple[str, ...]
    init_timeout_s: float
    finish_timeout_s: float

    @classmethod
    def from_plan(cls, wandb: Any, project_name: str | None) -> TrackingSettings:
        """From the validated `wandb:` block and `project.name` (the W&B project defaults to its slug)."""
        from labrunner.tracking import project_slug

        return cls(mode=wandb.mode, project=wandb.project or project_slug(project_name), entity=wandb.entity,
                   tags=tuple(wandb.tags), init_timeout_s=wandb.init_timeout_s, finish_timeout_s=wandb.finish_timeout_s)


if TYPE_CHECKING:  # for annotations only: building a Protocol class costs every job's import time
    from typing import Protocol

    class RunPlan(Protocol):
        """What running a sub needs of its plan: a whole `Plan`, or a job's `JobPlan`."""

        @property
        def root(self) -> Path: ...

        @property
        def tracking(self) -> TrackingSettings: ...


@dataclass(frozen=True)
class JobPlan:
    """The part of a validated plan that one local job of one sub needs, read from the job cache
    (labrunner.jobcache) instead of loading and validating the whole plan."""

    path: Path
    root: Path
    tracking: TrackingSettings
    spec: SubSpec


@dataclass(frozen=True)
class RunContext:
    """Everything a handler's process needs, passed from the supervisor as JSON."""

    experiment_id: str
    sub_id: str
    params: dict[str, Any]
    seed: int
    stub: bool
    run_dir: str
    project_root: str
    handler_file: str
    handler_function: str
    run_id: str
    attempt: int = 1
    sys_path: list[str] = field(default_factory=list)

    @property
    def metrics_path(self) -> Path:
        return Path(self.run_dir) / "metrics.jsonl"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "RunContext":
        return cls(**json.loads(text))
