"""The classic Modal entrypoint, `modal run -m labrunner.backends.modal_backend::run_experiment
--experiment-id X [--stub-mode]`: its --help through the Modal CLI without a token, its argument
handling, and a real run of the entrypoint's function on a machine without a Modal token, where
the pipeline runs and each Modal call fails at the boundary into a clear failure record."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from labrunner.backends.modal_backend import experiment_command, run_experiment
from labrunner.cli import main
from labrunner.errors import ConfigError
from labrunner.records import read_record
from test_modal_backend import clean_env
from workflow_support import BIN, PLAN, write_project

ENTRYPOINT = "labrunner.backends.modal_backend::run_experiment"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = write_project(tmp_path / "proj", PLAN.replace("  e2-next:\n", "  e0-old:\n    archived: true\n  e2-next:\n"))
    monkeypatch.chdir(root)
    return root


def test_entrypoint_help_through_the_modal_cli_without_a_token(tmp_path: Path) -> None:
    done = subprocess.run([str(BIN / "modal"), "run", "-m", ENTRYPOINT, "--help"], capture_output=True, text=True,
                          timeout=120, env=clean_env(tmp_path), cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    for option in ("--experiment-id TEXT", "[required]", "--stub-mode / --no-stub-mode", "--cores INTEGER"):
        assert option in done.stdout, option


def test_entrypoint_command_runs_that_experiments_write_up_on_modal(project: Path) -> None:
    command = experiment_command("e1-tiny", cores=4)

    assert command[0] == str(BIN / "snakemake")
    assert command[1:] == ["research/experiments/e1-tiny/FINDINGS.md", "--cores", "4", "--config", "backend=modal"]
    stub = experiment_command("e1-tiny", stub=True)
    assert stub[1:] == ["stub/research/experiments/e1-tiny/FINDINGS.md", "--cores", "8", "--config", "backend=modal",
                        "stub=true"]


@pytest.mark.parametrize(("experiment", "cores", "message"), [
    ("e9", 8, "--experiment-id: e9: is not in the plan; experiments: e1-tiny, e2-next"),
    ("e0-old", 8, "--experiment-id: e0-old: is archived in the plan; experiments: e1-tiny, e2-next"),
    ("e1-tiny", 0, "--cores: 0: expected at least 1"),
])
def test_entrypoint_refuses_bad_arguments(experiment: str, cores: int, message: str, project: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        experiment_command(experiment, cores=cores)
    with pytest.raises(SystemExit) as caught:
        run_experiment(experiment_id=experiment, cores=cores)

    assert caught.value.code == 1
    assert f"run_experiment: {message}" in capsys.readouterr().err
    assert not (project / "results").exists()


@pytest.mark.slow
def test_entrypoint_runs_the_pipeline_and_fails_clearly_at_the_modal_boundary(
        project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    env = clean_env(tmp_path)  # no Modal token anywhere; labrunner's environment activated
    for name in [name for name in os.environ if name.startswith("MODAL_") and name not in env]:
        monkeypatch.delenv(name)
    for name, value in {**env, "PATH": f"{BIN}{os.pathsep}{env['PATH']}"}.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(SystemExit) as caught:
        run_experiment(experiment_id="e1-tiny", stub_mode=True, cores=2)

    assert caught.value.code != 0
    # the same files as any run: each sub of that experiment has its failure record, from Modal
    for sub in "abc":
        record = read_record(project / "stub" / "results" / "e1-tiny" / sub / "failure.yaml")
        assert (record["backend"], record["error"]["type"]) == ("modal", "AuthError")
        assert "run `modal token new`" in record["error"]["hint"]
    assert not (project / "stub" / "results" / "e2-next" / "d").exists()  # only what that experiment needs
    assert not (project / "results").exists()  # stub mode: the stub tree only
    capsys.readouterr()
    assert main(["status", "--json", "--stub"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert {failure["error"]["type"] for failure in doc["failures"]} == {"AuthError"}
    rerun = next(step for step in doc["next"] if step["action"] == "run")
    assert rerun["command"] == "snakemake stub/research/FINDINGS.md --cores 2 --config backend=modal stub=true"
