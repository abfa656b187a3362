"""`analyze --gates`: the lab's own gates (FlowJo 10 workspace or GatingML), applied by FlowKit.

Truths: FlowJo's own counts for the FlowSOM example workspace (``ANSWER_flowjo_counts.csv``, read
here, never copied), FlowKit re-applying the same file on its own, and simulated cultures whose
per-event kinds and % positive are known, gated by a GatingML file this test writes.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import flowkit as fk
import numpy as np
import pytest
from click.testing import CliRunner

from cytomsc import simulate as S
from cytomsc.cli import main
from cytomsc.fcs import read_fcs
from cytomsc.workspace import correspond, default_path, load_lab_gates, normal_path

SEED = 3


def _run(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, args, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def _answer(real: Path) -> dict[str, int]:
    with open(real / "FlowSOM" / "ANSWER_flowjo_counts.csv", newline="") as fh:
        return {r["population_path"]: int(r["count"]) for r in csv.DictReader(fh)}


# ---------------------------------------------------------------------------------------------
# The real FlowJo 10 workspace


@pytest.fixture(scope="module")
def flowsom_run(real_fcs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("flowsom")
    code, _, err = _run(
        [
            "analyze",
            str(real_fcs / "FlowSOM" / "68983.fcs"),
            "-o",
            str(out),
            "--gates",
            str(real_fcs / "FlowSOM" / "gating.wsp"),
            "--jobs",
            "1",
            "--cluster",
            "none",
        ]
    )
    assert code == 0, err
    return out, json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_flowsom_workspace_gives_flowjo_counts(flowsom_run: tuple, real_fcs: Path) -> None:
    """Every gate of the analysed chain within 0.2 % of FlowJo's count (what FlowKit reaches)."""
    _, summary = flowsom_run
    answer = _answer(real_fcs)
    gates = summary["cultures"][0]["gates"]
    assert [g["path"] for g in gates] == [
        "/Lymphocytes",
        "/Lymphocytes/Singlets",
        "/Lymphocytes/Singlets/Singlets2",
    ]
    for g in gates:
        assert g["source"] == "manual"
        expected = answer[g["path"]]
        assert abs(g["count"] - expected) <= 0.002 * expected, (g["path"], g["count"], expected)


@pytest.mark.slow
def test_flowsom_counts_are_flowkits_own(flowsom_run: tuple, real_fcs: Path) -> None:
    """The counts are FlowKit's Workspace analysis of the same files, event for event."""
    _, summary = flowsom_run
    ws = fk.Workspace(
        str(real_fcs / "FlowSOM" / "gating.wsp"),
        fcs_samples=str(real_fcs / "FlowSOM" / "68983.fcs"),
    )
    ws.analyze_samples(sample_id="68983.fcs", use_mp=False)
    res = ws.get_gating_results("68983.fcs")
    for g in summary["cultures"][0]["gates"]:
        name = g["path"].rsplit("/", 1)[1]
        ancestors = ("root", *[p for p in g["path"].split("/")[1:-1]])
        assert g["count"] == res.get_gate_count(name, ancestors)
    events = summary["cultures"][0]["events"]
    assert events["cells"] == res.get_gate_count("Lymphocytes", ("root",))
    assert events["live"] == res.get_gate_count("Singlets2", ("root", "Lymphocytes", "Singlets"))


@pytest.mark.slow
def test_flowsom_default_population_and_report(flowsom_run: tuple) -> None:
    """Default analysed population: the deepest common chain, stopping before the branching
    marker gates; the PDF says manual on the gating page."""
    from pypdf import PdfReader

    out, summary = flowsom_run
    c = summary["cultures"][0]
    assert c["metadata"]["gating"].endswith("/Lymphocytes/Singlets/Singlets2")
    assert summary["parameters"]["gates"].endswith("gating.wsp")
    text = " ".join(p.extract_text() for p in PdfReader(out / "68983.pdf").pages)
    assert "manual gate" in text and "automatic gate" not in text
    assert "gating.wsp" in text
    for m in c["markers"]:
        assert m["events"] == c["events"]["live"]  # % positive is on the analysed population


def test_correspondence_by_dimensions(real_fcs: Path) -> None:
    lab = load_lab_gates(real_fcs / "FlowSOM" / "gating.wsp")
    fcs = read_fcs(real_fcs / "FlowSOM" / "68983.fcs")
    pnn, pns = [c.pnn for c in fcs.channels], [c.pns for c in fcs.channels]
    tree = lab.tree("68983.fcs")
    slots = {g.path: correspond(g, pnn, pns) for g in tree}
    assert slots["/Lymphocytes"] == "cells"
    assert slots["/Lymphocytes/Singlets"] == "singlets"  # FSC-H / FSC-W
    assert slots["/Lymphocytes/Singlets/Singlets2"] == "singlets"  # SSC-H / SSC-W
    assert slots["/Lymphocytes/Singlets/Singlets2/NK1_1+"] is None  # PE-A against FSC-A
    assert default_path([tree], pnn, pns) == "/Lymphocytes/Singlets/Singlets2"


