"""Comparisons, sweeps and selections from records on disk: results.yaml, FINDINGS blocks and plots."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib
import pytest
from scipy import stats as scipy_stats

from conftest import PLAN_FILE, ProjectFactory, result_record
from labrunner.aggregate import collect_experiment, draw_comparison, write_experiment_outputs
from labrunner.findings import render_experiment_findings
from labrunner.layout import RunPaths
from labrunner.plan import Plan, load_plan
from labrunner.records import write_result
from labrunner.sweeps import sweep_figure

matplotlib.use("Agg")

PLAN = """\
project: {name: Rigour}
experiments:
  e1:
    success_criteria:
      acc: {target: 0.9, acceptable: 0.8, failure: 0.5, range: [0, 1]}
      gain: {compare: {treatment: mlp, baseline: linear}, metric: acc, paired_by: seed, target: 0.05, acceptable: 0.02, failure: 0.0}
      gain_welch: {compare: {treatment: mlp, baseline: linear}, metric: acc, target: 0.05, acceptable: 0.02, failure: 0.0}
      loss: {target: 0.1, acceptable: 0.2, direction: lower, from: sweep}
    sub_experiments:
      linear: {seeds: [0, 1, 2]}
      mlp: {seeds: [0, 1, 2]}
      sweep: {grid: {lr: [0.1, 0.01], hidden: [8, 16, 32]}, seeds: [0, 1]}
