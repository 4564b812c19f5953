"""Unit tests for labrunner.runner: what a handler sees (params, seed, device, log_metrics,
progress) and its artifacts, which must stay inside the artifacts folder."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from labrunner.errors import ArtifactError, HandlerReturnError, MetricError
from labrunner.runner import MAX_ARTIFACT_NAME_CHARS, ExperimentRunner, RunContext, detect_device


@pytest.fixture
def make_runner(tmp_path: Path) -> Iterator[Callable[..., ExperimentRunner]]:
    runners: list[ExperimentRunner] = []

    def make(**overrides: object) -> ExperimentRunner:
        run_dir = tmp_path / "results" / "e1" / "s1"
        run_dir.mkdir(parents=True, exist_ok=True)
        fields = dict(experiment_id="e1", sub_id="s1", params={"lr": 0.1}, seed=3, stub=False, run_dir=str(run_dir),
                      project_root=str(tmp_path), handler_file="handlers/e1/s1.py", handler_function="s1",
                      run_id="run0", attempt=1)
        runner = ExperimentRunner(RunContext(**{**fields, **overrides}))  # type: ignore[arg-type]
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        runner.close()


def metric_lines(runner: ExperimentRunner) -> list[dict[str, object]]:
    return [json.loads(line) for line in (runner.run_dir / "metrics.jsonl").read_text().splitlines()]


# --- what a handler sees ---------------------------------------------------------------------

def test_runner_exposes_the_context(make_runner: Callable[..., ExperimentRunner]) -> None:
    runner = make_runner(stub=True)

    assert (runner.experiment_id, runner.sub_id, runner.params, runner.seed, runner.stub) == ("e1", "s1", {"lr": 0.1}, 3, True)
    assert runner.work_dir.is_dir()
    assert runner.device in ("cuda", "mps", "cpu")
    assert runner.device == detect_device()


def test_run_context_round_trips_through_json(tmp_path: Path) -> None:
    context = RunContext("e1", "s1", {"lr": 1e-4}, 0, False, str(tmp_path), str(tmp_path), "h.py", "run", "abc", 2, ["x"])

    assert RunContext.from_json(context.to_json()) == context


def test_runner_seed_everything_makes_random_numbers_repeat(make_runner: Callable[..., ExperimentRunner]) -> None:
    runner = make_runner()

    def draw() -> tuple[float, float, float]:
        runner.seed_everything()
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    assert draw() == draw()
    runner.seed_everything(4)
    assert random.random() != draw()[0]


# --- log_metrics -----------------------------------------------------------------------------

def test_runner_log_metrics_appends_plain_numbers(make_runner: Callable[..., ExperimentRunner]) -> None:
    runner = make_runner()
    loss = (torch.ones(3, requires_grad=True) * 0.5).sum()

    runner.log_metrics({"loss": loss, "acc": np.float32(0.98), "n": np.int64(10)}, step=np.int64(1))
    runner.log_metrics({"loss": 1.25}, step=torch.tensor(2))
    runner.log_metrics({"lr": 0.1})

    lines = metric_lines(runner)
    assert [line["metrics"] for line in lines] == [{"loss": 1.5, "acc": 0.98, "n": 10}, {"loss": 1.25}, {"lr": 0.1}]
    assert [line["step"] for line in lines] == [1, 2, None]
    assert {line["run"] for line in lines} == {"run0"} and {line["attempt"] for line in lines} == {1}


def test_runner_log_metrics_is_on_disk_at_once(make_runner: Callable[..., ExperimentRunner]) -> None:
    runner = make_runner()

    runner.log_metrics({"loss": 0.5}, step=0)

    # not closed: a crash right after must not lose the line
    assert json.loads((runner.run_dir / "metrics.jsonl").read_text())["metrics"] == {"loss": 0.5}


def test_runner_log_metrics_keeps_and_flags_nonfinite_values(make_runner: Callable[..., ExperimentRunner]) -> None:
    runner = make_runner()

    runner.log_metrics({"loss": torch.tensor(float("nan"))}, step=5)
    runner.log_metrics({"loss": float("inf")}, step=6)
    runner.log_metrics({"grad": -math.inf}, step=6)

    assert math.isnan(metric_lines(runner)[0]["metrics"]["loss"])  # type: ignore[index]
    assert runner.warnings == ["metric 'loss' was nan at step 5", "metric 'grad' was -inf at step 6"]


@pytest.mark.parametrize(("metrics", "message"), [
    ([0.5], "log_metrics expects a dict of name -> number, got a list"),
    ({"acc": "high"}, "metric 'acc' must be a single number, got 'high'"),
    ({"per_class": torch.ones(4)}, "metric 'per_class' must be a single number, got a list of 4 values"),
    ({"model": object()}, "metric 'model' is a builtins.object, which cannot be stored"),
])
def test_runner_log_metrics_rejects_what_is_not_a_number(metrics: object, message: str,
                                                         make_runner: Callable[..., ExperimentRunner]) -> None:
    runner = make_runner()

    with pytest.raises((MetricError, HandlerReturnError)) as caught:
        runner.log_metrics(metrics)  # type: ignore[arg-type]

    assert message in str(caught.value)
    assert not (runner.run_dir / "metrics.jsonl").read_text()


# --- progress --------------------------------------------------------------------------------

def test_runner_progress_yields_everything_and_reports(make_runner: Callable[..., ExperimentRunner],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    runner = make_runner()

    assert list(runner.progress(range(4), desc="epochs", every_s=0)) == [0, 1, 2, 3]
    assert list(runner.progress(iter("ab"))) == ["a", "b"]

    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == [line for line in lines if line.startswith("epochs: ")][:4]
    assert lines[4].startswith("epochs: 4/4 (100%)")
    assert lines[-1].startswith("s1: 2 done")


# --- artifacts -------------------------------------------------------------------------------

def test_results_save_artifact_bytes_text_and_file(make_runner: Callable[..., ExperimentRunner], tmp_path: Path) -> None:
    results = make_runner().results
    source = tmp_path / "weights.bin"
    source.write_bytes(b"\x00\x01")

    paths = [results.save_artifact("raw.bin", b"\x89PNG"), results.save_artifact("plots/notes.txt", "héllo"),
             results.save_artifact(Path("copy.bin"), source)]

    assert [path.read_bytes() for path in paths] == [b"\x89PNG", "héllo".encode(), b"\x00\x01"]
    assert all(path.parent.is_relative_to(results.directory) for path in paths)
    assert results.saved == ["artifacts/raw.bin", "artifacts/plots/notes.txt", "artifacts/copy.bin"]
    assert not list(results.directory.rglob("*.tmp"))


def test_results_save_artifact_twice_overwrites(make_runner: Callable[..., ExperimentRunner]) -> None:
    results = make_runner().results

    results.save_artifact("a.txt", "one")
    path = results.save_artifact("a.txt", "two")

    assert path.read_text() == "two"
    assert results.saved == ["artifacts/a.txt"]


def test_results_save_json_artifact_converts_tensors(make_runner: Callable[..., ExperimentRunner]) -> None:
    results = make_runner().results

    path = results.save_json_artifact("curve.json", {"loss": torch.tensor([0.5, 0.25], requires_grad=True) * 1,
                                                     "acc": np.float64(0.9), "nan": float("nan")})

    data = json.loads(path.read_text())
    assert data["loss"] == [0.5, 0.25] and data["acc"] == 0.9 and math.isnan(data["nan"])


def test_results_save_json_artifact_unstorable_object_is_an_artifact_error(make_runner: Callable[..., ExperimentRunner]) -> None:
    with pytest.raises(ArtifactError, match=r"artifact 'x.json'.*cannot be stored"):
        make_runner().results.save_json_artifact("x.json", {"model": object()})


def test_results_save_figure_writes_a_png(make_runner: Callable[..., ExperimentRunner]) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(2, 2))
    figure.add_subplot().plot([0, 1], [1, 0])

    path = make_runner().results.save_figure("plots/curve", figure)

    assert path.name == "curve.png"
    assert path.read_bytes().startswith(b"\x89PNG")


def test_results_save_figure_rejects_what_is_not_a_figure(make_runner: Callable[..., ExperimentRunner]) -> None:
    with pytest.raises(ArtifactError, match="save_figure expects a matplotlib Figure, got a dict"):
        make_runner().results.save_figure("curve.png", {})


@pytest.mark.parametrize(("data", "message"), [
    ({"a": 1}, "expected bytes, a str (saved as text) or a pathlib.Path to copy, got a dict; use save_json_artifact"),
    (Path("/nonexistent/weights.bin"), "the file to copy, /nonexistent/weights.bin, does not exist"),
])
def test_results_save_artifact_bad_data_is_an_error(data: object, message: str,
                                                    make_runner: Callable[..., ExperimentRunner]) -> None:
    with pytest.raises(ArtifactError) as caught:
        make_runner().results.save_artifact("x", data)  # type: ignore[arg-type]

    assert message in str(caught.value)


@pytest.mark.parametrize(("name", "message"), [
    ("../x", "leaves the artifacts folder"),
    ("plots/../../x", "leaves the artifacts folder"),
    ("..", "leaves the artifacts folder"),
    (".", "names no file"),
    ("./.", "names no file"),
    ("/etc/passwd", "is absolute"),
    ("\\\\server\\share", "is absolute"),
    ("C:\\temp\\x.png", "is absolute"),
    ("", "must be a non-empty relative path"),
    ("   ", "must be a non-empty relative path"),
    ("a\0b", "contains a NUL character"),
    ("x" * (MAX_ARTIFACT_NAME_CHARS + 1), f"is longer than {MAX_ARTIFACT_NAME_CHARS} bytes"),
    ("é" * 200, f"is longer than {MAX_ARTIFACT_NAME_CHARS} bytes"),
])
def test_results_artifact_name_outside_the_folder_is_refused(name: str, message: str,
                                                             make_runner: Callable[..., ExperimentRunner]) -> None:
    runner = make_runner()

    with pytest.raises(ArtifactError) as caught:
        runner.results.save_artifact(name, b"x")

    assert message in str(caught.value)
    assert runner.results.saved == []
    assert not list(runner.run_dir.parent.parent.rglob("x"))


def test_results_long_name_inside_the_limit_is_saved(make_runner: Callable[..., ExperimentRunner]) -> None:
    results = make_runner().results
    name = "a" * MAX_ARTIFACT_NAME_CHARS

    assert results.save_artifact(f"deep/{name}", b"x").name == name


def test_results_artifact_folder_blocked_by_a_file_is_an_artifact_error(make_runner: Callable[..., ExperimentRunner]) -> None:
    runner = make_runner()
    runner.results.directory.write_text("not a folder")

    with pytest.raises(ArtifactError, match="could not write artifact 'curve.png' to .*artifacts/curve.png"):
        runner.results.save_artifact("curve.png", b"x")
    assert runner.results.saved == []


_SAVE_IN_CWD = """
import os
from pathlib import Path
from labrunner.errors import ArtifactError
from labrunner.runner import Results
if os.geteuid() == 0:  # root ignores permission bits: write as nobody
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
try:
    Results(Path('.')).save_artifact('curve.png', b'x')
