"""The Modal backend: each attempt of a sub-experiment runs as one Modal function call.

One module, laid out as modal-examples lay theirs out: the App, the Image and the remote function
sit at module level, so that Modal finds them by name in the container. torch, wandb and the
handler's own imports happen only in the handler's process, so this module imports anywhere:
without torch, and without a Modal token (nothing talks to Modal before a call).

What runs where:

    the job (Snakemake, `labrunner run`), locally        a Modal container
    ---------------------------------------------        ------------------------------------------
    run_sub: failure.yaml `running`, the W&B run   --->  run_attempt_remote(job): the LocalBackend,
    ModalBackend.run_attempt: submit and wait;           unchanged, supervises the handler in a
      the remote output streams to the console           child process (timeout, crash, signals),
    writes metrics.jsonl, run.log, artifacts/      <---  then returns its outcome, metric lines,
    run_sub: result.yaml or failure.yaml                 run.log and artifacts (large ones through
                                                         a Modal Volume)

The image holds the Python packages: labrunner's own requirements, the project's
(`[project] dependencies` of its pyproject.toml) and `[tool.labrunner] modal_pip` (what the handlers
import: torch, scikit-learn, ...). The labrunner package, the project's `handlers/`, its plan and
`[tool.labrunner] modal_add` are added when a container starts, so editing a handler needs no
image rebuild.

`ModalBackend` reaches Modal only through a `ModalClient` ("submit and wait", "read a Volume
file"): `ModalCloud` is the real one; `InProcessModal` runs the same function in this process
through Modal's `.local()`, for tests and for debugging without a Modal account.

`run_experiment` is the classic entrypoint, `modal run -m labrunner.backends.modal_backend::run_experiment
--experiment-id X [--stub-mode]`: it runs Snakemake on that experiment's write-up with
`--config backend=modal`, so it is the same pipeline, with the same files and reruns.
"""

from __future__ import annotations

import builtins
import hashlib
import importlib.metadata
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from types import FrameType
from typing import Any, Protocol

import modal
from grpclib.exceptions import StreamTerminatedError

import labrunner
from labrunner.backends import PROJECT_ROOT_ENV
from labrunner.errors import BackendError, ConfigError, Issue, LabrunnerError
from labrunner.execution import AttemptRequest, Backend, LocalBackend
from labrunner.hints import hint_for
from labrunner.layout import RunPaths, experiment_findings_path
from labrunner.plan import DEFAULT_PLAN_PATH
from labrunner.records import FAILED, now_iso
from labrunner.redact import redact
from labrunner.runner import ARTIFACTS_DIR, RunContext

__all__ = [
    "CallOptions", "InProcessModal", "ModalBackend", "ModalClient", "ModalCloud", "RemoteCallStopped",
    "app", "build_image", "call_options", "execute_job", "experiment_command", "image", "image_packages",
    "run_attempt_remote", "run_experiment",
]

APP_NAME = "labrunner"
REMOTE_PROJECT_DIR = "/root/project"  # where the container sees the project's handlers and plan
VOLUME_NAME = "labrunner-artifacts"
VOLUME_MOUNT = "/mnt/labrunner"
INLINE_ARTIFACT_MAX_BYTES = 8 * 2**20  # larger artifacts travel through the Volume, not in memory
REMOTE_GRACE_S = 120  # Modal's deadline = the handler's + this: container start, stack dump, payload
MODAL_TIMEOUT_MAX_S = 24 * 3600  # the longest a Modal function may run
CONNECT_TRIES = 3  # calls tried when the Modal servers cannot be reached
BACKOFF_FIRST_S = 2.0  # wait before the second try; doubled before each next one
PAYLOAD_VERSION = 1

# requirements not installed from pip in the image: the container brings its own Modal client (a
# second one could differ from it), Snakemake runs locally, labrunner is added as source
_NOT_FROM_PIP = frozenset({"modal", "snakemake", "labrunner"})
_IGNORED_FILES = ["**/__pycache__", "**/*.pyc", "**/.DS_Store"]


# --- the image: what the container holds ---------------------------------------------------------

def project_root() -> Path:
    """The project the image carries: the plan's folder as the CLI puts it in
    LABRUNNER_PROJECT_ROOT, else the working directory (where Snakemake runs its jobs)."""
    return Path(os.environ.get(PROJECT_ROOT_ENV) or Path.cwd()).resolve()


