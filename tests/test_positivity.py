"""Thresholds and % positive against known truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from cytomsc.positivity import (
    auto_threshold_display,
    control_threshold,
    matched_threshold,
    percent_above,
    valley_threshold,
    wilson_interval,
)


@pytest.mark.parametrize("k,n", [(0, 50), (1, 1000), (95, 100), (980, 1000), (1000, 1000)])
def test_wilson_matches_scipy(k: int, n: int) -> None:
    # scipy's binomtest is an independent implementation of the Wilson score interval.
    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(100 * ref.low, abs=1e-9)
    assert hi == pytest.approx(100 * ref.high, abs=1e-9)


def test_control_threshold_is_the_percentile() -> None:
    rng = np.random.default_rng(1)
    control = rng.normal(0, 100, 200_000)
    # 99.5th percentile of N(0, 100) is 257.58
    assert control_threshold(control, 99.5) == pytest.approx(257.58, rel=0.02)
    assert control_threshold(np.r_[control, np.nan], 99.5) == pytest.approx(257.58, rel=0.02)


def test_percent_positive_recovers_truth_with_control() -> None:
    rng = np.random.default_rng(2)
    n = 20_000
    true_fraction = 0.963
    is_pos = rng.random(n) < true_fraction
    stained = np.where(is_pos, rng.lognormal(np.log(5000), 0.4, n), rng.normal(0, 80, n))
    control = rng.normal(0, 80, n)
    thr = control_threshold(control, 99.5)
    pct, (lo, hi), events = percent_above(stained, thr)
    truth = 100 * is_pos.mean()
    assert events == n
    assert abs(pct - truth) < 0.5  # 0.5 % of negatives (3.7 % of cells) fall above: ~0.02 pt
    assert lo < pct < hi


def test_valley_between_two_peaks_and_none_for_one() -> None:
    rng = np.random.default_rng(3)
    bimodal = np.r_[rng.normal(0.2, 0.05, 5000), rng.normal(0.7, 0.05, 3000)]
    v = valley_threshold(bimodal)
    assert v is not None and 0.33 < v < 0.57
    assert valley_threshold(rng.normal(0.5, 0.05, 8000)) is None


def test_auto_threshold_for_single_peaks() -> None:
    rng = np.random.default_rng(4)
    negatives = rng.normal(0.3, 0.03, 10_000)
    t_neg = auto_threshold_display(negatives)
    assert (negatives > t_neg).mean() < 0.01  # a negative culture reads ~0 % positive
    positives = rng.normal(0.65, 0.04, 10_000)
    t_pos = auto_threshold_display(positives)
    assert (positives > t_pos).mean() > 0.99  # a positive culture reads ~100 % positive


def test_matched_threshold_recovers_truth_under_spreading() -> None:
    """Isotype without spreading; stained negatives 2x wider (spillover from bright dyes)."""
    rng = np.random.default_rng(5)
    n = 40_000
    control = rng.normal(60, 40, n)
    is_pos = rng.random(n) < 0.01
    stained = np.where(is_pos, rng.lognormal(np.log(8000), 0.3, n), rng.normal(60, 80, n))
    plain = control_threshold(control, 99.5)
    assert 100 * (stained > plain).mean() > 3.0  # the naive control threshold overstates
    thr, ratio, moved = matched_threshold(control, stained, 99.5)
    assert ratio == pytest.approx(2.0, rel=0.1) and moved == 0.0
    assert abs(100 * (stained > thr).mean() - 100 * is_pos.mean()) < 0.7
    # no widening when the stained negatives are as narrow as the control
    same = np.where(is_pos, stained, rng.normal(60, 40, n))
    assert matched_threshold(control, same, 99.5) == (plain, 1.0, 0.0)
    # a mostly positive channel: the lower half is not the negatives', so no change
    mostly = rng.lognormal(np.log(8000), 0.3, n)
    assert matched_threshold(control, mostly, 99.5)[1] == 1.0


def test_unstained_control_shifted_to_background_binding() -> None:
    """Stained negatives sit higher than unstained cells (the antibodies' background binding)."""
    rng = np.random.default_rng(6)
    n = 40_000
    unstained = rng.normal(3000, 1500, n)
    is_pos = rng.random(n) < 0.015
    stained = np.where(is_pos, rng.lognormal(np.log(60000), 0.3, n), rng.normal(7000, 2000, n))
    assert 100 * (stained > control_threshold(unstained, 99.5)).mean() > 5
    thr, ratio, moved = matched_threshold(unstained, stained, 99.5, shift=True)
    assert moved == pytest.approx(4000, rel=0.1) and ratio == pytest.approx(4 / 3, rel=0.1)
    assert abs(100 * (stained > thr).mean() - 100 * is_pos.mean()) < 0.7


# ---------------------------------------------------------------------------------------------
# Degenerate distributions (issue 12): every one gets a threshold, in bounded memory


def test_auto_threshold_of_values_a_few_float_steps_apart() -> None:
    """A channel whose values lie within a few float steps of each other (a display squeezed
    by a damaged $PnR): one peak, negative, threshold just above it."""
    y = 0.3 + np.random.default_rng(1).integers(0, 4, 3000) * np.spacing(0.3)
    t = auto_threshold_display(y)
    assert 0.3 < t < 0.32


def test_auto_threshold_of_three_events() -> None:
    """Three gated events: the smoothing kernel was longer than the 256 bins (and its peak
    fell outside them)."""
    assert 0.3 < auto_threshold_display(np.array([0.3, 0.31, 0.32])) < 0.4  # one dim peak
    assert 0.5 < auto_threshold_display(np.array([0.5, 0.9, 0.91])) < 0.9  # one bright peak


def test_density_is_bounded_when_one_value_holds_nearly_every_event() -> None:
    """The issue's CD90: one value for 99.7 % of the events, a few within 3e-5 of it and a
    0.08 % tail. The Silverman kernel, in bins of the 0.1-99.9th percentile range, grew with
    the tail's spread over that range (here to 11 million points; 9.8 GB on a real file)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    y = np.full(12_000, 0.4)
    pick = rng.choice(y.size, 40, replace=False)
    y[pick[:10]] = rng.uniform(0.0, 1.0, 10)
    y[pick[10:]] = 0.4 + 3e-5 * rng.random(30)
    tracemalloc.start()
    try:
        t = auto_threshold_display(y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"{peak / 2**20:.0f} MB"
    assert 0.4 < t <= 1.0  # one (negative) peak at 0.4: the threshold lies above it
