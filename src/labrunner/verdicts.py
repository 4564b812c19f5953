"""Verdicts on success criteria, the experiment recommendation, and gate status.

These are the judgements a researcher reads first in FINDINGS.md, so each verdict carries one
plain sentence that says where the value lies against the plan's thresholds, and which
sub-experiment it came from when there was a choice. This module holds the arithmetic (which
value, which level, how confident); `labrunner.wording` writes the sentences and
`labrunner.stats` the intervals. Everything here is pure and stdlib-only: the aggregate rules,
the CLI and the tests import it without numpy and without side effects.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from labrunner import stats
from labrunner.stats import Estimate
from labrunner.wording import (
    ACCEPTABLE, FAILURE, INVALID, LEVELS, MISSES_ACCEPTABLE, NOT_MEASURED, TARGET_MET, Tiers, fmt, fmt_interval, fmt_range,
    fmt_signed, relation,
)

__all__ = [
    "ACCEPTABLE", "FAILURE", "INVALID", "LEVELS", "MISSES_ACCEPTABLE", "NOT_MEASURED", "TARGET_MET",
    "ComparisonDetail", "ExperimentOutcome", "GateStatus", "Observation", "PairRow", "Recommendation", "Verdict",
    "evaluate_comparison", "evaluate_criterion", "gate_status", "recommend",
]

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


class CriterionLike(Tiers, Protocol):
    """What a verdict needs from a plan's success criterion: its tiers (wording.Tiers) and more.

    Read-only properties, so that frozen dataclasses and pydantic models both satisfy it.
    `direction` is already resolved by the plan loader.
    """

    @property
    def direction(self) -> Literal["higher", "lower"]: ...
    @property
    def from_sub(self) -> str | None: ...
    @property
    def borderline_pct(self) -> float | None: ...
    @property
    def value_range(self) -> tuple[float | None, float | None] | None: ...


class ComparisonLike(Protocol):
    @property
    def treatment(self) -> str: ...
    @property
    def baseline(self) -> str: ...


class ComparisonCriterionLike(CriterionLike, Protocol):
    """A criterion on treatment minus baseline (the plan's `compare:`)."""

    @property
    def compare(self) -> ComparisonLike | None: ...
    @property
    def metric(self) -> str | None: ...
    @property
    def paired_by(self) -> str | None: ...


@dataclass(frozen=True)
class Observation:
    """One reported value of one metric, from one seed of one sub-experiment."""

    sub_id: str
    seed: int
    value: float


@dataclass(frozen=True)
class PairRow:
    """One seed of a comparison: each side's value (None: no run of that seed) and, paired, their difference."""

    seed: int
    treatment: float | None
    baseline: float | None
    difference: float | None

    def to_dict(self) -> dict[str, object]:
        return {"seed": self.seed, "treatment": self.treatment, "baseline": self.baseline,
                "difference": self.difference}


@dataclass(frozen=True)
class ComparisonDetail:
    """What a comparison verdict rests on, for the per-seed table in FINDINGS.md."""

    metric: str
    treatment: str
    baseline: str
    paired: bool
    treatment_mean: float
    baseline_mean: float
    df: float | None
    rows: tuple[PairRow, ...]

    def to_dict(self) -> dict[str, object]:
        return {"metric": self.metric, "treatment": self.treatment, "baseline": self.baseline,
                "method": "paired t" if self.paired else "Welch t", "treatment_mean": self.treatment_mean,
                "baseline_mean": self.baseline_mean, "df": self.df, "rows": [row.to_dict() for row in self.rows]}


@dataclass(frozen=True)
class Verdict:
    """The judgement on one criterion and what it rests on, for FINDINGS.md and results.yaml.

    `ci95` is the interval the confidence was judged on: widened for a best-of-k selection
    (`candidates` names the k subs) and clipped to the criterion's range.
    """

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
    candidates: tuple[str, ...] = ()
    comparison: ComparisonDetail | None = None

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
            "candidates": list(self.candidates),
            "comparison": None if self.comparison is None else self.comparison.to_dict(),
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


@dataclass(frozen=True)
class _Basis:
    """How a verdict's value was obtained, for its sentence: the words before the relation."""

    subject: str  # "accuracy", or "gain" for a comparison
    details: tuple[str, ...]  # "best of 3: e1_2", "mean of 3 seeds"; the interval is added last
    sub: str | None


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
    Ties go to the sub reported first. The best of k > 1 candidates is a selection: the verdict
    says so, names the candidates, and its interval is widened for it (Bonferroni over k), since
    the best of k noisy values is biased in its favour.

    `borderline` flags a value within `borderline_pct` percent of the acceptable threshold
    (an absolute margin of borderline_pct/100 when that threshold is 0), on either side, but
    only when the level is acceptable or misses acceptable.

    Missing tiers are skipped: with no target, meeting acceptable is ACCEPTABLE; with no
    failure threshold, anything short of acceptable is MISSES_ACCEPTABLE; with only a target,
    anything short of it is MISSES_ACCEPTABLE. With only a failure threshold, clearing it is
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
    notes = tuple(f"{note}; left out" for note in bad_notes)
    best_sub = _best_sub(finite, criterion.direction)
    values = [o.value for o in finite[best_sub]]
    k = len(finite)
    if k > 1:
        estimate = stats.mean_estimate(values, family_size=k)
        basis = _Basis(metric, (f"best of {k}: {best_sub}", *_seed_details(estimate)), best_sub)
        return _measured(criterion, estimate, basis, pct, (*notes, _selection_note(finite, estimate)),
                         candidates=tuple(finite))
    estimate = stats.mean_estimate(values)
    source = (f"from {best_sub}",) if len(by_sub) > 1 else ()
    return _measured(criterion, estimate, _Basis(metric, (*source, *_seed_details(estimate)), best_sub), pct, notes)


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
    estimate = stats.mean_estimate([o.value for o in obs])
    return _measured(criterion, estimate, _Basis(metric, (f"from {sub}", *_seed_details(estimate)), sub), pct, ())


def evaluate_comparison(
    name: str,
    criterion: ComparisonCriterionLike,
    observations: Sequence[Observation],
    *,
    borderline_pct: float = DEFAULT_BORDERLINE_PCT,
    reported: Mapping[str, Collection[str]] | None = None,
) -> Verdict:
    """Judge treatment minus baseline on `criterion.metric` against the tiers.

    Paired by seed: the mean of the per-seed differences with a paired t interval (a seed with a
    value on one side only is left out, and named). Unpaired: the difference of the means with
    Welch's interval. Level, borderline and confidence then follow as for any criterion.
    `observations` are the metric's values from any subs; `reported` (sub -> the metrics it
    reported) lets a misspelt metric name get a "did you mean".
    """
    _check_criterion(name, criterion)
    assert criterion.compare is not None and criterion.metric is not None, "validated by the plan loader"
    treatment, baseline, metric = criterion.compare.treatment, criterion.compare.baseline, criterion.metric
    pct = borderline_pct if criterion.borderline_pct is None else criterion.borderline_pct
    by_sub = _group_by_sub(observations)
    sides = {sub: by_sub.get(sub, []) for sub in (treatment, baseline)}
    missing = [sub for sub, obs in sides.items() if not obs]
    if missing:
        why = f"{' and '.join(missing)} reported no {metric}"
        return _not_measured(name, why, _metric_hint(metric, missing, reported))
    bad = {sub: obs for sub, obs in sides.items() if not _all_finite(obs)}
    if bad:
        return _invalid(name, bad, tuple(_non_finite_note(sub, obs) for sub, obs in bad.items()))
    t_values = {o.seed: o.value for o in sides[treatment]}
    b_values = {o.seed: o.value for o in sides[baseline]}
    seeds = sorted(set(t_values) | set(b_values))
    paired = criterion.paired_by == "seed"
    rows = tuple(PairRow(seed, t_values.get(seed), b_values.get(seed),
                         t_values[seed] - b_values[seed] if paired and seed in t_values and seed in b_values else None)
                 for seed in seeds)
    notes: tuple[str, ...] = ()
    if paired:
        unpaired = [row for row in rows if row.difference is None]
        notes = tuple(f"seed {row.seed}: only {treatment if row.treatment is not None else baseline} has a value; "
                      "left out of the pairing" for row in unpaired)
        if len(unpaired) == len(rows):
            return _not_measured(name, f"no seed has a {metric} from both {treatment} and {baseline}", notes)
        estimate = stats.paired_difference(t_values, b_values)
    else:
        estimate = stats.welch_difference(list(t_values.values()), list(b_values.values()))
    detail = ComparisonDetail(metric, treatment, baseline, paired, math.fsum(t_values.values()) / len(t_values),
                              math.fsum(b_values.values()) / len(b_values), estimate.df, rows)
    how = (f"paired by seed over {estimate.n} seeds" if paired
           else f"unpaired, {len(t_values)} and {len(b_values)} seeds, Welch")
    details = (f"{metric}, {treatment} minus {baseline}", how)
    return _measured(criterion, estimate, _Basis(name, details, treatment), pct, notes, comparison=detail, signed=True)


def _measured(
    criterion: CriterionLike,
    estimate: Estimate,
    basis: _Basis,
    pct: float,
    notes: tuple[str, ...],
    *,
    candidates: tuple[str, ...] = (),
    comparison: ComparisonDetail | None = None,
    signed: bool = False,
) -> Verdict:
    interval = estimate.interval
    if interval is not None and criterion.value_range is not None:
        clipped = stats.clip(interval, *criterion.value_range)
        if clipped != interval:
            notes = (*notes, f"the 95% CI {fmt_interval(interval)} is clipped to {fmt_range(*criterion.value_range)}, "
                             "the values the metric can take")
            interval = clipped
    details = list(basis.details)
    if interval is not None:
        widened = f", widened for the best-of-{estimate.family_size} selection" if estimate.family_size > 1 else ""
        details.append(f"95% CI {fmt_interval(interval)}{widened}")
    mean = estimate.mean
    level = _level(mean, criterion)
    borderline = level in (ACCEPTABLE, MISSES_ACCEPTABLE) and _is_borderline(mean, criterion.acceptable, pct)
    head = f"{basis.subject} of {fmt_signed(mean) if signed else fmt(mean)}"
    if details:
        head += f" ({', '.join(details)})"
    sentence = f"{head} {relation(mean, level, criterion)}"
    if borderline:
        sentence += f" (borderline: within {pct:g}% of the acceptable threshold; review)"
    return Verdict(
        metric=basis.subject,
        level=level,
        value=mean,
        source_sub=basis.sub,
        n_seeds=estimate.n,
        ci95=interval,
        borderline=borderline,
        confidence=_confidence(interval, criterion),
        sentence=sentence,
        notes=notes,
        candidates=candidates,
        comparison=comparison,
    )


def _seed_details(estimate: Estimate) -> tuple[str, ...]:
    return (f"mean of {estimate.n} seeds",) if estimate.n > 1 else ()


def _selection_note(finite: Mapping[str, list[Observation]], estimate: Estimate) -> str:
    means = ", ".join(f"{sub} {fmt(_mean(obs))}" for sub, obs in finite.items())
    k = len(finite)
    if estimate.interval is None:
        return (f"the best of {k} candidates ({means}); with one run each there is no interval, so the "
                "selection effect is not measured: give the subs several seeds, or name one with from:")
    return (f"the best of {k} candidates ({means}); its interval is widened for the selection "
            f"(Bonferroni over {k}): name one sub with from: to judge it alone")


def _metric_hint(metric: str, missing: Sequence[str], reported: Mapping[str, Collection[str]] | None) -> tuple[str, ...]:
    if not reported:
        return ()
    notes = []
    for sub in missing:
        names = sorted(reported.get(sub, ()))
        if not names:
            continue
        close = difflib.get_close_matches(metric, names, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        notes.append(f"{sub} reports {', '.join(names)}{hint}")
    return tuple(notes)


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
        value_text = fmt(means[first_sub])
        sentence = f"{metric} of {value_text} from {first_sub} is invalid (NaN or infinite)"
    else:
        listed = ", ".join(f"{fmt(mean)} from {sub}" for sub, mean in means.items())
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


def _mean(obs: Sequence[Observation]) -> float:
    return math.fsum(o.value for o in obs) / len(obs)


def _best_sub(finite: Mapping[str, list[Observation]], direction: str) -> str:
    sign = 1.0 if direction == "higher" else -1.0
    means = {sub: _mean(obs) for sub, obs in finite.items()}
    return max(means, key=lambda sub: sign * means[sub])


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
    return MISSES_ACCEPTABLE


def _is_borderline(value: float, acceptable: float | None, pct: float) -> bool:
    """Either side of the threshold: a value just over it deserves the same second look.

    Callers ask only for values judged acceptable or missing acceptable: a value that meets the
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


def _non_finite_note(sub: str, obs: Sequence[Observation]) -> str:
    bad = [o for o in obs if not math.isfinite(o.value)]
    if len(obs) == 1:
        return f"{sub} reported {_name_non_finite(bad[0].value)}"
    listed = ", ".join(f"{_name_non_finite(o.value)} for seed {o.seed}" for o in bad)
    return f"{sub} reported {listed}"


def _name_non_finite(value: float) -> str:
    return "NaN" if math.isnan(value) else fmt(value)


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
    if verdict.level in (MISSES_ACCEPTABLE, NOT_MEASURED, INVALID) or verdict.borderline:
        reasons.append(verdict.sentence)
    if verdict.confidence == "low" and verdict.ci95 is not None:
        reasons.append(
            f"{verdict.metric} has low confidence: its 95% CI {fmt_interval(verdict.ci95)}"
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
