"""Verdicts on success criteria, the experiment recommendation, and gate status.

These are the judgements a researcher reads first in FINDINGS.md, so each verdict carries one
plain sentence that says where the value lies against the plan's thresholds, and which
sub-experiment it came from when there was a choice. Everything here is pure and stdlib-only:
the aggregate rules, the CLI and the tests import it without numpy and without side effects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

TARGET_MET = "target met"
ACCEPTABLE = "acceptable"
BELOW_ACCEPTABLE = "below acceptable"
FAILURE = "failure"
NOT_MEASURED = "not measured"
INVALID = "invalid"
LEVELS = (TARGET_MET, ACCEPTABLE, BELOW_ACCEPTABLE, FAILURE, NOT_MEASURED, INVALID)

PROCEED = "proceed"
PIVOT = "pivot"
INVESTIGATE = "investigate"
DECISIONS = (PROCEED, PIVOT, INVESTIGATE)

COMPLETED = "completed"
FAILED = "failed"
PENDING = "pending"
HELD = "held"
EXPERIMENT_STATUSES = (COMPLETED, FAILED, PENDING, HELD)

GATE_PASSED = "passed"
GATE_FAILED = "failed"
GATE_PENDING = "pending"

DEFAULT_BORDERLINE_PCT = 5.0

# Two-sided 95% Student's t quantiles (0.975) for df 1..30; beyond that the normal 1.96 is
# within 2% and a table keeps this module free of scipy.
_T975_BY_DF = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip


class CriterionLike(Protocol):
    """What a verdict needs from a plan's success criterion.

    Read-only properties, so that frozen dataclasses and pydantic models both satisfy it.
    `direction` is already resolved by the plan loader.
    """

    @property
    def target(self) -> float | None: ...
    @property
    def acceptable(self) -> float | None: ...
    @property
    def failure(self) -> float | None: ...
    @property
    def direction(self) -> Literal["higher", "lower"]: ...
    @property
    def from_sub(self) -> str | None: ...
    @property
    def borderline_pct(self) -> float | None: ...


@dataclass(frozen=True)
class Observation:
    """One reported value of one metric, from one seed of one sub-experiment."""

    sub_id: str
    seed: int
    value: float


@dataclass(frozen=True)
class Verdict:
    """The judgement on one criterion and what it rests on, for FINDINGS.md and results.yaml."""

    metric: str
    level: str
    value: float | None
    source_sub: str | None
    n_seeds: int
    ci95: tuple[float, float] | None
    borderline: bool
    confidence: str | None
    sentence: str
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        """Plain types only, so yaml.safe_dump writes it; a NaN value stays a float nan."""
        return {
            "metric": self.metric,
            "level": self.level,
            "value": None if self.value is None else float(self.value),
            "source_sub": self.source_sub,
            "n_seeds": self.n_seeds,
            "ci95": None if self.ci95 is None else [float(self.ci95[0]), float(self.ci95[1])],
            "borderline": self.borderline,
            "confidence": self.confidence,
            "sentence": self.sentence,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Recommendation:
    """What to do with a completed experiment, and the verdict sentences that led there."""

    decision: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class ExperimentOutcome:
    """Where one experiment stands, as a gate sees it.

    `pending` also stands for an experiment with no results at all ("not run yet"), so callers
    encode missing experiments as `ExperimentOutcome(PENDING)` rather than passing a second list.
    `failed_subs` names the sub-experiments that failed, for the blocker sentence.
    """

    status: str
    decision: str | None = None
    failed_subs: tuple[str, ...] = ()
    why: str | None = None  # for a held or pending experiment: what it waits for

    def __post_init__(self) -> None:
        if self.status not in EXPERIMENT_STATUSES:
            raise ValueError(
                f"experiment status {self.status!r} is not one of {', '.join(EXPERIMENT_STATUSES)}"
            )
        if self.decision is not None and self.decision not in DECISIONS:
            raise ValueError(f"decision {self.decision!r} is not one of {', '.join(DECISIONS)}")


@dataclass(frozen=True)
class GateStatus:
    """A gate's state and one sentence per experiment that holds it back."""

    status: str
    blockers: tuple[str, ...]


# --- one criterion ---------------------------------------------------------------------------


