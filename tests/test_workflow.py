"""Workflow tests: real Snakemake runs of tiny plans in a temporary project (see workflow_support)."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

import pytest

from workflow_support import (
    BIN, PLAN, edit, fail_next, heal, load, outside_markers, planned_subs, run, snakemake, snapshot, write_project,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "proj")


def test_workflow_dry_run_lists_one_job_per_sub_with_reason(project: Path) -> None:
    done = snakemake(project, "-n")
    assert done.returncode == 0, done.stderr
    assert planned_subs(project) == ["e1-tiny/a", "e1-tiny/b", "e1-tiny/c", "e2-next/d"]
    assert "reason: Missing output files: results/e1-tiny/a/result.yaml" in done.stdout


def test_workflow_lint_is_clean(project: Path) -> None:
    done = snakemake(project, "--lint")
    assert "Congratulations" in done.stdout + done.stderr, done.stdout + done.stderr


def test_workflow_full_run_builds_every_file_then_has_nothing_to_do(project: Path) -> None:
    done = run(project)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for sub in ("a", "b", "c"):
        run_dir = project / "results" / "e1-tiny" / sub
        for name in ("result.yaml", "failure.yaml", "metrics.jsonl", "run.log", "artifacts/note.txt"):
            assert (run_dir / name).is_file(), name
    for name in ("results.yaml", "metrics.md", "metrics.csv", "criteria.png"):
        assert (project / "results" / "e1-tiny" / name).is_file(), name
    assert (project / "results" / "gates.yaml").is_file()
    assert (project / "research" / "experiments" / "e1-tiny" / "FINDINGS.md").is_file()
    findings = (project / "research" / "FINDINGS.md").read_text()
    assert "| Experiment | Type | Phase | Status |" in findings and "Gate 1" in findings
    assert "Completed: 4  Failed: 0  Pending: 0  Held: 0  Skipped: 0" in done.stdout + done.stderr
    again = snakemake(project, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout


def test_workflow_failed_sub_is_reported_and_others_complete(project: Path) -> None:
    fail_next(project, "b", "first")
    done = run(project)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert (project / "results" / "e1-tiny" / "a" / "result.yaml").exists()
    assert (project / "results" / "e1-tiny" / "c" / "result.yaml").exists()
    assert not (project / "results" / "e1-tiny" / "b" / "result.yaml").exists()
    assert "FAILED e1-tiny/b" in output
    assert "RuntimeError: flaky failure of b: first" in output
    assert "handlers/e1-tiny/b.py:10 in b" in output
    # e2 depends on e1, which did not complete: it waits
    assert not (project / "results" / "e2-next" / "d" / "result.yaml").exists()
    failure = load(project / "results" / "e1-tiny" / "b" / "failure.yaml")
    assert failure["status"] == "failed" and failure["metrics_logged"]["count"] == 1

    status = subprocess.run([str(BIN / "labrunner"), "status"], cwd=project, capture_output=True, text=True)
    assert status.returncode == 1
    assert re.search(r"e1-tiny\s+b\s+failed", status.stdout)
    assert re.search(r"e1-tiny\s+a\s+completed\s+\S+\s+acc=0.85, loss=0.3\s+acc: acceptable; loss: misses acceptable",
                     status.stdout), status.stdout
    assert "Completed: 2  Failed: 1  Pending: 0  Held: 1  Skipped: 0" in status.stdout
    assert "HELD e2-next/d: waits for e1-tiny (failed" in status.stdout
    assert "handlers/e1-tiny/b.py:10" in status.stdout and "details: results/e1-tiny/b/failure.yaml" in status.stdout
    # the rerun hint repeats the last run's command line (run() typed `snakemake --cores 2`), target first
    assert "Rerun what failed or is missing (nothing else reruns): snakemake research/FINDINGS.md --cores 2" in status.stdout
    assert "labrunner run e1-tiny b" in status.stdout


def test_workflow_transient_failure_reruns_exactly_that_sub(project: Path) -> None:
    assert run(project).returncode == 0
    # an edit to b's handler while b is flaky: b alone reruns and fails, leaving the earlier
    # results.yaml and FINDINGS.md in place
    fail_next(project, "b")
    edit(project / "handlers" / "e1-tiny" / "b.py")
    assert run(project).returncode != 0
    assert (project / "results" / "e1-tiny" / "results.yaml").exists()
    assert (project / "research" / "FINDINGS.md").exists()
    heal(project, "b")  # nothing Snakemake can see has changed
    assert planned_subs(project) == ["e1-tiny/b"]
    done = run(project)
    assert done.returncode == 0, done.stdout[-2000:]
    assert planned_subs(project) == []
    results = load(project / "results" / "e1-tiny" / "results.yaml")
    assert results["subs"]["b"]["status"] == "completed"
    assert results["subs"]["b"]["last_failure"]["type"] == "RuntimeError"


def test_workflow_reruns_only_what_changed(project: Path) -> None:
    assert run(project).returncode == 0
    plan = project / "research" / "research_plan.yaml"
    plan.write_text(plan.read_text().replace("a: {params: {acc: 0.85, loss: 0.3}}", "a: {params: {acc: 0.86, loss: 0.3}}"))
    assert planned_subs(project) == ["e1-tiny/a"]
    assert run(project).returncode == 0
    (project / "handlers" / "other.py").write_text("def unused():\n    return 2\n")
    assert planned_subs(project) == ["e1-tiny/c"]
    assert run(project).returncode == 0
    handler = project / "handlers" / "e1-tiny" / "b.py"
    handler.write_text(handler.read_text() + "\n# fixed\n")
    assert planned_subs(project) == ["e1-tiny/b"]
    before = (project / "results" / "e1-tiny" / "results.yaml").stat().st_mtime_ns
    assert run(project).returncode == 0
    assert (project / "results" / "e1-tiny" / "results.yaml").stat().st_mtime_ns > before
    assert planned_subs(project) == []


def test_workflow_findings_text_outside_markers_survives(project: Path) -> None:
    assert run(project).returncode == 0
    paths = [project / "research" / "FINDINGS.md", project / "research" / "experiments" / "e1-tiny" / "FINDINGS.md"]
    mine = "\nMy own analysis: b wins, *clearly*.\r\n\n  indented   text with trailing spaces   \n"
    for path in paths:
        text = path.read_text()
        text = text.replace("## Summary\n", "## Summary\n" + mine, 1)
        text = text.replace("<!-- labrunner:begin status -->", "before the block" + mine + "<!-- labrunner:begin status -->", 1)
        path.write_bytes(text.encode())
    outside_before = [outside_markers(path.read_bytes()) for path in paths]
    edit(project / "handlers" / "e1-tiny" / "a.py")
    assert run(project).returncode == 0
    outside_after = [outside_markers(path.read_bytes()) for path in paths]
    assert outside_after == outside_before
    assert mine.encode() in paths[0].read_bytes()



def test_workflow_verdicts_in_results_and_findings(tmp_path: Path) -> None:
    plan = PLAN.replace("""      acc: {target: 0.9, acceptable: 0.8, failure: 0.5}
      loss: {target: 0.1, acceptable: 0.2, failure: 0.4, direction: lower}""", """      acc: {target: 0.9, acceptable: 0.8, failure: 0.5}
      loss: {target: 0.1, acceptable: 0.2, failure: 0.4, direction: lower, from: a}
      edge: {target: 0.9, acceptable: 0.8, from: c}
      broken: {target: 1.0, acceptable: 0.5, from: b}
      missing: {target: 1.0, acceptable: 0.5}""")
    root = write_project(tmp_path / "proj", plan)
    for name, extra in (("a", ""), ("b", ', "broken": float("nan")'), ("c", ', "edge": 0.81')):
        handler = root / "handlers" / "e1-tiny" / f"{name}.py"
        handler.write_text(handler.read_text().replace(
            '"loss": runner.params.get("loss", 0.0)}', '"loss": runner.params.get("loss", 0.0)' + extra + "}"))
    assert run(root).returncode == 0
    verdicts = load(root / "results" / "e1-tiny" / "results.yaml")["verdicts"]
    assert verdicts["acc"]["level"] == "target met" and verdicts["acc"]["source_sub"] == "b"
    assert verdicts["loss"]["level"] == "misses acceptable"  # 0.3: past acceptable 0.2, short of failure 0.4
    assert verdicts["edge"]["level"] == "acceptable" and verdicts["edge"]["borderline"] is True
    assert verdicts["broken"]["level"] == "invalid" and math.isnan(verdicts["broken"]["value"])
    assert verdicts["missing"]["level"] == "not measured"
    findings = (root / "research" / "experiments" / "e1-tiny" / "FINDINGS.md").read_text()
    assert "| acc | [0.95](../../../results/e1-tiny/b/result.yaml) (best of 3: b) | ≥ 0.9 | ≥ 0.8 | ≤ 0.5 | ✅ target met |" in findings
    assert "⛔ invalid" in findings and "❔ not measured" in findings and "(borderline)" in findings
    assert "recommendation" in load(root / "results" / "e1-tiny" / "results.yaml")["assessment"]


def test_workflow_stub_run_leaves_real_tree_untouched(project: Path) -> None:
    assert run(project).returncode == 0
    before = snapshot(project / "results") | snapshot(project / "research")
    done = run(project, "--config", "stub=true")
    assert done.returncode == 0, done.stdout[-2000:]
    assert (project / "stub" / "results" / "e1-tiny" / "a" / "result.yaml").exists()
    assert (project / "stub" / "research" / "FINDINGS.md").exists()
    assert "STUB RUN" in (project / "stub" / "research" / "FINDINGS.md").read_text()
    assert snapshot(project / "results") | snapshot(project / "research") == before
    assert load(project / "stub" / "results" / "e1-tiny" / "a" / "result.yaml")["stub"] is True
    assert planned_subs(project) == []



def test_workflow_bad_config_key_is_an_error_before_any_job(project: Path) -> None:
    done = snakemake(project, "-n", "--config", "stubb=true")
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "--config: stubb: unknown key; did you mean 'stub'?" in output
    assert not (project / "results").exists()
