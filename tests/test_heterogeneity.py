"""Heterogeneity: populations, fractions, labels, uncertainty and statistics against known truth.

The cultures come from cytomsc/simulate/populations.py, seen as the pipeline sees them
(positive markers in plot units, log scatter): ``shape="gaussian"`` (the project simulator's
physics) and ``shape="heavy"`` (every population with its own correlation, width, t tails and
skew). The stress grid and a held-out grid are in tests/test_heterogeneity_grid.py; the real
pipeline on the preset in tests/test_heterogeneity_pipeline.py; a real file with an expert's
labels in tests/test_heterogeneity_real.py.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from diptest import diptest
from sklearn.metrics import adjusted_rand_score

from cytomsc.errors import CytomscError
from cytomsc.heterogeneity import (
    describe_heterogeneity,
    dip_test,
    joint_populations,
    matched_f1,
    phenotype_label,
    robust_cv,
)
from cytomsc.populations import PopulationFinder
from cytomsc.results import HeterogeneityResult
from cytomsc.simulate.populations import NAMES, pipeline_view, simulate
from cytomsc.split_test import split_evidence

FAST = {"n_bootstrap": 10}


def test_clear_three_populations_fractions_and_labels():
    c = simulate(
        "three",
        (0.6, 0.3, 0.1),
        [{}, {"FITC-A": -3.5, "APC-A": -3.5}, {"FSC-A": -3.5, "SSC-A": -3.5}],
        n=6000,
        seed=7,
        shape="gaussian",
    )
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
    assert set(res.populations[1].label.split()) == {"CD90", "CD105", "dim"}
    assert res.populations[2].label in ("small, low SSC", "low SSC, small")
    # raw medians: population 2 is CD90-dim, i.e. lower raw FITC than population 1
    assert res.populations[1].medians["FITC-A"] < 0.5 * res.populations[0].medians["FITC-A"]
    assert res.populations[1].medians_by_marker["CD90"] == res.populations[1].medians["FITC-A"]
    h = -sum(f * np.log(f) for f in fr)
    assert res.entropy == pytest.approx(h)
    assert res.effective_number == pytest.approx(np.exp(h))
    # how sure: the resamples' k add up to the resamples, and a clear answer is the usual one
    assert sum(res.k_bootstrap.values()) == FAST["n_bootstrap"]
    assert res.k_bootstrap.get(3, 0) >= 8
    # the report's views: a population histogram per channel, pairs that separate them
    assert set(res.plots.histograms) == set(channels)
    assert all(h.shape[0] == 3 for h in res.plots.histograms.values())
    assert res.plots.pairs and all(a != b for a, b in res.plots.pairs)
    json.dumps({ch: dataclasses.asdict(b) for ch, b in res.bimodality.items()})  # plain values


@pytest.mark.parametrize("seed", range(4))
def test_linear_scatter_is_not_split_into_populations(seed):
    """Cell size is not log-normal on every instrument. A homogeneous culture whose FSC/SSC are
    Gaussian on the linear scale is left-skewed on the log scale; the scatter scale chosen by
    BIC (power 1 here) keeps it one population."""
    c = simulate("lin", (1.0,), [{}], n=10000, seed=7000 + seed, shape="gaussian", scatter="normal")
    X, raw, channels = pipeline_view(c)
    res, _ = describe_heterogeneity(X, channels, NAMES, raw, seed=0, **FAST)
    assert res.n_populations == 1
    chosen = PopulationFinder(log_columns=(0, 1), **FAST).fit(X)
    assert chosen.scatter_power_ == 1.0


@pytest.mark.parametrize(
    ("scatter", "power", "scatter_names"),
    [
        ("normal", 1.0, ("FSC-A", "SSC-A")),
        ("lognormal", 0.0, ("FSC-A", "SSC-A")),
        ("normal", 1.0, ("FS INT", "SS INT")),  # Beckman's names for the same channels
    ],
)
def test_scatter_scale_keeps_size_populations(scatter, power, scatter_names):
    """The scale is chosen before the populations, on the data, so a real small-cell population
    is not absorbed: 10 % of cells 3.5 SD smaller are found on either physics, whatever the
    instrument calls its scatter channels."""
    c = simulate(
        "size",
        (0.9, 0.1),
        [{}, {"FSC-A": -3.5, "SSC-A": -3.5}],
        n=10000,
        seed=7100,
        shape="gaussian",
        scatter=scatter,
    )
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
    assert adjusted_rand_score(c.labels, labels) >= 0.8


@pytest.mark.parametrize("seed", range(6))
def test_skewed_heavy_tailed_population_is_one(seed):
    """The issue's first failure: one skewed, heavy-tailed population (t tails, per-channel
    skew, its own correlation) was split into 2-6. It is one."""
    c = simulate("heavy", (1.0,), [{}], n=8000, seed=8100 + seed, shape="heavy")
    X, raw, channels = pipeline_view(c)
    res, labels = describe_heterogeneity(X, channels, NAMES, raw, seed=seed, **FAST)
    assert res.n_populations == 1 and set(labels) == {1}
    assert res.k_bootstrap.get(1, 0) >= 7  # and the resamples mostly agree
    assert res.entropy == 0.0 and res.effective_number == 1.0
    assert res.populations[0].ci95 == (1.0, 1.0)
    assert res.populations[0].label == "all cells"


@pytest.mark.parametrize(
    ("kind", "shift"),
    [
        ("marker", {"FITC-A": -4.0}),
        ("size", {"FSC-A": 4.0, "SSC-A": 4.0}),
    ],
)
def test_heavy_tailed_minor_population_is_found(kind, shift):
    """A 7 % population 4 SD away, both populations skewed and heavy-tailed and of different
    widths, is found with the right fraction."""
    c = simulate(kind, (0.93, 0.07), [{}, shift], n=8000, seed=8200, shape="heavy")
    X, raw, channels = pipeline_view(c)
    res, labels = describe_heterogeneity(X, channels, NAMES, raw, seed=0, **FAST)
    assert res.n_populations == 2
    assert abs(res.populations[1].fraction - 0.07) < 0.02
    assert adjusted_rand_score(c.labels, labels) >= 0.75


def test_deterministic_for_a_seed():
    c = simulate("d", (0.8, 0.2), [{}, {"FITC-A": -3}], n=4000, seed=11, shape="heavy")
    X, raw, channels = pipeline_view(c)
    a, la = describe_heterogeneity(X, channels, NAMES, raw, seed=5, **FAST)
    b, lb = describe_heterogeneity(X, channels, NAMES, raw, seed=5, **FAST)
    assert np.array_equal(la, lb)
    assert a.populations == b.populations and a.k_bootstrap == b.k_bootstrap
    assert np.array_equal(a.plots.sample, b.plots.sample)


def _negative_pair(seed: int, low: float) -> tuple[np.ndarray, np.ndarray]:
    """Two clear groups in one marker channel (plot units) with an unremarkable second channel;
    ``low``: where the lower group sits."""
    rng = np.random.default_rng(seed)
    n = 6000
    y = (rng.uniform(size=n) < 0.3).astype(int) + 1
    x = np.where(y == 1, low, low + 1.0) + rng.normal(0, 0.12, n)
    return np.column_stack([x, rng.normal(2.5, 0.2, n)]), y


def test_differences_inside_the_negative_region_are_not_populations():
    """A marker's negative region is background: two groups both below the negative ceiling
    (e.g. autofluorescence of two cell sizes in a lineage channel) are not two phenotypes, while
    the same split straddling the ceiling is CD-dim vs CD-bright."""
    X, y = _negative_pair(1, 0.5)
    inside = PopulationFinder(negative_ceilings=(2.0, -np.inf), **FAST).fit(X)
    assert inside.n_populations_ == 1
    blind = PopulationFinder(**FAST).fit(X)  # without ceilings every difference counts
    assert blind.n_populations_ == 2
    X, y = _negative_pair(1, 1.5)
    across = PopulationFinder(negative_ceilings=(2.0, -np.inf), **FAST).fit(X)
    assert across.n_populations_ == 2
    assert adjusted_rand_score(y, across.predict(X)) >= 0.95
    with pytest.raises(CytomscError, match="3 values for 2 channels"):
        PopulationFinder(negative_ceilings=(1.0, 2.0, 3.0)).fit(X)


def test_split_evidence_refuses_skew_and_finds_two_modes():
    """The 1-D test behind every split: a skewed, heavy-tailed unimodal sample is one
    population however the mixture cut it; two modes 4 SD apart are two."""
    rng = np.random.default_rng(4)
    x = np.sinh(np.arcsinh(rng.standard_t(6, 8000)) + 0.6)
    one = split_evidence(
        x[:, None], (x > np.median(x)).astype(float), (x <= np.median(x)).astype(float), np.eye(1)
    )
    assert one.gain < 0
    y = np.r_[rng.normal(0, 1, 6000), rng.normal(4, 1, 2000)]
    ra = (y < 2).astype(float)
    two = split_evidence(y[:, None], ra, 1 - ra, np.eye(1))
    assert two.gain > 100 and two.separation > 3
    assert np.median(two.resample(rng, 50)) > 100


def test_phenotype_label_says_plus_minus_across_the_ceiling():
    center, scale = np.zeros(2), np.ones(2)
    med = np.array([-1.0, 0.0])
    assert phenotype_label(med, center, scale, ["FITC-A", "PE-A"], NAMES) == "CD90 dim"
    straddles = np.array([True, False])
    word = phenotype_label(
        med,
        center,
        scale,
        ["FITC-A", "PE-A"],
        NAMES,
        ceilings=np.array([-0.5, -np.inf]),
        straddles=straddles,
    )
    assert word == "CD90−"


def test_joint_populations_share_ids_across_cultures():
    shifts = [{}, {"FITC-A": -4, "APC-A": -4}]
    a = simulate("a", (0.7, 0.3), shifts, n=4000, seed=21, shape="gaussian")
    b = simulate("b", (0.95, 0.05), shifts, n=4000, seed=22, shape="gaussian")
    (xa, _, channels), (xb, _, _) = pipeline_view(a), pipeline_view(b)
    out = joint_populations({"a": xa, "b": xb}, channels, NAMES, seed=0, per_culture=2000)
    assert len(out["populations"]) == 2
    assert out["table"]["a"][1] == pytest.approx(0.3, abs=0.03)
    assert out["table"]["b"][1] == pytest.approx(0.05, abs=0.02)
    assert adjusted_rand_score(a.labels, out["labels"]["a"]) >= 0.9
    json.dumps({k: v for k, v in out.items() if k != "labels"})


def test_dip_agrees_with_the_diptest_package():
    """dip_test subsamples (with 10^5 events every shoulder is "significant") and then is the
    maintained diptest package's; on a sample below the subsample size it is exactly that."""
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 1, 900), rng.normal(6, 1, 900)]
    d, p = dip_test(x)
    assert (d, p) == pytest.approx(diptest(x))
    assert d > 0.05 and p < 0.001
    d1, p1 = dip_test(rng.normal(size=50000))
    assert d1 < 0.02 and p1 > 0.05


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
        describe_heterogeneity(
            np.full((100, 2), 130000.0), ["FSC-A", "a"], {}, np.full((100, 2), 130000.0)
        )