def evaluate_criterion(
    metric: str,
    criterion: CriterionLike,
    observations: Sequence[Observation],
    *,
    borderline_pct: float = DEFAULT_BORDERLINE_PCT,
) -> Verdict:
    """Judge one metric against its tiers.

    The compared value is the mean over seeds of one sub: `from_sub` when the plan names one,
    else the best sub among those whose values are all finite (a sub with any NaN or infinite
    value is left out and named in the notes, so one diverged run cannot hide a good one).
    Ties go to the sub reported first.

    `borderline` flags a value within `borderline_pct` percent of the acceptable threshold
    (an absolute margin of borderline_pct/100 when that threshold is 0), on either side, but
    only when the level is acceptable or below acceptable.

    Missing tiers are skipped: with no target, meeting acceptable is ACCEPTABLE; with no
    failure threshold, anything short of acceptable is BELOW_ACCEPTABLE; with only a target,
    anything short of it is BELOW_ACCEPTABLE. With only a failure threshold, clearing it is
    ACCEPTABLE, since it is the only bar the plan set. A criterion with no tier at all, or a
    direction other than higher/lower, is a plan error and raises ValueError.
    """
    _check_criterion(metric, criterion)
    pct = borderline_pct if criterion.borderline_pct is None else criterion.borderline_pct
    by_sub = _group_by_sub(observations)
    if criterion.from_sub is not None:
        return _evaluate_named_sub(metric, criterion, by_sub, pct)
    if not by_sub:
        return _not_measured(metric, "no sub-experiment reported it")
    finite = {sub: obs for sub, obs in by_sub.items() if _all_finite(obs)}
    bad_notes = tuple(
        _non_finite_note(sub, obs) for sub, obs in by_sub.items() if sub not in finite
    )
    if not finite:
        return _invalid(metric, by_sub, bad_notes)
    left_out = tuple(f"{note}; left out" for note in bad_notes)
    best_sub = _best_sub(finite, criterion.direction)
    if len(finite) > 1:
        source_label: str | None = f"best: {best_sub}"
    elif len(by_sub) > 1:
        source_label = f"from {best_sub}"
    else:
        source_label = None
    return _measured(metric, criterion, best_sub, finite[best_sub], source_label, pct, left_out)


def _evaluate_named_sub(
    metric: str,
    criterion: CriterionLike,
    by_sub: Mapping[str, list[Observation]],
    pct: float,
) -> Verdict:
    """The plan chose the sub, so other subs neither compete nor excuse a bad value."""
    sub = criterion.from_sub
    assert sub is not None
    if sub not in by_sub:
        others = tuple(by_sub)
        notes: tuple[str, ...] = ()
        if others:
            notes = (f"reported by {', '.join(others)}, which this criterion does not compare",)
        return _not_measured(metric, f"expected from {sub}, which reported no value", notes)
    obs = by_sub[sub]
    if not _all_finite(obs):
        return _invalid(metric, {sub: obs}, (_non_finite_note(sub, obs),))
    return _measured(metric, criterion, sub, obs, f"from {sub}", pct, ())


def _measured(
    metric: str,
    criterion: CriterionLike,
    sub: str,
    obs: Sequence[Observation],
    source_label: str | None,
    pct: float,
    notes: tuple[str, ...],
) -> Verdict:
    values = [o.value for o in obs]
    mean = math.fsum(values) / len(values)
    ci95 = _ci95_of_mean(values)
    level = _level(mean, criterion)
    borderline = level in (ACCEPTABLE, BELOW_ACCEPTABLE) and _is_borderline(
        mean, criterion.acceptable, pct
    )
    details = [part for part in (source_label, _seeds_label(len(values))) if part]
    if ci95 is not None:
        details.append(f"95% CI {_fmt(ci95[0])}–{_fmt(ci95[1])}")
    tiers = (criterion.target, criterion.acceptable, criterion.failure)
    thresholds = [t for t in tiers if t is not None]
    head = f"{metric} of {_fmt_apart(mean, thresholds)}"
    if details:
        head += f" ({', '.join(details)})"
    sentence = f"{head} {_relation(mean, level, criterion)}"
    if borderline:
        sentence += f" (borderline: within {pct:g}% of the acceptable threshold; review)"
    return Verdict(
        metric=metric,
        level=level,
        value=mean,
        source_sub=sub,
        n_seeds=len(values),
        ci95=ci95,
        borderline=borderline,
        confidence=_confidence(ci95, criterion),
        sentence=sentence,
        notes=notes,
    )


def _not_measured(metric: str, why: str, notes: tuple[str, ...] = ()) -> Verdict:
    return Verdict(
        metric=metric,
        level=NOT_MEASURED,
        value=None,
        source_sub=None,
        n_seeds=0,
        ci95=None,
        borderline=False,
        confidence=None,
        sentence=f"{metric} was not measured: {why}",
        notes=notes,
    )


