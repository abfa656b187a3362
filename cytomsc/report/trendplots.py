"""Drawing of the trend report: Levey-Jennings charts and per-donor population stacks.

Draws what ``trend.build_trend`` computed and nothing else; the same numbers are in trend.csv and
trend-populations.csv. Pages and panels are ``plots.Flow``/``plots.PlotArea`` (the house style of
the culture PDF); the PNGs are the same panels on a figure of their own. Black-and-white rule: a
flagged lot is a filled diamond with its rule written beside it, reference lots are open circles,
and populations differ by hatching as well as colour.

matplotlib is imported inside the functions: the CLI imports this module and must start fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..trend import Chart, Trend, donors, x_positions

if TYPE_CHECKING:
    from ..history import Lot
    from .plots import PlotArea

POP_COLOURS = (
    "#d9d9d9",
    "#6baed6",
    "#fd8d3c",
    "#74c476",
    "#9e9ac8",
    "#fdd0a2",
    "#c7e9c0",
    "#fc9272",
    "#bdbdbd",
    "#3182bd",
)
PNG_DPI = 110
MAX_RULE_LABELS = 60  # rules written beside flagged points; the table lists every flag


def write_pdf(trend: Trend, path: Path) -> None:
    """The trend report: a summary page with the flagged lots, then the charts and stacks."""
    import matplotlib

    from .. import __version__
    from . import plots

    with matplotlib.rc_context(plots.RC):
        flow = plots.Flow(f"cytomsc {__version__} · MSC flow cytometry QC · lot trend")
        flow.new_section("Lot trend", page_break=False)
        _summary(flow, trend)
        flow.new_section("Control charts (Levey-Jennings)")
        flow.text(LEGEND, size=7.5)
        for chart in trend.charts:
            x, y = flow.block(34 + 150 + 46)
            lj_chart(flow.panel(x + 40, y + 34, flow.width - 40 - 62, 150), trend, chart)
        flow.new_section("Populations by donor, across passages")
        flow.text(POP_TEXT, size=7.5)
        order = population_order(trend)
        for donor, lots in donors(trend):
            x, y = flow.block(22 + 130 + 30)
            population_stack(
                flow.panel(x + 40, y + 22, flow.width - 40 - 96, 130), donor, lots, order
            )
        plots.add_footers(flow, "Lot trend")
        plots.save_pdf(flow.pages, Path(path), "cytomsc lot trend", __version__)


LEGEND = (
    "Each point is one lot's % positive (the culture stored last for the lot), in time "
    "order. Solid line: centre (mean of the reference lots); dashed: ±2 SD; dotted: "
    "±3 SD; thick grey: the specification limit. Open circles: reference lots; filled "
    "diamonds: lots a rule flagged, with the rule written beside them (1-3s, 2-2s, R-4s, "
    "10-x; see the first page)."
)
POP_TEXT = (
    "Stacked bars: each lot's population fractions, lots in passage order. Fractions "
    "come from the batch-wide clustering of the batch the lot was analysed in (a "
    "population's label describes it relative to that batch), or from the culture's own "
    "clustering when it was analysed alone; labels are matched across batches by name."
)


def _summary(flow: Any, trend: Trend) -> None:
    from .plots import Cell

    lots = list(trend.lots)
    first, last = lots[0].when.isoformat(), lots[-1].when.isoformat()
    flow.text(
        f"{len(lots)} lots from {first} to {last}"
        + (f" (since {trend.since.isoformat()})" if trend.since else "")
        + f"; {len(trend.charts)} judged marker(s). Results database: {trend.source}.",
        size=8.5,
    )
    flow.text(
        f"Reference window: {trend.reference_rule}: {', '.join(trend.reference_lots)}. "
        "Centre = their mean, SD = their sample SD; set it with --reference N or "
        "--reference-lots.",
        size=8.5,
    )
    flow.text(RULES_TEXT, size=8)
    flagged = trend.flags()
    flow.text(f"Flagged lots: {len({p.lot for _, p in flagged})}", size=10, bold=True, after=4)
    if flagged:
        rows = [
            [
                p.lot,
                p.donor or "–",
                "–" if p.passage is None else str(p.passage),
                p.when.isoformat(),
                c.marker,
                f"{p.value:.2f}" if p.value is not None else "–",
                f"{p.z:+.1f}" if p.z is not None else "–",
                Cell(", ".join(p.rules), bold=True),
            ]
            for c, p in flagged
        ]
        flow.table(
            ["Lot", "Donor", "Passage", "Date", "Marker", "% positive", "z", "Rules"],
            rows,
            [0.1, 0.1, 0.09, 0.13, 0.2, 0.11, 0.08, 0.19],
            size=8,
            aligns="llrllrrl",
        )
    else:
        flow.text("None: every lot is within its control limits by every rule.", size=8.5)
    no_limits = [c for c in trend.charts if c.note]
    for c in no_limits:
        flow.text(f"{c.marker}: {c.note}.", size=8)


RULES_TEXT = (
    "Rules (z = (value - centre) / SD, lots in time order; the lot at which a rule is "
    "met is flagged): 1-3s |z| > 3; 2-2s this lot and the one before beyond the same "
    "2 SD limit; R-4s this lot and the one before beyond opposite 2 SD limits; 10-x "
    "this lot and the nine before on the same side of the centre. With limits from 10 "
    "lots a stable process still has about 1 % of its lots flagged on each chart: a "
    "flag asks for a look at the lot, the release verdict is the specification "
    "limit's."
)


def _y_range(chart: Chart) -> tuple[float, float, float | None]:
    """y limits covering the values and the control limits, and the specification limit when
    it is near enough to be drawn without flattening the chart (else None)."""
    values = [p.value for p in chart.points if p.value is not None]
    span_vals = values + [v for v in (chart.line(-3), chart.line(3)) if v is not None]
    if not span_vals:
        span_vals = [0.0, 100.0]
    lo, hi = min(span_vals), max(span_vals)
    span = max(hi - lo, 0.05)
    specs = [p.limit for p in chart.points if p.limit is not None]
    spec = specs[-1] if specs else None
    if spec is not None and lo - 0.6 * span <= spec <= hi + 0.6 * span:
        lo, hi = min(lo, spec), max(hi, spec)
        span = max(hi - lo, 0.05)
    else:
        spec = None
    return lo - 0.08 * span, hi + 0.12 * span, spec


def lj_chart(p: PlotArea, trend: Trend, chart: Chart) -> None:
    """One marker's individuals chart on a panel."""
    from .plots import auto_ticks

    xs = x_positions(trend)
    ax = p.axes()
    pts = [q for q in chart.points if q.value is not None]
    all_x = [xs[q.lot][0] for q in chart.points]
    x0, x1 = min(all_x) - 0.7, max(all_x) + 0.7
    y0, y1, spec = _y_range(chart)
    p.limits((x0, x1), (y0, y1))
    if trend.by == "lot":
        ref_x = [xs[q.lot][0] for q in chart.points if q.in_reference]
        if ref_x:
            ax.axvspan(min(ref_x) - 0.5, max(ref_x) + 0.5, color="#f0f0f0", zorder=0, linewidth=0)
    right: list[tuple[float, str]] = []  # labels beside the panel's right edge
    for k, style in ((0, "-"), (2, "--"), (-2, "--"), (3, ":"), (-3, ":")):
        v = chart.line(k)
        if v is not None:
            ax.axhline(
                v, color="black", linestyle=style, linewidth=0.9 if k == 0 else 0.7, zorder=1
            )
            right.append((p.py(v), f"{'centre' if k == 0 else f'{k:+d} SD'} {v:.2f}"))
    if spec is not None:
        ax.axhline(spec, color="#888888", linewidth=2.2, zorder=1)
        sign = "≥" if chart.expect == "positive" else "≤"
        right.append((p.py(spec), f"spec {sign} {spec:g}"))
    _right_labels(p, right)
    _connect(ax, trend, chart, xs)
    # one artist per kind of point (a chart may hold thousands of lots)
    for kind, face in (("reference", "white"), ("other", "black")):
        sel = [q for q in pts if not q.flagged and (q.in_reference == (kind == "reference"))]
        if sel:
            ax.plot(
                [xs[q.lot][0] for q in sel],
                [q.value for q in sel],
                marker="o",
                markersize=4.5 if len(pts) <= 200 else 2.0,
                zorder=3,
                linestyle="none",
                markerfacecolor=face,
                markeredgecolor="black",
                markeredgewidth=0.8,
            )
    flagged = [q for q in pts if q.flagged]
    if flagged:
        ax.plot(
            [xs[q.lot][0] for q in flagged],
            [q.value for q in flagged],
            marker="D",
            markersize=6 if len(pts) <= 200 else 3.5,
            color="black",
            zorder=4,
            linestyle="none",
        )
    placed: list[tuple[float, float]] = []
    labelled = flagged[:MAX_RULE_LABELS] if len(pts) <= 200 else []  # dense: the table says
    for q in labelled:  # the rule beside the point, away from the data
        if q.value is None:
            continue
        above = (q.z or 0) < 0
        x, y = p.px(xs[q.lot][0]), p.py(q.value) + (-8 if above else 8)
        if any(abs(x - a) < 34 and abs(y - b) < 8 for a, b in placed):
            continue  # would overprint a neighbour's label (the table lists every flag)
        placed.append((x, y))
        p.over.add(x, y, ",".join(q.rules), 6, ha="center", va="bottom" if above else "top")
    if trend.by != "lot":
        _donor_names(p, chart, xs)
    p.frame((), auto_ticks(y0, y1), "", "% positive")
    _x_labels(p, trend, [q.lot for q in chart.points], xs)
    sign = "≥" if chart.expect == "positive" else "≤"
    specs = [q.limit for q in chart.points if q.limit is not None]
    head = f"{chart.marker} ({chart.expect}" + (f", spec {sign} {specs[-1]:g} %)" if specs else ")")
    if chart.centre is not None and chart.sd is not None:
        stats = (
            f"centre {chart.centre:.2f} %, SD {chart.sd:.3f} from {chart.n_reference} "
            "reference lots"
        )
    else:
        stats = chart.note
    names = [f"{q.lot} ({','.join(q.rules)})" for q in chart.points if q.flagged]
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    p.title([f"{head}: {stats}", "flagged: " + (shown or "none")], loc="left")
    if spec is None and specs:
        p.over.add(
            p.x + 4,
            p.y + p.h - 4 if chart.expect == "positive" else p.y + 4,
            f"spec {sign} {specs[-1]:g} % is off the chart "
            f"({'below' if chart.expect == 'positive' else 'above'})",
            6.5,
            va="bottom" if chart.expect == "positive" else "top",
        )


