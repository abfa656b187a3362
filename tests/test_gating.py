"""Automatic gates against the simulator's per-event truth, and against FlowKit re-applying them."""

from __future__ import annotations

import numpy as np
import pytest
from flowkit import parse_gating_xml
from flowutils.gating import points_in_polygon as fk_points_in_polygon

from cytomsc import simulate as S
from cytomsc.fcs import read_fcs
from cytomsc.fcswrite import write_fcs
from cytomsc.gating import gate_tube, gating_strategy, points_in_polygon, write_gatingml
from cytomsc.preprocess import prepare
from cytomsc.results import GATE_ORDER

HARD = dict(debris=0.30, doublets=0.15, dead=0.10, n_events=12000, controls=())


def run(tmp_path, design, seed=5, which=0):
    tube = S.simulate_culture(design, seed)[which]
    fcs = read_fcs(tube.write(tmp_path))
    prep = prepare(fcs)
    return tube, fcs, prep, gate_tube(prep, fcs, fcs.path.name, seed=0)


@pytest.fixture(scope="module")
def hard_culture(tmp_path_factory):
    design = S.CultureDesign("hard", style="diva", layout="isct-8c", viability="DAPI",
                             anomaly=S.Anomaly(), **HARD)
    return run(tmp_path_factory.mktemp("hard"), design)


def test_removes_debris_doublets_dead_keeps_live_singles(hard_culture) -> None:
    tube, _, _, out = hard_culture
    kept = out.final
    for kind in (S.KIND_DEBRIS, S.KIND_DOUBLET, S.KIND_DEAD):
        sel = tube.kind == kind
        assert sel.sum() > 300
        assert kept[sel].mean() <= 0.05, S.KIND_NAMES[kind]
    good = tube.gated()
    assert kept[good].mean() >= 0.95
    top = tube.ranges[0] - 1
    on_scatter = (tube.events[:, tube.pnn.index("FSC-A")] >= top) | (
        tube.events[:, tube.pnn.index("SSC-A")] >= top)
    assert on_scatter.sum() > 5 and not np.any(out.masks["margin"] & on_scatter)


def test_anomaly_stretch_dropped(hard_culture) -> None:
    tube, _, _, out = hard_culture
    anomaly = tube.kind == S.KIND_ANOMALY
    assert anomaly.sum() > 500
    assert out.masks["time"][anomaly].mean() <= 0.10
    assert out.masks["time"][~anomaly].mean() >= 0.95
    step = out.steps[0]
    assert step.gate == "time" and len(step.vertices) >= 2  # the stretch splits the run


def test_time_gate_removing_a_large_share_is_warned_and_skips_are_named(hard_culture,
                                                                        tmp_path) -> None:
    """Issue 11: 20 % removed by the time gate was silent. Above TIME_WARN a warning states the
    share; a gate not applied is named with its reason (no viability dye here)."""
    from cytomsc.gating import TIME_WARN

    _, fcs, _, out = hard_culture
    step = out.steps[0]
    removed = 1 - step.count / step.parent_count
    assert removed > TIME_WARN
    assert any(f"the time gate removed {removed:.1%} of events (more than {TIME_WARN:.0%})" in w
               for w in out.warnings), out.warnings
    assert out.skipped == {}
    clean = S.CultureDesign("clean", style="accuri", layout="isct-4c", n_events=4000,
                            controls=())
    _, _, _, plain = run(tmp_path, clean)
    assert plain.skipped == {"live": "no viability dye"}
    assert not any("time gate removed" in w for w in plain.warnings)


def test_steps_and_masks_are_consistent(hard_culture) -> None:
    _, fcs, _, out = hard_culture
    assert [s.gate for s in out.steps] == list(GATE_ORDER)
    parent = fcs.n_events
    for s in out.steps:
        assert s.parent_count == parent and s.count == int(out.masks[s.gate].sum())
        assert s.histogram is not None and s.histogram.counts.shape == (64, 64)
        assert s.histogram.counts.sum() <= s.parent_count
        parent = s.count
    for a, b in zip(GATE_ORDER, GATE_ORDER[1:], strict=False):
        assert not np.any(out.masks[b] & ~out.masks[a])  # cumulative


