"""Unit tests for labrunner.verdicts: levels, sources, seeds, sentences, recommendation, gates."""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import pytest
import yaml
from scipy import stats as scipy_stats

from labrunner import verdicts
from labrunner.verdicts import (
    ACCEPTABLE,
    MISSES_ACCEPTABLE,
    FAILURE,
    INVALID,
    INVESTIGATE,
    NOT_MEASURED,
    PIVOT,
    PROCEED,
    TARGET_MET,
    ExperimentOutcome,
    Observation,
    Verdict,
    evaluate_criterion,
    gate_status,
    recommend,
)


@dataclass(frozen=True)
class Criterion:
    target: float | None = None
    acceptable: float | None = None
    failure: float | None = None
    direction: Literal["higher", "lower"] = "higher"
    from_sub: str | None = None
    borderline_pct: float | None = None
    value_range: tuple[float | None, float | None] | None = None


ACCURACY = Criterion(target=0.97, acceptable=0.95, failure=0.90, direction="higher")
LPIPS = Criterion(target=0.25, acceptable=0.35, failure=0.50, direction="lower")


def seeds(sub_id: str, *values: float) -> list[Observation]:
    return [Observation(sub_id=sub_id, seed=seed, value=value) for seed, value in enumerate(values)]


def judge(criterion: Criterion, *values: float, metric: str = "accuracy") -> Verdict:
    return evaluate_criterion(metric, criterion, seeds("e1_1", *values))


# --- levels ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "level"),
    [
        (0.99, TARGET_MET),
        (0.97, TARGET_MET),
        (0.96, ACCEPTABLE),
        (0.95, ACCEPTABLE),
        (0.93, MISSES_ACCEPTABLE),
        (0.9000001, MISSES_ACCEPTABLE),
        (0.90, FAILURE),
        (0.5, FAILURE),
    ],
)
def test_evaluate_criterion_higher_levels_at_and_between_tiers(value: float, level: str) -> None:
    assert judge(ACCURACY, value).level == level


@pytest.mark.parametrize(
    ("value", "level"),
    [
        (0.1, TARGET_MET),
        (0.25, TARGET_MET),
        (0.3, ACCEPTABLE),
        (0.35, ACCEPTABLE),
        (0.4, MISSES_ACCEPTABLE),
        (0.4999999, MISSES_ACCEPTABLE),
        (0.50, FAILURE),
        (0.9, FAILURE),
    ],
)
def test_evaluate_criterion_lower_levels_at_and_between_tiers(value: float, level: str) -> None:
    assert judge(LPIPS, value, metric="LPIPS").level == level


def test_evaluate_criterion_without_target_meeting_acceptable_is_acceptable() -> None:
    criterion = Criterion(acceptable=0.95, failure=0.90)
    assert judge(criterion, 0.99).level == ACCEPTABLE


def test_evaluate_criterion_without_failure_anything_short_is_below_acceptable() -> None:
    criterion = Criterion(target=0.97, acceptable=0.95)
    verdict = judge(criterion, 0.01)
    assert verdict.level == MISSES_ACCEPTABLE
    assert verdict.sentence == "accuracy of 0.01 misses the 0.95 acceptable threshold"


def test_evaluate_criterion_with_only_target_short_of_it_is_below_acceptable() -> None:
    criterion = Criterion(target=0.97)
    assert judge(criterion, 0.97).level == TARGET_MET
    verdict = judge(criterion, 0.96)
    assert verdict.level == MISSES_ACCEPTABLE
    assert verdict.sentence == "accuracy of 0.96 misses the 0.97 target"
    assert verdict.borderline is False


def test_evaluate_criterion_with_target_and_failure_names_both() -> None:
    verdict = judge(Criterion(target=0.97, failure=0.90), 0.93)
    assert verdict.level == MISSES_ACCEPTABLE
    assert "misses the 0.97 target but clears the 0.9 failure threshold" in verdict.sentence


def test_evaluate_criterion_with_only_failure_clearing_it_is_acceptable() -> None:
    criterion = Criterion(failure=0.5, direction="lower")
    verdict = judge(criterion, 0.4, metric="loss")
    assert verdict.level == ACCEPTABLE
    assert verdict.sentence == "loss of 0.4 clears the 0.5 failure threshold, the only one set"
    assert judge(criterion, 0.5, metric="loss").level == FAILURE


