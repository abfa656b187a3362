"""Drawing shared by the culture PDF and the batch overview.

Everything here draws values the analysis returned; nothing is recomputed except display scalings
that the page states in words (a histogram shown as % of events per bin, a heatmap scaled per
channel). Pages are plain ``matplotlib.figure.Figure`` objects (no pyplot, no global state),
laid out by :class:`Flow`, which places text, tables and plot panels top to bottom and opens a
continuation page when the next item does not fit. Only ``pdf.py`` and ``overview.py`` import
this module, and only inside their functions, so importing ``cytomsc.report`` stays light.

Speed (a culture's PDF is written in well under a second): matplotlib's fixed costs are per
``Text`` and per axis tick. So a page's words are one :class:`TextLayer` (one artist, positions
precomputed, no layout engine). Every word is in one font, DejaVu Sans (regular and bold, shipped
with matplotlib), embedded as a TrueType subset (``pdf.fonttype`` 42) with a Unicode map: the PDF
looks the same on every reader and printer, and every word stays searchable text (✓ ✗ ≥ ≤ 10⁵
included). Plot panels are axes without matplotlib's axis machinery: the frame, ticks, labels
and titles are drawn here; tick labels that would touch a neighbour are left out (the tick mark
stays).

Black-and-white rule: pass/fail is always written (a word and a symbol), colour only repeats it;
plots use a colour map whose lightness is monotone, gate outlines are black on a white halo, and
populations differ by marker shape and hatching as well as colour.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import matplotlib
import numpy as np
from matplotlib import patheffects
from matplotlib.artist import Artist
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from ..errors import CytomscError
from ..results import GateStep, Histogram2D, MarkerResult, _fmt

A4 = (595.28, 841.89)  # points
MARGIN = 40.0
TOP = 34.0
BOTTOM = 48.0  # room for the footer
DPI = 150  # rasterized plot layers
ASCENT = 0.76  # a line's baseline below its top, in em (DejaVu's 'l'; Helvetica's is 0.72)
TICK_SIZE = 7.0

RC: dict[Any, Any] = {  # matplotlib rcParams (its stubs key them by Literal)
    # TrueType subsets of DejaVu Sans for all text (no core Helvetica): one font, embedded, so the
    # record prints as it was checked. matplotlib sizes its glyph subsets from ps.fonttype, so
    # both must agree.
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "pdf.use14corefonts": False,
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

SOURCE_WORDS = {
    "fmo": "FMO",
    "isotype": "isotype",
    "unstained": "unstained",
    "auto": "auto (no control)",
}


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


def wrap(
    text: str, width_pt: float, size: float, mono: bool = False, bold: bool = False
) -> list[str]:
    """Wrap to a width in points, estimating DejaVu glyph widths (generous, never overflows).

    Words break at spaces; a word longer than a line (a file path, a hash) breaks after a path
    separator, else after "_", "-" or ".", and only as a last resort mid-word."""
    per_char = (0.61 if mono else 0.64 if bold else 0.58) * size
    n = max(4, int(width_pt / per_char))
    lines: list[str] = []
    for para in str(text).split("\n"):
        cur = ""
        for word in para.split():
            for k, piece in enumerate(_pieces(word, n)):
                glue = " " if k == 0 and cur else ""
                if len(cur) + len(glue) + len(piece) <= n:
                    cur += glue + piece
                else:
                    if cur:
                        lines.append(cur)
                    cur = piece
        lines.append(cur)
    return lines


def _pieces(word: str, n: int) -> list[str]:
    """``word`` cut into parts of at most ``n`` characters at the best break points."""
    if len(word) <= n:
        return [word]
    for pattern in (r"(?<=[/\\])", r"(?<=[_.\-])"):
        parts = [p for p in re.split(pattern, word) if p]
        if len(parts) > 1:
            return [q for part in parts for q in _pieces(part, n)]
    return [word[i : i + n] for i in range(0, len(word), n)]


@dataclass
class Cell:
    """One table cell: text plus optional background, hatch and weight."""

    text: str
    bg: str | None = None
    hatch: str | None = None
    bold: bool = False
    mono: bool = False


@dataclass(frozen=True)
class _Item:
    """One line of text at a point given from the page's top-left corner, in points."""

    x: float
    y: float
    s: str
    size: float
    bold: bool
    mono: bool
    color: str
    ha: str
    va: str
    angle: float


@cache
def _font(size: float, bold: bool = False) -> FontProperties:
    """DejaVu Sans, the one font of every page (``mono`` text uses it too), by file: matplotlib's
    own copy, so that another DejaVu installed on the system (fonts-dejavu) can never be picked
    instead by the font lookup, which would change the PDF's bytes from one machine to the
    next."""
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return FontProperties(
        fname=str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size=size
    )


@cache
def text_width(s: str, size: float, bold: bool = False) -> float:
    """Width of a line of text in points, measured with the font itself (Agg's metrics at
    72 dpi, where a pixel is a point)."""
    return float(_measurer().get_text_width_height_descent(s, _font(size, bold), False)[0])


