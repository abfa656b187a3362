"""Analyse one culture (the stages in order), and a batch of cultures.

One culture is one trip in one direction: read the tubes -> compensate and transform (one logicle
scale per channel, shared by the culture's tubes so that controls and stained tubes compare) ->
automatic gates per tube -> thresholds from the best control and % positive -> the panel's verdict
-> heterogeneity of cultures that pass -> GatingML, events, PDF. Nothing here draws or formats; the
report draws what this returns.

A batch is many independent trips (a process pool when ``jobs > 1``), gathered in input order,
so the result does not depend on the number of processes. One bad file or culture never stops
the batch: it becomes an entry of ``errors`` and the rest goes on.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
import time
import traceback
import warnings as pywarnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from . import __version__, record
from .criteria import WARN_EVENTS, culture_verdict, judge_marker
from .dates import iso_date
from .errors import CytomscError
from .output import BATCH_FILES, OutputDir, RunFolder, interrupts_held
from .results import (
    CSV_COLUMNS,
    GATE_ORDER,
    BatchResult,
    CultureResult,
    FileInfo,
    MarkerHistogram,
    MarkerResult,
    csv_rows,
    csv_text,
    culture_rows,
    to_json,
)

MIN_CONTROL_EVENTS = 100  # a control with fewer gated events cannot place a 99.5th percentile
CLUSTER_SUBSAMPLE_JOINT = 5_000  # events per culture sent to the batch-wide clustering
CLUSTER_MAX_EVENTS = 200_000  # cells of one tube clustered; a seeded subsample above it


@dataclass
class Options:
    """Every analysis parameter; all of them go to summary.json and the PDF audit page."""

    panel: str = "isct-2006"
    comp: str | None = None  # None: the file's spillover; "none": off; else a CSV path
    control_percentile: float = 99.5
    seed: int = 0
    jobs: int = 1
    cluster: str = "pass"  # "pass" | "all" | "none"
    export_events: bool = False
    pdf: bool = True
    data_set: int = 0
    channel_map: dict[str, str] = field(default_factory=dict)
    manifest: str | None = None
    gates: str | None = None  # the lab's gates: a FlowJo 10 workspace or GatingML (workspace.py)
    gate_path: str | None = None  # the analysed population in it (default: deepest common chain)
    comp_label: str | None = None  # what ``comp`` is when cytomsc wrote it (single-stain controls)
    comp_notes: tuple[str, ...] = ()  # warnings about that matrix, repeated in every culture
    debug: bool = False
    # release metadata for every culture without its own (manifest column, else $OP / $COM)
    operator: str = ""
    comment: str = ""

    def as_parameters(self) -> dict[str, Any]:
        """The parameters that change results (not jobs or debug: they must not)."""
        return {
            "panel": self.panel, "comp": self.comp_label or self.comp or "file",
            "control_percentile": self.control_percentile, "seed": self.seed,
            "cluster": self.cluster, "data_set": self.data_set,
            "channel_map": dict(sorted(self.channel_map.items())), "manifest": self.manifest,
            "gates": self.gates, "gate_path": self.gate_path,
        }


@dataclass
class _Tube:
    """A tube read and gated: the working state of one culture's analysis."""

    name: str
    role: str
    fcs: Any  # FcsData
    prep: Any = None  # Prepared
    gating: Any = None  # GatingOutcome
    matching: Any = None  # Matching (stained tubes)
    final: np.ndarray | None = None  # events kept by every gate
    channel_map: dict[str, str] = field(default_factory=dict)  # from the manifest

    def column(self, channel: str) -> int:
        return self.prep.channels.index(channel)