def test_evaluate_criterion_without_any_tier_raises() -> None:
    with pytest.raises(ValueError, match="none of target, acceptable, failure"):
        judge(Criterion(), 0.5)


def test_evaluate_criterion_unknown_direction_raises() -> None:
    criterion = Criterion(acceptable=0.5, direction="up")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'higher' or 'lower'"):
        judge(criterion, 0.5)


# --- borderline ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "level"), [(0.52, ACCEPTABLE), (0.5, ACCEPTABLE), (0.48, MISSES_ACCEPTABLE)]
)
def test_evaluate_criterion_borderline_on_either_side(value: float, level: str) -> None:
    verdict = judge(Criterion(acceptable=0.5, failure=0.2), value)
    assert verdict.level == level
    assert verdict.borderline is True
    assert "(borderline: within 5% of the acceptable threshold; review)" in verdict.sentence


@pytest.mark.parametrize("value", [0.53, 0.47])
def test_evaluate_criterion_outside_margin_not_borderline(value: float) -> None:
    verdict = judge(Criterion(acceptable=0.5, failure=0.2), value)
    assert verdict.borderline is False
    assert "borderline" not in verdict.sentence


@pytest.mark.parametrize(("value", "level"), [(0.974, TARGET_MET), (0.91, FAILURE)])
def test_evaluate_criterion_borderline_only_for_acceptable_call(value: float, level: str) -> None:
    verdict = judge(Criterion(target=0.97, acceptable=0.95, failure=0.92), value)
    assert verdict.level == level
    assert verdict.borderline is False


def test_evaluate_criterion_borderline_pct_from_criterion_wins_over_default() -> None:
    verdict = judge(Criterion(acceptable=0.5, borderline_pct=10.0), 0.54)
    assert verdict.borderline is True
    assert "within 10% of the acceptable threshold" in verdict.sentence


def test_evaluate_criterion_borderline_pct_keyword_used_when_criterion_has_none() -> None:
    observations = seeds("e1_1", 0.52)
    verdict = evaluate_criterion("acc", Criterion(acceptable=0.5), observations, borderline_pct=1.0)
    assert verdict.borderline is False


def test_evaluate_criterion_zero_acceptable_uses_absolute_margin() -> None:
    criterion = Criterion(acceptable=0.0, direction="lower")
    assert judge(criterion, 0.04, metric="bias").borderline is True
    assert judge(criterion, 0.06, metric="bias").borderline is False


# --- NaN, inf, not measured ------------------------------------------------------------------


def test_evaluate_criterion_nan_is_invalid_and_names_sub() -> None:
    verdict = evaluate_criterion("accuracy", ACCURACY, seeds("e1_2", math.nan))
    assert verdict.level == INVALID
    assert verdict.sentence == "accuracy of nan from e1_2 is invalid (NaN or infinite)"
    assert verdict.source_sub == "e1_2"
    assert verdict.value is not None and math.isnan(verdict.value)
    assert verdict.confidence is None


def test_evaluate_criterion_inf_is_invalid() -> None:
    verdict = evaluate_criterion("loss", LPIPS, seeds("e1_1", 0.3, -math.inf))
    assert verdict.level == INVALID
    assert "of -inf from e1_1 is invalid" in verdict.sentence
    assert verdict.notes == ("e1_1 reported -inf for seed 1",)


def test_evaluate_criterion_invalid_in_several_subs_lists_each() -> None:
    observations = seeds("e1_1", math.nan) + seeds("e1_2", math.inf)
    verdict = evaluate_criterion("accuracy", ACCURACY, observations)
    assert verdict.level == INVALID
    assert verdict.sentence == "accuracy is invalid (NaN or infinite): nan from e1_1, inf from e1_2"


def test_evaluate_criterion_nan_sub_left_out_when_another_is_finite() -> None:
    observations = seeds("e1_1", 0.96) + seeds("e1_3", math.nan)
    verdict = evaluate_criterion("accuracy", ACCURACY, observations)
    assert verdict.level == ACCEPTABLE
    assert verdict.source_sub == "e1_1"
    assert verdict.notes == ("e1_3 reported NaN; left out",)
    assert "(from e1_1)" in verdict.sentence


