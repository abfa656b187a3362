"""A panel's criteria applied to measured % positive: the verdict per marker and per culture.

Rules (issue 3 §5): a marker passes when its % positive is >= the limit (positive markers) or
<= the limit (negative markers and cocktails); informative markers are reported, never judged. In
order: a stained tube with fewer than ``MIN_EVENTS`` gated events makes the culture inconclusive
(no percentage can be trusted); else a required criterion with no channel makes it inconclusive
(the panel was not measured in full; an immune panel on a blood sample is not an MSC failure),
with any failed markers still named; else any failed marker makes it fail; else it passes.
``borderline`` flags a marker whose 95 % interval contains its limit: its pass/fail could flip
with another acquisition of the same cells. The culture is borderline only when such flips could
change its verdict: a pass with any borderline marker, or a fail whose every failed marker is
borderline (a fail with one marker far outside its limit stays a fail whatever its neighbours do;
an inconclusive verdict does not rest on the percentages).
"""

from __future__ import annotations

from dataclasses import replace

from .results import MarkerResult, Verdict

MIN_EVENTS = 1_000  # fewer gated events in a stained tube: no verdict
WARN_EVENTS = 10_000  # fewer: a warning (the interval widens; ISCT labs acquire >= 10,000)


def judge_marker(m: MarkerResult) -> MarkerResult:
    """``m`` with ``passed`` and ``borderline`` set from its % positive, interval and limit (a
    new value; ``m`` is left as it was)."""
    if (
        m.expect == "informative"
        or m.limit is None
        or m.percent_positive is None
        or m.percent_positive != m.percent_positive
    ):  # NaN: nothing measured
        return replace(m, passed=None, borderline=False)
    if m.expect == "positive":
        passed = m.percent_positive >= m.limit
    else:
        passed = m.percent_positive <= m.limit
    borderline = m.borderline
    if m.ci95 is not None:
        lo, hi = m.ci95
        borderline = lo <= m.limit <= hi
    return replace(m, passed=bool(passed), borderline=bool(borderline))


def culture_verdict(
    markers: list[MarkerResult], missing: list[str], stained_events: list[int]
) -> tuple[Verdict, bool, list[str]]:
    """The culture's verdict, its borderline flag and the reasons in words.

    ``stained_events`` are the gated event counts of the stained tubes the markers were read in.
    """
    reasons: list[str] = []
    judged = [m for m in markers if m.passed is not None]
    low = [n for n in stained_events if n < MIN_EVENTS]
    if low or not stained_events:
        # Too few cells: no percentage, passing or failing, can be trusted.
        reasons.append(
            f"fewer than {MIN_EVENTS:,} gated events in a stained tube "
            f"({min(stained_events) if stained_events else 0:,}): verdict inconclusive"
        )
        return "inconclusive", False, reasons
    failed = [m for m in judged if not m.passed]
    for m in failed:
        op = ">=" if m.expect == "positive" else "<="
        reasons.append(
            f"{m.marker}: {m.percent_positive:.1f} % positive, required {op} {m.limit:g} %"
        )
    if missing:
        # The panel was not measured in full: no verdict, though failed markers are still named.
        reasons.append("no channel for " + ", ".join(missing) + ": verdict inconclusive")
        return "inconclusive", False, reasons
    if failed:
        return "fail", all(m.borderline for m in failed), reasons
    if not judged:
        return "inconclusive", False, ["no marker could be judged"]
    return "pass", any(m.borderline for m in judged), reasons
