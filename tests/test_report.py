"""The culture PDF and the batch overview, checked from their text layer against the results.

The results are built here with known values (the report must print exactly these, with one
decimal like summary.csv); the event clouds behind the histograms are drawn from a seeded numpy
Generator (``cytomsc.simulate.reports``, which benchmarks/bench_report.py uses too).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cytomsc.errors import CytomscError
from cytomsc.report import write_culture_pdf, write_overview
from cytomsc.results import BatchResult, CultureResult, FileInfo, GateStep, MarkerResult, _fmt
from cytomsc.simulate.reports import ISCT, JOINT, RUN_INFO, build_batch, gate_steps, marker_result

pypdf = pytest.importorskip("pypdf")


# -- tests ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[BatchResult, dict[str, list[str]]]:
    """Every culture's PDF and the overview, written once; text of each page by file stem."""
    out = tmp_path_factory.mktemp("reports")
    batch = build_batch(n=3000)
    texts = {}
    for c in batch.cultures:
        write_culture_pdf(c, batch, out / f"{c.culture}.pdf", RUN_INFO)
    write_overview(batch, out / "overview.pdf", RUN_INFO)
    for pdf in out.glob("*.pdf"):
        assert pdf.stat().st_size < 1.5e6
        texts[pdf.stem] = [p.extract_text() for p in pypdf.PdfReader(pdf).pages]
    return batch, texts


def small_culture(batch: BatchResult) -> CultureResult:
    """The cocktail culture with the stained tube's gates only: a short PDF, quick to write."""
    c = _named(batch, "BM-050")
    return dataclasses.replace(c, gates=[g for g in c.gates if g.tube == "stained.fcs"])


def _named(batch: BatchResult, name: str) -> CultureResult:
    return next(c for c in batch.cultures if c.culture == name)


@pytest.mark.slow
def test_footer_on_every_page(written):
    batch, texts = written
    for name, pages in texts.items():
        footer = "Batch overview" if name == "overview" else f"Culture {name}"
        for n, text in enumerate(pages, start=1):
            assert f"page {n} of {len(pages)}" in text, (name, n)
            assert footer in text


