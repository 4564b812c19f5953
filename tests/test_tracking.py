"""Unit tests for labrunner.tracking: a real offline W&B run under the results tree with prefixed
metric names; online without a key or a network falls back to offline; a W&B that hangs or raises
(a fake wandb module: the server boundary) costs a warning, never the experiment."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conftest import EXP, SUB, ProjectFactory, RunHandler, one_sub_plan
from labrunner.records import read_record
from labrunner.tracking import (
    INIT_GRACE_S, NullTracker, TrackingRequest, WandbTracker, attempt_run_id, effective_mode, project_slug,
    start_tracking,
)

LOGGING_HANDLER = """\
def s1(runner):
    for step in range(3):
        runner.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    return {"finding": "loss goes down", "metrics": {"accuracy": 0.9}}
"""


# --- reading an offline run back -------------------------------------------------------------

_BLOCK = 32768  # the .wandb file is a LevelDB-style log of protobuf records in 32 KiB blocks
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def wandb_records(path: Path) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, pending = 7, b""
    while position + 7 <= len(data):
        left = _BLOCK - position % _BLOCK
        _crc, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if left < 7 or (kind == 0 and length == 0):  # block trailer or padding
            position += left
            continue
        chunk = data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (_FIRST, _MIDDLE):
            pending = chunk if kind == _FIRST else pending + chunk
            continue
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending + chunk if kind == _LAST else chunk)
        pending = b""
        yield record


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)  # names with a "/" are stored as nested keys


def offline_run(run_dir: Path) -> dict[str, Any]:
    """The run, the history rows and the summary of the one offline run under `run_dir`."""
    files = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    run: Any = None
    history: list[dict[str, str]] = []
    summary: dict[str, str] = {}
    for record in wandb_records(files[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
        elif kind == "history":
            history.append({_key(item): item.value_json for item in record.history.item})
        elif kind == "summary":
            summary.update({_key(item): item.value_json for item in record.summary.update})
    return {"file": files[0], "run": run, "history": history, "summary": summary}


def offline_attempts(run_dir: Path) -> list[dict[str, Any]]:
    """Every offline run under `run_dir`, oldest first: id, name, tags, config, exit code, artifacts."""
    runs = []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"), key=lambda item: item.parent.name):
        found: dict[str, Any] = {"file": path, "tags": [], "config": {}, "artifacts": []}
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":  # the first one starts the run, later ones update it (tags)
                found.update(id=record.run.run_id, name=record.run.display_name, tags=list(record.run.tags))
                found["config"].update({item.key: item.value_json for item in record.run.config.update})
            elif kind == "config":
                found["config"].update({item.key: item.value_json for item in record.config.update})
            elif kind == "exit":
                found["exit_code"] = record.exit.exit_code
            elif kind == "artifact":
                found["artifacts"].append((record.artifact.name, sorted(entry.path for entry in record.artifact.manifest.contents)))
                found["staged"] = {entry.path: entry.local_path for entry in record.artifact.manifest.contents}
        runs.append(found)
    return runs


# --- real W&B, offline -----------------------------------------------------------------------------

def test_tracking_offline_run_is_written_under_the_results_tree(run_handler: RunHandler) -> None:
    outcome = run_handler(LOGGING_HANDLER, wandb_mode="offline", params={"lr": 0.1})

    assert outcome.ok, outcome.record
    wandb_info = read_record(outcome.paths.result)["wandb"]
    assert wandb_info["mode"] == "offline"
    assert (wandb_info["project"], wandb_info["group"], wandb_info["name"]) == ("demo", EXP, SUB)
    root = outcome.paths.run_dir.parents[2]
    assert (root / wandb_info["path"]).resolve().is_relative_to(outcome.paths.run_dir.resolve())
    written = offline_run(outcome.paths.run_dir)
    assert written["file"].name == f"run-{wandb_info['id']}.wandb"
    run = written["run"]
    assert (run.project, run.run_group, run.display_name) == ("demo", EXP, SUB)
    config = {item.key: item.value_json for item in run.config.update}
    assert config["params"] == '{"lr":0.1}' and config["seed"] == "0"


def test_tracking_each_attempt_is_a_run_with_a_stable_id_failed_ones_tagged(run_handler: RunHandler) -> None:
    failing = 'def s1(runner):\n    runner.log_metrics({"loss": 2.0}, step=0)\n    raise RuntimeError("boom")\n'
    first = run_handler(failing, wandb_mode="offline", retries=1)  # a job with a retry: two attempts
    root = first.paths.run_dir.parents[2]
    second = run_handler(LOGGING_HANDLER.replace('return {', 'path = runner.results.save_artifact("note.txt", "hi")\n'
                                                 '    return {"artifacts": [path], '), root=root)

    token, count = (second.paths.run_dir / ".attempts").read_text().split()
    assert count == "3"  # attempts counted across jobs, retries included
    digest = hashlib.sha256(f"demo\0{EXP}\0{SUB}\0000\0real\0{token}".encode()).hexdigest()[:8]
    runs = offline_attempts(second.paths.run_dir)
    assert [run["id"] for run in runs] == [f"{SUB}-s0-a{n}-{digest}" for n in (1, 2, 3)]
    assert [run["name"] for run in runs] == [SUB, f"{SUB} (attempt 2)", f"{SUB} (attempt 3)"]
    assert [run["exit_code"] for run in runs] == [1, 1, 0]
    assert [("failed" in run["tags"]) for run in runs] == [True, True, False]
    assert [run["artifacts"] for run in runs] == [[], [], [(f"{EXP}.{SUB}.seed0", ["artifacts/note.txt"])]]
    (second.paths.run_dir / "artifacts" / "note.txt").write_text("replaced by a later rerun")
    assert Path(runs[2]["staged"]["artifacts/note.txt"]).read_text() == "hi"  # W&B keeps its own copy
    failure, result = first.record, read_record(second.paths.result)
    assert (failure["wandb"]["id"], failure["wandb"]["attempt"]) == (runs[1]["id"], 2)
    assert failure["failed_attempts"][0]["wandb_id"] == runs[0]["id"]
    assert (result["wandb"]["id"], result["wandb"]["attempt"]) == (runs[2]["id"], 3)
    provenance = json.loads(runs[2]["config"]["provenance"])
    assert provenance["code"] == result["code"] and provenance["handler"] == f"handlers/{EXP}/{SUB}.py::{SUB}"
    assert (provenance["commit"], provenance["dirty"]) == (result["git"]["commit"], result["git"]["dirty"])
    assert json.loads(runs[2]["config"]["environment"]) == result["environment"]


def test_tracking_an_online_run_whose_id_exists_is_refused_and_falls_back_to_offline(tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []

    def init(**kwargs: Any) -> Any:  # W&B answers resume="never" for an id it has with an error
        calls.append(kwargs)
        if kwargs["mode"] == "online":
            raise RuntimeError(f"run ID {kwargs['id']} is in use")
        return FakeRun()

    tracker = start_tracking(replace(request(tmp_path), run_id="s1-s0-a1-abc", attempt=1), import_wandb=fake_wandb(init))

    assert [(call["mode"], call["id"], call["resume"]) for call in calls] == [
        ("online", "s1-s0-a1-abc", "never"), ("offline", "s1-s0-a1-abc-offline", "never")]
    assert tracker.warnings == ["W&B online run RuntimeError: run ID s1-s0-a1-abc is in use; falling back to offline"]
    assert tracker.info()["attempt"] == 1


def test_tracking_attempt_run_id_depends_on_sub_seed_attempt_tree_and_folder() -> None:
    ids = {attempt_run_id("demo", EXP, sub, seed, stub, attempt, token) for sub in ("s1", "s2") for seed in (0, 1)
           for stub in (False, True) for attempt in (1, 2) for token in ("0a1b2c3d", "ffee0011")}
    assert len(ids) == 32
    assert attempt_run_id("demo", EXP, "e1_4.hidden-64.lr-0.001", 2, False, 7, "t").startswith("e1_4-hidden-64-lr-0-001-s2-a7-")
    assert attempt_run_id("demo", EXP, "s1", 0, False, 1, "t") == attempt_run_id("demo", EXP, "s1", 0, False, 1, "t")


def test_tracking_a_deleted_results_folder_starts_new_ids(run_handler: RunHandler) -> None:
    first = run_handler(LOGGING_HANDLER, wandb_mode="offline")
    root, before = first.paths.run_dir.parents[2], first.record["wandb"]["id"]
    shutil.rmtree(root / "results")

    again = run_handler(LOGGING_HANDLER, root=root)

    after = again.record["wandb"]["id"]
    assert before.startswith(f"{SUB}-s0-a1-") and after.startswith(f"{SUB}-s0-a1-") and after != before


def test_tracking_metric_names_are_prefixed_with_the_sub(run_handler: RunHandler) -> None:
    outcome = run_handler(LOGGING_HANDLER, wandb_mode="offline")

    written = offline_run(outcome.paths.run_dir)
    rows = [{key: value for key, value in row.items() if key.startswith(f"{SUB}/")} for row in written["history"]]
    assert rows == [{f"{SUB}/loss": "1", f"{SUB}/step": "0"}, {f"{SUB}/loss": "0.5", f"{SUB}/step": "1"},
                    {f"{SUB}/loss": "0.3333333333333333", f"{SUB}/step": "2"}]
    assert written["summary"][f"{SUB}/accuracy"] == "0.9"
    assert b"s1/loss" in written["file"].read_bytes()
    assert not any(key == "loss" for row in written["history"] for key in row)


def test_tracking_offline_run_holds_no_secret(run_handler: RunHandler, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-5d1e8b2a9c")

    outcome = run_handler(LOGGING_HANDLER, wandb_mode="offline")

    for path in (outcome.paths.run_dir / "wandb").rglob("*"):
        if path.is_file():
            assert b"tok-5d1e8b2a9c" not in path.read_bytes(), path


def test_tracking_online_without_a_key_falls_back_to_offline(run_handler: RunHandler, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"  # no ~/.netrc, no W&B settings: nothing to log in with
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    started = time.monotonic()

    outcome = run_handler(LOGGING_HANDLER, wandb_mode="online")

    assert time.monotonic() - started < 30
    assert outcome.ok
    record = read_record(outcome.paths.result)
    assert record["wandb"]["mode"] == "offline"
    assert any(warning.startswith("W&B online run UsageError") and warning.endswith("falling back to offline")
               for warning in record["warnings"]), record["warnings"]
    assert offline_run(outcome.paths.run_dir)["history"]


def test_tracking_online_without_a_network_falls_back_to_offline(run_handler: RunHandler, make_project: ProjectFactory,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef0123456789abcdef01234567")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    plan = one_sub_plan("online")
    plan["wandb"].update(init_timeout_s=1.5, finish_timeout_s=5)
    started = time.monotonic()

    outcome = run_handler(LOGGING_HANDLER, root=make_project(plan))

    assert time.monotonic() - started < 30
    assert outcome.ok
    record = read_record(outcome.paths.result)
    assert record["wandb"]["mode"] == "offline"
    assert any("falling back to offline" in warning for warning in record["warnings"]), record["warnings"]
    assert "0123456789abcdef" not in outcome.paths.result.read_text()
    # W&B keeps the online attempt's id reserved: the fallback is a run of its own
    token = (outcome.paths.run_dir / ".attempts").read_text().split()[0]
    assert record["wandb"]["id"] == attempt_run_id("demo", EXP, SUB, 0, False, 1, token) + "-offline"


def test_tracking_wandb_mode_environment_overrides_the_plan(run_handler: RunHandler, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")

    outcome = run_handler(LOGGING_HANDLER, wandb_mode="offline")

    assert read_record(outcome.paths.result)["wandb"] == {"mode": "disabled"}
    assert not (outcome.paths.run_dir / "wandb").exists()


@pytest.mark.parametrize(("env", "plan_mode", "mode"), [
    ({}, "offline", "offline"),
    ({"WANDB_MODE": "online"}, "offline", "online"),
    ({"WANDB_MODE": "dryrun"}, "online", "offline"),
    ({"WANDB_MODE": " Disabled "}, "online", "disabled"),
    ({"WANDB_MODE": "nonsense"}, "online", "online"),
])
def test_tracking_effective_mode(env: dict[str, str], plan_mode: str, mode: str) -> None:
    assert effective_mode(plan_mode, env) == mode


def test_tracking_project_slug() -> None:
    assert project_slug("Digits: a study!") == "digits-a-study"
    assert project_slug(None) == project_slug("  ") == "labrunner"


# --- the server boundary: a fake wandb that hangs or raises -----------------------------------------

def request(tmp_path: Path, mode: str = "online", init_timeout_s: float = 0.2, finish_timeout_s: float = 0.2) -> TrackingRequest:
    return TrackingRequest(mode=mode, project="demo", entity=None, group=EXP, name=SUB, metric_prefix=f"{SUB}/",
                           config={"seed": 0}, run_dir=tmp_path / "run", init_timeout_s=init_timeout_s,
                           finish_timeout_s=finish_timeout_s)


class FakeRun:
    def __init__(self, finish: Callable[[], None] = lambda: None, log: Callable[[dict[str, Any]], None] = lambda _: None) -> None:
        self.id, self.logged, self.summary, self.defined = "fake123", [], {}, []
        self._finish, self._log = finish, log

    def define_metric(self, name: str, **kwargs: Any) -> None:
        self.defined.append((name, kwargs))

    def log(self, payload: dict[str, Any]) -> None:
        self._log(payload)
        self.logged.append(payload)

    def finish(self, exit_code: int) -> None:
        self._finish()


def fake_wandb(init: Callable[..., Any]) -> Callable[[], Any]:
    module = SimpleNamespace(Settings=lambda **settings: settings, init=init)
    return lambda: module


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end of the test, so that the threads a hung fake holds finish."""
    event = threading.Event()
    yield event
    event.set()


