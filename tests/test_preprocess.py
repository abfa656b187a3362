"""Compensation and Logicle against FlowKit (the reference), CSV matrices, and W fitting."""

from __future__ import annotations

import numpy as np
import pytest
from flowkit import Matrix, Sample, transforms

from cytomsc.errors import CytomscError
from cytomsc.fcs import read_fcs
from cytomsc.fcswrite import write_fcs
from cytomsc.preprocess import (
    LogicleParams,
    axis_ticks,
    compensate,
    fit_logicle,
    flowkit_transform,
    logicle,
    logicle_inverse,
    prepare,
    spillover_matrix,
)

PARAMS = [
    LogicleParams(262144, 0.5),
    LogicleParams(262144, 0.0),
    LogicleParams(262144, 2.25),
    LogicleParams(1024, 1.0),
    LogicleParams(262144, 1.2, 4.5, 1.0),
    LogicleParams(1e6, 0.8, 5.5, 0.3),
]


def wide_values(t: float, seed: int = 0) -> np.ndarray:
    """Values spread over nine decades, both signs, plus the awkward points."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(50_000) * 10 ** rng.uniform(-3, 6, 50_000)
    return np.concatenate([x, [0.0, 1e-9, -1e-9, t, -t, 3 * t, 5e3 * t, -5e3 * t]])


@pytest.mark.parametrize("p", PARAMS)
def test_logicle_matches_flowkit(p: LogicleParams) -> None:
    x = wide_values(p.t)
    if p.w == 0:
        # FlowKit's C solver does not converge for |x| < ~1e-8 when W = 0 and returns -1 there;
        # our value (the exact root, ~x/172 for these parameters) is checked separately below.
        x = x[np.abs(x) > 1e-6]
    expected = transforms.LogicleTransform(p.t, p.w, p.m, p.a).apply(x)
    got = logicle(x, p)
    assert np.max(np.abs(got - expected)) < 1e-4
    assert np.max(np.abs(got - expected)) < 1e-6  # the table is in fact much closer
    # 2-D input keeps its shape
    assert logicle(x[:100].reshape(10, 10), p).shape == (10, 10)


@pytest.mark.parametrize("p", PARAMS)
def test_logicle_inverse_round_trip(p: LogicleParams) -> None:
    x = wide_values(p.t, seed=1)
    back = logicle_inverse(logicle(x, p), p)
    assert np.allclose(back, x, rtol=1e-5, atol=1e-6 * p.t)
    y = np.linspace(-0.2, 1.1, 500)
    fk = transforms.LogicleTransform(p.t, p.w, p.m, p.a).inverse(y)
    assert np.allclose(logicle_inverse(y, p), fk, rtol=1e-9, atol=1e-9)


def test_logicle_known_points() -> None:
    p = LogicleParams(262144, 0.5)
    assert logicle(np.array([262144.0]), p)[0] == pytest.approx(1.0, abs=1e-9)
    assert logicle(np.array([0.0]), p)[0] == pytest.approx(0.5 / 4.5, abs=1e-12)  # x1 = W/(M+A)
    assert np.isnan(logicle(np.array([np.nan]), p)[0])
    w0 = LogicleParams(262144, 0.0)
    tiny = np.array([1e-9, -1e-9])
    slope = logicle(np.array([1e-4]), w0)[0] / 1e-4  # linear near 0, odd about 0
    assert np.allclose(logicle(tiny, w0), tiny * slope, rtol=1e-6)
    fk = flowkit_transform(p)
    assert (fk.param_t, fk.param_w, fk.param_m, fk.param_a) == (262144, 0.5, 4.5, 0.0)


def test_fit_logicle_recovers_width_from_negative_spread() -> None:
    rng = np.random.default_rng(3)
    t = 262144.0
    for sigma in (30.0, 300.0, 3000.0):
        neg = rng.normal(0, sigma, 20_000)
        pos = rng.lognormal(np.log(5e4), 0.3, 20_000)
        p = fit_logicle(np.concatenate([neg, pos]), t)
        # the 5th percentile of a half-normal is ~1.96 sigma: the rule's W, within sampling error
        r = sigma * 1.95996
        want = (4.5 - np.log10(t / r)) / 2
        assert p.w == pytest.approx(min(max(want, 0), 2.25), abs=0.02)
        assert p.t == t and p.m == 4.5 and p.a == 0
    assert fit_logicle(rng.normal(0, 1e-3, 5000), t).w == 0.0  # tiny spread: clamped at 0
    assert fit_logicle(rng.normal(0, 1e9, 5000), t).w == 2.25  # huge spread: clamped at M/2
    assert fit_logicle(np.abs(rng.normal(0, 100, 5000)), t).w == 0.5  # no negatives: default


def test_axis_ticks() -> None:
    p = LogicleParams(262144, 0.5)
    ticks = dict((label, pos) for pos, label in axis_ticks(p))
    assert ticks["0"] == pytest.approx(0.5 / 4.5)
    assert ticks["10^5"] == pytest.approx(float(logicle(np.array([1e5]), p)[0]))
    assert "-10^2" in ticks and "10^3" in ticks
    positions = [pos for pos, _ in axis_ticks(p)]
    assert positions == sorted(positions) and all(0 <= x <= 1 for x in positions)


# --------------------------------------------------------------------------------------------
# Compensation

SPILL_NAMES = ["FL1-A", "FL2-A", "FL3-A"]
SPILL = np.array([[1.0, 0.25, 0.05], [0.08, 1.0, 0.3], [0.0, 0.12, 1.0]])


@pytest.fixture
def spill_file(tmp_path):
    rng = np.random.default_rng(7)
    n = 2000
    true = rng.lognormal(6, 1.5, (n, 3)) - 50
    observed = true @ SPILL
    events = np.column_stack(
        [rng.uniform(1e4, 2e5, n), rng.uniform(1e3, 1e5, n), observed, np.arange(n, dtype=float)]
    )
    path = tmp_path / "tube.fcs"
    write_fcs(
        path,
        events,
        ["FSC-A", "SSC-A", *SPILL_NAMES, "Time"],
        ["", "", "CD90 FITC", "CD73 PE", "CD105 PerCP", ""],
        ranges=[262144.0] * 6,
        spillover=(SPILL_NAMES, SPILL),
    )
    return path, true


def test_compensation_equals_flowkit(spill_file) -> None:
    path, true = spill_file
    fcs = read_fcs(path)
    spill = spillover_matrix(fcs, None)
    assert spill is not None and spill[0] == SPILL_NAMES
    ours = compensate(fcs.events, [c.pnn for c in fcs.channels], spill)
    sample = Sample(str(path))
    sample.apply_compensation(Matrix(SPILL, SPILL_NAMES))
    theirs = sample.get_events(source="comp")
    assert np.allclose(ours, theirs, rtol=1e-9, atol=1e-6)
    # and it undoes the spill the file was written with (float32 storage limits the precision)
    assert np.allclose(ours[:, 2:5], true, rtol=1e-4, atol=0.05)
    assert np.array_equal(ours[:, [0, 1, 5]], fcs.events[:, [0, 1, 5]])


def test_comp_none_and_csv(spill_file, tmp_path) -> None:
    path, _ = spill_file
    fcs = read_fcs(path)
    assert spillover_matrix(fcs, "none") is None
    # a CSV with names leading each row, in another order than the file's
    csv = tmp_path / "comp.csv"
    order = [2, 0, 1]
    names = [SPILL_NAMES[i] for i in order]
    sub = SPILL[np.ix_(order, order)]
    lines = ["," + ",".join(names)] + [
        names[i] + "," + ",".join(repr(float(v)) for v in sub[i]) for i in range(3)
    ]
    csv.write_text("\n".join(lines) + "\n")
    got = spillover_matrix(fcs, csv)
    assert got is not None and got[0] == names
    a = compensate(fcs.events, [c.pnn for c in fcs.channels], got)
    b = compensate(fcs.events, [c.pnn for c in fcs.channels], spillover_matrix(fcs, "file"))
    assert np.allclose(a, b, rtol=1e-12, atol=1e-9)
    # a header-only-names CSV (no row names), tab separated
    tsv = tmp_path / "comp.tsv"
    tsv.write_text(
        "\t".join(SPILL_NAMES)
        + "\n"
        + "\n".join("\t".join(repr(float(v)) for v in row) for row in SPILL)
    )
    got = spillover_matrix(fcs, tsv)
    assert got is not None and np.array_equal(got[1], SPILL)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "header row"),
        ("FL1-A,FL2-A\n1,0.1\n", "2 detectors but 1 rows"),
        ("FL1-A,FL2-A\n1,0.1\n0.2\n", "row 3 has 1 values"),
        ("FL1-A,FL2-A\n1,x\n0.2,1\n", "not a number"),
        ("FL1-A,FL9-A\n1,0.1\n0.2,1\n", "not in the file: FL9-A"),
        ("FL1-A,FL1-A\n1,0.1\n0.2,1\n", "repeats"),
        ("FL1-A,FL2-A\n1,1\n1,1\n", "singular"),
        (",FL1-A,FL2-A\nFL2-A,1,0.1\nFL1-A,0.2,1\n", "row 2 is named 'FL2-A'"),
    ],
)
def test_bad_comp_csv(spill_file, tmp_path, text: str, reason: str) -> None:
    path, _ = spill_file
    fcs = read_fcs(path)
    csv = tmp_path / "bad.csv"
    csv.write_text(text)
    with pytest.raises(CytomscError) as err:
        spillover_matrix(fcs, csv)
    assert reason in err.value.message
    assert str(csv) in err.value.message and "\n" not in err.value.message
    with pytest.raises(CytomscError, match="cannot read"):
        spillover_matrix(fcs, tmp_path / "missing.csv")


def test_prepare(spill_file) -> None:
    path, _ = spill_file
    fcs = read_fcs(path)
    prep = prepare(fcs)
    assert prep.channels == ["FSC-A", "SSC-A", *SPILL_NAMES, "Time"]
    assert set(prep.logicle) == set(SPILL_NAMES)
    assert np.array_equal(prep.display[:, [0, 1, 5]], fcs.events[:, [0, 1, 5]])  # raw scatter
    for j, name in enumerate(prep.channels[2:5], start=2):
        p = prep.logicle[name]
        fk = flowkit_transform(p).apply(prep.compensated[:, j])
        assert np.max(np.abs(prep.display[:, j] - fk)) < 1e-4
    shared = {"FL1-A": LogicleParams(262144.0, 1.5)}
    again = prepare(fcs, comp="none", logicle_params=shared)
    assert again.logicle["FL1-A"] == shared["FL1-A"] and again.spill is None
    assert np.array_equal(again.compensated, fcs.events)


# --------------------------------------------------------------------------------------------
# Logicle equal to FlowKit's for every W (issue 13), and for any T a file declares (issue 12)

W_GRID = np.linspace(0.0, 2.25, 226)  # every W in [0, M/2] for M = 4.5, 0.01 apart


def test_d_solves_the_logicle_condition_for_every_w() -> None:
    """d is the root of 2 (ln d - ln b) + w (b + d) = 0: a converged Newton iterate replaced by
    a bisection midpoint (the bug) leaves this far from zero for ~17 % of W."""
    from cytomsc.preprocess import _coef

    for w in W_GRID:
        k = _coef(LogicleParams(1.0, float(w)))
        wn = w / 4.5
        if wn == 0:
            assert k.d == k.b
            continue
        residual = 2 * (np.log(k.d) - np.log(k.b)) + wn * (k.b + k.d)
        assert abs(residual) < 1e-12 * k.b, (w, residual)


@pytest.mark.slow
def test_logicle_equals_flowkit_within_1e9_for_every_w() -> None:
    """On a grid of 226 W values, both ways cytomsc computes the scale (the table for 20,000 or
    more values, Halley's method below) equal FlowKit's LogicleTransform within 1e-9."""
    t = 262144.0
    x = wide_values(t, seed=4)
    x = x[np.abs(x) > 1e-6]  # FlowKit returns -1 for |x| < ~1e-8 at W = 0 (see above)
    x = np.concatenate([x[:21_000], x[-8:]])  # >= 20,000 values: the table
    small = x[::20]  # 1,051 values: solved exactly
    worst = 0.0
    for w in W_GRID:
        p = LogicleParams(t, float(w))
        fk = transforms.LogicleTransform(t, float(w), 4.5, 0.0)
        worst = max(
            worst,
            float(np.max(np.abs(logicle(x, p) - fk.apply(x)))),
            float(np.max(np.abs(logicle(small, p) - fk.apply(small)))),
        )
    assert worst <= 1e-9, worst


@pytest.mark.slow
def test_logicle_equals_flowkit_on_every_corpus_file(corpus, corpus_expected) -> None:
    """Every fluorescence channel of every readable corpus file, with the parameters the
    pipeline fits for it, equals FlowKit's Logicle of the same compensated values."""
    worst, channels = 0.0, 0
    for name, expected in sorted(corpus_expected.items()):
        if expected is None:
            continue
        data = read_fcs(corpus / name)
        try:
            prep = prepare(data)
        except CytomscError:  # a spillover that does not fit: analysed uncompensated
            prep = prepare(data, comp="none")
        for ch, p in prep.logicle.items():
            j = prep.channels.index(ch)
            x = prep.compensated[:, j]
            ok = np.isfinite(x) & ((np.abs(x) > 1e-6 * p.t) | (x == 0) | (p.w > 0))
            if not ok.any():
                continue
            fk = transforms.LogicleTransform(p.t, p.w, p.m, p.a).apply(x[ok])
            worst = max(worst, float(np.max(np.abs(prep.display[ok, j] - fk))))
            channels += 1
    assert channels > 200  # the corpus has 45 readable files, most with several channels
    assert worst <= 1e-9, worst


@pytest.mark.parametrize("n", [1_000, 50_000])
def test_logicle_depends_on_x_over_t_only(n: int) -> None:
    """logicle(x; T) = logicle(x / T; 1): a file declaring T = 1e306 (or data scaled by a
    $PnG of 1e-300) gets finite values, the same as the unscaled data, table or not."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal(n) * 10 ** rng.uniform(-2, 6, n)
    base = logicle(x, LogicleParams(262144.0, 0.7))
    for scale in (1e-290, 1e-30, 1e30, 1e300):
        got = logicle(x * scale, LogicleParams(262144.0 * scale, 0.7))
        assert np.all(np.isfinite(got))
        assert np.max(np.abs(got - base)) < 1e-12
    huge = LogicleParams(1e306, 0.5)
    y = logicle(np.array([0.0, 1e300, 1e306, -1e306]), huge)
    np.testing.assert_allclose(y[[0, 2]], [0.5 / 4.5, 1.0], atol=1e-12)
    assert np.isfinite(y).all() and y[3] < y[0] < y[1] < y[2]
    np.testing.assert_allclose(logicle_inverse(y[2:3], huge), [1e306], rtol=1e-9)


def test_a_range_no_detector_has_is_not_the_scale_top(tmp_path) -> None:
    """$PnR = 1e306 on one channel: the scale's top comes from the data, with a warning; the
    other channels keep their $PnR."""
    rng = np.random.default_rng(6)
    ev = np.column_stack(
        [rng.uniform(1e3, 2e5, 25_000), rng.normal(300, 200, 25_000), rng.normal(500, 200, 25_000)]
    )
    path = tmp_path / "r.fcs"
    write_fcs(path, ev, ["FSC-A", "FITC-A", "PE-A"], ranges=[262144.0, 1e306, 262144.0])
    prep = prepare(read_fcs(path))
    assert prep.logicle["PE-A"].t == 262144.0
    assert prep.logicle["FITC-A"].t == pytest.approx(float(np.float32(ev[:, 1]).max()))
    assert np.isfinite(prep.display).all()
    assert any("FITC-A: $PnR 1e+306 is beyond any detector's range" in w for w in prep.warnings)