def _pyproject(root: Path) -> dict[str, Any]:
    try:
        return tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def _labrunner_settings(root: Path) -> dict[str, Any]:
    settings = _pyproject(root).get("tool", {}).get("labrunner", {})
    return settings if isinstance(settings, dict) else {}


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return (match.group(1) if match else requirement).lower().replace("_", "-")


def image_packages(root: Path) -> list[str]:
    """What pip installs in the image: labrunner's own requirements, then the project's, then
    `[tool.labrunner] modal_pip`; for a package named twice, the later entry wins (a project pin
    over labrunner's range)."""
    try:
        own = [req for req in importlib.metadata.requires("labrunner") or [] if "extra ==" not in req]
    except importlib.metadata.PackageNotFoundError:  # in the container, labrunner is source only
        own = []
    project = _pyproject(root).get("project", {}).get("dependencies", [])
    extra = _labrunner_settings(root).get("modal_pip", [])
    chosen: dict[str, str] = {}
    for requirement in [*own, *project, *extra]:
        name = _requirement_name(requirement)
        if name not in _NOT_FROM_PIP:
            chosen.pop(name, None)
            chosen[name] = requirement
    return list(chosen.values())


def project_files(root: Path) -> list[tuple[Path, str]]:
    """The project's files a handler needs remotely, each at the same place under the remote
    project folder: handlers/, the plan, and `[tool.labrunner] modal_add` (data, code outside
    handlers/); entries outside the project are left out."""
    names = ["handlers", DEFAULT_PLAN_PATH.as_posix(), *_labrunner_settings(root).get("modal_add", [])]
    chosen: list[tuple[Path, str]] = []
    for name in dict.fromkeys(names):
        local = (root / name).resolve()
        if local.exists() and local.is_relative_to(root) and local != root:
            chosen.append((local, f"{REMOTE_PROJECT_DIR}/{local.relative_to(root).as_posix()}"))
    return chosen


def build_image(root: Path) -> modal.Image:
    """debian_slim with the project's packages; labrunner and the project's files are added at
    container start (not baked in), so a code edit costs no rebuild."""
    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"  # pickled payloads cross it
    built = modal.Image.debian_slim(python_version=python_version)
    packages = image_packages(root)
    if packages:
        built = built.pip_install(*packages)
    built = built.add_local_python_source("labrunner")
    for local, remote in project_files(root):
        if local.is_dir():
            built = built.add_local_dir(local, remote, ignore=_IGNORED_FILES)
        else:
            built = built.add_local_file(local, remote)
    return built


PROJECT_ROOT = project_root()
image = build_image(PROJECT_ROOT)
app = modal.App(APP_NAME, image=image)
volume = modal.Volume.from_name(VOLUME_NAME, create_if_missing=True)


# --- the remote side ------------------------------------------------------------------------------

@app.function()  # GPU, timeout, secret and Volume are set per call (with_options): they vary by sub
def run_attempt_remote(job: dict[str, Any]) -> dict[str, Any]:
    """One attempt of one sub, in the container: the local backend's supervision, unchanged."""
    return execute_job(job)


def execute_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """Run the attempt under the LocalBackend in a scratch run folder and pack up what it wrote.
    The payload is plain data, so nothing of the handler (tensors, its classes) is unpickled
    locally."""
    scratch = Path(tempfile.mkdtemp(prefix="labrunner-"))
    volume_dir = Path(job["volume_dir"])
    try:
        paths = RunPaths(scratch / "run")
        paths.run_dir.mkdir()
        _link_work_dir(paths, volume_dir / job["work_key"])
        context = replace(RunContext.from_json(job["context"]), project_root=job["project_dir"],
                          run_dir=str(paths.run_dir))
        _labrunner_importable_in_children()
        request = AttemptRequest(context, paths, float(job["timeout_s"]), job["gpu"], job["label"], sys.stdout)
        outcome = LocalBackend().run_attempt(request)
        return {
            "version": PAYLOAD_VERSION,
            "outcome": outcome,
            "metrics_jsonl": _read_text(paths.metrics),
            "run_log": _read_text(paths.log),
            "artifacts": _pack_artifacts(paths, volume_dir, job["volume_key"], int(job["inline_max_bytes"])),
        }
    finally:
        _commit_volume()
        shutil.rmtree(scratch, ignore_errors=True)  # the work/ link goes, not what it points to