@pytest.mark.slow
def test_tracking_online_init_that_hangs_falls_back_to_offline_in_bounded_time(tmp_path: Path, release: threading.Event) -> None:
    calls: list[str] = []

    def init(**kwargs: Any) -> Any:
        calls.append(kwargs["mode"])
        if kwargs["mode"] == "online":
            release.wait()
        return FakeRun()

    started = time.monotonic()
    tracker = start_tracking(request(tmp_path, init_timeout_s=0.2), import_wandb=fake_wandb(init))

    assert time.monotonic() - started < 0.2 + INIT_GRACE_S + 2.0
    assert isinstance(tracker, WandbTracker) and tracker.mode == "offline"
    assert calls == ["online", "offline"]
    assert tracker.warnings == ["W&B online run did not start within 0.2s; falling back to offline"]


@pytest.mark.slow
def test_tracking_init_that_always_hangs_turns_tracking_off_in_bounded_time(tmp_path: Path, release: threading.Event) -> None:
    def init(**kwargs: Any) -> Any:
        release.wait()

    started = time.monotonic()
    tracker = start_tracking(request(tmp_path, init_timeout_s=0.2), import_wandb=fake_wandb(init))

    assert time.monotonic() - started < 2 * (0.2 + INIT_GRACE_S) + 2.0
    assert isinstance(tracker, NullTracker)
    assert tracker.warnings[-1] == ("W&B offline run did not start within 0.2s; tracking off for this run "
                                    "(metrics.jsonl has every metric)")
    assert tracker.info() == {"mode": "disabled"}


