"""The job cache (labrunner.jobcache): a Snakemake job of one sub reads its experiment's entry
instead of loading the plan, and ends exactly as a full load would have made it end."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXP, PLAN_FILE, SUB, ProjectFactory, one_sub_plan
from labrunner import cli, jobcache
from labrunner.plan import load_plan
from labrunner.sources import file_sha256
from labrunner.yamlio import load_yaml

RESULTS = Path("results")
HANDLER = "def {name}(runner):\n    return {{'finding': 'ok', 'metrics': {{'x': 1.0}}}}\n"
RICH_PLAN = """\
project: {name: Rich}
defaults: {timeout_min: 3, retries: 1, seeds: [0], mem_mb: 512}
wandb: {mode: disabled, entity: someone, tags: [a, b], init_timeout_s: 7}
experiments:
  e1:
    params: {width: 8}
    stub_params: {epochs: 1}
    sub_experiments:
      base: {name: Base, note: "kept as information", gpu: A10G}
      s: {name: Sweep, params: {epochs: 3}, grid: {lr: [0.001, 0.01], hidden: [[64, 64], 128]}, seeds: [0, 1]}
      later: {skip: "not yet"}
      other: {handler: "handlers/e1/shared.py::run", timeout_min: 0.5, retries: 0, backend: local}
  e2:
    dependencies: [e1]
    sub_experiments:
      t: {}
"""
RICH_HANDLERS = {f"handlers/e1/{name}.py": HANDLER.format(name=name) for name in ("base", "s")} | {
    "handlers/e1/shared.py": HANDLER.format(name="run"), "handlers/e2/t.py": HANDLER.format(name="t")}


def job_argv(exp: str = EXP, run: str = SUB, handler: str | None = None, seed: int = 0) -> list[str]:
    """`labrunner run` as the workflow's run_sub rule calls it."""
    spec = {"params": {}, "seed": seed, "handler": handler or f"handlers/{exp}/{run}.py::{run}"}
    return ["run", exp, run, "--spec", json.dumps(spec, sort_keys=True), "--plan", str(PLAN_FILE),
            "--results-dir", str(RESULTS), "--from-snakemake"]


def run_job(root: Path, argv: list[str]) -> tuple[int, str, list[str]]:
    """One job in a fresh interpreter, as Snakemake starts it: (exit code, stderr, the modules of
    note it imported)."""
    script = ("import sys\nfrom labrunner.cli import main\ncode = main(sys.argv[1:])\n"
              "print('loaded:', *sorted({m.split('.')[0] for m in sys.modules} & "
              "{'pydantic', 'torch', 'pandas', 'wandb', 'modal', 'matplotlib', 'snakemake'}))\n"
              "sys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", script, *argv], cwd=root, capture_output=True, text=True, timeout=120)
    loaded = [line for line in done.stdout.splitlines() if line.startswith("loaded:")]
    return done.returncode, done.stderr, loaded[-1].split()[1:] if loaded else ["?"]


def entries(root: Path) -> list[Path]:
    return sorted((root / RESULTS / ".labrunner" / "plans").glob("*/*.json"))


def two_sub_project(make_project: ProjectFactory) -> Path:
    plan = one_sub_plan("disabled")
    plan["experiments"][EXP]["sub_experiments"]["s2"] = {}
    return make_project(plan, {f"handlers/{EXP}/{SUB}.py": HANDLER.format(name=SUB),
                               f"handlers/{EXP}/s2.py": HANDLER.format(name="s2")})


def test_jobcache_the_first_job_writes_it_and_the_next_one_runs_without_the_plan_models(
        make_project: ProjectFactory) -> None:
    root = two_sub_project(make_project)

    first = run_job(root, job_argv())
    assert first[0] == 0, first[1]
    assert first[2] == ["pydantic"]  # it loaded the plan, and wrote the cache
    assert [path.name for path in entries(root)] == [f"{EXP}.json"]
    second = run_job(root, job_argv(run="s2"))

    assert second[0] == 0, second[1]
    assert second[2] == []  # no pydantic, and nothing heavy: torch, pandas, wandb, modal, ...
    assert load_yaml(root / RESULTS / EXP / "s2" / "result.yaml")["status"] == "completed"