@cache
def _measurer() -> Any:
    from matplotlib.backends.backend_agg import RendererAgg

    return RendererAgg(10, 10, 72.0)


TICK_GAP = 2.0  # points of white between two tick labels


def spaced(
    labels: Sequence[tuple[float, str]], size: float, vertical: bool = False
) -> list[tuple[float, str]]:
    """The tick labels that can be printed without touching each other, centred on their
    positions (points along the axis): "0" first, then the decades from the top of the scale
    down, then the rest (negative decades), each kept only if it clears every label kept so far
    by ``TICK_GAP``. So "-10¹", "0" and "10¹" squeezed together print as "0" alone."""

    def priority(item: tuple[int, tuple[float, str]]) -> tuple[int, float]:
        k, (_, text) = item
        if text == "0":
            return (0, 0.0)
        return (1, -k) if not text.startswith(("-", "−", "⁻")) else (2, k)

    kept: list[tuple[float, float, int]] = []  # (low, high, index)
    for k, (pos, text) in sorted(enumerate(labels), key=priority):
        half = (size if vertical else text_width(text, size)) / 2 + TICK_GAP / 2
        if all(pos + half <= lo or pos - half >= hi for lo, hi, _ in kept):
            kept.append((pos - half, pos + half, k))
    return [labels[k] for _, _, k in sorted(kept, key=lambda t: t[2])]


class _Plain:
    """What a renderer asks a ``Text`` for its shaping: no ligatures. A ligature ("fl" in
    "flow") is a glyph for two characters, which the PDF backend embeds as a second subset of the
    font (twice the TrueType subsetting time) and a text extractor may read as one character."""

    @staticmethod
    def get_fontfeatures() -> tuple[str, ...]:
        return ("-liga", "-clig")

    @staticmethod
    def get_language() -> None:
        return None


_PLAIN = _Plain()


class TextLayer(Artist):
    """A page's text as one artist: each line is handed straight to the renderer.

    Compared with one ``matplotlib.text.Text`` per line this skips the layout engine (the
    positions are known) and, in a PDF, writes each line as one string. Lines are drawn in the
    order they were added, which is the order of the PDF's text layer (what pypdf and a reader's
    search see).
    """

    def __init__(self, zorder: float) -> None:
        super().__init__()
        self.items: list[_Item] = []
        self.set_zorder(zorder)

    def add(
        self,
        x: float,
        y: float,
        s: str,
        size: float,
        bold: bool = False,
        mono: bool = False,
        color: str = "black",
        ha: str = "left",
        va: str = "top",
        angle: float = 0.0,
    ) -> None:
        """One line, its top-left (or ``ha``/``va`` anchor) at (x, y) points from the page's
        top-left corner."""
        s = str(s)
        if s.strip():
            self.items.append(_Item(x, y, s, float(size), bold, mono, color, ha, va, float(angle)))

    def draw(self, renderer: Any) -> None:
        if not self.get_visible() or not self.items:
            return
        scale = renderer.points_to_pixels(1.0)
        height = renderer.get_canvas_width_height()[1]
        gc = renderer.new_gc()
        try:
            for it in self.items:
                prop = _font(it.size, it.bold)
                gc.set_foreground(it.color)
                a = math.radians(it.angle)
                cos, sin = math.cos(a), math.sin(a)
                x, y = it.x * scale, height - it.y * scale  # display units, y up
                drop = {"top": ASCENT, "center": 0.36}.get(it.va, 0.0) * it.size * scale
                x, y = x + drop * sin, y - drop * cos  # down, across the text's direction
                if it.ha != "left":
                    w = _rendered_width(renderer, it.s, it.size, it.bold)
                    f = 0.5 if it.ha == "center" else 1.0
                    x, y = x - f * w * cos, y - f * w * sin
                if renderer.flipy():
                    y = height - y
                renderer.draw_text(gc, x, y, it.s, prop, it.angle, mtext=_PLAIN)
        finally:
            gc.restore()
        self.stale = False


_WIDTHS: dict[tuple, float] = {}
_PAGE_AXES = "cytomsc-page"  # label of a page's shared axes (PlotArea.page_axes)


def _rendered_width(renderer: Any, s: str, size: float, bold: bool) -> float:
    """Width of a line as ``renderer`` measures it, once per process for each renderer kind,
    resolution and line (a right-aligned or centred line is measured before it is drawn; tick
    labels and headings repeat on every page and in every culture's PDF)."""
    key = (type(renderer), getattr(renderer, "dpi", None), s, size, bold)
    w = _WIDTHS.get(key)
    if w is None:
        if len(_WIDTHS) > 100_000:
            _WIDTHS.clear()
        w = _WIDTHS[key] = renderer.get_text_width_height_descent(s, _font(size, bold), False)[0]
    return w


