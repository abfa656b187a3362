"""Control charts across lots: Levey-Jennings limits and Westgard rules per judged marker.

For each marker that a panel judges, every lot's % positive is a point of an individuals chart,
in the order the lots were made (``history.load_lots``). The centre and the +-2 SD and +-3 SD
limits come from a **reference window**: by default the first ``DEFAULT_REFERENCE`` lots in time
order (all of them while there are fewer), or the lots the user names. The SD is the sample SD
(n - 1) of the window's values. The window's lots are charted and judged like every other lot.

Rules, evaluated on consecutive lots in time order (lots that lack the marker are skipped) with
z = (value - centre) / SD; the lot at which a rule is met is flagged (the rejected run):

- **1-3s**: |z| > 3;
- **2-2s**: this lot and the one before beyond the same 2 SD limit (both z > 2 or both z < -2);
- **R-4s**: this lot and the one before beyond opposite 2 SD limits (one z > 2, the other z < -2);
- **10-x**: this lot and the nine before on the same side of the centre.

With limits from 10 lots the rules together flag about 1 % of a stable process's lots on each
chart (the SD itself is uncertain with 10 values; ``benchmarks/trend_rules.py``): a flag asks for
a look, it is not a verdict. The
specification limit (the panel's) is charted beside the control limits; it is the release
criterion, the control limits are what the process usually does.

``--by`` changes only the x axis (lots in time order, grouped by donor, or placed at their
passage); the window and the rules always follow time order, because "consecutive" means made
one after the other.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from .errors import CytomscError
from .history import Lot, judged_markers

DEFAULT_REFERENCE = 10
MIN_REFERENCE = 3  # fewer reference values give no control limits
RULES = ("1-3s", "2-2s", "R-4s", "10-x")
BY = ("lot", "donor", "passage")


@dataclass(frozen=True)
class Point:
    """One lot on one marker's chart."""

    lot: str
    culture: str
    donor: str | None
    passage: int | None
    when: date
    value: float | None  # % positive (None: the lot lacks the marker)
    ci95: tuple[float, float] | None
    limit: float | None  # the specification limit the lot was judged against
    in_reference: bool
    z: float | None
    rules: tuple[str, ...] = ()

    @property
    def flagged(self) -> bool:
        return bool(self.rules)


@dataclass(frozen=True)
class Chart:
    """One marker's Levey-Jennings chart."""

    marker: str
    expect: str  # "positive" (limit is a minimum) | "negative" (a maximum)
    centre: float | None
    sd: float | None
    n_reference: int
    points: tuple[Point, ...]
    note: str = ""  # why there are no control limits, when there are none

    def line(self, k: float) -> float | None:
        """centre + k SD (None without limits)."""
        if self.centre is None or self.sd is None:
            return None
        return self.centre + k * self.sd


@dataclass(frozen=True)
class Trend:
    """Every chart of one trend report, and what it was made from."""

    charts: tuple[Chart, ...]
    lots: tuple[Lot, ...]
    reference_lots: tuple[str, ...]
    reference_rule: str  # how the window was chosen, in words
    by: str
    since: date | None = None
    source: str = ""  # the database, as printed
    provisional: bool = False  # fewer lots than the default window: every lot is the reference
    notes: tuple[str, ...] = field(default_factory=tuple)

    def flags(self) -> list[tuple[Chart, Point]]:
        """Every flagged (chart, point), lots in time order, markers in chart order."""
        order = {lot.lot: i for i, lot in enumerate(self.lots)}
        out = [(c, p) for c in self.charts for p in c.points if p.flagged]
        return sorted(out, key=lambda cp: order.get(cp[1].lot, 0))


