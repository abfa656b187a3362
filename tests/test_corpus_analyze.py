"""`analyze --panel isct-2006` on real cytometer exports (none is an MSC panel): every file with
scatter channels is analysed without error and judged inconclusive, with the missing markers named.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cytomsc.channels import find_scatter
from cytomsc.cli import main
from cytomsc.fcs import read_text

pytestmark = pytest.mark.slow  # every real export of the corpus analysed


def _scatter_files(corpus: Path, expected: dict) -> list[Path]:
    files = []
    for rel, exp in sorted(expected.items()):
        if exp is None:
            continue
        kw = read_text(corpus / rel)
        n = int(kw.get("par", "0"))
        pnn = [kw.get(f"p{i}n", "") for i in range(1, n + 1)]
        pns = [kw.get(f"p{i}s", "") for i in range(1, n + 1)]
        sc = find_scatter(pnn, pns)
        if sc.fsc and sc.ssc:
            files.append(corpus / rel)
    return files


def test_real_exports_analyse_without_error(
    corpus: Path, corpus_expected: dict, tmp_path: Path
) -> None:
    files = _scatter_files(corpus, corpus_expected)
    assert len(files) >= 20
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "analyze",
            *map(str, files),
            "-o",
            str(out),
            "--no-pdf",
            "--panel",
            "isct-2006",
            "--jobs",
            "2",
        ],
    )
    summary = json.loads((out / "summary.json").read_text())
    assert "Traceback" not in result.output
    assert summary["errors"] == [], summary["errors"]
    assert result.exit_code == 0
    analysed = {Path(f["path"]) for c in summary["cultures"] for f in c["files"]}
    assert analysed == set(files)
    for c in summary["cultures"]:
        assert c["verdict"] == "inconclusive", (c["culture"], c["warnings"])
        assert c["missing_markers"], c["culture"]
        assert any("markers in no channel" in w for w in c["warnings"])
        # (a PBS-only Fortessa file rightly keeps no cells)
        ev = c["events"]
        assert ev["total"] > 0 and ev["total"] >= ev["cells"] >= ev["singlets"] >= ev["live"]
