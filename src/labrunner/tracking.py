"""Weights & Biases tracking, run from the supervising process.

W&B trouble must never fail or stall an experiment: every call into wandb (init, define_metric,
log, summary, finish) runs on the run's one owner thread, so that no two threads ever call into
the same run at once, and its caller waits at most a deadline. A call that misses it leaves
the run marked hung: nothing more is sent to it, and the process does not wait for wandb at
exit. An online run that cannot start (no key, no network, a hang) falls back
to offline; an offline run that cannot start falls back to none. Each fallback is a warning in
the record. In `disabled` mode wandb is not even imported.

Each attempt of a sub is a W&B run of its own, with an id made from the sub, the seed and the
attempt's number (`attempt_run_id`): the same attempt always has the same id, so syncing an
offline run twice never makes two runs, and a record leads to its run. A failed attempt's run is
tagged `failed` and finished with exit code 1 (W&B shows it as failed).
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

__all__ = ["NullTracker", "Tracker", "TrackingRequest", "WandbTracker", "attempt_run_id", "effective_mode",
           "start_tracking"]

T = TypeVar("T")
# wandb's own init_timeout should fire first; past this grace the call is abandoned as hung
INIT_GRACE_S = 5.0
# metric lines per call on the W&B owner thread: ~0.1 s of wandb.log, far inside call_timeout_s
LOG_LINES_PER_CALL = 1000
_ENV_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline",
              "disabled": "disabled", "disable": "disabled"}


class Tracker(Protocol):
    warnings: list[str]

    def log(self, metrics: Mapping[str, float], step: int | None) -> None: ...
    def log_lines(self, lines: Sequence[tuple[Mapping[str, float], int | None]]) -> None: ...
    def summary(self, metrics: Mapping[str, Any]) -> None: ...
    def finish(self, exit_code: int) -> None: ...
    def info(self) -> dict[str, Any]: ...
    def add_config(self, values: Mapping[str, Any]) -> None: ...
    def mark_failed(self, error_type: str | None) -> None: ...
    def log_artifacts(self, name: str, files: Sequence[tuple[Path, str]], metadata: Mapping[str, Any]) -> None: ...


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
    call_timeout_s: float = 30.0  # define_metric, log, summary: normally instant (wandb queues them)
    run_id: str | None = None  # attempt_run_id(...): None lets W&B make one up
    attempt: int | None = None  # the attempt's number, across every job of this run (1 for the first)


def attempt_run_id(project: str, experiment_id: str, sub_id: str, seed: int, stub: bool, attempt: int,
                   folder_token: str) -> str:
    """`<sub>-s<seed>-a<attempt>-<hash>`: readable in W&B's URLs, the same for the same attempt.
    The hash (of the project, experiment, sub, seed, tree and the run folder's token, see
    records.next_attempt) keeps apart two subs whose names read alike, stub runs and real ones,
    and the attempts of another copy of the project: W&B's ids are per project."""
    digest = hashlib.sha256("\0".join([project, experiment_id, sub_id, str(seed), "stub" if stub else "real",
                                       folder_token]).encode("utf-8")).hexdigest()[:8]
    readable = re.sub(r"[^a-z0-9_-]+", "-", sub_id.lower()).strip("-")[:40] or "sub"
    return f"{readable}-s{seed}-a{attempt}-{digest}"


def effective_mode(plan_mode: str, environ: Mapping[str, str] | None = None) -> str:
    """The plan's mode, unless WANDB_MODE says otherwise."""
    env = (os.environ if environ is None else environ).get("WANDB_MODE", "").strip().lower()
    return _ENV_MODES.get(env, plan_mode)


class _Owner:
    """The one thread that talks to one W&B run. Callers hand it calls and wait for each at most
    its deadline; after a call that did not return in time, it takes no more."""

    _CLOSE = object()

    def __init__(self, name: str) -> None:
        self.hung = False
        self._tasks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def call(self, call: Callable[[], T], timeout_s: float) -> tuple[T | None, BaseException | None, bool]:
        """(result, error, timed_out) of `call`, run on the owner thread."""
        if self.hung:
            return None, None, True
        box: dict[str, Any] = {}
        done = threading.Event()
        self._tasks.put((call, box, done))
        if not done.wait(timeout_s):
            self.hung = True
            return None, None, True
        return box.get("result"), box.get("error"), False

    def close(self) -> None:
        if not self.hung:
            self._tasks.put(self._CLOSE)

    def _serve(self) -> None:
        while (task := self._tasks.get()) is not self._CLOSE:
            call, box, done = task
            try:
                box["result"] = call()
            except BaseException as exc:  # noqa: BLE001 - reported to the caller as data
                box["error"] = exc
            finally:
                done.set()


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

    def log_lines(self, lines: Sequence[tuple[Mapping[str, float], int | None]]) -> None:
        pass

    def summary(self, metrics: Mapping[str, Any]) -> None:
        pass

    def finish(self, exit_code: int) -> None:
        pass

    def info(self) -> dict[str, Any]:
        return {"mode": self.mode}

    def add_config(self, values: Mapping[str, Any]) -> None:
        pass

    def mark_failed(self, error_type: str | None) -> None:
        pass

    def log_artifacts(self, name: str, files: Sequence[tuple[Path, str]], metadata: Mapping[str, Any]) -> None:
        pass