@pytest.mark.slow
def test_sections_and_page_count(written):
    batch, texts = written
    for c in batch.cultures:
        pages = texts[c.culture]
        titles = [t.splitlines()[1] for t in pages]  # line 0 is the running header
        assert titles[0] == "QC summary"
        assert titles[-1] in ("Audit trail", "Audit trail (continued)")
        expected = [
            "QC summary",
            "Gating: stained.fcs",
            "Gating: isotype.fcs",
            "Gating: unstained.fcs",
            "Marker histograms",
            "Audit trail",
        ]
        if c.heterogeneity is not None:
            expected.insert(5, "Heterogeneity")
        firsts = [
            t
            for t in titles
            if not t.endswith("(continued)") and not t.startswith("Warnings (continued")
        ]
        assert firsts == expected
        # one page per tube's gates, 6 histograms a page; after page 1 at most a page of the
        # warnings that did not fit (BM-099's 14 long ones) and the files table
        n_markers = sum(m.channel is not None for m in c.markers)
        assert titles.count("Marker histograms") + titles.count(
            "Marker histograms (continued)"
        ) == -(-n_markers // 6)
        summary = titles[1 : titles.index("Gating: stained.fcs")]
        assert set(summary) <= {"Warnings (continued from page 1)", "QC summary (continued)"}
        assert ("Warnings (continued from page 1)" in summary) == (c.culture == "BM-099")


@pytest.mark.slow
def test_verdict_and_every_percentage_as_printed(written):
    batch, texts = written
    for c in batch.cultures:
        pages = texts[c.culture]
        summary = "\n".join(p for p in pages if p.splitlines()[1].startswith("QC summary"))
        verdict = summary.split("Verdict\n", 1)[1].splitlines()[0]
        assert (
            verdict == {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE"}[c.verdict]
        )
        assert ("borderline" in summary.split("Every", 1)[0]) == c.borderline
        markers_page = "\n".join(p for p in pages if "Marker histograms" in p.splitlines()[1])
        for m in c.markers:
            if m.percent_positive is None:
                assert m.marker in markers_page.split("Not measured", 1)[1]
                continue
            pct, lo, hi = _fmt(m.percent_positive), _fmt(m.ci95[0]), _fmt(m.ci95[1])
            # the criteria table row: channel, limit, % positive, interval, threshold in order
            row = re.search(
                rf"{re.escape(m.channel)} [≥≤] {_fmt(m.limit)} "
                rf"(\S+) (\S+)–(\S+) (\S+) ",
                " ".join(summary.split()),
            )
            assert row is not None, (c.culture, m.marker)
            assert row.groups() == (pct, lo, hi, f"{m.threshold:,.0f}")
            # the histogram's title
            assert f"{pct} % positive (95 % interval {lo}–{hi})" in markers_page
            word = "✓ pass" if m.passed else "✗ FAIL"
            assert word in row.string[row.end() : row.end() + 40]
        if c.joint_phenotype_percent is not None:
            assert f"Joint phenotype: {_fmt(c.joint_phenotype_percent)} % of cells" in summary


@pytest.mark.slow
def test_fail_inconclusive_borderline_cocktail_are_said(written):
    batch, texts = written
    fail = "\n".join(texts["BM-042"])
    assert "Outside the panel's limit: CD105, HLA-DR." in fail
    assert "88.3 % positive (95 % interval 88.0–88.6)\n✗ FAIL · limit ≥ 95.0 %" in fail
    assert "isotype, widened ×1.37" in " ".join(fail.split())
    incon = "\n".join(texts["AD-007"])
    assert "No verdict possible (markers in no channel: CD14 or CD11b, CD79a or CD19)" in incon
    assert incon.count("– not measured") == 2
    border = " ".join(texts["UC-113"][0].split())
    assert "Borderline: the 95 % interval of CD73 crosses its limit" in border
    assert "≥ 95.0 95.4 94.5–96.3 1,234 isotype 3,000 ✓ pass (borderline)" in border
    cocktail = "\n".join(texts["BM-050"])
    assert "Cocktail channel PE-A carries CD34, CD11b, CD19, CD45, HLA-DR" in cocktail
    assert "1.3 % positive (95 % interval 1.0–1.6)\n✓ pass · limit ≤ 2.0 %" in cocktail
    assert "threshold 1,234 from FMO" in cocktail
    auto = "\n".join(texts["BM-099"])
    assert "auto (no control)" in auto
    assert "Warning 13: only 8,512 gated events" in auto  # the last warning, on page 2


@pytest.mark.slow
def test_heterogeneity_in_words(written):
    batch, texts = written
    two = "\n".join(texts["BM-077"])
    assert (
        "2 populations: 68.0 % CD90 bright CD105 bright, large (P1); "
        "32.0 % CD90 dim CD105 bright, small (P2)."
    ) in " ".join(two.split())
    assert "66.8–69.2" in two and "30.8–33.2" in two  # fractions with their intervals
    assert "yes: two peaks" in two
    one = "\n".join(texts["BM-041"])
    assert "One population: no subpopulations found." in one
    assert "yes: two peaks" not in one


@pytest.mark.slow
def test_audit_page_has_every_hash_and_parameter(written):
    batch, texts = written
    c = _named(batch, "BM-042")
    audit = texts["BM-042"][-1]
    assert "Audit trail" in audit
    for f in c.files:
        assert f.sha256 in audit  # on one line: not wrapped
    assert batch.panel.sha256 in audit
    for key in (*batch.parameters, *RUN_INFO["parameters"]):
        assert "--" + key.replace("_", "-") in audit  # each by its command-line option
    assert RUN_INFO["command"] in " ".join(audit.split()) and RUN_INFO["started"] in audit
    assert "Random seed 0" in audit and "cytomsc version 0.1.0" in audit


@pytest.mark.slow
def test_overview_table_and_errors(written):
    batch, texts = written
    ov = "\n".join(texts["overview"])
    assert "7 cultures: 5 pass, 1 fail, 1 inconclusive (1 borderline)." in ov
    for e in batch.errors:
        assert e.path in ov and e.message in ov
    table = ov.split("Files that could not be read")[0]
    names = [c.culture for c in batch.cultures]
    for k, c in enumerate(batch.cultures):
        # the culture's row: from its name to the next culture's (cells may wrap)
        start = table.index(f"\n{c.culture} ")
        end = table.index(f"\n{names[k + 1]} ") if k + 1 < len(names) else len(table)
        line = table[start:end]
        cells = [m for m in c.markers]
        printed = re.findall(r"(\d+\.\d) ([✓✗]\??)", line)
        expected = [
            (_fmt(m.percent_positive), ("✓" if m.passed else "✗") + ("?" if m.borderline else ""))
            for m in cells
            if m.percent_positive is not None
        ]
        assert printed == expected, c.culture
        assert c.verdict.upper() in line
    assert "2: 68.0 / 32.0" in ov


@pytest.mark.slow
def test_same_input_same_bytes(tmp_path):
    """Same result, same bytes: in this process and in a fresh one (another hash seed), as a
    batch run with --jobs writes them."""
    batch = build_batch(n=2000)
    c = small_culture(batch)
    write_culture_pdf(c, batch, tmp_path / "a.pdf", RUN_INFO)
    write_culture_pdf(c, batch, tmp_path / "b.pdf", RUN_INFO)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; "
        "from test_report import build_batch, small_culture, RUN_INFO; "
        "from cytomsc.report import write_culture_pdf; b = build_batch(n=2000); "
        "write_culture_pdf(small_culture(b), b, Path(sys.argv[2]), RUN_INFO)"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), str(tmp_path / "c.pdf")],
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "7"},
    )
    a = (tmp_path / "a.pdf").read_bytes()
    assert a == (tmp_path / "b.pdf").read_bytes() == (tmp_path / "c.pdf").read_bytes()
    assert b"CreationDate" not in a and b"/Producer (cytomsc 0.1.0)" in a


