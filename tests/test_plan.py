"""Unit tests for labrunner.plan: the plans researchers write validate; broken ones say exactly
what is wrong, where (file, key path, line) and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import PLAN_FILE, ProjectFactory
from labrunner.errors import Issue, PlanError
from labrunner.plan import load_plan

# Written the way researchers already write plans: dash-separated ids, list-style subs, tiered
# criteria (one with its direction left to inference), gates, and free-form fields.
RESEARCHER_PLAN = """\
project:
  name: Vision study
  hypothesis: "An MLP beats a linear model on small images"
  owner: ada
defaults: {backend: local, timeout_min: 30, retries: 1, seeds: [0]}
wandb: {project: vision, mode: offline}
experiments:
  e1-linear-vs-mlp:
    name: "E1: Linear vs MLP"
    type: claim
    phase: 1
    status: completed
    outcome: "the MLP wins by 2 points"
    achieved: {accuracy: 0.974}
    note: "rerun after the data fix"
    replaces: e0-pilot
    future_study: "try a CNN"
    dependencies: []
    success_criteria:
      accuracy: {target: 0.97, acceptable: 0.95, failure: 0.90, direction: higher}
      lpips: {target: 0.25, acceptable: 0.35, failure: 0.5}
    sub_experiments: [e1_1, e1_2]
  e2-data-efficiency:
    dependencies: [e1-linear-vs-mlp]
    timeout_min: 60
    sub_experiments:
      e2_1: {params: {lr: 1e-4, hidden: 128}, stub_params: {epochs: 1}}
      e2_2: {skip: "superseded by e1_2"}
  e3-archived:
    archived: true
    sub_experiments: [old_1]
gates:
  gate_1: {name: "Gate 1", experiments: [e1-linear-vs-mlp], unlocks: "Phase 2", status: passed}
