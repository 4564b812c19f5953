"""Sweeps: a sub's `grid:` expanded into one sub per combination, with stable, path-safe ids.

The id of a combination is the sub id, then one `<param>-<value>` part per swept parameter in
alphabetical order, joined by dots:

    e1_2 with grid {lr: [0.001, 0.01], hidden: [64, 128]}
      -> e1_2.hidden-64.lr-0.001, e1_2.hidden-64.lr-0.01, e1_2.hidden-128.lr-0.001, ...

An id depends only on the sub id, the parameter names and that combination's values: adding a
value to the grid, or reordering the values or the keys, renames nothing, so the combinations that
already have results keep them and only the new ones run. Values are written the way YAML reads
back the same value (`0.001`, `1e-05`, `true`, `null`, `adam`); characters that a folder name or a
Snakemake wildcard cannot hold (anything but letters, digits, `.`, `_`, `-`) become `_`, and the
plan loader reports two combinations that would end up with the same id.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

__all__ = ["combination_id", "expand", "value_text"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def value_text(value: Any) -> str:
    """A parameter value as it appears in an id: readable, and path-safe."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, float):
        text = repr(value) if math.isfinite(value) else str(value)
        text = text.replace("+", "")  # 1e+20 -> 1e20
    elif isinstance(value, (list, tuple)):
        text = "_".join(value_text(item) for item in value)
    elif isinstance(value, Mapping):
        text = "_".join(f"{key}-{value_text(value[key])}" for key in sorted(value, key=str))
    else:
        text = str(value)
    return _UNSAFE.sub("_", text) or "_"


def combination_id(sub_id: str, combination: Mapping[str, Any]) -> str:
    """`<sub>.<param>-<value>...`, parameters in alphabetical order (see the module docstring)."""
    parts = [f"{_UNSAFE.sub('_', str(key))}-{value_text(combination[key])}" for key in sorted(combination)]
    return ".".join([sub_id, *parts])


def expand(sub_id: str, grid: Mapping[str, Sequence[Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(id, combination) for every combination, in the order the grid is written."""
    keys = list(grid)
    for values in itertools.product(*(grid[key] for key in keys)):
        combination = dict(zip(keys, values))
        yield combination_id(sub_id, combination), combination