@pytest.mark.slow
def test_pages_draw_and_text_is_large_enough(tmp_path):
    import matplotlib.image
    from matplotlib.text import Text

    from cytomsc.report.pdf import culture_pages
    from cytomsc.report.plots import TextLayer

    batch = build_batch(n=2000)
    pages = culture_pages(_named(batch, "BM-077"), batch, RUN_INFO)
    sizes = []
    for fig in pages:
        for t in fig.findobj(Text):
            if t.get_text().strip():
                assert t.get_fontsize() >= 7, t.get_text()
        for layer in fig.findobj(TextLayer):  # the page's words, drawn as one artist
            sizes += [(item.size, item.s) for item in layer.items]
    assert len(sizes) > 300 and min(sizes)[0] >= 7, min(sizes)
    pages[1].savefig(tmp_path / "gating.png", dpi=40)
    img = matplotlib.image.imread(tmp_path / "gating.png")
    ink = (img[..., :3].mean(axis=2) < 0.9).mean()
    assert 0.02 < ink < 0.6  # the density plots and gate outlines are there, not a blank page
    dark = (img[..., :3].mean(axis=2) < 0.3).mean()
    assert dark > 0.001


def test_unwritable_path_is_one_line_error(tmp_path):
    batch = build_batch(n=500)
    target = tmp_path / "no such folder" / "x.pdf"
    with pytest.raises(CytomscError) as err:
        write_overview(batch, target, RUN_INFO)
    assert str(target) in err.value.message and "\n" not in err.value.message


def test_importing_report_does_not_load_matplotlib():
    code = "import sys, cytomsc.report; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_sparse_culture_and_literal_dollars(tmp_path):
    """A culture the analysis could say little about still gives a readable PDF; FCS keyword
    names with '$' are printed as written (not typeset as maths)."""
    batch = build_batch(n=500)
    bare = CultureResult(
        culture="odd $name_1",
        verdict="inconclusive",
        borderline=False,
        files=[FileInfo(path="/data/x.fcs", role="stained", sha256="0" * 64)],
        events={"total": 812},
        markers=[MarkerResult(marker="CD73", channel=None, expect="positive", limit=95.0)],
        warnings=["$PnS and $PnR are empty in x.fcs: channels could not be matched"],
        missing_markers=["CD73", "CD90"],
        gates=[
            GateStep(tube="x.fcs", gate="cells", parent_count=812, count=0, x="FSC-A", y="SSC-A")
        ],
    )
    path = tmp_path / "bare.pdf"
    write_culture_pdf(bare, batch, path, {})
    text = "\n".join(p.extract_text() for p in pypdf.PdfReader(path).pages)
    assert "$PnS and $PnR are empty in x.fcs" in text
    assert "Culture odd $name_1" in text and "INCONCLUSIVE" in text
    assert "cells: 0.0 % inside" in text and "no plot data returned" in text
    assert "Not measured (no channel carries them): CD73, CD90." in text


@pytest.mark.slow
def test_overview_joint_populations_table(tmp_path, written):
    """The batch-wide clustering: each culture's row prints its fractions as percent with one
    decimal, in population-id order, under the population labels; absent when not clustered."""
    batch, texts = written
    assert "Populations across the batch" not in "\n".join(texts["overview"])
    batch = dataclasses.replace(build_batch(n=300), batch_populations=JOINT)
    path = tmp_path / "overview.pdf"
    write_overview(batch, path, RUN_INFO)
    text = "\n".join(p.extract_text() for p in pypdf.PdfReader(path).pages)
    joint = text.split("Populations across the batch", 1)[1]
    for p in JOINT.populations:
        assert f"P{p.id} {p.label}" in joint
    assert "P1 % P2 % P3 %" in joint
    assert "up to 5,000 cells from each" in " ".join(joint.split())
    rows = re.findall(r"\n(\S+) ([\d,]+) (\d+\.\d) (\d+\.\d) (\d+\.\d)(?=\n)", joint)
    # the batch's culture order (BM-041 before UC-113 before BM-077), numbers as set above
    assert rows == [
        ("BM-041", "18,250", "95.5", "4.5", "0.0"),
        ("UC-113", "9,731", "20.1", "0.0", "79.9"),
        ("BM-077", "20,000", "68.0", "30.0", "2.0"),
    ]
    # a table keyed by population id is read the same way
    keyed = dataclasses.replace(
        JOINT,
        table={
            name: {str(k + 1): f for k, f in enumerate(row)} for name, row in JOINT.table.items()
        },
    )
    write_overview(dataclasses.replace(batch, batch_populations=keyed), path, RUN_INFO)
    again = "\n".join(p.extract_text() for p in pypdf.PdfReader(path).pages)
    assert again.split("Populations across the batch", 1)[1] == joint


