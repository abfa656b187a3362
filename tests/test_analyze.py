"""`cytomsc analyze` end to end on simulated cultures whose answers were set when they were made.

The validation preset spans the instrument styles (Diva float 3.1, Accuri int 3.0, MACSQuant names,
generic 16-bit), outcomes, control types (FMO, isotype, unstained, none), low event counts, 30 %
debris, 15 % doublets, 10 % dead cells, contaminants, dim positives and a cocktail channel.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cytomsc.pipeline import Options, run_batch
from cytomsc.results import GATE_ORDER
from cytomsc.simulate import write_preset

pytestmark = pytest.mark.slow  # the 28 cultures of the validation preset

KEPT = set("123456789h")  # intact live single cells (MSC populations and contaminants)
REMOVED = {"b": "debris", "d": "doublets", "x": "dead cells"}


@pytest.fixture(scope="module")
def validation(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object, dict]:
    data = tmp_path_factory.mktemp("validation")
    write_preset(data, preset="validation", seed=0)
    out = tmp_path_factory.mktemp("out")
    batch = run_batch([data], out, Options(jobs=1, pdf=False, export_events=True, cluster="none"))
    truth = json.loads((data / "truth.json").read_text())
    return data, out, batch, truth


def _by_name(batch: object) -> dict:
    return {c.culture: c for c in batch.cultures}


def test_no_errors_and_every_culture_analysed(validation: tuple) -> None:
    _, _, batch, truth = validation
    assert batch.errors == []
    assert sorted(_by_name(batch)) == sorted(c["culture"] for c in truth["cultures"])
    assert len(truth["cultures"]) >= 24


def test_every_verdict_right(validation: tuple) -> None:
    _, _, batch, truth = validation
    got = _by_name(batch)
    wrong = {
        t["culture"]: (got[t["culture"]].verdict, t["expected_verdict"])
        for t in truth["cultures"]
        if got[t["culture"]].verdict != t["expected_verdict"]
    }
    assert wrong == {}


def test_percent_positive_within_one_point(validation: tuple) -> None:
    _, _, batch, truth = validation
    got = _by_name(batch)
    off = {}
    checked = 0
    for t in truth["cultures"]:
        result = got[t["culture"]]
        if result.verdict == "inconclusive" and t["expected_verdict"] == "inconclusive":
            continue  # too few events: the truth itself is noisy
        rows = {frozenset(m.marker.split("/")): m for m in result.markers}
        for name, tm in t["markers"].items():
            m = rows.get(frozenset(name.split("/")))
            if m is None and t["panel"] == "isct-2006":
                off[(t["culture"], name)] = "not measured"
            if not tm.get("separated") or m is None:
                continue  # kit cultures' CD44 is not in the isct-2006 panel this batch uses
            expected = tm.get("by_tube", {}).get(m.tube, tm["percent_positive"])
            checked += 1
            if abs(m.percent_positive - expected) > 1.0:
                off[(t["culture"], name)] = (
                    round(m.percent_positive, 2),
                    expected,
                    m.threshold_source,
                )
    assert checked > 100
    assert off == {}


def _final_gate(names: list[str]) -> str:
    return [f"cytomsc_{g}" for g in GATE_ORDER if f"cytomsc_{g}" in names][-1]


def test_gates_remove_debris_doublets_dead_and_keep_cells(validation: tuple) -> None:
    """Per culture with enough of each kind: >= 95 % removed, >= 95 % of live singlets kept."""
    import flowkit as fk

    _, out, batch, truth = validation
    got = _by_name(batch)
    failures = {}
    for t in truth["cultures"]:
        counts = {k: [0, 0] for k in [*REMOVED, "kept"]}  # [total, passing the final gate]
        applied = {(step.tube, step.gate) for step in got[t["culture"]].gates}
        for tube in t["tubes"]:
            path = out / got[t["culture"]].output_name / "events" / tube["file"]
            sample = fk.Sample(path)
            names = list(sample.pnn_labels)
            inside = sample.get_events(source="raw")[:, names.index(_final_gate(names))] > 0.5
            labels = np.frombuffer(tube["labels"].encode(), dtype="S1").astype(str)
            for code in REMOVED:
                if code == "x" and (
                    tube["role"] == "unstained" or (tube["file"], "live") not in applied
                ):
                    continue  # no viability dye in this tube: dead cells look alive
                sel = labels == code
                counts[code][0] += int(sel.sum())
                counts[code][1] += int(inside[sel].sum())
            sel = np.isin(labels, list(KEPT))
            counts["kept"][0] += int(sel.sum())
            counts["kept"][1] += int(inside[sel].sum())
        for code, (total, passed) in counts.items():
            if total < 100:
                continue
            frac_in = passed / total
            if (code == "kept" and frac_in < 0.95) or (code != "kept" and frac_in > 0.05):
                failures[(t["culture"], REMOVED.get(code, "kept"))] = round(frac_in, 3)
    assert failures == {}


def test_gatingml_reapplied_by_flowkit_gives_same_counts(validation: tuple) -> None:
    import flowkit as fk

    data, out, batch, truth = validation
    culture = next(c for c in batch.cultures if c.culture.endswith("dead10_pass"))
    strategy = fk.parse_gating_xml(str(out / culture.output_name / "gates.xml"))
    gate_ids = {g[0] for g in strategy.get_gate_ids()}
    for f in culture.files:
        exported = fk.Sample(out / culture.output_name / "events" / Path(f.path).name)
        names = list(exported.pnn_labels)
        ev = exported.get_events(source="raw")
        sample = fk.Sample(f.path)
        res = strategy.gate_sample(sample)
        steps = [s for s in culture.gates if s.tube == Path(f.path).name]
        assert steps
        for step in steps:
            ids = [g for g in gate_ids if g.endswith(f"_{step.gate}")]
            counts = [res.get_gate_count(g) for g in ids]
            assert step.count in counts, (f.path, step.gate, step.count, counts)
            assert int((ev[:, names.index(f"cytomsc_{step.gate}")] > 0.5).sum()) == step.count


def test_summary_files(validation: tuple) -> None:
    _, out, batch, _ = validation
    summary = json.loads((out / "summary.json").read_text())
    assert summary["schema"].startswith("cytomsc.summary/")
    assert len(summary["cultures"]) == len(batch.cultures)
    first = summary["cultures"][0]
    for key in (
        "culture",
        "verdict",
        "borderline",
        "files",
        "events",
        "markers",
        "joint_phenotype_percent",
        "warnings",
    ):
        assert key in first
    assert set(first["events"]) >= {"total", "time_ok", "cells", "singlets", "live"}
    m = first["markers"][0]
    for key in (
        "marker",
        "channel",
        "expect",
        "limit",
        "percent_positive",
        "ci95",
        "threshold",
        "threshold_source",
        "events",
        "pass",
    ):
        assert key in m
    rows = (out / "summary.csv").read_text().splitlines()
    assert len(rows) == 1 + sum(len(c.markers) for c in batch.cultures)


def test_cocktail_is_one_row_and_joint_phenotype(validation: tuple) -> None:
    _, _, batch, truth = validation
    got = _by_name(batch)
    kit = got[next(t["culture"] for t in truth["cultures"] if t["culture"].endswith("kit_pass"))]
    cocktail = [m for m in kit.markers if "/" in m.marker]
    assert len(cocktail) == 1 and cocktail[0].expect == "negative"
    joint = {t["culture"]: t.get("joint_phenotype_percent") for t in truth["cultures"]}
    checked = 0
    for name, expected in joint.items():
        c = got[name]
        if expected is None or c.joint_phenotype_percent is None or c.verdict == "inconclusive":
            continue
        checked += 1
        # Each of the 8 control thresholds lets 0.5 % of its negatives through, so the joint
        # phenotype reads up to ~2 points low; that bias is documented in the README.
        assert abs(c.joint_phenotype_percent - expected) <= 2.0, name
    assert checked >= 5


def test_threshold_sources_follow_control_priority(validation: tuple) -> None:
    _, _, batch, _ = validation
    got = _by_name(batch)
    fmo = next(c for n, c in got.items() if n.endswith("fmo_pass"))
    sources = {m.marker: m.threshold_source for m in fmo.markers}
    assert sources["CD73"] == sources["CD90"] == sources["CD105"] == "fmo"
    assert sources["CD45"] == "auto"  # this culture has FMO tubes only: none fits CD45
    none = next(c for n, c in got.items() if n.endswith("no_control_pass"))
    assert {m.threshold_source for m in none.markers} == {"auto"}
    assert any("no control" in w for w in none.warnings)
    unst = next(c for n, c in got.items() if n.endswith("unstained_only_pass"))
    assert {m.threshold_source for m in unst.markers} == {"unstained"}