def westgard(z: list[float | None]) -> list[tuple[str, ...]]:
    """The rules met at each point (see the module docstring); None points are skipped."""
    out: list[tuple[str, ...]] = [() for _ in z]
    seen: list[tuple[int, float]] = []  # (index, z) of the measured points so far
    for i, zi in enumerate(z):
        if zi is None or not math.isfinite(zi):
            continue
        hit = []
        if abs(zi) > 3:
            hit.append("1-3s")
        if seen:
            prev = seen[-1][1]
            if (zi > 2 and prev > 2) or (zi < -2 and prev < -2):
                hit.append("2-2s")
            if (zi > 2 and prev < -2) or (zi < -2 and prev > 2):
                hit.append("R-4s")
        seen.append((i, zi))
        if len(seen) >= 10:
            last = [v for _, v in seen[-10:]]
            if all(v > 0 for v in last) or all(v < 0 for v in last):
                hit.append("10-x")
        out[i] = tuple(hit)
    return out


def reference_window(
    lots: list[Lot], n: int = DEFAULT_REFERENCE, named: list[str] | None = None
) -> tuple[list[str], str, bool]:
    """The reference lots, the rule that chose them (in words) and whether they are provisional
    (every lot, because there are fewer than ``n``)."""
    if named:
        have = {lot.lot for lot in lots}
        missing = [x for x in named if x not in have]
        if missing:
            raise CytomscError(
                "--reference-lots: no such lot among those charted: " + ", ".join(missing)
            )
        return list(dict.fromkeys(named)), f"the {len(set(named))} lots named by the user", False
    if n < MIN_REFERENCE:
        raise CytomscError(f"--reference: at least {MIN_REFERENCE} lots are needed")
    if len(lots) <= n:
        return (
            [lot.lot for lot in lots],
            f"all {len(lots)} lots (fewer than {n}: limits are provisional)",
            len(lots) < n,
        )
    return [lot.lot for lot in lots[:n]], f"the first {n} lots in time order", False


def build_trend(
    lots: list[Lot],
    *,
    markers: list[str] | None = None,
    reference: int = DEFAULT_REFERENCE,
    reference_lots: list[str] | None = None,
    by: str = "lot",
    since: date | None = None,
    source: str = "",
) -> Trend:
    """Charts for every judged marker (or the ``markers`` named) over ``lots`` (time order)."""
    if by not in BY:
        raise CytomscError(f"--by must be one of {', '.join(BY)}")
    if not lots:
        raise CytomscError(
            "no lots to chart"
            + (f" since {since.isoformat()}" if since else "")
            + " in the results database"
        )
    judged = judged_markers(lots)
    if markers:
        unknown = [m for m in markers if m not in judged]
        if unknown:
            raise CytomscError(
                "--marker: not a judged marker of any stored lot: "
                + ", ".join(unknown)
                + f" (stored: {', '.join(judged) or '-'})"
            )
        judged = [m for m in judged if m in markers]
    ref, rule, provisional = reference_window(lots, reference, reference_lots)
    charts = tuple(_chart(marker, lots, set(ref)) for marker in judged)
    return Trend(
        charts=charts,
        lots=tuple(lots),
        reference_lots=tuple(ref),
        reference_rule=rule,
        by=by,
        since=since,
        source=source,
        provisional=provisional,
    )


def _chart(marker: str, lots: list[Lot], ref: set[str]) -> Chart:
    values = [
        lot.markers[marker].percent_positive if marker in lot.markers else None for lot in lots
    ]
    expect = next(
        (
            lot.markers[marker].expect
            for lot in reversed(lots)
            if marker in lot.markers and lot.markers[marker].expect
        ),
        "positive",
    )
    reference = [v for lot, v in zip(lots, values, strict=True) if lot.lot in ref and v is not None]
    centre = sd = None
    note = ""
    if len(reference) < MIN_REFERENCE:
        note = (
            f"{len(reference)} reference value(s): at least {MIN_REFERENCE} are needed for "
            "control limits"
        )
    else:
        centre = math.fsum(reference) / len(reference)
        sd = math.sqrt(math.fsum((v - centre) ** 2 for v in reference) / (len(reference) - 1))
        if not sd > 0:
            note = "the reference values do not vary: no control limits"
            sd = None
    z = [None if v is None or sd is None or centre is None else (v - centre) / sd for v in values]
    rules = westgard(z)
    points = []
    for lot, v, zi, r in zip(lots, values, z, rules, strict=True):
        m = lot.markers.get(marker)
        points.append(
            Point(
                lot=lot.lot,
                culture=lot.culture,
                donor=lot.donor,
                passage=lot.passage,
                when=lot.when,
                value=v,
                ci95=m.ci95 if m else None,
                limit=m.limit if m else None,
                in_reference=lot.lot in ref,
                z=zi,
                rules=r,
            )
        )
    return Chart(
        marker=marker,
        expect=expect or "positive",
        centre=centre,
        sd=sd,
        n_reference=len(reference),
        points=tuple(points),
        note=note,
    )