def _donor_names(p: PlotArea, chart: Chart, xs: dict[str, tuple[float, str]]) -> None:
    """Each donor's name beside its last point (lines are drawn per donor)."""
    last: dict[str, tuple[float, float]] = {}
    for q in chart.points:
        if q.value is not None:
            x = xs[q.lot][0]
            d = q.donor or "no donor"
            if d not in last or x >= last[d][0]:
                last[d] = (x, q.value)
    for d, (x, v) in sorted(last.items()):
        p.over.add(p.px(x) + 6, p.py(v), d, 6, va="center", color="#333333")


def _right_labels(p: PlotArea, labels: list[tuple[float, str]], gap: float = 7.5) -> None:
    """Labels at their lines' heights beside the panel, pushed apart so none overlap."""
    placed: list[float] = []
    for y, _ in sorted(labels):
        placed.append(max(y, placed[-1] + gap) if placed else y)
    overflow = placed[-1] - (p.y + p.h + 4) if placed else 0.0
    if overflow > 0:  # shift the stack up rather than below the panel
        placed = [y - overflow for y in placed]
    for y, (_, text) in zip(placed, sorted(labels), strict=True):
        p.layer.add(p.x + p.w + 3, y, text, 6.5, va="center")


def _connect(ax: Any, trend: Trend, chart: Chart, xs: dict[str, tuple[float, str]]) -> None:
    """Thin lines between consecutive lots (per donor when placed by donor or passage)."""
    groups: dict[str, list[tuple[float, float]]] = {}
    for q in chart.points:
        if q.value is None:
            continue
        key = "" if trend.by == "lot" else (q.donor or "no donor")
        groups.setdefault(key, []).append((xs[q.lot][0], q.value))
    for line in groups.values():
        if trend.by != "lot":
            line.sort()
        ax.plot(
            [a for a, _ in line], [b for _, b in line], color="#555555", linewidth=0.6, zorder=2
        )