def test_tracking_init_that_raises_falls_back_to_offline(tmp_path: Path) -> None:
    def init(**kwargs: Any) -> Any:
        if kwargs["mode"] == "online":
            raise ConnectionError("wandb.ai is unreachable")
        return FakeRun()

    tracker = start_tracking(request(tmp_path), import_wandb=fake_wandb(init))

    assert isinstance(tracker, WandbTracker)
    assert tracker.mode == "offline"
    assert tracker.warnings == ["W&B online run ConnectionError: wandb.ai is unreachable; falling back to offline"]
    assert tracker.info()["id"] == "fake123"


def test_tracking_init_that_always_raises_turns_tracking_off(tmp_path: Path) -> None:
    def init(**kwargs: Any) -> Any:
        raise RuntimeError(f"no {kwargs['mode']}")

    tracker = start_tracking(request(tmp_path), import_wandb=fake_wandb(init))

    assert isinstance(tracker, NullTracker)
    assert tracker.warnings == ["W&B online run RuntimeError: no online; falling back to offline",
                                "W&B offline run RuntimeError: no offline; tracking off for this run "
                                "(metrics.jsonl has every metric)"]


def test_tracking_finish_that_hangs_gives_a_warning_in_bounded_time(tmp_path: Path, release: threading.Event) -> None:
    run = FakeRun(finish=release.wait)
    tracker = start_tracking(request(tmp_path, finish_timeout_s=0.3), import_wandb=fake_wandb(lambda **_: run))
    started = time.monotonic()

    tracker.finish(0)

    assert time.monotonic() - started < 2.0
    assert isinstance(tracker, WandbTracker) and tracker.hung
    assert tracker.warnings[0].startswith("W&B finish did not return within 0.3s")
    tracker.log({"loss": 1.0}, 1)  # nothing more goes to a hung W&B
    tracker.finish(0)
    assert run.logged == []