def _invalid(metric: str, bad: Mapping[str, list[Observation]], notes: tuple[str, ...]) -> Verdict:
    """Name the bad value and where it came from, since that is where to look next."""
    # sum, not math.fsum: fsum raises on inf + -inf, and that mean is NaN, which is the point.
    means = {sub: sum(o.value for o in obs) / len(obs) for sub, obs in bad.items()}
    first_sub = next(iter(bad))
    if len(bad) == 1:
        value_text = _fmt(means[first_sub])
        sentence = f"{metric} of {value_text} from {first_sub} is invalid (NaN or infinite)"
    else:
        listed = ", ".join(f"{_fmt(mean)} from {sub}" for sub, mean in means.items())
        sentence = f"{metric} is invalid (NaN or infinite): {listed}"
    return Verdict(
        metric=metric,
        level=INVALID,
        value=means[first_sub],
        source_sub=first_sub,
        n_seeds=len(bad[first_sub]),
        ci95=None,
        borderline=False,
        confidence=None,
        sentence=sentence,
        notes=notes,
    )


def _check_criterion(metric: str, criterion: CriterionLike) -> None:
    if criterion.direction not in ("higher", "lower"):
        raise ValueError(
            f"criterion for {metric!r}: direction must be 'higher' or 'lower',"
            f" got {criterion.direction!r}"
        )
    if criterion.target is None and criterion.acceptable is None and criterion.failure is None:
        raise ValueError(f"criterion for {metric!r} has none of target, acceptable, failure")


def _group_by_sub(observations: Sequence[Observation]) -> dict[str, list[Observation]]:
    """Keep the order subs first appear in, so ties and messages are reproducible."""
    by_sub: dict[str, list[Observation]] = {}
    for obs in observations:
        by_sub.setdefault(obs.sub_id, []).append(obs)
    return by_sub


def _all_finite(obs: Sequence[Observation]) -> bool:
    return all(math.isfinite(o.value) for o in obs)


def _best_sub(finite: Mapping[str, list[Observation]], direction: str) -> str:
    sign = 1.0 if direction == "higher" else -1.0
    means = {sub: math.fsum(o.value for o in obs) / len(obs) for sub, obs in finite.items()}
    return max(means, key=lambda sub: sign * means[sub])


def _ci95_of_mean(values: Sequence[float]) -> tuple[float, float] | None:
    """Student's t interval: with the 2-5 seeds usual here, the normal one is far too narrow."""
    n = len(values)
    if n < 2:
        return None
    mean = math.fsum(values) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half_width = _t975(n - 1) * sd / math.sqrt(n)
    return (mean - half_width, mean + half_width)


def _t975(df: int) -> float:
    return _T975_BY_DF[df - 1] if df <= len(_T975_BY_DF) else 1.96


def _meets(value: float, threshold: float, direction: str) -> bool:
    return value >= threshold if direction == "higher" else value <= threshold


def _fails(value: float, failure: float, direction: str) -> bool:
    return value <= failure if direction == "higher" else value >= failure


def _level(value: float, criterion: CriterionLike) -> str:
    direction = criterion.direction
    if criterion.target is not None and _meets(value, criterion.target, direction):
        return TARGET_MET
    if criterion.acceptable is not None and _meets(value, criterion.acceptable, direction):
        return ACCEPTABLE
    if criterion.failure is not None and _fails(value, criterion.failure, direction):
        return FAILURE
    if criterion.target is None and criterion.acceptable is None:
        return ACCEPTABLE
    return BELOW_ACCEPTABLE


def _is_borderline(value: float, acceptable: float | None, pct: float) -> bool:
    """Either side of the threshold: a value just over it deserves the same second look.

    Callers ask only for values judged acceptable or below acceptable: a value that meets the
    target or reaches failure is a tier away from the acceptable call, and with a relative
    margin (5% of 0.95 is 0.0475) a target met at 0.974 would otherwise be flagged.
    """
    if acceptable is None:
        return False
    margin = pct / 100 * (abs(acceptable) if acceptable != 0 else 1.0)
    return abs(value - acceptable) <= margin


def _deciding_threshold(criterion: CriterionLike) -> float | None:
    for threshold in (criterion.acceptable, criterion.target, criterion.failure):
        if threshold is not None:
            return threshold
    return None


def _confidence(ci95: tuple[float, float] | None, criterion: CriterionLike) -> str:
    """High when every value in the interval would get the same side of the deciding threshold."""
    if ci95 is None:
        return "medium"
    threshold = _deciding_threshold(criterion)
    assert threshold is not None
    low_side = _meets(ci95[0], threshold, criterion.direction)
    high_side = _meets(ci95[1], threshold, criterion.direction)
    return "high" if low_side == high_side else "low"


# --- sentences -------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _fmt_apart(value: float, thresholds: Sequence[float]) -> str:
    """More digits when 4 would print a value equal to a threshold it differs from."""
    for digits in range(4, 13):
        text = f"{value:.{digits}g}"
        if all(t == value or text != f"{t:.{digits}g}" for t in thresholds):
            return text
    return f"{value:.12g}"