def test_evaluate_criterion_inf_sub_left_out_even_if_it_would_be_best() -> None:
    observations = seeds("e1_1", 0.93) + seeds("e1_2", 0.99, math.inf) + seeds("e1_3", 0.94)
    verdict = evaluate_criterion("accuracy", ACCURACY, observations)
    assert verdict.source_sub == "e1_3"
    assert verdict.level == MISSES_ACCEPTABLE
    assert verdict.notes[0] == "e1_2 reported inf for seed 1; left out"
    assert verdict.candidates == ("e1_1", "e1_3")  # the NaN sub could not be chosen: k is 2
    assert "(best of 2: e1_3)" in verdict.sentence


def test_evaluate_criterion_no_observations_is_not_measured() -> None:
    verdict = evaluate_criterion("accuracy", ACCURACY, [])
    assert verdict.level == NOT_MEASURED
    assert verdict.sentence == "accuracy was not measured: no sub-experiment reported it"
    assert (verdict.value, verdict.source_sub, verdict.n_seeds) == (None, None, 0)
    assert verdict.confidence is None
    assert verdict.borderline is False


# --- source of the compared value ------------------------------------------------------------


def test_evaluate_criterion_from_sub_compares_only_that_sub() -> None:
    criterion = Criterion(target=0.97, acceptable=0.95, failure=0.90, from_sub="e1_2")
    observations = seeds("e1_1", 0.99) + seeds("e1_2", 0.93)
    verdict = evaluate_criterion("accuracy", criterion, observations)
    assert verdict.level == MISSES_ACCEPTABLE
    assert verdict.source_sub == "e1_2"
    assert verdict.sentence.startswith("accuracy of 0.93 (from e1_2) misses the 0.95 acceptable threshold")


def test_evaluate_criterion_from_sub_missing_is_not_measured_naming_it() -> None:
    criterion = Criterion(acceptable=0.95, from_sub="e1_3")
    verdict = evaluate_criterion("accuracy", criterion, seeds("e1_1", 0.99))
    assert verdict.level == NOT_MEASURED
    assert verdict.sentence == (
        "accuracy was not measured: expected from e1_3, which reported no value"
    )
    assert verdict.notes == ("reported by e1_1, which this criterion does not compare",)


def test_evaluate_criterion_from_sub_nan_is_invalid_even_with_other_subs_finite() -> None:
    criterion = Criterion(acceptable=0.95, from_sub="e1_2")
    observations = seeds("e1_1", 0.99) + seeds("e1_2", math.nan)
    verdict = evaluate_criterion("accuracy", criterion, observations)
    assert verdict.level == INVALID
    assert verdict.sentence == "accuracy of nan from e1_2 is invalid (NaN or infinite)"


def test_evaluate_criterion_best_sub_is_highest_for_higher() -> None:
    observations = seeds("e1_1", 0.91) + seeds("e1_2", 0.974) + seeds("e1_3", 0.96)
    verdict = evaluate_criterion("accuracy", ACCURACY, observations)
    assert verdict.source_sub == "e1_2"
    assert verdict.sentence == "accuracy of 0.974 (best of 3: e1_2) meets the 0.97 target"


def test_evaluate_criterion_best_sub_is_lowest_for_lower() -> None:
    observations = seeds("e2_1", 0.4) + seeds("e2_2", 0.264)
    verdict = evaluate_criterion("LPIPS", LPIPS, observations)
    assert verdict.source_sub == "e2_2"
    assert verdict.level == ACCEPTABLE


def test_evaluate_criterion_best_sub_compares_means_over_seeds() -> None:
    observations = seeds("e1_1", 0.99, 0.90) + seeds("e1_2", 0.95, 0.96)
    assert evaluate_criterion("accuracy", ACCURACY, observations).source_sub == "e1_2"


def test_evaluate_criterion_single_sub_sentence_names_no_source() -> None:
    assert judge(ACCURACY, 0.98).sentence == "accuracy of 0.98 meets the 0.97 target"


# --- seeds, interval, confidence -------------------------------------------------------------


def test_evaluate_criterion_multi_seed_mean_and_student_t_interval() -> None:
    values = (0.96, 0.97, 0.98)
    verdict = judge(ACCURACY, *values)
    half_width = 4.3027 * statistics.stdev(values) / math.sqrt(3)
    assert verdict.value == pytest.approx(0.97)
    assert verdict.n_seeds == 3
    assert verdict.ci95 == pytest.approx((0.97 - half_width, 0.97 + half_width))