def test_tracking_finish_that_raises_gives_a_warning(tmp_path: Path) -> None:
    def finish() -> None:
        raise OSError("disk full")

    tracker = start_tracking(request(tmp_path), import_wandb=fake_wandb(lambda **_: FakeRun(finish=finish)))
    tracker.finish(1)

    assert tracker.warnings == ["W&B finish failed: OSError: disk full"]


def test_tracking_log_prefixes_names_and_survives_a_failing_log(tmp_path: Path) -> None:
    failures = iter([None, RuntimeError("quota exceeded")])

    def log(payload: dict[str, Any]) -> None:
        error = next(failures, None)
        if error:
            raise error

    run = FakeRun(log=log)
    tracker = start_tracking(request(tmp_path), import_wandb=fake_wandb(lambda **_: run))

    tracker.log({"loss": 0.5}, 3)
    tracker.log({"loss": 0.4}, 4)
    tracker.log({"loss": 0.3}, 5)

    assert run.logged == [{"s1/loss": 0.5, "s1/step": 3}]
    assert run.defined == [("s1/step", {}), ("s1/*", {"step_metric": "s1/step"})]
    assert tracker.warnings == ["W&B logging stopped: RuntimeError: quota exceeded; metrics.jsonl has everything"]


def test_tracking_log_lines_sends_every_line_in_order_and_stops_at_a_failure(tmp_path: Path) -> None:
    def log(payload: dict[str, Any]) -> None:
        if payload["s1/step"] == 2400:
            raise RuntimeError("quota exceeded")

    run = FakeRun(log=log)
    tracker = start_tracking(request(tmp_path), import_wandb=fake_wandb(lambda **_: run))

    tracker.log_lines([({"loss": step / 4}, step) for step in range(3000)])  # several calls on the owner thread
    tracker.log_lines([({"loss": 0.0}, 3000)])

    assert run.logged == [{"s1/loss": step / 4, "s1/step": step} for step in range(2400)]
    assert tracker.warnings == ["W&B logging stopped: RuntimeError: quota exceeded; metrics.jsonl has everything"]


