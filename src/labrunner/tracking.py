"""Weights & Biases tracking, run from the supervising process.

W&B trouble must never fail or stall an experiment: every call into wandb runs in a worker
thread with a deadline. An online run that cannot start (no key, no network, a hang) falls back
to offline; an offline run that cannot start falls back to none. Each fallback is a warning in
the record. In `disabled` mode wandb is not even imported.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

__all__ = ["NullTracker", "Tracker", "TrackingRequest", "WandbTracker", "effective_mode", "start_tracking"]

T = TypeVar("T")
# wandb's own init_timeout should fire first; past this grace the call is abandoned as hung
INIT_GRACE_S = 5.0
_ENV_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline",
              "disabled": "disabled", "disable": "disabled"}


class Tracker(Protocol):
    warnings: list[str]

    def log(self, metrics: Mapping[str, float], step: int | None) -> None: ...
    def summary(self, metrics: Mapping[str, Any]) -> None: ...
    def finish(self, exit_code: int) -> None: ...
    def info(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class TrackingRequest:
    """What one W&B run is for: one sub (and seed)."""

    mode: str
    project: str
    entity: str | None
    group: str  # the experiment id
    name: str  # the sub id (with the seed when there are several)
    metric_prefix: str  # "<sub>/"
    config: dict[str, Any]
    run_dir: Path
    tags: tuple[str, ...] = ()
    job_type: str = "sub-experiment"
    init_timeout_s: float = 60.0
    finish_timeout_s: float = 60.0


def effective_mode(plan_mode: str, environ: Mapping[str, str] | None = None) -> str:
    """The plan's mode, unless WANDB_MODE says otherwise."""
    env = (os.environ if environ is None else environ).get("WANDB_MODE", "").strip().lower()
    return _ENV_MODES.get(env, plan_mode)


def _with_deadline(call: Callable[[], T], timeout_s: float) -> tuple[T | None, BaseException | None, bool]:
    """Run `call` in a daemon thread; (result, error, timed_out). A hung call is abandoned."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = call()
        except BaseException as exc:  # noqa: BLE001 - reported to the caller as data
            box["error"] = exc

    thread = threading.Thread(target=target, name="labrunner-wandb", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return None, None, True
    return box.get("result"), box.get("error"), False


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


class NullTracker:
    """Tracking off: W&B disabled in the plan, or unavailable after every fallback."""

    def __init__(self, mode: str = "disabled", warnings: list[str] | None = None) -> None:
        self.mode = mode
        self.warnings: list[str] = list(warnings or [])

    def log(self, metrics: Mapping[str, float], step: int | None) -> None:
        pass

    def summary(self, metrics: Mapping[str, Any]) -> None:
        pass

    def finish(self, exit_code: int) -> None:
        pass

    def info(self) -> dict[str, Any]:
        return {"mode": self.mode}


@dataclass
class WandbTracker:
    request: TrackingRequest
    run: Any
    mode: str
    warnings: list[str] = field(default_factory=list)
    hung: bool = False  # a wandb call was abandoned: the process must not wait for wandb at exit
    _log_failed: bool = False

    def __post_init__(self) -> None:
        # The handler's step is logged as the metric "<sub>/step" and used as the x axis, instead
        # of W&B's own step, which must only grow: steps that restart (a retried attempt, a
        # baseline trained after the main model) would otherwise be dropped.
        prefix = self.request.metric_prefix
        try:
            self.run.define_metric(f"{prefix}step")
            self.run.define_metric(f"{prefix}*", step_metric=f"{prefix}step")
        except Exception as exc:  # noqa: BLE001 - tracking never fails the experiment
            self.warnings.append(f"W&B step axis not set: {_short(exc)}")

    def log(self, metrics: Mapping[str, float], step: int | None) -> None:
        if self.hung or self._log_failed:
            return
        prefix = self.request.metric_prefix
        payload = {f"{prefix}{name}": value for name, value in metrics.items()}
        if step is not None:
            payload[f"{prefix}step"] = step
        try:
            self.run.log(payload)
        except Exception as exc:  # noqa: BLE001 - tracking never fails the experiment
            self._log_failed = True
            self.warnings.append(f"W&B logging stopped: {_short(exc)}; metrics.jsonl has everything")

    def summary(self, metrics: Mapping[str, Any]) -> None:
        if self.hung:
            return
        try:
            for name, value in metrics.items():
                self.run.summary[f"{self.request.metric_prefix}{name}"] = value
        except Exception as exc:  # noqa: BLE001
            self.warnings.append(f"W&B summary not written: {_short(exc)}")

    def finish(self, exit_code: int) -> None:
        if self.hung:
            return
        _, error, timed_out = _with_deadline(lambda: self.run.finish(exit_code=exit_code), self.request.finish_timeout_s)
        if timed_out:
            self.hung = True
            self.warnings.append(f"W&B finish did not return within {self.request.finish_timeout_s:g}s; "
                                 f"the run was left as it was (sync it later with `wandb sync {self.run_path() or ''}`)")
        elif error is not None:
            self.warnings.append(f"W&B finish failed: {_short(error)}")

    def run_path(self) -> str | None:
        directory = getattr(getattr(self.run, "settings", None), "sync_dir", None)
        return str(directory) if directory else None

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"mode": self.mode, "project": self.request.project, "group": self.request.group,
                                "name": self.request.name}
        for key, attr in (("id", "id"), ("entity", "entity")):
            value = getattr(self.run, attr, None)
            if value:
                info[key] = str(value)
        if self.mode == "online":
            url = getattr(self.run, "url", None)
            if url:
                info["url"] = str(url)
        path = self.run_path()
        if path:
            info["path"] = path
        return info


def _init(wandb: Any, request: TrackingRequest, mode: str) -> Any:
    settings = wandb.Settings(
        init_timeout=request.init_timeout_s, finish_timeout=request.finish_timeout_s,
        login_timeout=min(request.init_timeout_s, 30.0), console="off", silent=True,
    )
    return wandb.init(
        project=request.project, entity=request.entity, group=request.group, name=request.name,
        job_type=request.job_type, config=request.config, tags=list(request.tags), dir=str(request.run_dir),
        mode=mode, settings=settings, reinit="create_new",
    )


def start_tracking(request: TrackingRequest, import_wandb: Callable[[], Any] | None = None) -> Tracker:
    """Start one W&B run, falling back online -> offline -> none; never raises."""
    if request.mode == "disabled":
        return NullTracker()
    warnings: list[str] = []
    try:
        wandb = (import_wandb or _import_wandb)()
    except ImportError as exc:
        return NullTracker("disabled", [f"W&B tracking off: wandb cannot be imported ({exc}); pip install wandb"])
    request.run_dir.mkdir(parents=True, exist_ok=True)
    modes = ["online", "offline"] if request.mode == "online" else ["offline"]
    for mode in modes:
        run, error, timed_out = _with_deadline(lambda mode=mode: _init(wandb, request, mode), request.init_timeout_s + INIT_GRACE_S)
        if run is not None:
            return WandbTracker(request, run, mode, warnings)
        problem = f"did not start within {request.init_timeout_s:g}s" if timed_out else _short(error) if error else "returned no run"
        fallback = "falling back to offline" if mode == "online" else "tracking off for this run (metrics.jsonl has every metric)"
        warnings.append(f"W&B {mode} run {problem}; {fallback}")
    return NullTracker("disabled", warnings)


def _import_wandb() -> Any:
    import wandb

    return wandb


def project_slug(name: str | None) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", (name or "").strip()).strip("-").lower()
    return slug or "labrunner"
