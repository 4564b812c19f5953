"""Unit tests for `labrunner init`, `labrunner new experiment`, `labrunner new sub` and
`labrunner guide`: what they write, what they keep, and that the edited plan keeps every line the
researcher wrote and validates at once."""

from __future__ import annotations

import difflib
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PLAN_FILE, write
from labrunner.cli import main
from labrunner.plan import load_plan
from labrunner.scaffold import AGENTS_BEGIN, AGENTS_END, guide_text, init_project
from workflow_support import REPO


def run_cli(root: Path, *args: str, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.chdir(root)
    return main(list(args))


def added_lines_only(before: str, after: str) -> list[str]:
    """The lines `after` adds to `before`; fails if any line of `before` changed or went."""
    diff = list(difflib.ndiff(before.splitlines(keepends=True), after.splitlines(keepends=True)))
    removed = [line for line in diff if line.startswith("- ")]
    assert not removed, removed
    return [line[2:] for line in diff if line.startswith("+ ")]


# --- init --------------------------------------------------------------------------------------

def test_init_writes_exactly_this_repositorys_snakefile_and_profile(tmp_path: Path) -> None:
    init_project(tmp_path)

    assert (tmp_path / "Snakefile").read_bytes() == (REPO / "Snakefile").read_bytes()
    profile = "profiles/default/config.yaml"
    assert (tmp_path / profile).read_bytes() == (REPO / profile).read_bytes()


def test_init_writes_the_project_skeleton(tmp_path: Path) -> None:
    report = init_project(tmp_path / "study")

    root = tmp_path / "study"
    for relative in ("Snakefile", "profiles/default/config.yaml", "research/research_plan.yaml", "handlers/__init__.py",
                     ".gitignore", "AGENTS.md"):
        assert (root / relative).is_file(), relative
    assert (root / "research" / "experiments").is_dir()
    assert (root / ".gitignore").read_text().splitlines()[1:] == ["results/", "stub/", ".snakemake/"]
    agents = (root / "AGENTS.md").read_text()
    assert agents == f"{AGENTS_BEGIN}\n{guide_text()}{AGENTS_END}\n"
    assert "wrote  Snakefile" in report and report[-1].startswith("next:  labrunner new experiment")
    # the skeleton is the plan's documented format: it names the project and has no rules copied
    plan = (root / "research" / "research_plan.yaml").read_text()
    assert 'name: "study"' in plan and "experiments: {}" in plan
    assert not list(root.rglob("*.smk"))


def test_init_never_overwrites_and_is_idempotent(tmp_path: Path) -> None:
    write(tmp_path / "Snakefile", "rule mine:\n    output: 'x'\n")
    write(tmp_path / ".gitignore", "node_modules/\nresults\n")
    write(tmp_path / "AGENTS.md", "# Our agents\n\nBe kind.")

    first = init_project(tmp_path)
    snapshot = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    second = init_project(tmp_path)

    assert "kept   Snakefile (exists)" in first
    assert (tmp_path / "Snakefile").read_text() == "rule mine:\n    output: 'x'\n"
    assert (tmp_path / ".gitignore").read_text() == (
        "node_modules/\nresults\n\n# labrunner: what the pipeline writes\nstub/\n.snakemake/\n")
    agents = (tmp_path / "AGENTS.md").read_text()
    assert agents.startswith("# Our agents\n\nBe kind.\n\n" + AGENTS_BEGIN) and agents.count(AGENTS_BEGIN) == 1
    assert all(line.startswith(("kept", "next")) for line in second), second
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == snapshot


def test_guide_command_prints_the_agents_section(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["guide"]) == 0

    out = capsys.readouterr().out
    assert out == guide_text()
    assert "Failed: 0" in out and "labrunner status --json" in out and "failure.yaml" in out


# --- new experiment -------------------------------------------------------------------------------

def test_new_experiment_after_init_validates_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    init_project(tmp_path)
    before = (tmp_path / PLAN_FILE).read_text()

    code = run_cli(tmp_path, "new", "experiment", "x1", "--sub", "a", "--sub", "b",
                   "--metric", "accuracy:higher:0.97,0.95,0.9", "--metric", "loss:lower", monkeypatch=monkeypatch)

    assert code == 0, capsys.readouterr().err
    plan = load_plan(tmp_path / PLAN_FILE)
    assert [spec.sub_id for spec in plan.subs("x1")] == ["a", "b"]
    accuracy = plan.experiments["x1"].success_criteria["accuracy"]
    assert (accuracy.target, accuracy.acceptable, accuracy.failure, accuracy.direction) == (0.97, 0.95, 0.9, "higher")
    # a criterion without thresholds is written commented out, to fill in: never made-up tiers
    assert "loss" not in plan.experiments["x1"].success_criteria
    text = (tmp_path / PLAN_FILE).read_text()
    assert "# loss: {target: TODO, acceptable: TODO, failure: TODO, direction: lower}" in text
    # every line of the skeleton is kept, except `experiments: {}`, which becomes a block
    assert added_lines_only(before.replace("experiments: {}\n", "experiments:\n"), text)
    handler = (tmp_path / "handlers" / "x1" / "a.py").read_text()
    assert 'raise NotImplementedError("write the experiment in handlers/x1/a.py")' in handler
    assert "def a(runner: ExperimentRunner) -> dict:" in handler and '"accuracy": value, "loss": value' in handler
    assert "## Question" in (tmp_path / "research" / "experiments" / "x1.md").read_text()
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "edited research/research_plan.yaml" and "wrote  handlers/x1/b.py" in out


def test_new_experiment_keeps_every_line_of_a_researchers_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for item in ("research", "handlers"):
        subprocess.run(["cp", "-r", str(REPO / item), str(tmp_path / item)], check=True)
    for generated in tmp_path.rglob("FINDINGS.md"):
        generated.unlink()
    before = (tmp_path / PLAN_FILE).read_text()

    assert run_cli(tmp_path, "new", "experiment", "e3-depth", "--sub", "e3_1", monkeypatch=monkeypatch) == 0
    assert run_cli(tmp_path, "new", "sub", "e1-linear-vs-mlp", "e1_4", monkeypatch=monkeypatch) == 0

    after = (tmp_path / PLAN_FILE).read_text()
    added = added_lines_only(before, after)
    assert added == ["      e1_4: {params: {}}\n", "  e3-depth:\n", '    name: "e3-depth"\n',
                     "    dependencies: []  # experiments that must complete first\n", "    sub_experiments:\n",
                     "      e3_1: {params: {}}\n"]
    # e1_4 goes after e1's last sub (before the blank line that ends e1); e3 after e2, before gates
    assert "e1_3:" in after.split("      e1_4:")[0] and "e2-data-efficiency:" in after.split("      e1_4:")[1]
    assert after.index("  e3-depth:") < after.index("\ngates:")
    plan = load_plan(tmp_path / PLAN_FILE)
    assert [spec.sub_id for spec in plan.subs("e1-linear-vs-mlp", include_skipped=True)][-1] == "e1_4"


@pytest.mark.parametrize(("args", "message"), [
    (["x1", "--sub", "a"], "experiments.x1: already exists; add a sub with `labrunner new sub x1 SUB`"),
    (["x 2", "--sub", "a"], "experiment id 'x 2' is not path-safe"),
    (["x2", "--sub", "a/b"], "sub-experiment id 'a/b' is not path-safe"),
    (["x2", "--sub", "a", "--sub", "a"], "each sub-experiment id once"),
    (["x2", "--sub", "a", "--metric", "acc:up"], "--metric: acc:up: expected NAME:higher or NAME:lower, got direction 'up'"),
    (["x2", "--sub", "a", "--metric", "acc:higher:0.9,x"], "expected up to three numbers"),
])
def test_new_experiment_refuses_bad_input_and_changes_nothing(args: list[str], message: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    init_project(tmp_path)
    assert run_cli(tmp_path, "new", "experiment", "x1", "--sub", "a", monkeypatch=monkeypatch) == 0
    capsys.readouterr()
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}

    assert main(["new", "experiment", *args]) == 1

    assert message in capsys.readouterr().err
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before


def test_new_experiment_that_would_not_validate_leaves_everything_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    init_project(tmp_path)
    assert run_cli(tmp_path, "new", "experiment", "x1", "--sub", "a", monkeypatch=monkeypatch) == 0
    (tmp_path / "handlers" / "x1" / "a.py").unlink()  # a problem the plan already has
    capsys.readouterr()
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}

    assert main(["new", "experiment", "x2", "--sub", "b", "--metric", "acc:higher:0.5,0.9"]) == 1

    err = capsys.readouterr().err
    # the old problem with the plan's own line number; the new one marked as coming from this change
    assert "research/research_plan.yaml:21: experiments.x1.sub_experiments.a: handler file handlers/x1/a.py not found" in err
    assert "experiments.x2.success_criteria.acc: tiers are in the wrong order" in err and "(after this change)" in err
    assert "the plan would not validate after this change, so nothing was changed" in err
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before
    assert not (tmp_path / "handlers" / "x2").exists()


