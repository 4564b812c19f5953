"""What a run is now (labrunner.state), one attempt at a time (labrunner.locks), and the write-up
refreshed from the records without changing what Snakemake sees (labrunner.writeup)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import PLAN_FILE, ProjectFactory, result_record
from labrunner.aggregate import collect_project
from labrunner.errors import RunLockedError
from labrunner.layout import RunPaths
from labrunner.locks import RunLock, holder_of
from labrunner.plan import Plan, load_plan
from labrunner.records import write_failure, write_result
from labrunner.state import RunStatus, read_state
from labrunner.writeup import refresh

PLAN = """\
project: {name: State}
experiments:
  e1:
    success_criteria:
      acc: {target: 0.9, acceptable: 0.8}
    sub_experiments:
      a: {params: {lr: 0.1}}
      b: {params: {lr: 0.2}, seeds: [0, 1]}
  e2:
    dependencies: [e1]
    sub_experiments: [c]
"""
HANDLERS = {
    "handlers/common.py": "SCALE = 1\n",
    "handlers/e1/a.py": "from handlers.common import SCALE\n\n\ndef a(runner):\n    return {}\n",
    "handlers/e1/b.py": "def b(runner):\n    return {}\n",
    "handlers/e2/c.py": "def c(runner):\n    return {}\n",
}


@pytest.fixture
def plan(make_project: ProjectFactory) -> Plan:
    return load_plan(make_project(PLAN, HANDLERS) / PLAN_FILE)


def paths(plan: Plan, exp: str, run: str) -> RunPaths:
    return RunPaths(plan.root / "results" / exp / run)


def state(plan: Plan, exp: str, sub: str, seed: int = 0) -> Any:
    spec = plan.sub(exp, sub)
    run = sub if len(spec.seeds) == 1 else f"{sub}/seed-{seed}"
    return read_state(spec, seed, paths(plan, exp, run), False, plan.root)


def complete(plan: Plan, exp: str, sub: str, metrics: dict[str, Any] | None = None, **fields: Any) -> None:
    write_result(paths(plan, exp, sub), result_record(plan, exp, sub, metrics or {"acc": 0.9}, **fields), None)


def test_state_a_result_made_as_the_plan_and_code_say_now_is_current(plan: Plan) -> None:
    complete(plan, "e1", "a")

    assert state(plan, "e1", "a").status == RunStatus.COMPLETED


@pytest.mark.parametrize("change, reason", [
    (lambda root: _replace(root / PLAN_FILE, "lr: 0.1", "lr: 0.15"), "params changed: lr 0.1 -> 0.15"),
    (lambda root: _replace(root / "handlers/common.py", "SCALE = 1", "SCALE = 2"), "code changed: handlers/common.py"),
    (lambda root: _replace(root / "handlers/e1/a.py", "return {}", "return {} "), "code changed: handlers/e1/a.py"),
    (lambda root: _replace(root / PLAN_FILE, "a: {params: {lr: 0.1}}", "a: {params: {lr: 0.1}, seed: 3}"), "seed 0 -> 3"),
    (lambda root: _replace(root / "handlers/e1/a.py", "def a(runner)", "def run(runner)"),
     "handler changed: handlers/e1/a.py::a -> handlers/e1/a.py::run"),
])
def test_state_a_result_made_otherwise_is_stale_and_says_why(plan: Plan, change: Any, reason: str) -> None:
    complete(plan, "e1", "a")

    change(plan.root)
    now = load_plan(plan.path)
    current = state(now, "e1", "a", seed=now.sub("e1", "a").seeds[0])

    assert current.status == RunStatus.STALE and any(reason in why for why in current.stale), current.stale
    assert current.earlier is not None and current.earlier["metrics"] == {"acc": 0.9}


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_state_a_stale_result_is_never_judged_and_is_shown_as_earlier(plan: Plan) -> None:
    complete(plan, "e1", "a", {"acc": 0.95})
    _replace(plan.root / PLAN_FILE, "lr: 0.1", "lr: 0.15")

    results = collect_project(load_plan(plan.path)).experiments["e1"]

    a = results["subs"]["a"]
    assert a["status"] == "stale" and "metrics" not in a and a["earlier"]["metrics"] == {"acc": 0.95}
    assert results["verdicts"]["acc"]["level"] == "not measured"  # 0.95 came from other params
    assert results["status"] == "pending" and results["assessment"]["recommendation"] is None


def test_state_a_failed_run_keeps_its_last_result_as_earlier_never_as_current(plan: Plan) -> None:
    complete(plan, "e1", "a", {"acc": 0.95})
    paths(plan, "e1", "a").result.unlink()  # the next attempt supersedes it (it stays in history/)
    write_failure(paths(plan, "e1", "a"), {"run_id": "x", "error": {"type": "ValueError", "message": "broken"}}, None)

    current = state(plan, "e1", "a")

    assert current.status == RunStatus.FAILED and current.earlier["metrics"] == {"acc": 0.95}


def test_state_dependents_of_an_experiment_that_is_not_completed_are_held(plan: Plan) -> None:
    complete(plan, "e1", "a")  # b (two seeds) has not run: e1 is pending

    view = collect_project(plan)

    e2 = view.experiments["e2"]
    assert e2["status"] == "held" and e2["held_by"] == "waits for e1 (pending: 1 pending)"
    assert e2["subs"]["c"]["status"] == "held"


# --- one attempt at a time ---------------------------------------------------------------------

def test_lock_a_second_attempt_is_refused_naming_the_first(tmp_path: Path) -> None:
    first = RunLock(tmp_path / ".lock", "e1/a")
    assert first.acquire("12:03") is None

    with pytest.raises(RunLockedError) as refused:
        RunLock(tmp_path / ".lock", "e1/a").acquire("12:04")

    assert f"e1/a is already running: pid {os.getpid()} on " in str(refused.value) and "since 12:03" in str(refused.value)
    assert holder_of(tmp_path / ".lock").pid == os.getpid()
    first.release()
    assert holder_of(tmp_path / ".lock") is None
    with RunLock(tmp_path / ".lock", "e1/a") as again:
        assert again.acquire("12:05") is None  # released cleanly: no warning


def test_lock_held_in_another_process_is_seen_and_dies_with_it(tmp_path: Path) -> None:
    code = ("import sys, time; sys.path.insert(0, %r); from labrunner.locks import RunLock; "
            "RunLock(%r, 'e1/a').acquire('t0'); print('held', flush=True); time.sleep(60)") % (
        str(Path(__file__).parent.parent / "src"), str(tmp_path / ".lock"))
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            assert holder_of(tmp_path / ".lock").pid == holder.pid
            with pytest.raises(RunLockedError):
                RunLock(tmp_path / ".lock", "e1/a").acquire("t1")
        finally:
            holder.kill()

    with RunLock(tmp_path / ".lock", "e1/a") as lock:
        warning = lock.acquire("t2")  # the holder died without releasing it

    assert warning is not None and f"left by pid {holder.pid}" in warning and "which died" in warning


# --- the write-up, refreshed without changing what Snakemake sees ------------------------------

def test_writeup_refresh_rewrites_what_changed_and_keeps_modification_times(plan: Plan,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(plan.root)
    complete(plan, "e1", "a")
    assert refresh(plan)  # first time: every file is new
    results = plan.root / "results/e1/results.yaml"
    new_mtime = results.stat().st_mtime_ns
    assert new_mtime < (plan.root / PLAN_FILE).stat().st_mtime_ns  # new: older than its inputs

    assert refresh(plan) == []  # nothing changed: nothing touched
    write_failure(paths(plan, "e1", "b/seed-0"), {"run_id": "x", "error": {"type": "KeyError", "message": "'k'"}}, None)
    os.utime(results, ns=(new_mtime, 1_000_000_000_000_000_000))

    written = refresh(plan)

    assert "results/e1/results.yaml" in written and "research/experiments/e1/FINDINGS.md" in written
    assert results.stat().st_mtime_ns == 1_000_000_000_000_000_000  # kept
    assert "KeyError" in (plan.root / "research/experiments/e1/FINDINGS.md").read_text()


def test_state_runs_read_once_inside_the_block_and_afresh_outside(plan: Plan) -> None:
    """The end of a run reports the runs several ways at one moment: inside runs_read_once they
    are read once; outside, every call reads the files as they are."""
    from labrunner.state import run_states, runs_read_once

    complete(plan, "e2", "c")
    write_failure(paths(plan, "e2", "c"), {"run_id": "x", "error": {"type": "KeyError", "message": "k"}}, None)
    with runs_read_once():
        first = run_states(plan, "e2")
        paths(plan, "e2", "c").result.unlink()  # as if the files changed in the middle of the report
        assert [s.status for s in run_states(plan, "e2")] == [s.status for s in first] == [RunStatus.COMPLETED]
    assert [s.status for s in run_states(plan, "e2")] == [RunStatus.FAILED]