@pytest.mark.slow
def test_one_embedded_font_and_symbols_as_text(tmp_path):
    """Every word in DejaVu Sans, embedded as a TrueType subset (no Helvetica, nothing only
    referenced), and still extractable text, symbols included."""
    batch = build_batch(n=500)
    path = tmp_path / "c.pdf"
    write_culture_pdf(small_culture(batch), batch, path, RUN_INFO)
    reader = pypdf.PdfReader(path)
    fonts = {}
    for page in reader.pages:
        for font in page["/Resources"]["/Font"].values():
            font = font.get_object()
            fonts[str(font["/BaseFont"])] = font
    assert fonts
    for name, font in fonts.items():
        assert "Helvetica" not in name and "DejaVuSans" in name, name
        assert "Mono" not in name
        assert font["/Subtype"] == "/Type0", name  # a CID TrueType font ...
        desc = font["/DescendantFonts"][0].get_object()
        assert desc["/Subtype"] == "/CIDFontType2"
        assert "/FontFile2" in desc["/FontDescriptor"].get_object()  # ... embedded
        assert "/ToUnicode" in font  # searchable
    summary, gating = reader.pages[0].extract_text(), reader.pages[1].extract_text()
    assert "✓ pass" in summary and "≥ 95.0" in summary and "≤ 2.0" in summary
    assert "10⁵" in gating and "10²" in gating
    # matplotlib's own copy of the font, whatever other DejaVu the system has installed
    import matplotlib

    from cytomsc.report.plots import _font

    for bold in (False, True):
        assert Path(_font(8, bold).get_file()).parent == Path(
            matplotlib.get_data_path(), "fonts", "ttf"
        )
    if shutil.which("pdffonts"):
        out = subprocess.run(
            ["pdffonts", str(path)], capture_output=True, text=True, check=True
        ).stdout.splitlines()[2:]
        assert out and all(line.split()[-5] == "yes" for line in out), out  # emb column
        assert not any("Helvetica" in line for line in out)


# -- issue 11: a record a reviewer can sign -----------------------------------------------------
LONG = "/data/release_2026/site-A/a_long_folder_name"
SPILL = (["FITC-A", "PE-A"], [[1.0, 0.2137], [0.0104, 1.0]])
RUN_INFO_V = {
    **RUN_INFO,
    "versions": {
        "python": "3.11.7",
        "numpy": "2.4.6",
        "scipy": "1.17.1",
        "scikit-learn": "1.9.1",
        "flowkit": "1.3.2",
    },
}


