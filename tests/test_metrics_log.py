"""Unit tests for labrunner.metrics_log: log_metrics of a number on a GPU never makes the handler
wait for the GPU per call, and every value still reaches metrics.jsonl and W&B in call order: when
the handler returns, fails right after logging, or is stopped by SIGINT/SIGTERM.

There is no GPU here: tests/fake_device.py stands in for the hardware (tensor-like stubs that
record every call that waits for the device), and labrunner's own code runs as it would on CUDA.
The tests marked for CUDA run the same checks on a real GPU where there is one."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from pathlib import Path

import pytest
import torch

import fake_device
from conftest import EXP, SUB, ProjectFactory, RunHandler, one_sub_plan
from fake_device import FakeDeviceTensor, FakeGpu
from labrunner.execution import SubRun
from labrunner.metrics_log import MPS_READ_EVERY_S, MetricsLog
from labrunner.records import read_record
from labrunner.runner import ExperimentRunner, RunContext
from test_tracking import offline_run

NO_CUDA = "needs a CUDA GPU; the fake-device tests above check the same behaviour without one"
STEPS = 30


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> FakeGpu:
    return fake_device.install(monkeypatch.setattr)


@pytest.fixture
def make_runner(tmp_path: Path) -> Iterator[Callable[[], ExperimentRunner]]:
    runners: list[ExperimentRunner] = []

    def make() -> ExperimentRunner:
        run_dir = tmp_path / "results" / EXP / SUB
        run_dir.mkdir(parents=True, exist_ok=True)
        runner = ExperimentRunner(RunContext(EXP, SUB, {}, 0, False, str(run_dir), str(tmp_path),
                                             f"handlers/{EXP}/{SUB}.py", SUB, "run0"))
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        runner.close()


@pytest.fixture
def make_log(tmp_path: Path) -> Iterator[Callable[..., MetricsLog]]:
    """make_log(**options) -> a MetricsLog writing tmp_path/metrics.jsonl, closed at the end."""
    logs: list[MetricsLog] = []

    def make(warnings: list[str] | None = None, **options: Any) -> MetricsLog:
        logs.append(MetricsLog(tmp_path / "metrics.jsonl", "run0", 1, [] if warnings is None else warnings, **options))
        return logs[-1]

    yield make
    for log in logs:
        log.close()


def lines_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def steps_and_losses(path: Path) -> list[tuple[object, object]]:
    return [(line["step"], line["metrics"]["loss"]) for line in lines_of(path)]  # type: ignore[index]


def loss_at(step: int) -> float:
    return 0.25 * step  # exact in float32: what is written is what was logged


# --- in the handler's process --------------------------------------------------------------------

def test_metrics_log_cuda_values_are_never_waited_for_while_logging(gpu: FakeGpu,
                                                                    make_runner: Callable[[], ExperimentRunner]) -> None:
    runner = make_runner()

    for step in range(STEPS):  # the GPU never catches up during the loop: the worst case
        runner.log_metrics({"loss": FakeDeviceTensor(loss_at(step)), "lr": 0.01}, step=step)

    assert gpu.waits == []
    assert gpu.copies == [{"pinned": True, "non_blocking": True}] * STEPS
    assert lines_of(runner.run_dir / "metrics.jsonl") == []  # nothing can be known yet
    runner.flush()
    assert set(gpu.waits) == {"event.synchronize()"} and gpu.early_reads == 0
    assert steps_and_losses(runner.run_dir / "metrics.jsonl") == [(step, loss_at(step)) for step in range(STEPS)]
    assert {line["metrics"]["lr"] for line in lines_of(runner.run_dir / "metrics.jsonl")} == {0.01}  # type: ignore[index]


def test_metrics_log_lines_are_written_in_call_order_as_the_gpu_catches_up(gpu: FakeGpu,
                                                                          make_runner: Callable[[], ExperimentRunner]) -> None:
    runner = make_runner()
    metrics = runner.run_dir / "metrics.jsonl"
    for step in range(3):
        runner.log_metrics({"loss": FakeDeviceTensor(loss_at(step))}, step=step)
    gpu.catch_up(upto=2)  # the copies of steps 0 and 1 have landed

    runner.log_metrics({"loss": 9.0}, step=3)  # a plain number waits behind the pending step 2

    assert steps_and_losses(metrics) == [(0, 0.0), (1, 0.25)]
    gpu.catch_up()
    runner.log_metrics({"loss": FakeDeviceTensor(loss_at(4))}, step=4)
    assert steps_and_losses(metrics) == [(0, 0.0), (1, 0.25), (2, 0.5), (3, 9.0)]
    assert gpu.waits == [] and gpu.early_reads == 0


def test_metrics_log_reuses_pinned_memory_and_events_once_values_are_read(
        gpu: FakeGpu, make_runner: Callable[[], ExperimentRunner], monkeypatch: pytest.MonkeyPatch) -> None:
    created = {"pinned": 0, "events": 0}
    make_host, make_event = torch.empty, torch.cuda.Event

    def counted_empty(*size: Any, **kwargs: Any) -> Any:
        created["pinned"] += bool(kwargs.get("pin_memory"))
        return make_host(*size, **kwargs)

    def counted_event(*args: Any, **kwargs: Any) -> Any:
        created["events"] += 1
        return make_event(*args, **kwargs)

    monkeypatch.setattr(torch, "empty", counted_empty)
    monkeypatch.setattr(torch.cuda, "Event", counted_event)
    runner = make_runner()

    for step in range(STEPS):  # a loop the GPU keeps up with: each value has landed by the next call
        runner.log_metrics({"loss": FakeDeviceTensor(loss_at(step))}, step=step)
        gpu.catch_up()

    # one pinned scalar and one event in use at a time, and one more while the next is logged:
    # allocating either per call costs more CPU time than the copy (a launch-bound loop pays it)
    assert created == {"pinned": 2, "events": 2}
    runner.flush()
    assert steps_and_losses(runner.run_dir / "metrics.jsonl") == [(step, loss_at(step)) for step in range(STEPS)]
    assert gpu.waits == [] and gpu.early_reads == 0


def test_metrics_log_writes_the_value_as_it_was_when_logged(gpu: FakeGpu, make_runner: Callable[[], ExperimentRunner]) -> None:
    runner = make_runner()
    running_loss = FakeDeviceTensor(0.0)

    for step in range(3):
        running_loss.add_(1.0)  # in place, after the previous step's value was logged
        runner.log_metrics({"loss": running_loss}, step=step)
    runner.flush()

    assert steps_and_losses(runner.run_dir / "metrics.jsonl") == [(0, 1.0), (1, 2.0), (2, 3.0)]


def test_metrics_log_lines_reach_the_disk_while_the_handler_does_not_log(gpu: FakeGpu,
                                                                        make_runner: Callable[[], ExperimentRunner]) -> None:
    runner = make_runner()
    runner.log_metrics({"loss": FakeDeviceTensor(0.5)}, step=0)
    gpu.catch_up()

    deadline = time.monotonic() + 30  # the poller looks every POLL_S; generous for a loaded machine
    while not lines_of(runner.run_dir / "metrics.jsonl") and time.monotonic() < deadline:
        time.sleep(0.05)

    assert steps_and_losses(runner.run_dir / "metrics.jsonl") == [(0, 0.5)]
    assert gpu.waits == []


def test_metrics_log_waits_for_the_oldest_line_only_past_the_bound(gpu: FakeGpu, make_log: Callable[..., MetricsLog],
                                                                   tmp_path: Path) -> None:
    warnings: list[str] = []
    log = make_log(warnings, max_pending_lines=8)

    for step in range(20):
        log.append({"loss": FakeDeviceTensor(loss_at(step))}, step, 0.0)
        assert log.pending_lines <= 8

    assert gpu.waits == ["event.synchronize()"] * 12  # one per line past the bound, none before
    log.close()
    assert steps_and_losses(tmp_path / "metrics.jsonl") == [(step, loss_at(step)) for step in range(20)]
    assert gpu.early_reads == 0 and warnings == []


def test_metrics_log_step_on_the_gpu_is_not_waited_for(gpu: FakeGpu, make_log: Callable[..., MetricsLog],
                                                       tmp_path: Path) -> None:
    log = make_log()

    log.append({"loss": FakeDeviceTensor(0.5)}, FakeDeviceTensor(7, dtype=torch.int64), 0.0)

    assert gpu.waits == []
    log.close()
    assert steps_and_losses(tmp_path / "metrics.jsonl") == [(7, 0.5)]


def test_metrics_log_mps_values_are_read_in_batches(gpu: FakeGpu, make_log: Callable[..., MetricsLog], tmp_path: Path) -> None:
    now_s = [0.0]
    log = make_log(clock=lambda: now_s[0])

    for step in range(10):
        log.append({"loss": FakeDeviceTensor(loss_at(step), device="mps")}, step, 0.0)
    assert gpu.waits == [] and log.pending_lines == 10
    now_s[0] += MPS_READ_EVERY_S
    log.append({"loss": FakeDeviceTensor(loss_at(10), device="mps")}, 10, 0.0)

    assert log.pending_lines == 0  # one batch: every pending value read together
    assert gpu.waits == ["mps tensor .cpu()"] * 11
    assert steps_and_losses(tmp_path / "metrics.jsonl") == [(step, loss_at(step)) for step in range(11)]


def test_metrics_log_device_failure_is_a_warning_and_the_earlier_lines_stay(
        gpu: FakeGpu, make_log: Callable[..., MetricsLog], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    warnings: list[str] = []
    log = make_log(warnings)
    log.append({"loss": FakeDeviceTensor(0.5)}, 0, 0.0)
    gpu.catch_up()
    log.append({"loss": FakeDeviceTensor(0.25)}, 1, 1.5)

    def device_assert(self: object) -> None:
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(fake_device.FakeEvent, "synchronize", device_assert)
    log.close()  # never raises: the worker closes after a failure

    assert steps_and_losses(tmp_path / "metrics.jsonl") == [(0, 0.5)]
    assert len(warnings) == 1 and "logged at 1.5s and later could not be read" in warnings[0]
    assert "device-side assert" in warnings[0]


def test_metrics_log_nonfinite_gpu_value_is_kept_and_flagged(gpu: FakeGpu, make_runner: Callable[[], ExperimentRunner]) -> None:
    runner = make_runner()

    runner.log_metrics({"loss": FakeDeviceTensor(float("nan"))}, step=3)
    runner.flush()

    assert runner.warnings == ["metric 'loss' was nan at step 3"]


# --- through the worker and the supervisor: metrics.jsonl and W&B ---------------------------------

FAKE_GPU_HANDLER = """\
import json
import os
import time

