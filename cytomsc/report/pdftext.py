"""The PDF backend's text work done once per process, not once per string or per file.

Measured on a culture's PDF (8-11 pages, ~700 lines of text; issue 13): matplotlib's PDF
backend shapes every string it draws (FreeType and raqm, about 1 ms a string, then loads each
glyph again, which the PDF backend never uses), and when the file is closed it subsets each
embedded TrueType face with fontTools (about 0.15 s a face, two faces a file). Together that was
two thirds of the time to write the PDF, and the same work was repeated for every culture of a
batch: the same headings, labels, tick labels and digits in the same two faces.

:func:`cached_text` (used around ``PdfPages`` by ``plots.save_pdf``) keeps three things for the
process:

- the shaped glyphs of each (string, font file, size, features, language) — what the backend
  writes is the same glyph ids and positions, so the PDF's bytes do not change;
- the PDF operators matplotlib wrote for each line after its position (``_draw_text``): a line
  drawn again with the same glyph codes and font names gets the same bytes, its glyphs still
  registered with its PDF; a PDF so written is byte-identical to one matplotlib draws line by
  line (tests/test_report.py);
- each face's subset, made for the glyphs of a fixed character set (``BASE_CHARS``: Latin-1,
  the typography and symbols the reports print) plus any other glyph a file uses, without the
  layout tables a PDF viewer never reads. Every report whose characters are all in that set
  embeds the same subset, made once. The subset is larger than the glyphs a file uses (about
  40 KB a face instead of 25) but the same input still gives the same bytes, in any process,
  cached or not.

Both hook into matplotlib's private text helpers for the duration of the ``with`` block only,
and only where they have the form this module was written for (checked on entry): with any
other matplotlib the PDF is written by matplotlib unchanged, just slower.
"""

from __future__ import annotations

import contextlib
import io
import math
import threading
import weakref
from collections.abc import Iterator
from typing import Any, NamedTuple

# Latin-1 and the symbols the reports print (pass/fail marks, inequalities, superscripts of
# tick labels, population symbols, arrows and bullets of the text)
BASE_CHARS = (
    "".join(chr(c) for c in range(0x20, 0x7F))
    + "".join(chr(c) for c in range(0xA0, 0x100))
    + "–—‘’“”•…‰′″×÷−±≤≥≈≠∞µΔΣαβγδμσ→←↑↓·✓✗✔✘"
    + "⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺"
    + "●■▲◆▼✚✖★◀▶○□△◇"
)

_LAYOUTS: dict[tuple, tuple[tuple, ...]] = {}  # shaped glyphs: (char, glyph, x, y, kern)
_SUBSETS: dict[tuple, tuple[bytes, dict[int, int]]] = {}
_MAX_LAYOUTS = 200_000  # strings kept (a few hundred bytes each); the cache restarts beyond
_lock = threading.Lock()
_local = threading.local()  # the size each FT2Font was last set to by the PDF renderer


def _hooks() -> tuple[Any, Any, Any] | None:
    """matplotlib's PDF backend, its text helpers and its subsetting module, if they have the
    form the hooks below replace; else None (then nothing is replaced)."""
    try:
        from matplotlib import _text_helpers
        from matplotlib.backends import _backend_pdf_ps, backend_pdf
    except ImportError:  # pragma: no cover - a matplotlib without these modules
        return None
    ok = (
        callable(getattr(_text_helpers, "layout", None))
        and callable(getattr(_backend_pdf_ps, "get_glyphs_subset", None))
        and hasattr(_backend_pdf_ps, "SubsetResults")
        and getattr(backend_pdf, "_text_helpers", None) is _text_helpers
        and callable(getattr(backend_pdf.RendererPdf, "_get_font_ttf", None))
        and callable(getattr(backend_pdf.RendererPdf, "draw_text", None))
        and callable(getattr(backend_pdf.PdfFile, "output", None))
        and callable(getattr(backend_pdf.PdfFile, "fontName", None))
        and hasattr(backend_pdf, "Op")
        and hasattr(backend_pdf, "FontPath")
    )
    return (backend_pdf, _text_helpers, _backend_pdf_ps) if ok else None


@contextlib.contextmanager
def cached_text() -> Iterator[None]:
    """Within this block, PDFs written by matplotlib reuse this process's shaped strings and
    font subsets (see the module docstring); the bytes written are the same."""
    hooks = _hooks()
    if hooks is None:
        yield
        return
    backend_pdf, text_helpers, pdf_ps = hooks
    with _lock:  # one PDF at a time per process: the hooks are module attributes
        renderer = backend_pdf.RendererPdf
        original_font = renderer._get_font_ttf
        original_subset = pdf_ps.get_glyphs_subset
        proxy = _Helpers(text_helpers)

        def get_font_ttf(self: Any, prop: Any) -> Any:
            font = original_font(self, prop)
            sizes = _sizes()
            sizes[id(font)] = (font, float(prop.get_size_in_points()))
            return font

        def glyphs_subset(fontfile: Any, glyphs: Any) -> Any:
            return _subset(original_subset, pdf_ps, fontfile, glyphs)

        original_text = renderer.draw_text

        def draw_text(
            self: Any,
            gc: Any,
            x: float,
            y: float,
            s: str,
            prop: Any,
            angle: float,
            ismath: Any = False,
            mtext: Any = None,
        ) -> None:
            _draw_text(
                backend_pdf, original_text, proxy, self, gc, x, y, s, prop, angle, ismath, mtext
            )

        renderer._get_font_ttf = get_font_ttf
        renderer.draw_text = draw_text
        backend_pdf._text_helpers = proxy
        pdf_ps.get_glyphs_subset = glyphs_subset
        try:
            yield
        finally:
            renderer._get_font_ttf = original_font
            renderer.draw_text = original_text
            backend_pdf._text_helpers = text_helpers
            pdf_ps.get_glyphs_subset = original_subset
            _sizes().clear()


