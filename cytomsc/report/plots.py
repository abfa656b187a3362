"""Drawing shared by the culture PDF and the batch overview.

Everything here draws values the analysis returned; nothing is recomputed except display scalings
that the page states in words (a histogram shown as % of events per bin, a heatmap scaled per
channel). Pages are plain ``matplotlib.figure.Figure`` objects (no pyplot, no global state),
laid out by :class:`Flow`, which places text, tables and plot blocks top to bottom and opens a
continuation page when the next item does not fit. Only ``pdf.py`` and ``overview.py`` import
this module, and only inside their functions, so importing ``cytomsc.report`` stays light.

Black-and-white rule: pass/fail is always written (a word and a symbol), colour only repeats it;
plots use a colour map whose lightness is monotone, gate outlines are black on a white halo, and
populations differ by marker shape and hatching as well as colour.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib import patheffects
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..errors import CytomscError
from ..results import GateStep, Histogram2D, MarkerResult, _fmt

A4 = (595.28, 841.89)  # points
MARGIN = 40.0
TOP = 34.0
BOTTOM = 48.0  # room for the footer
DPI = 150  # rasterized plot layers

RC: dict[str, Any] = {
    "pdf.fonttype": 42,  # TrueType: text stays text, searchable and extractable
    "ps.fonttype": 42,
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 7.5,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "axes.linewidth": 0.6,
    "savefig.dpi": DPI,
    "image.composite_image": True,
    "path.simplify": True,
    "text.parse_math": False,  # '$PnS and $PnR' in a warning is text, not mathtext
}

CMAP = "viridis_r"  # white = empty, light = few events, dark = many: survives grey printing
POP_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
POP_HATCHES = ("", "///", "...", "xxx", "\\\\\\", "ooo", "---", "+++", "|||", "**")
PASS_BG = "#d9f0d3"
FAIL_BG = "#f4c7c3"
BORDER_BG = "#fff2b2"
HEAD_BG = "#e6e6e6"
HALO = [patheffects.Stroke(linewidth=3.2, foreground="white"), patheffects.Normal()]

SOURCE_WORDS = {"fmo": "FMO", "isotype": "isotype", "unstained": "unstained",
                "auto": "auto (no control)"}


def pct(x: float | None) -> str:
    """A percentage with one decimal exactly as summary.csv prints it; a dash when absent."""
    return _fmt(x) or "–"


def interval(ci: Sequence[float] | None) -> str:
    return f"{_fmt(ci[0])}–{_fmt(ci[1])}" if ci else "–"


def mark(passed: bool | None, borderline: bool = False, measured: bool = True) -> str:
    """Pass/fail as a symbol and a word, so a black-and-white print still says it."""
    if not measured:
        return "– not measured"
    if passed is None:
        return "· reported"
    word = "✓ pass" if passed else "✗ FAIL"
    return word + (" (borderline)" if borderline else "")


def mark_bg(passed: bool | None, borderline: bool = False) -> str | None:
    """The colour that repeats :func:`mark` (never the only carrier of the meaning)."""
    if passed is None:
        return None
    if borderline:
        return BORDER_BG
    return PASS_BG if passed else FAIL_BG


def source_text(m: MarkerResult) -> str:
    """Where the threshold came from, and whether it was widened to the stained negatives."""
    text = SOURCE_WORDS.get(m.threshold_source or "", m.threshold_source or "–")
    ratio = getattr(m, "control_spread_ratio", 1.0) or 1.0
    return text + (f", widened ×{ratio:.2f}" if ratio > 1.0 + 1e-9 else "")


def limit_text(m: MarkerResult) -> str:
    if m.limit is None or m.expect == "informative":
        return "–"
    return ("≥ " if m.expect == "positive" else "≤ ") + _fmt(m.limit)


def wrap(text: str, width_pt: float, size: float, mono: bool = False,
         bold: bool = False) -> list[str]:
    """Wrap to a width in points, estimating DejaVu glyph widths (generous, never overflows)."""
    per_char = (0.61 if mono else 0.64 if bold else 0.58) * size
    n = max(4, int(width_pt / per_char))
    lines: list[str] = []
    for para in str(text).split("\n"):
        lines.extend(textwrap.wrap(para, n, break_long_words=True, break_on_hyphens=False) or [""])
    return lines


@dataclass
class Cell:
    """One table cell: text plus optional background, hatch and weight."""

    text: str
    bg: str | None = None
    hatch: str | None = None
    bold: bool = False
    mono: bool = False


class Flow:
    """Top-to-bottom layout of text, tables and plot blocks over as many pages as needed."""

    def __init__(self, header: str, landscape: bool = False) -> None:
        self.header = header
        self.size = (A4[1], A4[0]) if landscape else A4
        self.pages: list[Figure] = []
        self.section = ""
        self.fig: Figure
        self.y = 0.0
        self._page()

    # -- pages -------------------------------------------------------------------------------
    @property
    def width(self) -> float:
        return self.size[0] - 2 * MARGIN

    @property
    def room(self) -> float:
        return self.size[1] - BOTTOM - self.y

    def _page(self) -> None:
        w, h = self.size
        self.fig = Figure(figsize=(w / 72, h / 72), dpi=DPI)
        self.pages.append(self.fig)
        self.y = TOP
        self.put_text(MARGIN, self.y, self.header, 7.5, color="#444444")
        self.y += 14
        if self.section:
            self.put_text(MARGIN, self.y, f"{self.section} (continued)", 12, bold=True)
            self.y += 22

    def new_section(self, title: str, page_break: bool = True) -> None:
        """Start a titled section, on a fresh page unless told otherwise."""
        if page_break and self.y > TOP + 14:
            self.section = ""
            self._page()
        self.section = title
        self.need(40)
        self.put_text(MARGIN, self.y, title, 12, bold=True)
        self.y += 22

    def need(self, height: float) -> None:
        if height > self.room and self.y > TOP + 40:
            self._page()

    # -- primitives (points from the top-left corner) ----------------------------------------
    def put_text(self, x: float, y: float, s: str, size: float, bold: bool = False,
              mono: bool = False, color: str = "black", ha: str = "left") -> None:
        w, h = self.size
        # zorder below the axes: the text layer then reads in page order (title first)
        self.fig.text(x / w, 1 - y / h, s, fontsize=size, va="top", ha=ha, color=color,
                      zorder=-0.5, fontweight="bold" if bold else "normal",
                      family="DejaVu Sans Mono" if mono else "DejaVu Sans")

    def put_rect(self, x: float, y: float, width: float, height: float, bg: str | None,
              hatch: str | None = None, edge: str = "none", lw: float = 0.0,
              dashed: bool = False) -> None:
        w, h = self.size
        self.fig.add_artist(Rectangle((x / w, 1 - (y + height) / h), width / w, height / h,
                                      transform=self.fig.transFigure, facecolor=bg or "none",
                                      hatch=hatch, edgecolor=edge, linewidth=lw, zorder=-1,
                                      linestyle="--" if dashed else "-"))

    # -- flowing items -----------------------------------------------------------------------
    def text(self, s: str, size: float = 8.5, bold: bool = False, mono: bool = False,
             indent: float = 0.0, color: str = "black", after: float = 3.0,
             width: float | None = None) -> None:
        """A wrapped paragraph; it may continue on the next page."""
        line_h = size * 1.3
        for line in wrap(s, (width or self.width) - indent, size, mono, bold):
            self.need(line_h)
            self.put_text(MARGIN + indent, self.y, line, size, bold=bold, mono=mono, color=color)
            self.y += line_h
        self.y += after

    def bullets(self, items: Sequence[str], size: float = 8.5) -> None:
        for item in items:
            lines = wrap(item, self.width - 12, size)
            self.need(size * 1.3 * min(len(lines), 3))
            self.put_text(MARGIN, self.y, "•", size)
            self.text(item, size=size, indent=12, after=2)

    def space(self, pt: float) -> None:
        self.y += pt

    def table(self, headers: Sequence[str] | None, rows: Sequence[Sequence[Cell | str]],
              widths: Sequence[float], size: float = 8.0, aligns: str | None = None) -> None:
        """A ruled table; widths are fractions of the text width; header repeats on new pages."""
        total = sum(widths)
        cols = [self.width * w / total for w in widths]
        aligns = aligns or "l" * len(cols)
        line_h = size * 1.3
        pad = 2.5

        def cells_lines(row: Sequence[Cell], head_row: bool = False) -> list[list[str]]:
            return [wrap(c.text, cols[i] - 2 * pad, size, c.mono, c.bold or head_row)
                    for i, c in enumerate(row)]

        def draw(row: Sequence[Cell], head: bool) -> None:
            lines = cells_lines(row, head)
            height = max(len(x) for x in lines) * line_h + 2 * pad
            x = MARGIN
            for i, c in enumerate(row):
                self.put_rect(x, self.y, cols[i], height, HEAD_BG if head else c.bg, c.hatch)
                tx = x + pad if aligns[i] == "l" else x + cols[i] - pad
                for j, line in enumerate(lines[i]):
                    self.put_text(tx, self.y + pad + j * line_h, line, size, bold=head or c.bold,
                               mono=c.mono, ha="left" if aligns[i] == "l" else "right")
                x += cols[i]
            self._rule(self.y + height, 0.8 if head else 0.3)
            self.y += height

        def height(row: Sequence[Cell], head_row: bool = False) -> float:
            return max(len(x) for x in cells_lines(row, head_row)) * line_h + 2 * pad

        head = [Cell(h) for h in headers] if headers else None
        norm = [[c if isinstance(c, Cell) else Cell(str(c)) for c in r] for r in rows]
        self.need((height(head, True) if head else 0) + (height(norm[0]) if norm else 0))
        self._rule(self.y, 0.8)
        if head:
            draw(head, True)
        for r in norm:
            if height(r) + (height(head, True) if head else 0) > self.room + 1e-6 and \
                    self.y > TOP + 60:
                self._page()
                self._rule(self.y, 0.8)
                if head:
                    draw(head, True)
            draw(r, False)
        self.y += 8

    def _rule(self, y: float, lw: float) -> None:
        w, h = self.size
        self.fig.add_artist(matplotlib.lines.Line2D(
            [MARGIN / w, (MARGIN + self.width) / w], [1 - y / h, 1 - y / h],
            transform=self.fig.transFigure, color="black", linewidth=lw))

    def block(self, height: float) -> tuple[Figure, tuple[float, float, float, float]]:
        """Reserve ``height`` points for plots; returns the figure and the block's
        (left, bottom, width, height) in figure fractions."""
        self.need(height)
        w, h = self.size
        rect = (MARGIN / w, 1 - (self.y + height) / h, self.width / w, height / h)
        self.y += height
        return self.fig, rect

    def axes_grid(self, n: int, ncols: int, row_height: float, title_room: float = 28.0,
                  below: float = 34.0, wspace: float = 44.0, left: float = 36.0) -> list[Any]:
        """``n`` axes in rows of ``ncols``; each row keeps ``title_room`` above for the titles
        and ``below`` for the axis labels, and moves to a new page when it does not fit."""
        axes = []
        cell_w = (self.width - left - (ncols - 1) * wspace) / ncols
        w, h = self.size
        for start in range(0, n, ncols):
            self.need(title_room + row_height + below)
            self.y += title_room
            for j in range(min(ncols, n - start)):
                x0 = MARGIN + left + j * (cell_w + wspace)
                axes.append(self.fig.add_axes(
                    (x0 / w, 1 - (self.y + row_height) / h, cell_w / w, row_height / h)))
            self.y += row_height + below
        return axes


def add_footers(pages: Sequence[Figure], left: str) -> None:
    """'<left> · page n of m' at the foot of every page (m known only once all are laid out)."""
    m = len(pages)
    for n, fig in enumerate(pages, start=1):
        w, h = fig.get_size_inches() * 72
        fig.text(MARGIN / w, 22 / h, left, fontsize=7.5, va="bottom", ha="left", color="#333333")
        fig.text(1 - MARGIN / w, 22 / h, f"page {n} of {m}", fontsize=7.5, va="bottom",
                 ha="right", color="#333333")


def save_pdf(pages: Sequence[Figure], path: Path, title: str, version: str) -> None:
    """Write the pages as one PDF whose bytes depend only on the content (no dates)."""
    meta = {"Title": title, "Creator": f"cytomsc {version}", "Producer": f"cytomsc {version}",
            "CreationDate": None, "ModDate": None}
    try:
        with matplotlib.rc_context(RC), PdfPages(path, metadata=meta) as pdf:
            for fig in pages:
                pdf.savefig(fig, dpi=DPI)
    except OSError as err:
        raise CytomscError(f"cannot write the PDF report: {err.strerror or err}", path) from None


# -- plots ------------------------------------------------------------------------------------
def _ticks(ax: Any, xt: Sequence[tuple[float, str]], yt: Sequence[tuple[float, str]] = ()) -> None:
    """Tick labels in the instrument's units at their transformed positions (a fixed locator and
    formatter: much cheaper than ``set_xticks(labels=...)``, which styles every label anew)."""
    from matplotlib.ticker import FixedFormatter, FixedLocator

    for axis, ticks in ((ax.xaxis, xt), (ax.yaxis, yt)):
        if ticks:
            axis.set_major_locator(FixedLocator([p for p, _ in ticks]))
            axis.set_major_formatter(FixedFormatter([superscript(s) for _, s in ticks]))


def superscript(label: str) -> str:
    """'10^5' -> '10⁵': the label the analysis gave, typeset."""
    return re.sub(r"\^(-?\d+)", lambda m: m.group(1).translate(_SUP), label)


_SUP = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def density(ax: Any, hist: Histogram2D) -> None:
    """Events as a 2-D histogram on a log colour scale (white where there are none)."""
    counts = np.asarray(hist.counts, dtype=float)
    shown = np.ma.masked_less(counts.T, 1)
    vmax = max(2.0, float(counts.max()) if counts.size else 2.0)
    cmap = matplotlib.colormaps[CMAP].with_extremes(bad="white")
    norm = LogNorm(vmin=1, vmax=vmax)
    xe, ye = np.asarray(hist.x_edges, float), np.asarray(hist.y_edges, float)
    if _uniform(xe) and _uniform(ye):
        # an image is embedded as is: far cheaper than a rasterized mesh, same picture
        ax.imshow(shown, origin="lower", extent=(xe[0], xe[-1], ye[0], ye[-1]), aspect="auto",
                  interpolation="nearest", cmap=cmap, norm=norm)
    else:
        ax.pcolormesh(xe, ye, shown, cmap=cmap, norm=norm, rasterized=True, shading="flat")
    ax.set_xlim(hist.x_edges[0], hist.x_edges[-1])
    ax.set_ylim(hist.y_edges[0], hist.y_edges[-1])
    ax.set_xlabel(hist.x)
    ax.set_ylabel(hist.y)
    _ticks(ax, hist.x_ticks, hist.y_ticks)


def _uniform(edges: np.ndarray) -> bool:
    step = np.diff(edges)
    return bool(len(step)) and bool(np.allclose(step, step[0], rtol=1e-6, atol=0))


def gate_plot(ax: Any, step: GateStep) -> None:
    """One gate over the events it was drawn on: polygon outline, or hatched kept intervals."""
    if step.histogram is not None:
        density(ax, step.histogram)
    else:
        ax.set_xlabel(step.x)
        ax.text(0.5, 0.5, "no plot data returned", transform=ax.transAxes, ha="center",
                va="center", fontsize=7)
    if step.y is not None and len(step.vertices) >= 3:
        xs = [v[0] for v in step.vertices] + [step.vertices[0][0]]
        ys = [v[1] for v in step.vertices] + [step.vertices[0][1]]
        ax.plot(xs, ys, color="black", linewidth=1.3, path_effects=HALO)
    elif step.y is None and step.vertices:
        # hatch what the gate removed, so the kept events stay clearly visible
        lo_edge = step.histogram.x_edges[0] if step.histogram is not None else ax.get_xlim()[0]
        hi_edge = step.histogram.x_edges[-1] if step.histogram is not None else ax.get_xlim()[1]
        kept = sorted(step.vertices)
        start = lo_edge
        for lo, hi in kept + [(hi_edge, hi_edge)]:
            if lo > start:
                ax.axvspan(start, lo, facecolor="#ffffff", edgecolor="#444444", hatch="////",
                           linewidth=0, alpha=0.75)
            start = max(start, hi)
        for lo, hi in kept:
            for v in (lo, hi):
                if lo_edge < v < hi_edge:
                    ax.axvline(v, color="black", linewidth=1.2, path_effects=HALO)
    ax.set_title(f"{step.gate}: {pct(step.percent)} % inside\n"
                 f"{step.count:,} of {step.parent_count:,} events", fontsize=8)


def marker_plot(ax: Any, m: MarkerResult) -> None:
    """Stained histogram (grey, solid) over its control's (hatched, dashed), threshold line."""
    h = m.histogram
    if h is None:
        ax.text(0.5, 0.5, "no histogram returned", transform=ax.transAxes, ha="center",
                va="center", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    edges = np.asarray(h.edges, dtype=float)
    stained = np.asarray(h.stained, dtype=float)
    top = 0.0
    # fill_between on steps rather than stairs: same picture, much cheaper limits and output
    x = np.repeat(edges, 2)[1:-1]
    if h.control is not None:
        control = np.asarray(h.control, dtype=float)
        cy = np.repeat(100 * control / max(control.sum(), 1), 2)
        ax.fill_between(x, cy, facecolor="none", edgecolor="#555555", hatch="////",
                        linewidth=0)
        ax.plot(x, cy, color="black", linestyle="--", linewidth=0.9)
        top = max(top, float(cy.max(initial=0)))
    sy = np.repeat(100 * stained / max(stained.sum(), 1), 2)
    ax.fill_between(x, sy, facecolor="#bdbdbd", alpha=0.8, linewidth=0, zorder=1)
    ax.plot(x, sy, color="black", linewidth=1.0, zorder=2)
    top = max(top, float(sy.max(initial=0)))
    if h.threshold is not None:
        ax.axvline(h.threshold, color="black", linewidth=1.3, linestyle="-.", zorder=3)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylim(0, top * 1.15 if top > 0 else 1)
    ax.set_ylabel("% of events per bin")
    ax.set_xlabel(m.channel or "")
    _ticks(ax, h.ticks)


def heatmap(ax: Any, scaled: np.ndarray, labels: np.ndarray, rows: Sequence[str],
            cols: Sequence[str]) -> None:
    """A populations x channels heatmap; ``scaled`` in 0..1, ``labels`` the printed values."""
    ax.imshow(scaled, cmap="Greys", vmin=-0.15, vmax=1.15, aspect="auto",
              interpolation="nearest")
    for i in range(scaled.shape[0]):
        for j in range(scaled.shape[1]):
            ax.text(j, i, labels[i, j], ha="center", va="center", fontsize=7,
                    color="white" if scaled[i, j] > 0.55 else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=35, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.tick_params(length=0)


def populations_scatter(ax: Any, xy: np.ndarray, labels: np.ndarray, ids: Sequence[int],
                        names: Callable[[int], str]) -> None:
    """Cells in a 2-D view, each population its own marker shape and colour (rasterized)."""
    colours = matplotlib.colormaps["tab10"]
    for k, pid in enumerate(ids):
        sel = labels == pid
        ax.scatter(xy[sel, 0], xy[sel, 1], s=4, marker=POP_MARKERS[k % len(POP_MARKERS)],
                   color=colours(k % 10), linewidths=0, alpha=0.7, rasterized=True,
                   label=names(pid))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best", frameon=True, markerscale=2.5, fontsize=7)