def test_matched_f1_against_hand_counts():
    truth = np.array(["a"] * 6 + ["b"] * 4)
    assert matched_f1(truth, np.r_[np.ones(6), np.full(4, 2)]) == 1.0
    # b split in two: a matches cluster 1 (F1 1), b its larger half (2*2/(4+2) = 2/3)
    assert matched_f1(truth, np.r_[np.ones(6), 2, 2, 3, 3]) == pytest.approx((1 + 2 / 3) / 2)
    # one cluster for all: a gets it (2*6/16), b is unmatched (0)
    assert matched_f1(truth, np.ones(10)) == pytest.approx(0.75 / 2)


def test_csv_says_how_sure():
    """The bootstrap's k reaches the CSVs a LIMS reads, the most frequent answer first."""
    from cytomsc.results import csv_rows, culture_rows
    from cytomsc.simulate.reports import build_batch

    batch = build_batch(n=2000)
    clustered = [c for c in batch.cultures if c.heterogeneity is not None]
    assert clustered
    _, per_culture = culture_rows(batch, "2026-12-02T00:00:00+00:00")
    by_name = {r["culture"]: r for r in per_culture}
    for c in clustered:
        k = c.heterogeneity.n_populations
        assert by_name[c.culture]["k_resamples"] == f"{k} in 17 of 20; {k + 1} in 3 of 20"
        rows = [r for r in csv_rows(batch) if r["culture"] == c.culture]
        assert rows and all(r["k_resamples"] == by_name[c.culture]["k_resamples"] for r in rows)