@dataclass
class PlotArea:
    """A plot's place on a page, in points from the top-left corner, with its axes.

    The axes draw only the data (images, lines, fills); the frame, ticks, tick labels, axis
    labels and title are page text and lines, drawn by the methods here: matplotlib's axis
    machinery costs ~30 ms a plot.
    """

    fig: Figure
    layer: TextLayer
    over: TextLayer
    x: float
    y: float
    w: float
    h: float
    ax: Any = None
    xlim: tuple[float, float] = (0.0, 1.0)
    ylim: tuple[float, float] = (0.0, 1.0)
    lines: list[tuple[float, float]] = field(default_factory=list)

    def axes(self) -> Any:
        """The panel's axes (created once, no axis drawing)."""
        if self.ax is None:
            pw, ph = self.fig.get_size_inches() * 72
            self.ax = self.fig.add_axes(
                (self.x / pw, 1 - (self.y + self.h) / ph, self.w / pw, self.h / ph)
            )
            self.ax.set_axis_off()
        return self.ax

    def limits(
        self, xlim: tuple[float, float], ylim: tuple[float, float], own_axes: bool = True
    ) -> None:
        """The data range the panel shows; ``own_axes=False`` for panels drawn on the page's
        shared axes (``page_axes``), which only need it to place their data."""
        self.xlim, self.ylim = (float(xlim[0]), float(xlim[1])), (float(ylim[0]), float(ylim[1]))
        if own_axes:
            ax = self.axes()
            ax.set_xlim(*self.xlim)
            ax.set_ylim(*self.ylim)

    def page_axes(self) -> Any:
        """The page's one shared axes, in points from the page's top-left corner (x right, y
        down). Panels drawn on it (``to_page``, ``clip``) need no axes of their own: making
        and drawing an axes costs about 10 ms, and a gating page has four to six plots."""
        for ax in self.fig.axes:
            if ax.get_label() == _PAGE_AXES:
                return ax
        pw, ph = self.fig.get_size_inches() * 72
        ax = self.fig.add_axes((0.0, 0.0, 1.0, 1.0), label=_PAGE_AXES)
        ax.set_axis_off()
        ax.set_xlim(0.0, pw)
        ax.set_ylim(ph, 0.0)
        ax.set_autoscale_on(False)
        return ax

    def to_page(self, xs: Any, ys: Any) -> tuple[np.ndarray, np.ndarray]:
        """Data coordinates of this panel as page points (arrays)."""
        (x0, x1), (y0, y1) = self.xlim, self.ylim
        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        return (
            self.x + (xs - x0) * (self.w / (x1 - x0)),
            self.y + self.h - (ys - y0) * (self.h / (y1 - y0)),
        )

    def clip(self, artist: Artist) -> Artist:
        """Clip an artist of the page axes to this panel's frame."""
        ax = self.page_axes()
        artist.set_clip_path(Rectangle((self.x, self.y), self.w, self.h, transform=ax.transData))
        return artist

    def px(self, v: float) -> float:
        x0, x1 = self.xlim
        return self.x + (v - x0) / (x1 - x0) * self.w

    def py(self, v: float) -> float:
        y0, y1 = self.ylim
        return self.y + self.h - (v - y0) / (y1 - y0) * self.h

    def frame(
        self,
        xticks: Sequence[tuple[float, str]] = (),
        yticks: Sequence[tuple[float, str]] = (),
        xlabel: str = "",
        ylabel: str = "",
        box: bool = True,
    ) -> None:
        """Frame, outward ticks with labels in the instrument's units, and axis labels."""
        pw, ph = self.fig.get_size_inches() * 72
        if box:
            self.fig.add_artist(
                Rectangle(
                    (self.x / pw, 1 - (self.y + self.h) / ph),
                    self.w / pw,
                    self.h / ph,
                    facecolor="none",
                    edgecolor="black",
                    linewidth=0.6,
                    zorder=2.5,
                    transform=self.fig.transFigure,
                )
            )
        segs: list[tuple[float, float]] = []
        bottom = self.y + self.h
        shown = []
        for v, label in xticks:
            if (
                self.xlim[0] - 1e-9 <= v <= self.xlim[1] + 1e-9
                or self.xlim[1] - 1e-9 <= v <= self.xlim[0] + 1e-9
            ):
                x = self.px(v)
                segs += [(x, bottom), (x, bottom + 3), (math.nan, math.nan)]
                shown.append((x, superscript(label)))
        for x, text in spaced(shown, TICK_SIZE):
            self.layer.add(x, bottom + 4.5, text, TICK_SIZE, ha="center")
        widest = 0.0
        shown = []
        for v, label in yticks:
            lo, hi = sorted(self.ylim)
            if lo - 1e-9 <= v <= hi + 1e-9:
                y = self.py(v)
                segs += [(self.x, y), (self.x - 3, y), (math.nan, math.nan)]
                shown.append((y, superscript(label)))
        for y, text in spaced(shown, TICK_SIZE, vertical=True):
            self.layer.add(self.x - 4.5, y, text, TICK_SIZE, ha="right", va="center")
            widest = max(widest, text_width(text, TICK_SIZE))
        if segs:
            xy = np.array(segs)
            self.fig.add_artist(
                Line2D(
                    xy[:, 0] / pw,
                    1 - xy[:, 1] / ph,
                    color="black",
                    linewidth=0.6,
                    transform=self.fig.transFigure,
                    zorder=2.5,
                )
            )
        if xlabel:
            self.layer.add(
                self.x + self.w / 2, bottom + (15 if xticks else 5), xlabel, 7.5, ha="center"
            )
        if ylabel:
            # rotated, the line's top is its left edge: its foot clears the tick labels by 3 pt
            self.layer.add(
                self.x - 7.5 - widest - 3 - 7.5,
                self.y + self.h / 2,
                ylabel,
                7.5,
                ha="center",
                angle=90.0,
            )

    def title(self, lines: Sequence[str], loc: str = "center", size: float = 8.0) -> None:
        """Lines above the frame, the last one 5 points above it."""
        step = size * 1.22
        top = self.y - 5 - len(lines) * step
        x = self.x if loc == "left" else self.x + self.w / 2
        for k, line in enumerate(lines):
            self.layer.add(x, top + k * step, line, size, ha=loc)

    def message(self, text: str) -> None:
        """A note in the middle of an empty panel (what the analysis did not return)."""
        self.over.add(self.x + self.w / 2, self.y + self.h / 2, text, 7, ha="center", va="center")