"""

RESEARCHER_HANDLERS = {
    "handlers/e1-linear-vs-mlp/e1_1.py": "def e1_1(runner):\n    return {}\n",
    "handlers/e1-linear-vs-mlp/e1_2.py": "def run(runner, verbose=False):\n    return {}\n",
    "handlers/e2-data-efficiency/e2_1.py": "import os\n\n\ndef helper():\n    pass\n\n\ndef e2_1(runner):\n    return {}\n",
}


def plan_errors(root: Path) -> list[Issue]:
    with pytest.raises(PlanError) as caught:
        load_plan(root / PLAN_FILE)
    return list(caught.value.issues)


def only_error(root: Path) -> Issue:
    issues = plan_errors(root)
    assert len(issues) == 1, "\n".join(map(str, issues))
    return issues[0]


def line_containing(text: str, fragment: str) -> int:
    matches = [number for number, line in enumerate(text.splitlines(), start=1) if fragment in line]
    assert len(matches) == 1, f"{fragment!r} is on lines {matches}"
    return matches[0]


# --- a plan as researchers write it ----------------------------------------------------------

def test_plan_researcher_style_plan_validates(make_project: ProjectFactory) -> None:
    plan = load_plan(make_project(RESEARCHER_PLAN, RESEARCHER_HANDLERS) / PLAN_FILE)

    assert plan.active_experiments == ["e1-linear-vs-mlp", "e2-data-efficiency"]
    assert [spec.key for spec in plan.subs()] == ["e1-linear-vs-mlp/e1_1", "e1-linear-vs-mlp/e1_2", "e2-data-efficiency/e2_1"]
    e1_1, e1_2 = plan.subs("e1-linear-vs-mlp")
    assert (e1_1.handler_file, e1_1.handler_function) == (Path("handlers/e1-linear-vs-mlp/e1_1.py"), "e1_1")
    assert (e1_2.handler_file, e1_2.handler_function) == (Path("handlers/e1-linear-vs-mlp/e1_2.py"), "run")
    criteria = plan.experiments["e1-linear-vs-mlp"].success_criteria
    assert criteria["accuracy"].tiers() == [("target", 0.97), ("acceptable", 0.95), ("failure", 0.90)]
    assert plan.experiments["e2-data-efficiency"].dependencies == ["e1-linear-vs-mlp"]
    assert plan.gates["gate_1"].experiments == ["e1-linear-vs-mlp"]


def test_plan_free_form_fields_are_kept_as_info(make_project: ProjectFactory) -> None:
    plan = load_plan(make_project(RESEARCHER_PLAN, RESEARCHER_HANDLERS) / PLAN_FILE)

    e1 = plan.experiments["e1-linear-vs-mlp"]
    assert e1.info == {
        "status": "completed", "outcome": "the MLP wins by 2 points", "achieved": {"accuracy": 0.974},
        "note": "rerun after the data fix", "replaces": "e0-pilot", "future_study": "try a CNN",
    }
    assert plan.gates["gate_1"].info == {"status": "passed"}
    assert plan.model.project.info == {"owner": "ada"}


def test_plan_direction_is_inferred_from_the_tiers(make_project: ProjectFactory) -> None:
    from labrunner.plan import resolved_direction

    plan = load_plan(make_project(RESEARCHER_PLAN, RESEARCHER_HANDLERS) / PLAN_FILE)

    criteria = plan.experiments["e1-linear-vs-mlp"].success_criteria
    assert resolved_direction(criteria["accuracy"]) == "higher"
    assert resolved_direction(criteria["lpips"]) == "lower"


def test_plan_archived_experiment_needs_no_handlers(make_project: ProjectFactory) -> None:
    plan = load_plan(make_project(RESEARCHER_PLAN, RESEARCHER_HANDLERS) / PLAN_FILE)

    assert "e3-archived" not in plan.active_experiments
    assert [spec.sub_id for spec in plan.subs("e3-archived")] == ["old_1"]


def test_plan_skipped_sub_needs_no_handler_file(make_project: ProjectFactory) -> None:
    plan = load_plan(make_project(RESEARCHER_PLAN, RESEARCHER_HANDLERS) / PLAN_FILE)

    skipped = [spec for spec in plan.subs("e2-data-efficiency", include_skipped=True) if spec.skip_reason]
    assert [(spec.sub_id, spec.skip_reason) for spec in skipped] == [("e2_2", "superseded by e1_2")]
    assert "e2_2" not in [spec.sub_id for spec in plan.subs()]


# --- ten kinds of broken plan, each with its own error ---------------------------------------

BROKEN_PLANS = {
    # kind: (text replaced, replacement, key path, line marker in the broken plan, message fragment)
    "typo key": ("    dependencies: []", "    dependncies: []", "experiments.e1-linear-vs-mlp.dependncies",
                 "dependncies", "did you mean 'dependencies'?"),
    "duplicate key": ("    phase: 1\n", "    phase: 1\n    phase: 2\n", "experiments.e1-linear-vs-mlp.phase",
                      "phase: 2", "duplicate key (first defined on line 11)"),
    "bad id": ("  e3-archived:", "  e3/archived:", "experiments.e3/archived",
               "e3/archived", "'e3/archived' is not path-safe"),
    "missing handler file": ("[e1_1, e1_2]", "[e1_1, e1_2, e1_3]", "experiments.e1-linear-vs-mlp.sub_experiments.e1_3",
                             "e1_3]", "handler file handlers/e1-linear-vs-mlp/e1_3.py not found"),
    "missing function": ("e2_1: {params", "e2_1: {handler: 'handlers/e2-data-efficiency/e2_1.py::train', params",
                         "experiments.e2-data-efficiency.sub_experiments.e2_1.handler",
                         "e2_1: {handler", "defines no function 'train'; it defines: e2_1, helper"),
    "wrong type": ("    timeout_min: 60", "    timeout_min: an hour", "experiments.e2-data-efficiency.timeout_min",
                   "an hour", "expected a valid number"),
    "unknown direction": ("failure: 0.90, direction: higher", "failure: 0.90, direction: up",
                          "experiments.e1-linear-vs-mlp.success_criteria.accuracy.direction",
                          "direction: up", "expected 'higher' or 'lower', got 'up'"),
    "tiers in the wrong order": ("failure: 0.90, direction: higher", "failure: 0.90, direction: lower",
                                 "experiments.e1-linear-vs-mlp.success_criteria.accuracy",
                                 "direction: lower", "tiers are in the wrong order for direction lower"),
    "unknown dependency": ("dependencies: [e1-linear-vs-mlp]", "dependencies: [e1-linear-vs-mpl]",
                           "experiments.e2-data-efficiency.dependencies.0",
                           "e1-linear-vs-mpl", "unknown experiment 'e1-linear-vs-mpl'; did you mean 'e1-linear-vs-mlp'?"),
    "gate naming an unknown experiment": ("experiments: [e1-linear-vs-mlp], unlocks",
                                          "experiments: [e1-linear-vs-mlp, e9-missing], unlocks",
                                          "gates.gate_1.experiments.1", "e9-missing", "unknown experiment 'e9-missing'"),
}


@pytest.mark.parametrize("kind", list(BROKEN_PLANS))
def test_plan_broken_plan_gives_one_clear_error(kind: str, make_project: ProjectFactory) -> None:
    old, new, key, marker, message = BROKEN_PLANS[kind]
    assert RESEARCHER_PLAN.count(old) == 1
    text = RESEARCHER_PLAN.replace(old, new)
    root = make_project(text, RESEARCHER_HANDLERS)

    error = only_error(root)

    assert error.file == str(root / PLAN_FILE)
    assert error.key == key
    assert error.line == line_containing(text, marker)
    assert message in error.message
    assert str(error).startswith(f"{root / PLAN_FILE}:{error.line}: {key}: ")


def test_plan_broken_plans_each_have_their_own_message(make_project: ProjectFactory) -> None:
    fragments = {kind: case[4] for kind, case in BROKEN_PLANS.items()}
    for index, (kind, (old, new, *_rest)) in enumerate(BROKEN_PLANS.items()):
        message = only_error(make_project(RESEARCHER_PLAN.replace(old, new), RESEARCHER_HANDLERS, name=f"p{index}")).message
        assert [other for other, fragment in fragments.items() if fragment in message] == [kind]


def test_plan_every_problem_is_reported_at_once(make_project: ProjectFactory) -> None:
    text = RESEARCHER_PLAN
    for kind in ("typo key", "missing handler file", "wrong type", "gate naming an unknown experiment"):
        old, new, *_rest = BROKEN_PLANS[kind]
        text = text.replace(old, new)

    issues = plan_errors(make_project(text, RESEARCHER_HANDLERS))

    assert len(issues) == 4
    assert [issue.line for issue in issues] == sorted(issue.line or 0 for issue in issues)


# --- YAML-level problems -----------------------------------------------------------------------

def test_plan_yaml_syntax_error_names_the_line(make_project: ProjectFactory) -> None:
    root = make_project("experiments:\n  e1:\n    sub_experiments: [a, b\n    name: x\n")

    error = only_error(root)

    assert error.file == str(root / PLAN_FILE)
    assert "YAML syntax error" in error.message
    assert error.line in (3, 4, 5)


def test_plan_empty_file_is_an_error(make_project: ProjectFactory) -> None:
    error = only_error(make_project(""))

    assert "expected a mapping with an 'experiments' key at the top level, got an empty file" in error.message


def test_plan_non_mapping_top_level_is_an_error(make_project: ProjectFactory) -> None:
    error = only_error(make_project("- e1\n- e2\n"))

    assert "got a list" in error.message


def test_plan_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="file not found"):
        load_plan(tmp_path / "nowhere.yaml")


def test_plan_without_experiments_is_an_error(make_project: ProjectFactory) -> None:
    error = only_error(make_project("project: {name: x}\n"))

    assert error.key == "experiments"
    assert "expected a mapping of experiment id -> experiment, got nothing" in error.message


def test_plan_python_tag_is_refused(make_project: ProjectFactory, tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    root = make_project(f"project: !!python/object/apply:os.system ['touch {marker}']\nexperiments: {{}}\n")

    error = only_error(root)

    assert "Python tags are not allowed" in error.message
    assert error.line == 1
    assert not marker.exists()


def test_plan_exponent_without_dot_is_a_number(make_project: ProjectFactory) -> None:
    root = make_project(RESEARCHER_PLAN, RESEARCHER_HANDLERS)

    spec = load_plan(root / PLAN_FILE).sub("e2-data-efficiency", "e2_1")

    assert spec.params["lr"] == 1e-4
    assert isinstance(spec.params["lr"], float)


def test_plan_dependency_cycle_is_reported_once(make_project: ProjectFactory) -> None:
    text = """\
    experiments:
      e1: {dependencies: [e3], sub_experiments: [a]}
      e2: {dependencies: [e1], sub_experiments: [a]}
      e3: {dependencies: [e2], sub_experiments: [a]}
    """
    handlers = {f"handlers/{exp}/a.py": "def a(runner):\n    return {}\n" for exp in ("e1", "e2", "e3")}
    error = only_error(make_project(text, handlers))

    assert "dependency cycle" in error.message
    assert all(exp in error.message for exp in ("e1", "e2", "e3"))


def test_plan_self_dependency_is_an_error(make_project: ProjectFactory) -> None:
    error = only_error(make_project("experiments:\n  e1: {dependencies: e1, sub_experiments: {a: {skip: true}}}\n"))

    assert error.message == "an experiment cannot depend on itself"


# --- criteria ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("tiers", "direction"), [
    ('{target: ">= 0.95", acceptable: ">= 0.9", failure: "0.8"}', "higher"),
    ('{target: "<= 0.2", acceptable: "<0.3"}', "lower"),
])
def test_plan_comparator_strings_infer_direction(tiers: str, direction: str, make_project: ProjectFactory) -> None:
    text = f"experiments:\n  e1:\n    success_criteria:\n      m: {tiers}\n    sub_experiments: {{a: {{skip: true}}}}\n"

    criterion = load_plan(make_project(text) / PLAN_FILE).experiments["e1"].success_criteria["m"]

    assert criterion.direction == direction
    assert all(isinstance(value, float) for _, value in criterion.tiers())


def test_plan_criterion_without_tiers_is_an_error(make_project: ProjectFactory) -> None:
    text = "experiments:\n  e1:\n    success_criteria: {m: {direction: higher}}\n    sub_experiments: {a: {skip: true}}\n"

    error = only_error(make_project(text))

    assert error.key == "experiments.e1.success_criteria.m"
    assert "expected at least one of target, acceptable, failure" in error.message


def test_plan_criterion_from_unknown_sub_is_an_error(make_project: ProjectFactory) -> None:
    text = "experiments:\n  e1:\n    success_criteria: {m: {target: 1, failure: 0, from: b}}\n    sub_experiments: {a: {skip: true}}\n"

    error = only_error(make_project(text))

    assert error.key == "experiments.e1.success_criteria.m.from"
    assert "unknown sub-experiment 'b'" in error.message


# --- settings and handlers -----------------------------------------------------------------------

def test_plan_defaults_inherit_plan_then_experiment_then_sub(make_project: ProjectFactory) -> None:
    text = """\
    defaults: {backend: local, gpu: null, timeout_min: 30, retries: 1, seeds: [0]}
    experiments:
      e1:
        gpu: T4
        timeout_min: 60
        params: {lr: 0.1, epochs: 10}
        stub_params: {epochs: 1}
        sub_experiments:
          plain: {}
          tuned: {params: {lr: 0.01}, retries: 3, seeds: [1, 2], gpu: A10G}
          single: {seed: 7}
    """
    files = {f"handlers/e1/{sub}.py": f"def {sub}(runner):\n    return {{}}\n" for sub in ("plain", "tuned", "single")}
    plan = load_plan(make_project(text, files) / PLAN_FILE)

    plain, tuned, single = plan.subs("e1")
    assert (plain.backend, plain.gpu, plain.timeout_min, plain.retries, plain.seeds) == ("local", "T4", 60.0, 1, (0,))
    assert (tuned.gpu, tuned.timeout_min, tuned.retries, tuned.seeds) == ("A10G", 60.0, 3, (1, 2))
    assert single.seeds == (7,)
    assert tuned.params_for(stub=False) == {"lr": 0.01, "epochs": 10}
    assert tuned.params_for(stub=True) == {"lr": 0.01, "epochs": 1}


def test_plan_handler_with_syntax_error_is_reported(make_project: ProjectFactory) -> None:
    text = "experiments:\n  e1:\n    sub_experiments: [s1]\n"
    error = only_error(make_project(text, {"handlers/e1/s1.py": "def s1(runner):\n    return {\n"}))

    assert error.key == "experiments.e1.sub_experiments.s1"
    assert "handler file handlers/e1/s1.py has a syntax error at line" in error.message


@pytest.mark.parametrize(("source", "message"), [
    ("def s1(runner, model):\n    pass\n", "must take one argument (the ExperimentRunner); it requires 2"),
    ("def s1():\n    pass\n", "must take one argument (the ExperimentRunner); it requires 0"),
    ("def s1(runner, *, config):\n    pass\n", "must take one argument"),
    ("async def s1(runner):\n    pass\n", "is async; expected a plain function"),
])
def test_plan_handler_with_wrong_signature_is_reported(source: str, message: str, make_project: ProjectFactory) -> None:
    error = only_error(make_project("experiments:\n  e1:\n    sub_experiments: [s1]\n", {"handlers/e1/s1.py": source}))

    assert "handler s1 (handlers/e1/s1.py:1)" in error.message
    assert message in error.message


def test_plan_handler_setting_names_file_and_function(make_project: ProjectFactory) -> None:
    text = """\
    experiments:
      e1:
        sub_experiments:
          a: {handler: "src/train.py::train"}
          b: {handler: "shared.py"}
          c: {handler: fit}
    """
    files = {
        "src/train.py": "def train(runner):\n    return {}\n",
        "handlers/e1/shared.py": "def b(runner):\n    return {}\n",
        "handlers/e1/c.py": "def fit(runner):\n    return {}\n",
    }
    plan = load_plan(make_project(text, files) / PLAN_FILE)

    resolved = [(spec.handler_file.as_posix(), spec.handler_function) for spec in plan.subs("e1")]
    assert resolved == [("src/train.py", "train"), ("handlers/e1/shared.py", "b"), ("handlers/e1/c.py", "fit")]


def test_plan_handler_is_not_imported(make_project: ProjectFactory, tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    source = f"open({str(marker)!r}, 'w').close()\nimport torch_that_does_not_exist\n\ndef s1(runner):\n    return {{}}\n"

    load_plan(make_project("experiments:\n  e1:\n    sub_experiments: [s1]\n", {"handlers/e1/s1.py": source}) / PLAN_FILE)

    assert not marker.exists()


def test_plan_missing_handler_file_lists_the_folder(make_project: ProjectFactory) -> None:
    error = only_error(make_project("experiments:\n  e1:\n    sub_experiments: [s1]\n",
                                    {"handlers/e1/s2.py": "def s2(runner):\n    pass\n"}))

    assert error.message.endswith("handlers/e1 has: s2.py")


def test_plan_check_one_handler_ignores_the_others(make_project: ProjectFactory) -> None:
    root = make_project("experiments:\n  e1:\n    sub_experiments: [s1, s2]\n",
                        {"handlers/e1/s1.py": "def s1(runner):\n    pass\n"})

    plan = load_plan(root / PLAN_FILE, check_handlers=("e1", "s1"))

    assert [spec.sub_id for spec in plan.subs()] == ["s1", "s2"]
    with pytest.raises(PlanError, match="s2.py not found"):
        load_plan(root / PLAN_FILE, check_handlers=("e1", "s2"))


def test_plan_unknown_sub_lists_the_valid_ones(make_project: ProjectFactory) -> None:
    plan = load_plan(make_project(RESEARCHER_PLAN, RESEARCHER_HANDLERS) / PLAN_FILE)

    with pytest.raises(PlanError, match=r"unknown sub-experiment 'e1_3'; did you mean 'e1_2'\? \(valid: e1_1, e1_2\)"):
        plan.sub("e1-linear-vs-mlp", "e1_3")
    with pytest.raises(PlanError, match="unknown experiment 'e1'"):
        plan.sub("e1", "e1_1")


@pytest.mark.parametrize(("block", "message"), [
    ("defaults: {timeout: 5}", "did you mean 'timeout_min'?"),
    ("defaults: {colour: red}", "unknown key; expected one of:"),
    ("wandb: {mode: sometimes}", "expected 'online', 'offline' or 'disabled'"),
    ("defaults: {seeds: [1, 1]}", "seeds must be distinct"),
    ("defaults: {retries: -1}", "greater than or equal to 0"),
])
def test_plan_bad_settings_are_reported(block: str, message: str, make_project: ProjectFactory) -> None:
    error = only_error(make_project(f"{block}\nexperiments:\n  e1: {{sub_experiments: {{a: {{skip: true}}}}}}\n"))

    assert error.line == 1
    assert message in error.message


def test_plan_numeric_ids_are_names(make_project: ProjectFactory) -> None:
    text = "experiments:\n  2024:\n    sub_experiments: [1, 2]\n"
    files = {"handlers/2024/1.py": "def run(runner):\n    pass\n", "handlers/2024/2.py": "def run(runner):\n    pass\n"}

    plan = load_plan(make_project(text, files) / PLAN_FILE)

    assert [spec.key for spec in plan.subs()] == ["2024/1", "2024/2"]


def test_plan_a_bad_value_does_not_hide_other_problems_of_its_experiment(make_project: ProjectFactory) -> None:
    text = """\
    experiments:
      e1:
        dependencies: [e9]
        success_criteria:
          acc: {target: 0.9, acceptable: 0.95, direction: higher}
          loss: {target: 0.1, direction: sideways}
        sub_experiments:
          a: {timeout_min: abc}
          b: {}
    """
    issues = plan_errors(make_project(text, {"handlers/e1/a.py": "def a(runner):\n    pass\n"}))

    messages = {issue.key: issue.message for issue in issues}
    assert "expected a valid number" in messages["experiments.e1.sub_experiments.a.timeout_min"]
    assert "expected 'higher' or 'lower'" in messages["experiments.e1.success_criteria.loss.direction"]
    assert "wrong order" in messages["experiments.e1.success_criteria.acc"]
    assert "unknown experiment 'e9'" in messages["experiments.e1.dependencies.0"]
    assert "handlers/e1/b.py not found" in messages["experiments.e1.sub_experiments.b"]


def test_plan_empty_list_says_how_many_items_were_expected(make_project: ProjectFactory) -> None:
    text = "experiments:\n  e1: {sub_experiments: {a: {skip: true}}}\ngates:\n  g1: {experiments: []}\n"
    error = only_error(make_project(text))

    assert error.key == "gates.g1.experiments"
    assert error.message == "expected at least 1 item, got 0"


def test_plan_experiment_without_sub_experiments_is_an_error(make_project: ProjectFactory) -> None:
    error = only_error(make_project("experiments:\n  e1:\n    name: nothing yet\n"))

    assert (error.key, error.line) == ("experiments.e1", 2)
    assert error.message == "has no sub_experiments; list at least one (or set archived: true)"


@pytest.mark.parametrize("sub_id", ["../x", "a/b", ".hidden", "with space"])
def test_plan_path_like_sub_id_is_an_error(sub_id: str, make_project: ProjectFactory) -> None:
    error = only_error(make_project(f"experiments:\n  e1:\n    sub_experiments: ['{sub_id}']\n"))

    assert error.key == f"experiments.e1.sub_experiments.{sub_id}"
    assert "is not path-safe" in error.message


def test_plan_ids_that_yaml_reads_as_numbers_or_booleans_keep_their_spelling(make_project: ProjectFactory) -> None:
    text = """\
    experiments:
      1.10:
        sub_experiments: [1.10, 1.1, on, off, yes, 01]
      on:
        dependencies: [1.10]
        sub_experiments: {1.20: {}, no: {}}
    gates:
      g1: {experiments: [1.10, on]}
    """
    subs = {"1.10": ["1.10", "1.1", "on", "off", "yes", "01"], "on": ["1.20", "no"]}
    files = {f"handlers/{exp}/{sub}.py": "def run(runner):\n    pass\n" for exp, ids in subs.items() for sub in ids}

    plan = load_plan(make_project(text, files) / PLAN_FILE)

    assert {exp: [spec.sub_id for spec in plan.subs(exp)] for exp in plan.experiments} == subs
    assert plan.experiments["on"].dependencies == ["1.10"]
    assert plan.gates["g1"].experiments == ["1.10", "on"]


def test_plan_sub_listed_twice_is_an_error(make_project: ProjectFactory) -> None:
    text = "experiments:\n  e1:\n    sub_experiments:\n      - a\n      - b\n      - a\n"
    files = {f"handlers/e1/{sub}.py": "def run(runner):\n    pass\n" for sub in "ab"}

    error = only_error(make_project(text, files))

    assert (error.key, error.line) == ("experiments.e1.sub_experiments.a", 6)
    assert error.message == "listed twice (first on line 4); each sub-experiment needs its own id"


@pytest.mark.parametrize("name", ["results.yaml", "Metrics.md", "criteria.png", "findings.log", "aggregate.log",
                                  "gates.yaml", "history", "artifacts", "wandb", "run.log", "failure.yaml", "seed-1",
                                  "sweeps"])
def test_plan_id_spelled_like_a_file_of_labrunner_is_an_error(name: str, make_project: ProjectFactory) -> None:
    for kind, text in (("sub", f"experiments:\n  e1:\n    sub_experiments: [ok, {name}]\n"),
                       ("experiment", f"experiments:\n  {name}:\n    sub_experiments: [ok]\n")):
        exp = "e1" if kind == "sub" else name
        root = make_project(text, {f"handlers/{exp}/ok.py": "def run(runner):\n    pass\n",
                                   f"handlers/e1/{name}.py": "def run(runner):\n    pass\n"}, name=kind)

        error = only_error(root)

        key = f"experiments.e1.sub_experiments.{name}" if kind == "sub" else f"experiments.{name}"
        assert (error.file, error.key, error.line) == (str(root / PLAN_FILE), key, 3 if kind == "sub" else 2)
        assert f"id {name!r} is a name labrunner gives its own files and folders in the results tree" in error.message
        assert "rename it" in error.message


def test_plan_id_longer_than_a_file_name_allows_is_an_error(make_project: ProjectFactory) -> None:
    longest, too_long = "x" * 200, "y" * 201
    text = f"experiments:\n  e1:\n    sub_experiments:\n      - {longest}\n      - {too_long}\n"
    files = {f"handlers/e1/{sub}.py": "def run(runner):\n    pass\n" for sub in (longest, too_long)}

    error = only_error(make_project(text, files))

    assert (error.key, error.line) == (f"experiments.e1.sub_experiments.{too_long}", 5)
    assert error.message == (f"sub-experiment id '{'y' * 40}...' is 201 bytes long; an id is a folder name, and the file "
                             "system allows 200 (255 bytes, less room for what tools add to a name): shorten it")


def test_plan_yaml_bomb_is_refused_with_its_line(make_project: ProjectFactory) -> None:
    levels = ['      l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"      l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]" for n in range(1, 9)]  # 10**9 values
    text = "experiments:\n  e1:\n    params:\n" + "\n".join(levels) + "\n    sub_experiments: [a]\n"

    error = only_error(make_project(text, {"handlers/e1/a.py": "def run(runner):\n    pass\n"}))

    assert error.line is not None and 4 <= error.line <= 12
    assert "aliases (*name) expand the document by more than 100,000 values" in error.message


def test_plan_modest_aliases_are_fine_and_recursive_ones_are_refused(make_project: ProjectFactory) -> None:
    text = """\
    experiments:
      e1:
        params: &common {lr: 0.1, layers: [64, 64]}
        sub_experiments:
          a: {params: *common}
          b: {params: {<<: *common, lr: 0.01}}
    """
    files = {f"handlers/e1/{sub}.py": "def run(runner):\n    pass\n" for sub in "ab"}
    plan = load_plan(make_project(text, files) / PLAN_FILE)
    assert plan.sub("e1", "b").params == {"lr": 0.01, "layers": [64, 64]}

    error = only_error(make_project("experiments:\n  e1:\n    params: &p {self: *p}\n", name="recursive"))
    assert (error.line, error.message) == (3, "an alias here refers to the value that contains it, which would never end")


# --- references that could never complete, gates that act ---------------------------------------

GATED_PLAN = """\
experiments:
  e1:
    sub_experiments:
      a: {}
      b: {skip: "not now"}
    success_criteria:
      acc: {target: 0.9, acceptable: 0.8, from: a}
  e2: {dependencies: [e1], requires: [g1], sub_experiments: [c]}
  old: {archived: true, sub_experiments: [z]}
  quiet: {sub_experiments: {q: {skip: true}}}