def test_pooled_fit_reads_each_culture_with_its_own_weights():
    """A batch-wide model carries the pool's proportions; read with them, a culture with 40 % of a
    population that is 22 % of the pool is pulled toward 22 %. With the building blocks fixed
    and the culture's own weights re-estimated, each culture keeps its own fraction."""
    shifts = [{}, {"FITC-A": -3, "APC-A": -3}]
    a = simulate("a", (0.6, 0.4), shifts, n=6000, seed=31, shape="gaussian")
    b = simulate("b", (0.97, 0.03), shifts, n=6000, seed=32, shape="gaussian")
    (xa, _, _), (xb, _, _) = pipeline_view(a), pipeline_view(b)
    f = PopulationFinder(random_state=0, n_bootstrap=0, log_columns=(0, 1), n_subsample=12000).fit(
        np.vstack([xa, xb])
    )
    assert f.n_populations_ == 2
    for x, c, tol in ((xa, a, 0.01), (xb, b, 0.005)):
        truth = float(np.mean(c.labels == 2))
        own = float(np.mean(f.predict_own_weights(x) == 2))
        plain = float(np.mean(f.predict(x) == 2))
        assert abs(own - truth) <= tol
        assert abs(own - truth) <= abs(plain - truth) + 0.002


def test_resamples_put_the_reported_k_first():
    """The page and the CSVs print the bootstrap in one order: the reported k (even when the
    resamples favour another), then the rest by frequency."""
    c = simulate("r", (1.0,), [{}], n=2000, seed=3, shape="gaussian")
    X, raw, channels = pipeline_view(c)
    res, _ = describe_heterogeneity(X, channels, NAMES, raw, seed=0, n_bootstrap=0)
    res = dataclasses.replace(res, n_populations=2, k_bootstrap={1: 3, 2: 5, 3: 12})
    assert res.resamples() == [(2, 5), (3, 12), (1, 3)]
    res = dataclasses.replace(res, k_bootstrap={1: 4})
    assert res.resamples() == [(2, 0), (1, 4)]