class Flow:
    """Top-to-bottom layout of text, tables and plot blocks over as many pages as needed."""

    def __init__(self, header: str, landscape: bool = False) -> None:
        self.header = header
        self.size = (A4[1], A4[0]) if landscape else A4
        self.pages: list[Figure] = []
        self.layers: list[tuple[TextLayer, TextLayer]] = []
        self.section = ""
        self.floor: float | None = None
        self.fig: Figure
        self.layer: TextLayer
        self.over: TextLayer
        self.y = 0.0
        self._page()

    # -- pages -------------------------------------------------------------------------------
    @property
    def width(self) -> float:
        return self.size[0] - 2 * MARGIN

    @property
    def room(self) -> float:
        bottom = self.floor if self.floor is not None else self.size[1] - BOTTOM
        return bottom - self.y

    def _page(self) -> None:
        w, h = self.size
        self.fig = Figure(figsize=(w / 72, h / 72), dpi=DPI)
        # each plot's image embedded on its own, at its own resolution: measured against one
        # composited image per page (rc image.composite_image), 0.15 s less a culture's PDF and
        # smaller files, with the same picture
        self.fig.suppressComposite = True
        # text under the plots (zorder below the axes: reads in page order, title first) and
        # text over them (numbers printed on a heatmap)
        self.layer, self.over = TextLayer(-0.5), TextLayer(3.0)
        self.fig.add_artist(self.layer)
        self.fig.add_artist(self.over)
        self.pages.append(self.fig)
        self.layers.append((self.layer, self.over))
        self.floor = None  # a page's flowing items end here (None: at the footer)
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

    @contextlib.contextmanager
    def on_page(self, index: int) -> Iterator[None]:
        """Draw on an earlier page (the sign-off block at the foot of page 1, placed last so
        that it is last in the page's text too), then carry on where the flow was."""
        saved = self.fig, self.layer, self.over
        self.fig = self.pages[index]
        self.layer, self.over = self.layers[index]
        try:
            yield
        finally:
            self.fig, self.layer, self.over = saved

    def need(self, height: float) -> None:
        if height > self.room and self.y > TOP + 40:
            self._page()

    # -- primitives (points from the top-left corner) ----------------------------------------
    def put_text(
        self,
        x: float,
        y: float,
        s: str,
        size: float,
        bold: bool = False,
        mono: bool = False,
        color: str = "black",
        ha: str = "left",
    ) -> None:
        self.layer.add(x, y, s, size, bold=bold, mono=mono, color=color, ha=ha)

    def put_rect(
        self,
        x: float,
        y: float,
        width: float,
        height: float,
        bg: str | None,
        hatch: str | None = None,
        edge: str = "none",
        lw: float = 0.0,
        dashed: bool = False,
    ) -> None:
        if bg is None and hatch is None and lw == 0:
            return  # nothing to draw: an empty cell costs nothing
        w, h = self.size
        self.fig.add_artist(
            Rectangle(
                (x / w, 1 - (y + height) / h),
                width / w,
                height / h,
                transform=self.fig.transFigure,
                facecolor=bg or "none",
                hatch=hatch,
                edgecolor=edge,
                linewidth=lw,
                zorder=-1,
                linestyle="--" if dashed else "-",
            )
        )

    # -- flowing items -----------------------------------------------------------------------
    def text(
        self,
        s: str,
        size: float = 8.5,
        bold: bool = False,
        mono: bool = False,
        indent: float = 0.0,
        color: str = "black",
        after: float = 3.0,
        width: float | None = None,
    ) -> None:
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

    def table(
        self,
        headers: Sequence[str] | None,
        rows: Sequence[Sequence[Cell | str]],
        widths: Sequence[float],
        size: float = 8.0,
        aligns: str | None = None,
    ) -> None:
        """A ruled table; widths are fractions of the text width; header repeats on new pages."""
        total = sum(widths)
        cols = [self.width * w / total for w in widths]
        aligns = aligns or "l" * len(cols)
        line_h = size * 1.3
        pad = 2.5

        def cells_lines(row: Sequence[Cell], head_row: bool = False) -> list[list[str]]:
            return [
                wrap(c.text, cols[i] - 2 * pad, size, c.mono, c.bold or head_row)
                for i, c in enumerate(row)
            ]

        def draw(row: Sequence[Cell], head: bool) -> None:
            lines = cells_lines(row, head)
            height = max(len(x) for x in lines) * line_h + 2 * pad
            x = MARGIN
            for i, c in enumerate(row):
                self.put_rect(x, self.y, cols[i], height, HEAD_BG if head else c.bg, c.hatch)
                tx = x + pad if aligns[i] == "l" else x + cols[i] - pad
                for j, line in enumerate(lines[i]):
                    self.put_text(
                        tx,
                        self.y + pad + j * line_h,
                        line,
                        size,
                        bold=head or c.bold,
                        mono=c.mono,
                        ha="left" if aligns[i] == "l" else "right",
                    )
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
            if (
                height(r) + (height(head, True) if head else 0) > self.room + 1e-6
                and self.y > TOP + 60
            ):
                self._page()
                self._rule(self.y, 0.8)
                if head:
                    draw(head, True)
            draw(r, False)
        self.y += 8

    def _rule(self, y: float, lw: float) -> None:
        w, h = self.size
        self.fig.add_artist(
            Line2D(
                [MARGIN / w, (MARGIN + self.width) / w],
                [1 - y / h, 1 - y / h],
                transform=self.fig.transFigure,
                color="black",
                linewidth=lw,
            )
        )

    def block(self, height: float) -> tuple[float, float]:
        """Reserve ``height`` points (on this page or the next); returns the block's top-left
        corner in points."""
        self.need(height)
        top = self.y
        self.y += height
        return MARGIN, top

    def panel(self, x: float, y: float, w: float, h: float) -> PlotArea:
        """A plot panel at a place on the current page (points from the top-left corner)."""
        return PlotArea(self.fig, self.layer, self.over, x, y, w, h)

    def panels(
        self,
        n: int,
        ncols: int,
        row_height: float,
        title_room: float = 28.0,
        below: float = 34.0,
        wspace: float = 44.0,
        left: float = 36.0,
    ) -> list[PlotArea]:
        """``n`` panels in rows of ``ncols``; each row keeps ``title_room`` above for the titles
        and ``below`` for the axis labels, and moves to a new page when it does not fit."""
        out = []
        cell_w = (self.width - left - (ncols - 1) * wspace) / ncols
        for start in range(0, n, ncols):
            self.need(title_room + row_height + below)
            self.y += title_room
            for j in range(min(ncols, n - start)):
                out.append(
                    self.panel(MARGIN + left + j * (cell_w + wspace), self.y, cell_w, row_height)
                )
            self.y += row_height + below
        return out