def _link_work_dir(paths: RunPaths, target: Path) -> None:
    """runner.work_dir lives on the Volume, so checkpoints survive the container, as they survive
    attempts locally."""
    target.mkdir(parents=True, exist_ok=True)
    (paths.run_dir / "work").symlink_to(target, target_is_directory=True)


def _labrunner_importable_in_children() -> None:
    """In the container labrunner is source on sys.path, not installed: the handler's process
    (`python -m labrunner.worker`, started in the project folder) must find it too."""
    if modal.is_local():
        return  # installed here, and this process's environment is not ours to change
    source_dir = str(Path(labrunner.__file__).resolve().parent.parent)
    current = os.environ.get("PYTHONPATH", "")
    if source_dir not in current.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [source_dir, current]))


def _commit_volume() -> None:
    """Make large artifacts and work/ visible to the job before it asks for them."""
    if not modal.is_local():
        volume.commit()


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def _pack_artifacts(paths: RunPaths, volume_dir: Path, volume_key: str, inline_max_bytes: int) -> list[dict[str, Any]]:
    """Small artifacts ride in the return value; large ones go through the Volume, since a return
    value is held in memory on both sides."""
    packed: list[dict[str, Any]] = []
    if not paths.artifacts.is_dir():
        return packed
    for file in sorted(item for item in paths.artifacts.rglob("*") if item.is_file()):
        name = file.relative_to(paths.run_dir).as_posix()
        size_bytes = file.stat().st_size
        if size_bytes <= inline_max_bytes:
            packed.append({"name": name, "data": file.read_bytes()})
            continue
        key = f"{volume_key}/{name}"
        (volume_dir / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, volume_dir / key)
        packed.append({"name": name, "volume_path": key, "size_bytes": size_bytes})
    return packed


# --- the boundary: how the job reaches Modal ------------------------------------------------------

@dataclass(frozen=True)
class CallOptions:
    """What one call asks of Modal, from the plan: the GPU type, the deadline, the secret."""

    gpu: str | None
    timeout_s: int
    secret_name: str | None


def call_options(request: AttemptRequest, secret_name: str | None) -> CallOptions:
    """Stub runs ask for no GPU: they check the code path on tiny data, and GPU-seconds cost."""
    gpu = None if request.context.stub else request.gpu
    timeout_s = min(MODAL_TIMEOUT_MAX_S, math.ceil(request.timeout_s) + REMOTE_GRACE_S)
    return CallOptions(gpu=gpu, timeout_s=timeout_s, secret_name=secret_name)


class ModalClient(Protocol):
    """What ModalBackend needs from Modal; tests put a stand-in here and nowhere else."""

    project_dir: str | None  # where the function sees the project; None: where it is locally
    volume_dir: str  # where the function sees the artifacts Volume

    def call(self, job: dict[str, Any], options: CallOptions) -> dict[str, Any]:
        """Run `run_attempt_remote(job)` with `options`; return its payload."""
        ...

    def fetch(self, volume_path: str, target: Path) -> None:
        """Copy a file the function left on the Volume to `target`."""
        ...


class RemoteCallStopped(Exception):
    """Ctrl-C or SIGTERM reached the job while it waited on Modal; the call was cancelled."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"the run was stopped by {signal_name}")
        self.signal_name = signal_name


class _SignalsStopTheCall:
    """While the job waits on Modal, Ctrl-C and SIGTERM both end the wait (a default SIGTERM would
    kill the job and leave the container running, and billed); which one came is kept."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _SignalsStopTheCall:
        if threading.current_thread() is threading.main_thread():  # signals can only be caught there
            self._previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signal.Signals(signum).name)
        raise KeyboardInterrupt(self.received[-1])

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class ModalCloud:
    """The real client: an ephemeral run of the app per call, remote output shown as it comes."""

    project_dir: str | None = REMOTE_PROJECT_DIR
    volume_dir: str = VOLUME_MOUNT
    last_call_id: str | None = None  # Modal's id of the last call made: records name it

    def call(self, job: dict[str, Any], options: CallOptions) -> dict[str, Any]:
        self.last_call_id = None
        _check_image_carries(Path(RunContext.from_json(job["context"]).project_root))
        secrets = [modal.Secret.from_name(options.secret_name)] if options.secret_name else []
        function = run_attempt_remote.with_options(
            gpu=options.gpu, timeout=options.timeout_s, secrets=secrets, volumes={VOLUME_MOUNT: volume},
            retries=0,  # run_sub retries failed attempts, as locally; Modal still retries preemptions itself
        )
        with _SignalsStopTheCall() as stops:
            try:
                with modal.enable_output(), app.run():
                    handle = function.spawn(job)
                    self.last_call_id = handle.object_id
                    try:
                        return handle.get()
                    except KeyboardInterrupt:
                        _cancel(handle)
                        raise
            except KeyboardInterrupt:
                raise RemoteCallStopped(stops.received[0] if stops.received else "SIGINT") from None

    def fetch(self, volume_path: str, target: Path) -> None:
        with target.open("wb") as handle:
            for chunk in volume.read_file(volume_path):
                handle.write(chunk)
        try:
            volume.remove_file(volume_path)  # fetched: the Volume is transport, not storage
        except modal.Error:  # a file left behind costs a little storage, not the sub
            pass