def test_tracking_wandb_that_cannot_be_imported_turns_tracking_off(tmp_path: Path) -> None:
    def import_wandb() -> Any:
        raise ImportError("No module named 'wandb'")

    tracker = start_tracking(request(tmp_path), import_wandb=import_wandb)

    assert isinstance(tracker, NullTracker)
    assert "pip install wandb" in tracker.warnings[0]


def test_tracking_disabled_does_not_import_wandb(tmp_path: Path) -> None:
    def import_wandb() -> Any:
        raise AssertionError("wandb was imported")

    tracker = start_tracking(request(tmp_path, mode="disabled"), import_wandb=import_wandb)

    assert isinstance(tracker, NullTracker) and tracker.warnings == []
    assert not (tmp_path / "run").exists()


def test_tracking_disabled_run_sub_never_imports_wandb(tmp_path: Path, make_project: ProjectFactory) -> None:
    root = make_project(one_sub_plan("disabled"), {f"handlers/{EXP}/{SUB}.py": LOGGING_HANDLER})
    script = (
        "import io, sys\n"
        "from labrunner.execution import run_sub\n"
        "from labrunner.plan import load_plan\n"
        f"plan = load_plan({str(root / 'research/research_plan.yaml')!r})\n"
        f"outcome = run_sub(plan, plan.sub({EXP!r}, {SUB!r}), console=io.StringIO())\n"
        "print(outcome.status, 'wandb' in sys.modules)\n"
    )

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)

    assert done.stdout.split() == ["completed", "False"]


def test_tracking_run_sub_with_a_finish_that_hangs_completes_with_a_warning(
        run_handler: RunHandler, make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch, release: threading.Event) -> None:
    run = FakeRun(finish=release.wait)
    monkeypatch.setitem(sys.modules, "wandb", SimpleNamespace(Settings=lambda **settings: settings, init=lambda **_: run))
    plan = one_sub_plan("offline")
    plan["wandb"]["finish_timeout_s"] = 0.3

    outcome = run_handler(LOGGING_HANDLER, root=make_project(plan))

    assert outcome.ok and outcome.tracking_hung
    record = read_record(outcome.paths.result)
    assert record["wandb"]["id"] == "fake123"
    assert any(warning.startswith("W&B finish did not return within 0.3s") for warning in record["warnings"])
    assert [row["s1/loss"] for row in run.logged] == [1.0, 0.5, 1 / 3]