def add_footers(flow: Flow, left: str) -> None:
    """'<left> · page n of m' at the foot of every page (m known only once all are laid out)."""
    m = len(flow.pages)
    for n, (fig, (layer, _)) in enumerate(zip(flow.pages, flow.layers, strict=True), start=1):
        w, h = fig.get_size_inches() * 72
        base = h - 22 - ASCENT * 7.5 - 2  # the line's foot 22 points above the paper's edge
        layer.add(MARGIN, base, left, 7.5, color="#333333")
        layer.add(w - MARGIN, base, f"page {n} of {m}", 7.5, color="#333333", ha="right")


def save_pdf(pages: Sequence[Figure], path: Path, title: str, version: str) -> None:
    """Write the pages as one PDF whose bytes depend only on the content (no dates)."""
    meta = {
        "Title": title,
        "Creator": f"cytomsc {version}",
        "Producer": f"cytomsc {version}",
        "CreationDate": None,
        "ModDate": None,
    }
    from .pdftext import cached_text

    try:
        with cached_text(), matplotlib.rc_context(RC), PdfPages(path, metadata=meta) as pdf:
            for fig in pages:
                pdf.savefig(fig, dpi=DPI)
    except OSError as err:
        raise CytomscError(f"cannot write the PDF report: {err.strerror or err}", path) from None


# -- plots ------------------------------------------------------------------------------------
def superscript(label: str) -> str:
    """'10^5' -> '10⁵': the label the analysis gave, typeset."""
    return re.sub(r"\^(-?\d+)", lambda m: m.group(1).translate(_SUP), label)


