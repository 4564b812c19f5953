"""labrunner: run a research plan's ML experiments as a Snakemake pipeline of file targets.

The public API is re-exported here. Names resolve on first use, so `import labrunner` (done by
every job and by handlers) stays cheap: a no-op sub must not pay for pydantic, yaml or pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "ExperimentRunner": "labrunner.runner",
    "Results": "labrunner.runner",
    "seed_everything": "labrunner.runner",
    "Plan": "labrunner.plan",
    "SubSpec": "labrunner.plan",
    "load_plan": "labrunner.plan",
    "Backend": "labrunner.execution",
    "LocalBackend": "labrunner.execution",
    "SubRun": "labrunner.execution",
    "run_sub": "labrunner.execution",
    "LabrunnerError": "labrunner.errors",
    "InputError": "labrunner.errors",
    "PlanError": "labrunner.errors",
    "RecordError": "labrunner.errors",
    "ConfigError": "labrunner.errors",
    "FindingsError": "labrunner.errors",
    "HandlerError": "labrunner.errors",
    "HandlerReturnError": "labrunner.errors",
    "MetricError": "labrunner.errors",
    "ArtifactError": "labrunner.errors",
    "BackendError": "labrunner.errors",
    "StorageError": "labrunner.errors",
    "RunRefusedError": "labrunner.errors",
    "RunLockedError": "labrunner.errors",
    "RunHeldError": "labrunner.errors",
    "RunStatus": "labrunner.state",
    "ExperimentStatus": "labrunner.state",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'labrunner' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from labrunner.errors import (
        ArtifactError, BackendError, ConfigError, FindingsError, HandlerError, HandlerReturnError, InputError,
        LabrunnerError, MetricError, PlanError, RecordError, RunHeldError, RunLockedError, RunRefusedError, StorageError,
    )
    from labrunner.state import ExperimentStatus, RunStatus
    from labrunner.execution import Backend, LocalBackend, SubRun, run_sub
    from labrunner.plan import Plan, SubSpec, load_plan
    from labrunner.runner import ExperimentRunner, Results, seed_everything
