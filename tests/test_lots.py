"""Comparability statistics (cytomsc/lots.py) against reference computations with scipy.

The groups' tests are checked against ``scipy.stats.ttest_ind`` (an independent implementation
of Welch's and Student's t), the single-lot test against the Agresti-Caffo formula written out
here with ``scipy.stats.norm``, on data whose equivalence decision is known by construction.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import pytest
from scipy import stats

from cytomsc.errors import CytomscError
from cytomsc.history import Lot, MarkerValue
from cytomsc.lots import (
    compare,
    parse_margins,
    pooled,
    proportions,
    split_groups,
    welch,
)

rng = np.random.default_rng(16)
# (before, after, margin): equivalent, clearly different, borderline, unequal variances and sizes
CASES = [
    (rng.normal(99.4, 0.2, 8), rng.normal(99.45, 0.2, 8), 0.5),
    (rng.normal(99.4, 0.2, 6), rng.normal(98.0, 0.3, 6), 0.5),
    (rng.normal(99.4, 0.3, 5), rng.normal(99.1, 0.3, 5), 0.5),
    (rng.normal(1.0, 0.1, 4), rng.normal(1.1, 0.5, 9), 0.75),
    (np.array([99.1, 99.3, 99.2]), np.array([99.2, 99.0, 99.4, 99.3]), 0.2),
]


def _scipy_tost(
    a: np.ndarray, b: np.ndarray, margin: float, equal_var: bool
) -> tuple[float, float]:
    lower = stats.ttest_ind(b + margin, a, equal_var=equal_var, alternative="greater").pvalue
    upper = stats.ttest_ind(b - margin, a, equal_var=equal_var, alternative="less").pvalue
    return float(lower), float(upper)


@pytest.mark.parametrize(("a", "b", "margin"), CASES)
def test_welch_tost_matches_scipy(a: np.ndarray, b: np.ndarray, margin: float) -> None:
    d = welch(list(a), list(b), margin)
    lower, upper = _scipy_tost(a, b, margin, equal_var=False)
    assert d.p_lower == pytest.approx(lower, rel=1e-9, abs=1e-15)
    assert d.p_upper == pytest.approx(upper, rel=1e-9, abs=1e-15)
    assert d.equivalent == (max(lower, upper) < 0.05)
    ref = stats.ttest_ind(b, a, equal_var=False)
    assert d.df == pytest.approx(ref.df, rel=1e-12)
    ci = ref.confidence_interval(0.95)
    assert d.ci95 == pytest.approx((ci.low, ci.high), rel=1e-9)
    ci90 = ref.confidence_interval(0.90)
    assert d.ci90 == pytest.approx((ci90.low, ci90.high), rel=1e-9)
    # TOST at 5 % is the 90 % interval inside the margin
    assert d.equivalent == (-margin < ci90.low and ci90.high < margin)


def test_the_cases_cover_both_decisions() -> None:
    decisions = [welch(list(a), list(b), m).equivalent for a, b, m in CASES]
    assert True in decisions and False in decisions


@pytest.mark.parametrize(
    ("a", "b", "margin"),
    [
        (np.array([99.2]), np.array([99.1, 99.3, 99.25, 99.4]), 0.5),
        (np.array([99.2]), np.array([98.1, 98.3, 98.2]), 0.5),
        (np.array([1.0, 1.2, 0.9]), np.array([1.05]), 0.3),
    ],
)
def test_pooled_tost_matches_scipy(a: np.ndarray, b: np.ndarray, margin: float) -> None:
    d = pooled(list(a), list(b), margin)
    lower, upper = _scipy_tost(a, b, margin, equal_var=True)
    assert (d.p_lower, d.p_upper) == pytest.approx((lower, upper), rel=1e-9, abs=1e-15)
    assert d.equivalent == (max(lower, upper) < 0.05)
    ci = stats.ttest_ind(b, a, equal_var=True).confidence_interval(0.95)
    assert d.ci95 == pytest.approx((ci.low, ci.high), rel=1e-9)


def _agresti_caffo(
    pa: float, na: int, pb: float, nb: int, margin: float
) -> tuple[float, float, tuple[float, float]]:
    """The reference: Agresti & Caffo (2000), written out independently."""
    xa, xb = round(pa / 100 * na), round(pb / 100 * nb)
    ta, tb = (xa + 1) / (na + 2), (xb + 1) / (nb + 2)
    se = np.sqrt(ta * (1 - ta) / (na + 2) + tb * (1 - tb) / (nb + 2))
    d = tb - ta
    m = margin / 100
    z = stats.norm.ppf(0.975)
    return (
        float(stats.norm.sf((d + m) / se)),
        float(stats.norm.sf((m - d) / se)),
        (100 * (d - z * se), 100 * (d + z * se)),
    )


@pytest.mark.parametrize(
    ("pa", "na", "pb", "nb", "margin", "equivalent"),
    [
        (99.5, 20000, 99.4, 20000, 0.5, True),  # the same within half a point
        (99.5, 20000, 97.0, 20000, 1.0, False),  # 2.5 points apart
        (99.5, 400, 99.0, 400, 0.5, False),  # too few events to tell
        (0.5, 15000, 0.6, 15000, 0.5, True),  # a negative marker near 0 %
        (100.0, 5000, 100.0, 5000, 0.2, True),  # both at 100 %: the adjustment keeps an SE
    ],
)
def test_proportions_tost_matches_reference(
    pa: float, na: int, pb: float, nb: int, margin: float, equivalent: bool
) -> None:
    d = proportions(pa, na, pb, nb, margin)
    lower, upper, ci = _agresti_caffo(pa, na, pb, nb, margin)
    assert (d.p_lower, d.p_upper) == pytest.approx((lower, upper), rel=1e-9, abs=1e-300)
    assert d.ci95 == pytest.approx(ci, rel=1e-9, abs=1e-12)
    assert d.equivalent is equivalent is (max(lower, upper) < 0.05)
    assert d.diff == pytest.approx(pb - pa)


def test_no_spread_is_exact() -> None:
    d = welch([99.0, 99.0], [99.3, 99.3], 0.5)
    assert d.ci95 == (pytest.approx(0.3), pytest.approx(0.3)) and d.equivalent is True
    assert welch([99.0, 99.0], [99.8, 99.8], 0.5).equivalent is False


def _lot(name: str, day: int, values: dict[str, float], pops: tuple = ()) -> Lot:
    return Lot(
        lot=name,
        culture=name,
        culture_id=day,
        donor="D1",
        passage=day,
        acquired=date(2025, 1, 1) + timedelta(days=day),
        date_text=None,
        stored_at=datetime(2025, 6, 1),
        verdict="pass",
        panel_id="isct-2006",
        markers={
            m: MarkerValue(
                m,
                "positive" if v > 50 else "negative",
                95.0 if v > 50 else 2.0,
                v,
                None,
                10000,
                True,
            )
            for m, v in values.items()
        },
        populations=pops,
        population_source="batch" if pops else "",
    )


def test_compare_groups_and_populations() -> None:
    before = [
        _lot(
            f"B{i}",
            i,
            {"CD105": 99.4 + 0.05 * i, "CD45": 0.5},
            (("typical", 0.95 - 0.01 * i), ("CD90 dim", 0.05 + 0.01 * i)),
        )
        for i in range(4)
    ]
    after = [
        _lot(
            f"A{i}",
            10 + i,
            {"CD105": 97.0 + 0.1 * i, "CD45": 0.6 + 0.02 * i},
            (("typical", 0.8 - 0.01 * i), ("CD90 dim", 0.2 + 0.01 * i)),
        )
        for i in range(3)
    ]
    a, b = split_groups(before + after, None, None, date(2025, 1, 8))
    assert [x.lot for x in a.lots] == ["B0", "B1", "B2", "B3"] and b.name == "after"
    c = compare(a, b, 1.0, {"CD105": 0.5})
    by = {m.marker: m.difference for m in c.markers}
    assert by["CD105"].margin == 0.5 and by["CD105"].equivalent is False
    assert by["CD45"].margin == 1.0 and by["CD45"].method.startswith("Welch")
    pops = {p.label: p.difference for p in c.populations}
    dim = [5.0, 6.0, 7.0, 8.0]
    assert pops["CD90 dim"].diff == pytest.approx(21.0 - np.mean(dim))
    ref = stats.ttest_ind([20.0, 21.0, 22.0], dim, equal_var=False).confidence_interval(0.95)
    assert pops["CD90 dim"].ci95 == pytest.approx((ref.low, ref.high))


def test_two_single_lots_use_event_counts() -> None:
    lots = [_lot("L1", 1, {"CD105": 99.5}), _lot("L2", 2, {"CD105": 99.4})]
    a, b = split_groups(lots, ["L1"], ["L2"], None)
    d = compare(a, b, 0.5, {}).markers[0].difference
    assert d.method.startswith("difference of proportions") and d.df is None
    assert d.p_tost == pytest.approx(max(_agresti_caffo(99.5, 10000, 99.4, 10000, 0.5)[:2]))


def test_input_errors() -> None:
    assert parse_margins(("2", "CD105=0.5")) == (2.0, {"CD105": 0.5})
    for bad in ("x", "0", "CD105=-1", "CD105=nan"):
        with pytest.raises(CytomscError, match="--margin"):
            parse_margins((bad,))
    lots = [_lot("L1", 1, {"CD105": 99.5}), _lot("L2", 2, {"CD105": 99.4})]
    with pytest.raises(CytomscError, match="no such lot"):
        split_groups(lots, ["L1"], ["L9"], None)
    with pytest.raises(CytomscError, match="both sides"):
        split_groups(lots, ["L1"], ["L1", "L2"], None)
    with pytest.raises(CytomscError, match="no lots on or after"):
        split_groups(lots, None, None, date(2030, 1, 1))
    with pytest.raises(CytomscError, match="not a judged marker"):
        a, b = split_groups(lots, ["L1"], ["L2"], None)
        compare(a, b, None, {"CD999": 1.0})