_SUP = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def density(p: PlotArea, hist: Histogram2D, on_page: bool = False) -> None:
    """Events as a 2-D histogram on a log colour scale (white where there are none).

    ``on_page``: drawn on the page's shared axes (``PlotArea.page_axes``), not on axes of its
    own; the caller then draws over it in page points (``PlotArea.to_page``)."""
    counts = np.asarray(hist.counts, dtype=float)
    shown = np.ma.masked_less(counts.T, 1)
    vmax = max(2.0, float(counts.max()) if counts.size else 2.0)
    cmap = _cmap()
    norm = LogNorm(vmin=1, vmax=vmax)
    xe, ye = np.asarray(hist.x_edges, float), np.asarray(hist.y_edges, float)
    p.limits((xe[0], xe[-1]), (ye[0], ye[-1]), own_axes=not on_page)
    if on_page:
        ax = p.page_axes()
        if _uniform(xe) and _uniform(ye):
            ax.imshow(
                shown,
                origin="lower",
                extent=(p.x, p.x + p.w, p.y + p.h, p.y),
                aspect="auto",
                interpolation="nearest",
                cmap=cmap,
                norm=norm,
            )
        else:
            gx, gy = p.to_page(xe, ye)
            p.clip(
                ax.pcolormesh(gx, gy, shown, cmap=cmap, norm=norm, rasterized=True, shading="flat")
            )
    else:
        ax = p.axes()
        if _uniform(xe) and _uniform(ye):
            # an image is embedded as is: far cheaper than a rasterized mesh, same picture
            ax.imshow(
                shown,
                origin="lower",
                extent=(xe[0], xe[-1], ye[0], ye[-1]),
                aspect="auto",
                interpolation="nearest",
                cmap=cmap,
                norm=norm,
            )
        else:
            ax.pcolormesh(xe, ye, shown, cmap=cmap, norm=norm, rasterized=True, shading="flat")
        p.limits((xe[0], xe[-1]), (ye[0], ye[-1]))
    # raw scatter and time axes come without ticks from the analysis: round numbers then
    p.frame(
        hist.x_ticks or auto_ticks(*p.xlim), hist.y_ticks or auto_ticks(*p.ylim), hist.x, hist.y
    )


@cache
def _cmap() -> Any:
    return matplotlib.colormaps[CMAP].with_extremes(bad="white")


def _uniform(edges: np.ndarray) -> bool:
    step = np.diff(edges)
    return bool(len(step)) and bool(np.allclose(step, step[0], rtol=1e-6, atol=0))


def gate_plot(p: PlotArea, step: GateStep) -> None:
    """One gate over the events it was drawn on: polygon outline, or hatched kept intervals.

    Drawn on the page's shared axes in page points, each artist clipped to the panel."""
    if step.histogram is not None:
        density(p, step.histogram, on_page=True)
    else:
        p.limits((0.0, 1.0), (0.0, 1.0), own_axes=False)
        p.frame(xlabel=step.x, ylabel=step.y or "")
        p.message("no plot data returned")
    ax = p.page_axes()
    # the time gate and the 1-D gates carry the kept intervals on x, whatever y shows
    intervals = step.gate == "time" or step.y is None
    if not intervals and len(step.vertices) >= 3:
        for ring in _rings(step.vertices):  # several outlines are separated by (nan, nan)
            xs, ys = p.to_page(
                [v[0] for v in ring] + [ring[0][0]], [v[1] for v in ring] + [ring[0][1]]
            )
            for line in ax.plot(xs, ys, color="black", linewidth=1.3, path_effects=HALO):
                p.clip(line)
    elif intervals and step.vertices:
        # hatch what the gate removed, so the kept events stay clearly visible
        lo_edge, hi_edge = p.xlim
        kept = sorted(step.vertices)
        start = lo_edge
        for lo, hi in kept + [(hi_edge, hi_edge)]:
            if lo > start:
                (a, b), _ = p.to_page([start, lo], [])
                ax.add_patch(
                    p.clip(
                        Rectangle(
                            (a, p.y),
                            b - a,
                            p.h,
                            facecolor="#ffffff",
                            edgecolor="#444444",
                            hatch="////",
                            linewidth=0,
                            alpha=0.75,
                        )
                    )
                )
            start = max(start, hi)
        for lo, hi in kept:
            for v in (lo, hi):
                if lo_edge < v < hi_edge:
                    (a,), _ = p.to_page([v], [])
                    for line in ax.plot(
                        [a, a], [p.y, p.y + p.h], color="black", linewidth=1.2, path_effects=HALO
                    ):
                        p.clip(line)
    lines = [
        f"{step.gate}: {pct(step.percent)} % inside",
        f"{step.count:,} of {step.parent_count:,} events, {step.source} gate",
    ]
    if intervals and step.count < step.parent_count:
        lines[1] += f"; hatched: removed ({pct(100.0 - step.percent)} %)"
    p.title(lines)