@pytest.mark.parametrize("n_seeds", [31, 40, 60, 200])
def test_evaluate_criterion_many_seeds_use_the_t_quantile_not_the_normal_one(n_seeds: int) -> None:
    values = [0.95 + 0.001 * (i % 5) for i in range(n_seeds)]
    verdict = judge(ACCURACY, *values)
    assert verdict.ci95 is not None
    expected = scipy_stats.t.interval(0.95, n_seeds - 1, loc=statistics.fmean(values), scale=scipy_stats.sem(values))
    assert verdict.ci95 == pytest.approx(expected, rel=1e-9)
    assert verdict.ci95[1] - verdict.ci95[0] > 2 * 1.96 * statistics.stdev(values) / math.sqrt(n_seeds)


def test_evaluate_criterion_interval_clear_of_threshold_gives_high_confidence() -> None:
    verdict = judge(ACCURACY, 0.965, 0.97, 0.975)
    assert verdict.ci95 is not None and verdict.ci95[0] > 0.95
    assert verdict.confidence == "high"


def test_evaluate_criterion_interval_straddling_threshold_gives_low_confidence() -> None:
    verdict = judge(ACCURACY, 0.96, 0.97, 0.98)
    assert verdict.level == TARGET_MET
    assert verdict.confidence == "low"


def test_evaluate_criterion_confidence_uses_target_without_acceptable() -> None:
    criterion = Criterion(target=0.3, direction="lower")
    assert judge(criterion, 0.2, 0.21, 0.22, metric="loss").confidence == "high"
    assert judge(criterion, 0.25, 0.30, 0.35, metric="loss").confidence == "low"


def test_evaluate_criterion_single_seed_has_medium_confidence_and_no_interval() -> None:
    verdict = judge(ACCURACY, 0.96)
    assert verdict.ci95 is None
    assert verdict.confidence == "medium"


# --- best-of-k selection ---------------------------------------------------------------------


def test_evaluate_criterion_best_of_k_names_candidates_and_widens_interval() -> None:
    best = (0.962, 0.966, 0.97)
    observations = seeds("e1_1", 0.91, 0.92, 0.93) + seeds("e1_2", *best) + seeds("e1_3", 0.95, 0.955, 0.96)
    verdict = evaluate_criterion("accuracy", ACCURACY, observations)
    assert verdict.source_sub == "e1_2"
    assert verdict.candidates == ("e1_1", "e1_2", "e1_3")
    expected = scipy_stats.t.interval(1 - 0.05 / 3, 2, loc=statistics.fmean(best), scale=scipy_stats.sem(best))
    assert verdict.ci95 == pytest.approx(expected, rel=1e-9)
    assert "(best of 3: e1_2, mean of 3 seeds, 95% CI" in verdict.sentence
    assert "widened for the best-of-3 selection" in verdict.sentence
    assert verdict.notes == ("the best of 3 candidates (e1_1 0.92, e1_2 0.966, e1_3 0.955); its interval is widened "
                             "for the selection (Bonferroni over 3): name one sub with from: to judge it alone",)
    assert verdict.to_dict()["candidates"] == ["e1_1", "e1_2", "e1_3"]


def test_evaluate_criterion_selection_does_not_claim_high_confidence_on_a_selection_effect() -> None:
    best = (0.9585, 0.96, 0.9615)  # alone: 95% CI 0.9577 to 0.9623, clear of acceptable 0.95
    alone = evaluate_criterion("accuracy", replace(ACCURACY, from_sub="e1_2"), seeds("e1_2", *best))
    assert alone.confidence == "high"
    others = [seeds(f"e1_{i}", 0.90, 0.91, 0.92) for i in (3, 4, 5, 6, 7, 8, 9)]
    selected = evaluate_criterion("accuracy", ACCURACY, seeds("e1_2", *best) + [o for obs in others for o in obs])
    assert selected.source_sub == "e1_2" and len(selected.candidates) == 8
    assert selected.ci95 is not None and selected.ci95[0] < 0.95 < selected.ci95[1]
    assert selected.confidence == "low"


