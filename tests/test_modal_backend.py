"""Unit tests for the Modal backend, real code up to the Modal boundary. The remote function runs
a real handler through Modal's `.local()` (InProcessModal); stand-ins at the boundary only raise
what Modal raises (a lost connection, a timeout, no token, ...); and one test goes through the
real Modal client on a machine without a Modal token."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import modal
import pytest
import yaml

from conftest import EXP, PLAN_FILE, SUB, ProjectFactory, one_sub_plan, write
from labrunner.backends.modal_backend import (
    REMOTE_GRACE_S, REMOTE_PROJECT_DIR, InProcessModal, ModalBackend, RemoteCallStopped, call_options,
    image_packages, project_files,
)
from labrunner.execution import AttemptRequest, Backend, LocalBackend, SubRun, run_sub
from labrunner.layout import RunPaths
from labrunner.plan import load_plan
from labrunner.records import read_record
from labrunner.runner import RunContext

HANDLER = """\
import sys


def s1(runner):
    for step in range(3):
        runner.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    print("training on", runner.device)
    print("a note on stderr", file=sys.stderr)
    small = runner.results.save_json_artifact("summary.json", {"epochs": 3})
    large = runner.results.save_artifact("plots/big.bin", bytes(range(256)) * 64)  # 16 KiB: over the inline limit
    return {"finding": "loss goes down", "metrics": {"accuracy": 0.97}, "artifacts": [small, large]}
"""

FAILING = """\
def s1(runner):
    runner.log_metrics({"loss": 0.9}, step=0)
    print("about to fail")
    raise ValueError("bad batch")
