"""Unit tests for labrunner.convert: tensors and numpy become plain numbers; a return value of
the wrong shape is an error that says what was expected."""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from conftest import assert_plain
from labrunner.convert import is_finite_number, to_number, to_plain, validate_return
from labrunner.errors import HandlerReturnError, MetricError


def no_artifacts(value: Any) -> str:
    raise HandlerReturnError(f"artifact {value!r} was not saved through runner.results")


# --- to_plain ------------------------------------------------------------------------------------

def test_to_plain_tensor_with_grad_is_detached() -> None:
    weights = torch.ones(2, 2, requires_grad=True)
    loss = (weights * 3).sum()

    assert to_plain(loss) == 12.0
    assert to_plain(weights * 0.5) == [[0.5, 0.5], [0.5, 0.5]]


def test_to_plain_float32_is_shortest_decimal() -> None:
    assert to_plain(torch.tensor(0.98)) == 0.98
    assert to_plain(np.float32(0.1)) == 0.1
    assert to_plain(torch.tensor([0.3, 0.7], dtype=torch.float16)) == [0.3, 0.7]
    assert to_plain(np.float16(0.7)) == 0.7
    assert to_plain(np.float64(0.1 + 0.2)) == 0.1 + 0.2  # float64 is exact already


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_to_plain_narrow_floats_read_back_exactly(dtype: type) -> None:
    values = (np.random.default_rng(0).standard_normal(2000) * 100).astype(dtype)

    plain = to_plain(values)

    assert all(type(item) is float for item in plain)
    assert np.array_equal(np.array(plain, dtype=dtype), values)
    assert to_plain(torch.from_numpy(values)) == plain


def test_to_plain_float16_near_its_largest_value_reads_back() -> None:
    largest = to_plain(torch.tensor(65504.0, dtype=torch.float16))

    assert np.float16(largest) == np.float16(65504.0)


def test_to_plain_integer_and_bool_tensors() -> None:
    assert to_plain(torch.tensor(7)) == 7
    assert type(to_plain(torch.tensor(7))) is int
    assert to_plain(torch.tensor([True, False])) == [True, False]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_to_plain_cuda_tensor_is_moved_to_cpu() -> None:
    assert to_plain(torch.tensor([1.5], device="cuda", requires_grad=True) * 2) == [3.0]


def test_to_plain_numpy_scalars_and_arrays() -> None:
    assert type(to_plain(np.int64(3))) is int
    assert type(to_plain(np.float64(0.5))) is float  # a subclass of float that YAML cannot write
    assert type(to_plain(np.str_("x"))) is str
    assert type(to_plain(np.bool_(True))) is bool
    assert to_plain(np.arange(6).reshape(2, 3)) == [[0, 1, 2], [3, 4, 5]]


def test_to_plain_nested_structures() -> None:
    value = {
        "loss": torch.tensor(0.5, requires_grad=True) * 1,
        "per_class": np.array([0.25, 0.75]),
        "runs": [{"seed": np.int32(1)}, (np.float32(2.5),)],
        3: {np.str_("name"): "x"},
        "path": Path("a/b.png"),
        "when": dt.date(2024, 5, 1),
        "tags": {"a"},
    }

    plain = to_plain(value)

    assert plain == {"loss": 0.5, "per_class": [0.25, 0.75], "runs": [{"seed": 1}, [2.5]], "3": {"name": "x"},
                     "path": "a/b.png", "when": "2024-05-01", "tags": ["a"]}
    assert_plain(plain)
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain
    assert json.loads(json.dumps(plain)) == plain


def test_to_plain_subclasses_of_plain_types_become_plain() -> None:
    class Split(enum.IntEnum):
        TRAIN = 1

    class Name(str, enum.Enum):
        MLP = "mlp"

    assert type(to_plain(Split.TRAIN)) is int and to_plain(Split.TRAIN) == 1
    assert type(to_plain(Name.MLP)) is str and to_plain(Name.MLP) == "mlp"


def test_to_plain_nan_and_inf_are_kept() -> None:
    plain = to_plain({"nan": torch.tensor(float("nan")), "inf": np.float64("inf"), "ninf": -math.inf})

    assert math.isnan(plain["nan"])
    assert plain["inf"] == math.inf
    assert plain["ninf"] == -math.inf