def test_new_experiment_without_sub_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["new", "experiment", "x1"])

    assert caught.value.code == 2
    assert "the following arguments are required: --sub" in capsys.readouterr().err


def test_new_experiment_without_a_plan_says_to_init(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(tmp_path, "new", "experiment", "x1", "--sub", "a", monkeypatch=monkeypatch) == 1

    assert "research/research_plan.yaml: file not found; `labrunner init` writes one" in capsys.readouterr().err


# --- new sub ------------------------------------------------------------------------------------------

SHAPES = """\
# my plan
experiments:
  flow-list: {sub_experiments: [a, b]}   # kept
  block-list:
    sub_experiments:
    - a
    - b  # last
  flow-map:
    sub_experiments: {a: {params: {x: 1}}}
  no-subs: {archived: true}
  own-dir:
    handlers: lib/own
    sub_experiments:
      a:
        params: {x: 1}

      # a comment after the last sub stays after it
gates: {}
"""


@pytest.mark.parametrize(("experiment", "sub", "expected", "handler"), [
    ("flow-list", "c", "  flow-list: {sub_experiments: [a, b, c]}   # kept\n", "handlers/flow-list/c.py"),
    ("block-list", "c", "    - b  # last\n    - c\n", "handlers/block-list/c.py"),
    ("flow-map", "c", "    sub_experiments: {a: {params: {x: 1}}, c: {params: {}}}\n", "handlers/flow-map/c.py"),
    ("no-subs", "c", "  no-subs: {archived: true, sub_experiments: {c: {params: {}}}}\n", "handlers/no-subs/c.py"),
    ("own-dir", "c", "        params: {x: 1}\n      c: {params: {}}\n", "lib/own/c.py"),
    ("own-dir", "1.50", '        params: {x: 1}\n      "1.50": {params: {}}\n', "lib/own/1.50.py"),
])
def test_new_sub_in_every_shape_of_plan(experiment: str, sub: str, expected: str, handler: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / PLAN_FILE, SHAPES)
    for exp, subs in (("flow-list", "ab"), ("block-list", "ab"), ("flow-map", "a")):
        for name in subs:
            write(tmp_path / "handlers" / exp / f"{name}.py", f"def {name}(runner):\n    pass\n")
    write(tmp_path / "lib" / "own" / "a.py", "def a(runner):\n    pass\n")

    assert run_cli(tmp_path, "new", "sub", experiment, sub, monkeypatch=monkeypatch) == 0

    after = (tmp_path / PLAN_FILE).read_text()
    assert expected in after
    assert after.index("# a comment after the last sub") > after.index(expected)
    assert after.startswith("# my plan\n") and after.endswith("gates: {}\n")
    plan = load_plan(tmp_path / PLAN_FILE)
    spec = plan.sub(experiment, sub)
    assert spec.handler_file.as_posix() == handler
    assert "raise NotImplementedError" in (tmp_path / handler).read_text()


def test_new_sub_unknown_experiment_or_existing_sub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    init_project(tmp_path)
    assert run_cli(tmp_path, "new", "experiment", "x1", "--sub", "a", monkeypatch=monkeypatch) == 0

    assert main(["new", "sub", "x-1", "b"]) == 1
    assert main(["new", "sub", "x1", "a"]) == 1

    err = capsys.readouterr().err
    assert "experiments: unknown experiment 'x-1'; did you mean 'x1'? experiments: x1" in err
    assert "experiments.x1.sub_experiments.a: already exists" in err


def test_new_commands_import_nothing_heavy(tmp_path: Path) -> None:
    code = (f"import os, sys\nos.chdir({str(tmp_path)!r})\nfrom labrunner.cli import main\n"
            "assert main(['init']) == 0\nassert main(['new', 'experiment', 'x1', '--sub', 'a']) == 0\n"
            "assert main(['new', 'sub', 'x1', 'b']) == 0\nassert main(['guide']) == 0\n"
            "assert main(['validate', '--json']) == 0\nassert main(['status', '--json']) == 0\n"
            "heavy = {'torch', 'pandas', 'wandb', 'modal', 'matplotlib', 'snakemake', 'sklearn'}\n"
            "print('heavy:', sorted({m.split('.')[0] for m in sys.modules} & heavy))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "heavy: []"