def test_workspace_lacking_a_tube_is_an_error_for_that_tube(real_fcs: Path, tmp_path: Path) -> None:
    other = real_fcs / "flowWorkspaceData" / "a2004_O1T2pb05i_A2_A02.fcs"
    code, stdout, err = _run(
        [
            "analyze",
            str(real_fcs / "FlowSOM" / "68983.fcs"),
            str(other),
            "-o",
            str(tmp_path / "o"),
            "--jobs",
            "1",
            "--cluster",
            "none",
            "--no-pdf",
            "--gates",
            str(real_fcs / "FlowSOM" / "gating.wsp"),
        ]
    )
    assert code == 1
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1
    assert (
        "a2004_O1T2pb05i_A2_A02.fcs" in lines[0]
        and "not in the workspace gating.wsp" in lines[0]
        and "68983.fcs" in lines[0]
    )
    assert "68983: INCONCLUSIVE" in stdout  # the other tube was analysed


def test_gate_path_that_does_not_exist_is_a_usage_error(real_fcs: Path, tmp_path: Path) -> None:
    code, _, err = _run(
        [
            "analyze",
            str(real_fcs / "FlowSOM" / "68983.fcs"),
            "-o",
            str(tmp_path / "o"),
            "--gates",
            str(real_fcs / "FlowSOM" / "gating.wsp"),
            "--gate-path",
            "/Lymphocytes/Live",
        ]
    )
    assert code == 2
    assert err.count("\n") == 1 and "no gate /Lymphocytes/Live in gating.wsp" in err
    assert "/Lymphocytes/Singlets" in err  # the gates it has are listed
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "rel,why",
    [
        ("flowWorkspaceData/A2004Analysis.xml", "FlowJo 9 workspace"),
        ("FlowSOM/manualGating.xml", "not a FlowJo 10 workspace or a valid GatingML 2.0 file"),
    ],
)
def test_unreadable_gates_file_is_one_line(
    real_fcs: Path, tmp_path: Path, rel: str, why: str
) -> None:
    code, _, err = _run(
        [
            "analyze",
            str(real_fcs / "FlowSOM" / "68983.fcs"),
            "-o",
            str(tmp_path / "o"),
            "--gates",
            str(real_fcs / rel),
        ]
    )
    assert code == 2 and err.count("\n") == 1
    assert why in err and Path(rel).name in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------
# Simulated cultures gated by a GatingML file written here


def _dim(ch: str, lo: float | None = None, hi: float | None = None) -> fk.Dimension:
    return fk.Dimension(ch, compensation_ref="uncompensated", range_min=lo, range_max=hi)


def write_lab_gatingml(path: Path, marker_gate: bool = False) -> None:
    """A lab's hand-drawn chain on raw units: Cells (FSC-A >= 30,000: debris sits near 9,000),
    Singlets (FSC-H/FSC-A between 0.6 and 0.98; doublets ~0.47), Live (DAPI-A < 3,000: dead cells
    ~30,000), and optionally a CD73+ gate under Live."""
    gs = fk.GatingStrategy()
    big = 1e7
    gs.add_gate(
        fk.gates.PolygonGate(
            "Cells",
            [_dim("FSC-A"), _dim("SSC-A")],
            [[30000, -big], [big, -big], [big, big], [30000, big]],
        ),
        ("root",),
    )
    gs.add_gate(
        fk.gates.PolygonGate(
            "Singlets",
            [_dim("FSC-A"), _dim("FSC-H")],
            [[0, 0], [big, 0.6 * big], [big, 0.98 * big]],
        ),
        ("root", "Cells"),
    )
    gs.add_gate(
        fk.gates.RectangleGate("Live", [_dim("DAPI-A", None, 3000)]), ("root", "Cells", "Singlets")
    )
    if marker_gate:
        gs.add_gate(
            fk.gates.RectangleGate("CD73pos", [_dim("PE-A", 5000, None)]),
            ("root", "Cells", "Singlets", "Live"),
        )
    with open(path, "wb") as fh:
        fk.export_gatingml(gs, fh)


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict, dict]:
    root = tmp_path_factory.mktemp("lab")
    design = S.CultureDesign(
        "LAB-01",
        style="diva",
        layout="isct-8c",
        viability="DAPI",
        dead=0.08,
        debris=0.15,
        doublets=0.08,
        controls=("isotype",),
        n_events=8000,
        seed_offset=41,
    )
    tubes = S.simulate_culture(design, SEED)
    for t in tubes:
        t.write(root / "data" / design.name)
    truth = S.truth_of(design, tubes)
    gml = root / "lab.xml"
    write_lab_gatingml(gml, marker_gate=True)
    out = root / "out"
    code, _, err = _run(
        [
            "analyze",
            str(root / "data"),
            "-o",
            str(out),
            "--gates",
            str(gml),
            "--jobs",
            "1",
            "--cluster",
            "none",
            "--export-events",
        ]
    )
    assert code == 0, err
    return root, out, json.loads((out / "summary.json").read_text()), truth


