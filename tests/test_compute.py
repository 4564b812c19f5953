"""Compute cost: wall time, GPU type and count, GPU-seconds and the estimated price (labrunner.compute),
from the arithmetic to a Modal run's record, results.yaml, FINDINGS and `labrunner status`."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from conftest import EXP, PLAN_FILE, SUB, ProjectFactory, one_sub_plan
from labrunner import compute
from labrunner.aggregate import collect_experiment
from labrunner.backends.modal_backend import InProcessModal, ModalBackend
from labrunner.errors import PlanError
from labrunner.execution import run_sub
from labrunner.findings import render_experiment_findings, render_project_findings
from labrunner.plan import load_plan
from labrunner.records import read_record
from labrunner.summary import status_report

HANDLER = 'def s1(runner):\n    return {"finding": "ok", "metrics": {"acc": 0.9}}\n'


def test_compute_facts_count_gpu_seconds_per_gpu() -> None:
    assert compute.parse_gpu("A100:2") == ("A100", 2) and compute.parse_gpu("T4") == ("T4", 1)
    assert compute.parse_gpu(None) == (None, 0)
    assert compute.compute_facts("A100:2", False, 30.0, {}) == {"wall_s": 30.0, "gpu": "A100", "gpu_count": 2,
                                                               "gpu_s": 60.0}
    assert compute.compute_facts("A100:2", True, 30.0, {})["gpu_s"] == 0.0  # stub runs ask for no GPU
    local_cuda = compute.compute_facts(None, False, 12.5, {"gpu_name": "NVIDIA RTX 4090"})  # not asked for, but used
    assert (local_cuda["gpu"], local_cuda["gpu_count"], local_cuda["gpu_s"]) == ("NVIDIA RTX 4090", 1, 12.5)


def test_compute_estimate_prices_modal_runs_and_the_plans_table_wins() -> None:
    h100 = compute.estimate({"wall_s": 1800.0, "gpu": "H100", "gpu_count": 2, "gpu_s": 3600.0}, "modal", {})
    assert h100["cost_usd"] == pytest.approx(3.9492) and h100["price_per_hour"] == 3.9492
    assert h100["price_source"] == compute.MODAL_PRICES_SOURCE
    t4 = compute.estimate({"wall_s": 90.0, "gpu": "t4", "gpu_count": 1, "gpu_s": 90.0}, "modal", {})
    assert t4["cost_usd"] == pytest.approx(90 / 3600 * 0.5904)  # 0.01476: Modal's $0.000164/s
    # a GPU Modal lists without a price we could cite, and any GPU outside Modal: no estimate
    assert "cost_usd" not in compute.estimate({"gpu": "A100", "gpu_count": 1, "gpu_s": 60.0}, "modal", {})
    assert "cost_usd" not in compute.estimate({"gpu": "H100", "gpu_count": 1, "gpu_s": 60.0}, "local", {})
    # the plan's table prices any backend, names compared without case and across Modal's aliases
    table = {"a10g": 1.2, "H100": 2.0}
    assert compute.estimate({"gpu": "A10", "gpu_count": 1, "gpu_s": 7200.0}, "modal", table)["cost_usd"] == pytest.approx(2.4)
    overridden = compute.estimate({"gpu": "H100", "gpu_count": 1, "gpu_s": 1800.0}, "local", table)
    assert (overridden["cost_usd"], overridden["price_source"]) == (pytest.approx(1.0), "defaults.gpu_price_per_hour")
    assert "cost_usd" not in compute.estimate({"gpu": None, "gpu_count": 0, "gpu_s": 0.0}, "modal", table)


def test_compute_total_keeps_unpriced_gpu_seconds_apart() -> None:
    entries = [{"wall_s": 10.0, "gpu": "H100", "gpu_s": 20.0, "cost_usd": 0.5},
               {"wall_s": 5.0, "gpu": "A100", "gpu_s": 5.0},  # no price
               {"wall_s": 2.5, "gpu": None, "gpu_s": 0.0}]
    summary = compute.total(entries)
    assert summary == {"runs": 3, "wall_s": 17.5, "gpu_s": 25.0, "cost_usd": 0.5,
                       "by_gpu": {"H100": 20.0, "A100": 5.0}, "unpriced_gpu_s": 5.0}
    assert compute.total([entries[1]])["cost_usd"] is None  # nothing priced: no total that looks complete
    assert compute.total([entries[2]]) == {"runs": 1, "wall_s": 2.5, "gpu_s": 0.0, "cost_usd": None}
    both = compute.combine([summary, compute.total([entries[0]])])
    assert both == {"runs": 4, "wall_s": 27.5, "gpu_s": 45.0, "cost_usd": 1.0, "by_gpu": {"H100": 40.0, "A100": 5.0},
                    "unpriced_gpu_s": 5.0}
    assert compute.describe(both) == ("4 runs, 27.5 s wall, 45.0 GPU-s (H100 40.0, A100 5.0), est. $1, "
                                      "5.0 GPU-s without a price (set defaults.gpu_price_per_hour)")
    assert compute.describe(compute.total([entries[2]])) == "1 run, 2.5 s wall, no GPU"


def test_compute_price_table_is_validated_with_file_and_key(make_project: ProjectFactory) -> None:
    plan = one_sub_plan()
    plan["defaults"]["gpu_price_per_hour"] = {"H100": -2.0}
    root = make_project(plan, {f"handlers/{EXP}/{SUB}.py": HANDLER})

    with pytest.raises(PlanError, match=r"defaults\.gpu_price_per_hour\.H100: expected greater than or equal to 0"):
        load_plan(root / PLAN_FILE)


def test_compute_a_modal_run_is_priced_in_results_findings_and_status(make_project: ProjectFactory, tmp_path: Path) -> None:
    root = make_project(one_sub_plan(backend="modal", gpu="H100:2"), {f"handlers/{EXP}/{SUB}.py": HANDLER})
    plan = load_plan(root / PLAN_FILE)

    outcome = run_sub(plan, plan.sub(EXP, SUB), backend=ModalBackend(InProcessModal(tmp_path / "volume")),
                      console=io.StringIO())

    facts = read_record(outcome.paths.result)["compute"]
    assert (facts["gpu"], facts["gpu_count"]) == ("H100", 2)
    assert 0 < facts["wall_s"] <= read_record(outcome.paths.result)["duration_s"]
    assert facts["gpu_s"] == pytest.approx(2 * facts["wall_s"], abs=0.002)
    results = collect_experiment(plan, EXP)
    assert results["subs"][SUB]["compute"]["cost_usd"] == pytest.approx(facts["gpu_s"] / 3600 * 3.9492, abs=1e-6)
    assert results["compute"]["cost_usd"] == results["subs"][SUB]["compute"]["cost_usd"]
    findings = render_experiment_findings(results, Path("research/experiments/e1/FINDINGS.md"), root, "r.yaml").blocks
    assert f"**Compute:** 1 run, {facts['wall_s']:.1f} s wall, {facts['gpu_s']:.1f} GPU-s on H100, est. $" in findings["status"]
    assert f"| {facts['gpu_s']:.1f} GPU-s on 2× H100, est. $" in findings["appendix"]
    project = render_project_findings({"name": "p"}, {EXP: results}, {}, {EXP: "e1/FINDINGS.md"},
                                      Path("research/FINDINGS.md"), root, False, "now").blocks
    assert f"**Compute in total:** 1 run, {facts['wall_s']:.1f} s wall, {facts['gpu_s']:.1f} GPU-s on H100, est. $" in project["status"]
    text, _ = status_report(plan)
    assert f"Compute: 1 run, {facts['wall_s']:.1f} s wall, {facts['gpu_s']:.1f} GPU-s on H100, est. $" in text