# ---- outputs ---------------------------------------------------------------------------------
POINT_COLUMNS = (
    "marker",
    "lot",
    "culture",
    "donor",
    "passage",
    "date",
    "x",
    "value",
    "ci95_low",
    "ci95_high",
    "in_reference",
    "centre",
    "sd",
    "minus_3sd",
    "minus_2sd",
    "plus_2sd",
    "plus_3sd",
    "spec_limit",
    "expect",
    "z",
    "rules",
)
POPULATION_COLUMNS = (
    "donor",
    "lot",
    "culture",
    "passage",
    "date",
    "x",
    "population",
    "fraction",
    "source",
)
FLAG_COLUMNS = ("lot", "culture", "donor", "passage", "date", "marker", "value", "z", "rules")


def x_positions(trend: Trend) -> dict[str, tuple[float, str]]:
    """Each lot's x position and tick label for ``trend.by``."""
    lots = list(trend.lots)
    if trend.by == "passage":
        # lots of one passage side by side, one small offset per donor
        names = sorted({lot.donor or "no donor" for lot in lots})
        shift = {
            d: 0.12 * (i - (len(names) - 1) / 2) / max(1, len(names) / 3)
            for i, d in enumerate(names)
        }
        out = {}
        for lot in lots:
            if lot.passage is None:
                continue
            out[lot.lot] = (lot.passage + shift[lot.donor or "no donor"], f"P{lot.passage}")
        # lots without a passage go after the last one, in time order
        start = math.floor(max((x for x, _ in out.values()), default=0.0)) + 1.0
        for lot in lots:
            if lot.lot not in out:
                out[lot.lot] = (start, lot.lot)
                start += 1
        return out
    if trend.by == "donor":
        groups: dict[str, list[Lot]] = {}
        for lot in lots:
            groups.setdefault(lot.donor or "no donor", []).append(lot)
        out, x = {}, 0.0
        for name in sorted(groups):
            for lot in groups[name]:
                out[lot.lot] = (x, lot.lot)
                x += 1
            x += 1  # a gap between donors
        return out
    return {lot.lot: (float(i), lot.lot) for i, lot in enumerate(lots)}


def _f(v: float | None) -> str:
    return "" if v is None else repr(float(v))


def points_csv(trend: Trend) -> str:
    """Every plotted number of the control charts, one row per marker and lot."""
    xs = x_positions(trend)
    rows = []
    for c in trend.charts:
        for p in c.points:
            rows.append(
                {
                    "marker": c.marker,
                    "lot": p.lot,
                    "culture": p.culture,
                    "donor": p.donor or "",
                    "passage": "" if p.passage is None else p.passage,
                    "date": p.when.isoformat(),
                    "x": _f(xs[p.lot][0]),
                    "value": _f(p.value),
                    "ci95_low": _f(p.ci95[0]) if p.ci95 else "",
                    "ci95_high": _f(p.ci95[1]) if p.ci95 else "",
                    "in_reference": str(p.in_reference).lower(),
                    "centre": _f(c.centre),
                    "sd": _f(c.sd),
                    "minus_3sd": _f(c.line(-3)),
                    "minus_2sd": _f(c.line(-2)),
                    "plus_2sd": _f(c.line(2)),
                    "plus_3sd": _f(c.line(3)),
                    "spec_limit": _f(p.limit),
                    "expect": c.expect,
                    "z": _f(p.z),
                    "rules": ";".join(p.rules),
                }
            )
    return _csv(POINT_COLUMNS, rows)


