"""Unit tests for labrunner.verdicts: levels, sources, seeds, sentences, recommendation, gates."""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
import yaml

from labrunner import verdicts
from labrunner.verdicts import (
    ACCEPTABLE,
    BELOW_ACCEPTABLE,
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
        (0.93, BELOW_ACCEPTABLE),
        (0.9000001, BELOW_ACCEPTABLE),
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
        (0.4, BELOW_ACCEPTABLE),
        (0.4999999, BELOW_ACCEPTABLE),
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
    assert verdict.level == BELOW_ACCEPTABLE
    assert verdict.sentence == "accuracy of 0.01 is below the 0.95 acceptable threshold"


def test_evaluate_criterion_with_only_target_short_of_it_is_below_acceptable() -> None:
    criterion = Criterion(target=0.97)
    assert judge(criterion, 0.97).level == TARGET_MET
    verdict = judge(criterion, 0.96)
    assert verdict.level == BELOW_ACCEPTABLE
    assert verdict.sentence == "accuracy of 0.96 is below the 0.97 target"
    assert verdict.borderline is False


def test_evaluate_criterion_with_target_and_failure_names_both() -> None:
    verdict = judge(Criterion(target=0.97, failure=0.90), 0.93)
    assert verdict.level == BELOW_ACCEPTABLE
    assert "below the 0.97 target but above the 0.9 failure threshold" in verdict.sentence


def test_evaluate_criterion_with_only_failure_clearing_it_is_acceptable() -> None:
    criterion = Criterion(failure=0.5, direction="lower")
    verdict = judge(criterion, 0.4, metric="loss")
    assert verdict.level == ACCEPTABLE
    assert "below the 0.5 failure threshold" in verdict.sentence
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
    ("value", "level"), [(0.52, ACCEPTABLE), (0.5, ACCEPTABLE), (0.48, BELOW_ACCEPTABLE)]
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
    assert verdict.level == BELOW_ACCEPTABLE
    assert verdict.notes == ("e1_2 reported inf for seed 1; left out",)
    assert "(best: e1_3)" in verdict.sentence


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
    assert verdict.level == BELOW_ACCEPTABLE
    assert verdict.source_sub == "e1_2"
    assert verdict.sentence.startswith("accuracy of 0.93 (from e1_2) is below")


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
    assert verdict.sentence == "accuracy of 0.974 (best: e1_2) meets the 0.97 target"


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


def test_evaluate_criterion_many_seeds_use_normal_quantile() -> None:
    values = [0.95 + 0.001 * (i % 5) for i in range(40)]
    verdict = judge(ACCURACY, *values)
    assert verdict.ci95 is not None
    half_width = 1.96 * statistics.stdev(values) / math.sqrt(40)
    assert verdict.ci95[1] - verdict.ci95[0] == pytest.approx(2 * half_width)


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


# --- sentences -------------------------------------------------------------------------------


def test_evaluate_criterion_sentence_target_met_names_best_seeds_and_interval() -> None:
    observations = seeds("e1_1", 0.93) + seeds("e1_2", 0.973, 0.974, 0.975)
    verdict = evaluate_criterion("accuracy", ACCURACY, observations)
    assert verdict.sentence.startswith(
        "accuracy of 0.974 (best: e1_2, mean of 3 seeds, 95% CI 0.9715–"
    )
    assert verdict.sentence.endswith(") meets the 0.97 target")


def test_evaluate_criterion_sentence_lower_acceptable_says_target_not_met() -> None:
    verdict = judge(LPIPS, 0.264, metric="LPIPS")
    assert verdict.sentence == (
        "LPIPS of 0.264 is below the 0.35 acceptable threshold but does not meet the 0.25 target"
    )


def test_evaluate_criterion_sentence_below_acceptable_above_failure() -> None:
    verdict = judge(ACCURACY, 0.93)
    assert verdict.sentence == (
        "accuracy of 0.93 is below the 0.95 acceptable threshold"
        " but above the 0.9 failure threshold"
        " (borderline: within 5% of the acceptable threshold; review)"
    )


def test_evaluate_criterion_sentence_failure_higher_and_lower() -> None:
    assert judge(ACCURACY, 0.88).sentence == (
        "accuracy of 0.88 is at or below the 0.9 failure threshold"
    )
    assert judge(LPIPS, 0.6, metric="LPIPS").sentence == (
        "LPIPS of 0.6 is at or above the 0.5 failure threshold"
    )


def test_evaluate_criterion_sentence_at_acceptable_threshold() -> None:
    assert "is at the 0.95 acceptable threshold" in judge(ACCURACY, 0.95).sentence


def test_evaluate_criterion_sentence_uses_four_significant_digits() -> None:
    assert judge(ACCURACY, 0.974123).sentence.startswith("accuracy of 0.9741 ")


def test_evaluate_criterion_sentence_adds_digits_to_keep_value_apart_from_threshold() -> None:
    verdict = judge(ACCURACY, 0.94996)
    assert verdict.sentence.startswith("accuracy of 0.94996 is below the 0.95 acceptable")


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
        judge(ACCURACY, 0.901),  # below acceptable, not borderline
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
