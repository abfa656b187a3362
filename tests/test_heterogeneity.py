"""Heterogeneity: populations, fractions, labels and statistics against known truth.

These tests use the simulator's Gaussian cultures (``cytomsc.simulate.populations``), seen as
the pipeline sees them (positive markers in plot units, log scatter). The issue's validation
(>= 30 cultures, the confusion table) runs through the real pipeline in
tests/test_heterogeneity_pipeline.py; the heavy-tailed stress grid is in
docs/heterogeneity-validation.md (benchmarks/validate_heterogeneity.py).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from cytomsc.errors import CytomscError
from cytomsc.heterogeneity import (
    PopulationFinder,
    describe_heterogeneity,
    dip_p_value,
    dip_statistic,
    dip_test,
    joint_populations,
    robust_cv,
)
from cytomsc.results import HeterogeneityResult
from cytomsc.simulate.populations import NAMES, pipeline_view, simulate

FAST = {"n_bootstrap": 6, "bootstrap_size": 2000}


@pytest.mark.slow
def test_clear_three_populations_fractions_and_labels():
    c = simulate("three", (0.6, 0.3, 0.1),
                 [{}, {"FITC-A": -3.5, "APC-A": -3.5}, {"FSC-A": -3.5, "SSC-A": -3.5}],
                 n=6000, seed=7, shape="gaussian")
    X, raw, channels = pipeline_view(c)
    res, labels = describe_heterogeneity(X, channels, NAMES, raw, seed=3, **FAST)
    assert isinstance(res, HeterogeneityResult)
    assert res.n_populations == 3
    assert adjusted_rand_score(c.labels, labels) >= 0.9
    fr = [p.fraction for p in res.populations]
    assert fr == sorted(fr, reverse=True)
    for p, truth in zip(res.populations, (0.6, 0.3, 0.1), strict=True):
        assert abs(p.fraction - truth) < 0.03
        assert p.ci95[0] <= p.fraction <= p.ci95[1]
    assert res.populations[1].label == "CD90 dim CD105 dim" or \
        res.populations[1].label == "CD105 dim CD90 dim"
    assert res.populations[2].label in ("small, low SSC", "low SSC, small")
    # raw medians: population 2 is CD90-dim, i.e. lower raw FITC than population 1
    assert res.populations[1].medians["FITC-A"] < 0.5 * res.populations[0].medians["FITC-A"]
    h = -sum(f * np.log(f) for f in fr)
    assert res.entropy == pytest.approx(h)
    assert res.effective_number == pytest.approx(np.exp(h))
    assert res.embedding.shape == (5000, 2) and res.embedding_labels.shape == (5000,)
    # one typed value per channel, plain numbers inside (summary.json holds them as they are)
    assert set(res.bimodality) == set(res.channels)
    json.dumps({k: dataclasses.asdict(v) for k, v in res.bimodality.items()})


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_linear_scatter_is_not_split_into_populations(seed):
    """Cell size is not log-normal on every instrument. A homogeneous culture whose FSC/SSC are
    Gaussian on the linear scale is left-skewed on the log scale, and a log-only clustering
    invents populations there; the scatter scale chosen by BIC (power 1 here) says one."""
    c = simulate("lin", (1.0,), [{}], n=10000, seed=7000 + seed, shape="gaussian",
                 scatter="normal")
    X, raw, channels = pipeline_view(c)
    res, _ = describe_heterogeneity(X, channels, NAMES, raw, seed=0, **FAST)
    assert res.n_populations == 1
    chosen = PopulationFinder(log_columns=(0, 1), **FAST).fit(X)
    assert chosen.scatter_power_ == 1.0
    log_only = PopulationFinder(log_columns=(0, 1), scatter_powers=(0.0,), **FAST).fit(X)
    assert log_only.n_populations_ >= 3  # what the choice of scale prevents


@pytest.mark.parametrize(("scatter", "power", "scatter_names"), [
    ("normal", 1.0, ("FSC-A", "SSC-A")), ("lognormal", 0.0, ("FSC-A", "SSC-A")),
    ("normal", 1.0, ("FS INT", "SS INT")),  # Beckman's names for the same channels
])
@pytest.mark.slow
def test_scatter_scale_keeps_size_populations(scatter, power, scatter_names):
    """The scale is chosen jointly with the populations, so a real small-cell population is not
    absorbed: 10 % of cells 2 SD smaller are found on either physics, whatever the instrument
    calls its scatter channels."""
    c = simulate("size", (0.9, 0.1), [{}, {"FSC-A": -2.0, "SSC-A": -2.0}], n=10000, seed=7100,
                 shape="gaussian", scatter=scatter)
    X, raw, channels = pipeline_view(c)
    channels = [*scatter_names, *channels[2:]]
    finder = PopulationFinder(log_columns=(0, 1), **FAST).fit(X)
    assert finder.scatter_power_ == power
    assert finder.n_populations_ == 2
    res, labels = describe_heterogeneity(X, channels, NAMES, raw, seed=0, **FAST)
    assert res.scatter_scale == {0.0: "log", 1.0: "linear"}[power]
    assert res.n_populations == 2
    assert abs(res.populations[1].fraction - 0.1) < 0.03
    assert res.populations[1].label in ("small, low SSC", "low SSC, small")
    assert adjusted_rand_score(c.labels, labels) >= 0.3  # 2 SD: ceiling ~0.5


@pytest.mark.slow
def test_deterministic_for_a_seed():
    c = simulate("d", (0.8, 0.2), [{}, {"FITC-A": -3}], n=4000, seed=11, shape="gaussian")
    X, raw, channels = pipeline_view(c)
    a, la = describe_heterogeneity(X, channels, NAMES, raw, seed=5, **FAST)
    b, lb = describe_heterogeneity(X, channels, NAMES, raw, seed=5, **FAST)
    assert np.array_equal(la, lb)
    assert a.populations == b.populations
    assert np.array_equal(a.embedding, b.embedding)


@pytest.mark.slow
def test_one_population_has_full_entropy_zero():
    c = simulate("h", (1.0,), [{}], n=4000, seed=2, shape="gaussian")
    X, raw, channels = pipeline_view(c)
    res, labels = describe_heterogeneity(X, channels, NAMES, raw, seed=0, **FAST)
    assert res.n_populations == 1 and set(labels) == {1}
    assert res.entropy == 0.0 and res.effective_number == 1.0
    assert res.populations[0].ci95 == (1.0, 1.0)


@pytest.mark.slow
def test_joint_populations_share_ids_across_cultures():
    shifts = [{}, {"FITC-A": -4, "APC-A": -4}]
    a = simulate("a", (0.7, 0.3), shifts, n=4000, seed=21, shape="gaussian")
    b = simulate("b", (0.95, 0.05), shifts, n=4000, seed=22, shape="gaussian")
    (xa, _, channels), (xb, _, _) = pipeline_view(a), pipeline_view(b)
    out = joint_populations({"a": xa, "b": xb}, channels, NAMES, seed=0, per_culture=2000,
                            **FAST)
    assert len(out["populations"]) == 2
    assert out["table"]["a"][1] == pytest.approx(0.3, abs=0.03)
    assert out["table"]["b"][1] == pytest.approx(0.05, abs=0.02)
    assert adjusted_rand_score(a.labels, out["labels"]["a"]) >= 0.9
    json.dumps({k: v for k, v in out.items() if k != "labels"})


def test_dip_known_values():
    assert dip_statistic(np.array([0, 0, 0, 1, 1, 1.0])) == pytest.approx(0.25)
    assert dip_statistic(np.arange(1.0, 6.0)) == pytest.approx(0.1)  # 1/(2n): unimodal
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 1, 1000), rng.normal(6, 1, 1000)]
    d, p = dip_test(x)
    assert d > 0.05 and p < 0.0011
    d1, p1 = dip_test(rng.normal(size=5000))
    assert d1 < 0.01 and p1 > 0.5


def test_dip_p_value_is_uniform_under_the_null():
    """Independent of the embedded table: fresh uniform samples give ~5 % rejections."""
    rng = np.random.default_rng(12345)
    p = np.array([dip_p_value(dip_statistic(rng.uniform(size=300)), 300) for _ in range(400)])
    assert 0.02 <= np.mean(p < 0.05) <= 0.09
    assert 0.4 <= np.median(p) <= 0.6


def test_robust_cv():
    rng = np.random.default_rng(1)
    x = rng.normal(1000, 100, 20000)
    assert robust_cv(x) == pytest.approx(0.1, rel=0.05)
    assert np.isnan(robust_cv(rng.normal(0, 1, 100) - 5))


def test_bad_input_is_one_line_error():
    with pytest.raises(CytomscError, match="NaN"):
        PopulationFinder().fit(np.array([[1.0, np.nan], [2.0, 3.0]]))
    with pytest.raises(CytomscError, match="too few"):
        describe_heterogeneity(np.zeros((10, 2)), ["a", "b"], {}, np.zeros((10, 2)))
    with pytest.raises(CytomscError, match="do not match"):
        describe_heterogeneity(np.zeros((100, 2)), ["a"], {}, np.zeros((100, 2)))
    with pytest.raises(CytomscError, match="log10"):  # linear FSC passed where log10 belongs
        describe_heterogeneity(np.full((100, 2), 130000.0), ["FSC-A", "a"], {},
                               np.full((100, 2), 130000.0))