def split_culture(n: int = 3000, seed: int = 5, verdict: str = "pass") -> CultureResult:
    """A panel split over two stained tubes without a viability dye (live gate skipped) and
    without controls (every threshold automatic), with release metadata, an FCS-style $DATE, a
    compensation matrix, the culture's outputs, and a time gate recorded as the pipeline records
    it (x = Time, y = FSC-A, the kept stretches as vertices)."""
    from cytomsc.results import Compensation, TubeFunnel

    rng = np.random.default_rng(seed)
    tubes = ["stained_1.fcs", "stained_2.fcs"]
    markers = []
    for k, (name, ch, expect, limit) in enumerate(ISCT):
        m = marker_result(
            rng, name, ch, expect, limit, 99.0 if expect == "positive" else 0.5, n, source="auto"
        )
        m.tube = tubes[k >= 4]
        m.histogram.control = None
        m.histogram.control_role = None
        markers.append(m)
    files = [
        FileInfo(
            path=f"{LONG}/{t}",
            role="stained",
            sha256=f"{i:x}" * 64,
            events=n,
            cytometer="FACSCanto II",
            date="20-NOV-2026",
        )
        for i, t in enumerate(tubes, start=10)
    ]
    gates, funnels = [], []
    for t in tubes:
        steps = [g for g in gate_steps(rng, t, n) if g.gate != "live"]
        time = steps[0]
        steps[0] = dataclasses.replace(
            time, y="FSC-A", vertices=[(0.0, 0.2), (0.3, 0.47), (0.52, 1.0)]
        )
        gates += steps
        funnels.append(
            TubeFunnel(
                t,
                "stained",
                {
                    "total": n,
                    "time_ok": steps[0].count,
                    "margin_ok": steps[0].count,
                    "cells": steps[1].count,
                    "singlets": steps[2].count,
                    "live": None,
                },
                {"live": "no viability dye"},
            )
        )
    return CultureResult(
        culture="BM-123",
        verdict=verdict,
        borderline=False,
        files=files,
        events={k: v or 0 for k, v in funnels[0].counts.items()},
        markers=markers,
        warnings=["a warning"],
        gates=gates,
        output_name="BM-123",
        funnels=funnels,
        metadata={
            "lot": "LOT-2026-117",
            "donor": "D-0042",
            "operator": "J. Doe",
            "comment": "second acquisition after re-staining",
            "tissue": "bone marrow",
            "passage": "4",
            "detachment": "TrypLE",
            "date": "20-NOV-2026",
        },
        compensation=[Compensation(t, "the file's $SPILLOVER", SPILL[0], SPILL[1]) for t in tubes],
        outputs={"BM-123/gates.xml": "ab" * 32, "BM-123/events/stained_1.fcs": "cd" * 32},
    )


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """The split culture's PDF and, for layout checks, its page 1's text with positions."""
    out = tmp_path_factory.mktemp("record")
    batch = dataclasses.replace(
        build_batch(n=500),
        parameters={**build_batch(n=10).parameters, "manifest": None, "channel_map": {}},
    )
    c = split_culture()
    write_culture_pdf(c, batch, out / "split.pdf", RUN_INFO_V)
    reader = pypdf.PdfReader(out / "split.pdf")
    return {"pages": [p.extract_text() for p in reader.pages], "path": [str(out / "split.pdf")]}


def _positions(path: Path, page: int = 0) -> list[tuple[str, float]]:
    """(text, y from the page's foot in points) of every text run on a page."""
    runs: list[tuple[str, float]] = []
    pypdf.PdfReader(path).pages[page].extract_text(
        visitor_text=lambda text, cm, tm, font, size: (
            runs.append((text, tm[5] * cm[3] + cm[5])) if text.strip() else None
        )
    )
    return runs


SIGN_OFF = (
    "Verdict",
    "Criteria",
    "Event funnel",
    "Acquired events (total)",
    "Reviewed by:",
    "Signature:",
    "Decision: ☐ release ☐ reject ☐ repeat measurement",
    "Date (YYYY-MM-DD):",
    "Review and release decision",
)


@pytest.mark.slow
def test_page_one_holds_verdict_criteria_funnel_and_sign_off(written, tmp_path):
    """The sign-off block (reviewed by, date, signature, decision) is on page 1 with the
    verdict, every criterion and the funnel, below them; warnings that do not fit continue on a
    page that says so (BM-099 has 14 long ones)."""
    batch, texts = written
    for name, doc in sorted(texts.items(), key=lambda kv: kv[0] != "BM-099"):  # the long one
        if name == "overview":
            continue
        one = " ".join(doc[0].split())
        for words in SIGN_OFF:
            assert words in one, (name, words)
        c = _named(batch, name)
        for m in c.markers:
            if m.percent_positive is not None:
                assert f"{_fmt(m.percent_positive)} {_fmt(m.ci95[0])}–{_fmt(m.ci95[1])}" in one
        assert one.index("Review and release decision") > one.index("Warnings")
    assert "11 more warnings continue on the next page" in " ".join(texts["BM-099"][0].split())
    assert texts["BM-099"][1].splitlines()[1] == "Warnings (continued from page 1)"
    assert "Warning 13: only 8,512" in texts["BM-099"][1]
    # layout: the sign-off block sits below the warnings and above the footer of page 1
    path = tmp_path / "BM-099.pdf"
    write_culture_pdf(_named(batch, "BM-099"), batch, path, RUN_INFO)
    runs = _positions(path)
    y = {t.strip(): v for t, v in runs}
    top = next(v for t, v in runs if t.startswith("Review and release decision"))
    decision = next(v for t, v in runs if t.startswith("Decision:"))
    last_warning = min(v for t, v in runs if "Warning 2" in t or "more warnings" in t)
    footer = next(v for t, v in runs if "page 1 of" in t)
    assert last_warning > top > decision > footer, (last_warning, top, decision, footer, y)