def test_evaluate_criterion_from_sub_is_no_selection() -> None:
    observations = seeds("e1_1", 0.91, 0.93) + seeds("e1_2", 0.96, 0.97)
    verdict = evaluate_criterion("accuracy", replace(ACCURACY, from_sub="e1_2"), observations)
    assert verdict.candidates == ()
    assert verdict.ci95 == pytest.approx(scipy_stats.t.interval(0.95, 1, loc=0.965, scale=scipy_stats.sem([0.96, 0.97])))


def test_evaluate_criterion_selection_of_single_runs_says_it_cannot_measure_the_effect() -> None:
    verdict = evaluate_criterion("accuracy", ACCURACY, seeds("e1_1", 0.91) + seeds("e1_2", 0.96))
    assert verdict.candidates == ("e1_1", "e1_2") and verdict.ci95 is None
    assert "with one run each there is no interval, so the selection effect is not measured" in verdict.notes[0]


# --- range -----------------------------------------------------------------------------------


def test_evaluate_criterion_range_clips_the_interval_with_a_note() -> None:
    loss = Criterion(target=0.05, acceptable=0.1, failure=0.3, direction="lower", value_range=(0.0, None))
    verdict = judge(loss, 0.01, 0.02, 0.09, metric="loss")
    unclipped = scipy_stats.t.interval(0.95, 2, loc=0.04, scale=scipy_stats.sem([0.01, 0.02, 0.09]))
    assert unclipped[0] < 0
    assert verdict.ci95 == pytest.approx((0.0, unclipped[1]))
    assert "(mean of 3 seeds, 95% CI 0 to 0.1483) meets the 0.05 target" in verdict.sentence
    assert verdict.notes == (f"the 95% CI {unclipped[0]:.4g} to {unclipped[1]:.4g} is clipped to [0, ∞), "
                             "the values the metric can take",)


def test_evaluate_criterion_range_leaves_an_interval_inside_it_alone() -> None:
    verdict = judge(replace(ACCURACY, value_range=(0.0, 1.0)), 0.96, 0.97, 0.98)
    assert verdict.notes == () and verdict.ci95 == judge(ACCURACY, 0.96, 0.97, 0.98).ci95


# --- comparisons -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Compare:
    treatment: str
    baseline: str


@dataclass(frozen=True)
class ComparisonCriterion(Criterion):
    compare: Compare | None = None
    metric: str | None = None
    paired_by: str | None = None


GAIN = ComparisonCriterion(target=0.01, acceptable=0.005, failure=0.0, compare=Compare("mlp", "linear"),
                           metric="accuracy", paired_by="seed")
MLP = (0.9822, 0.9800, 0.9756, 0.9844)
LINEAR = (0.9733, 0.9756, 0.9711, 0.9778)


def pairs(treatment: tuple[float, ...] = MLP, baseline: tuple[float, ...] = LINEAR) -> list[Observation]:
    return seeds("mlp", *treatment) + seeds("linear", *baseline) + seeds("other", 0.5)


def test_evaluate_comparison_paired_mean_difference_and_interval_match_scipy() -> None:
    verdict = verdicts.evaluate_comparison("gain", GAIN, pairs())
    expected = scipy_stats.ttest_rel(MLP, LINEAR).confidence_interval(0.95)
    assert verdict.value == pytest.approx(statistics.fmean(m - b for m, b in zip(MLP, LINEAR)))
    assert verdict.ci95 == pytest.approx((expected.low, expected.high), rel=1e-9)
    assert (verdict.level, verdict.n_seeds, verdict.source_sub) == (ACCEPTABLE, 4, "mlp")
    assert verdict.confidence == "low"  # the interval straddles the 0.005 acceptable line
    assert verdict.sentence.startswith("gain of +0.0061 (accuracy, mlp minus linear, paired by seed over 4 seeds, 95% CI ")
    assert verdict.sentence.endswith("meets the 0.005 acceptable threshold but misses the 0.01 target")
    detail = verdict.comparison
    assert detail is not None and detail.paired and detail.df == 3
    assert [row.seed for row in detail.rows] == [0, 1, 2, 3]
    assert detail.rows[0].difference == pytest.approx(MLP[0] - LINEAR[0])
    assert yaml.safe_load(yaml.safe_dump(verdict.to_dict()))["comparison"]["method"] == "paired t"