def _rings(vertices: list[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    rings: list[list[tuple[float, float]]] = [[]]
    for v in vertices:
        if math.isnan(v[0]):
            rings.append([])
        else:
            rings[-1].append(v)
    return [r for r in rings if r]


def marker_plot(p: PlotArea, m: MarkerResult) -> None:
    """Stained histogram (grey, solid) over its control's (hatched, dashed), threshold line."""
    h = m.histogram
    if h is None:
        p.frame()
        p.message("no histogram returned")
        return
    ax = p.axes()
    edges = np.asarray(h.edges, dtype=float)
    stained = np.asarray(h.stained, dtype=float)
    top = 0.0
    # fill_between on steps rather than stairs: same picture, much cheaper limits and output
    x = np.repeat(edges, 2)[1:-1]
    if h.control is not None:
        control = np.asarray(h.control, dtype=float)
        cy = np.repeat(100 * control / max(control.sum(), 1), 2)
        ax.fill_between(x, cy, facecolor="none", edgecolor="#555555", hatch="////", linewidth=0)
        ax.plot(x, cy, color="black", linestyle="--", linewidth=0.9)
        top = max(top, float(cy.max(initial=0)))
    sy = np.repeat(100 * stained / max(stained.sum(), 1), 2)
    ax.fill_between(x, sy, facecolor="#bdbdbd", alpha=0.8, linewidth=0, zorder=1)
    ax.plot(x, sy, color="black", linewidth=1.0, zorder=2)
    top = max(top, float(sy.max(initial=0)))
    if h.threshold is not None:
        ax.axvline(h.threshold, color="black", linewidth=1.3, linestyle="-.", zorder=3)
    ymax = top * 1.6 if top > 0 else 1.0  # headroom for the legend
    p.limits((edges[0], edges[-1]), (0.0, ymax))
    p.frame(h.ticks, _nice_ticks(ymax), m.channel or "", "% of events per bin")
    handles: list[Artist] = [
        Patch(facecolor="#bdbdbd", edgecolor="black", linewidth=1.0, label="stained tube")
    ]
    if h.control is not None:
        role = SOURCE_WORDS.get(h.control_role or "", h.control_role or "control")
        handles.append(
            Patch(
                facecolor="none",
                edgecolor="black",
                hatch="////",
                linestyle="--",
                linewidth=0.9,
                label=f"control: {role}",
            )
        )
    if h.threshold is not None:
        handles.append(
            Line2D([], [], color="black", linestyle="-.", linewidth=1.3, label="threshold")
        )
    # the legend in the corner away from the stained events' bulk
    mid = (edges[:-1] + edges[1:]) / 2
    weight = np.asarray(h.stained, dtype=float)
    centre = float((mid * weight).sum() / weight.sum()) if weight.sum() else 0.0
    left = centre > (edges[0] + edges[-1]) / 2
    ax.legend(
        handles=handles,
        loc="upper left" if left else "upper right",
        frameon=True,
        prop=_font(7),
        handlelength=2.2,
        borderaxespad=0.4,
        framealpha=0.9,
    )


def auto_ticks(lo: float, hi: float) -> list[tuple[float, str]]:
    """About five round-number ticks over [lo, hi], labelled compactly (65k, 1.2M)."""
    from matplotlib.ticker import MaxNLocator

    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return []
    values = [
        float(v)
        for v in MaxNLocator(nbins=5).tick_values(lo, hi)
        if lo - 1e-9 * (hi - lo) <= v <= hi + 1e-9 * (hi - lo)
    ]
    return [(v, _compact(v)) for v in values]


def _compact(v: float) -> str:
    for scale, unit in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:g}{unit}"
    return f"{round(v, 6):g}"


def _nice_ticks(top: float) -> list[tuple[float, str]]:
    """Round-number ticks from 0 to ``top`` (about four), labelled without trailing zeros."""
    raw = top / 4 if top > 0 else 0.25
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    n = int(math.floor(top / step + 1e-9))
    return [(k * step, f"{k * step:g}") for k in range(n + 1)]


def heatmap(
    p: PlotArea, scaled: np.ndarray, labels: np.ndarray, rows: Sequence[str], cols: Sequence[str]
) -> None:
    """A populations x channels heatmap; ``scaled`` in 0..1, ``labels`` the printed values."""
    nr, nc = scaled.shape
    ax = p.axes()
    ax.imshow(
        scaled,
        cmap="Greys",
        vmin=-0.15,
        vmax=1.15,
        aspect="auto",
        interpolation="nearest",
        extent=(0, nc, nr, 0),
    )
    p.limits((0, nc), (nr, 0))
    p.frame()
    for i in range(nr):
        for j in range(nc):
            p.over.add(
                p.px(j + 0.5),
                p.py(i + 0.5),
                labels[i, j],
                7,
                ha="center",
                va="center",
                color="white" if scaled[i, j] > 0.55 else "black",
            )
    for i, row in enumerate(rows):
        p.layer.add(p.x - 4, p.py(i + 0.5), row, 7, ha="right", va="center")
    for j, col in enumerate(cols):
        p.layer.add(p.px(j + 0.5) + 2, p.y + p.h + 4, col, 7, ha="right", angle=35.0)


def fraction_bars(
    p: PlotArea, rows: Sequence[str], fractions: Sequence[float], ci95: Sequence[Sequence[float]]
) -> None:
    """Horizontal bars of % of cells with their 95 % intervals; hatching tells them apart."""
    ax = p.axes()
    n = len(rows)
    for k, (f, ci) in enumerate(zip(fractions, ci95, strict=True)):
        ax.barh(
            k,
            100 * f,
            height=0.8,
            color="#cccccc",
            edgecolor="black",
            linewidth=0.6,
            hatch=POP_HATCHES[k % len(POP_HATCHES)],
            xerr=[[100 * (f - ci[0])], [100 * (ci[1] - f)]],
            capsize=3,
        )
    p.limits((0.0, 100.0), (n - 0.5, -0.5))
    p.frame(
        [(v, str(v)) for v in (0, 25, 50, 75, 100)],
        [(k, r) for k, r in enumerate(rows)],
        "% of cells (bar: 95 % interval)",
    )


def population_histograms(
    p: PlotArea,
    counts: np.ndarray,
    span: tuple[float, float],
    ticks: Sequence[tuple[float, str]],
    ids: Sequence[int],
    names: dict[int, str],
    legend: bool = False,
) -> None:
    """One channel: each population's cells as % of that population per bin, its own line
    style and colour (black-and-white safe), on the channel's plot range. Drawn on the page's
    shared axes (``page_axes``: no axes of its own per channel), except the panel that carries
    the legend."""
    colours = matplotlib.colormaps["tab10"]
    styles = ("-", "--", "-.", ":")
    nb = counts.shape[1]
    edges = np.linspace(span[0], span[1], nb + 1)
    x = np.repeat(edges, 2)[1:-1]
    ys = []
    for k in range(len(ids)):
        c = np.asarray(counts[k], dtype=float)
        ys.append(np.repeat(100 * c / max(c.sum(), 1.0), 2))
    top = max((float(y.max(initial=0.0)) for y in ys), default=0.0)
    ymax = top * (1.45 if legend else 1.1) if top > 0 else 1.0
    p.limits(span, (0.0, ymax), own_axes=legend)
    ax = p.axes() if legend else p.page_axes()
    for k, (pid, y) in enumerate(zip(ids, ys, strict=True)):
        style = dict(
            color=colours(k % 10),
            linestyle=styles[k % len(styles)],
            linewidth=1.1,
            label=names.get(pid, f"P{pid}"),
        )
        if legend:
            ax.plot(x, y, **style)
        else:
            (line,) = ax.plot(*p.to_page(x, y), **style)
            p.clip(line)
    p.frame(list(ticks) or auto_ticks(*span), _nice_ticks(ymax), "", "% per bin")
    if legend:
        ax.legend(
            loc="upper right",
            frameon=True,
            prop=_font(7),
            handlelength=2.0,
            borderaxespad=0.3,
            framealpha=0.9,
        )


def line_key(p: PlotArea, ids: Sequence[int], names: dict[int, str]) -> None:
    """The populations' line styles and colours, as a panel of their own."""
    colours = matplotlib.colormaps["tab10"]
    styles: tuple[Literal["-", "--", "-.", ":"], ...] = ("-", "--", "-.", ":")
    ax = p.axes()
    handles = [
        Line2D(
            [],
            [],
            color=colours(k % 10),
            linestyle=styles[k % len(styles)],
            linewidth=1.4,
            label=names.get(pid, f"P{pid}"),
        )
        for k, pid in enumerate(ids)
    ]
    ax.legend(
        handles=handles,
        loc="upper left",
        frameon=False,
        prop=_font(7),
        handlelength=2.6,
        ncol=1 if len(ids) <= 6 else 2,
        borderaxespad=0.0,
    )


def population_pair(
    p: PlotArea,
    x: np.ndarray,
    y: np.ndarray,
    labels: np.ndarray,
    ids: Sequence[int],
    names: dict[int, str],
    xspan: tuple[float, float],
    yspan: tuple[float, float],
    xticks: Sequence[tuple[float, str]],
    yticks: Sequence[tuple[float, str]],
    xlabel: str,
    ylabel: str,
    legend: bool = False,
) -> None:
    """Cells on two channels, each population its own shape and colour (rasterized)."""
    colours = matplotlib.colormaps["tab10"]
    ax = p.axes()
    for k, pid in enumerate(ids):
        sel = labels == pid
        ax.scatter(
            np.clip(x[sel], *xspan),
            np.clip(y[sel], *yspan),
            s=3,
            marker=POP_MARKERS[k % len(POP_MARKERS)],
            color=colours(k % 10),
            linewidths=0,
            alpha=0.6,
            rasterized=True,
            label=names.get(pid, f"P{pid}"),
        )
    p.limits(xspan, yspan)
    p.frame(list(xticks) or auto_ticks(*xspan), list(yticks) or auto_ticks(*yspan), xlabel, ylabel)
    if legend:
        ax.legend(loc="best", frameon=True, markerscale=2.5, prop=_font(7))
