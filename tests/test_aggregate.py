"""Aggregation from the records on disk: partial states, tables, gates, the status report."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import ProjectFactory, result_record
from labrunner.aggregate import collect_experiment, collect_gates, metrics_markdown
from labrunner.layout import RunPaths
from labrunner.locks import RunLock
from labrunner.plan import Plan, load_plan
from labrunner.records import mark_running, write_failure, write_result
from labrunner.summary import status_report

PLAN = """\
project: {name: Agg}
experiments:
  e1:
    success_criteria:
      acc: {target: 0.9, acceptable: 0.8, failure: 0.5}
    sub_experiments:
      ok: {}
      multi: {seeds: [0, 1]}
      broken: {}
      waiting: {}
      busy: {}
      later: {skip: "not yet"}
  e2:
    success_criteria:
      acc: {target: 0.9, acceptable: 0.8}
    sub_experiments: [solo]
gates:
  g1: {experiments: [e1]}
  g2: {experiments: [e2]}
"""
HANDLERS = {f"handlers/{exp}/{sub}.py": f"def {sub}(runner):\n    pass\n"
            for exp, subs in (("e1", ("ok", "multi", "broken", "waiting", "busy")), ("e2", ("solo",))) for sub in subs}


@pytest.fixture
def plan(make_project: ProjectFactory) -> Plan:
    return load_plan(make_project(PLAN, HANDLERS) / "research" / "research_plan.yaml")


def paths(plan: Plan, exp: str, run: str) -> RunPaths:
    return RunPaths(plan.root / "results" / exp / run)


def result(plan: Plan, exp: str, run: str, metrics: dict[str, Any], seed: int = 0, **fields: Any) -> None:
    write_result(paths(plan, exp, run), result_record(plan, exp, run.split("/")[0], metrics, seed, **fields), None)


def test_aggregate_partial_states_are_each_reported(plan: Plan) -> None:
    result(plan, "e1", "ok", {"acc": 0.85, "loss": 0.3})
    result(plan, "e1", "multi/seed-0", {"acc": 0.92})
    write_failure(paths(plan, "e1", "broken"), {"run_id": "x", "error": {"type": "KeyError", "message": "'probs'",
                                                                          "hint": "print its keys"}}, None)
    mark_running(paths(plan, "e1", "busy"), "y", "2026-01-01T00:00:00+00:00", 1, "local")
    lock = RunLock(paths(plan, "e1", "busy").lock, "e1/busy")
    lock.acquire("2026-01-01T00:00:00+00:00")

    results = collect_experiment(plan, "e1")
    lock.release()  # the attempt ends without a record: now it reads as lost
    after = collect_experiment(plan, "e1")

    statuses = {sub: data["status"] for sub, data in results["subs"].items()}
    assert statuses == {"ok": "completed", "multi": "pending", "broken": "failed", "waiting": "pending",
                        "busy": "running", "later": "skipped"}
    assert after["subs"]["busy"]["status"] == "interrupted" and after["subs"]["busy"]["error"]["type"] == "Lost"
    assert results["status"] == "failed"
    assert results["assessment"]["recommendation"] is None  # not until every sub completes
    assert results["subs"]["broken"]["error"]["type"] == "KeyError"
    assert results["verdicts"]["acc"]["source_sub"] == "multi"  # best so far, from the completed seed


def test_aggregate_completed_experiment_gets_a_recommendation_and_its_gate(plan: Plan) -> None:
    result(plan, "e2", "solo", {"acc": 0.95})
    e2 = collect_experiment(plan, "e2")
    assert e2["status"] == "completed" and e2["assessment"]["recommendation"] == "proceed"

    gates = collect_gates(plan, {"e2": e2})
    assert gates["g2"]["status"] == "passed" and gates["g2"]["blockers"] == []
    assert gates["g1"]["status"] == "pending" and gates["g1"]["blockers"] == ["e1: not run yet"]


def test_aggregate_table_tells_a_nan_from_a_metric_not_reported(plan: Plan) -> None:
    result(plan, "e1", "ok", {"acc": float("nan"), "loss": 0.3})
    result(plan, "e1", "multi/seed-0", {"acc": 0.92}, seed=0)
    result(plan, "e1", "multi/seed-1", {"acc": 0.94}, seed=1)

    table = metrics_markdown(collect_experiment(plan, "e1"))

    rows = {tuple(cell.strip() for cell in line.split("|")[1:3]): line for line in table.splitlines()}
    assert "nan" in rows[("ok", "0")] and "0.3" in rows[("ok", "0")]
    assert "nan" not in rows[("multi", "1")]  # multi reported no loss: a blank, not a NaN
    assert "## Mean ± sd over seeds" in table and "0.93 ± " in table


def test_aggregate_status_report_lists_failures_with_hint_and_rerun_command(plan: Plan) -> None:
    result(plan, "e1", "ok", {"acc": 0.85})
    write_failure(paths(plan, "e1", "broken"), {"run_id": "x", "error": {
        "type": "KeyError", "message": "'probs'", "hint": "print its keys",
        "handler_line": {"file": "handlers/e1/broken.py", "line": 2, "function": "broken", "code": "x['probs']"}}}, None)

    text, failed = status_report(plan)

    assert failed
    assert "Completed: 1  Failed: 1  Pending: 4  Held: 0  Skipped: 1" in text
    assert "FAILED e1/broken" in text and "KeyError: 'probs'" in text
    assert "at:    handlers/e1/broken.py:2 in broken: x['probs']" in text and "hint:  print its keys" in text
    assert "snakemake research/FINDINGS.md" in text and "labrunner run e1 broken" in text


def test_aggregate_criteria_plot_is_drawn_again_only_when_what_it_shows_changes(
        plan: Plan, monkeypatch: pytest.MonkeyPatch) -> None:
    from labrunner import aggregate

    result(plan, "e2", "solo", {"acc": 0.95})
    results = collect_experiment(plan, "e2")
    png = plan.root / "results" / "e2" / "criteria.png"
    drawn: list[str] = []
    draw = aggregate.plot_criteria
    monkeypatch.setattr(aggregate, "plot_criteria", lambda data, path: (drawn.append(path.name), draw(data, path)))

    aggregate.write_criteria_plot(results, png)
    first = png.read_bytes()
    png.unlink()  # Snakemake deletes an output before its job runs
    aggregate.write_criteria_plot({**results, "generated_at": "later"}, png)  # a plan comment: the same picture
    assert png.read_bytes() == first and len(drawn) == 1
    aggregate.plot_criteria(results, png.with_name("fresh.png"))  # the cached drawing is what drawing gives
    assert png.with_name("fresh.png").read_bytes() == first

    result(plan, "e2", "solo", {"acc": 0.5})
    aggregate.write_criteria_plot(collect_experiment(plan, "e2"), png)
    assert png.read_bytes() != first and len(drawn) == 3
    assert len(list((png.parent / aggregate.CRITERIA_CACHE_DIR).iterdir())) == 1  # the old drawing pruned


TRICKY_METRICS = [  # per sub: what it reported; the tables must read as pandas writes them
    {"acc": 1, "loss": 0.1 + 0.2, "flag": True, "note": "a, \"quoted\" note", "big": 1e16},
    {"acc": 0.5, "loss": float("nan"), "flag": False, "tiny": 1e-05, "big": 123456789012345678},
    {"acc": 2, "flag": None, "note": 3, "count": 7, "neg": -0.0},
    {"loss": float("inf"), "count": 8, "huge": 1.7976931348623157e308, "sub_normal": 5e-324},
]


@pytest.mark.parametrize("seeds", [1, 2])
def test_aggregate_tables_without_pandas_read_as_pandas_writes_them(seeds: int) -> None:
    from labrunner import aggregate

    runs = [{"seed": seed, "status": "completed", "metrics": metrics} for metrics in TRICKY_METRICS for seed in range(seeds)]
    subs: dict[str, Any] = {f"s{index}": ({"status": "completed", "seeds": runs[index * seeds:(index + 1) * seeds]}
                                          if seeds > 1 else {"status": "completed", **runs[index]})
                            for index in range(len(TRICKY_METRICS))}
    subs["pending"] = {"status": "pending", "seed": 0}
    subs["skipped"] = {"status": "skipped"}
    results = {"name": "tricky", "criteria": {"loss": {}, "acc": {}}, "subs": subs}

    assert aggregate.metrics_table(results) is not None  # none of these needs pandas
    assert aggregate.metrics_csv(results) == aggregate.metrics_frame(results).to_csv(index=False)
    assert aggregate.metrics_markdown(results) == _markdown_by_pandas(results)
    empty = {"name": "none", "criteria": {}, "subs": {"later": {"status": "skipped"}}}
    assert aggregate.metrics_csv(empty) == aggregate.metrics_frame(empty).to_csv(index=False)
    odd = {**results, "subs": {"s0": {"status": "completed", "seed": 0, "metrics": {"acc": [1, 2]}}}}
    assert aggregate.metrics_table(odd) is None  # a list: written by pandas, as before
    assert aggregate.metrics_csv(odd) == aggregate.metrics_frame(odd).to_csv(index=False)
    assert aggregate.metrics_markdown(odd) == _markdown_by_pandas(odd)


def _markdown_by_pandas(results: dict[str, Any]) -> str:
    """metrics.md as it was made before the tables could be made without pandas."""
    from tabulate import tabulate

    from labrunner import aggregate

    frame = aggregate.metrics_frame(results)
    shown = frame.astype(object).where(frame.notna(), None)
    text = f"# Metrics: {results['name']}\n\n" + tabulate(shown, headers="keys", tablefmt="github", showindex=False,
                                                        floatfmt=".4g", missingval="") + "\n"
    multi = frame.groupby("sub", sort=False).filter(lambda group: len(group) > 1)
    return text + (aggregate._seed_summary(frame, ".4g") if not multi.empty else "")


def test_aggregate_unchanged_results_keep_their_file_and_time(plan: Plan) -> None:
    """A plan comment rebuilds the aggregate: the same results keep results.yaml as it was (an
    update() output), so the FINDINGS made from it are not rewritten."""
    from labrunner.aggregate import write_experiment_outputs

    folder = plan.root / "results" / "e2"
    outputs = [folder / name for name in ("results.yaml", "metrics.md", "metrics.csv", "criteria.png")]

    def aggregate() -> dict[str, Any]:
        return write_experiment_outputs(plan, "e2", False, *outputs, sweeps_dir=folder / "sweeps",
                                        curves_dir=folder / "curves", report_dir=folder / "report")

    result(plan, "e2", "solo", {"acc": 0.95})
    first = aggregate()
    written = outputs[0].read_bytes()
    outputs[0].touch()  # as Snakemake leaves it after the job
    again = aggregate()
    assert again["generated_at"] == first["generated_at"] and outputs[0].read_bytes() == written

    result(plan, "e2", "solo", {"acc": 0.5})
    changed = aggregate()
    assert outputs[0].read_bytes() != written and "acc: 0.5" in outputs[0].read_text()
    assert changed["verdicts"]["acc"]["value"] == 0.5