class HangingRun(FakeRun):
    """A run whose `hang_in` call blocks until released (at most 10 s: a broken deadline fails the
    test instead of hanging the suite)."""

    def __init__(self, hang_in: str, release: threading.Event) -> None:
        super().__init__()
        self.hang_in, self._release = hang_in, release
        hang = self._hang
        self.summary = type("Summary", (dict,), {"__setitem__": lambda summary, key, value: hang("summary")})()

    def _hang(self, call: str) -> None:
        if call == self.hang_in:
            self._release.wait(10)

    def define_metric(self, name: str, **kwargs: Any) -> None:
        self._hang("define_metric")
        super().define_metric(name, **kwargs)

    def log(self, payload: dict[str, Any]) -> None:
        self._hang("log")
        super().log(payload)


@pytest.mark.parametrize("call", ["define_metric", "log", "summary"])
def test_tracking_call_that_hangs_is_abandoned_in_bounded_time(call: str, tmp_path: Path, release: threading.Event) -> None:
    run = HangingRun(call, release)
    started = time.monotonic()
    tracker = start_tracking(replace(request(tmp_path), call_timeout_s=0.3), import_wandb=fake_wandb(lambda **_: run))
    tracker.log({"loss": 1.0}, 0)
    tracker.summary({"accuracy": 0.9})
    tracker.log({"loss": 0.5}, 1)
    tracker.finish(0)

    assert time.monotonic() - started < 2.0  # one deadline, then nothing more is sent
    assert isinstance(tracker, WandbTracker) and tracker.hung
    assert tracker.warnings == [f"W&B {call} did not return within 0.3s; nothing more was sent to W&B for this run "
                                "(metrics.jsonl has every metric)"]
    assert tracker.info()["id"] == "fake123"


def test_tracking_calls_into_a_run_come_from_one_thread_one_at_a_time(tmp_path: Path) -> None:
    callers: set[int] = set()
    busy = threading.Lock()
    overlaps: list[str] = []

    def log(payload: dict[str, Any]) -> None:
        callers.add(threading.get_ident())
        if not busy.acquire(blocking=False):
            overlaps.append(str(payload))
            return
        time.sleep(0.01)  # a slow wandb: long enough for a second caller to come in
        busy.release()

    run = FakeRun(log=log)
    tracker = start_tracking(request(tmp_path), import_wandb=fake_wandb(lambda **_: run))
    # the metrics forwarder's thread and the supervisor's last drain, as run_sub has them
    threads = [threading.Thread(target=lambda n=n: [tracker.log({"x": n}, step) for step in range(10)]) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(run.logged) == 40 and overlaps == []
    assert len(callers) == 1 and threading.get_ident() not in callers


WANDB_STAND_IN = '''\
"""A stand-in for wandb at the server boundary: `finish` never returns, and, like wandb, an exit
hook waits for the run to be finished."""
import atexit
import threading

_finished = threading.Event()


class Settings:
    def __init__(self, **settings):
        pass


class _Run:
    id, entity, url, settings = "standin1", None, None, None

    def __init__(self):
        self.summary = {}

    def define_metric(self, *args, **kwargs):
        pass

    def log(self, payload):
        pass

    def finish(self, exit_code=0):
        _finished.wait()


def init(**kwargs):
    return _Run()


atexit.register(_finished.wait)
'''


def test_tracking_cli_run_with_a_finish_that_hangs_exits_without_waiting_for_wandb(make_project: ProjectFactory,
                                                                                  tmp_path: Path) -> None:
    stand_in = tmp_path / "stand-in"
    (stand_in / "wandb").mkdir(parents=True)
    (stand_in / "wandb" / "__init__.py").write_text(WANDB_STAND_IN)
    plan = one_sub_plan("offline")
    plan["wandb"]["finish_timeout_s"] = 0.5
    root = make_project(plan, {f"handlers/{EXP}/{SUB}.py": LOGGING_HANDLER})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(stand_in), os.environ.get("PYTHONPATH")]))}
    started = time.monotonic()

    done = subprocess.run([sys.executable, "-m", "labrunner.cli", "run", EXP, SUB], cwd=root, env=env,
                          capture_output=True, text=True, timeout=30)

    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 20
    record = read_record(root / "results" / EXP / SUB / "result.yaml")
    assert record["wandb"]["id"] == "standin1"
    assert any(warning.startswith("W&B finish did not return within 0.5s") for warning in record["warnings"])