def _cancel(handle: modal.FunctionCall) -> None:
    """Stop the remote attempt, container and all, so the GPU stops billing."""
    try:
        handle.cancel(terminate_containers=True)
    except (Exception, KeyboardInterrupt):  # noqa: BLE001, S110 - the app's stop at exit cancels it too
        pass


def _check_image_carries(root: Path) -> None:
    if root.resolve() != PROJECT_ROOT:
        raise BackendError(
            f"the Modal image carries the project at {PROJECT_ROOT}, but this sub belongs to {root}: "
            f"run labrunner from the project's folder, or set {PROJECT_ROOT_ENV}={root}"
        )


class InProcessModal:
    """The Modal function run in this process through Modal's `.local()`: no account, container
    or GPU; a local folder stands in for the Volume. For tests, and to debug the remote path."""

    project_dir: str | None = None

    def __init__(self, volume_dir: Path) -> None:
        self.volume_dir = str(volume_dir)

    def call(self, job: dict[str, Any], options: CallOptions) -> dict[str, Any]:
        return run_attempt_remote.local(job)

    def fetch(self, volume_path: str, target: Path) -> None:
        shutil.copyfile(Path(self.volume_dir) / volume_path, target)


# --- the job side -----------------------------------------------------------------------------------

class ModalBackend(Backend):
    """Runs each attempt as a Modal call and writes what it returns where a local attempt writes
    it, so records, reruns and the aggregates cannot tell the two apart."""

    name = "modal"
    connect_tries: int = CONNECT_TRIES
    backoff_first_s: float = BACKOFF_FIRST_S
    inline_max_bytes: int = INLINE_ARTIFACT_MAX_BYTES

    def __init__(self, client: ModalClient | None = None, secret_name: str | None = None) -> None:
        self.client: ModalClient = client if client is not None else ModalCloud()
        self.secret_name = secret_name  # plan defaults.modal_secret: its variables reach the handler

    def run_attempt(self, request: AttemptRequest) -> dict[str, Any]:
        options = call_options(request, self.secret_name)
        warnings: list[str] = []
        tries = 0
        while True:
            tries += 1
            try:
                payload = self.client.call(self._job(request), options)
                break
            except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - every failure becomes a record
                if not (_is_transient(exc) and tries < self.connect_tries):
                    return self._with_call_id(self._failed(request, options, exc, tries, warnings))
                delay_s = self.backoff_first_s * 2 ** (tries - 1)
                warnings.append(f"Modal call failed on try {tries} of {self.connect_tries} "
                                f"({type(exc).__name__}: {exc}); tried again after {delay_s:g} s")
                _echo(request, warnings[-1])
                try:
                    time.sleep(delay_s)
                except KeyboardInterrupt as stop:
                    return self._with_call_id(self._failed(request, options, stop, tries, warnings))
        outcome = dict(write_payload(payload, request.paths, self.client))
        return self._with_call_id(_with_attempts(outcome, tries, warnings))

    def _with_call_id(self, outcome: dict[str, Any]) -> dict[str, Any]:
        """The Modal call id, where the client knows one (a stand-in or `.local()` does not)."""
        call_id = getattr(self.client, "last_call_id", None)
        return {**outcome, "modal_call_id": call_id} if call_id else outcome

    def _job(self, request: AttemptRequest) -> dict[str, Any]:
        """What the function needs, as plain data; paths are the remote side's."""
        context = request.context
        return {
            "context": context.to_json(),
            "project_dir": self.client.project_dir or context.project_root,
            "volume_dir": self.client.volume_dir,
            "volume_key": f"runs/{context.run_id}/attempt-{context.attempt}",
            "work_key": f"work/{_work_key(context)}",
            "timeout_s": request.timeout_s,
            "gpu": None if context.stub else request.gpu,
            "label": request.label,
            "inline_max_bytes": self.inline_max_bytes,
        }

    def _failed(self, request: AttemptRequest, options: CallOptions, exc: BaseException, tries: int,
                warnings: list[str]) -> dict[str, Any]:
        outcome = failure_outcome(exc, options, tries)
        error = outcome["error"]
        with request.paths.log.open("a", encoding="utf-8") as log:  # run.log says what happened, as locally
            log.write(redact(f"=== {request.label}: run {request.context.run_id}, attempt {request.context.attempt}, "
                             f"started {now_iso()} ===\nModal: {error['type']}: {error['message']}\n"))
        _echo(request, f"Modal: {error['type']}: {error['message']}")
        return _with_attempts(outcome, tries, warnings)