@pytest.mark.slow
def test_page_one_rendered_shows_the_sign_off_box(record, tmp_path):
    """Rendered (pdftoppm, as a reviewer prints it): the ruled sign-off box's lower edge is on
    page 1 above the footer."""
    if not shutil.which("pdftoppm"):
        pytest.skip("pdftoppm (poppler-utils) absent: page 1 is checked from its text only")
    import matplotlib.image

    subprocess.run(
        [
            "pdftoppm",
            "-png",
            "-r",
            "72",
            "-f",
            "1",
            "-l",
            "1",
            record["path"][0],
            str(tmp_path / "p"),
        ],
        check=True,
    )
    img = matplotlib.image.imread(next(tmp_path.glob("p*.png")))[..., :3].mean(axis=2)
    rows = np.flatnonzero((img < 0.5).mean(axis=1) > 0.8)  # rules across the text width
    h = img.shape[0]
    # the box's bottom rule: within the last tenth of the page, above the footer line
    assert any(0.85 * h < r < h - 40 for r in rows), rows


@pytest.mark.slow
def test_borderline_said_only_when_the_verdict_could_change(tmp_path):
    """A FAIL whose failing marker is far from its limit is not called borderline, even when
    another marker's interval contains its limit."""
    from cytomsc.criteria import culture_verdict, judge_marker

    batch = build_batch(n=500)
    c = dataclasses.replace(_named(batch, "BM-042"))
    rng = np.random.default_rng(1)
    c.markers = [
        judge_marker(
            marker_result(rng, "CD73", "APC-A", "positive", 95.0, 95.2, 500, half_width=0.5)
        ),
        judge_marker(marker_result(rng, "CD45", "PE-A", "negative", 2.0, 3.7, 500, half_width=0.5)),
    ]
    c.verdict, c.borderline, _ = culture_verdict(c.markers, [], [20_000])
    assert (c.verdict, c.borderline) == ("fail", False)
    path = tmp_path / "f.pdf"
    write_culture_pdf(c, batch, path, RUN_INFO)
    one = " ".join(pypdf.PdfReader(path).pages[0].extract_text().split())
    assert "borderline" not in one.split("Every", 1)[0].split("Lot")[0]
    assert "Borderline:" not in one and "could change the verdict" not in one
    assert (
        "The 95 % interval of CD73 contains its limit, but the verdict does not depend on "
        "it: CD45 fails regardless." in one
    )
    assert "✓ pass (borderline)" in one  # the marker keeps its own flag


@pytest.mark.slow
def test_all_automatic_pass_is_said_on_page_one(written, record):
    one = " ".join(record["pages"][0].split())
    assert "PASS no control" in one
    assert "All thresholds automatic (no control)" in one
    assert "All thresholds automatic" not in " ".join(written[1]["BM-099"][0].split())


@pytest.mark.slow
def test_split_panel_names_the_tube_of_every_number(record):
    one = " ".join(record["pages"][0].split())
    for words in SIGN_OFF:
        assert words in one, words
    assert "Stained tubes: T1 = stained_1.fcs; T2 = stained_2.fcs." in one
    assert re.search(r"CD73 T1 APC-A ≥ 95\.0 99\.0", one)
    assert re.search(r"HLA-DR T2 APC-H7-A ≤ 2\.0 0\.5", one)
    assert "Event funnel per stained tube" in one and "T1: events" in one and "T2: events" in one
    # a skipped gate says so, never "Live cells 100 %"
    live = one.split("Live cells", 1)[1].split("Warnings", 1)[0]
    assert live.strip() == "skipped (no viability dye) skipped (no viability dye)"
    markers = " ".join(p for p in record["pages"] if "Marker histograms" in p.splitlines()[1])
    for m in split_culture().markers:
        assert f"{m.marker} ({m.channel})\ntube {m.tube}\n" in markers


@pytest.mark.slow
def test_time_gate_drawn_with_removed_stretches():
    from cytomsc.report.pdf import culture_pages

    batch = build_batch(n=300)
    c = split_culture(n=1500)
    pages = culture_pages(c, batch, RUN_INFO)
    gating = next(
        f
        for f in pages
        if any(
            i.s.startswith("Gating: stained_1.fcs")
            for layer in f.findobj(lambda a: hasattr(a, "items"))
            for i in layer.items
        )
    )
    hatched = [p for ax in gating.axes for p in ax.patches if p.get_hatch() == "////"]
    assert len(hatched) == 2  # the two removed stretches between the three kept ones
    text = [i.s for layer in gating.findobj(lambda a: hasattr(a, "items")) for i in layer.items]
    step = next(g for g in c.gates if g.tube == "stained_1.fcs" and g.gate == "time")
    assert (
        f"{step.count:,} of {step.parent_count:,} events, {step.source} gate; hatched: "
        f"removed ({_fmt(100 - step.percent)} %)" in text
    )


@pytest.mark.slow
def test_release_metadata_and_iso_dates(record):
    doc = "\n".join(record["pages"])
    one = " ".join(record["pages"][0].split())
    for words in (
        "Lot LOT-2026-117",
        "Donor D-0042",
        "Operator J. Doe",
        "Passage 4",
        "Comment: second acquisition after re-staining",
        "Acquisition date 2026-11-20",
    ):
        assert words in one, words
    assert "20-NOV-2026" not in doc
    assert "2026-11-20" in doc.split("Files", 1)[1]