def culture_seed(seed: int, culture: str) -> int:
    """A per-culture seed that depends only on the run seed and the culture's name."""
    digest = hashlib.sha256(f"{seed}:{culture}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _funnel(tube: _Tube) -> dict[str, int]:
    """total, time_ok, margin_ok, cells, singlets, live; a skipped gate keeps the count."""
    n = int(tube.prep.compensated.shape[0])
    out = {"total": n}
    last = n
    keys = {"time": "time_ok", "margin": "margin_ok"}
    for gate in GATE_ORDER:
        if gate in tube.gating.masks:
            last = int(np.count_nonzero(tube.gating.masks[gate]))
        out[keys.get(gate, gate)] = last
    return out


def _read_tubes(spec: Any, opts: Options, errors: list[dict[str, str]],
                warnings: list[str]) -> tuple[list[_Tube], list[FileInfo]]:
    from .fcs import read_fcs, sha256_file

    tubes: list[_Tube] = []
    files: list[FileInfo] = []
    for t in spec.tubes:
        try:
            fcs = read_fcs(t.path, data_set=opts.data_set)
        except CytomscError as err:
            errors.append({"path": str(t.path), "message": err.reason})
            continue
        kw = fcs.keywords
        files.append(FileInfo(
            path=str(t.path), role=t.role, sha256=sha256_file(t.path),
            events=int(fcs.events.shape[0]), cytometer=kw.get("cyt"),
            date=iso_date(kw.get("date")) or None,
            data_set=fcs.data_set,
        ))
        warnings.extend(f"{Path(t.path).name}: {w}" for w in fcs.warnings)
        # Tubes are keyed by name (gates.xml, calls, events); a manifest may list two files of
        # the same name from different folders, so names are made unique here, once.
        name = Path(t.path).name
        stem, suffix = os.path.splitext(name)
        taken = {u.name for u in tubes}
        i = 2
        while name in taken:
            name = f"{stem}-{i}{suffix}"
            i += 1
        tubes.append(_Tube(name=name, role=t.role, fcs=fcs, channel_map=dict(t.channel_map)))
    return tubes, files


def _prepare_and_gate(tubes: list[_Tube], opts: Options, seed: int, warnings: list[str],
                      withheld: list[str], manual: dict[str, Any] | None = None) -> None:
    """Compensate, transform with one scale per channel for the culture, gate every tube.

    A file whose own spillover matrix cannot be used (names detectors it lacks, singular) is
    analysed uncompensated so that its gates and funnel are still shown, and the reason goes to
    ``withheld``: uncompensated percentages must not become a verdict. A matrix the user gave with
    ``--comp`` that does not fit a stained tube is an error (it is theirs to fix); a control it
    does not fit is left out, with a warning, and the culture goes on with its other controls."""
    from .gating import GatingOutcome, gate_tube
    from .preprocess import prepare

    comp = opts.comp
    shared: dict[str, Any] = {}
    # The stained tubes set the scale (they span the positive range); the controls reuse it.
    for tube in sorted(tubes, key=lambda t: t.role != "stained"):
        try:
            tube.prep = prepare(tube.fcs, comp=comp, logicle_params=shared or None)
        except CytomscError as err:
            if comp is not None and tube.role == "stained":
                raise CytomscError(f"--comp {Path(comp).name}: {err.reason}",
                                   tube.fcs.path) from err
            if comp is not None:
                warnings.append(f"{tube.name}: left out, the --comp matrix does not fit it "
                                f"({err.reason})")
                tubes.remove(tube)
                continue
            withheld.append(f"{tube.name}: {err.reason}; analysed without compensation, so no "
                            "verdict is given")
            tube.prep = prepare(tube.fcs, comp="none", logicle_params=shared or None)
        for ch, p in tube.prep.logicle.items():
            shared.setdefault(ch, p)
        warnings.extend(f"{tube.name}: {w}" for w in tube.prep.warnings)
        n = tube.prep.compensated.shape[0]
        try:
            tube.gating = manual[tube.name] if manual is not None else gate_tube(
                tube.prep, tube.fcs, tube.name, seed=seed)
        except CytomscError as err:
            # A tube whose events leave no cells to gate (all saturated, all debris) is kept
            # with nothing inside its gates: its culture becomes inconclusive, not an error.
            none = np.zeros(n, dtype=bool)
            tube.gating = GatingOutcome(
                masks={g: none for g in GATE_ORDER}, steps=[], specs=[],
                warnings=[f"no cells could be gated ({err.reason}); every event was excluded"])
        finite = np.isfinite(tube.prep.compensated).all(axis=1)
        tube.final = tube.gating.final & finite
        warnings.extend(w if w.startswith(f"{tube.name}:") else f"{tube.name}: {w}"
                        for w in tube.gating.warnings)


def _has_live_gate(tube: _Tube) -> bool:
    return any(step.gate == "live" for step in tube.gating.steps)


def _pick_control(tubes: list[_Tube], markers: tuple[str, ...], channel: str
                  ) -> tuple[_Tube | None, str | None]:
    """The best control of the culture for a marker: its FMO, else isotype, else unstained."""
    for kind in ("fmo", "isotype", "unstained"):
        for t in tubes:
            if channel not in t.prep.channels or int(t.final.sum()) < MIN_CONTROL_EVENTS:
                continue
            if kind == "fmo" and t.role.startswith("fmo:") and t.role[4:] in markers:
                return t, "fmo"
            if kind != "fmo" and t.role == kind:
                return t, kind
    return None, None


def _measure(stained: _Tube, assignment: Any, tubes: list[_Tube], opts: Options,
             warnings: list[str]) -> tuple[MarkerResult, np.ndarray]:
    """% positive of one channel of a stained tube; returns the result and the per-event call."""
    from .positivity import (
        auto_threshold_display,
        control_threshold,
        matched_threshold,
        percent_above,
    )
    from .preprocess import axis_ticks, logicle, logicle_inverse

    crit = assignment.criterion
    ch = assignment.channel
    col = stained.column(ch)
    values = stained.prep.compensated[stained.final, col]
    display = stained.prep.display[stained.final, col]
    params = stained.prep.logicle.get(ch)
    if values.size == 0:
        warnings.append(f"{assignment.label} ({ch}): no cells left in {stained.name} after "
                        "gating: not measured")
        return (MarkerResult(marker=assignment.label, channel=ch, expect=crit.expect,
                             limit=crit.limit, tube=stained.name),
                np.zeros(stained.prep.compensated.shape[0], dtype=bool))
    control, source = _pick_control(tubes, assignment.markers, ch)
    control_display = None
    ratio = 1.0
    if control is not None and _has_live_gate(stained) != _has_live_gate(control):
        with_gate, without = (stained, control) if _has_live_gate(stained) else (control, stained)
        warnings.append(
            f"{with_gate.name} has a viability gate and {without.name} has none (no dye in it): "
            "dead cells are excluded from one tube only, which shifts the thresholds of the "
            "markers read against it")
    if control is not None:
        ccol = control.column(ch)
        control_values = control.prep.compensated[control.final, ccol]
        if source == "fmo":  # an FMO carries the other dyes' spreading already
            threshold = control_threshold(control_values, opts.control_percentile)
        else:
            threshold, ratio, moved = matched_threshold(
                control_values, values, opts.control_percentile, shift=source == "unstained")
            if ratio > 1.0:
                warnings.append(
                    f"{assignment.label} ({ch}): the stained tube's negative cells spread "
                    f"{ratio:.1f}x wider than in the {source} control (spillover spreading "
                    "from bright dyes in other channels); the threshold was widened to match. "
                    "An FMO control would measure this directly."
                )
            if moved > 0:
                warnings.append(
                    f"{assignment.label} ({ch}): the stained tube's negative cells sit higher "
                    "than the unstained control's (background binding of the antibodies); the "
                    "threshold was moved up with them. An isotype or FMO control measures this "
                    "directly."
                )
        control_display = control.prep.display[control.final, ccol]
    else:
        source = "auto"
        t_display = auto_threshold_display(display)
        threshold = float(logicle_inverse(np.array([t_display]), params)[0]) if params \
            else t_display
        warnings.append(
            f"{assignment.label} ({ch}): no control tube for this channel; the threshold was "
            "placed automatically at the valley of the stained distribution"
        )
    pct, ci, n = percent_above(values, threshold)
    hist = None
    if params is not None and display.size:
        edges = np.linspace(min(0.0, float(np.min(display))), max(1.0, float(np.max(display))), 129)
        hist = MarkerHistogram(
            edges=edges, stained=np.histogram(display, edges)[0],
            control=None if control_display is None else np.histogram(control_display, edges)[0],
            control_role=control.role if control is not None else None,
            threshold=float(logicle(np.array([threshold]), params)[0]),
            ticks=axis_ticks(params),
        )
    result = MarkerResult(
        marker=assignment.label, channel=ch, expect=crit.expect, limit=crit.limit,
        percent_positive=pct, ci95=ci, threshold=threshold, threshold_source=source, events=n,
        control_spread_ratio=ratio, tube=stained.name, histogram=hist,
    )
    judge_marker(result)
    above = stained.prep.compensated[:, col] > threshold
    return result, above


def _cluster_tube(stained: list[_Tube]) -> tuple[_Tube, list[Any], str] | None:
    """The stained tube whose cells are clustered, with the markers clustered in it.

    Every positive and informative marker counts (a lab's MSC subset markers, CD146, CD271,
    SSEA-4, are informative markers of its panel), unless its criterion says ``cluster = false``;
    a split panel or a kit is clustered in the tube that carries most of them, on that tube's
    own channels (a marker read in another tube for its % positive is measured here too).
    Negative markers stay out: in a culture that passes they are background, and contaminants
    are the criteria's business. A tube with negative markers only is clustered on them rather
    than on scatter alone. Returns None when no stained tube has a marker channel."""
    best: tuple[int, int, _Tube, list[Any]] | None = None
    for i, tube in enumerate(stained):
        if tube.matching is None:
            continue
        marks = [a for a in tube.matching.assignments
                 if a.criterion.expect in ("positive", "informative") and a.criterion.cluster]
        key = (len(marks), -i)
        if marks and (best is None or key > best[:2]):
            best = (key[0], key[1], tube, marks)
    if best is not None:
        return best[2], best[3], "positive and informative markers"
    for tube in stained:
        if tube.matching is not None and tube.matching.assignments:
            return tube, list(tube.matching.assignments), "negative markers (the tube has no " \
                "positive or informative marker)"
    return None


def _cluster(stained: _Tube, assignments: list[Any], seed: int,
             thresholds: dict[str, float]) -> tuple[Any, np.ndarray | None, np.ndarray | None]:
    """Heterogeneity of the tube's live single cells: its clustered markers on the Logicle
    scale plus log10 FSC-A and SSC-A.

    Size and granularity are part of an MSC's phenotype (large flat cells vs small rapidly
    self-renewing ones), so scatter enters the clustering next to the markers. Each marker's
    threshold (raw units, from its control or placed automatically) marks the top of its
    negative region: populations that differ only below it (the spread of negative cells after
    compensation) are not told apart (``populations.PopulationFinder``)."""
    from .channels import find_scatter
    from .heterogeneity import ChannelAxes, describe_heterogeneity
    from .positivity import auto_threshold_display
    from .preprocess import axis_ticks, logicle

    pnn = stained.prep.channels
    scatter = find_scatter(pnn, [c.pns for c in stained.fcs.channels])
    channels = list(dict.fromkeys(a.channel for a in assignments))
    names = {a.channel: a.label for a in assignments}
    logged = []
    for ch, word in ((scatter.fsc, "FSC"), (scatter.ssc, "SSC")):
        if ch and ch not in channels:
            channels.append(ch)
            names[ch] = word
            logged.append(len(channels) - 1)
    if not channels:
        return None, None, None
    cols = [stained.column(c) for c in channels]
    # Above CLUSTER_MAX_EVENTS cells, a seeded subsample is clustered (population fractions to
    # +-0.2 %; memory bounded for 10^6-10^7-event files); the rest get population 0.
    idx = np.flatnonzero(stained.final)
    if idx.size > CLUSTER_MAX_EVENTS:
        pick = np.random.default_rng([seed, 2]).choice(idx.size, CLUSTER_MAX_EVENTS, replace=False)
        idx = idx[np.sort(pick)]
    shown = stained.prep.display[np.ix_(idx, cols)]  # Logicle markers, linear scatter
    X = shown.copy()
    raw = stained.prep.compensated[np.ix_(idx, cols)]
    if logged:
        X[:, logged] = np.log10(np.maximum(raw[:, logged], 1.0))
    if X.shape[0] < 100:
        return None, None, None
    ceilings: list[float] = []
    axes: dict[str, ChannelAxes] = {}
    for j, ch in enumerate(channels):
        params = stained.prep.logicle.get(ch)
        if j in logged or params is None:
            ceilings.append(-np.inf)
            lo, hi = np.percentile(shown[:, j], [0.5, 99.5])
            axes[ch] = ChannelAxes(float(lo), float(hi), [])
            continue
        if ch in thresholds:
            ceilings.append(float(logicle(np.array([thresholds[ch]]), params)[0]))
        else:
            ceilings.append(float(auto_threshold_display(X[:, j])))
        axes[ch] = ChannelAxes(min(0.0, float(np.percentile(X[:, j], 0.1))), 1.0,
                               axis_ticks(params))
    het, labels = describe_heterogeneity(X, channels, names, raw, seed=seed, display=shown,
                                         axes=axes, negative_ceilings=tuple(ceilings))
    het.names = {ch: names[ch] for ch in channels}
    population = np.zeros(stained.prep.compensated.shape[0], dtype=np.int32)
    population[idx] = labels
    rng = np.random.default_rng(seed)
    take = rng.choice(X.shape[0], size=min(CLUSTER_SUBSAMPLE_JOINT, X.shape[0]), replace=False)
    return het, population, X[np.sort(take)]


def _export_events(out: OutputDir, folder: str, tube: _Tube, population: np.ndarray | None,
                   sha256: str | None) -> None:
    """The tube's original channels as stored, plus one 0/1 channel per gate (and the population
    id); see ``export.py`` for what survives the round trip."""
    from .export import AddedChannel, export_events

    added = [AddedChannel(f"cytomsc_{gate}", tube.gating.masks[gate].astype(np.uint8))
             for gate in GATE_ORDER
             if gate in tube.gating.masks and gate not in tube.gating.skipped]
    if population is not None:
        added.append(AddedChannel("cytomsc_population", population.astype(np.int64)))
    name = tube.name  # unique within the culture (see _read_tubes)
    if not name.lower().endswith(".fcs"):
        name += ".fcs"
    own = {"CYTOMSC_VERSION": __version__, "CYTOMSC_SOURCE": Path(tube.fcs.path).name}
    if sha256:
        own["CYTOMSC_SOURCE_SHA256"] = sha256
    with out.atomic(folder, "events", name) as tmp:
        export_events(tmp, tube.fcs, added, own)


def _match_markers(stained: list[_Tube], panel: Any, opts: Options, errors: list[dict[str, str]],
                   warnings: list[str]) -> tuple[dict[str, tuple[_Tube, Any]], list[str]]:
    """Markers to channels in every stained tube. A marker is read in the first tube that has it
    (a 4-colour instrument splits the panel over tubes); a criterion is missing when no stained
    tube has it. A tube whose channels match one marker twice is an error, the others go on."""
    from .errors import PanelError

    chosen: dict[str, tuple[_Tube, Any]] = {}
    for tube in stained:
        try:
            tube.matching = panel.match([(c.pnn, c.pns) for c in tube.fcs.channels],
                                        {**opts.channel_map, **tube.channel_map},
                                        source=tube.fcs.path)
        except PanelError as err:
            errors.append({"path": str(tube.fcs.path), "message": err.reason})
            continue
        warnings.extend(f"{tube.name}: {w}" for w in tube.matching.warnings)
        for a in tube.matching.assignments:
            chosen.setdefault(a.label, (tube, a))
    # Missing is decided over every stained tube's channels together: a cocktail split over two
    # tubes is covered only when its markers are, whichever tube carries them.
    missing = sorted(panel.missing([a for _, a in chosen.values()]))
    return chosen, missing


def analyze_culture(spec: Any, panel: Any, opts: Options, out_root: str, folder: str,
                    batch_header: BatchResult | None = None, run_info: dict | None = None
                    ) -> tuple[CultureResult, list[dict[str, str]], dict[str, str],
                               np.ndarray | None]:
    """Analyse one culture; returns its result, file errors, the files written (name -> SHA-256),
    and a subsample of its clustered events for the batch-wide clustering. ``folder`` is the
    culture's sanitized, unique output name."""
    out = OutputDir(Path(out_root))
    errors: list[dict[str, str]] = []
    warnings: list[str] = [f"compensation from single stains: {n}" for n in opts.comp_notes]
    seed = culture_seed(opts.seed, spec.name)
    tubes, files = _read_tubes(spec, opts, errors, warnings)
    result = CultureResult(culture=spec.name, verdict="inconclusive", borderline=False,
                           files=files, events={"total": 0}, markers=[], warnings=warnings,
                           metadata=dict(spec.metadata), output_name=folder)
    if files:
        result.metadata.setdefault("cytometer", files[0].cytometer or "")
        result.metadata.setdefault("date", files[0].date or "")
    result.metadata = record.release_metadata(result.metadata, [t.fcs.keywords for t in tubes],
                                              opts.operator, opts.comment)
    stained = [t for t in tubes if t.role == "stained"]
    if not stained:
        warnings.append("no stained tube could be read (only controls): nothing to judge")
        return result, errors, out.hashes, None

    withheld: list[str] = []
    manual = None
    if opts.gates:
        manual = _lab_gates(tubes, files, opts, errors, result)
        stained = [t for t in tubes if t.role == "stained"]
        if not stained:
            warnings.append(f"no stained tube has gates in {Path(opts.gates).name}: nothing to "
                            "judge")
            return result, errors, out.hashes, None
    _prepare_and_gate(tubes, opts, seed, warnings, withheld, manual)

    chosen, missing = _match_markers(stained, panel, opts, errors, warnings)
    result.missing_markers = missing

    calls: dict[str, dict[str, np.ndarray]] = {}
    for label, (tube, a) in chosen.items():
        m, above = _measure(tube, a, tubes, opts, warnings)
        result.markers.append(m)
        calls.setdefault(tube.name, {})[label] = above
    order = {c.name: i for i, c in enumerate(panel.criteria)}
    result.markers.sort(key=lambda m: (order.get(chosen[m.marker][1].criterion.name, 99), m.marker))

    main = max((t for t in stained if t.matching is not None),
               key=lambda t: len(t.matching.assignments), default=stained[0])
    result.events = _funnel(main)
    used = sorted({chosen[m.marker][0].name for m in result.markers}) or [main.name]
    gated = [int(t.final.sum()) for t in stained if t.name in used]
    for t in stained:
        if t.name in used and int(t.final.sum()) < WARN_EVENTS:
            warnings.append(f"{t.name}: only {int(t.final.sum()):,} cells left after gating "
                            f"(fewer than {WARN_EVENTS:,}): percentages are less precise")
    if missing:
        warnings.append("markers in no channel: " + ", ".join(missing))
    result.verdict, result.borderline, reasons = culture_verdict(result.markers, missing, gated)
    warnings.extend(reasons)
    if withheld:
        result.verdict = "inconclusive"
        result.borderline = False
        warnings.extend(withheld)
    _joint_phenotype(result, main, calls.get(main.name, {}), chosen, panel)

    population = None
    joint_sample = None
    clustered: _Tube | None = None
    if opts.cluster == "all" or (opts.cluster == "pass" and result.verdict == "pass"):
        pick = _cluster_tube(stained)
        het = None
        if pick is not None:
            clustered, assignments, what = pick
            thresholds = {m.channel: m.threshold for m in result.markers
                          if m.tube == clustered.name and m.threshold is not None}
            try:
                het, population, joint_sample = _cluster(clustered, assignments, seed,
                                                         thresholds)
            except CytomscError as err:  # events the clustering cannot take (scatter ~1e30)
                warnings.append(f"{clustered.name}: heterogeneity not computed ({err.reason})")
            if het is not None:
                het.tube = clustered.name
                if what.startswith("negative"):
                    warnings.append(f"{clustered.name}: clustered on its {what}")
        result.heterogeneity = het

    # stained tubes first (the one the markers were read in first of all), then the controls
    ordered = sorted(tubes, key=lambda t: (t.role != "stained", t is not main))
    result.gates = [s for t in ordered for s in t.gating.steps]
    result.funnels = [record.tube_funnel(t.name, t.role, t.prep.compensated.shape[0],
                                         t.gating.masks, t.gating.skipped) for t in ordered]
    result.compensation = [record.compensation_used(t.name, t.prep.spill, opts.comp,
                                                    t.fcs.spillover, t.fcs.keywords)
                           for t in ordered]
    # each said once, in order; a message every tube shares said once for them all
    result.warnings[:] = record.merge_tube_warnings(list(dict.fromkeys(result.warnings)),
                                                    [t.name for t in tubes])
    _write_culture(out, folder, result, tubes, clustered or main, population, opts,
                   batch_header, run_info)
    return result, errors, out.hashes, joint_sample


def _write_culture(out: OutputDir, folder: str, result: CultureResult, tubes: list[_Tube],
                   main: _Tube, population: np.ndarray | None, opts: Options,
                   batch_header: BatchResult | None, run_info: dict | None) -> None:
    """gates.xml, the exported events and the culture's PDF, each written atomically. ``main``
    is the tube whose exported events carry ``population`` (the tube clustered)."""
    from .gating import gating_strategy, write_gatingml

    if any(t.gating.specs for t in tubes):
        strategy = gating_strategy({t.name: (t.prep, t.gating) for t in tubes})
        with out.atomic(folder, "gates.xml") as tmp:
            write_gatingml(strategy, tmp)
    elif not opts.gates:  # with --gates the lab's own file holds the gates
        result.warnings.append("no gate could be placed in any tube (no scatter or time "
                               "channels): every event was counted and no gates.xml was written")
    if opts.export_events:
        hashes = {f.path: f.sha256 for f in result.files}
        for t in tubes:
            _export_events(out, folder, t, population if t is main else None,
                           hashes.get(str(t.fcs.path)))
    result.outputs = dict(sorted(out.hashes.items()))  # for the PDF's audit page
    if opts.pdf and batch_header is not None:
        from .report.pdf import write_culture_pdf

        with out.atomic(f"{folder}.pdf") as tmp:
            write_culture_pdf(result, batch_header, tmp, run_info or {})


def _lab_gates(tubes: list[_Tube], files: list[FileInfo], opts: Options,
               errors: list[dict[str, str]], result: CultureResult) -> dict[str, Any]:
    """--gates: the lab's gates for every tube (workspace.py); a tube they lack is an error
    entry and leaves the culture, as an unreadable file does."""
    from .workspace import gate_culture, load_lab_gates

    lab = load_lab_gates(opts.gates)
    manual, path, errs = gate_culture(lab, [(t.name, t.fcs) for t in tubes], opts.gate_path)
    errors.extend(errs)
    lost = {str(t.fcs.path) for t in tubes if t.name not in manual}
    tubes[:] = [t for t in tubes if t.name in manual]
    files[:] = [f for f in files if f.path not in lost]
    result.metadata["gating"] = f"manual: {lab.name}, analysed population {path}"
    return manual


def _joint_phenotype(result: CultureResult, main: _Tube, calls: dict[str, np.ndarray],
                     chosen: dict[str, tuple[_Tube, Any]], panel: Any) -> None:
    """% of cells positive for every positive marker and negative for every negative one at once,
    when one tube holds every judged criterion (single-marker % overstate purity)."""
    from .positivity import percent_above

    judged = [m for m in result.markers if m.expect in ("positive", "negative")]
    if not judged or result.missing_markers:
        return
    if any(chosen[m.marker][0] is not main for m in judged):
        return
    ok = main.final.copy()
    for m in judged:
        above = calls[m.marker]
        ok &= above if m.expect == "positive" else ~above
    n = int(main.final.sum())
    pct, ci, _ = percent_above(ok[main.final].astype(float), 0.5)
    if n:
        result.joint_phenotype_percent = pct
        result.joint_phenotype_ci95 = ci


def _run_one(args: tuple) -> tuple:
    """Process-pool entry: one culture, never raising (a failure becomes an error entry)."""
    spec, panel, opts, out_root, folder, header, run_info = args
    try:
        # Library warnings (numpy on degenerate bins, scikit-learn convergence) are noise to a lab
        # scientist; what matters is reported in words in the culture's own warnings.
        with pywarnings.catch_warnings(), np.errstate(all="ignore"):
            if not opts.debug:
                pywarnings.simplefilter("ignore")
            return analyze_culture(spec, panel, opts, out_root, folder, header, run_info)
    except CytomscError as err:
        if opts.debug:
            raise
        return None, [{"path": err.path or spec.name, "message": err.reason}], {}, None
    except OSError as err:  # the output folder filled up or became unwritable during the run
        if opts.debug:
            raise
        msg = f"cannot write the results of culture {spec.name} ({err.strerror or err})"
        return None, [{"path": spec.name, "message": " ".join(msg.split())}], {}, None
    except Exception as err:  # noqa: BLE001 - one culture's bug must not stop the batch
        if opts.debug:
            raise
        where = traceback.extract_tb(err.__traceback__)[-1]
        msg = f"internal error analysing culture {spec.name}: {type(err).__name__}: {err} " \
              f"({Path(where.filename).name}:{where.lineno})"
        return None, [{"path": spec.name, "message": " ".join(msg.split())}], {}, None


class Interrupted(Exception):
    """Ctrl-C stopped the batch. ``committed``: the results had already been moved into place
    (the interrupt came during the last milliseconds); otherwise OUT is as it was."""

    def __init__(self, committed: bool) -> None:
        super().__init__("interrupted")
        self.committed = committed


@dataclass
class CultureDone:
    """One culture finished: what the console shows as cultures finish (in any order)."""

    index: int  # position in the batch (input order)
    total: int
    culture: str
    result: CultureResult | None  # None: nothing analysed (see errors)
    errors: list[dict[str, str]]


class Listener(Protocol):
    """What a batch tells its caller while it runs (the CLI prints it; nothing here prints)."""

    def started(self, total: int) -> None: ...

    def note(self, message: str) -> None: ...

    def finished(self, done: CultureDone) -> None: ...

    def tick(self) -> None: ...  # about once a second while workers run (elapsed time)


def run_batch(inputs: list[Path], out_dir: Path, opts: Options, command: str = "",
              progress: Listener | None = None, overwrite: bool = False) -> BatchResult:
    """Analyse every culture found in ``inputs`` and write the batch outputs into ``out_dir``.

    The run locks ``out_dir``, writes into a staging folder inside it and moves the results into
    place only when the batch is complete (``output.RunFolder``). Results of cultures that are
    not in this run are removed only with ``overwrite``; otherwise the run refuses before any
    work. Ctrl-C raises ``Interrupted`` once the workers are stopped and the staging folder is
    gone."""
    folder = RunFolder(out_dir)
    previous_handler = None
    try:
        with folder:
            try:
                return _batch(folder, inputs, out_dir, opts, command, progress, overwrite)
            except KeyboardInterrupt:
                previous_handler = _ignore_interrupts()  # a 2nd Ctrl-C must not break clean-up
                raise
    except KeyboardInterrupt:
        raise Interrupted(folder.committed) from None
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)