def test_evaluate_comparison_unpaired_is_welch_and_matches_scipy() -> None:
    welch = replace(GAIN, paired_by=None)
    treatment, baseline = MLP + (0.99,), LINEAR[:3]
    verdict = verdicts.evaluate_comparison("gain", welch, pairs(treatment, baseline))
    result = scipy_stats.ttest_ind(treatment, baseline, equal_var=False)
    expected = result.confidence_interval(0.95)
    assert verdict.ci95 == pytest.approx((expected.low, expected.high), rel=1e-9)
    assert verdict.value == pytest.approx(statistics.fmean(treatment) - statistics.fmean(baseline))
    assert verdict.comparison is not None and verdict.comparison.df == pytest.approx(result.df)
    assert all(row.difference is None for row in verdict.comparison.rows)
    assert "(accuracy, mlp minus linear, unpaired, 5 and 3 seeds, Welch, 95% CI" in verdict.sentence


def test_evaluate_comparison_pairing_removes_shared_seed_noise() -> None:
    # each seed moves both models together: paired, the gain is clear; unpaired, it is lost in the noise
    linear = (0.90, 0.95, 0.92, 0.97)
    mlp = tuple(value + 0.02 + 0.001 * i for i, value in enumerate(linear))
    paired = verdicts.evaluate_comparison("gain", GAIN, pairs(mlp, linear))
    unpaired = verdicts.evaluate_comparison("gain", replace(GAIN, paired_by=None), pairs(mlp, linear))
    assert paired.confidence == "high" and paired.level == TARGET_MET
    assert unpaired.confidence == "low" and unpaired.value == pytest.approx(paired.value)


def test_evaluate_comparison_failure_when_the_treatment_does_not_help() -> None:
    verdict = verdicts.evaluate_comparison("gain", GAIN, pairs(LINEAR, MLP))
    assert verdict.level == FAILURE
    assert verdict.sentence.startswith("gain of -0.0061 (")
    assert verdict.sentence.endswith("reaches the 0 failure threshold")


def test_evaluate_comparison_unpaired_seed_is_left_out_and_named() -> None:
    verdict = verdicts.evaluate_comparison("gain", GAIN, pairs(MLP, LINEAR[:3]))
    assert verdict.n_seeds == 3
    assert verdict.notes == ("seed 3: only mlp has a value; left out of the pairing",)
    assert verdict.comparison is not None and verdict.comparison.rows[3].baseline is None


def test_evaluate_comparison_missing_metric_is_not_measured_with_a_suggestion() -> None:
    verdict = verdicts.evaluate_comparison("gain", replace(GAIN, metric="acuracy"), [],
                                           reported={"mlp": ["accuracy", "ece"], "linear": ["accuracy"]})
    assert verdict.level == NOT_MEASURED
    assert verdict.sentence == "gain was not measured: mlp and linear reported no acuracy"
    assert verdict.notes == ("mlp reports accuracy, ece; did you mean 'accuracy'?",
                             "linear reports accuracy; did you mean 'accuracy'?")


def test_evaluate_comparison_non_finite_side_is_invalid() -> None:
    verdict = verdicts.evaluate_comparison("gain", GAIN, pairs(MLP[:3] + (math.nan,)))
    assert verdict.level == INVALID
    assert verdict.notes == ("mlp reported NaN for seed 3",)


def test_evaluate_comparison_lower_is_better_and_range() -> None:
    drop = ComparisonCriterion(target=-0.02, acceptable=-0.01, failure=0.0, direction="lower", value_range=(-1.0, 1.0),
                               compare=Compare("mlp", "linear"), metric="ece", paired_by="seed")
    verdict = verdicts.evaluate_comparison("ece_drop", drop, pairs((0.02, 0.021, 0.019), (0.035, 0.034, 0.036)))
    assert verdict.level == ACCEPTABLE and verdict.confidence == "high"
    assert verdict.sentence.startswith("ece_drop of -0.015 (ece, mlp minus linear")


# --- sentences -------------------------------------------------------------------------------