@pytest.mark.slow
def test_lab_gatingml_counts_are_flowkits(lab_run: tuple) -> None:
    """Each tube's manual gate counts equal FlowKit applying the same GatingML on its own."""
    root, _, summary, _ = lab_run
    gs = fk.parse_gating_xml(str(root / "lab.xml"))
    c = summary["cultures"][0]
    for f in c["files"]:
        res = gs.gate_sample(fk.Sample(f["path"]))
        steps = [g for g in c["gates"] if g["tube"] == Path(f["path"]).name]
        assert [g["path"] for g in steps] == ["/Cells", "/Cells/Singlets", "/Cells/Singlets/Live"]
        for g in steps:
            name = g["path"].rsplit("/", 1)[1]
            ancestors = ("root", *g["path"].split("/")[1:-1])
            assert g["count"] == res.get_gate_count(name, ancestors)
            assert g["source"] == "manual"


@pytest.mark.slow
def test_lab_gates_drive_percent_positive(lab_run: tuple) -> None:
    """% positive on the lab's population: within 1 point of the simulator's truth; the default
    population stops before the CD73pos marker gate; the gates removed what they should."""
    root, out, summary, truth = lab_run
    c = summary["cultures"][0]
    assert c["metadata"]["gating"].endswith("/Cells/Singlets/Live")
    assert c["verdict"] == truth["expected_verdict"] == "pass"
    for m in c["markers"]:
        t = truth["markers"][m["marker"]]
        assert abs(m["percent_positive"] - t["percent_positive"]) <= 1.0, m["marker"]
    stained = next(t for t in truth["tubes"] if t["role"] == "stained")
    labels = np.frombuffer(stained["labels"].encode(), dtype="S1").astype(str)
    ev = fk.Sample(out / c["output_name"] / "events" / stained["file"])
    names = list(ev.pnn_labels)
    final = ev.get_events(source="raw")[:, names.index("cytomsc_live")] > 0.5
    assert final.sum() == c["events"]["live"]
    for code in "bdx":  # debris, doublets, dead: removed by the lab's gates
        assert final[labels == code].mean() <= 0.05
    assert final[np.isin(labels, list("123456789h"))].mean() >= 0.95


@pytest.mark.slow
def test_gate_path_chooses_the_population(lab_run: tuple, tmp_path: Path) -> None:
    """--gate-path /Cells/Singlets analyses the singlets, dead cells included."""
    root, _, summary, _ = lab_run
    code, _, err = _run(
        [
            "analyze",
            str(root / "data"),
            "-o",
            str(tmp_path / "o"),
            "--gates",
            str(root / "lab.xml"),
            "--gate-path",
            "Cells/Singlets",
            "--jobs",
            "1",
            "--cluster",
            "none",
            "--no-pdf",
        ]
    )
    assert code == 0, err
    c = json.loads((tmp_path / "o" / "summary.json").read_text())["cultures"][0]
    default = summary["cultures"][0]
    assert c["metadata"]["gating"].endswith("/Cells/Singlets")
    assert c["events"]["live"] == c["events"]["singlets"] > default["events"]["live"]
    assert [g["path"] for g in c["gates"] if g["tube"].endswith("Stained.fcs")] == [
        "/Cells",
        "/Cells/Singlets",
    ]


def test_automatic_gates_are_marked_automatic(tmp_path: Path) -> None:
    design = S.CultureDesign("AUTO", n_events=3000, controls=("isotype",), seed_offset=5)
    for t in S.simulate_culture(design, SEED):
        t.write(tmp_path / "d")
    code, _, err = _run(
        [
            "analyze",
            str(tmp_path / "d"),
            "-o",
            str(tmp_path / "o"),
            "--jobs",
            "1",
            "--no-pdf",
            "--cluster",
            "none",
        ]
    )
    assert code == 0, err
    c = json.loads((tmp_path / "o" / "summary.json").read_text())["cultures"][0]
    assert c["gates"] and {g["source"] for g in c["gates"]} == {"automatic"}
    assert {g["gate"] for g in c["gates"]} >= {"cells", "singlets"}


def test_normal_path() -> None:
    assert normal_path("Lymphocytes/Singlets/") == "/Lymphocytes/Singlets"
    assert normal_path("root/Lymphocytes") == "/Lymphocytes"
    assert normal_path("/") == "/"