def _batch(folder: RunFolder, inputs: list[Path], out_dir: Path, opts: Options, command: str,
           progress: Listener | None, overwrite: bool) -> BatchResult:
    from .layout import discover, safe_name
    from .panel import load_panel

    panel = load_panel(opts.panel)
    manifest = Path(opts.manifest) if opts.manifest else None
    specs, errors = discover(inputs, manifest=manifest, panel=panel, output=folder.root,
                             output_files=folder.owned_inputs())
    out = folder.staging()
    specs, opts, compensation = _single_stains(specs, out, opts, errors)
    taken: set[str] = set(BATCH_FILES)
    folders = []
    for spec in specs:
        folders.append(safe_name(spec.name, taken))
        taken.add(folders[-1])
    others = folder.other_cultures(set(folders))
    if others and not overwrite:
        raise CytomscError(f"holds the results of {len(others)} culture(s) not in this run "
                           f"({_names(others)}): pass --overwrite to remove them, or choose "
                           "another output folder", out_dir)
    if others and progress is not None:
        n = sum(len(v) for v in others.values())
        progress.note(f"removing {n} file(s) of {len(others)} culture(s) not in this run: "
                      f"{_names(others)}")
    planned = ["summary.json", "summary.csv", *(f"{f}/gates.xml" for f in folders)]
    if opts.pdf:
        planned += ["overview.pdf", *(f"{f}.pdf" for f in folders)]
    folder.check_free(planned)
    header = BatchResult(
        cytomsc_version=__version__,
        panel={"id": panel.id, "name": panel.name, "reference": panel.reference,
               "version": panel.version, "sha256": panel.sha256},
        parameters=opts.as_parameters(), cultures=[],
    )
    run_info = {"command": command, "started": datetime.now(timezone.utc).isoformat(
        timespec="seconds"), "seed": opts.seed, "parameters": opts.as_parameters(),
        "versions": record.software_versions()}
    jobs_args = [(s, panel, opts, str(out.root), f, header, run_info)
                 for s, f in zip(specs, folders, strict=True)]
    outcomes: list[tuple] = [(None, [], {}, None)] * len(specs)

    def finished(i: int, outcome: tuple) -> None:
        outcomes[i] = outcome
        if progress is not None:
            progress.finished(CultureDone(i, len(specs), specs[i].name, outcome[0], outcome[1]))

    if progress is not None:
        progress.started(len(specs))
    if opts.jobs > 1 and len(specs) > 1:
        _preload_stages(opts)
        _in_pool(jobs_args, opts.jobs, finished, specs, progress)
    else:
        for i, job in enumerate(jobs_args):
            finished(i, _run_one(job))
    cultures: list[CultureResult] = []
    samples: dict[str, np.ndarray] = {}
    hashes: dict[str, str] = {}
    for result, errs, written, sample in outcomes:
        errors.extend(errs)
        hashes.update(written)
        # A culture none of whose files could be read is only its errors, not an analysed culture.
        if result is not None and result.files:
            cultures.append(result)
            if sample is not None:
                samples[result.culture] = sample
    batch = BatchResult(cytomsc_version=__version__, panel=header.panel,
                        parameters=header.parameters, cultures=cultures, errors=errors,
                        compensation=compensation)
    batch.batch_populations = _joint_clustering(cultures, samples, opts.seed)
    _write_batch(out, batch, run_info, opts)
    hashes.update(out.hashes)
    record.write_sums(out, hashes)
    hashes.update(out.hashes)
    run = {"cytomsc_version": __version__, **run_info,
           "cultures": {f: s.name for s, f in zip(specs, folders, strict=True)}}
    removed = folder.commit(hashes, run)
    announced = {rel for files in others.values() for rel in files}
    rest = [rel for rel in removed if rel not in announced]
    if rest and progress is not None:
        shown = ", ".join(rest[:5]) + (f" and {len(rest) - 5} more" if len(rest) > 5 else "")
        progress.note(f"removed {len(rest)} file(s) of the previous run that this run did not "
                      f"write again: {shown}")
    return batch