def _x_labels(p: PlotArea, trend: Trend, lots: list[str], xs: dict[str, tuple[float, str]]) -> None:
    """Lot (or passage) names under the axis, rotated, thinned to at most ~40."""
    labels = sorted({xs[lot] for lot in lots})
    if trend.by == "passage":  # one label per passage, under the passage itself
        labels = sorted({(float(round(x)), lab) for x, lab in labels})
    step = max(1, len(labels) // 40 + (len(labels) % 40 > 0))
    for i, (x, label) in enumerate(labels):
        if i % step:
            continue
        p.layer.add(p.px(x) + 2, p.y + p.h + 4, label, 6.5, ha="right", angle=40.0)
    name = {"lot": "lot (time order)", "donor": "lot, grouped by donor", "passage": "passage"}[
        trend.by
    ]
    p.layer.add(p.x + p.w / 2, p.y + p.h + 34, name, 7.5, ha="center")


def population_order(trend: Trend) -> list[str]:
    """Every population label, most cells first (one colour and hatch per label everywhere)."""
    total: dict[str, float] = {}
    for lot in trend.lots:
        for label, f in lot.populations:
            total[label] = total.get(label, 0.0) + f
    return sorted(total, key=lambda k: (-total[k], k))


def population_stack(p: PlotArea, donor: str, lots: list[Lot], order: list[str]) -> None:
    """One donor's lots (passage order) as stacked bars of population fractions (%)."""
    from matplotlib.collections import PolyCollection

    from .plots import POP_HATCHES

    ax = p.axes()
    p.limits((-0.7, max(len(lots), 1) - 0.3), (0.0, 100.0))
    bottoms = [0.0] * len(lots)
    many = len(lots) > 40
    for k, label in enumerate(order):  # one bar artist per population
        heights = [100 * dict(lot.populations).get(label, 0.0) for lot in lots]
        if not any(h > 0 for h in heights):
            continue
        # one PolyCollection, not a patch per bar (thousands of lots stay fast)
        boxes = [
            [(i - 0.375, b), (i + 0.375, b), (i + 0.375, b + h), (i - 0.375, b + h)]
            for i, (b, h) in enumerate(zip(bottoms, heights, strict=True))
            if h > 0
        ]
        ax.add_collection(
            PolyCollection(
                boxes,
                facecolor=POP_COLOURS[k % 10],
                edgecolor="#777777",
                linewidth=0 if many else 0.5,
                hatch=POP_HATCHES[k % len(POP_HATCHES)],
            ),
            autolim=False,
        )
        for i, f in enumerate(heights):
            if f >= 6 and not many:
                p.over.add(
                    p.px(i), p.py(bottoms[i] + f / 2), f"{f:.0f}", 6, ha="center", va="center"
                )
            bottoms[i] += f
    for i, lot in enumerate(lots):
        if not lot.populations and not many:
            p.over.add(p.px(i), p.py(50), "not clustered", 6, ha="center", va="center", angle=90.0)
    p.frame((), [(v, str(v)) for v in (0, 25, 50, 75, 100)], "", "% of cells")
    room = max(1, int(p.w // 30))  # labels that fit side by side
    step = max(1, -(-len(lots) // room))
    names = len(lots) <= p.w // 42  # lot names too, while they fit
    for i, lot in enumerate(lots):
        if i % step:
            continue
        passage = "P?" if lot.passage is None else f"P{lot.passage}"
        p.layer.add(p.px(i), p.y + p.h + 4, passage, 6.5, ha="center")
        if names:
            p.layer.add(p.px(i), p.y + p.h + 13, lot.lot, 6, ha="center", color="#444444")
    present = [lab for lab in order if any(lab in dict(lot.populations) for lot in lots)]
    for k, label in enumerate(present):
        j = order.index(label)
        y = p.y + 4 + 11 * k
        from matplotlib.patches import Rectangle

        w, h = p.fig.get_size_inches() * 72
        p.fig.add_artist(
            Rectangle(
                ((p.x + p.w + 6) / w, 1 - (y + 8) / h),
                10 / w,
                8 / h,
                transform=p.fig.transFigure,
                facecolor=POP_COLOURS[j % 10],
                edgecolor="black",
                linewidth=0.5,
                hatch=POP_HATCHES[j % len(POP_HATCHES)],
            )
        )
        p.layer.add(p.x + p.w + 19, y, label, 6.5)
    p.title([f"Donor {donor}: {len(lots)} lot(s), population fractions by passage"], loc="left")


def _standalone(width: float, height: float) -> tuple[Any, Any, Any]:
    """A figure of its own (points) with the two text layers a PlotArea draws on."""
    from matplotlib.figure import Figure

    from .plots import TextLayer

    fig = Figure(figsize=(width / 72, height / 72), dpi=PNG_DPI)
    fig.patch.set_facecolor("white")
    layer, over = TextLayer(-0.5), TextLayer(3.0)
    fig.add_artist(layer)
    fig.add_artist(over)
    return fig, layer, over


def chart_png(trend: Trend, chart: Chart, path: Path) -> None:
    """One chart as a PNG (the same drawing as its PDF page)."""
    import matplotlib

    from .plots import RC, PlotArea

    with matplotlib.rc_context(RC):
        fig, layer, over = _standalone(760, 270)
        lj_chart(PlotArea(fig, layer, over, 56, 40, 620, 170), trend, chart)
        fig.savefig(path, dpi=PNG_DPI, format="png")


def populations_png(trend: Trend, donor: str, lots: list[Lot], path: Path) -> None:
    """One donor's population stack as a PNG."""
    import matplotlib

    from .plots import RC, PlotArea

    with matplotlib.rc_context(RC):
        fig, layer, over = _standalone(760, 236)
        population_stack(
            PlotArea(fig, layer, over, 56, 26, 590, 170), donor, lots, population_order(trend)
        )
        fig.savefig(path, dpi=PNG_DPI, format="png")