def test_clean_culture_time_gate_keeps_everything(tmp_path) -> None:
    design = S.CultureDesign("clean", style="accuri", layout="isct-4c", n_events=12000,
                             controls=())
    tube, _, _, out = run(tmp_path, design)
    assert out.masks["time"].mean() >= 0.97
    assert out.final[tube.gated()].mean() >= 0.95


def test_flowkit_and_gatingml_give_the_same_counts(hard_culture, tmp_path) -> None:
    _, fcs, prep, out = hard_culture
    design = S.CultureDesign("other", style="diva", layout="isct-8c", viability="DAPI",
                             n_events=4000, controls=())
    _, fcs2, prep2, out2 = run(tmp_path, design, seed=9)
    gs = gating_strategy({fcs.path.name: (prep, out), fcs2.path.name: (prep2, out2)})
    xml = tmp_path / "culture" / "gates.xml"
    write_gatingml(gs, xml)
    reread = parse_gating_xml(str(xml))
    for strategy in (gs, reread):
        for prefix, f, o in (("t1_", fcs, out), ("t2_", fcs2, out2)):
            res = strategy.gate_sample(f.sample)
            for gate in GATE_ORDER:
                ours = int(o.masks[gate].sum())
                theirs = int(res.get_gate_count(prefix + gate))
                # the live gate sits on a Logicle axis: FlowKit's and ours differ by < 1e-6, so
                # an event within that distance of the cut could fall either side
                assert abs(ours - theirs) <= (2 if gate == "live" else 0), (prefix, gate)
    assert xml.read_bytes().startswith(b"<?xml")


def test_missing_time_and_height_still_gates(tmp_path) -> None:
    design = S.CultureDesign("bare", style="diva", layout="isct-8c", n_events=8000, controls=(),
                             debris=0.2, doublets=0.1)
    tube = S.simulate_culture(design, 3)[0]
    keep = [i for i, n in enumerate(tube.pnn) if n not in ("Time", "FSC-H")]
    path = tmp_path / "bare.fcs"
    write_fcs(path, tube.events[:, keep], [tube.pnn[i] for i in keep],
              [tube.pns[i] for i in keep], ranges=[tube.ranges[i] for i in keep],
              spillover=tube.spillover)
    fcs = read_fcs(path)
    out = gate_tube(prepare(fcs), fcs, "bare.fcs")
    assert [s.gate for s in out.steps] == ["margin", "cells"]
    text = " ".join(out.warnings)
    assert "no Time channel" in text and "no FSC-H or FSC-W" in text and "viability" in text
    assert out.final[tube.kind == S.KIND_DEBRIS].mean() <= 0.05
    assert out.final[tube.gated()].mean() >= 0.95
    assert np.array_equal(out.masks["singlets"], out.masks["cells"])


def test_points_in_polygon_matches_flowkit() -> None:
    rng = np.random.default_rng(0)
    pts = rng.uniform(-1, 2, (20000, 2))
    poly = [(0, 0), (1, 0.2), (1.5, 1.2), (0.4, 1.5), (0.6, 0.6), (-0.2, 0.9)]
    ours = points_in_polygon(pts[:, 0], pts[:, 1], poly)
    theirs = fk_points_in_polygon(np.array(poly, dtype=float), pts)
    assert np.array_equal(ours, theirs) and 0.1 < ours.mean() < 0.8


@pytest.mark.parametrize("rel", ["fcsparser/FACS_Diva/facs_diva_test.fcs",
                                 "FlowCal/test/Data001.fcs"])
def test_real_files_gate(corpus, rel: str) -> None:
    path = corpus / rel
    if not path.is_file():
        pytest.skip(f"{rel} not in the corpus")
    fcs = read_fcs(path)
    prep = prepare(fcs)
    out = gate_tube(prep, fcs, path.name)
    assert out.steps and set(out.masks) == set(GATE_ORDER)
    assert 0 < int(out.final.sum()) <= fcs.n_events
    res = gating_strategy({path.name: (prep, out)}).gate_sample(fcs.sample)
    for s in out.steps:
        assert abs(int(res.get_gate_count("t1_" + s.gate)) - s.count) <= 2


# ---------------------------------------------------------------------------------------------
# Hostile files (issue 12): the gates place what they can and never crash