"""
HANDLERS = {f"handlers/e1/{sub}.py": f"def {sub}(runner):\n    pass\n" for sub in ("linear", "mlp", "sweep")}
LINEAR = {0: 0.85, 1: 0.88, 2: 0.86}
MLP = {0: 0.89, 1: 0.915, 2: 0.905}


def sweep_acc(lr: float, hidden: int, seed: int) -> float:
    return 0.715 + hidden / 200 + (0.05 if lr == 0.01 else 0.0) + 0.01 * seed


@pytest.fixture
def plan(make_project: ProjectFactory) -> Plan:
    plan = load_plan(make_project(PLAN, HANDLERS) / PLAN_FILE)
    for sub, values in (("linear", LINEAR), ("mlp", MLP)):
        for seed, acc in values.items():
            write(plan, f"{sub}/seed-{seed}", sub, seed, {"acc": acc})
    for spec in plan.sweeps("e1")["sweep"]:
        for seed in spec.seeds:
            lr, hidden = spec.swept["lr"], spec.swept["hidden"]
            write(plan, f"{spec.sub_id}/seed-{seed}", spec.sub_id, seed,
                  {"acc": sweep_acc(lr, hidden, seed), "loss": 1.0 - sweep_acc(lr, hidden, seed)})
    return plan


def write(plan: Plan, run: str, sub: str, seed: int, metrics: dict[str, Any]) -> None:
    write_result(RunPaths(plan.root / "results" / "e1" / run), result_record(plan, "e1", sub, metrics, seed), None)


def test_aggregate_comparison_verdicts_paired_and_welch(plan: Plan) -> None:
    results = collect_experiment(plan, "e1")
    paired, welch = results["verdicts"]["gain"], results["verdicts"]["gain_welch"]
    expected = scipy_stats.ttest_rel(list(MLP.values()), list(LINEAR.values())).confidence_interval(0.95)
    assert paired["ci95"] == pytest.approx([expected.low, expected.high], rel=1e-9)
    assert paired["value"] == pytest.approx(statistics.fmean(MLP[s] - LINEAR[s] for s in MLP))
    assert [row["difference"] for row in paired["comparison"]["rows"]] == pytest.approx([0.04, 0.035, 0.045])
    assert paired["confidence"] == "high" and paired["level"] == "acceptable"
    expected = scipy_stats.ttest_ind(list(MLP.values()), list(LINEAR.values()), equal_var=False).confidence_interval(0.95)
    assert welch["ci95"] == pytest.approx([expected.low, expected.high], rel=1e-9)
    assert welch["comparison"]["method"] == "Welch t" and welch["confidence"] == "low"
    assert results["criteria"]["gain"]["compare"] == {"treatment": "mlp", "baseline": "linear"}


def test_aggregate_selection_over_every_sub_and_from_a_sweep(plan: Plan) -> None:
    results = collect_experiment(plan, "e1")
    acc = results["verdicts"]["acc"]
    assert acc["source_sub"] == "sweep.hidden-32.lr-0.01"
    assert len(acc["candidates"]) == 8  # linear, mlp and six combinations
    values = [sweep_acc(0.01, 32, seed) for seed in (0, 1)]
    widened = scipy_stats.t.interval(1 - 0.05 / 8, 1, loc=statistics.fmean(values), scale=scipy_stats.sem(values))
    assert acc["ci95"] == pytest.approx([max(widened[0], 0.0), min(widened[1], 1.0)])
    assert any("clipped to [0, 1]" in note for note in acc["notes"])
    loss = results["verdicts"]["loss"]  # from: sweep, the best of its six combinations only
    assert loss["source_sub"] == "sweep.hidden-32.lr-0.01" and len(loss["candidates"]) == 6


def test_aggregate_sweep_table_names_the_best_combination_as_a_selection(plan: Plan) -> None:
    sweep = collect_experiment(plan, "e1")["sweeps"]["sweep"]
    assert sweep["params"] == ["lr", "hidden"] and sweep["metrics"] == ["acc", "loss"]
    assert len(sweep["combinations"]) == 6
    first = sweep["combinations"][0]
    assert first == {"sub": "sweep.hidden-8.lr-0.1", "params": {"lr": 0.1, "hidden": 8}, "status": "completed",
                     "n_seeds": 2, "metrics": pytest.approx({"acc": 0.76, "loss": 0.24})}
    best = sweep["best"]["acc"]
    assert best["sub"] == "sweep.hidden-32.lr-0.01" and best["params"] == {"lr": 0.01, "hidden": 32}
    assert len(best["candidates"]) == 6
    assert "best of 6: sweep.hidden-32.lr-0.01" in best["sentence"] and "widened for the best-of-6" in best["sentence"]
    assert sweep["best"]["loss"]["sub"] == "sweep.hidden-32.lr-0.01"  # lower is better


def test_findings_show_comparison_per_seed_table_and_sweep_table(plan: Plan) -> None:
    results = collect_experiment(plan, "e1")
    findings = Path("research/experiments/e1/FINDINGS.md")
    blocks = render_experiment_findings(results, findings, plan.root, "results/e1/results.yaml").blocks
    key = blocks["key-metrics"]
    assert "| gain (acc: mlp − linear) | +0.04 (paired, 3 seeds) | ≥ 0.05 | ≥ 0.02 | ≤ 0 | ☑️ acceptable |" in key
    # every value read from records links to them: one seed's to its result.yaml, a mean to the sub's folder
    assert "| acc | [0.93](../../../results/e1/sweep.hidden-32.lr-0.01) (best of 8: sweep.hidden-32.lr-0.01, 2 seeds) |" in key
    assert "### Comparison: gain\n\nacc, mlp minus linear: paired t interval, 2 df." in key
    assert "| 1 | [0.915](../../../results/e1/mlp/seed-1/result.yaml) | [0.88](../../../results/e1/linear/seed-1/result.yaml) | +0.035 |" in key
    assert "| **Mean** | 0.9033 | 0.8633 | **+0.04** (95% CI " in key
    assert "### Comparison: gain_welch" in key and "Welch t interval" in key and "| 0 | [0.89](../../../results/e1/mlp/seed-0/result.yaml) | [0.85](../../../results/e1/linear/seed-0/result.yaml) | — |" in key
    assert "### Sweep: sweep (lr, hidden)\n\n| lr | hidden | Sub | Status | Seeds | acc | loss |" in key
    combination = "../../../results/e1/sweep.hidden-32.lr-0.01"
    assert f"| 0.01 | 32 | sweep.hidden-32.lr-0.01 | completed | 2 | **[0.93]({combination})** | **[0.07]({combination})** |" in key
    assert "- Best acc: lr=0.01, hidden=32 (`sweep.hidden-32.lr-0.01`): acc of 0.93 (best of 6:" in key
    assert "![sweep sweep](../../../results/e1/sweeps/sweep.png)" in blocks["plots"]
    assert "widened for the best of 8" in blocks["confidence"]


def test_sweep_plot_has_one_series_per_combination_of_the_other_parameters(plan: Plan) -> None:
    results = collect_experiment(plan, "e1")
    figure = sweep_figure("sweep", results["sweeps"]["sweep"], results["subs"], results["criteria"])
    axes = figure.get_axes()
    assert len(axes) == 4  # metrics acc, loss x parameters lr, hidden

    def series(axis: Any) -> list[str]:
        return [line.get_label() for line in axis.get_lines() if line.get_gid() == "series"]

    assert series(axes[0]) == ["hidden=8", "hidden=16", "hidden=32"]  # acc against lr
    assert series(axes[1]) == ["lr=0.1", "lr=0.01"]  # acc against hidden
    assert [len(line.get_xdata()) for line in axes[1].get_lines() if line.get_gid() == "series"] == [3, 3]
    thresholds = [line.get_label() for line in axes[0].get_lines() if line.get_gid() != "series"]
    assert thresholds == ["target 0.9", "acceptable 0.8", "failure 0.5"]


def test_aggregate_writes_valid_pngs_for_criteria_with_comparisons_and_for_each_sweep(plan: Plan) -> None:
    out = plan.root / "results" / "e1"
    results = write_experiment_outputs(plan, "e1", False, out / "results.yaml", out / "metrics.md", out / "metrics.csv",
                                       out / "criteria.png", sweeps_dir=out / "sweeps")
    for path in (out / "criteria.png", out / "sweeps" / "sweep.png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
        assert matplotlib.image.imread(path).shape[0] > 100
    assert results["sweeps"]["sweep"]["plot"] == "results/e1/sweeps/sweep.png"
    assert sorted(p.name for p in (out / "sweeps").iterdir()) == ["sweep.png"]


def test_comparison_panel_draws_each_seed_and_the_interval() -> None:
    from matplotlib.figure import Figure

    crit = {"compare": {"treatment": "mlp", "baseline": "linear"}, "metric": "acc", "direction": "higher",
            "target": 0.05, "acceptable": 0.02, "failure": 0.0}
    rows = [{"seed": s, "treatment": MLP[s], "baseline": LINEAR[s], "difference": MLP[s] - LINEAR[s]} for s in MLP]
    verdict = {"value": 0.04, "ci95": [0.0276, 0.0524], "comparison": {"method": "paired t", "rows": rows,
                                                                       "baseline_mean": 0.8633}}
    axis = Figure().subplots()
    draw_comparison(axis, "gain", crit, verdict)
    assert [len(c.get_offsets()) for c in axis.collections if c.get_label() == "per seed"] == [3]
    assert len(axis.containers) == 1  # the mean with its interval
    assert [line.get_label() for line in axis.get_lines() if line.get_label().startswith(("target", "accept", "fail"))] \
        == ["target 0.05", "acceptable 0.02", "failure 0"]
    welch = Figure().subplots()
    draw_comparison(welch, "gain", crit, {**verdict, "comparison": {**verdict["comparison"], "method": "Welch t"}})
    assert [len(c.get_offsets()) for c in welch.collections if "seeds" in c.get_label()] == [3, 3]  # each side