def _names(groups: dict[str, list[str]]) -> str:
    names = sorted(groups)
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _in_pool(jobs_args: list[tuple], jobs: int, finished: Any, specs: list[Any],
             progress: Listener | None) -> None:
    """The cultures in a process pool, each reported as it finishes.

    On Ctrl-C (or any failure) the workers are killed at once rather than left to finish their
    culture (which took 3-11 s): their files are only in the staging folder, which goes."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures.process import BrokenProcessPool

    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context,
                               initializer=_worker_start, initargs=(os.getpid(),))
    try:
        # The workers are forked by the first submit: Ctrl-C is held back meanwhile, so that no
        # worker is born before it ignores Ctrl-C (it would print a traceback of its own).
        with interrupts_held():
            futures = {pool.submit(_run_one, job): i for i, job in enumerate(jobs_args)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=futures.__getitem__):
                i = futures[future]
                try:
                    outcome = future.result()
                except BrokenProcessPool:
                    raise CytomscError(f"a worker process died while analysing culture "
                                       f"{specs[i].name} (killed by the system: out of "
                                       "memory?); nothing was written") from None
                finished(i, outcome)
            if progress is not None:
                progress.tick()
    except BaseException:
        _stop_workers(pool)
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _worker_start(parent: int) -> None:
    """Every pool worker, first thing: Ctrl-C is the parent's to handle (a terminal sends it to
    every process of the group, and each worker printed its own KeyboardInterrupt traceback),
    and a worker dies with its parent, even when the parent is killed with SIGKILL (else it
    would go on writing into OUT)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # held back by the parent while it forked
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        import ctypes

        if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL) != 0:  # PR_SET_PDEATHSIG
            raise OSError("prctl")
    except (OSError, AttributeError):  # not Linux: watch the parent instead
        import threading

        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.2)
        if os.getppid() != parent:
            os._exit(1)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    kill = getattr(pool, "kill_workers", None)  # Python >= 3.14
    if kill is not None:
        kill()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            process.kill()