@pytest.mark.slow
def test_audit_page_versions_output_hashes_compensation_no_python_isms(record):
    audit = "\n".join(p for p in record["pages"] if p.splitlines()[1].startswith("Audit trail"))
    flat = " ".join(audit.split())
    for words in (
        "Python 3.11.7",
        "numpy 2.4.6",
        "scipy 1.17.1",
        "scikit-learn 1.9.1",
        "flowkit 1.3.2",
    ):
        assert words in flat
    assert "ab" * 32 in audit and "cd" * 32 in audit and "BM-123/gates.xml" in audit
    assert "sha256sums.txt" in flat
    assert "stained_1.fcs, stained_2.fcs: the file's $SPILLOVER." in flat
    assert "FITC-A 1 0.2137" in flat and "PE-A 0.0104 1" in flat
    for word in ("None", "True", "False", "{}", "[]"):
        assert not re.search(rf"(?<!\w){re.escape(word)}(?!\w)", audit), word
    assert "--manifest none" in flat and "--channel-map none" in flat
    # paths break after a separator, never inside a folder name
    assert "a_long_folder_name/" in audit


def test_wrap_breaks_paths_at_separators():
    from cytomsc.report.plots import wrap

    path = "/data/release_2026/site-A/a_long_folder_name/stained_1.fcs"
    lines = wrap(path, 100, 7)
    assert len(lines) > 1 and "".join(lines) == path
    assert all(line.endswith("/") for line in lines[:-1]), lines
    assert wrap("a " + "b" * 64, 400, 7) == ["a " + "b" * 64]  # a hash stays whole when it fits


def test_tick_labels_never_collide():
    """Logicle ticks crowded around zero ("-10³", "0", "10³" 9 points apart): the labels
    printed never overlap, measured with the font itself."""
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties

    from cytomsc.preprocess import LogicleParams, axis_ticks
    from cytomsc.report.plots import TICK_SIZE, Flow, superscript

    ticks = axis_ticks(LogicleParams(262144.0, 1.5))
    flow = Flow("ticks")
    panel = flow.panel(80, 100, 200, 120)
    panel.limits((0.0, 1.0), (0.0, 1.0))
    panel.frame(ticks, [(v, "10^3") for v in np.linspace(0, 1, 30)])
    renderer = RendererAgg(10, 10, 72)
    prop = FontProperties(family="DejaVu Sans", size=TICK_SIZE)
    below = [i for i in flow.layer.items if abs(i.y - (100 + 120 + 4.5)) < 1e-6]
    spans = sorted(
        (i.x - w / 2, i.x + w / 2, i.s)
        for i in below
        for w in [renderer.get_text_width_height_descent(i.s, prop, False)[0]]
    )
    assert len(spans) >= 4
    assert "0" in [s for _, _, s in spans] and superscript("10^5") in [s for _, _, s in spans]
    for (_, hi, a), (lo, _, b) in zip(spans, spans[1:], strict=False):
        assert lo > hi, (a, b)
    left = sorted(i.y for i in flow.layer.items if i.ha == "right" and i.va == "center")
    assert all(b - a >= TICK_SIZE for a, b in zip(left, left[1:], strict=False))


def test_histograms_have_an_in_plot_legend():
    from cytomsc.report.pdf import culture_pages

    batch = build_batch(n=300)
    c = _named(batch, "BM-042")
    pages = culture_pages(c, batch, RUN_INFO)
    legends = [ax.get_legend() for f in pages for ax in f.axes if ax.get_legend() is not None]
    assert len(legends) == sum(m.histogram is not None for m in c.markers)
    for lg in legends:
        assert [t.get_text() for t in lg.get_texts()] == [
            "stained tube",
            "control: isotype",
            "threshold",
        ]


@pytest.mark.slow
def test_stained_tube_gating_page_first(tmp_path):
    batch = build_batch(n=300)
    c = small_culture(batch)
    c = dataclasses.replace(
        c,
        gates=[
            g
            for t in ("isotype.fcs", "unstained.fcs", "stained.fcs")
            for g in gate_steps(np.random.default_rng(2), t, 300)
        ],
    )
    path = tmp_path / "g.pdf"
    write_culture_pdf(c, batch, path, RUN_INFO)
    titles = [p.extract_text().splitlines()[1] for p in pypdf.PdfReader(path).pages]
    gating = [t for t in titles if t.startswith("Gating")]
    assert gating == ["Gating: stained.fcs", "Gating: isotype.fcs", "Gating: unstained.fcs"]