import fake_device

gpu = fake_device.install()


def s1(runner):
    for step in range({steps}):
        runner.log_metrics({{"loss": fake_device.FakeDeviceTensor(0.25 * step)}}, step=step)
    print("WAITS", json.dumps(gpu.waits), flush=True)
    {then}
"""


@pytest.fixture
def fake_gpu_run(make_project: ProjectFactory, run_handler: RunHandler) -> Callable[..., SubRun]:
    """fake_gpu_run(then) runs a handler that logs STEPS losses held on the fake GPU, prints the
    waits that logging caused, then does `then` (returns, raises, sleeps to be signalled)."""

    def run(then: str, wandb_mode: str = "disabled") -> SubRun:
        source = FAKE_GPU_HANDLER.format(steps=STEPS, then=then)
        root = make_project(one_sub_plan(wandb_mode), {
            f"handlers/{EXP}/{SUB}.py": source,
            f"handlers/{EXP}/fake_device.py": (Path(__file__).parent / "fake_device.py").read_text(),
        })
        return run_handler(source, root=root)

    return run


def waits_while_logging(log: Path) -> list[str]:
    line = next(line for line in log.read_text().splitlines() if line.startswith("WAITS "))
    return json.loads(line.removeprefix("WAITS "))  # type: ignore[no-any-return]


def wandb_losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = offline_run(run_dir)["history"]
    return [(json.loads(row[f"{SUB}/step"]), json.loads(row[f"{SUB}/loss"])) for row in rows if f"{SUB}/loss" in row]


@pytest.mark.parametrize(("then", "status"), [
    ('return {"finding": "done"}', "completed"),
    ('raise RuntimeError("diverged")', "failed"),  # right after logging: nothing had landed yet
])
def test_metrics_log_every_gpu_value_reaches_metrics_jsonl_and_wandb_in_order(
        then: str, status: str, fake_gpu_run: Callable[..., SubRun]) -> None:
    outcome = fake_gpu_run(then, wandb_mode="offline")

    assert outcome.status == status, outcome.record
    assert waits_while_logging(outcome.paths.log) == []
    assert steps_and_losses(outcome.paths.metrics) == [(step, loss_at(step)) for step in range(STEPS)]
    assert wandb_losses(outcome.paths.run_dir) == [(step, loss_at(step)) for step in range(STEPS)]
    if status == "failed":
        assert read_record(outcome.paths.failure)["metrics_logged"] == {
            "count": STEPS, "last_step": STEPS - 1, "last": {"loss": loss_at(STEPS - 1)}}


@pytest.mark.parametrize(("sig", "error_type"), [(signal.SIGTERM, "Terminated"), (signal.SIGINT, "Interrupted")])
def test_metrics_log_gpu_values_reach_metrics_jsonl_when_the_worker_is_signalled(
        sig: signal.Signals, error_type: str, fake_gpu_run: Callable[..., SubRun], tmp_path: Path) -> None:
    pid_file = tmp_path / "worker.pid"

    def signal_the_worker() -> None:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(int(pid_file.read_text()), sig)

    sender = threading.Thread(target=signal_the_worker)
    sender.start()
    outcome = fake_gpu_run(f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n    time.sleep(120)")
    sender.join()

    assert outcome.status == "failed"
    assert outcome.record["error"]["type"] == error_type
    assert waits_while_logging(outcome.paths.log) == []
    assert steps_and_losses(outcome.paths.metrics) == [(step, loss_at(step)) for step in range(STEPS)]


# --- on a real GPU ---------------------------------------------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_metrics_log_real_cuda_logging_makes_no_synchronising_call(make_runner: Callable[[], ExperimentRunner]) -> None:
    runner = make_runner()
    running_loss = torch.zeros((), device="cuda")
    weights = torch.randn(512, 512, device="cuda")

    torch.cuda.set_sync_debug_mode("error")  # torch raises on any call that makes the CPU wait
    try:
        for step in range(50):
            weights = weights @ weights / 512  # work queued ahead of the value
            running_loss += 1  # in place, after the previous step's value was logged
            runner.log_metrics({"loss": running_loss, "step_float": running_loss * 2}, step=step)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    runner.flush()

    lines = lines_of(runner.run_dir / "metrics.jsonl")
    assert [(line["step"], line["metrics"]) for line in lines] == [
        (step, {"loss": step + 1.0, "step_float": 2.0 * (step + 1)}) for step in range(50)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_metrics_log_real_cuda_values_reach_metrics_jsonl_when_the_handler_fails(run_handler: RunHandler) -> None:
    outcome = run_handler(f"""\
        import torch

        def s1(runner):
            loss = torch.zeros((), device="cuda")
            for step in range({STEPS}):
                loss += 0.25
                runner.log_metrics({{"loss": loss - 0.25}}, step=step)
            raise RuntimeError("diverged")
        """)

    assert outcome.status == "failed"
    assert steps_and_losses(outcome.paths.metrics) == [(step, loss_at(step)) for step in range(STEPS)]
