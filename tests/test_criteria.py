"""The verdict rules."""

from __future__ import annotations

from cytomsc.criteria import culture_verdict, judge_marker
from cytomsc.results import MarkerResult


def _m(
    name: str, expect: str, limit: float | None, pct: float, ci: tuple[float, float]
) -> MarkerResult:
    return judge_marker(
        MarkerResult(
            marker=name,
            channel="X",
            expect=expect,
            limit=limit,
            percent_positive=pct,
            ci95=ci,
            events=20_000,
        )
    )


def test_marker_rules() -> None:
    assert _m("CD73", "positive", 95, 97.0, (96.7, 97.3)).passed is True
    assert _m("CD73", "positive", 95, 94.9, (94.6, 95.2)).passed is False
    assert _m("CD45", "negative", 2, 1.5, (1.3, 1.7)).passed is True
    assert _m("CD45", "negative", 2, 2.1, (1.9, 2.3)).passed is False
    info = _m("HLA-DR", "informative", None, 30.0, (29, 31))
    assert info.passed is None and not info.borderline


def test_borderline_when_interval_contains_limit() -> None:
    assert _m("CD105", "positive", 95, 95.2, (94.9, 95.5)).borderline
    assert not _m("CD105", "positive", 95, 96.0, (95.7, 96.3)).borderline
    assert _m("CD34", "negative", 2, 1.9, (1.7, 2.1)).borderline


def test_culture_verdicts() -> None:
    good = [
        _m("CD73", "positive", 95, 99, (98.8, 99.2)),
        _m("CD45", "negative", 2, 0.5, (0.4, 0.6)),
    ]
    assert culture_verdict(good, [], [20_000])[0] == "pass"
    bad = good + [_m("CD90", "positive", 95, 80, (79, 81))]
    verdict, _, reasons = culture_verdict(bad, [], [20_000])
    assert verdict == "fail" and any("CD90" in r for r in reasons)
    assert culture_verdict(good, ["CD14 or CD11b"], [20_000])[0] == "inconclusive"
    assert culture_verdict(good, [], [900])[0] == "inconclusive"
    assert culture_verdict(good, [], [])[0] == "inconclusive"
    # a missing criterion withholds the verdict, but the failure is still named
    verdict, _, reasons = culture_verdict(bad, ["CD14 or CD11b"], [20_000])
    assert verdict == "inconclusive" and any("CD90" in r for r in reasons)
    assert culture_verdict(bad, [], [500])[0] == "inconclusive"


def test_borderline_only_when_a_flip_could_change_the_verdict() -> None:
    """Issue 11: a FAIL whose failing marker is far from its limit (CD45 3.7 %, 3.3-4.3 against
    <= 2 %) is not borderline, whatever a neighbour's interval does."""
    cd45 = _m("CD45", "negative", 2, 3.7, (3.3, 4.3))
    cd73 = _m("CD73", "positive", 95, 95.2, (94.7, 95.6))  # passes, interval holds the limit
    cd90 = _m("CD90", "positive", 95, 99.0, (98.8, 99.2))
    assert not cd45.borderline and cd73.borderline
    verdict, borderline, _ = culture_verdict([cd45, cd73, cd90], [], [20_000])
    assert verdict == "fail" and borderline is False
    # a fail that rests only on markers whose intervals contain their limits is borderline
    cd105 = _m("CD105", "positive", 95, 94.8, (94.3, 95.3))
    assert culture_verdict([cd105, cd90], [], [20_000])[:2] == ("fail", True)
    assert culture_verdict([cd105, cd45, cd90], [], [20_000])[:2] == ("fail", False)
    # a pass with any borderline marker could become a fail
    assert culture_verdict([cd73, cd90], [], [20_000])[:2] == ("pass", True)
    assert culture_verdict([cd90], [], [20_000])[:2] == ("pass", False)
    # no verdict rests on the percentages when the panel is incomplete or cells too few
    assert culture_verdict([cd73, cd90], ["HLA-DR"], [20_000])[:2] == ("inconclusive", False)
    assert culture_verdict([cd73, cd90], [], [500])[:2] == ("inconclusive", False)


def test_csv_rows_carry_each_markers_own_borderline_and_tube() -> None:
    from cytomsc.results import BatchResult, CultureResult, csv_rows

    cd45 = _m("CD45", "negative", 2, 3.7, (3.3, 4.3))
    cd73 = _m("CD73", "positive", 95, 95.2, (94.7, 95.6))
    cd45.tube, cd73.tube = "stained_2.fcs", "stained_1.fcs"
    verdict, borderline, _ = culture_verdict([cd45, cd73], [], [20_000])
    c = CultureResult(
        culture="C1",
        verdict=verdict,
        borderline=borderline,
        files=[],
        events={"total": 1},
        markers=[cd45, cd73],
    )
    rows = csv_rows(BatchResult("0.1.0", {"id": "isct-2006"}, {}, [c]))
    assert [(r["marker"], r["tube"], r["borderline"]) for r in rows] == [
        ("CD45", "stained_2.fcs", "false"),
        ("CD73", "stained_1.fcs", "true"),
    ]
