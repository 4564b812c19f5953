"""Workflow tests for sweeps and comparisons: real Snakemake runs of a tiny plan (see workflow_support)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from workflow_support import edit, fail_next, load, planned_subs, run, snakemake, write_project

pytestmark = pytest.mark.slow

PLAN = """\
project: {name: Tiny sweep}
wandb: {mode: disabled}
defaults: {timeout_min: 2}
experiments:
  e1-tiny:
    success_criteria:
      acc: {target: 0.9, acceptable: 0.8, failure: 0.5, range: [0, 1]}
      gain: {compare: {treatment: b, baseline: a}, metric: acc, paired_by: seed, target: 0.1, acceptable: 0.05, failure: 0.0}
    sub_experiments:
      a: {params: {acc: 0.8, loss: 0.3}, seeds: [0, 1]}
      b: {params: {acc: 0.9, loss: 0.05}, seeds: [0, 1]}
      c: {params: {loss: 0.5}, grid: {acc: [0.6, 0.7]}}
  e2-next:
    success_criteria:
      acc: {target: 0.9, acceptable: 0.8}
    sub_experiments: [d]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = write_project(tmp_path / "proj", PLAN)
    for name in ("a", "b"):  # each seed a little different, so intervals have a width
        handler = root / "handlers" / "e1-tiny" / f"{name}.py"
        handler.write_text(handler.read_text().replace('acc = scale(runner.params["acc"])',
                                                       'acc = scale(runner.params["acc"]) + 0.01 * runner.seed * (2 if "'
                                                       + name + '" == "b" else 1)'))
    return root


def test_workflow_sweep_runs_one_job_per_combination_and_adding_a_value_runs_only_it(project: Path) -> None:
    assert planned_subs(project) == ["e1-tiny/a/seed-0", "e1-tiny/a/seed-1", "e1-tiny/b/seed-0", "e1-tiny/b/seed-1",
                                     "e1-tiny/c.acc-0.6", "e1-tiny/c.acc-0.7", "e2-next/d"]
    done = run(project)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results_dir = project / "results" / "e1-tiny"
    kept = {name: (results_dir / name / "result.yaml").stat().st_mtime_ns for name in ("c.acc-0.6", "c.acc-0.7")}
    assert load(results_dir / "c.acc-0.7" / "result.yaml")["metrics"]["acc"] == 0.7

    plan = project / "research" / "research_plan.yaml"
    plan.write_text(plan.read_text().replace("grid: {acc: [0.6, 0.7]}", "grid: {acc: [0.6, 0.7, 0.75]}"))
    assert planned_subs(project) == ["e1-tiny/c.acc-0.75"]
    done = run(project)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert {name: (results_dir / name / "result.yaml").stat().st_mtime_ns for name in kept} == kept
    assert planned_subs(project) == []
    sweep = load(results_dir / "results.yaml")["sweeps"]["c"]
    assert [combo["sub"] for combo in sweep["combinations"]] == ["c.acc-0.6", "c.acc-0.7", "c.acc-0.75"]
    assert sweep["best"]["acc"]["sub"] == "c.acc-0.75" and sweep["plot"] == "results/e1-tiny/sweeps/c.png"
    assert (results_dir / "sweeps" / "c.png").read_bytes()[:4] == b"\x89PNG"

    # reordering the values renames nothing, so nothing reruns
    plan.write_text(plan.read_text().replace("grid: {acc: [0.6, 0.7, 0.75]}", "grid: {acc: [0.75, 0.6, 0.7]}"))
    assert planned_subs(project) == []


def test_workflow_comparison_and_sweep_in_results_and_findings(project: Path) -> None:
    done = run(project)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = load(project / "results" / "e1-tiny" / "results.yaml")
    gain = results["verdicts"]["gain"]
    assert gain["value"] == pytest.approx(0.105) and gain["comparison"]["method"] == "paired t"
    assert [row["seed"] for row in gain["comparison"]["rows"]] == [0, 1]
    acc = results["verdicts"]["acc"]
    assert acc["source_sub"] == "b" and acc["candidates"] == ["a", "b", "c.acc-0.6", "c.acc-0.7"]
    findings = (project / "research" / "experiments" / "e1-tiny" / "FINDINGS.md").read_text()
    assert "| gain (acc: b − a) | +0.105 (paired, 2 seeds) |" in findings
    assert "### Comparison: gain" in findings
    assert "| 1 | [0.92](../../../results/e1-tiny/b/seed-1/result.yaml) | [0.81](../../../results/e1-tiny/a/seed-1/result.yaml) | +0.11 |" in findings
    assert "### Sweep: c (acc)" in findings and "- Best acc: acc=0.7 (`c.acc-0.7`)" in findings
    assert "acc of 0.91 (best of 4: b, mean of 2 seeds" in findings
    assert "![sweep c](../../../results/e1-tiny/sweeps/c.png)" in findings
    assert "below" not in findings.split("<!-- labrunner:begin key-metrics -->")[1].split("<!-- labrunner:end")[0]


def test_workflow_lint_is_clean_with_a_sweep(project: Path) -> None:
    done = snakemake(project, "--lint")
    assert "Congratulations" in done.stdout + done.stderr, done.stdout + done.stderr


def report_results(path: Path) -> dict[str, str]:
    """The files Snakemake's report embeds, each with its category, read from the page's data."""
    text = path.read_text()
    return dict(re.findall(r'"(results/[^"]+)": \{"name": "[^"]*", "filename": "[^"]*", "labels": [^}]*?"category": "([^"]*)"',
                           text))


def test_workflow_report_builds_with_findings_plots_curves_and_artifacts(project: Path) -> None:
    done = run(project)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    built = snakemake(project, "--report", "report.html", "research/FINDINGS.md")

    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    text = (project / "report.html").read_text()
    for category in ("Findings", "Metric tables", "Criteria and comparisons", "Sweeps", "Learning curves", "Artifacts"):
        assert f'"{category}"' in text, category
    for embedded in ("results/findings.html", "results/e1-tiny/findings.html", "results/e1-tiny/metrics.csv",
                     "results/e1-tiny/criteria.png", "results/e1-tiny/sweeps/c.png", "results/e1-tiny/curves/a.png",
                     "results/e1-tiny/curves/c.acc-0.6.png", "results/e1-tiny/report/a__seed-1__note.txt",
                     "results/e1-tiny/report/c.acc-0.7__note.txt", "results/e2-next/findings.html"):
        assert f'"{embedded}": {{' in text, embedded
    page = (project / "results" / "e1-tiny" / "findings.html").read_text()
    assert "Comparison: gain" in page and "Sweep: c (acc)" in page and "Learning curves" in page
    assert 'src="data:image/png;base64,' in page and 'src="../' not in page  # self-contained
    assert "Learning curves" in (project / "research" / "experiments" / "e1-tiny" / "FINDINGS.md").read_text()
    assert planned_subs(project) == []  # the report changed nothing Snakemake looks at

    fail_next(project, "b", "broken for the report")
    edit(project / "handlers" / "e1-tiny" / "b.py")
    assert run(project).returncode != 0
    built = snakemake(project, "--report", "report.html", "research/FINDINGS.md")
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]  # the write-up of a failed run
    assert "broken for the report" in (project / "results" / "e1-tiny" / "findings.html").read_text()
