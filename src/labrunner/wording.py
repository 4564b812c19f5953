"""How verdicts read: numbers and the sentence for each level, in words that hold either way.

Split from the arithmetic in `labrunner.verdicts` because the two change for different reasons.
Words are direction-neutral ("meets", "misses", "reaches"): "below acceptable" reads backwards
for a lower-is-better metric. Every number is written with the significant digits of the metric
tables, so a float32 0.98000002 reads 0.98 here as it does there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = [
    "ACCEPTABLE",
    "FAILURE",
    "INVALID",
    "LEVELS",
    "MISSES_ACCEPTABLE",
    "NOT_MEASURED",
    "SIGNIFICANT_DIGITS",
    "TARGET_MET",
    "fmt",
    "fmt_interval",
    "fmt_range",
    "fmt_signed",
    "relation",
]

SIGNIFICANT_DIGITS = 4  # metric tables, FINDINGS and sentences all use this

# The level names (DESIGN.md fixes them); labrunner.verdicts decides which one applies.
TARGET_MET = "target met"
ACCEPTABLE = "acceptable"
MISSES_ACCEPTABLE = "misses acceptable"
FAILURE = "failure"
NOT_MEASURED = "not measured"
INVALID = "invalid"
LEVELS = (TARGET_MET, ACCEPTABLE, MISSES_ACCEPTABLE, FAILURE, NOT_MEASURED, INVALID)


class Tiers(Protocol):
    @property
    def target(self) -> float | None: ...
    @property
    def acceptable(self) -> float | None: ...
    @property
    def failure(self) -> float | None: ...


def fmt(value: float) -> str:
    return f"{value:.{SIGNIFICANT_DIGITS}g}"


def fmt_signed(value: float) -> str:
    """A difference: the sign always shown, since it is the point."""
    return f"{value:+.{SIGNIFICANT_DIGITS}g}"


def fmt_interval(interval: Sequence[float]) -> str:
    """`0.96 to 0.98`: words, not a dash, which would run into a minus sign."""
    return f"{fmt(interval[0])} to {fmt(interval[1])}"


def fmt_range(low: float | None, high: float | None) -> str:
    return f"{'(-∞' if low is None else f'[{fmt(low)}'}, {'∞)' if high is None else f'{fmt(high)}]'}"


def _gap(value: float, threshold: float, verb: str) -> str:
    """`by 4e-05` where the rounded value reads the same as the threshold it misses or meets."""
    if value != threshold and fmt(value) == fmt(threshold):
        return f" ({verb} by {abs(value - threshold):.2g})"
    return ""


def relation(value: float, level: str, tiers: Tiers) -> str:
    """Where the value stands against the tiers, for the verdict's level (see verdicts._level)."""
    target, acceptable, failure = tiers.target, tiers.acceptable, tiers.failure
    if level == TARGET_MET:
        assert target is not None
        return f"meets the {fmt(target)} target{_gap(value, target, 'meets it')}"
    if level == FAILURE:
        assert failure is not None
        return f"reaches the {fmt(failure)} failure threshold{_gap(value, failure, 'past it')}"
    if level == ACCEPTABLE and acceptable is None and target is None:
        assert failure is not None
        return f"clears the {fmt(failure)} failure threshold, the only one set{_gap(value, failure, 'clears it')}"
    if level == ACCEPTABLE:
        assert acceptable is not None
        text = f"meets the {fmt(acceptable)} acceptable threshold{_gap(value, acceptable, 'meets it')}"
        return text + (f" but misses the {fmt(target)} target{_gap(value, target, 'misses it')}" if target is not None else "")
    # misses acceptable: short of acceptable, or of the target when it is the only bar above failure
    bar, name = (acceptable, "acceptable threshold") if acceptable is not None else (target, "target")
    assert bar is not None
    text = f"misses the {fmt(bar)} {name}{_gap(value, bar, 'misses it')}"
    return text + (f" but clears the {fmt(failure)} failure threshold" if failure is not None else "")