def test_evaluate_criterion_sentence_target_met_names_best_seeds_and_interval() -> None:
    observations = seeds("e1_1", 0.93) + seeds("e1_2", 0.973, 0.974, 0.975)
    verdict = evaluate_criterion("accuracy", ACCURACY, observations)
    assert verdict.sentence.startswith(
        "accuracy of 0.974 (best of 2: e1_2, mean of 3 seeds, 95% CI 0.9704 to 0.9776, widened for the"
        " best-of-2 selection) meets the 0.97 target"
    )


def test_evaluate_criterion_sentence_lower_acceptable_says_target_not_met() -> None:
    verdict = judge(LPIPS, 0.264, metric="LPIPS")
    assert verdict.sentence == (
        "LPIPS of 0.264 meets the 0.35 acceptable threshold but misses the 0.25 target"
    )


def test_evaluate_criterion_sentence_lower_is_better_misses_reads_the_right_way() -> None:
    # the example: ece 0.0346 against acceptable <= 0.03 used to read "below acceptable"
    ece = Criterion(target=0.02, acceptable=0.03, failure=0.05, direction="lower")
    verdict = judge(ece, 0.0346, metric="ece")
    assert verdict.level == MISSES_ACCEPTABLE == "misses acceptable"
    assert verdict.sentence == "ece of 0.0346 misses the 0.03 acceptable threshold but clears the 0.05 failure threshold"
    assert "below" not in verdict.sentence and "above" not in verdict.sentence


def test_evaluate_criterion_sentence_below_acceptable_above_failure() -> None:
    verdict = judge(ACCURACY, 0.93)
    assert verdict.sentence == (
        "accuracy of 0.93 misses the 0.95 acceptable threshold"
        " but clears the 0.9 failure threshold"
        " (borderline: within 5% of the acceptable threshold; review)"
    )


def test_evaluate_criterion_sentence_failure_higher_and_lower() -> None:
    assert judge(ACCURACY, 0.88).sentence == (
        "accuracy of 0.88 reaches the 0.9 failure threshold"
    )
    assert judge(LPIPS, 0.6, metric="LPIPS").sentence == (
        "LPIPS of 0.6 reaches the 0.5 failure threshold"
    )


def test_evaluate_criterion_sentence_at_acceptable_threshold() -> None:
    assert "accuracy of 0.95 meets the 0.95 acceptable threshold but" in judge(ACCURACY, 0.95).sentence


def test_evaluate_criterion_sentence_uses_four_significant_digits() -> None:
    assert judge(ACCURACY, 0.974123).sentence.startswith("accuracy of 0.9741 ")


def test_evaluate_criterion_sentence_float32_noise_reads_as_the_table_does() -> None:
    # float32 0.98 is 0.98000001907...: the table prints 0.98, so the sentence does too
    verdict = judge(ACCURACY, 0.9800000190734863)
    assert verdict.sentence == "accuracy of 0.98 meets the 0.97 target"


def test_evaluate_criterion_sentence_says_by_how_much_when_rounding_hides_a_miss() -> None:
    verdict = judge(ACCURACY, 0.94996)
    assert verdict.sentence.startswith("accuracy of 0.95 misses the 0.95 acceptable threshold (misses it by 4e-05)")


# --- to_dict ---------------------------------------------------------------------------------


def test_verdict_to_dict_is_yaml_safe() -> None:
    observations = seeds("e1_1", 0.96, 0.97) + seeds("e1_2", math.nan)
    data = evaluate_criterion("accuracy", ACCURACY, observations).to_dict()
    assert isinstance(data["ci95"], list)
    assert data["notes"] == ["e1_2 reported NaN; left out"]
    assert yaml.safe_load(yaml.safe_dump(data)) == data


def test_verdict_to_dict_keeps_nan_as_float() -> None:
    data = evaluate_criterion("accuracy", ACCURACY, seeds("e1_1", math.nan)).to_dict()
    assert isinstance(data["value"], float) and math.isnan(data["value"])
    assert data["ci95"] is None
    yaml.safe_dump(data)


# --- recommend -------------------------------------------------------------------------------


def test_recommend_pivot_on_any_failure_naming_metric() -> None:
    good = judge(ACCURACY, 0.99)
    bad = judge(LPIPS, 0.7, metric="LPIPS")
    recommendation = recommend([good, bad])
    assert recommendation.decision == PIVOT
    assert len(recommendation.reasons) == 1
    assert recommendation.reasons[0].startswith("LPIPS of 0.7")


