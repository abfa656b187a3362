"""The verdict rules."""

from __future__ import annotations

from cytomsc.criteria import culture_verdict, judge_marker
from cytomsc.results import MarkerResult


def _m(name: str, expect: str, limit: float | None, pct: float, ci: tuple[float, float]
       ) -> MarkerResult:
    return judge_marker(MarkerResult(marker=name, channel="X", expect=expect, limit=limit,
                                     percent_positive=pct, ci95=ci, events=20_000))


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
    good = [_m("CD73", "positive", 95, 99, (98.8, 99.2)),
            _m("CD45", "negative", 2, 0.5, (0.4, 0.6))]
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