def test_jobcache_gives_every_sub_the_settings_and_tracking_a_full_load_gives(make_project: ProjectFactory) -> None:
    root = make_project(RICH_PLAN, RICH_HANDLERS)
    plan = load_plan(root / PLAN_FILE, root=root)
    jobcache.remember_plan(plan, file_sha256(root / PLAN_FILE), RESULTS)

    runs = [spec for exp in ("e1", "e2") for spec in plan.subs(exp, include_skipped=True)]
    assert len(runs) == 8  # base, four sweep combinations, later, other, t
    for spec in runs:
        cached = jobcache.read_job_plan(root / PLAN_FILE, root, RESULTS, spec.experiment_id, spec.sub_id)
        if spec.experiment_id == "e2":
            assert cached is None  # held or not is for the records to say, with the whole plan
            continue
        assert cached is not None, spec.sub_id
        assert cached.spec == spec
        assert cached.tracking == plan.tracking
        assert cached.root == root


def test_jobcache_an_edited_plan_is_loaded_again(make_project: ProjectFactory) -> None:
    root = two_sub_project(make_project)
    assert run_job(root, job_argv())[0] == 0
    plan_path = root / PLAN_FILE
    plan_path.write_text(plan_path.read_text().replace("timeout_min: 1", "timeout_min: 2"))

    assert jobcache.read_job_plan(plan_path, root, RESULTS, EXP, "s2") is None
    code, stderr, loaded = run_job(root, job_argv(run="s2"))

    assert (code, loaded) == (0, ["pydantic"]), stderr
    cached = jobcache.read_job_plan(plan_path, root, RESULTS, EXP, "s2")
    assert cached is not None and cached.spec.timeout_min == 2.0
    assert len(entries(root)) == 2  # one per content of the plan file


def test_jobcache_a_missing_handler_fails_the_job_as_a_full_load_does(make_project: ProjectFactory) -> None:
    root = two_sub_project(make_project)
    assert run_job(root, job_argv())[0] == 0
    (root / "handlers" / EXP / "s2.py").unlink()

    code, stderr, loaded = run_job(root, job_argv(run="s2"))

    assert (code, loaded) == (1, ["pydantic"])
    assert f"handler file handlers/{EXP}/s2.py not found" in stderr
    assert ":" in stderr.split("handler file")[0]  # with the plan's file and line, as validate says it


def test_jobcache_a_damaged_entry_is_loaded_again_and_rewritten(make_project: ProjectFactory) -> None:
    root = two_sub_project(make_project)
    assert run_job(root, job_argv())[0] == 0
    [entry] = entries(root)
    entry.write_text('{"plan_sha256": ')

    code, stderr, loaded = run_job(root, job_argv(run="s2"))

    assert (code, loaded) == (0, ["pydantic"]), stderr
    assert json.loads(entry.read_text())["experiment"] == EXP


def test_jobcache_an_experiment_with_a_dependency_is_checked_for_holds_with_the_whole_plan(
        make_project: ProjectFactory) -> None:
    root = make_project(RICH_PLAN, RICH_HANDLERS)
    assert run_job(root, job_argv("e1", "base", "handlers/e1/base.py::base"))[0] == 0
    assert len(entries(root)) == 2  # every experiment's entry, from the one load

    code, stderr, loaded = run_job(root, job_argv("e2", "t", "handlers/e2/t.py::t"))

    assert code == cli.EXIT_REFUSED, stderr
    assert "e2/t is held: waits for e1" in stderr and loaded == ["pydantic"]


def test_jobcache_settings_that_json_would_change_are_not_cached(make_project: ProjectFactory) -> None:
    root = make_project(one_sub_plan("disabled", params={"lr": float("nan")}),
                        {f"handlers/{EXP}/{SUB}.py": HANDLER.format(name=SUB)})
    plan = load_plan(root / PLAN_FILE, root=root)

    jobcache.remember_plan(plan, file_sha256(root / PLAN_FILE), RESULTS)

    assert entries(root) == []


def test_jobcache_is_not_written_for_a_plan_that_changed_during_the_load(make_project: ProjectFactory) -> None:
    root = two_sub_project(make_project)
    plan = load_plan(root / PLAN_FILE, root=root)

    jobcache.remember_plan(plan, hashlib.sha256(b"the file as it was before").hexdigest(), RESULTS)

    assert entries(root) == []


def test_jobcache_a_job_for_another_backend_loads_the_plan(make_project: ProjectFactory,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    root = two_sub_project(make_project)
    assert run_job(root, job_argv())[0] == 0
    monkeypatch.chdir(root)
    args = cli._parser().parse_args(job_argv(run="s2"))
    assert cli._cached_job_plan(args, "s2") is not None

    monkeypatch.setenv("LABRUNNER_BACKEND", "modal")

    assert cli._cached_job_plan(args, "s2") is None
