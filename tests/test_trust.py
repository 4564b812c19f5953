"""The write-up never shows stale results, and one run converges: real Snakemake runs of tiny plans.

After any run, whatever failed, every results.yaml, table, FINDINGS, gates.yaml and the status
say what each sub is now; an exit status of 0 means `snakemake -n` has nothing left to do; the
dry run before a run lists the jobs the run executes.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from workflow_support import (
    BIN, PLAN, edit, fail_next, heal, load, planned_subs, project_env, run, snakemake, write_project,
)

pytestmark = pytest.mark.slow

E1 = Path("results/e1-tiny")
BROKEN = '\n\ndef _broken():\n    raise ValueError("b is broken now")\n'


def nothing_to_do(project: Path, *args: str) -> bool:
    done = snakemake(project, "-n", *args)
    return done.returncode == 0 and "Nothing to be done" in done.stdout + done.stderr


def status(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "labrunner"), "status", *args], cwd=project, capture_output=True, text=True,
                          env=project_env(project))


def break_handler(project: Path, sub: str) -> None:
    """A code change that makes a sub that succeeded raise."""
    path = project / "handlers" / "e1-tiny" / f"{sub}.py"
    text = path.read_text()
    path.write_text(text.replace('    path = runner.results.save_artifact', '    _broken()\n    path = runner.results.save_artifact')
                    + BROKEN)


def findings(project: Path, exp: str | None = None) -> str:
    path = project / "research" / ("FINDINGS.md" if exp is None else f"experiments/{exp}/FINDINGS.md")
    return path.read_text()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "proj")


def test_trust_a_broken_completed_sub_is_failed_everywhere_then_only_it_reruns(project: Path) -> None:
    assert run(project).returncode == 0
    assert load(project / E1 / "results.yaml")["status"] == "completed"
    original = (project / "handlers/e1-tiny/b.py").read_text()
    break_handler(project, "b")

    done = run(project)

    assert done.returncode != 0
    results = load(project / E1 / "results.yaml")
    assert results["status"] == "failed" and results["assessment"]["recommendation"] is None
    b = results["subs"]["b"]
    assert b["status"] == "failed" and b["error"]["type"] == "ValueError" and "metrics" not in b
    assert b["earlier"]["metrics"]["acc"] == 0.95  # shown, marked as not current
    assert results["verdicts"]["acc"]["source_sub"] != "b"  # b's old 0.95 passes no criterion
    assert "ValueError: b is broken now" in findings(project, "e1-tiny")
    assert "❌ failed" in findings(project, "e1-tiny") and "from an earlier run, not current" in findings(project, "e1-tiny")
    assert "| ❌ failed |" in findings(project)
    gate = load(project / "results/gates.yaml")["gates"]["g1"]
    assert gate["status"] != "passed" and "e1-tiny: 1 sub-experiment failed (b)" in gate["blockers"]
    shown = status(project)
    assert shown.returncode == 1 and "FAILED e1-tiny/b" in shown.stdout and "b is broken now" in shown.stdout
    assert "e1-tiny: failed" in shown.stdout and "g1: pending" in shown.stdout

    (project / "handlers/e1-tiny/b.py").write_text(original + "\n# fixed\n")
    assert planned_subs(project) == ["e1-tiny/b"]
    done = run(project)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = load(project / E1 / "results.yaml")
    assert results["status"] == "completed" and results["subs"]["b"]["last_failure"]["type"] == "ValueError"
    assert load(project / "results/gates.yaml")["gates"]["g1"]["status"] == "passed"
    assert "an earlier attempt failed (ValueError" in findings(project, "e1-tiny")
    assert nothing_to_do(project)


def test_trust_a_params_change_whose_rerun_fails_shows_no_old_metrics_as_current(project: Path) -> None:
    assert run(project).returncode == 0
    plan = project / "research/research_plan.yaml"
    plan.write_text(plan.read_text().replace("b: {params: {acc: 0.95, loss: 0.05}}", "b: {params: {acc: 0.5, loss: 0.05}}"))
    fail_next(project, "b", "after the params change")

    assert run(project).returncode != 0

    b = load(project / E1 / "results.yaml")["subs"]["b"]
    assert b["status"] == "failed" and b["params"] == {"acc": 0.5, "loss": 0.05} and "metrics" not in b
    assert b["earlier"]["metrics"]["acc"] == 0.95
    table = (project / E1 / "metrics.csv").read_text()
    assert "0.95" not in table  # the old value is not in the current table


def test_trust_first_run_with_a_failing_sub_writes_every_write_up(tmp_path: Path) -> None:
    plan = PLAN.replace("gates:", """  e3-solo:
    success_criteria:
      acc: {target: 0.9, acceptable: 0.8}
    sub_experiments: [x]