def _echo(request: AttemptRequest, line: str) -> None:
    try:
        request.console.write(redact(f"[{request.label}] {line}\n"))
        request.console.flush()
    except (OSError, ValueError):
        pass  # a closed console must not stop the records


def _with_attempts(outcome: dict[str, Any], tries: int, warnings: list[str]) -> dict[str, Any]:
    outcome["backend_attempts"] = tries
    outcome["warnings"] = [*outcome.get("warnings", []), *warnings]
    return outcome


def _work_key(context: RunContext) -> str:
    """The run folder's place on the Volume: per project (its folder name and a hash of its path)
    and per run folder, so stub and real runs, and two projects, never share a work/."""
    root = Path(context.project_root).resolve()
    run_dir = Path(context.run_dir).resolve()
    relative = run_dir.relative_to(root) if run_dir.is_relative_to(root) else Path(*run_dir.parts[1:])
    digest = hashlib.sha256(str(root).encode("utf-8")).hexdigest()[:8]
    return f"{root.name}-{digest}/{relative.as_posix()}"


def write_payload(payload: Mapping[str, Any], paths: RunPaths, client: ModalClient) -> Mapping[str, Any]:
    """Write the remote attempt's files where a local attempt writes them; return its outcome."""
    if payload.get("version") != PAYLOAD_VERSION:
        raise BackendError(f"the Modal function answered in payload version {payload.get('version')!r}, "
                           f"expected {PAYLOAD_VERSION}")
    _append(paths.log, payload["run_log"])
    _append(paths.metrics, payload["metrics_jsonl"])
    (paths.run_dir / "work").mkdir(exist_ok=True)  # the handler's own is on the Volume
    for artifact in payload["artifacts"]:
        target = _artifact_target(paths.run_dir, artifact["name"])
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.part")
        if "data" in artifact:
            partial.write_bytes(artifact["data"])
        else:
            client.fetch(artifact["volume_path"], partial)
        os.replace(partial, target)
    return payload["outcome"]


def _append(path: Path, text: str) -> None:
    """Masked with this machine's secrets too: the container masked only those it had."""
    if text:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(redact(text))


def _artifact_target(run_dir: Path, name: str) -> Path:
    """Artifact names come from our own function; one that leaves artifacts/ is refused anyway."""
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or len(pure.parts) < 2 or pure.parts[0] != ARTIFACTS_DIR:
        raise BackendError(f"the Modal function returned an artifact outside {ARTIFACTS_DIR}/: {name!r}")
    return run_dir.joinpath(*pure.parts)


# --- errors: what a researcher can act on ----------------------------------------------------------

_TRANSIENT = (modal.exception.ConnectionError, modal.exception.ServiceError, StreamTerminatedError,
              builtins.ConnectionError, builtins.TimeoutError)


def _is_transient(exc: BaseException) -> bool:
    """Worth another try: the servers could not be reached. Not a timeout, a missing secret, a
    preemption Modal already retried: another try would fail the same way, or bill twice."""
    return isinstance(exc, _TRANSIENT)


