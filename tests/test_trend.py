"""Levey-Jennings limits and Westgard rules (cytomsc/trend.py) on series whose answer is known
by construction; tests/test_history_pipeline.py runs them on the simulated lot history."""

from __future__ import annotations

import csv
import io
import statistics
from datetime import date, datetime, timedelta

import pytest

from cytomsc.errors import CytomscError
from cytomsc.history import Lot, MarkerValue
from cytomsc.trend import (
    build_trend,
    flags_csv,
    points_csv,
    reference_window,
    westgard,
    x_positions,
)


def test_quiet_series_has_no_flags() -> None:
    assert westgard([0.5, -1.2, 1.9, -1.9, 0.3, -0.4, 2.5, -1.0, 1.1, -0.2, 2.9]) == [()] * 11


def test_1_3s() -> None:
    got = westgard([0.1, -0.2, 3.01, 0.0, -3.5, 0.0, 3.0])
    assert got == [(), (), ("1-3s",), (), ("1-3s",), (), ()]  # exactly 3 SD is not beyond


def test_2_2s_same_side_only() -> None:
    got = westgard([2.1, 2.2, 0.0, -2.5, -2.1, 0.0, 2.5, -0.5])
    assert got == [(), ("2-2s",), (), (), ("2-2s",), (), (), ()]


def test_r_4s_opposite_limits() -> None:
    got = westgard([2.1, -2.1, 0.0, -2.4, 2.6, 1.9, -2.5])
    assert got == [(), ("R-4s",), (), (), ("R-4s",), (), ()]


def test_10_x_from_the_tenth_point_on() -> None:
    z = [0.3] * 9 + [0.1, 0.2, -0.1]
    got = westgard(z)
    assert got[:9] == [()] * 9
    assert got[9] == ("10-x",) and got[10] == ("10-x",) and got[11] == ()
    assert westgard([-0.5] * 10)[-1] == ("10-x",)


def test_missing_points_are_skipped_not_broken() -> None:
    # consecutive means consecutive measured lots: the None does not break the 2-2s pair
    assert westgard([2.5, None, 2.5]) == [(), (), ("2-2s",)]
    assert westgard([0.5] * 5 + [None] + [0.5] * 5)[-1] == ("10-x",)


def test_several_rules_at_one_point() -> None:
    assert westgard([2.5, 3.5]) == [(), ("1-3s", "2-2s")]
    assert westgard([-2.5, 3.5]) == [(), ("1-3s", "R-4s")]


def _lots(
    values: list[float | None], donors: tuple[str, ...] = ("D1",), marker: str = "CD105"
) -> list[Lot]:
    start = date(2025, 1, 1)
    out = []
    for i, v in enumerate(values):
        m = (
            {}
            if v is None
            else {
                marker: MarkerValue(marker, "positive", 95.0, v, (v - 0.1, v + 0.1), 10000, v >= 95)
            }
        )
        out.append(
            Lot(
                lot=f"L{i + 1:02d}",
                culture=f"c{i}",
                culture_id=i + 1,
                donor=donors[i % len(donors)],
                passage=i // len(donors) + 1,
                acquired=start + timedelta(days=7 * i),
                date_text=None,
                stored_at=datetime(2025, 12, 1),
                verdict="pass",
                panel_id="isct-2006",
                markers=m,
                populations=(),
                population_source="",
            )
        )
    return out


def test_reference_window_choices() -> None:
    lots = _lots([99.0] * 14)
    assert reference_window(lots)[0] == [f"L{i:02d}" for i in range(1, 11)]
    assert reference_window(lots, 5)[0] == [f"L{i:02d}" for i in range(1, 6)]
    ref, rule, provisional = reference_window(lots[:6])
    assert len(ref) == 6 and provisional and "provisional" in rule
    assert reference_window(lots, named=["L03", "L07", "L09"])[0] == ["L03", "L07", "L09"]
    with pytest.raises(CytomscError, match="no such lot"):
        reference_window(lots, named=["L99"])
    with pytest.raises(CytomscError, match="at least 3"):
        reference_window(lots, 2)


def test_limits_from_the_window_and_flags() -> None:
    ref = [99.5, 99.3, 99.6, 99.4, 99.5, 99.2, 99.7, 99.4, 99.5, 99.4]
    values = ref + [99.45, 98.0, 99.5]
    trend = build_trend(_lots(values))
    (chart,) = trend.charts
    assert chart.centre == pytest.approx(statistics.mean(ref), abs=1e-12)
    assert chart.sd == pytest.approx(statistics.stdev(ref), abs=1e-12)
    assert chart.n_reference == 10
    z = [(v - statistics.mean(ref)) / statistics.stdev(ref) for v in values]
    assert [p.z for p in chart.points] == pytest.approx(z)
    assert [p.lot for p in chart.points if p.flagged] == ["L12"]
    assert chart.points[11].rules == ("1-3s",)
    assert [p.in_reference for p in chart.points] == [True] * 10 + [False] * 3


def test_named_reference_changes_the_limits() -> None:
    values = [99.0, 99.2, 98.8, 99.1, 99.5, 99.6, 99.4, 99.5]
    trend = build_trend(_lots(values), reference_lots=["L05", "L06", "L07", "L08"])
    assert trend.charts[0].centre == pytest.approx(statistics.mean(values[4:]))


def test_too_few_reference_values_give_no_limits() -> None:
    trend = build_trend(_lots([None, None, 99.0, 99.5, None]))
    chart = trend.charts[0]
    assert chart.centre is None and "at least 3" in chart.note
    assert not any(p.flagged for p in chart.points)


def test_csv_carries_every_plotted_number() -> None:
    values = [99.5, 99.3, 99.6, 99.4, 99.5, 99.2, 99.7, 99.4, 99.5, 99.4, 97.0, None]
    trend = build_trend(_lots(values, donors=("D1", "D2")), by="passage")
    rows = list(csv.DictReader(io.StringIO(points_csv(trend))))
    chart = trend.charts[0]
    assert len(rows) == len(values)
    for row, p, v in zip(rows, chart.points, values, strict=True):
        assert (float(row["value"]) if row["value"] else None) == v
        assert float(row["centre"]) == chart.centre and float(row["sd"]) == chart.sd
        assert float(row["plus_3sd"]) == chart.centre + 3 * chart.sd
        assert float(row["minus_2sd"]) == chart.centre - 2 * chart.sd
        assert row["spec_limit"] == ("" if v is None else "95.0")
        assert float(row["x"]) == x_positions(trend)[p.lot][0]
        assert round(float(row["x"])) == p.passage  # donors side by side at their passage
        assert row["rules"] == ";".join(p.rules)
    flags = list(csv.DictReader(io.StringIO(flags_csv(trend))))
    assert [(f["lot"], f["rules"]) for f in flags] == [("L11", "1-3s")]


def test_by_donor_groups_and_unknown_marker() -> None:
    lots = _lots([99.0 + 0.1 * i for i in range(6)], donors=("D2", "D1"))
    xs = x_positions(build_trend(lots, by="donor"))
    d1 = sorted(xs[x.lot][0] for x in lots if x.donor == "D1")
    d2 = sorted(xs[x.lot][0] for x in lots if x.donor == "D2")
    assert max(d1) < min(d2)  # D1's lots first, then a gap, then D2's
    with pytest.raises(CytomscError, match="not a judged marker"):
        build_trend(lots, markers=["CD999"])
    with pytest.raises(CytomscError, match="no lots"):
        build_trend([])
