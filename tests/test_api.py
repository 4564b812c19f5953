"""Unit tests for the public API: `labrunner.__all__` is honest, the exception tree is as drawn,
and the paths every job takes (worker, runner, validate) do not import heavy libraries."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import labrunner
from conftest import EXP, PLAN_FILE, SUB, ProjectFactory, one_sub_plan
from labrunner import errors

HEAVY = ("torch", "pandas", "wandb", "modal", "matplotlib", "snakemake", "sklearn")


def imported_heavy_modules(code: str) -> list[str]:
    """Run `code` in a fresh interpreter; the heavy top-level packages it imported."""
    script = f"{code}\nimport sys\nprint('heavy:', *sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    last = done.stdout.splitlines()[-1].split()
    assert last[0] == "heavy:"
    return last[1:]


def test_api_every_public_name_resolves_to_labrunner_s_own_object() -> None:
    for name in labrunner.__all__:
        exported = getattr(labrunner, name)
        if name == "__version__":
            assert isinstance(exported, str) and exported[0].isdigit(), exported
            continue
        assert exported.__name__ == name, name
        assert exported.__module__.startswith("labrunner."), (name, exported.__module__)


def test_api_dir_lists_the_public_names() -> None:
    assert dir(labrunner) == sorted(labrunner.__all__)
    assert len(set(labrunner.__all__)) == len(labrunner.__all__)


def test_api_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'labrunner' has no attribute 'Runner'"):
        labrunner.Runner  # noqa: B018


def test_api_exports_are_the_defining_modules_objects() -> None:
    from labrunner.execution import run_sub
    from labrunner.plan import load_plan
    from labrunner.runner import ExperimentRunner

    assert (labrunner.ExperimentRunner, labrunner.load_plan, labrunner.run_sub) == (ExperimentRunner, load_plan, run_sub)


def test_api_exception_tree_has_one_root() -> None:
    tree = {
        "InputError": "LabrunnerError", "PlanError": "InputError", "RecordError": "InputError", "ConfigError": "InputError",
        "HandlerError": "LabrunnerError", "HandlerReturnError": "HandlerError", "MetricError": "HandlerError",
        "ArtifactError": "HandlerError", "BackendError": "LabrunnerError", "RunRefusedError": "LabrunnerError",
        "RunLockedError": "RunRefusedError", "RunHeldError": "RunRefusedError", "StorageError": "LabrunnerError",
    }
    for name, parent in tree.items():
        bases = getattr(errors, name).__bases__
        # StorageError is an OSError as well, so that code handling OSError handles it
        assert bases[0] is getattr(errors, parent) and set(bases[1:]) <= {OSError}, name
    exceptions = [getattr(errors, name) for name in errors.__all__
                  if inspect.isclass(getattr(errors, name)) and issubclass(getattr(errors, name), BaseException)]
    assert set(tree) < {cls.__name__ for cls in exceptions}
    for cls in exceptions:  # one root; each says when it is raised; the module docstring draws it
        assert issubclass(cls, errors.LabrunnerError), cls
        assert cls.__doc__ and cls.__name__ in (errors.__doc__ or ""), cls


def test_api_input_error_lists_every_issue() -> None:
    issue_a = errors.Issue("plan.yaml", "experiments.e1", "bad", 3)
    issue_b = errors.Issue("plan.yaml", "", "worse")

    assert str(errors.PlanError([issue_a])) == "plan.yaml:3: experiments.e1: bad"
    assert str(errors.PlanError([issue_a, issue_b])) == "2 problems:\n  - plan.yaml:3: experiments.e1: bad\n  - plan.yaml: worse"


@pytest.mark.parametrize("module", ["labrunner", "labrunner.worker", "labrunner.runner", "labrunner.execution",
                                    "labrunner.plan", "labrunner.cli", "labrunner.tracking", "labrunner.records",
                                    "labrunner.state", "labrunner.locks", "labrunner.pipeline"])
def test_api_import_is_light(module: str) -> None:
    assert imported_heavy_modules(f"import {module}") == []


def test_api_runner_path_imports_nothing_heavy(make_project: ProjectFactory) -> None:
    """A handler that needs nothing heavy, run through the supervisor and the worker: neither
    process imports torch, pandas, wandb or modal."""
    source = f"""\
    import sys


    def s1(runner):
        runner.log_metrics({{"loss": 0.5}}, step=0)
        runner.results.save_json_artifact("a.json", {{"x": 1}})
        heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {set(HEAVY)!r})
        return {{"finding": "worker imported: " + (" ".join(heavy) or "nothing heavy")}}
    """
    root = make_project(one_sub_plan("disabled"), {f"handlers/{EXP}/{SUB}.py": source})
    code = ("import io\nfrom labrunner.execution import run_sub\nfrom labrunner.plan import load_plan\n"
            f"plan = load_plan({str(root / PLAN_FILE)!r}, check_handlers=({EXP!r}, {SUB!r}))\n"
            f"outcome = run_sub(plan, plan.sub({EXP!r}, {SUB!r}), console=io.StringIO())\n"
            "assert outcome.record['finding'] == 'worker imported: nothing heavy', outcome.record\n")

    assert imported_heavy_modules(code) == []


def test_api_validate_imports_no_handler_code_and_nothing_heavy(make_project: ProjectFactory) -> None:
    source = "import torch\nimport pandas\n\n\ndef s1(runner):\n    return {'finding': str(torch.ones(1))}\n"
    root = make_project(one_sub_plan(), {f"handlers/{EXP}/{SUB}.py": source})
    code = f"from labrunner.cli import main\nassert main(['validate', '--plan', {str(root / PLAN_FILE)!r}]) == 0\n"

    assert imported_heavy_modules(code) == []