except ArtifactError as exc:
    print(exc)
else:
    print('saved')
"""


def test_results_read_only_artifacts_folder_is_an_artifact_error(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "artifacts").mkdir(parents=True)
    (run_dir / "artifacts").chmod(0o555)
    try:  # in a child that can drop root's privileges; its cwd needs no permission on the folders above
        done = subprocess.run([sys.executable, "-c", _SAVE_IN_CWD], cwd=run_dir, capture_output=True, text=True,
                              timeout=60, check=True)
    finally:
        (run_dir / "artifacts").chmod(0o755)

    assert done.stdout.strip() == (
        "could not write artifact 'curve.png' to artifacts/curve.png: Permission denied "
        "(is the folder read-only, or owned by someone else?)")
    assert not list((run_dir / "artifacts").iterdir())


def test_results_resolve_accepts_only_saved_artifacts(make_runner: Callable[..., ExperimentRunner]) -> None:
    runner = make_runner()
    path = runner.results.save_artifact("plots/curve.png", b"x")
    (runner.run_dir / "stray.png").write_bytes(b"x")

    assert runner.results.resolve(path) == "artifacts/plots/curve.png"
    assert runner.results.resolve(str(path)) == "artifacts/plots/curve.png"
    assert runner.results.resolve("plots/curve.png") == "artifacts/plots/curve.png"
    assert runner.results.resolve("artifacts/plots/curve.png") == "artifacts/plots/curve.png"
    with pytest.raises(HandlerReturnError, match=r"artifact 'stray.png' was not saved through runner.results \(saved: artifacts/plots/curve.png\)"):
        runner.results.resolve("stray.png")
    with pytest.raises(HandlerReturnError, match="must hold paths returned by runner.results.save_"):
        runner.results.resolve(3)
