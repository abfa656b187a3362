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
    design = S.CultureDesign(
        "hard", style="diva", layout="isct-8c", viability="DAPI", anomaly=S.Anomaly(), **HARD
    )
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
        tube.events[:, tube.pnn.index("SSC-A")] >= top
    )
    assert on_scatter.sum() > 5 and not np.any(out.masks["margin"] & on_scatter)


def test_anomaly_stretch_dropped(hard_culture) -> None:
    tube, _, _, out = hard_culture
    anomaly = tube.kind == S.KIND_ANOMALY
    assert anomaly.sum() > 500
    assert out.masks["time"][anomaly].mean() <= 0.10
    assert out.masks["time"][~anomaly].mean() >= 0.95
    step = out.steps[0]
    assert step.gate == "time" and len(step.vertices) >= 2  # the stretch splits the run


def test_time_gate_removing_a_large_share_is_warned_and_skips_are_named(
    hard_culture, tmp_path
) -> None:
    """Issue 11: 20 % removed by the time gate was silent. Above TIME_WARN a warning states the
    share; a gate not applied is named with its reason (no viability dye here)."""
    from cytomsc.gating import TIME_WARN

    _, fcs, _, out = hard_culture
    step = out.steps[0]
    removed = 1 - step.count / step.parent_count
    assert removed > TIME_WARN
    assert any(
        f"the time gate removed {removed:.1%} of events (more than {TIME_WARN:.0%})" in w
        for w in out.warnings
    ), out.warnings
    assert out.skipped == {}
    clean = S.CultureDesign("clean", style="accuri", layout="isct-4c", n_events=4000, controls=())
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
    design = S.CultureDesign("clean", style="accuri", layout="isct-4c", n_events=12000, controls=())
    tube, _, _, out = run(tmp_path, design)
    assert out.masks["time"].mean() >= 0.97
    assert out.final[tube.gated()].mean() >= 0.95


def test_flowkit_and_gatingml_give_the_same_counts(hard_culture, tmp_path) -> None:
    _, fcs, prep, out = hard_culture
    design = S.CultureDesign(
        "other", style="diva", layout="isct-8c", viability="DAPI", n_events=4000, controls=()
    )
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
    design = S.CultureDesign(
        "bare", style="diva", layout="isct-8c", n_events=8000, controls=(), debris=0.2, doublets=0.1
    )
    tube = S.simulate_culture(design, 3)[0]
    keep = [i for i, n in enumerate(tube.pnn) if n not in ("Time", "FSC-H")]
    path = tmp_path / "bare.fcs"
    write_fcs(
        path,
        tube.events[:, keep],
        [tube.pnn[i] for i in keep],
        [tube.pns[i] for i in keep],
        ranges=[tube.ranges[i] for i in keep],
        spillover=tube.spillover,
    )
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


@pytest.mark.parametrize(
    "rel", ["fcsparser/FACS_Diva/facs_diva_test.fcs", "FlowCal/test/Data001.fcs"]
)
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
    path.write_bytes(data[: len(data) - raw.nbytes] + raw.tobytes())  # DATA is last
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
    fcs = _written(
        tmp_path,
        "w.fcs",
        tube.events[:, keep],
        pnn,
        [tube.pns[i] for i in keep],
        [tube.ranges[i] for i in keep],
    )
    out = gate_tube(prepare(fcs), fcs, "w.fcs")
    singlets = [s for s in out.steps if s.gate == "singlets"]
    assert len(singlets) == 1 and singlets[0].y == "FSC-W"
    assert "cells gate skipped" in " ".join(out.warnings)
    assert 0.5 < out.masks["singlets"].mean() <= 1.0


def test_scatter_near_the_float_maximum_gets_a_finite_outline(tmp_path) -> None:
    """$PnG = 1e-303 on FSC-A and SSC-A (FlowKit divides by the gain): scatter near 1e308,
    whose log plus the contour's margin overflowed exp()."""
    tube = S.simulate_culture(S.CultureDesign("big", n_events=3000, controls=()), 3)[0]
    fcs = _written(
        tmp_path,
        "big.fcs",
        tube.events,
        tube.pnn,
        tube.pns,
        tube.ranges,
        P1G="1e-303",
        P3G="1e-303",
    )
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
    fcs = _written(
        tmp_path,
        "zero.fcs",
        events,
        [tube.pnn[i] for i in keep],
        [tube.pns[i] for i in keep],
        [tube.ranges[i] for i in keep],
    )
    out = gate_tube(prepare(fcs), fcs, "zero.fcs")
    assert "singlets" not in [s.gate for s in out.steps]
    assert "zero.fcs: FSC-A/FSC-H ratios are not positive; no singlets gate on them" in out.warnings
    assert np.array_equal(out.masks["singlets"], out.masks["cells"])