def _ignore_interrupts() -> Any:
    """Ignore Ctrl-C from now on; returns the handler to restore (None: not the main thread,
    where handlers cannot be changed)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, signal.SIG_IGN)


def _single_stains(specs: list[Any], out: OutputDir, opts: Options,
                   errors: list[dict[str, str]]) -> tuple[list[Any], Options, Any]:
    """Manifest roles single:<dye>: the batch's spillover matrix from them (spillover.py),
    written as OUT/compensation.csv and used for every culture unless --comp was given."""
    import dataclasses

    if not any(t.role.lower().startswith("single:") for s in specs for t in s.tubes):
        return specs, opts, None
    from .spillover import COMP_FILE, compensation_from_controls

    specs, result = compensation_from_controls(specs, out, opts.data_set, errors, opts.comp)
    if result is not None and result.used:
        opts = dataclasses.replace(opts, comp=str(out.path(COMP_FILE)),
                                   comp_label=f"single-stain controls ({COMP_FILE})",
                                   comp_notes=tuple(result.warnings))
    return specs, opts, result


def _preload_stages(opts: Options) -> None:
    """Import every stage's libraries once, before the pool forks its workers.

    The batch itself needs them afterwards (batch-wide clustering, overview PDF), and forked
    workers inherit them instead of each importing scipy, matplotlib and the rest again
    (~1 s of CPU per worker on this machine). Where processes are spawned, nothing changes.
    """
    import contourpy  # noqa: F401
    import scipy.stats  # noqa: F401

    from . import fcs, gating, heterogeneity, positivity, preprocess  # noqa: F401
    if opts.pdf:
        from .report import overview, pdf, plots  # noqa: F401


def _joint_clustering(cultures: list[CultureResult], samples: dict[str, np.ndarray],
                      seed: int) -> dict[str, Any] | None:
    """One clustering across cultures on equal subsamples, so population ids mean the same thing
    in every culture. Only cultures clustered on the same channels can be pooled."""
    if len(samples) < 2:
        return None
    from .heterogeneity import joint_populations

    by_channels: dict[tuple[str, ...], dict[str, np.ndarray]] = {}
    names: dict[str, str] = {}
    for c in cultures:
        if c.culture in samples and c.heterogeneity is not None:
            key = tuple(c.heterogeneity.channels)
            by_channels.setdefault(key, {})[c.culture] = samples[c.culture]
            names.update({m.channel: m.marker for m in c.markers if m.channel})
    if not by_channels:
        return None
    key, group = max(by_channels.items(), key=lambda kv: (len(kv[1]), kv[0]))
    if len(group) < 2:
        return None
    names = {ch: names.get(ch, ch) for ch in key}
    table = joint_populations(group, list(key), names, seed=seed,
                              per_culture=CLUSTER_SUBSAMPLE_JOINT)
    table.pop("labels", None)
    return table


def _write_batch(out: OutputDir, batch: BatchResult, run_info: dict, opts: Options) -> None:
    out.write_text(to_json(batch), "summary.json")
    out.write_text(csv_text(CSV_COLUMNS, csv_rows(batch)), "summary.csv")
    out.write_text(csv_text(*culture_rows(batch, str(run_info.get("started", "")))),
                   "cultures.csv")
    if opts.pdf:
        from .report.overview import write_overview

        with out.atomic("overview.pdf") as tmp:
            write_overview(batch, tmp, run_info)