@dataclass
class WandbTracker:
    request: TrackingRequest
    run: Any
    mode: str
    owner: _Owner  # the only thread that calls into `run`
    warnings: list[str] = field(default_factory=list)
    hung: bool = False  # a wandb call was abandoned: the process must not wait for wandb at exit
    module: Any = None  # the wandb module, for wandb.Artifact
    _log_failed: bool = False
    _identity: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The handler's step is logged as the metric "<sub>/step" and used as the x axis, instead
        # of W&B's own step, which must only grow: steps that restart (a retried attempt, a
        # baseline trained after the main model) would otherwise be dropped.
        prefix = self.request.metric_prefix
        identity, _, timed_out = self.owner.call(lambda: _identity(self.run), self.request.call_timeout_s)
        self._identity = identity or {}
        if timed_out:
            self._gave_up("reading the run's id")
            return
        _, error, timed_out = self._call(lambda: _define_step_axis(self.run, prefix), "define_metric")
        if error is not None:
            self.warnings.append(f"W&B step axis not set: {_short(error)}")

    def log(self, metrics: Mapping[str, float], step: int | None) -> None:
        self.log_lines([(metrics, step)])

    def log_lines(self, lines: Sequence[tuple[Mapping[str, float], int | None]]) -> None:
        """Log metric lines in order, up to LOG_LINES_PER_CALL of them in one call on the owner
        thread: handing each line over on its own cost more than wandb.log itself."""
        prefix = self.request.metric_prefix
        for start in range(0, len(lines), LOG_LINES_PER_CALL):
            if self.hung or self._log_failed:
                return
            payloads = [_payload(prefix, metrics, step) for metrics, step in lines[start:start + LOG_LINES_PER_CALL]]
            _, error, _ = self._call(lambda payloads=payloads: _log_each(self.run, payloads), "log")
            if error is not None:
                self._log_failed = True
                self.warnings.append(f"W&B logging stopped: {_short(error)}; metrics.jsonl has everything")

    def summary(self, metrics: Mapping[str, Any]) -> None:
        if self.hung:
            return
        values = {f"{self.request.metric_prefix}{name}": value for name, value in metrics.items()}
        _, error, _ = self._call(lambda: _set_summary(self.run, values), "summary")
        if error is not None:
            self.warnings.append(f"W&B summary not written: {_short(error)}")

    def add_config(self, values: Mapping[str, Any]) -> None:
        """Facts known only once the attempt ended (the handler's environment)."""
        if self.hung:
            return
        _, error, _ = self._call(lambda: self.run.config.update(dict(values), allow_val_change=True), "config update")
        if error is not None:
            self.warnings.append(f"W&B config not updated: {_short(error)}")

    def mark_failed(self, error_type: str | None) -> None:
        """Tag the run `failed` (finish(1) then marks its state failed), with the error type."""
        if self.hung:
            return
        _, error, _ = self._call(lambda: _tag_failed(self.run, error_type), "tags")
        if error is not None:
            self.warnings.append(f"W&B run not tagged as failed: {_short(error)}")

    def log_artifacts(self, name: str, files: Sequence[tuple[Path, str]], metadata: Mapping[str, Any]) -> None:
        """The handler's artifacts as one W&B artifact of this run (copied into W&B's staging
        area, so an offline run keeps them as they were even if a rerun replaces the files). Its
        deadline is the finish deadline: copying a checkpoint is not instant."""
        if self.hung or not files or self.module is None:
            return
        _, error, timed_out = self.owner.call(lambda: _log_artifact(self.module, self.run, name, files, metadata),
                                              self.request.finish_timeout_s)
        if timed_out:
            self._gave_up("log_artifact")
        elif error is not None:
            self.warnings.append(f"W&B artifact not logged: {_short(error)}")

    def finish(self, exit_code: int) -> None:
        if self.hung:
            return
        _, error, timed_out = self.owner.call(lambda: self.run.finish(exit_code=exit_code), self.request.finish_timeout_s)
        if timed_out:
            self.hung = True
            self.warnings.append(f"W&B finish did not return within {self.request.finish_timeout_s:g}s; "
                                 f"the run was left as it was (sync it later with `wandb sync {self.run_path() or ''}`)")
            return
        if error is not None:
            self.warnings.append(f"W&B finish failed: {_short(error)}")
        self.owner.close()

    def _call(self, call: Callable[[], T], what: str) -> tuple[T | None, BaseException | None, bool]:
        result, error, timed_out = self.owner.call(call, self.request.call_timeout_s)
        if timed_out:
            self._gave_up(what)
        return result, error, timed_out

    def _gave_up(self, what: str) -> None:
        if not self.hung:
            self.hung = True
            self.warnings.append(f"W&B {what} did not return within {self.request.call_timeout_s:g}s; nothing more "
                                 f"was sent to W&B for this run (metrics.jsonl has every metric)")

    def run_path(self) -> str | None:
        return self._identity.get("path")

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"mode": self.mode, "project": self.request.project, "group": self.request.group,
                                "name": self.request.name}
        for key in ("id", "entity"):
            if self._identity.get(key):
                info[key] = self._identity[key]
        if self.mode == "online" and self._identity.get("url"):
            info["url"] = self._identity["url"]
        if self._identity.get("path"):
            info["path"] = self._identity["path"]
        if self.request.attempt is not None:
            info["attempt"] = self.request.attempt
        return info


