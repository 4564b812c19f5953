"""The README's commands work as written: every `snakemake` command in it, dry-run on a copy of
the example project (a target after `--config` would be swallowed, and the dry run fails); the
own-project block run in order on a fresh `labrunner init`; and the example itself, run end to
end in the stub tree through this repository's thin Snakefile."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from workflow_support import BIN, REPO

pytestmark = pytest.mark.slow

README = (REPO / "README.md").read_text(encoding="utf-8")


def code_blocks() -> list[list[str]]:
    """The lines of each fenced block of shell commands (not YAML, Python or output)."""
    blocks = re.findall(r"^```([a-z]*)\n(.*?)^```", README, re.S | re.M)
    return [[line for line in body.splitlines() if line.strip()] for lang, body in blocks
            if lang in ("", "sh", "bash") and not body.lstrip().startswith(("research/", "#"))]


def without_comment(line: str) -> str:
    return re.split(r"\s+#\s", line, maxsplit=1)[0].strip()


def snakemake_commands() -> list[str]:
    """Every snakemake command: each `&&` part of a block line, and each inline `snakemake ...`."""
    found = []
    for block in code_blocks():
        for line in block:
            for part in without_comment(line).split("&&"):
                words = shlex.split(part)
                if words and Path(words[0]).name == "snakemake":
                    found.append(shlex.join(["snakemake", *words[1:]]))
    found += [" ".join(text.split()) for text in re.findall(r"`(snakemake [^`]+)`", README)]
    return list(dict.fromkeys(found))


def env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "WANDB_MODE": "disabled"}


def run(project: Path, command: list[str], timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=project, env=env(), capture_output=True, text=True, timeout=timeout_s)


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of this repository's example project: its thin Snakefile, profile, plan, handlers."""
    root = tmp_path / "example"
    root.mkdir()
    shutil.copy(REPO / "Snakefile", root / "Snakefile")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    for folder in ("profiles", "research", "handlers"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("FINDINGS.md", "__pycache__"))
    return root


def test_readme_snakemake_commands_are_found() -> None:
    commands = snakemake_commands()

    for expected in ("snakemake --cores 2 research/FINDINGS.md", "snakemake --cores 8 research/FINDINGS.md --config backend=modal",
                     "snakemake --lint", "snakemake --unlock"):
        assert expected in commands, commands
    assert len(commands) >= 10, commands
    # the README's first command sets up and runs the example: the main job of this repository
    first = without_comment(code_blocks()[0][0])
    assert first.endswith("&& .venv/bin/snakemake --cores 2 research/FINDINGS.md"), first


@pytest.mark.parametrize("command", snakemake_commands())
def test_readme_snakemake_command_dry_runs_on_the_example(command: str, example: Path) -> None:
    words = shlex.split(command)
    if "slurm" in words:
        pytest.importorskip("snakemake_executor_plugin_slurm")
    if "--report" in words:  # a report embeds what a run wrote (tests/test_workflow_rigour.py builds one); here,
        del words[words.index("--report"):words.index("--report") + 2]  # the DAG it reports on
    for word in words:  # another plan file: the example's plan, at the path the README names
        if word.startswith("plan="):
            (example / word[5:]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(example / "research" / "research_plan.yaml", example / word[5:])

    done = run(example, [str(BIN / "snakemake"), *words[1:], "-n"])

    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{command}\n{output[-3000:]}"
    if "--lint" not in words and "--unlock" not in words:
        assert "rule run_sub:" in done.stdout, output[-2000:]  # the whole study would run: nothing swallowed


def test_readme_own_project_block_runs_in_a_new_repository(tmp_path: Path) -> None:
    block = next(block for block in code_blocks() if block[0].startswith("labrunner init"))
    project = tmp_path / "mine"
    project.mkdir()

    for line in block:
        words = shlex.split(without_comment(line))
        dry = ["-n"] if words[0] == "snakemake" and "-n" not in words else []
        done = run(project, [str(BIN / words[0]), *words[1:], *dry])
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert "labrunner status" in block[-1]


def test_readme_example_runs_end_to_end_through_the_thin_snakefile(example: Path) -> None:
    """The README's first command, in the stub tree (stub_params: an epoch each), so that the
    test takes seconds: every job, aggregate and write-up of the example through the thin
    Snakefile and the packaged workflow."""
    done = run(example, [str(BIN / "snakemake"), "--cores", "2", "stub/research/FINDINGS.md", "--config", "stub=true"],
               timeout_s=600)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Completed: 5  Failed: 0  Pending: 0  Held: 0  Skipped: 2" in done.stdout
    assert (example / "stub" / "research" / "experiments" / "e2-data-efficiency" / "FINDINGS.md").is_file()
