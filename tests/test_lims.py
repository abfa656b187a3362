"""Outputs a LIMS takes (issue 11) and CSV cells a spreadsheet cannot run (issue 12).

One `analyze` run over the example cultures through a manifest that names their lot and donor,
with `--operator` and `--comment`, one culture named like a spreadsheet formula: cultures.csv
(one row per culture), summary.csv (per marker, with its tube and its own borderline flag),
summary.json (schema 3: tube funnels, compensation, the clustered tube, medians by marker),
release metadata on page 1 of each PDF, and sha256sums.txt over everything written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import datetime
from pathlib import Path

import pytest

from cytomsc.pipeline import Options, run_batch
from cytomsc.simulate import write_preset

pytestmark = pytest.mark.slow  # the validation preset, with PDFs

pypdf = pytest.importorskip("pypdf")

FORMULA = '=HYPERLINK("http://example.org/x","click")'
COMMENT = "=cmd|' /C calc'!A0 after re-staining"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    data = tmp_path_factory.mktemp("example")
    write_preset(data, preset="example", seed=0)
    truth = json.loads((data / "truth.json").read_text())
    lines = ["file,culture,role,lot,donor"]
    names = {}
    for k, c in enumerate(truth["cultures"]):
        name = FORMULA if k == 0 else c["culture"]
        names[c["culture"]] = name
        lot = f"LOT-{k + 1:03d}" if k < 3 else ""
        for tube in c["tubes"]:
            path = data / c["culture"] / tube["file"]
            cell = '"' + name.replace('"', '""') + '"'
            lines.append(f"{path},{cell},{tube['role']},{lot},D-{k + 7}")
    sheet = data / "sheet.csv"
    sheet.write_text("\n".join(lines) + "\n")
    out = tmp_path_factory.mktemp("out")
    batch = run_batch(
        [],
        out,
        Options(
            jobs=1, export_events=True, manifest=str(sheet), operator="A. Reviewer", comment=COMMENT
        ),
        command="cytomsc analyze --manifest sheet.csv -o out",
    )
    assert batch.errors == []
    return {
        "out": out,
        "batch": batch,
        "names": names,
        "summary": json.loads((out / "summary.json").read_text()),
    }


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_one_row_per_culture_csv(run: dict) -> None:
    rows = _csv(run["out"] / "cultures.csv")
    summary = run["summary"]
    assert len(rows) == len(summary["cultures"]) == 4
    for row, c in zip(rows, summary["cultures"], strict=True):
        name = c["culture"]
        assert row["culture"] == ("'" + name if name.startswith("=") else name)
        assert row["verdict"] == c["verdict"]
        assert row["borderline"] == str(c["borderline"]).lower()
        jp = c["joint_phenotype_percent"]
        assert row["joint_phenotype_percent"] == ("" if jp is None else f"{jp:.1f}")
        het = c["heterogeneity"]
        assert row["n_populations"] == ("" if het is None else str(het["n_populations"]))
        if het:
            for p in het["populations"]:
                assert f"P{p['id']} {100 * p['fraction']:.1f} % {p['label']}" in row["populations"]
        assert row["panel_id"] == summary["panel"]["id"] == "isct-2006"
        assert row["panel_version"] == summary["panel"]["version"]
        assert row["cytomsc_version"] == summary["cytomsc_version"]
        started = json.loads((run["out"] / "run.json").read_text())["started"]
        assert row["analysis_date"] == started
        assert datetime.fromisoformat(row["analysis_date"]).tzinfo is not None
        assert row["operator"] == "A. Reviewer"
        assert row["comment"] == "'" + COMMENT  # a formula prefix, neutralised
        assert row["donor"] == c["metadata"]["donor"]
        assert row["lot"] == c["metadata"].get("lot", "")
        assert row["tissue"] and row["passage"] and row["detachment"]
        assert row["acquisition_date"] == c["metadata"]["date"]
        datetime.strptime(row["acquisition_date"], "%Y-%m-%d")  # ISO 8601
        failed = [m["marker"] for m in c["markers"] if m["pass"] is False]
        assert row["failed_markers"] == "; ".join(failed)
    assert [r["lot"] for r in rows].count("") == 1


def test_marker_rows_carry_tube_and_own_borderline(run: dict) -> None:
    rows = _csv(run["out"] / "summary.csv")
    markers = [(c, m) for c in run["summary"]["cultures"] for m in c["markers"]]
    assert len(rows) == len(markers)
    for row, (c, m) in zip(rows, markers, strict=True):
        assert row["tube"] == m["tube"] and row["tube"].endswith(".fcs")
        assert Path(
            next(f["path"] for f in c["files"] if Path(f["path"]).name == m["tube"])
        ).is_file()
        assert row["borderline"] == str(m["borderline"]).lower()
        float(row["threshold"])  # numbers stay numbers (negative ones too)
    split = next(
        c for c in run["summary"]["cultures"] if len({m["tube"] for m in c["markers"]}) > 1
    )
    assert len({r["tube"] for r in rows if r["culture"] == split["culture"]}) == 2


def test_summary_schema_3(run: dict) -> None:
    s = run["summary"]
    assert s["schema"] == "cytomsc.summary/3"
    assert set(s["panel"]) >= {"id", "name", "reference", "version", "sha256"}
    clustered = [c for c in s["cultures"] if c["heterogeneity"]]
    assert clustered
    for c in clustered:
        het = c["heterogeneity"]
        stained = {Path(f["path"]).name for f in c["files"] if f["role"] == "stained"}
        assert het["tube"] in stained
        marker_of = {m["channel"]: m["marker"] for m in c["markers"] if m["tube"] == het["tube"]}
        for p in het["populations"]:
            assert p["medians_by_marker"] == {
                marker_of.get(ch, ch): v for ch, v in p["medians"].items()
            }
            assert "CD90" in p["medians_by_marker"] and "CD105" in p["medians_by_marker"]
    for c in s["cultures"]:
        tubes = [f["tube"] for f in c["funnels"]]
        assert sorted(tubes) == sorted(Path(f["path"]).name for f in c["files"])
        assert c["funnels"][0]["role"] == "stained"
        for f in c["funnels"]:
            for gate, why in f["skipped"].items():
                key = {"time": "time_ok", "margin": "margin_ok"}.get(gate, gate)
                assert f["counts"][key] is None and why
        assert [x["tube"] for x in c["compensation"]] == tubes
        assert all(
            x["source"] == "the file's $SPILLOVER" and x["matrix"] for x in c["compensation"]
        )
    no_dye = next(c for c in s["cultures"] if c["culture"] == "MSC-02_pass_heterogeneous")
    assert no_dye["funnels"][0]["skipped"] == {"live": "no viability dye"}


def test_formula_prefixes_neutralised_numbers_kept(run: dict) -> None:
    for name in ("summary.csv", "cultures.csv"):
        for row in csv.reader(io.StringIO((run["out"] / name).read_text(encoding="utf-8"))):
            for cell in row:
                if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
                    float(cell)  # only a number may start so
    cultures = _csv(run["out"] / "cultures.csv")
    assert cultures[0]["culture"] == "'" + FORMULA
    assert (
        json.loads((run["out"] / "summary.json").read_text())["cultures"][0]["culture"] == FORMULA
    )  # the data themselves are unchanged


def test_release_metadata_on_page_one(run: dict) -> None:
    c = run["summary"]["cultures"][1]
    page = pypdf.PdfReader(run["out"] / f"{c['output_name']}.pdf").pages[0].extract_text()
    one = " ".join(page.split())
    assert "Lot LOT-002" in one and "Donor D-8" in one and "Operator A. Reviewer" in one
    assert f"Comment: {COMMENT}" in one
    assert f"Acquisition date {c['metadata']['date']}" in one


def test_outputs_manifest_and_audit_hashes(run: dict) -> None:
    out = run["out"]
    sums = {}
    for line in (out / "sha256sums.txt").read_text().splitlines():
        digest, rel = line.split("  ", 1)
        sums[rel] = digest
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert set(sums) == written - {"sha256sums.txt", "run.json"}
    for rel, digest in sums.items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == digest, rel
    assert "sha256sums.txt" in json.loads((out / "run.json").read_text())["outputs"]
    for c in run["summary"]["cultures"]:
        audit = "\n".join(
            p.extract_text()
            for p in pypdf.PdfReader(out / f"{c['output_name']}.pdf").pages
            if "Audit trail" in p.extract_text().splitlines()[1]
        )
        gates = f"{c['output_name']}/gates.xml"
        assert sums[gates] in audit
        for f in c["files"]:
            rel = f"{c['output_name']}/events/{Path(f['path']).name}"
            assert sums[rel] in audit
        assert "Python 3." in audit and "numpy " in audit and "flowkit " in audit


def test_formula_culture_name_is_text_in_summary_csv(tmp_path: Path) -> None:
    """Issue 12: a culture named =HYPERLINK(...) must not become a formula in summary.csv; the
    numbers beside it stay numbers."""
    data = tmp_path / "in"
    write_preset(data, preset="example", seed=0)
    truth = json.loads((data / "truth.json").read_text())["cultures"][0]
    cell = '"' + FORMULA.replace('"', '""') + '"'
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(
        "file,culture,role\n"
        + "".join(
            f"{data / truth['culture'] / t['file']},{cell},{t['role']}\n" for t in truth["tubes"]
        )
    )
    out = tmp_path / "out"
    run_batch([], out, Options(jobs=1, pdf=False, cluster="none", manifest=str(sheet)))
    rows = list(csv.reader(io.StringIO((out / "summary.csv").read_text(encoding="utf-8"))))
    head, body = rows[0], rows[1:]
    assert body and all(r[head.index("culture")] == "'" + FORMULA for r in body)
    for r in body:
        for cell in r:
            if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
                float(cell)
        float(r[head.index("percent_positive")])
        float(r[head.index("threshold")])