def _identity(run: Any) -> dict[str, str]:
    """What records name the run by, read once (on the owner thread) while the run is fresh."""
    found = {key: str(value) for key in ("id", "entity", "url") if (value := getattr(run, key, None))}
    directory = getattr(getattr(run, "settings", None), "sync_dir", None)
    if directory:
        found["path"] = str(directory)
    return found


def _payload(prefix: str, metrics: Mapping[str, float], step: int | None) -> dict[str, Any]:
    payload: dict[str, Any] = {f"{prefix}{name}": value for name, value in metrics.items()}
    if step is not None:
        payload[f"{prefix}step"] = step
    return payload


def _log_each(run: Any, payloads: list[dict[str, Any]]) -> None:
    for payload in payloads:  # the first that raises stops the rest, as line-by-line calls would
        run.log(payload)


def _define_step_axis(run: Any, prefix: str) -> None:
    run.define_metric(f"{prefix}step")
    run.define_metric(f"{prefix}*", step_metric=f"{prefix}step")


def _set_summary(run: Any, values: Mapping[str, Any]) -> None:
    for name, value in values.items():
        run.summary[name] = value


def _tag_failed(run: Any, error_type: str | None) -> None:
    run.tags = (*(run.tags or ()), "failed")
    run.summary["labrunner/error_type"] = error_type or "unknown"


_ARTIFACT_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def _log_artifact(wandb: Any, run: Any, name: str, files: Sequence[tuple[Path, str]], metadata: Mapping[str, Any]) -> None:
    artifact = wandb.Artifact(_ARTIFACT_NAME.sub("-", name)[:128], type="labrunner-artifacts", metadata=dict(metadata))
    for path, relative in files:
        artifact.add_file(local_path=str(path), name=relative)
    run.log_artifact(artifact)


def _init(wandb: Any, request: TrackingRequest, mode: str) -> Any:
    settings = wandb.Settings(
        init_timeout=request.init_timeout_s, finish_timeout=request.finish_timeout_s,
        login_timeout=min(request.init_timeout_s, 30.0), console="off", silent=True,
    )
    # resume="never" with our own id: should an online run with it exist already, it is refused
    # rather than written over; the attempt then falls back to offline, with a warning
    return wandb.init(
        project=request.project, entity=request.entity, group=request.group, name=request.name,
        job_type=request.job_type, config=request.config, tags=list(request.tags), dir=str(request.run_dir),
        mode=mode, settings=settings, reinit="create_new",
        **({"id": request.run_id, "resume": "never"} if request.run_id else {}),
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
    for index, mode in enumerate(modes):
        owner = _Owner(f"labrunner-wandb-{mode}")
        # the fallback is a run of its own: W&B keeps the id of an online run that failed to start
        # reserved in its service process, so it gets the attempt's id with "-offline" added
        tried = replace(request, run_id=f"{request.run_id}-{mode}") if index and request.run_id else request
        run, error, timed_out = owner.call(lambda mode=mode, tried=tried: _init(wandb, tried, mode),
                                           request.init_timeout_s + INIT_GRACE_S)
        if run is not None:
            return WandbTracker(tried, run, mode, owner, warnings, module=wandb)
        owner.close()
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
