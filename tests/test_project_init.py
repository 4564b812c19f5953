"""Acceptance of `labrunner init` in a repository of one's own (issue 10), through the installed
commands only: an empty git repository becomes a project that validates, dry-runs, and runs the
templates to a clear failure that `labrunner status --json` names; and every command of the
agents' guide runs as written."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from labrunner.scaffold import guide_text
from workflow_support import BIN

pytestmark = pytest.mark.slow


def shell(project: Path, command: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    """A command as a user types it, in an environment where labrunner's bin folder is on PATH."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "WANDB_MODE": "disabled"}
    return subprocess.run(shlex.split(command), cwd=project, env=env, capture_output=True, text=True, timeout=timeout_s)


def ok(project: Path, command: str) -> subprocess.CompletedProcess[str]:
    done = shell(project, command)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_init_in_an_empty_git_repository_runs_the_templates_to_a_clear_failure(tmp_path: Path) -> None:
    project = tmp_path / "my-study"
    project.mkdir()
    ok(project, "git init -q")

    ok(project, "labrunner init")
    ok(project, "labrunner new experiment x1 --sub a --sub b")
    ok(project, "labrunner validate")
    dry = ok(project, "snakemake -n")
    assert len(re.findall(r"^rule run_sub:", dry.stdout, re.M)) == 2
    run = shell(project, "snakemake --cores 2")
    status = shell(project, "labrunner status --json")

    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "FAILED x1/a" in output and "NotImplementedError: write the experiment in handlers/x1/a.py" in output
    assert "Rerun what failed or is missing (nothing else reruns): snakemake research/FINDINGS.md --cores 2" in output
    assert status.returncode == 1
    doc = json.loads(status.stdout)
    assert doc["totals"]["subs"] == {"failed": 2}
    errors = {(f["sub"], f["error"]["type"], f["error"]["message"]) for f in doc["failures"]}
    assert errors == {(sub, "NotImplementedError", f"write the experiment in handlers/x1/{sub}.py") for sub in "ab"}
    assert doc["next"][0]["file"] == "handlers/x1/a.py" and "labrunner new" in doc["next"][0]["hint"]
    assert doc["next"][-1]["command"] == "snakemake research/FINDINGS.md --cores 2"
    # the project holds no copy of labrunner's rules: its Snakefile includes the installed workflow
    rules = [path for path in project.rglob("*") if path.suffix == ".smk" or path.name == "Snakefile"]
    assert rules == [project / "Snakefile"]
    assert "include: snakefile()" in (project / "Snakefile").read_text()
    assert re.findall(r"^rule (\w+)", (project / "Snakefile").read_text(), re.M) == ["all"]
    ignored = shell(project, "git check-ignore results/x stub/x .snakemake/x")
    assert ignored.stdout.split() == ["results/x", "stub/x", ".snakemake/x"]


WORKING_HANDLER = '''\
def {name}(runner):
    runner.log_metrics({{"accuracy": 0.5}}, step=0)
    return {{"finding": "{name} ran", "metrics": {{"accuracy": 0.9 if runner.sub_id == "a" else 0.8}}}}
'''


def guide_commands() -> list[str]:
    """Every command in the guide: the indented lines and the `labrunner ...` in backquotes."""
    text = guide_text()
    block = [line.strip() for line in text.splitlines() if re.match(r"^ {7}(labrunner|snakemake) ", line)]
    inline = [found for found in re.findall(r"`((?:labrunner|snakemake) [^`]+)`", text)]
    return list(dict.fromkeys(block + inline))


def test_every_command_of_the_agents_guide_runs(tmp_path: Path) -> None:
    commands = guide_commands()
    assert len(commands) >= 8, commands
    values = {"<exp>": "x1", "<sub>": "a", "<another-sub>": "b", "<metric>": "accuracy"}
    project = tmp_path / "study"
    ok(project.parent, f"labrunner init {project.name}")
    written = False
    for command in commands:
        for placeholder, value in values.items():
            command = command.replace(placeholder, value)
        assert "<" not in command, f"unknown placeholder in the guide: {command}"
        if command.startswith("snakemake") and not written:  # step 2 of the guide: write the handlers
            plan = project / "research" / "research_plan.yaml"
            text = plan.read_text().replace("# success_criteria:", "success_criteria:")
            plan.write_text(text.replace("#   accuracy: {target: TODO, acceptable: TODO, failure: TODO,",
                                         "  accuracy: {target: 0.85, acceptable: 0.75, failure: 0.5,"))
            for name in "ab":
                (project / "handlers" / "x1" / f"{name}.py").write_text(WORKING_HANDLER.format(name=name))
            written = True
        ok(project, command)
    status = json.loads(ok(project, "labrunner status --json").stdout)
    assert status["ok"] and status["totals"]["subs"] == {"completed": 2}
    assert status["next"][0]["action"] == "write_findings"
    assert (project / "research" / "experiments" / "x1" / "FINDINGS.md").is_file()
