"""Unit tests for labrunner.stats, against scipy (which labrunner itself never imports)."""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from labrunner import stats

DFS = [1, 2, 3, 4, 5, 9, 29, 30, 31, 40, 45, 60, 61, 100, 1000, 12345, 99_999, 100_000, 10**6, 10**9]
WELCH_DFS = [0.5, 1.3, 2.5, 3.7, 7.31, 18.04, 33.3]
PROBABILITIES = [0.6, 0.9, 0.975, 0.99, 0.995, 0.9975, 0.99875, 0.9999]


@pytest.mark.parametrize("df", DFS + WELCH_DFS)
def test_t_quantile_matches_scipy_for_any_degrees_of_freedom(df: float) -> None:
    for p in PROBABILITIES:
        assert stats.t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-9), p


@pytest.mark.parametrize("df", [31, 45, 60])
def test_t_quantile_past_30_df_is_wider_than_the_normal_quantile(df: int) -> None:
    # the old table fell back on 1.96 here: intervals 1-2% too narrow at 31-60 df (3-4% with fewer)
    assert stats.t_quantile(0.975, df) > 1.96 * 1.01


def test_t_quantile_is_symmetric_and_zero_at_the_median() -> None:
    assert stats.t_quantile(0.5, 4) == 0.0
    assert stats.t_quantile(0.025, 4) == pytest.approx(-stats.t_quantile(0.975, 4))


@pytest.mark.parametrize(("p", "df"), [(0.0, 3), (1.0, 3), (1.5, 3), (0.9, 0), (0.9, -2)])
def test_t_quantile_rejects_impossible_arguments(p: float, df: float) -> None:
    with pytest.raises(ValueError, match="probability|degrees of freedom"):
        stats.t_quantile(p, df)


@pytest.mark.parametrize("df", [1, 3, 30.5, 1000])
def test_t_upper_tail_matches_scipy(df: float) -> None:
    for t in (-2.0, 0.0, 0.3, 1.0, 2.5, 10.0, 300.0):
        assert stats.t_upper_tail(t, df) == pytest.approx(scipy_stats.t.sf(t, df), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("values", [[0.96, 0.97, 0.98], [1.0, 2.0], [0.1 * i for i in range(45)]])
def test_mean_estimate_is_the_student_t_interval(values: list[float]) -> None:
    estimate = stats.mean_estimate(values)
    expected = scipy_stats.t.interval(0.95, len(values) - 1, loc=statistics.fmean(values), scale=scipy_stats.sem(values))
    assert estimate.interval == pytest.approx(expected, rel=1e-9)
    assert (estimate.n, estimate.df, estimate.family_size) == (len(values), len(values) - 1, 1)


@pytest.mark.parametrize("k", [2, 3, 10])
def test_mean_estimate_widens_for_a_best_of_k_selection_bonferroni(k: int) -> None:
    values = [0.96, 0.97, 0.985, 0.975]
    estimate = stats.mean_estimate(values, family_size=k)
    expected = scipy_stats.t.interval(1 - 0.05 / k, 3, loc=statistics.fmean(values), scale=scipy_stats.sem(values))
    assert estimate.interval == pytest.approx(expected, rel=1e-9)
    assert estimate.family_size == k
    plain = stats.mean_estimate(values).interval
    assert plain is not None and estimate.interval is not None
    assert estimate.interval[0] < plain[0] and estimate.interval[1] > plain[1]


def test_mean_estimate_of_one_value_has_no_interval() -> None:
    assert stats.mean_estimate([0.5]) == stats.Estimate(0.5, 1, None, None, 1)


def test_paired_difference_matches_scipy_ttest_rel() -> None:
    treatment = {0: 0.9756, 1: 0.9822, 2: 0.9800, 3: 0.9711}
    baseline = {0: 0.9711, 1: 0.9733, 2: 0.9778, 3: 0.9689}
    estimate = stats.paired_difference(treatment, baseline)
    expected = scipy_stats.ttest_rel(list(treatment.values()), list(baseline.values())).confidence_interval(0.95)
    assert estimate.interval == pytest.approx((expected.low, expected.high), rel=1e-9)
    assert estimate.mean == pytest.approx(statistics.fmean(t - b for t, b in zip(treatment.values(), baseline.values())))
    assert (estimate.n, estimate.df) == (4, 3)


def test_paired_difference_pairs_by_key_and_ignores_the_unpaired() -> None:
    estimate = stats.paired_difference({0: 1.0, 1: 2.0, 7: 100.0}, {1: 1.5, 0: 0.5, 3: -100.0})
    assert (estimate.mean, estimate.n) == (0.5, 2)
    with pytest.raises(ValueError, match="nothing pairs"):
        stats.paired_difference({0: 1.0}, {1: 1.0})


def test_welch_difference_matches_scipy_ttest_ind_unequal_variances() -> None:
    treatment, baseline = [0.981, 0.976, 0.984, 0.979, 0.99], [0.971, 0.9689, 0.9733]
    estimate = stats.welch_difference(treatment, baseline)
    result = scipy_stats.ttest_ind(treatment, baseline, equal_var=False)
    expected = result.confidence_interval(0.95)
    assert estimate.interval == pytest.approx((expected.low, expected.high), rel=1e-9)
    assert estimate.df == pytest.approx(result.df, rel=1e-12)
    assert estimate.mean == pytest.approx(statistics.fmean(treatment) - statistics.fmean(baseline))


def test_welch_difference_with_one_value_on_a_side_has_no_interval() -> None:
    estimate = stats.welch_difference([0.98, 0.97], [0.96])
    assert estimate.interval is None and estimate.mean == pytest.approx(0.015)


def test_welch_difference_without_spread_is_a_point() -> None:
    assert stats.welch_difference([1.0, 1.0], [0.5, 0.5]).interval == (0.5, 0.5)


@pytest.mark.parametrize(("interval", "bounds", "clipped"), [
    ((-0.02, 0.05), (0.0, None), (0.0, 0.05)),
    ((0.97, 1.03), (0.0, 1.0), (0.97, 1.0)),
    ((0.1, 0.2), (0.0, 1.0), (0.1, 0.2)),
    ((-3.0, -1.0), (0.0, None), (0.0, 0.0)),
    ((-1.0, 5.0), (None, None), (-1.0, 5.0)),
])
def test_clip_cuts_the_interval_to_the_metric_range(interval: tuple[float, float], bounds: tuple[float | None, float | None],
                                                    clipped: tuple[float, float]) -> None:
    assert stats.clip(interval, *bounds) == clipped


def test_stats_imports_without_numpy_or_scipy() -> None:
    src_dir = Path(stats.__file__).resolve().parents[1]
    code = (f"import sys; sys.path.insert(0, {str(src_dir)!r}); import labrunner.stats, labrunner.verdicts, labrunner.grid; "
            "heavy = {'numpy', 'scipy', 'pandas'} & set(sys.modules); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_t_quantile_is_fast_enough_for_every_aggregate() -> None:
    import time

    stats.t_quantile.cache_clear()
    start = time.perf_counter()
    for df in range(1, 201):
        stats.t_quantile(0.975, df + 0.5)
    assert time.perf_counter() - start < 2.0  # ~0.1 s here; aggregates need a handful
    assert math.isfinite(stats.t_quantile(0.975, 0.01))
