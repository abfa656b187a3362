"""Compensation from single-stain controls (manifest roles single:<dye>), against known matrices.

Truths: flowCore's reference spillover matrix ``compmatrix`` for its FACSCalibur single stains
(../shared/real-fcs/flowCore_compdata, read in place through a manifest: the CellQuest files have
no .fcs extension), and simulated controls drawn through a known matrix (simulate.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cytomsc import simulate as S
from cytomsc.cli import main
from cytomsc.preprocess import _read_comp_csv

SEED = 2


def _run(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, args, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def _compmatrix(path: Path) -> tuple[list[str], np.ndarray]:
    """flowCore's compmatrix (CellQuest, CR line ends): a title, '<\\t>', the detector names,
    then one tab-separated row per detector."""
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    at = next(i for i, ln in enumerate(lines) if ln.startswith("FL"))
    header = lines[at].split("\t")
    return header, np.array([[float(v) for v in ln.split("\t")] for ln in lines[at + 1 :]])


@pytest.mark.slow
@pytest.mark.parametrize("names", ["detectors", "fluorochromes"])
def test_flowcore_compdata_within_003(real_fcs: Path, tmp_path: Path, names: str) -> None:
    d = real_fcs / "flowCore_compdata"
    stain = {"060909.002": "FITC", "060909.003": "PE", "060909.004": "APC", "060909.005": "7-AAD"}
    rows = ["file,culture,role", f"{d / '060909.001'},comp,unstained"]
    for line in (d / "comp_match").read_text().splitlines()[1:]:
        f, ch = line.split(",")
        if ch != "unstained":
            rows.append(f"{d / f},comp,single:{ch if names == 'detectors' else stain[f]}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    code, _, err = _run(
        [
            "analyze",
            ".",
            "--manifest",
            str(tmp_path / "m.csv"),
            "-o",
            str(tmp_path / "o"),
            "--jobs",
            "1",
        ]
    )
    assert code == 0, err
    dets, got = _read_comp_csv(tmp_path / "o" / "compensation.csv")
    ref_dets, ref = _compmatrix(d / "compmatrix")
    order = [dets.index(x) for x in ref_dets]
    got = got[np.ix_(order, order)]
    assert np.abs(got - ref).max() <= 0.03, np.round(got - ref, 4)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    comp = summary["compensation"]
    assert np.array_equal(np.array(comp["matrix"])[np.ix_(order, order)], got)  # file = result
    assert summary["cultures"] == []  # controls only: nothing to judge
    assert {c["detector"] for c in comp["controls"]} == set(ref_dets)


@pytest.fixture(scope="module")
def sim_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    root = tmp_path_factory.mktemp("comp")
    design = S.CultureDesign(
        "MSC-C",
        style="diva",
        layout="isct-8c",
        viability="DAPI",
        dead=0.03,
        controls=("isotype",),
        n_events=8000,
        seed_offset=910,
    )
    truth = S.write_compensation_set(root / "data", design, SEED, n_events=6000)
    code, _, err = _run(
        [
            "analyze",
            ".",
            "--manifest",
            str(root / "data" / "manifest.csv"),
            "-o",
            str(root / "out"),
            "--jobs",
            "1",
            "--cluster",
            "none",
        ]
    )
    assert code == 0, err
    return root, truth, json.loads((root / "out" / "summary.json").read_text())


@pytest.mark.slow
def test_simulated_matrix_within_0005(sim_set: tuple) -> None:
    root, truth, summary = sim_set
    dets, got = _read_comp_csv(root / "out" / "compensation.csv")
    want_dets = truth["spillover"]["detectors"]
    want = np.array(truth["spillover"]["matrix"])
    order = [dets.index(x) for x in want_dets]
    assert sorted(dets) == sorted(want_dets) and len(dets) == 9
    err = np.abs(got[np.ix_(order, order)] - want)
    assert err.max() <= 0.005, np.round(got[np.ix_(order, order)] - want, 4)
    assert summary["compensation"]["used"] is True
    assert summary["parameters"]["comp"] == "single-stain controls (compensation.csv)"
    assert all(not c["warnings"] for c in summary["compensation"]["controls"])


@pytest.mark.slow
def test_batch_is_compensated_with_it(sim_set: tuple) -> None:
    """The culture's files carry no $SPILLOVER: its % positive is right only if the controls'
    matrix was applied."""
    _, truth, summary = sim_set
    c = summary["cultures"][0]
    t = truth["cultures"][0]
    assert c["verdict"] == t["expected_verdict"] == "pass"
    checked = 0
    for m in c["markers"]:
        tm = t["markers"][m["marker"]]
        if tm["separated"]:
            assert abs(m["percent_positive"] - tm["percent_positive"]) <= 1.0, m["marker"]
            checked += 1
    assert checked >= 7
    assert [f["role"] for f in c["files"]] == ["isotype", "stained"]  # controls left the culture


@pytest.mark.slow
def test_compensation_csv_reads_back_with_comp(sim_set: tuple, tmp_path: Path) -> None:
    """--comp OUT/compensation.csv gives the same analysis as the single stains did."""
    root, _, summary = sim_set
    lines = (root / "data" / "manifest.csv").read_text().splitlines()
    culture = [ln for ln in lines if not ln.startswith("controls/")]
    (root / "data" / "culture.csv").write_text("\n".join(culture) + "\n")
    code, _, err = _run(
        [
            "analyze",
            ".",
            "--manifest",
            str(root / "data" / "culture.csv"),
            "-o",
            str(tmp_path / "o"),
            "--jobs",
            "1",
            "--cluster",
            "none",
            "--no-pdf",
            "--comp",
            str(root / "out" / "compensation.csv"),
        ]
    )
    assert code == 0, err
    again = json.loads((tmp_path / "o" / "summary.json").read_text())["cultures"][0]
    first = summary["cultures"][0]
    assert [(m["marker"], m["percent_positive"], m["threshold"]) for m in again["markers"]] == [
        (m["marker"], m["percent_positive"], m["threshold"]) for m in first["markers"]
    ]


@pytest.mark.slow
def test_overview_draws_each_control(sim_set: tuple) -> None:
    from pypdf import PdfReader

    root, truth, _ = sim_set
    text = " ".join(p.extract_text() for p in PdfReader(root / "out" / "overview.pdf").pages)
    assert "Compensation from single-stain controls" in text
    for c in truth["controls"]:
        if c["role"] != "unstained":
            assert f"Single-stain control: {Path(c['file']).name}" in text.replace("\n", " ")


@pytest.mark.slow
def test_bad_controls_are_named(tmp_path: Path) -> None:
    design = S.CultureDesign(
        "MSC-B",
        style="accuri",
        layout="isct-4c",
        controls=("isotype",),
        n_events=4000,
        seed_offset=920,
    )
    S.write_compensation_set(
        tmp_path / "d",
        design,
        SEED,
        n_events=4000,
        bad={"FITC": "dim", "PE": "saturated", "APC": "double"},
    )
    code, _, err = _run(
        [
            "analyze",
            ".",
            "--manifest",
            str(tmp_path / "d" / "manifest.csv"),
            "-o",
            str(tmp_path / "o"),
            "--jobs",
            "1",
            "--cluster",
            "none",
            "--no-pdf",
        ]
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    by_role = {c["role"]: c["warnings"] for c in summary["compensation"]["controls"]}
    assert any(w.startswith("dim:") for w in by_role["single:FITC"])
    assert any(w.startswith("saturated:") for w in by_role["single:PE"])
    assert any(w.startswith("positive in two detectors") for w in by_role["single:APC"])
    assert not by_role["single:PerCP-Cy5.5"]
    notes = " ".join(summary["cultures"][0]["warnings"])
    for dye in ("FITC", "PE", "APC"):
        assert f"MSC-B_single_{dye}.fcs (single:{dye})" in notes


def test_single_stains_without_unstained_is_one_error(tmp_path: Path) -> None:
    design = S.CultureDesign(
        "MSC-N",
        style="accuri",
        layout="isct-4c",
        controls=("isotype",),
        n_events=3000,
        seed_offset=930,
    )
    S.write_compensation_set(tmp_path / "d", design, SEED, n_events=3000, file_spillover=True)
    m = tmp_path / "d" / "manifest.csv"
    m.write_text(
        "\n".join(ln for ln in m.read_text().splitlines() if "single_unstained" not in ln) + "\n"
    )
    code, stdout, err = _run(
        [
            "analyze",
            ".",
            "--manifest",
            str(m),
            "-o",
            str(tmp_path / "o"),
            "--jobs",
            "1",
            "--cluster",
            "none",
            "--no-pdf",
        ]
    )
    assert code == 1
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "need an unstained" in lines[0] and "single_" in lines[0]
    assert "MSC-N: PASS" in stdout  # the culture went on with its files' own spillover
    assert not (tmp_path / "o" / "compensation.csv").exists()


def test_unknown_fluorochrome_is_one_error(tmp_path: Path) -> None:
    design = S.CultureDesign(
        "MSC-U",
        style="accuri",
        layout="isct-4c",
        controls=("isotype",),
        n_events=3000,
        seed_offset=940,
    )
    S.write_compensation_set(tmp_path / "d", design, SEED, n_events=3000, file_spillover=True)
    m = tmp_path / "d" / "manifest.csv"
    m.write_text(m.read_text().replace("single:APC", "single:BV421"))
    code, _, err = _run(
        [
            "analyze",
            ".",
            "--manifest",
            str(m),
            "-o",
            str(tmp_path / "o"),
            "--jobs",
            "1",
            "--cluster",
            "none",
            "--no-pdf",
        ]
    )
    assert code == 1
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "single:BV421" in lines[0] and "MSC-U_single_APC.fcs" in lines[0]