_WRITTEN: dict[tuple, list[bytes]] = {}  # a line's PDF operators after its position (below)
_SEEN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # per PDF: glyph -> its code


def _draw_text(
    backend_pdf: Any,
    original: Any,
    helpers: _Helpers,
    renderer: Any,
    gc: Any,
    x: float,
    y: float,
    s: str,
    prop: Any,
    angle: float,
    ismath: Any,
    mtext: Any,
) -> None:
    """``RendererPdf.draw_text``, writing the bytes it wrote for the same line before.

    matplotlib writes a line as: graphics state, its position and angle (``cm``), then
    ``BT``, the fonts, glyph codes and kerning, ``ET``. All but the position depend only on the
    shaped glyphs, the codes this PDF gave them and the PDF's names for the fonts: with those
    three the same, the same bytes follow. So the first time a line is drawn matplotlib draws
    it and what it writes after the position is kept; afterwards the glyphs are registered
    with this PDF as matplotlib would (the font subsets and the text's Unicode map need them),
    the position is written, and the kept bytes follow. Lines it does not cover (math text,
    links, core fonts, Type 3) are matplotlib's as they are."""
    import matplotlib as mpl

    if (
        ismath
        or gc.get_url() is not None
        or mpl.rcParams["pdf.use14corefonts"]
        or mpl.rcParams["pdf.fonttype"] != 42
    ):
        original(renderer, gc, x, y, s, prop, angle, ismath=ismath, mtext=mtext)
        return
    features = mtext.get_fontfeatures() if mtext is not None else None
    language = mtext.get_language() if mtext is not None else None
    file = renderer.file
    font = renderer._get_font_ttf(prop)
    items = helpers.layout(s, font, features=features, language=language)
    seen = _SEEN.setdefault(file, {})
    tracker = file._character_tracker
    codes = []
    fonts: list[tuple[Any, int]] = []
    for item in items:
        ft = item.ft_object
        glyph = (ft.fname, ft.face_index, item.char, item.glyph_index)
        code = seen.get(glyph)
        if code is None:
            code = seen[glyph] = tracker.track_glyph(ft, item.char, item.glyph_index)
        codes.append(code)
        if not fonts or fonts[-1] != (ft, code[0]):
            fonts.append((ft, code[0]))
    names = tuple(
        file.fontName(backend_pdf.FontPath(ft.fname, ft.face_index), subset) for ft, subset in fonts
    )
    key = (
        s,
        font.fname,
        font.face_index,
        float(prop.get_size_in_points()),
        tuple(features) if features is not None else None,
        repr(language),
        tuple(codes),
        names,
    )
    written = _WRITTEN.get(key)
    if written is None:
        renderer.check_gc(gc, gc._rgb)  # now, so that matplotlib's own call writes nothing
        written = _recorded(
            file, lambda: original(renderer, gc, x, y, s, prop, angle, ismath=ismath, mtext=mtext)
        )
        if written is not None:
            if len(_WRITTEN) >= _MAX_LAYOUTS:
                _WRITTEN.clear()
            _WRITTEN[key] = written
        return
    renderer.check_gc(gc, gc._rgb)
    op = backend_pdf.Op
    file.output(op.gsave)
    a = math.radians(angle)
    file.output(math.cos(a), math.sin(a), -math.sin(a), math.cos(a), x, y, op.concat_matrix)
    for part in written:
        file.write(part)


def _recorded(file: Any, draw: Any) -> list[bytes] | None:
    """Draw, and return the bytes written after the line's position (``gsave`` and ``cm``
    are the first two operators), one item per write, as they were written; None when the
    line did not start that way (nothing is kept then)."""
    parts: list[bytes] = []
    original = file.write

    def write(data: bytes) -> None:
        parts.append(bytes(data))
        original(data)

    file.write = write
    try:
        draw()
    finally:
        del file.write
    # each operator is written as its bytes and a newline: gsave, newline, cm, newline, ...
    if len(parts) < 4 or parts[0] != b"q" or not parts[2].endswith(b" cm"):
        return None
    return parts[4:]


def _sizes() -> dict[int, tuple[Any, float]]:
    if not hasattr(_local, "sizes"):
        _local.sizes = {}
    return _local.sizes


