"""Plan validation of the criterion extensions: `compare:` (comparisons), `range:` and `from:` a sweep."""

from __future__ import annotations

import pytest

from conftest import PLAN_FILE, ProjectFactory
from labrunner.errors import Issue, PlanError
from labrunner.plan import load_plan

PLAN = """\
experiments:
  e1:
    success_criteria:
      gain: {compare: {treatment: mlp, baseline: linear}, metric: accuracy, paired_by: seed, target: 0.01, acceptable: 0.005, failure: 0.0}
      loss: {target: 0.1, acceptable: 0.2, direction: lower, range: [0, null]}
    sub_experiments:
      linear: {seeds: [0, 1, 2]}
      mlp: {seeds: [0, 1, 2]}
      sweep: {grid: {lr: [0.1, 0.2]}}
      old: {skip: superseded}
"""
HANDLERS = {f"handlers/e1/{sub}.py": f"def {sub}(runner):\n    pass\n" for sub in ("linear", "mlp", "sweep")}


def errors_of(make_project: ProjectFactory, text: str) -> list[Issue]:
    with pytest.raises(PlanError) as caught:
        load_plan(make_project(text, HANDLERS) / PLAN_FILE)
    return list(caught.value.issues)


def only_error(make_project: ProjectFactory, text: str) -> Issue:
    issues = errors_of(make_project, text)
    assert len(issues) == 1, "\n".join(map(str, issues))
    return issues[0]


def test_plan_comparison_and_range_load(make_project: ProjectFactory) -> None:
    plan = load_plan(make_project(PLAN, HANDLERS) / PLAN_FILE)
    gain = plan.experiments["e1"].success_criteria["gain"]
    assert gain.compare is not None and (gain.compare.treatment, gain.compare.baseline) == ("mlp", "linear")
    assert (gain.metric, gain.paired_by, gain.resolved().direction) == ("accuracy", "seed", "higher")
    assert plan.experiments["e1"].success_criteria["loss"].value_range == (0.0, None)


@pytest.mark.parametrize(("old", "new", "key", "message"), [
    ("treatment: mlp,", "treatment: mpl,", "gain.compare.treatment",
     "unknown sub-experiment 'mpl'; did you mean 'mlp'?"),
    ("baseline: linear}", "baseline: sweep}", "gain.compare.baseline",
     "sweep is a sweep of 2 combinations; name one: sweep.lr-0.1, sweep.lr-0.2"),
    ("baseline: linear}", "baseline: old}", "gain.compare.baseline",
     "old is skipped (superseded); a comparison needs its results"),
    ("baseline: linear}", "baseline: mlp}", "gain.compare", "treatment and baseline are both mlp"),
    ("linear: {seeds: [0, 1, 2]}", "linear: {seeds: [0, 1]}", "gain.paired_by",
     "seeds do not pair: mlp runs seeds [0, 1, 2], linear runs [0, 1]; give both the same seeds, or remove paired_by"),
    (" metric: accuracy,", "", "gain", "compare needs metric: the metric that both sub-experiments report"),
    ("paired_by: seed,", "paired_by: run,", "gain.paired_by", "expected 'seed'"),
    ("{treatment: mlp, baseline: linear}", "{treatment: mlp, basline: linear}", "gain.compare.basline",
     "unknown key; did you mean 'baseline'?"),
    ("direction: lower, range: [0, null]", "direction: lower, metric: loss", "loss.metric",
     "metric belongs to a comparison; add compare:"),
    ("failure: 0.0}", "failure: 0.0, from: mlp}", "gain.from", "a comparison takes its values from compare's"),
    ("range: [0, null]", "range: [0]", "loss.range", "expected [low, high] with numbers or null, e.g. [0, null]"),
    ("range: [0, null]", "range: [1, 0]", "loss.range", "expected low < high, got [1, 0]"),
    ("range: [0, null]", "range: [0.15, null]", "loss.range", "target 0.1 lies outside the range [0.15, null]"),
    ("range: [0, null]", "range: {low: 0}", "loss.range", "expected [low, high]"),
])
def test_plan_bad_comparison_or_range_is_an_error_with_key_and_line(make_project: ProjectFactory, old: str, new: str,
                                                                     key: str, message: str) -> None:
    assert old in PLAN
    text = PLAN.replace(old, new)
    issues = errors_of(make_project, text)
    assert any(issue.key == f"experiments.e1.success_criteria.{key}" and message in issue.message for issue in issues), \
        "\n".join(map(str, issues))
    line = 4 if key.startswith("gain") else 5
    assert all(issue.line == line for issue in issues if issue.key.startswith(f"experiments.e1.success_criteria.{key}"))


def test_plan_unpaired_comparison_needs_no_matching_seeds(make_project: ProjectFactory) -> None:
    text = PLAN.replace("paired_by: seed, ", "").replace("linear: {seeds: [0, 1, 2]}", "linear: {seeds: [5]}")
    assert load_plan(make_project(text, HANDLERS) / PLAN_FILE).experiments["e1"].success_criteria["gain"].paired_by is None


@pytest.mark.parametrize("source", ["sweep", "sweep.lr-0.2"])
def test_plan_from_may_name_a_sweep_or_one_of_its_combinations(make_project: ProjectFactory, source: str) -> None:
    text = PLAN.replace("direction: lower, range: [0, null]}", f"direction: lower, from: {source}}}")
    assert load_plan(make_project(text, HANDLERS) / PLAN_FILE).experiments["e1"].success_criteria["loss"].from_sub == source


def test_plan_from_unknown_lists_combinations_and_sweeps(make_project: ProjectFactory) -> None:
    text = PLAN.replace("direction: lower, range: [0, null]}", "direction: lower, from: sweep.lr-0.3}")
    issue = only_error(make_project, text)
    assert issue.key == "experiments.e1.success_criteria.loss.from" and issue.line == 5
    assert "unknown sub-experiment 'sweep.lr-0.3'; did you mean" in issue.message
    assert "(valid: linear, mlp, sweep.lr-0.1, sweep.lr-0.2, old, sweep)" in issue.message