@pytest.mark.parametrize(
    "verdict",
    [
        judge(ACCURACY, 0.901),  # misses acceptable, not borderline
        evaluate_criterion("accuracy", ACCURACY, []),  # not measured
        judge(ACCURACY, math.nan),  # invalid
        judge(ACCURACY, 0.955),  # acceptable but borderline
    ],
    ids=["below-acceptable", "not-measured", "invalid", "borderline"],
)
def test_recommend_investigate_when_unsure(verdict: Verdict) -> None:
    recommendation = recommend([judge(ACCURACY, 0.99), verdict])
    assert recommendation.decision == INVESTIGATE
    assert recommendation.reasons == (verdict.sentence,)


def test_recommend_investigate_on_low_confidence() -> None:
    verdict = judge(Criterion(acceptable=0.5), 0.4, 0.6, 0.8)
    assert (verdict.level, verdict.borderline, verdict.confidence) == (ACCEPTABLE, False, "low")
    recommendation = recommend([verdict])
    assert recommendation.decision == INVESTIGATE
    assert "accuracy has low confidence" in recommendation.reasons[0]


def test_recommend_proceed_when_all_acceptable_or_better() -> None:
    verdicts_ = [judge(ACCURACY, 0.99), judge(LPIPS, 0.3, metric="LPIPS")]
    recommendation = recommend(verdicts_)
    assert recommendation.decision == PROCEED
    assert recommendation.reasons == tuple(v.sentence for v in verdicts_)


def test_recommend_without_criteria_investigates() -> None:
    expected = verdicts.Recommendation(INVESTIGATE, ("no success criteria in the plan",))
    assert recommend([]) == expected


# --- gate_status -----------------------------------------------------------------------------


def test_gate_status_passed_when_all_completed_and_proceed() -> None:
    gate = gate_status(
        {
            "e1": ExperimentOutcome("completed", "proceed"),
            "e2": ExperimentOutcome("completed", "proceed"),
        }
    )
    assert (gate.status, gate.blockers) == ("passed", ())


def test_gate_status_failed_on_pivot_lists_blockers() -> None:
    gate = gate_status(
        {"e1": ExperimentOutcome("completed", "pivot"), "e3": ExperimentOutcome("pending")}
    )
    assert gate.status == "failed"
    assert gate.blockers == ("e1: recommendation is pivot", "e3: not run yet")


def test_gate_status_pending_names_each_blocker() -> None:
    gate = gate_status(
        {
            "e1": ExperimentOutcome("completed", "investigate"),
            "e2-foo": ExperimentOutcome("failed", failed_subs=("e2_3",)),
            "e3": ExperimentOutcome("pending"),
            "e4": ExperimentOutcome("completed", "proceed"),
            "e5": ExperimentOutcome("failed", failed_subs=("e5_1", "e5_2")),
        }
    )
    assert gate.status == "pending"
    assert gate.blockers == (
        "e1: recommendation is investigate",
        "e2-foo: 1 sub-experiment failed (e2_3)",
        "e3: not run yet",
        "e5: 2 sub-experiments failed (e5_1, e5_2)",
    )


def test_gate_status_failed_experiment_is_pending_not_failed() -> None:
    gate = gate_status({"e2": ExperimentOutcome("failed")})
    assert (gate.status, gate.blockers) == ("pending", ("e2: failed",))


def test_gate_status_completed_without_decision_blocks() -> None:
    gate = gate_status({"e1": ExperimentOutcome("completed")})
    assert gate.blockers == ("e1: completed but has no recommendation",)


def test_gate_status_without_experiments_is_pending() -> None:
    assert gate_status({}).status == "pending"


def test_experiment_outcome_unknown_status_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="completed, failed, pending"):
        ExperimentOutcome("done")
    with pytest.raises(ValueError, match="proceed, pivot, investigate"):
        ExperimentOutcome("completed", "go")


# --- module ----------------------------------------------------------------------------------


def test_verdicts_imports_without_numpy() -> None:
    src_dir = Path(verdicts.__file__).resolve().parents[1]
    code = (
        f"import sys; sys.path.insert(0, {str(src_dir)!r}); import labrunner.verdicts; "
        "heavy = {'numpy', 'scipy', 'pandas'} & set(sys.modules); assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