def population_rows(trend: Trend) -> list[dict[str, str]]:
    """Per donor, each lot's population fractions in passage order (the stacked plots)."""
    rows = []
    for donor, lots in donors(trend):
        for i, lot in enumerate(lots):
            for label, f in lot.populations:
                rows.append(
                    {
                        "donor": donor,
                        "lot": lot.lot,
                        "culture": lot.culture,
                        "passage": "" if lot.passage is None else str(lot.passage),
                        "date": lot.when.isoformat(),
                        "x": str(i),
                        "population": label,
                        "fraction": repr(float(f)),
                        "source": lot.population_source,
                    }
                )
    return rows


def donors(trend: Trend) -> list[tuple[str, list[Lot]]]:
    """Lots per donor (sorted by donor), each donor's lots by passage then time."""
    groups: dict[str, list[Lot]] = {}
    for lot in trend.lots:
        groups.setdefault(lot.donor or "no donor", []).append(lot)
    return [
        (d, sorted(v, key=lambda x: (x.passage is None, x.passage or 0, x.when, x.lot)))
        for d, v in sorted(groups.items())
    ]


def flags_csv(trend: Trend) -> str:
    rows = [
        {
            "lot": p.lot,
            "culture": p.culture,
            "donor": p.donor or "",
            "passage": "" if p.passage is None else p.passage,
            "date": p.when.isoformat(),
            "marker": c.marker,
            "value": _f(p.value),
            "z": _f(p.z),
            "rules": ";".join(p.rules),
        }
        for c, p in trend.flags()
    ]
    return _csv(FLAG_COLUMNS, rows)


def _csv(columns: tuple[str, ...], rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def safe_part(name: str) -> str:
    """A marker or donor name as part of a file name ("CD34/CD45" -> "CD34-CD45")."""
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name).strip("-.")
    return keep[:60] or "unnamed"


def write_trend(trend: Trend, out_dir: Path) -> list[str]:
    """trend.pdf, one PNG per chart and per donor, and the CSVs of every plotted number, all
    inside ``out_dir``; returns the files written (relative)."""
    from .output import OutputDir
    from .report import trendplots

    out = OutputDir(out_dir)
    out.write_text(points_csv(trend), "trend.csv")
    out.write_text(_csv(POPULATION_COLUMNS, population_rows(trend)), "trend-populations.csv")
    out.write_text(flags_csv(trend), "trend-flags.csv")
    with out.atomic("trend.pdf") as tmp:
        trendplots.write_pdf(trend, tmp)
    taken: set[str] = set()
    for chart in trend.charts:
        name = _unique(f"trend-{safe_part(chart.marker)}.png", taken)
        with out.atomic(name) as tmp:
            trendplots.chart_png(trend, chart, tmp)
    for donor, lots in donors(trend):
        name = _unique(f"trend-populations-{safe_part(donor)}.png", taken)
        with out.atomic(name) as tmp:
            trendplots.populations_png(trend, donor, lots, tmp)
    return sorted(out.written)


def _unique(name: str, taken: set[str]) -> str:
    stem, dot, ext = name.rpartition(".")
    candidate, i = name, 2
    while candidate.lower() in taken:
        candidate = f"{stem}-{i}{dot}{ext}"
        i += 1
    taken.add(candidate.lower())
    return candidate


def run_trend(
    db: str,
    out_dir: Path,
    *,
    markers: list[str] | None = None,
    by: str = "lot",
    since: date | None = None,
    reference: int = DEFAULT_REFERENCE,
    reference_lots: list[str] | None = None,
    panel: str | None = None,
) -> tuple[Trend, list[str]]:
    """``cytomsc trend``: read the store, chart it, write the report into ``out_dir``."""
    from . import store
    from .history import load_lots

    engine = store.connect(db, write=False)
    try:
        lots = load_lots(engine, since=since, panel=panel)
    finally:
        engine.dispose()
    trend = build_trend(
        lots,
        markers=markers,
        reference=reference,
        reference_lots=reference_lots,
        by=by,
        since=since,
        source=store.shown(store.database_url(db)),
    )
    return trend, write_trend(trend, out_dir)