gates:""")
    project = write_project(tmp_path / "proj", plan)
    (project / "handlers/e3-solo").mkdir()
    shutil.copy(project / "handlers/e2-next/d.py", project / "handlers/e3-solo/x.py")
    (project / "handlers/e3-solo/x.py").write_text((project / "handlers/e3-solo/x.py").read_text().replace("def d(", "def x("))
    fail_next(project, "b", "first run")

    done = run(project)

    assert done.returncode != 0
    top = findings(project)
    assert "e3-solo" in top and "| ✅ completed |" in top and "acc 0.9: target met" in top
    assert "| ❌ failed |" in top  # e1-tiny
    assert "RuntimeError: flaky failure of b: first run" in findings(project, "e1-tiny")
    assert "waits for e1-tiny" in findings(project, "e2-next")
    assert load(project / "results/e2-next/results.yaml")["status"] == "held"
    heal(project, "b")
    assert planned_subs(project) == ["e1-tiny/b", "e2-next/d"]
    assert run(project).returncode == 0
    assert nothing_to_do(project)


def test_trust_a_module_imported_across_a_dependency_reruns_both_in_one_run(project: Path) -> None:
    assert run(project).returncode == 0
    edit(project / "handlers/helpers.py")  # imported by every handler, e1's and e2's

    assert planned_subs(project) == ["e1-tiny/a", "e1-tiny/b", "e1-tiny/c", "e2-next/d"]
    done = run(project)

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert nothing_to_do(project)
    edit(project / "handlers/e2-next/d.py")  # a handler edit downstream: d alone
    assert planned_subs(project) == ["e2-next/d"]
    assert run(project).returncode == 0 and nothing_to_do(project)
    edit(project / "handlers/e1-tiny/a.py")  # upstream: a alone; d's result still holds
    assert planned_subs(project) == ["e1-tiny/a"]
    assert run(project).returncode == 0 and nothing_to_do(project)


def test_trust_a_plan_edited_while_the_run_goes_is_not_reported_as_current(project: Path) -> None:
    slow = project / "handlers/e1-tiny/a.py"
    slow.write_text(slow.read_text().replace("    runner.log_metrics(", "    import time\n    time.sleep(4)\n    runner.log_metrics(", 1))
    process = subprocess.Popen([str(BIN / "snakemake"), "--cores", "2"], cwd=project, env=project_env(project),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not (project / E1 / "a/run.log").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    plan = project / "research/research_plan.yaml"
    plan.write_text(plan.read_text().replace("a: {params: {acc: 0.85, loss: 0.3}}", "a: {params: {acc: 0.86, loss: 0.3}}"))
    output, _ = process.communicate(timeout=120)

    assert process.returncode != 0, output[-2000:]
    assert "changed while the run was going" in output
    a = load(project / E1 / "results.yaml")["subs"]["a"]
    assert a["status"] == "stale" and "acc 0.85 -> 0.86" in a["stale"][0]
    # d, waiting for e1, saw it pending when it started and did not run: it runs next time
    assert load(project / "results/e2-next/results.yaml")["status"] == "held"
    assert planned_subs(project) == ["e1-tiny/a", "e2-next/d"]
    assert run(project).returncode == 0 and nothing_to_do(project)


def test_trust_a_hand_run_of_a_sub_snakemake_runs_is_refused_and_loses_nothing(project: Path) -> None:
    slow = project / "handlers/e1-tiny/a.py"
    slow.write_text(slow.read_text().replace("    runner.log_metrics(", "    import time\n    time.sleep(4)\n    runner.log_metrics(", 1))
    process = subprocess.Popen([str(BIN / "snakemake"), "--cores", "2"], cwd=project, env=project_env(project),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while "running" not in _read(project / E1 / "a/failure.yaml") and time.monotonic() < deadline:
        time.sleep(0.1)
    before = {name: _read(project / E1 / "a" / name) for name in ("failure.yaml", "run.log")}

    hand = subprocess.run([str(BIN / "labrunner"), "run", "e1-tiny", "a"], cwd=project, capture_output=True, text=True,
                          env=project_env(project), timeout=60)

    assert hand.returncode == 3, hand.stdout + hand.stderr
    assert "e1-tiny/a is already running: pid" in hand.stderr and "nothing was changed" in hand.stderr
    assert {name: _read(project / E1 / "a" / name) for name in before} == before
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output[-2000:]
    assert load(project / E1 / "a/result.yaml")["status"] == "completed"
    assert load(project / E1 / "a/failure.yaml")["status"] == "none"
    assert nothing_to_do(project)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def test_trust_a_plan_outside_research_runs_with_handlers_from_the_project_root(project: Path) -> None:
    (project / "plans").mkdir()
    shutil.move(project / "research/research_plan.yaml", project / "plans/v2.yaml")

    assert planned_subs(project, "--config", "plan=plans/v2.yaml") == ["e1-tiny/a", "e1-tiny/b", "e1-tiny/c", "e2-next/d"]
    done = run(project, "--config", "plan=plans/v2.yaml")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert nothing_to_do(project, "--config", "plan=plans/v2.yaml")
    assert status(project, "--plan", "plans/v2.yaml").returncode == 0


GATED = PLAN.replace("""  e2-next:
    dependencies: [e1-tiny]""", """  e2-next:
    requires: [g1]""")


def gated_project(tmp_path: Path, gate_extra: str = "", pivot: bool = False) -> Path:
    plan = GATED
    if pivot:  # a criterion the tiny subs cannot meet: e1 completes with "pivot", the gate fails
        plan = plan.replace("acc: {target: 0.9, acceptable: 0.8, failure: 0.5}", "acc: {target: 0.99, acceptable: 0.98, failure: 0.97}", 1)
    plan = plan.replace('g1: {name: "Gate 1", experiments: [e1-tiny], unlocks: "phase 2"}',
                        'g1: {name: "Gate 1", experiments: [e1-tiny], unlocks: "phase 2"' + gate_extra + "}")
    return write_project(tmp_path / "proj", plan)


def test_trust_a_failed_gate_holds_its_experiment_with_no_compute_spent(tmp_path: Path) -> None:
    project = gated_project(tmp_path, pivot=True)

    done = run(project)

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert not (project / "results/e2-next/d").exists()  # never started
    e2 = load(project / "results/e2-next/results.yaml")
    assert e2["status"] == "held" and e2["held_by"].startswith("held by g1 (failed")
    assert e2["subs"]["d"]["held_by"] == e2["held_by"]
    assert "**Held:** held by g1 (failed" in findings(project, "e2-next")
    assert "⏸️ held" in findings(project)
    shown = status(project)
    assert "HELD e2-next/d: held by g1 (failed" in shown.stdout and "Held: 1" in shown.stdout
    assert nothing_to_do(project)

    ignored = run(project, "--config", "ignore_gates=true")
    assert ignored.returncode == 0, ignored.stdout[-2000:] + ignored.stderr[-2000:]
    e2 = load(project / "results/e2-next/results.yaml")
    assert e2["status"] == "completed" and "this run ignores it (ignore_gates=true)" in e2["gates_ignored"][0]
    assert "**Gate ignored:** g1 is failed" in findings(project, "e2-next")


def test_trust_a_gate_that_passes_during_the_run_lets_its_experiment_run_in_the_same_run(tmp_path: Path) -> None:
    project = gated_project(tmp_path)
    fail_next(project, "b")
    assert run(project).returncode != 0
    assert load(project / "results/e2-next/results.yaml")["status"] == "held"
    heal(project, "b")

    dry = snakemake(project, "-n")
    assert "e2-next runs only if g1 passes, which this run decides" in dry.stderr  # said, not guessed
    assert planned_subs(project) == ["e1-tiny/b"]
    done = run(project)

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert load(project / "results/gates.yaml")["gates"]["g1"]["status"] == "passed"
    assert load(project / "results/e2-next/results.yaml")["status"] == "completed"
    assert nothing_to_do(project)


def test_trust_a_recorded_decision_opens_a_gate_and_a_disagreement_is_flagged(tmp_path: Path) -> None:
    decision = ", decision: {verdict: proceed, by: ada, date: 2026-11-27, note: the floor is too strict}"
    project = gated_project(tmp_path, gate_extra=decision, pivot=True)

    done = run(project)

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert load(project / "results/e2-next/results.yaml")["status"] == "completed"
    gate = load(project / "results/gates.yaml")["gates"]["g1"]
    assert gate["status"] == "passed" and gate["computed_status"] == "failed"
    assert gate["disagreement"].startswith("decided proceed by ada, but the computed status is failed")
    top = findings(project)
    assert "proceed by ada (2026-11-27): the floor is too strict" in top
    assert "the recorded decision disagrees with the results" in top


def test_trust_a_result_or_run_folder_deleted_by_hand_is_rebuilt_not_reported_as_current(project: Path) -> None:
    assert run(project).returncode == 0
    (project / E1 / "a/result.yaml").unlink()
    shutil.rmtree(project / E1 / "c")

    assert planned_subs(project) == ["e1-tiny/a", "e1-tiny/c"]
    shown = status(project)
    assert "ResultMissing" in shown.stdout and "e1-tiny: failed" in shown.stdout
    assert run(project).returncode == 0
    assert nothing_to_do(project)