def _side(value: float, threshold: float) -> str:
    if value > threshold:
        return "above"
    if value < threshold:
        return "below"
    return "at"


def _seeds_label(n_seeds: int) -> str | None:
    return f"mean of {n_seeds} seeds" if n_seeds > 1 else None


def _relation(value: float, level: str, criterion: CriterionLike) -> str:
    """Numeric relation (above/below), not better/worse: the reader knows the metric's direction."""
    target, acceptable, failure = criterion.target, criterion.acceptable, criterion.failure
    if level == TARGET_MET:
        assert target is not None
        return f"meets the {_fmt(target)} target"
    if level == FAILURE:
        assert failure is not None
        worse = "below" if criterion.direction == "higher" else "above"
        return f"is at or {worse} the {_fmt(failure)} failure threshold"
    if acceptable is not None:
        text = f"is {_side(value, acceptable)} the {_fmt(acceptable)} acceptable threshold"
    elif target is not None:
        text = f"is {_side(value, target)} the {_fmt(target)} target"
    else:
        assert failure is not None
        return f"is {_side(value, failure)} the {_fmt(failure)} failure threshold, the only one set"
    if level == ACCEPTABLE and target is not None:
        text += f" but does not meet the {_fmt(target)} target"
    elif level == BELOW_ACCEPTABLE and failure is not None:
        text += f" but {_side(value, failure)} the {_fmt(failure)} failure threshold"
    return text


def _non_finite_note(sub: str, obs: Sequence[Observation]) -> str:
    bad = [o for o in obs if not math.isfinite(o.value)]
    if len(obs) == 1:
        return f"{sub} reported {_name_non_finite(bad[0].value)}"
    listed = ", ".join(f"{_name_non_finite(o.value)} for seed {o.seed}" for o in bad)
    return f"{sub} reported {listed}"


def _name_non_finite(value: float) -> str:
    return "NaN" if math.isnan(value) else _fmt(value)


# --- experiment and gate ---------------------------------------------------------------------


def recommend(verdicts: Sequence[Verdict]) -> Recommendation:
    """Pivot on any failure; anything uncertain or short of acceptable needs a human first."""
    if not verdicts:
        return Recommendation(INVESTIGATE, ("no success criteria in the plan",))
    failures = tuple(v.sentence for v in verdicts if v.level == FAILURE)
    if failures:
        return Recommendation(PIVOT, failures)
    concerns = tuple(reason for v in verdicts for reason in _concerns(v))
    if concerns:
        return Recommendation(INVESTIGATE, concerns)
    return Recommendation(PROCEED, tuple(v.sentence for v in verdicts))


def _concerns(verdict: Verdict) -> list[str]:
    reasons: list[str] = []
    if verdict.level in (BELOW_ACCEPTABLE, NOT_MEASURED, INVALID) or verdict.borderline:
        reasons.append(verdict.sentence)
    if verdict.confidence == "low" and verdict.ci95 is not None:
        low, high = verdict.ci95
        reasons.append(
            f"{verdict.metric} has low confidence: its 95% CI {_fmt(low)}–{_fmt(high)}"
            " straddles the threshold that decides its level"
        )
    return reasons


def gate_status(experiments: Mapping[str, ExperimentOutcome]) -> GateStatus:
    """A single pivot fails the gate; anything else short of all-proceed keeps it pending.

    Experiments with no results are passed in as `ExperimentOutcome(PENDING)`. A gate that
    lists no experiments stays pending: nothing was checked, so nothing should unlock.
    """
    if not experiments:
        return GateStatus(GATE_PENDING, ("the gate lists no experiments",))
    blockers = tuple(
        blocker for exp_id, outcome in experiments.items() if (blocker := _blocker(exp_id, outcome))
    )
    if any(o.status == COMPLETED and o.decision == PIVOT for o in experiments.values()):
        return GateStatus(GATE_FAILED, blockers)
    return GateStatus(GATE_PENDING if blockers else GATE_PASSED, blockers)


def _blocker(exp_id: str, outcome: ExperimentOutcome) -> str | None:
    if outcome.status in (PENDING, HELD):
        return f"{exp_id}: {outcome.why or 'not run yet'}"
    if outcome.status == FAILED:
        n_failed = len(outcome.failed_subs)
        if n_failed == 0:
            return f"{exp_id}: failed"
        plural = "" if n_failed == 1 else "s"
        subs = ", ".join(outcome.failed_subs)
        return f"{exp_id}: {n_failed} sub-experiment{plural} failed ({subs})"
    if outcome.decision is None:
        return f"{exp_id}: completed but has no recommendation"
    if outcome.decision != PROCEED:
        return f"{exp_id}: recommendation is {outcome.decision}"
    return None
