"""The README's main job, `cytomsc analyze example_fcs -o reports`, checked end to end.

The shipped example cultures carry their truth (example_fcs/truth.json): every verdict must match
it, and every PDF must print exactly the verdict and percentages that summary.json holds (read
back from the PDFs' text layer), with all its sections and a page footer on every page.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from pypdf import PdfReader

from cytomsc.cli import main

pytestmark = pytest.mark.slow  # the example set through the command, with PDFs

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_fcs"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("reports")
    result = CliRunner().invoke(main, ["analyze", str(EXAMPLE), "-o", str(out), "--jobs", "1"])
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "summary.json").read_text())


def _text(pdf: Path) -> list[str]:
    return [p.extract_text() for p in PdfReader(pdf).pages]


def test_verdicts_match_the_truth(run: tuple[Path, dict]) -> None:
    _, summary = run
    truth = json.loads((EXAMPLE / "truth.json").read_text())
    expected = {c["culture"]: c["expected_verdict"] for c in truth["cultures"]}
    got = {c["culture"]: c["verdict"] for c in summary["cultures"]}
    assert got == expected
    populations = {c["culture"]: c["n_populations"] for c in truth["cultures"]}
    for c in summary["cultures"]:
        if c["heterogeneity"] is not None:
            assert c["heterogeneity"]["n_populations"] == populations[c["culture"]]
            # the simulator's cell sizes are log-normal: the chosen scatter scale must say so
            assert c["heterogeneity"]["scatter_scale"] == "log", c["culture"]


def test_every_pdf_prints_what_summary_json_holds(run: tuple[Path, dict]) -> None:
    out, summary = run
    assert (out / "overview.pdf").is_file()
    for c in summary["cultures"]:
        pages = _text(out / f"{c['output_name']}.pdf")
        first = pages[0]
        assert c["verdict"].upper() in first
        for m in c["markers"]:
            if m["percent_positive"] is None:
                continue
            assert f"{m['percent_positive']:.1f}" in first, (c["culture"], m["marker"])
            low, high = m["ci95"]
            assert f"{low:.1f}–{high:.1f}" in first, (c["culture"], m["marker"])
        whole = "\n".join(pages)
        for section in ("QC summary", "Gating", "Audit trail"):
            assert section in whole, (c["culture"], section)
        if c["heterogeneity"] is not None:
            assert "Heterogeneity" in whole
            scale = f"granularity on the {c['heterogeneity']['scatter_scale']} scale"
            assert scale in " ".join(whole.split()), c["culture"]
        for h in c["files"]:
            assert h["sha256"] in whole
        n = len(pages)
        for i, text in enumerate(pages, start=1):
            assert f"page {i} of {n}" in text


def test_overview_lists_every_culture_with_its_verdict(run: tuple[Path, dict]) -> None:
    out, summary = run
    text = "\n".join(_text(out / "overview.pdf"))
    for c in summary["cultures"]:
        assert c["culture"] in text
    counts = {
        v: sum(c["verdict"] == v for c in summary["cultures"])
        for v in ("pass", "fail", "inconclusive")
    }
    assert (
        f"{len(summary['cultures'])} cultures: {counts['pass']} pass, {counts['fail']} fail, "
        f"{counts['inconclusive']} inconclusive"
    ) in text