def test_cached_text_and_fonts_change_no_word(tmp_path, monkeypatch):
    """The per-process caches of shaped strings and font subsets (report/pdftext.py) write the
    same words at the same places as matplotlib alone: every page's text, with its position,
    is the same with the caches as without, and a second PDF from the caches is byte-identical
    to the first."""
    from cytomsc.report import pdftext

    batch = build_batch(n=2000)
    c = _named(batch, "BM-077")

    def runs(path):
        out = []
        for page in pypdf.PdfReader(path).pages:
            page.extract_text(
                visitor_text=lambda text, cm, tm, font, size: out.append(
                    (text, round(tm[4] * cm[0] + cm[4], 2), round(tm[5] * cm[3] + cm[5], 2))
                )
            )
        return out

    write_culture_pdf(c, batch, tmp_path / "cached.pdf", RUN_INFO)
    write_culture_pdf(c, batch, tmp_path / "again.pdf", RUN_INFO)
    monkeypatch.setattr(pdftext, "_hooks", lambda: None)
    write_culture_pdf(c, batch, tmp_path / "plain.pdf", RUN_INFO)
    cached = runs(tmp_path / "cached.pdf")
    assert len(cached) > 300 and cached == runs(tmp_path / "plain.pdf")
    assert (tmp_path / "cached.pdf").read_bytes() == (tmp_path / "again.pdf").read_bytes()
    assert (tmp_path / "cached.pdf").read_bytes() != (tmp_path / "plain.pdf").read_bytes()


def test_lines_drawn_again_write_matplotlibs_bytes(tmp_path, monkeypatch):
    """A line drawn before is written from the bytes matplotlib wrote for it
    (pdftext._draw_text): the PDF is byte-identical to one whose every line matplotlib draws."""
    from cytomsc.report import pdftext

    batch = build_batch(n=2000)
    c = _named(batch, "BM-077")
    write_culture_pdf(c, batch, tmp_path / "first.pdf", RUN_INFO)
    replayed = []
    original = pdftext._draw_text

    def counting(*args):
        before = len(pdftext._WRITTEN)
        original(*args)
        replayed.append(len(pdftext._WRITTEN) == before)

    monkeypatch.setattr(pdftext, "_draw_text", counting)
    write_culture_pdf(c, batch, tmp_path / "replayed.pdf", RUN_INFO)
    assert sum(replayed) > 300  # lines written from kept bytes

    def plain(backend_pdf, draw, helpers, renderer, gc, x, y, s, prop, angle, ismath, mtext):
        draw(renderer, gc, x, y, s, prop, angle, ismath=ismath, mtext=mtext)

    monkeypatch.setattr(pdftext, "_draw_text", plain)
    write_culture_pdf(c, batch, tmp_path / "matplotlib.pdf", RUN_INFO)
    assert (tmp_path / "replayed.pdf").read_bytes() == (tmp_path / "matplotlib.pdf").read_bytes()


def test_kept_lines_survive_matplotlibs_font_cache(tmp_path):
    """The kept shaped lines hold no font object: matplotlib frees its fonts when its cache is
    cleared (as in every forked --jobs worker), and a PDF written after that is the same."""
    from matplotlib import font_manager

    batch = build_batch(n=500)
    c = small_culture(batch)
    write_culture_pdf(c, batch, tmp_path / "before.pdf", RUN_INFO)
    font_manager._get_font.cache_clear()
    import gc

    gc.collect()
    write_culture_pdf(c, batch, tmp_path / "after.pdf", RUN_INFO)
    assert (tmp_path / "before.pdf").read_bytes() == (tmp_path / "after.pdf").read_bytes()


def test_pdfs_from_forked_workers_after_pdfs_in_the_parent(tmp_path):
    """A batch with --jobs 2 whose parent process wrote PDFs before (its kept lines inherited by
    the workers) writes every culture's PDF; no worker dies."""
    from cytomsc.pipeline import Options, run_batch
    from cytomsc.simulate import CultureDesign, simulate_culture

    batch = build_batch(n=500)
    write_culture_pdf(small_culture(batch), batch, tmp_path / "parent.pdf", RUN_INFO)
    for i in range(2):
        d = CultureDesign(
            f"F{i}",
            style="diva",
            layout="isct-8c",
            n_events=3000,
            controls=("isotype",),
            seed_offset=i,
        )
        for tube in simulate_culture(d, seed=0):
            tube.write(tmp_path / "in" / d.name)
    out = run_batch([tmp_path / "in"], tmp_path / "out", Options(jobs=2, pdf=True))
    assert not out.errors and len(out.cultures) == 2
    assert sorted(p.name for p in (tmp_path / "out").glob("F*.pdf")) == ["F0.pdf", "F1.pdf"]