def _describe(exc: BaseException, options: CallOptions, tries: int) -> tuple[str, str]:
    """(error type, plain message) for an exception from the Modal boundary."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, RemoteCallStopped):
        kind = "Interrupted" if exc.signal_name == "SIGINT" else "Terminated"
        return kind, f"the run was stopped by {exc.signal_name}; the Modal call was cancelled"
    if isinstance(exc, KeyboardInterrupt):
        return "Interrupted", "the run was stopped by SIGINT (Ctrl-C) while it waited on Modal"
    if isinstance(exc, modal.exception.FunctionTimeoutError):
        return "Timeout", (f"the Modal function ran past its timeout of {options.timeout_s} s (timeout_min plus "
                           f"{REMOTE_GRACE_S} s to start and report) and was stopped: {text}")
    if isinstance(exc, modal.exception.AuthError):
        return "AuthError", f"Modal could not authenticate this machine: {text}"
    if isinstance(exc, modal.exception.NotFoundError) and options.secret_name and "secret" in text.lower():
        return "NotFoundError", f"the Modal secret {options.secret_name!r} (defaults.modal_secret in the plan) was not found: {text}"
    if isinstance(exc, modal.exception.InvalidError) and options.gpu and "gpu" in text.lower():
        return "InvalidError", f"Modal cannot give the GPU type {options.gpu!r} (gpu: in the plan): {text}"
    if isinstance(exc, modal.exception.InternalFailure):
        return "Preempted", f"the Modal container running the handler was preempted or lost, and Modal's own retries ran out: {text}"
    if _is_transient(exc):
        return type(exc).__name__, f"could not reach Modal in {tries} tries: {text}"
    return type(exc).__name__, f"the Modal call failed: {text}"


def failure_outcome(exc: BaseException, options: CallOptions, tries: int) -> dict[str, Any]:
    """A failed attempt whose handler may never have run: the same shape as a handler's failure."""
    error_type, message = _describe(exc, options, tries)
    text = "".join(traceback.format_exception(exc))
    return {
        "status": FAILED,
        "error": {"type": error_type, "message": message, "traceback": text, "handler_line": None,
                  "hint": hint_for(error_type, message, "")},
        "warnings": [],
    }


# --- the classic entrypoint: `modal run -m labrunner.backends.modal_backend::run_experiment` --------

def _snakemake_program() -> list[str]:
    """The Snakemake of this environment, activated or not."""
    script = Path(sys.executable).parent / "snakemake"
    return [str(script)] if script.exists() else [sys.executable, "-m", "snakemake"]


def experiment_command(experiment_id: str, stub: bool = False, cores: int = 8,
                       plan_path: Path = DEFAULT_PLAN_PATH) -> list[str]:
    """The Snakemake command that runs one experiment's subs on Modal (only what is missing or
    failed, and what it depends on) and writes its results and FINDINGS.md: the same pipeline,
    files and reruns as `snakemake ... --config backend=modal`. The target comes first: `--config`
    takes every word after it."""
    from labrunner.plan import load_plan

    if cores < 1:
        raise ConfigError([Issue("--cores", str(cores), "expected at least 1 (the number of concurrent Modal calls)")])
    plan = load_plan(plan_path, check_handlers=False)
    if experiment_id not in plan.active_experiments:
        archived = [exp_id for exp_id in plan.experiments if exp_id not in plan.active_experiments]
        why = "is archived in the plan" if experiment_id in archived else "is not in the plan"
        raise ConfigError([Issue("--experiment-id", experiment_id,
                                 f"{why}; experiments: {', '.join(plan.active_experiments) or 'none'}")])
    target = experiment_findings_path(experiment_id, stub).as_posix()
    config = ["backend=modal", *(["stub=true"] if stub else []),
              *([f"plan={plan_path}"] if Path(plan_path) != DEFAULT_PLAN_PATH else [])]
    return [*_snakemake_program(), target, "--cores", str(cores), "--config", *config]


@app.local_entrypoint()
def run_experiment(experiment_id: str, stub_mode: bool = False, cores: int = 8) -> None:
    """Run one experiment's sub-experiments on Modal: only those missing or failed (and the
    experiments it depends on), through the same Snakemake pipeline as
    `snakemake research/FINDINGS.md --config backend=modal`, so it writes the same records,
    results.yaml and FINDINGS.md. --stub-mode runs stub_params in the stub/ tree, without GPUs;
    --cores bounds the concurrent Modal calls."""
    try:
        command = experiment_command(experiment_id, stub=stub_mode, cores=cores)
    except LabrunnerError as exc:
        print(f"run_experiment: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    print(f"run_experiment: {shlex.join(command)}", flush=True)
    code = subprocess.run(command, check=False).returncode
    if code:
        raise SystemExit(code)