def test_to_plain_unknown_object_names_where_it_was() -> None:
    class Model:
        pass

    with pytest.raises(HandlerReturnError, match=r"metrics\.model is a .*Model, which cannot be stored"):
        to_plain({"model": Model()}, "metrics")


# --- to_number -----------------------------------------------------------------------------------

def test_to_number_accepts_one_element_tensors_and_arrays() -> None:
    assert to_number(torch.tensor([0.25], requires_grad=True) * 1, "m") == 0.25
    assert to_number(np.array([4]), "m") == 4
    assert to_number(np.float32(0.5), "m") == 0.5


@pytest.mark.parametrize(("value", "got"), [
    ("0.5", "'0.5'"),
    (True, "True"),
    (None, "None"),
    (torch.ones(3), "a list of 3 values"),
    ([1, 2], "a list of 2 values"),
    ({"a": 1}, "{'a': 1}"),
])
def test_to_number_rejects_what_is_not_one_number(value: Any, got: str) -> None:
    with pytest.raises(MetricError, match=f"metric 'acc' must be a single number, got {got}"):
        to_number(value, "metric 'acc'")


def test_is_finite_number() -> None:
    assert is_finite_number(1) and is_finite_number(0.5)
    assert not any(is_finite_number(value) for value in (math.nan, math.inf, True, "1", None))


# --- validate_return -----------------------------------------------------------------------------

def test_validate_return_converts_metrics_and_extras() -> None:
    returned = {
        "finding": "  The MLP reaches 97% accuracy.  ",
        "metrics": {"accuracy": torch.tensor(0.97, requires_grad=True) * 1, "n": np.int64(450)},
        "confusion": np.eye(2, dtype=np.int64),
    }

    output = validate_return(returned, no_artifacts)

    assert output.finding == "The MLP reaches 97% accuracy."
    assert output.metrics == {"accuracy": 0.97, "n": 450}
    assert output.extra == {"confusion": [[1, 0], [0, 1]]}
    assert output.artifacts == [] and output.warnings == []


def test_validate_return_flags_nonfinite_metrics() -> None:
    output = validate_return({"finding": "diverged", "metrics": {"loss": float("nan"), "acc": 0.1}}, no_artifacts)

    assert math.isnan(output.metrics["loss"])
    assert output.warnings == ["metric 'loss' is nan (kept, and judged invalid against its criteria)"]


@pytest.mark.parametrize(("returned", "message"), [
    (None, r"the handler returned None \(is a `return` missing\?\); expected a dict like \{'finding'"),
    (0.97, r"the handler returned a float; expected a dict like \{'finding'"),
    ([0.97, "found"], r"the handler returned a list; expected a dict like \{'finding'"),
    ({"metrics": {"acc": 1}}, r"the returned dict has no 'finding' \(keys: metrics\); expected \{'finding'"),
    ({"finding": "   "}, r"'finding' must be a non-empty sentence saying what was found, got '   '"),
    ({"finding": 3}, r"'finding' must be a non-empty sentence saying what was found, got 3"),
    ({"finding": "x", "metrics": [0.9]}, r"'metrics' must be a dict of name -> number, got a list"),
    ({"finding": "x", "metrics": {"acc": "high"}}, r"metric 'acc' must be a single number, got 'high'; every value"),
    ({"finding": "x", "metrics": {"acc": torch.ones(2)}}, r"metric 'acc' must be a single number, got a list of 2"),
    ({"finding": "x", "artifacts": {"a": 1}}, r"'artifacts' must be a list of paths returned by runner.results, got a dict"),
    ({"finding": "x", "artifacts": ["plot.png"]}, r"artifact 'plot.png' was not saved through runner.results"),
    ({"finding": "x", "model": object()}, r"return value 'model' is a builtins.object, which cannot be stored"),
])
def test_validate_return_wrong_shape_says_what_was_expected(returned: Any, message: str) -> None:
    with pytest.raises(HandlerReturnError, match=message):
        validate_return(returned, no_artifacts)


def test_validate_return_resolves_artifacts() -> None:
    output = validate_return({"finding": "x", "artifacts": Path("curve.png")}, lambda value: f"artifacts/{value}")

    assert output.artifacts == ["artifacts/curve.png"]
