"""The comparability page of ``cytomsc compare-lots``: one page for the change-control file.

Draws what ``lots.compare`` computed (the same numbers as compare.csv): the two groups, the
method, per marker the difference with its 95 % and 90 % intervals against the margin (a table
and a forest plot), the TOST outcome in words, the population fractions, and lines to sign.
Nothing time-dependent is printed, so the same store and arguments give the same PDF.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..lots import ALPHA, Comparison

if TYPE_CHECKING:
    from .plots import PlotArea


def _num(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _signed(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:+.{digits}f}"


def _ci(ci: tuple[float, float] | None) -> str:
    return "–" if ci is None else f"{ci[0]:+.2f} to {ci[1]:+.2f}"


def _p(p: float | None) -> str:
    if p is None:
        return "–"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def write_pdf(c: Comparison, path: Path) -> None:
    import matplotlib

    from .. import __version__
    from . import plots
    from .plots import Cell

    with matplotlib.rc_context(plots.RC):
        flow = plots.Flow(f"cytomsc {__version__} · MSC flow cytometry QC · comparability")
        flow.new_section("Comparability of lots", page_break=False)
        flow.text(f"{c.a.name}: {c.a.describe()}", size=8.5, after=1)
        flow.text(f"{c.b.name}: {c.b.describe()}", size=8.5, after=1)
        flow.text(
            f"Results database: {c.source}. Difference = {c.b.name} - {c.a.name}, in "
            "percentage points of % positive.",
            size=8.5,
        )
        methods = sorted({m.difference.method for m in c.markers})
        flow.text(
            "Method: " + "; ".join(methods) + ". Equivalence: two one-sided tests (TOST) "
            f"at {ALPHA:g} against the margin, i.e. equivalent when the 90 % interval lies "
            "inside +-margin; the 95 % interval is shown beside it. Not shown equivalent "
            "means the data do not exclude a difference as large as the margin.",
            size=7.5,
        )
        rows: list[list[Cell | str]] = []
        for m in c.markers:
            d = m.difference
            verdict = (
                "–" if d.equivalent is None else "✓ equivalent" if d.equivalent else "✗ not shown"
            )
            rows.append(
                [
                    m.marker,
                    _num(d.mean_a),
                    _num(d.mean_b),
                    _signed(d.diff),
                    _ci(d.ci95),
                    _ci(d.ci90),
                    "–" if d.margin is None else f"±{d.margin:g}",
                    _p(d.p_tost),
                    Cell(verdict, bold=True),
                ]
            )
        if rows:
            flow.table(
                [
                    "Marker",
                    f"{c.a.name} %",
                    f"{c.b.name} %",
                    "Diff.",
                    "95 % interval",
                    "90 % interval",
                    "Margin",
                    "TOST p",
                    "Equivalent",
                ],
                rows,
                [0.14, 0.08, 0.08, 0.08, 0.16, 0.16, 0.08, 0.09, 0.13],
                size=7.5,
                aligns="lrrrrrrrl",
            )
            x, y = flow.block(24 + 14 * len(c.markers) + 30)
            forest(flow.panel(x + 90, y + 20, flow.width - 90 - 20, 14 * len(c.markers) + 6), c)
        else:
            flow.text("No judged marker was measured on both sides.", size=8.5)
        if c.skipped:
            flow.text(
                "Not compared (not measured on both sides): " + ", ".join(c.skipped), size=7.5
            )
        eq = [m.marker for m in c.markers if m.difference.equivalent]
        no = [m.marker for m in c.markers if m.difference.equivalent is False]
        flow.text(
            "Equivalent within the margin: " + (", ".join(eq) or "none") + ".   Not shown "
            "equivalent: " + (", ".join(no) or "none") + ".",
            size=9,
            bold=True,
        )
        flow.text("Population fractions (% of cells)", size=9.5, bold=True, after=2)
        if c.populations:
            prow = []
            for p in c.populations:
                pd = p.difference
                prow.append(
                    [
                        p.label,
                        _num(pd.mean_a, 1) if pd else "–",
                        _num(pd.mean_b, 1) if pd else "–",
                        _signed(pd.diff, 1) if pd else "–",
                        _ci(pd.ci95) if pd else "–",
                        d.method if d else "missing on one side",
                    ]
                )
            flow.table(
                ["Population", c.a.name, c.b.name, "Diff.", "95 % interval", "How"],
                prow,
                [0.24, 0.09, 0.09, 0.09, 0.17, 0.32],
                size=7.5,
                aligns="lrrrrl",
            )
        else:
            flow.text("No lot on either side was clustered.", size=8)
        flow.space(10)
        flow.text(
            "Conclusion: ________________________________________________________________",
            size=8.5,
            after=10,
        )
        flow.text(
            "Prepared by: ____________________  Date: ________     "
            "Reviewed by: ____________________  Date: ________",
            size=8.5,
        )
        plots.add_footers(flow, "Comparability of lots")
        plots.save_pdf(flow.pages, Path(path), "cytomsc comparability of lots", __version__)


def forest(p: PlotArea, c: Comparison) -> None:
    """Each marker's difference: 90 % interval (thick), 95 % (thin), margin band (grey)."""
    from .plots import auto_ticks

    ax = p.axes()
    n = len(c.markers)
    reach = [
        abs(v)
        for m in c.markers
        for v in (*(m.difference.ci95 or ()), m.difference.diff, m.difference.margin or 0.0)
    ]
    top = max(reach + [0.5]) * 1.1
    p.limits((-top, top), (n - 0.5, -0.5))
    ax.axvline(0, color="black", linewidth=0.6)
    for i, m in enumerate(c.markers):
        d = m.difference
        if d.margin is not None:
            ax.fill_between(
                [-d.margin, d.margin], i - 0.4, i + 0.4, color="#e6e6e6", linewidth=0, zorder=0
            )
        if d.ci95:
            ax.plot(list(d.ci95), [i, i], color="black", linewidth=0.8, zorder=2)
        if d.ci90:
            ax.plot(list(d.ci90), [i, i], color="black", linewidth=3.0, zorder=2)
        ax.plot(
            [d.diff],
            [i],
            marker="o",
            color="white",
            markeredgecolor="black",
            markersize=4,
            zorder=3,
        )
        p.layer.add(p.x - 4, p.py(i), m.marker, 7, ha="right", va="center")
    p.frame(
        auto_ticks(-top, top),
        (),
        f"difference {c.b.name} - {c.a.name} (points): thick "
        "90 %, thin 95 % interval; grey: ±margin",
        "",
        box=True,
    )