class _Glyph(NamedTuple):
    """One shaped glyph, as matplotlib's ``LayoutItem`` gives it to the PDF backend."""

    ft_object: Any
    char: str
    glyph_index: int
    x: float
    y: float
    prev_kern: float


class _Helpers:
    """``matplotlib._text_helpers`` as the PDF backend sees it inside :func:`cached_text`:
    ``layout`` from the cache, everything else the module's own."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def layout(
        self, string: str, font: Any, *, features: Any = None, language: Any = None
    ) -> list[Any]:
        known = _sizes().get(id(font))
        if known is None or known[0] is not font:  # a font the renderer did not size: as is
            return list(self._module.layout(string, font, features=features, language=language))
        key = (
            string,
            font.fname,
            font.face_index,
            known[1],
            tuple(features) if features is not None else None,
            language if isinstance(language, str | type(None)) else tuple(language),
        )
        glyphs = _LAYOUTS.get(key)
        if glyphs is not None:
            return [_Glyph(font, *g) for g in glyphs]
        # The shaping alone (matplotlib's helper also loads every glyph into the font, which
        # the PDF backend never reads; fontTools does the subsetting from the ids).
        from matplotlib.ft2font import LoadFlags

        items = list(
            font._layout(string, LoadFlags.NO_HINTING, features=features, language=language)
        )
        # Kept as plain values, never as matplotlib's items: those point into their font,
        # which matplotlib's font cache frees (when full, and in a forked worker), and the
        # font of a kept line is the one asked for now. Lines set partly in a fallback font
        # are shaped every time.
        if all(it.ft_object is font for it in items):
            if len(_LAYOUTS) >= _MAX_LAYOUTS:
                _LAYOUTS.clear()
            _LAYOUTS[key] = tuple(
                (it.char, it.glyph_index, it.x, it.y, it.prev_kern) for it in items
            )
        return items


def _subset(original: Any, pdf_ps: Any, fontfile: Any, glyphs: Any) -> Any:
    """The face subset for ``glyphs`` and every glyph of ``BASE_CHARS``, made once per
    process (the font's bytes and the old-to-new glyph index map), as matplotlib's
    ``get_glyphs_subset`` returns it."""
    from fontTools.ttLib import TTFont
    from matplotlib.ft2font import FT2Font

    key_base = (str(fontfile), getattr(fontfile, "face_index", 0))
    base = _BASE_GLYPHS.get(key_base)
    if base is None:
        face = FT2Font(key_base[0], face_index=key_base[1])
        base = frozenset(g for g in (face.get_char_index(ord(c)) for c in BASE_CHARS) if g)
        _BASE_GLYPHS[key_base] = base
    wanted = frozenset(glyphs) | base
    key = (key_base, wanted)
    cached = _SUBSETS.get(key)
    if cached is None:
        cached = _subset_without_layout(key_base, wanted)
        if cached is None:  # a fontTools without the glyph index map: matplotlib's own subset
            with original(fontfile, set(wanted)) as sub:
                cached = (pdf_ps.font_as_file(sub.font).getvalue(), dict(sub.glyph_index_map))
        _SUBSETS[key] = cached
    data, index_map = cached
    # as fontTools' subsetter loads fonts: saving it again gives the same bytes (no new
    # timestamp, no recomputed bounds), so the PDF does not depend on when it was written
    font = TTFont(io.BytesIO(data), recalcBBoxes=False, recalcTimestamp=False, lazy=True)
    return pdf_ps.SubsetResults(font, dict(index_map))._as_cm()


_BASE_GLYPHS: dict[tuple, frozenset[int]] = {}

# what matplotlib's get_glyphs_subset drops, and the layout tables: the PDF places every glyph
# itself (the text's positions come from the full font), so a viewer never reads GSUB, GPOS,
# GDEF or kern, and fontTools no longer decompiles them (a quarter of the subsetting time)
_DROP = (
    "FFTM",
    "PfEd",
    "BDF",
    "meta",
    "MERG",
    "TSIV",
    "Zapf",
    "bdat",
    "bloc",
    "cidg",
    "fdsc",
    "feat",
    "fmtx",
    "fond",
    "just",
    "kerx",
    "ltag",
    "morx",
    "trak",
    "xref",
    "GSUB",
    "GPOS",
    "GDEF",
    "kern",
)


def _subset_without_layout(
    face: tuple[str, int], glyphs: frozenset[int]
) -> tuple[bytes, dict[int, int]] | None:
    """(font bytes, old-to-new glyph index map) of a subset with matplotlib's options, less
    the layout tables; None if this fontTools does not report the index map."""
    from fontTools import subset

    options = subset.Options(glyph_names=True, recommended_glyphs=True)
    options.drop_tables += list(_DROP)
    options.layout_features = []
    options.font_number = face[1]
    font = subset.load_font(face[0], options)
    subsetter = subset.Subsetter(options=options)
    subsetter.populate(gids=set(glyphs))
    subsetter.subset(font)
    index_map = getattr(subsetter, "glyph_index_map", None)
    if index_map is None:
        return None
    out = io.BytesIO()
    font.save(out, reorderTables=False)
    return out.getvalue(), dict(index_map)