gates:
  g1: {experiments: [e1], decision: {verdict: proceed, by: ada, date: 2026-11-27, note: fine}}
"""
GATED_HANDLERS = {"handlers/e1/a.py": "def a(runner):\n    return {}\n", "handlers/e2/c.py": "def c(runner):\n    return {}\n"}


def test_plan_requires_and_a_recorded_gate_decision_validate(make_project: ProjectFactory) -> None:
    plan = load_plan(make_project(GATED_PLAN, GATED_HANDLERS) / PLAN_FILE)

    assert plan.experiments["e2"].requires == ["g1"]
    decision = plan.gates["g1"].decision
    assert decision is not None and (decision.verdict, decision.by, decision.date) == ("proceed", "ada", "2026-11-27")


@pytest.mark.parametrize("old, new, key, message", [
    ("g1: {experiments: [e1],", "g1: {experiments: [e1, old],", "gates.g1.experiments.1",
     "old is archived (it never runs), so this gate could never pass"),
    ("g1: {experiments: [e1],", "g1: {experiments: [quiet],", "gates.g1.experiments.0",
     "every sub-experiment of quiet is skipped (it never produces a result), so this gate could never pass"),
    ("e2: {dependencies: [e1],", "e2: {dependencies: [old],", "experiments.e2.dependencies.0",
     "old is archived (it never runs), so e2 cannot build on it"),
    ("acc: {target: 0.9, acceptable: 0.8, from: a}", "acc: {target: 0.9, acceptable: 0.8, from: b}",
     "experiments.e1.success_criteria.acc.from", "sub-experiment 'b' is skipped (not now), so acc could never be measured"),
    ("requires: [g1]", "requires: [g2]", "experiments.e2.requires.0", "unknown gate 'g2'"),
    ("e2: {dependencies: [e1], requires: [g1]", "e2: {dependencies: [e1], requires: [g11]", "experiments.e2.requires.0",
     "unknown gate 'g11'; did you mean 'g1'?"),
    ("verdict: proceed", "verdict: go", "gates.g1.decision.verdict", "expected 'proceed', 'pivot' or 'stop'"),
    ("by: ada", "bye: ada", "gates.g1.decision.bye", "unknown key; did you mean 'by'?"),
])
def test_plan_references_that_could_never_complete_are_errors(old: str, new: str, key: str, message: str,
                                                               make_project: ProjectFactory) -> None:
    assert old in GATED_PLAN
    error = only_error(make_project(GATED_PLAN.replace(old, new, 1), GATED_HANDLERS))

    assert error.key == key and message in error.message, str(error)
    assert error.line is not None


def test_plan_an_experiment_requiring_its_own_gate_is_an_error(make_project: ProjectFactory) -> None:
    text = GATED_PLAN.replace("g1: {experiments: [e1],", "g1: {experiments: [e1, e2],")

    error = only_error(make_project(text, GATED_HANDLERS))

    assert error.key == "experiments.e2.requires.0" and "e2 requires g1, which waits for e2 itself" in error.message


def test_plan_a_plan_outside_research_takes_the_folder_with_the_snakefile_as_root(make_project: ProjectFactory) -> None:
    root = make_project(GATED_PLAN, GATED_HANDLERS)
    (root / "Snakefile").write_text("# the project's\n")
    (root / "plans").mkdir()
    (root / "plans" / "v2.yaml").write_text((root / PLAN_FILE).read_text())

    plan = load_plan(root / "plans" / "v2.yaml")

    assert plan.root == root.resolve() and plan.sub("e1", "a").handler_file == Path("handlers/e1/a.py")


def test_plan_cached_load_validates_once_while_the_file_is_unchanged(make_project: ProjectFactory) -> None:
    from labrunner.plan import load_plan_cached

    root = make_project("experiments:\n  e1:\n    sub_experiments: [a]\n", {"handlers/e1/a.py": "def a(runner):\n    return {}\n"})
    first = load_plan_cached(root / PLAN_FILE, root)

    assert load_plan_cached(root / PLAN_FILE, root) is first
    (root / PLAN_FILE).write_text("experiments:\n  e1:\n    sub_experiments: [a, b]\n")  # an edit is read again
    assert [spec.sub_id for spec in load_plan_cached(root / PLAN_FILE, root).subs("e1")] == ["a", "b"]
