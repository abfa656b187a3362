"""The simulator: its files read back, its truth matches its events, it is reproducible."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import flowkit as fk
import numpy as np
import pytest
from click.testing import CliRunner

from cytomsc.cli import main
from cytomsc.errors import CytomscError
from cytomsc.simulate import (
    GATED_KINDS,
    KIND_ANOMALY,
    KIND_CELL,
    KIND_CONTAMINANT,
    KIND_DEAD,
    KIND_DEBRIS,
    KIND_DOUBLET,
    KIND_SATURATED,
    Anomaly,
    CultureDesign,
    PopulationDesign,
    SimulatedTube,
    preset,
    simulate_culture,
    truth_of,
    write_preset,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_fcs"


@pytest.fixture(scope="module")
def example() -> list[tuple[CultureDesign, list[SimulatedTube], dict]]:
    out = []
    for d in preset("example"):
        tubes = simulate_culture(d, 0)
        out.append((d, tubes, truth_of(d, tubes)))
    return out


def _compensated(t: SimulatedTube) -> np.ndarray:
    names, spill = t.spillover
    idx = [t.pnn.index(c) for c in names]
    return np.linalg.solve(spill.T, t.events[:, idx].T).T


def _col(t: SimulatedTube, name: str) -> np.ndarray:
    return t.events[:, t.pnn.index(name)]


def test_reads_back_with_flowkit(tmp_path: Path, example) -> None:
    for _, tubes, _ in example:
        for t in tubes:
            path = t.write(tmp_path)
            s = fk.Sample(path)
            assert s.event_count == len(t.kind)
            assert s.pnn_labels == t.pnn
            assert s.version == t.version
            raw = s.get_events(source="raw")
            ti = t.pnn.index("Time")
            keep = [i for i in range(len(t.pnn)) if i != ti]
            expected = (t.events if t.datatype == "F" else np.rint(t.events))[:, keep]
            np.testing.assert_allclose(raw[:, keep], expected.astype(np.float32), rtol=1e-6)
            parts = s.metadata["spillover"].split(",")
            n = int(parts[0])
            assert parts[1 : n + 1] == t.spillover[0]
            np.testing.assert_array_equal(
                np.array(parts[n + 1 :], dtype=float).reshape(n, n), t.spillover[1]
            )
            assert s.metadata["src"] == t.keywords["$SRC"]
            assert float(s.metadata["timestep"]) > 0


def test_styles_and_versions(example) -> None:
    by_style = {d.style: tubes[-1] for d, tubes, _ in example}
    assert by_style["diva"].version == "3.1" and by_style["diva"].datatype == "F"
    assert "FITC-A" in by_style["diva"].pnn and "CD90" in by_style["diva"].pns
    assert by_style["accuri"].version == "3.0" and by_style["accuri"].datatype == "I"
    assert "FL1-A" in by_style["accuri"].pnn and "HLA-DR FITC" in by_style["accuri"].pns
    assert "B1-A" in by_style["macsquant"].pnn and "CD90" in by_style["macsquant"].pns
    assert "CD34/CD11b/CD19/CD45/HLA-DR" in by_style["macsquant"].pns
    assert "FL3" in by_style["generic"].pnn


def test_true_percent_recovered_from_isotype(example) -> None:
    """Compensate, keep the truly intact live single cells, threshold at the isotype's 99.5th
    percentile: the % positive of every separated marker is within 1.5 points of the truth."""
    checked = 0
    for _, tubes, truth in example:
        iso = [t for t in tubes if t.role == "isotype"]
        if not iso:
            continue
        names = iso[0].spillover[0]
        control = _compensated(iso[0])[iso[0].gated()]
        for marker, rec in truth["markers"].items():
            if not rec["separated"]:
                continue
            j = names.index(rec["channel"])
            threshold = np.percentile(control[:, j], 99.5)
            above = n = 0
            for t in tubes:
                if t.role == "stained" and t.filename in rec["by_tube"]:
                    values = _compensated(t)[t.gated(), j]
                    above += int((values > threshold).sum())
                    n += len(values)
            assert abs(100.0 * above / n - rec["percent_positive"]) <= 1.5, (
                truth["culture"],
                marker,
            )
            checked += 1
    assert checked >= 20


def test_truth_percentages_are_exact_from_labels(example) -> None:
    for _, tubes, truth in example:
        for rec_t, t in zip(truth["tubes"], tubes, strict=True):
            labels = np.array(list(rec_t["labels"]))
            assert len(labels) == len(t.kind) == rec_t["events"]
            gated = np.isin(labels, list("123456789h"))
            assert gated.sum() == rec_t["gated_events"] == t.gated().sum()
        for marker, rec in truth["markers"].items():
            n = k = 0
            for t in tubes:
                if t.filename in rec["by_tube"]:
                    pos = np.zeros(len(t.kind), dtype=bool)
                    for m in marker.split("/"):
                        pos |= t.positive[m]
                    n += int(t.gated().sum())
                    k += int((pos & t.gated()).sum())
            assert (rec["events"], rec["positive_events"]) == (n, k)
            assert rec["percent_positive"] == pytest.approx(100.0 * k / n, abs=1e-6)


def test_expected_verdicts_of_example(example) -> None:
    verdicts = {truth["culture"]: truth["expected_verdict"] for _, _, truth in example}
    assert verdicts == {
        "MSC-01_pass": "pass",
        "MSC-02_pass_heterogeneous": "pass",
        "MSC-03_fail_CD105": "fail",
        "MSC-04_fail_contaminated": "fail",
    }
    by_name = {truth["culture"]: truth for _, _, truth in example}
    assert by_name["MSC-03_fail_CD105"]["markers"]["CD105"]["pass"] is False
    assert by_name["MSC-04_fail_contaminated"]["markers"]["CD45"]["pass"] is False
    assert by_name["MSC-02_pass_heterogeneous"]["n_populations"] == 2


def test_event_kinds_look_like_what_they_are() -> None:
    d = CultureDesign(
        "K",
        style="diva",
        layout="isct-8c",
        viability="DAPI",
        n_events=20000,
        debris=0.2,
        doublets=0.1,
        dead=0.1,
        contaminants=0.05,
        saturated=0.01,
        controls=(),
        anomaly=Anomaly(start=0.5, duration=0.1, rate_factor=3.0, shift=0.5),
    )
    t = simulate_culture(d, 3)[0]
    fsc, fsch = _col(t, "FSC-A"), _col(t, "FSC-H")
    ssc = _col(t, "SSC-A")
    dapi = _compensated(t)[:, t.spillover[0].index("DAPI-A")]
    k, base = t.kind, t.base_kind
    med = {
        kind: np.median(fsc[k == kind])
        for kind in (KIND_CELL, KIND_DEBRIS, KIND_DOUBLET, KIND_DEAD, KIND_CONTAMINANT)
    }
    assert med[KIND_DEBRIS] < 0.2 * med[KIND_CELL]
    assert 1.7 < med[KIND_DOUBLET] / med[KIND_CELL] < 2.3
    ratio = {kind: np.median((fsch / fsc)[k == kind]) for kind in (KIND_CELL, KIND_DOUBLET)}
    assert 1.1 < ratio[KIND_CELL] / ratio[KIND_DOUBLET] < 1.9  # H ~1.2x at A ~2x
    assert med[KIND_DEAD] < med[KIND_CELL]
    assert np.median(ssc[k == KIND_DEAD]) > np.median(ssc[k == KIND_CELL])
    assert np.percentile(dapi[k == KIND_DEAD], 5) > np.percentile(dapi[k == KIND_CELL], 99)
    # anomaly: one contiguous stretch of time, with a higher event rate
    time = _col(t, "Time")
    a = k == KIND_ANOMALY
    inside = (time >= time[a].min()) & (time <= time[a].max())
    assert np.array_equal(inside, a)
    rate_in = a.sum() / (time[a].max() - time[a].min())
    rate_out = (~a).sum() / (time.max() - time.min() - (time[a].max() - time[a].min()))
    assert 2.0 < rate_in / rate_out < 4.5
    assert np.all(np.diff(time) >= 0)
    # saturated: at $PnR - 1 in a scatter channel; only intact cells are relabelled
    sat = k == KIND_SATURATED
    assert sat.sum() > 50
    assert np.all(np.maximum(fsc[sat], ssc[sat]) == 262143)
    assert set(np.unique(base[sat])) <= set(GATED_KINDS)
    # contaminants: all CD45+, MSCs almost none
    assert t.positive["CD45"][k == KIND_CONTAMINANT].all()
    assert t.positive["CD45"][k == KIND_CELL].mean() < 0.01


def test_populations_in_set_proportions() -> None:
    pops = [
        PopulationDesign(0.6),
        PopulationDesign(0.3, size=0.7),
        PopulationDesign(0.1, granularity=1.5),
    ]
    d = CultureDesign("P", populations=pops, controls=(), n_events=20000)
    t = simulate_culture(d, 5)[0]
    cells = t.kind == KIND_CELL
    frac = np.bincount(t.population[cells], minlength=4)[1:] / cells.sum()
    np.testing.assert_allclose(frac, [0.6, 0.3, 0.1], atol=0.015)
    fsc = _col(t, "FSC-A")
    assert np.median(fsc[cells & (t.population == 2)]) < 0.8 * np.median(
        fsc[cells & (t.population == 1)]
    )
    assert truth_of(d, [t])["n_populations"] == 3


def test_noise_puts_compensated_negatives_around_zero() -> None:
    d = CultureDesign("N", controls=("unstained",), n_events=5000)
    t = simulate_culture(d, 2)[0]
    apc = _compensated(t)[t.gated(), t.spillover[0].index("APC-H7-A")]
    assert (apc < 0).mean() > 0.02


def test_example_fcs_reproduced_byte_for_byte(tmp_path: Path) -> None:
    write_preset(tmp_path, "example", seed=0)
    shipped = sorted(p.relative_to(EXAMPLE) for p in EXAMPLE.rglob("*") if p.is_file())
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert shipped == made
    for rel in made:
        assert (tmp_path / rel).read_bytes() == (EXAMPLE / rel).read_bytes(), rel
    assert sum((EXAMPLE / rel).stat().st_size for rel in made) < 5_000_000
    truth = json.loads((EXAMPLE / "truth.json").read_text())
    assert len(truth["cultures"]) == 4


def test_seed_changes_bytes(tmp_path: Path) -> None:
    d = replace(preset("example")[3], n_events=2000)
    a = simulate_culture(d, 0)[-1]
    b = simulate_culture(d, 0)[-1]
    c = simulate_culture(d, 1)[-1]
    pa, pb, pc = a.write(tmp_path / "a"), b.write(tmp_path / "b"), c.write(tmp_path / "c")
    assert pa.read_bytes() == pb.read_bytes()
    assert pa.read_bytes() != pc.read_bytes()


def test_validation_preset_covers_issue_3() -> None:
    designs = preset("validation")
    assert len(designs) >= 24
    assert len({d.name for d in designs}) == len(designs)
    assert {d.style for d in designs} == {"diva", "accuri", "macsquant", "generic"}
    assert any(d.controls == () for d in designs)
    assert any(any(c.startswith("fmo:") for c in d.controls) for d in designs)
    assert any(d.controls == ("unstained",) for d in designs)
    assert any(d.debris >= 0.3 for d in designs)
    assert any(d.doublets >= 0.15 for d in designs)
    assert any(d.dead >= 0.1 and d.viability for d in designs)
    assert any(d.contaminants >= 0.05 for d in designs)
    assert any(d.layout == "kit" for d in designs)
    assert any(d.datatype == "I" or d.style in ("accuri", "generic") for d in designs)
    low = next(d for d in designs if "low_events" in d.name)
    truth = truth_of(low, simulate_culture(low, 0))
    assert truth["expected_verdict"] == "inconclusive"
    assert all(t["gated_events"] < 1000 for t in truth["tubes"] if t["role"] == "stained")


def test_unknown_preset_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(CytomscError, match="unknown preset 'nope'"):
        write_preset(tmp_path, "nope")
    result = CliRunner().invoke(main, ["simulate", str(tmp_path / "o"), "--preset", "nope"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "unknown preset" in result.output


def test_heterogeneity_preset_for_issue_4() -> None:
    designs = preset("heterogeneity")
    assert len(designs) >= 30
    kinds = [d.tags["kind"] for d in designs]
    assert kinds.count("homogeneous") >= 5 and {"two", "three", "size"} <= set(kinds)
    assert min(d.tags.get("minor", 1.0) for d in designs) == 0.05
    assert min(d.tags.get("separation_sd", 9.0) for d in designs) == 1.5
    d = next(d for d in designs if d.tags["kind"] == "three")
    tubes = simulate_culture(replace(d, n_events=3000), 0)
    truth = truth_of(d, tubes)
    assert truth["n_populations"] == 3 and truth["tags"]["kind"] == "three"
    assert set(truth["tubes"][-1]["labels"]) >= {"1", "2", "3"}


@pytest.mark.slow
def test_history_preset_for_issue_16(tmp_path: Path) -> None:
    """16 lots of two donors over passages 1-8; CD105 drifts after passage 5; a CD90-dim
    population grows from passage 5; the truth says which lots the charts must flag."""
    from cytomsc.fcs import read_fcs
    from cytomsc.simulate import (
        HISTORY_DRIFT,
        HISTORY_LOT_EFFECT,
        HISTORY_LOT_POINTS,
        HISTORY_REFERENCE,
    )

    write_preset(tmp_path, "history", seed=0)
    truth = json.loads((tmp_path / "truth.json").read_text())
    hist = truth["history"]
    lots = hist["lots"]
    assert [x["lot"] for x in lots] == [f"L{i:02d}" for i in range(1, 17)]
    assert {(x["donor"], x["passage"]) for x in lots} == {
        (d, p) for d in ("D01", "D02") for p in range(1, 9)
    }
    drifted = [x["lot"] for x in lots if x["passage"] > 5]
    assert hist["expected_flags"]["CD105"] == drifted == hist["drifted_lots"]["CD105"]
    assert all(v == [] for m, v in hist["expected_flags"].items() if m != "CD105")
    assert hist["reference_lots"] == [f"L{i:02d}" for i in range(1, 11)]
    # the realised truth follows the design within 4 binomial SD (~17,000 cells; the 0.2 %
    # hematopoietic contaminants, ~0.23 % of the cells, are CD105 negative)
    for c, lot in zip(truth["cultures"], lots, strict=True):
        u = lot["lot_effect"]
        cd105 = c["markers"]["CD105"]
        design = (99.5 + HISTORY_LOT_POINTS["CD105"] * u - lot["drift_points"]) * 0.9977
        sd = 100 * (design / 100 * (1 - design / 100) / cd105["events"]) ** 0.5
        assert abs(cd105["percent_positive"] - design) < 4 * sd, c["culture"]
        assert lot["drift_points"] == HISTORY_DRIFT * max(0, lot["passage"] - 5)
        assert c["expected_verdict"] == "pass"
        fractions = c["population_fractions"]
        assert (fractions[1] if len(fractions) > 1 else 0.0) == pytest.approx(
            hist["cd90_dim"]["fraction"][lot["lot"]]
        )
    # lot, donor and passage travel in the files' keywords, as a lab's export would carry them
    kw = read_fcs(next((tmp_path / "L11_D01_P6").glob("*Stained.fcs"))).keywords
    assert (kw["lot"], kw["donor"], kw["passage"]) == ("L11", "D01", "6")
    # what makes the flag test fair (see simulate.py): the designed lot effects are balanced in
    # the reference window and tame after it
    u = HISTORY_LOT_EFFECT
    ref, after = u[:HISTORY_REFERENCE], u[HISTORY_REFERENCE:]
    assert abs(sum(ref)) < 1e-9 and min(ref) == -1.0 and max(ref) == 1.0
    assert max(abs(x) for x in after) <= 0.7 and abs(sum(after)) < 1e-9
    assert all(abs(a) + abs(b) <= 1.35 for a, b in zip(u, u[1:], strict=False))
    signs = "".join("+" if x > 0 else "-" for x in u)
    assert "+++" not in signs and "---" not in signs