# -- issue 13: speed without changing a gate ------------------------------------------------------
def test_cells_gate_quantile_in_closed_form_is_scipys() -> None:
    """The cells contour's chi-square quantile, -2 ln(1 - mass), is scipy's to the last bit."""
    import math

    from scipy.stats import chi2

    from cytomsc import gating

    assert gating.CELL_MASS == 0.995
    assert -2.0 * math.log(gating.CELL_OUTSIDE) == chi2.ppf(gating.CELL_MASS, 2)


def test_pile_bounds_without_a_sort_match_the_unique_values() -> None:
    """The margin gate's cut points from min/max passes equal those of np.unique, piles or not."""
    from cytomsc.gating import _pile_bounds

    def reference(v, top):
        finite = v[np.isfinite(v)]
        if finite.size < 10:
            return None, None, 0, 0
        u, c = np.unique(finite, return_counts=True)
        need = max(3, int(0.0005 * finite.size))
        lo = hi = None
        n_lo = n_hi = 0
        if len(u) > 1 and (c[-1] >= need or (top and u[-1] >= top - 1 and c[-1] >= 2)):
            hi, n_hi = 0.5 * (u[-1] + u[-2]), int(c[-1])
        if len(u) > 1 and c[0] >= need:
            lo, n_lo = 0.5 * (u[0] + u[1]), int(c[0])
        return lo, hi, n_lo, n_hi

    rng = np.random.default_rng(3)
    cases = [np.full(50, 7.0), np.arange(5.0), np.array([np.nan] * 20 + [1.0] * 20)]
    for k in range(60):
        v = np.round(rng.normal(5e4, 2e4, 5000), k % 3)
        v = np.clip(v, 0.0, 262143.0)  # piles at both ends
        if k % 4 == 0:
            v[:7] = np.inf
        if k % 5 == 0:
            v[v > 1e5] = 262143.0
        cases.append(v)
    for v in cases:
        for top in (None, 262144.0, 8.0):
            assert _pile_bounds(v, top) == reference(v, top)


def test_large_tube_gates_placed_from_a_subsample_and_applied_to_every_event(
    tmp_path, monkeypatch
) -> None:
    """Above FIT_MAX events the gates are placed from a seeded subsample; their masks cover
    every event, and they still remove the debris, doublets and dead cells the simulator
    marked (the same bar as on the full tube), with counts of every event."""
    from cytomsc import gating

    design = S.CultureDesign(
        "large",
        style="diva",
        layout="isct-8c",
        viability="DAPI",
        anomaly=S.Anomaly(),
        **{**HARD, "n_events": 40_000},
    )
    tube = S.simulate_culture(design, 5)[0]
    fcs = read_fcs(tube.write(tmp_path))
    prep = prepare(fcs)
    full = gate_tube(prep, fcs, "large.fcs", seed=0)
    # (a subsample of >= 15,000 events: as many time bins as the whole tube)
    monkeypatch.setattr(gating, "FIT_MAX", 16_000)
    sub = gate_tube(prep, fcs, "large.fcs", seed=0)
    again = gate_tube(prep, fcs, "large.fcs", seed=0)
    assert all(np.array_equal(sub.masks[g], again.masks[g]) for g in GATE_ORDER)  # seeded
    assert sub.final.shape == (tube.events.shape[0],)
    for kind in (S.KIND_DEBRIS, S.KIND_DOUBLET, S.KIND_DEAD):
        assert sub.final[tube.kind == kind].mean() <= 0.05, S.KIND_NAMES[kind]
    assert sub.final[tube.gated()].mean() >= 0.95
    for a, b in zip(full.steps, sub.steps, strict=True):
        assert (a.gate, a.parent_count > 0) == (b.gate, True)
        assert b.count == int(sub.masks[b.gate].sum())  # counts are of every event
        assert abs(a.percent - b.percent) < 1.5, a.gate
    assert sub.steps[2].histogram.counts.sum() <= 16_000  # plots from the subsample


def test_gates_single_threaded_whatever_blas_allows(tmp_path) -> None:
    """The gates run with one BLAS thread (their small products only contend for threads),
    so a tube gives the same masks with any thread setting of the caller."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from cytomsc import gating

    seen = []
    original = gating._ridge_fit

    def spy(x, y):
        seen.append([i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"])
        return original(x, y)

    design = S.CultureDesign("t", style="diva", layout="isct-8c", n_events=3000, controls=())
    tube = S.simulate_culture(design, 1)[0]
    fcs = read_fcs(tube.write(tmp_path))
    prep = prepare(fcs)
    gating._ridge_fit = spy
    try:
        a = gate_tube(prep, fcs, "t.fcs")
        with threadpool_limits(2):
            b = gate_tube(prep, fcs, "t.fcs")
    finally:
        gating._ridge_fit = original
    assert seen and all(n == 1 for threads in seen for n in threads)
    assert all(np.array_equal(a.masks[g], b.masks[g]) for g in GATE_ORDER)