def _written(tmp_path, name, events, pnn, pns, ranges, **keywords):
    """A float FCS file of these events; ``keywords`` ($PnG ...) patched in afterwards."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_fcs import set_keywords

    path = tmp_path / name
    write_fcs(path, events, pnn, pns, ranges=ranges)
    if keywords:
        path.write_bytes(set_keywords(path.read_bytes(), **keywords))
    return read_fcs(path)


def test_every_event_non_finite_is_a_gating_error_not_a_crash(tmp_path) -> None:
    from cytomsc.errors import CytomscError

    tube = S.simulate_culture(S.CultureDesign("nan", n_events=2000, controls=()), 1)[0]
    events = tube.events.copy()
    events[:, 0] = np.inf  # FSC-A infinite in every event
    path = tmp_path / "inf.fcs"
    raw = np.ascontiguousarray(events, dtype="<f4")
    write_fcs(path, tube.events, tube.pnn, tube.pns, ranges=tube.ranges)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - raw.nbytes] + raw.tobytes())  # DATA is last
    fcs = read_fcs(path)
    assert fcs.nonfinite == len(events)
    with pytest.raises(CytomscError, match="every event holds a NaN or infinite value"):
        gate_tube(prepare(fcs), fcs, "inf.fcs")


def test_width_without_area_or_height_places_the_singlets_gate(tmp_path) -> None:
    """A file with FSC-W but neither FSC-A nor FSC-H: no cells gate (no FSC/SSC pair), and the
    singlets gate on FSC-W drawn against it (the plot's x axis was looked up as None)."""
    tube = S.simulate_culture(S.CultureDesign("w", n_events=3000, controls=()), 2)[0]
    keep = [i for i, n in enumerate(tube.pnn) if n != "FSC-H"]
    pnn = ["FSC-W" if tube.pnn[i] == "FSC-A" else tube.pnn[i] for i in keep]
    fcs = _written(tmp_path, "w.fcs", tube.events[:, keep], pnn, [tube.pns[i] for i in keep],
                   [tube.ranges[i] for i in keep])
    out = gate_tube(prepare(fcs), fcs, "w.fcs")
    singlets = [s for s in out.steps if s.gate == "singlets"]
    assert len(singlets) == 1 and singlets[0].y == "FSC-W"
    assert "cells gate skipped" in " ".join(out.warnings)
    assert 0.5 < out.masks["singlets"].mean() <= 1.0


def test_scatter_near_the_float_maximum_gets_a_finite_outline(tmp_path) -> None:
    """$PnG = 1e-303 on FSC-A and SSC-A (FlowKit divides by the gain): scatter near 1e308,
    whose log plus the contour's margin overflowed exp()."""
    tube = S.simulate_culture(S.CultureDesign("big", n_events=3000, controls=()), 3)[0]
    fcs = _written(tmp_path, "big.fcs", tube.events, tube.pnn, tube.pns, tube.ranges,
                   P1G="1e-303", P3G="1e-303")
    out = gate_tube(prepare(fcs), fcs, "big.fcs")
    cells = next(s for s in out.steps if s.gate == "cells")
    assert np.isfinite(np.array(cells.vertices)).all()
    assert out.masks["cells"].sum() > 0.5 * out.masks["margin"].sum()


def test_area_channel_of_zeros_skips_the_singlets_gate(tmp_path) -> None:
    """FSC-A recorded as zeros (a channel the instrument did not fill): the FSC-A/FSC-H ratio
    is 0, which left no band to place (a division by zero)."""
    tube = S.simulate_culture(S.CultureDesign("zero", n_events=3000, controls=()), 4)[0]
    keep = [i for i, n in enumerate(tube.pnn) if not n.startswith("SSC")]
    events = tube.events[:, keep].copy()
    events[:, [tube.pnn[i] for i in keep].index("FSC-A")] = 0.0
    fcs = _written(tmp_path, "zero.fcs", events, [tube.pnn[i] for i in keep],
                   [tube.pns[i] for i in keep], [tube.ranges[i] for i in keep])
    out = gate_tube(prepare(fcs), fcs, "zero.fcs")
    assert "singlets" not in [s.gate for s in out.steps]
    assert "zero.fcs: FSC-A/FSC-H ratios are not positive; no singlets gate on them" in \
        out.warnings
    assert np.array_equal(out.masks["singlets"], out.masks["cells"])