"""

INLINE_MAX_BYTES = 4096  # the large artifact goes through the (local stand-in of the) Volume
VOLATILE_KEYS = {"started_at", "ended_at", "resolved_at", "duration_s", "wall_s", "run_id", "backend"}


class Raising(InProcessModal):
    """The Modal boundary raising what Modal raises, `failures` times (every time when None),
    then answering through `.local()`."""

    def __init__(self, volume_dir: Path, error: BaseException, failures: int | None = None) -> None:
        super().__init__(volume_dir)
        self.error, self.failures, self.calls = error, failures, 0

    def call(self, job: dict[str, Any], options: Any) -> dict[str, Any]:
        self.calls += 1
        if self.failures is None or self.calls <= self.failures:
            raise self.error
        return super().call(job, options)


def modal_backend(tmp_path: Path, client: InProcessModal | None = None, secret_name: str | None = None) -> ModalBackend:
    backend = ModalBackend(client or InProcessModal(tmp_path / "volume"), secret_name=secret_name)
    backend.inline_max_bytes = INLINE_MAX_BYTES
    backend.backoff_first_s = 0.0
    return backend


def run(root: Path, backend: Backend, results: str = "results", console: io.StringIO | None = None) -> SubRun:
    plan = load_plan(root / PLAN_FILE)
    return run_sub(plan, plan.sub(EXP, SUB), results_root=Path(results), backend=backend, console=console or io.StringIO())


def project(make_project: ProjectFactory, source: str = HANDLER, **sub_settings: Any) -> Path:
    return make_project(one_sub_plan(**sub_settings), {f"handlers/{EXP}/{SUB}.py": source})


def scrub(data: Any) -> Any:
    if isinstance(data, dict):
        return {key: scrub(value) for key, value in data.items() if key not in VOLATILE_KEYS}
    if isinstance(data, list):
        return [scrub(item) for item in data]
    return data


def normalized_tree(run_dir: Path) -> dict[str, Any]:
    """Every file of a run folder, with times and ids (and the backend's name) taken out."""
    tree: dict[str, Any] = {}
    for path in sorted(run_dir.rglob("*")):
        name = path.relative_to(run_dir).as_posix()
        if path.is_dir():
            tree[f"{name}/"] = "folder"
        elif name.startswith("history/"):  # <time>-<run id>.<kind>.yaml
            tree[f"history/{name.rsplit('.', 2)[-2]}"] = scrub(yaml.safe_load(path.read_text()))
        elif name.endswith(".yaml"):
            tree[name] = scrub(yaml.safe_load(path.read_text()))
        elif name == "metrics.jsonl":
            lines = [json.loads(line) for line in path.read_text().splitlines()]
            tree[name] = [{key: value for key, value in line.items() if key not in ("run", "time_s")} for line in lines]
        elif name == ".attempts":  # the run folder's token (drawn at random) and its attempt count
            tree[name] = path.read_text().split()[1]
        elif name == "run.log":
            tree[name] = re.sub(r"run \w+, attempt (\d+), started \S+", r"run <id>, attempt \1, started <time>", path.read_text())
        else:
            tree[name] = path.read_bytes()
    return tree


def failure_of(outcome: SubRun) -> dict[str, Any]:
    assert outcome.status == "failed", outcome.record
    assert not outcome.paths.result.exists()
    return read_record(outcome.paths.failure)


def clean_env(tmp_path: Path) -> dict[str, str]:
    """An environment with no Modal token anywhere: no variables, no ~/.modal.toml."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MODAL_")}
    env.update(HOME=str(tmp_path / "home"), MODAL_CONFIG_PATH=str(tmp_path / "home" / "no-modal.toml"))
    return env


# --- the module ---------------------------------------------------------------------------------

def test_modal_module_imports_without_token_or_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # import torch now fails, as on a machine without it\n"
        "import labrunner.backends.modal_backend as backend\n"
        "assert backend.app.name == 'labrunner' and type(backend.run_attempt_remote).__name__ == 'Function'\n"
        "print('loaded:', sorted({m.split('.')[0] for m in sys.modules if sys.modules[m] is not None} & {'torch', 'wandb'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=clean_env(tmp_path))

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "loaded: []"


def test_modal_backends_package_is_light() -> None:
    done = subprocess.run([sys.executable, "-c", "import sys, labrunner.backends; print('modal' in sys.modules)"],
                          capture_output=True, text=True, timeout=60)

    assert done.stdout.strip() == "False", done.stderr


def test_modal_image_packages_take_the_project_pins_and_modal_pip(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", (
        '[project]\nname = "study"\ndependencies = ["numpy==1.26.4", "modal>=1.0", "labrunner"]\n'
        '[tool.labrunner]\nmodal_pip = ["torch==2.13.0"]\n'
    ))

    packages = image_packages(tmp_path)

    assert "numpy==1.26.4" in packages and not any(p.startswith("numpy>") for p in packages)
    assert "torch==2.13.0" in packages and "pyyaml>=6.0" in packages  # labrunner's own needs come too
    assert not [p for p in packages if re.match(r"(modal|snakemake|labrunner)\b", p)]


def test_modal_image_carries_handlers_plan_and_modal_add_inside_the_project(tmp_path: Path, make_project: ProjectFactory) -> None:
    root = project(make_project)
    write(root / "data" / "train.csv", "x\n1\n")
    write(root / "pyproject.toml", '[tool.labrunner]\nmodal_add = ["data", "../elsewhere", "missing"]\n')

    remote = {local.relative_to(root).as_posix(): where for local, where in project_files(root)}

    assert remote == {"handlers": f"{REMOTE_PROJECT_DIR}/handlers", "data": f"{REMOTE_PROJECT_DIR}/data",
                      "research/research_plan.yaml": f"{REMOTE_PROJECT_DIR}/research/research_plan.yaml"}


@pytest.mark.parametrize(("stub", "gpu"), [(False, "A10G"), (True, None)])
def test_modal_call_options_take_the_plan_gpu_except_in_stub_mode(tmp_path: Path, stub: bool, gpu: str | None) -> None:
    context = RunContext(EXP, SUB, {}, 0, stub, str(tmp_path), str(tmp_path), "h.py", "s1", "run1")
    request = AttemptRequest(context, RunPaths(tmp_path), 90.0, "A10G", EXP, io.StringIO())

    options = call_options(request, "wandb")

    assert (options.gpu, options.timeout_s, options.secret_name) == (gpu, 90 + REMOTE_GRACE_S, "wandb")


# --- the remote function, through .local() --------------------------------------------------------

@pytest.mark.parametrize("source", [HANDLER, FAILING], ids=["completed", "failed"])
def test_modal_backend_writes_the_files_the_local_backend_writes(make_project: ProjectFactory, tmp_path: Path,
                                                                 source: str) -> None:
    root = project(make_project, source)

    local = run(root, LocalBackend(), "results-local")
    remote = run(root, modal_backend(tmp_path), "results-modal")

    assert (remote.status, remote.record["backend"]) == (local.status, "modal")
    assert normalized_tree(remote.paths.run_dir) == normalized_tree(local.paths.run_dir)
    if source == HANDLER:  # the large artifact really went through the Volume
        assert [path.name for path in (tmp_path / "volume" / "runs").rglob("*") if path.is_file()] == ["big.bin"]


def test_modal_backend_handler_timeout_is_enforced_remotely_as_locally(make_project: ProjectFactory, tmp_path: Path) -> None:
    root = project(make_project, "import time\n\n\ndef s1(runner):\n    time.sleep(60)\n", timeout_min=0.02)

    record = failure_of(run(root, modal_backend(tmp_path)))

    assert record["error"]["type"] == "Timeout"
    assert record["error"]["handler_line"]["code"] == "time.sleep(60)"  # the stack taken in the container


# --- the boundary: errors, retries --------------------------------------------------------------------

def test_modal_backend_retries_a_lost_connection_and_records_both_calls(make_project: ProjectFactory, tmp_path: Path) -> None:
    lost = modal.exception.ConnectionError("Could not connect to the Modal server.")
    client = Raising(tmp_path / "volume", lost, failures=1)
    console = io.StringIO()

    outcome = run(project(make_project), modal_backend(tmp_path, client), console=console)

    assert outcome.ok, outcome.record.get("error")
    record = read_record(outcome.paths.result)
    assert (record["backend_attempts"], record["attempts"], client.calls) == (2, 1, 2)
    assert "Modal call failed on try 1 of 3 (ConnectionError: Could not connect to the Modal server.)" in record["warnings"][0]
    assert "Modal call failed on try 1 of 3" in console.getvalue()


def test_modal_backend_gives_up_after_three_lost_connections(make_project: ProjectFactory, tmp_path: Path) -> None:
    client = Raising(tmp_path / "volume", ConnectionResetError(104, "Connection reset by peer"))

    outcome = run(project(make_project), modal_backend(tmp_path, client))

    record = failure_of(outcome)
    assert (record["backend_attempts"], client.calls) == (3, 3)
    assert record["error"]["message"].startswith("could not reach Modal in 3 tries")
    assert "check the network" in record["error"]["hint"]
    assert "Modal: ConnectionResetError: could not reach Modal in 3 tries" in outcome.paths.log.read_text()


@pytest.mark.parametrize(("error", "settings", "error_type", "message", "hint"), [
    (modal.exception.FunctionTimeoutError("Function call timed out after 180s"), {}, "Timeout",
     "ran past its timeout of 180 s", "raise timeout_min"),
    (modal.exception.AuthError("Token missing. Could not authenticate client. ... then run `modal token new`."), {},
     "AuthError", "Modal could not authenticate", "run `modal token new`"),
    (modal.exception.NotFoundError("Secret 'wandb' not found in environment 'main'"), {}, "NotFoundError",
     "the Modal secret 'wandb' (defaults.modal_secret in the plan) was not found", "modal secret create"),
    (modal.exception.InvalidError("Unknown GPU type: Z100"), {"gpu": "Z100"}, "InvalidError",
     "Modal cannot give the GPU type 'Z100'", "T4, L4, A10G"),
    (modal.exception.InternalFailure("Input lost: worker preempted"), {}, "Preempted",
     "preempted or lost", "run the same command again"),
], ids=["timeout", "no-token", "missing-secret", "unknown-gpu", "preempted"])
def test_modal_backend_boundary_errors_become_plain_failure_records(
        make_project: ProjectFactory, tmp_path: Path, error: Exception, settings: dict[str, Any],
        error_type: str, message: str, hint: str) -> None:
    client = Raising(tmp_path / "volume", error)

    record = failure_of(run(project(make_project, **settings), modal_backend(tmp_path, client, secret_name="wandb")))

    assert record["error"]["type"] == error_type
    assert message in record["error"]["message"]
    assert hint in record["error"]["hint"]
    assert client.calls == 1  # none of these is worth a second call
    assert record["backend"] == "modal" and "backend_attempts" not in record


def test_modal_backend_stopped_call_is_recorded_and_not_retried(make_project: ProjectFactory, tmp_path: Path) -> None:
    client = Raising(tmp_path / "volume", RemoteCallStopped("SIGTERM"))

    record = failure_of(run(project(make_project, retries=2), modal_backend(tmp_path, client)))

    assert (record["error"]["type"], record["attempts"], client.calls) == ("Terminated", 1, 1)
    assert "the Modal call was cancelled" in record["error"]["message"]


class Spawning(Raising):
    """The Modal boundary as ModalCloud has it once the call is spawned: its id is known, then the
    call answers (or raises)."""

    last_call_id: str | None = None

    def call(self, job: dict[str, Any], options: Any) -> dict[str, Any]:
        self.last_call_id = f"fc-test{self.calls + 1}"
        return super().call(job, options)


@pytest.mark.parametrize("failures", [0, None], ids=["completed", "timed-out"])
def test_modal_backend_records_the_modal_call_id(make_project: ProjectFactory, tmp_path: Path, failures: int | None) -> None:
    timeout = modal.exception.FunctionTimeoutError("Function call timed out after 180s")
    outcome = run(project(make_project), modal_backend(tmp_path, Spawning(tmp_path / "volume", timeout, failures)))

    record = read_record(outcome.paths.result if outcome.ok else outcome.paths.failure)
    assert record["modal_call_id"] == "fc-test1"
    assert record["executor"]["name"] in ("local", "slurm")  # where the job waiting on Modal ran


def test_modal_backend_without_token_says_run_modal_token_new(make_project: ProjectFactory, tmp_path: Path) -> None:
    """The real client, end to end through the CLI, on a machine with no Modal token: Modal
    refuses before any network call, and the record says what to do."""
    root = project(make_project)

    done = subprocess.run([sys.executable, "-m", "labrunner", "run", EXP, SUB, "--backend", "modal"], cwd=root,
                          capture_output=True, text=True, timeout=120, env=clean_env(tmp_path))

    assert done.returncode == 1, done.stdout + done.stderr
    record = read_record(root / "results" / EXP / SUB / "failure.yaml")
    assert (record["backend"], record["error"]["type"]) == ("modal", "AuthError")
    assert "Token missing" in record["error"]["message"]
    assert "run `modal token new`" in record["error"]["hint"]
