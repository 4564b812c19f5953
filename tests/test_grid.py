"""Sweeps in the plan: grid expansion, stable path-safe ids, and the errors a bad grid gets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import PLAN_FILE, ProjectFactory
from labrunner import grid
from labrunner.errors import PlanError
from labrunner.plan import ID_PATTERN, load_plan
from labrunner.workflow import snakefile


def run_wildcard() -> re.Pattern[str]:
    """The {run} wildcard constraint of the packaged workflow: every sweep id must satisfy it."""
    common = (Path(snakefile()).parent / "rules" / "common.smk").read_text()
    match = re.search(r'run=r"([^"]+)"', common)
    assert match, "common.smk no longer constrains the run wildcard"
    return re.compile(match[1])


SWEEP_PLAN = """\
experiments:
  e1:
    sub_experiments:
      base: {}
      s: {name: Sweep, params: {epochs: 3}, grid: {lr: [0.001, 0.01], hidden: [64, 128]}, seeds: [0, 1]}
"""
SWEEP_HANDLERS = {"handlers/e1/base.py": "def base(runner):\n    pass\n", "handlers/e1/s.py": "def s(runner):\n    pass\n"}


def sweep_ids(make_project: ProjectFactory, plan_text: str, name: str = "project") -> list[str]:
    plan = load_plan(make_project(plan_text, SWEEP_HANDLERS, name=name) / PLAN_FILE)
    return [spec.sub_id for spec in plan.subs("e1") if spec.sweep == "s"]


def plan_errors(make_project: ProjectFactory, plan_text: str) -> list[str]:
    with pytest.raises(PlanError) as caught:
        load_plan(make_project(plan_text, SWEEP_HANDLERS) / PLAN_FILE)
    return [str(issue) for issue in caught.value.issues]


@pytest.mark.parametrize(("value", "text"), [
    (0.001, "0.001"), (1e-5, "1e-05"), (1e20, "1e20"), (3, "3"), (-2, "-2"), (True, "true"), (None, "null"),
    ("adam", "adam"), ("cosine warmup/2", "cosine_warmup_2"), ([64, 64], "64_64"), ({"b": 1, "a": 2}, "a-2_b-1"),
    ("", "_"), (float("inf"), "inf"),
])
def test_grid_value_text_is_readable_and_path_safe(value: object, text: str) -> None:
    assert grid.value_text(value) == text


def test_grid_ids_sort_parameters_so_key_order_renames_nothing() -> None:
    assert grid.combination_id("e1_2", {"lr": 0.001, "hidden": 64}) == "e1_2.hidden-64.lr-0.001"
    assert grid.combination_id("e1_2", {"hidden": 64, "lr": 0.001}) == "e1_2.hidden-64.lr-0.001"


def test_grid_expand_lists_every_combination_in_written_order() -> None:
    expanded = list(grid.expand("s", {"lr": [0.001, 0.01], "hidden": [64, 128]}))
    assert expanded == [
        ("s.hidden-64.lr-0.001", {"lr": 0.001, "hidden": 64}), ("s.hidden-128.lr-0.001", {"lr": 0.001, "hidden": 128}),
        ("s.hidden-64.lr-0.01", {"lr": 0.01, "hidden": 64}), ("s.hidden-128.lr-0.01", {"lr": 0.01, "hidden": 128}),
    ]


@pytest.mark.parametrize("values", [
    [0.001, 1e-5, 1e20, -2, True, None, "cosine warmup/2", [64, 64], {"b": 1}, "ünïcode", "../../etc", "a:b*c?"],
])
def test_grid_ids_are_valid_directory_names_and_snakemake_wildcards(values: list[object], tmp_path: Path) -> None:
    wildcard = run_wildcard()
    for value in values:
        sub_id = grid.combination_id("e1_2", {"x": value, "mode": "fast"})
        assert ID_PATTERN.match(sub_id), sub_id
        assert wildcard.fullmatch(sub_id) and wildcard.fullmatch(f"{sub_id}/seed-3"), sub_id
        (tmp_path / sub_id).mkdir()  # a real folder of that name
        assert [p.name for p in tmp_path.iterdir() if p.name == sub_id] == [sub_id]


def test_plan_grid_expands_into_one_sub_per_combination(make_project: ProjectFactory) -> None:
    plan = load_plan(make_project(SWEEP_PLAN, SWEEP_HANDLERS) / PLAN_FILE)
    specs = [spec for spec in plan.subs("e1") if spec.sweep == "s"]
    assert [spec.sub_id for spec in specs] == ["s.hidden-64.lr-0.001", "s.hidden-128.lr-0.001",
                                               "s.hidden-64.lr-0.01", "s.hidden-128.lr-0.01"]
    first = specs[0]
    assert dict(first.params) == {"epochs": 3, "lr": 0.001, "hidden": 64}
    assert dict(first.swept) == {"lr": 0.001, "hidden": 64}
    assert first.name == "Sweep (lr=0.001, hidden=64)"
    assert first.seeds == (0, 1)
    # every combination runs the swept sub's own handler
    assert {(spec.handler_file.as_posix(), spec.handler_function) for spec in specs} == {("handlers/e1/s.py", "s")}
    assert list(plan.sweeps("e1")) == ["s"] and len(plan.sweeps("e1")["s"]) == 4
    assert plan.sub("e1", "s.hidden-128.lr-0.01").params["lr"] == 0.01


def test_plan_grid_ids_are_stable_when_a_value_is_added_or_reordered(make_project: ProjectFactory) -> None:
    before = sweep_ids(make_project, SWEEP_PLAN, "before")
    added = sweep_ids(make_project, SWEEP_PLAN.replace("lr: [0.001, 0.01]", "lr: [0.001, 0.003, 0.01]"), "added")
    reordered = sweep_ids(make_project, SWEEP_PLAN.replace("grid: {lr: [0.001, 0.01], hidden: [64, 128]}",
                                                           "grid: {hidden: [128, 64], lr: [0.01, 0.001]}"), "reordered")
    assert set(before) < set(added)
    assert sorted(set(added) - set(before)) == ["s.hidden-128.lr-0.003", "s.hidden-64.lr-0.003"]
    assert sorted(reordered) == sorted(before)


def test_plan_grid_one_value_in_yaml_1e_notation_is_a_number(make_project: ProjectFactory) -> None:
    ids = sweep_ids(make_project, SWEEP_PLAN.replace("lr: [0.001, 0.01]", "lr: [1e-3, 1e-2]"))
    assert "s.hidden-64.lr-0.001" in ids


def test_plan_skipped_sweep_is_one_skipped_sub(make_project: ProjectFactory) -> None:
    plan = load_plan(make_project(SWEEP_PLAN.replace("seeds: [0, 1]}", "seeds: [0, 1], skip: later}"), SWEEP_HANDLERS)
                     / PLAN_FILE)
    assert [(spec.sub_id, spec.skip_reason) for spec in plan.subs("e1", include_skipped=True)] == [
        ("base", None), ("s", "later")]


def test_plan_validate_one_combination_checks_its_handler(make_project: ProjectFactory) -> None:
    root = make_project(SWEEP_PLAN, {"handlers/e1/base.py": "def base(runner):\n    pass\n"})
    assert load_plan(root / PLAN_FILE, check_handlers=("e1", "base"))  # s's handler is not looked at
    with pytest.raises(PlanError, match="s.py not found"):
        load_plan(root / PLAN_FILE, check_handlers=("e1", "s.hidden-64.lr-0.01"))


@pytest.mark.parametrize(("grid_text", "expected"), [
    ("{lr: [0.001, 0.001]}", "plan.yaml:5: experiments.e1.sub_experiments.s.grid: lr: values must be distinct"),
    ("{lr: []}", "experiments.e1.sub_experiments.s.grid: lr: expected at least one value"),
    ("{}", "experiments.e1.sub_experiments.s.grid: expected at least one parameter"),
    ("{lr: 0.1}", "experiments.e1.sub_experiments.s.grid.lr: expected a valid list"),
    ("{epochs: [1, 2]}", "experiments.e1.sub_experiments.s.grid.epochs: epochs is in both params and grid"),
    ("{opt: ['a b', a_b]}", "the combinations {'opt': 'a b'} and {'opt': 'a_b'} both get the id 's.opt-a_b'"),
    ("{" + "x" * 250 + ": [1]}", "the combination id 's.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...' is 254 bytes long"),
])
def test_plan_bad_grid_is_an_error_with_file_key_and_line(make_project: ProjectFactory, grid_text: str,
                                                            expected: str) -> None:
    text = SWEEP_PLAN.replace("grid: {lr: [0.001, 0.01], hidden: [64, 128]}", f"grid: {grid_text}")
    errors = plan_errors(make_project, text)
    assert any(expected in error for error in errors), errors
    assert all(re.match(r".*research_plan\.yaml:\d+: ", error) for error in errors), errors


def test_plan_combination_id_clashing_with_another_sub_is_an_error(make_project: ProjectFactory) -> None:
    text = SWEEP_PLAN.replace("      base: {}\n", "      s.hidden-64.lr-0.001: {handler: 'handlers/e1/base.py::base'}\n")
    errors = plan_errors(make_project, text)
    assert any("experiments.e1.sub_experiments.s: the sweep's combination id 's.hidden-64.lr-0.001' is also the id"
               in error for error in errors), errors
