"""Analyse one culture: its tubes read, gated and measured against their controls, the panel's
verdict, and its populations. Nothing here writes a file or draws.

One culture is one trip in one direction, each stage a function from typed values to typed
values (nothing is filled in place, no list is handed to a stage to append to):

``read_tubes`` -> (``lab_gates``, with ``--gates``) -> ``prepare_and_gate`` (one Logicle scale
per channel, shared by the culture's tubes so that controls and stained tubes compare) ->
``match_markers`` -> ``measure`` (per marker) -> ``criteria.culture_verdict`` ->
``joint_phenotype`` -> ``clustering.cluster_culture`` -> ``CultureAnalysis``.

``CultureAnalysis`` holds the ``CultureResult`` and what writing the culture's files needs
(``writing.CultureFiles``: gates, scales, and for ``--export-events`` the source files' layout
and the masks); ``writing.py`` writes them. The stage functions import their libraries when
called, so that ``cytomsc --help`` stays fast and the benchmarks can time each stage.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import clustering, record
from .criteria import WARN_EVENTS, culture_verdict, judge_marker
from .dates import iso_date
from .errors import CytomscError
from .options import CompSource, Options, culture_seed
from .results import (
    GATE_ORDER,
    CultureResult,
    FileInfo,
    InputError,
    MarkerHistogram,
    MarkerResult,
    ThresholdSource,
)
from .roles import Role
from .writing import CultureFiles, TubeFiles

if TYPE_CHECKING:  # pragma: no cover
    from .fcs import FcsData
    from .gating import GatingOutcome
    from .layout import CultureSpec
    from .panel import Assignment, Matching, Panel
    from .preprocess import Prepared

__all__ = [
    "CultureAnalysis",
    "GatedTube",
    "ReadTube",
    "analyze_culture",
    "measure",
    "match_markers",
    "prepare_and_gate",
    "read_tubes",
]

MIN_CONTROL_EVENTS = 100  # a control with fewer gated events cannot place a 99.5th percentile
HIST_MAX_EVENTS = 200_000  # events a marker histogram is drawn from; a seeded subsample above


# ---- values passed between the stages ---------------------------------------------------------
@dataclass
class ReadTube:
    """One tube read from its file; ``name`` is unique within the culture."""

    name: str
    role: Role
    fcs: FcsData
    channel_map: dict[str, str] = field(default_factory=dict)  # from the manifest


@dataclass
class TubesRead:
    """A culture's tubes as read: the tubes, what the report says of each file, what failed."""

    tubes: list[ReadTube]
    files: list[FileInfo]
    errors: list[InputError]
    warnings: list[str]


@dataclass
class LabGating:
    """``--gates``: the lab's gates of every tube that has them (workspace.py)."""

    gating: dict[str, GatingOutcome]  # tube name -> the lab's gates applied to it
    tubes: list[ReadTube]  # the tubes that have them
    files: list[FileInfo]
    errors: list[InputError]  # tubes the file has no gates for
    note: str  # metadata["gating"]: the file and the analysed population


@dataclass
class GatedTube:
    """A tube compensated, on its display scales, and gated; ``final`` marks the events kept by
    every gate (and finite in every channel)."""

    name: str
    role: Role
    fcs: FcsData
    prep: Prepared
    gating: GatingOutcome
    final: np.ndarray
    channel_map: dict[str, str] = field(default_factory=dict)

    def column(self, channel: str) -> int:
        return self.prep.channels.index(channel)

    @property
    def n_final(self) -> int:
        return int(self.final.sum())

    @property
    def has_live_gate(self) -> bool:
        return any(step.gate == "live" for step in self.gating.steps)


@dataclass
class GatedTubes:
    """Every tube gated, in input order (the order gates.xml numbers them). ``withheld``: why
    no verdict may be given (a file analysed without the compensation it asked for)."""

    tubes: list[GatedTube]
    warnings: list[str]
    withheld: list[str]


@dataclass
class MarkerMatch:
    """Markers to channels over a culture's stained tubes."""

    chosen: dict[str, tuple[GatedTube, Assignment]]  # marker label -> the tube it is read in
    matchings: dict[str, Matching]  # stained tube name -> its channels matched to the panel
    missing: list[str]  # criteria in no stained tube
    errors: list[InputError]
    warnings: list[str]


@dataclass
class Measurement:
    """One marker measured in one stained tube; ``above``: each event's call (all events)."""

    result: MarkerResult
    above: np.ndarray
    warnings: list[str]


@dataclass
class CultureAnalysis:
    """One culture analysed: its result, its input errors, what writing its files needs (None:
    nothing to write, as for a culture without a stained tube), and a subsample of its clustered
    events for the batch-wide clustering."""

    result: CultureResult
    errors: list[InputError]
    files: CultureFiles | None = None
    joint_sample: np.ndarray | None = None


# ---- the stages -------------------------------------------------------------------------------
def read_tubes(spec: CultureSpec, data_set: int) -> TubesRead:
    """Read every tube of a culture; a file that cannot be read is an error, the rest go on."""
    from .fcs import read_fcs, sha256_file

    tubes: list[ReadTube] = []
    files: list[FileInfo] = []
    errors: list[InputError] = []
    warnings: list[str] = []
    for t in spec.tubes:
        try:
            fcs = read_fcs(t.path, data_set=data_set)
        except CytomscError as err:
            errors.append(InputError(str(t.path), err.reason))
            continue
        kw = fcs.keywords
        files.append(
            FileInfo(
                path=str(t.path),
                role=t.role,
                sha256=sha256_file(t.path),
                events=int(fcs.events.shape[0]),
                cytometer=kw.get("cyt"),
                date=iso_date(kw.get("date")) or None,
                data_set=fcs.data_set,
            )
        )
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
        tubes.append(ReadTube(name=name, role=t.role, fcs=fcs, channel_map=dict(t.channel_map)))
    return TubesRead(tubes, files, errors, warnings)


def lab_gates(
    tubes: list[ReadTube], files: list[FileInfo], gates: str, gate_path: str | None
) -> LabGating:
    """``--gates``: the lab's gates for every tube (workspace.py); a tube they lack is an error
    entry and leaves the culture, as an unreadable file does."""
    from .workspace import gate_culture, load_lab_gates

    lab = load_lab_gates(gates)
    manual, path, errors = gate_culture(lab, [(t.name, t.fcs) for t in tubes], gate_path)
    lost = {str(t.fcs.path) for t in tubes if t.name not in manual}
    return LabGating(
        gating=manual,
        tubes=[t for t in tubes if t.name in manual],
        files=[f for f in files if f.path not in lost],
        errors=errors,
        note=f"manual: {lab.name}, analysed population {path}",
    )


def prepare_and_gate(
    tubes: list[ReadTube],
    comp: CompSource,
    seed: int,
    manual: dict[str, GatingOutcome] | None = None,
) -> GatedTubes:
    """Compensate, transform with one scale per channel for the culture, gate every tube.

    A file whose own spillover matrix cannot be used (names detectors it lacks, singular) is
    analysed uncompensated so that its gates and funnel are still shown, and the reason goes to
    ``withheld``: uncompensated percentages must not become a verdict. A matrix the user gave with
    ``--comp`` that does not fit a stained tube is an error (it is theirs to fix); a control it
    does not fit is left out, with a warning, and the culture goes on with its other controls."""
    from .gating import GatingOutcome, gate_tube
    from .preprocess import prepare

    warnings: list[str] = []
    withheld: list[str] = []
    done: dict[str, GatedTube] = {}
    shared: dict = {}
    # The stained tubes set the scale (they span the positive range); the controls reuse it.
    for tube in sorted(tubes, key=lambda t: t.role != "stained"):
        try:
            prep = prepare(tube.fcs, comp=comp.for_prepare, logicle_params=shared or None)
        except CytomscError as err:
            if comp.option is not None and tube.role == "stained":
                raise CytomscError(
                    f"--comp {Path(comp.option).name}: {err.reason}", tube.fcs.path
                ) from err
            if comp.option is not None:
                warnings.append(
                    f"{tube.name}: left out, the --comp matrix does not fit it ({err.reason})"
                )
                continue
            withheld.append(
                f"{tube.name}: {err.reason}; analysed without compensation, so no verdict is given"
            )
            prep = prepare(tube.fcs, comp="none", logicle_params=shared or None)
        for ch, p in prep.logicle.items():
            shared.setdefault(ch, p)
        warnings.extend(f"{tube.name}: {w}" for w in prep.warnings)
        n = prep.compensated.shape[0]
        try:
            gating = (
                manual[tube.name]
                if manual is not None
                else gate_tube(prep, tube.fcs, tube.name, seed=seed)
            )
        except CytomscError as err:
            # A tube whose events leave no cells to gate (all saturated, all debris) is kept
            # with nothing inside its gates: its culture becomes inconclusive, not an error.
            none = np.zeros(n, dtype=bool)
            gating = GatingOutcome(
                masks={g: none for g in GATE_ORDER},
                steps=[],
                specs=[],
                warnings=[f"no cells could be gated ({err.reason}); every event was excluded"],
            )
        finite = np.isfinite(prep.compensated).all(axis=1)
        done[tube.name] = GatedTube(
            tube.name,
            tube.role,
            tube.fcs,
            prep,
            gating,
            gating.final & finite,
            dict(tube.channel_map),
        )
        warnings.extend(
            w if w.startswith(f"{tube.name}:") else f"{tube.name}: {w}" for w in gating.warnings
        )
    return GatedTubes([done[t.name] for t in tubes if t.name in done], warnings, withheld)


def match_markers(
    stained: list[GatedTube], panel: Panel, channel_map: dict[str, str]
) -> MarkerMatch:
    """Markers to channels in every stained tube. A marker is read in the first tube that has it
    (a 4-colour instrument splits the panel over tubes); a criterion is missing when no stained
    tube has it. A tube whose channels match one marker twice is an error, the others go on."""
    from .errors import PanelError

    chosen: dict[str, tuple[GatedTube, Assignment]] = {}
    matchings: dict[str, Matching] = {}
    errors: list[InputError] = []
    warnings: list[str] = []
    for tube in stained:
        try:
            matching = panel.match(
                [(c.pnn, c.pns) for c in tube.fcs.channels],
                {**channel_map, **tube.channel_map},
                source=tube.fcs.path,
            )
        except PanelError as err:
            errors.append(InputError(str(tube.fcs.path), err.reason))
            continue
        matchings[tube.name] = matching
        warnings.extend(f"{tube.name}: {w}" for w in matching.warnings)
        for a in matching.assignments:
            chosen.setdefault(a.label, (tube, a))
    # Missing is decided over every stained tube's channels together: a cocktail split over two
    # tubes is covered only when its markers are, whichever tube carries them.
    missing = sorted(panel.missing([a for _, a in chosen.values()]))
    return MarkerMatch(chosen, matchings, missing, errors, warnings)


def _pick_control(
    tubes: list[GatedTube], markers: tuple[str, ...], channel: str
) -> tuple[GatedTube | None, ThresholdSource | None]:
    """The best control of the culture for a marker: its FMO, else isotype, else unstained."""
    for kind in ("fmo", "isotype", "unstained"):
        for t in tubes:
            if channel not in t.prep.channels or t.n_final < MIN_CONTROL_EVENTS:
                continue
            if kind == "fmo" and t.role.controls_for(markers):
                return t, "fmo"
            if kind == "isotype" and t.role.kind == "isotype":
                return t, "isotype"
            if kind == "unstained" and t.role.kind == "unstained":
                return t, "unstained"
    return None, None


def measure(
    stained: GatedTube,
    assignment: Assignment,
    tubes: list[GatedTube],
    percentile: float,
    seed: int = 0,
) -> Measurement:
    """% positive of one channel of a stained tube against the culture's best control for it.
    ``seed`` (the run's): the subsample a large tube's histogram is drawn from (``_drawn``)."""
    from .positivity import (
        auto_threshold_display,
        control_threshold,
        matched_threshold,
        percent_above,
    )
    from .preprocess import axis_ticks, logicle, logicle_inverse

    warnings: list[str] = []
    crit = assignment.criterion
    ch = assignment.channel
    col = stained.column(ch)
    values = stained.prep.compensated[stained.final, col]
    display = stained.prep.display[stained.final, col]
    params = stained.prep.logicle.get(ch)
    if values.size == 0:
        warnings.append(
            f"{assignment.label} ({ch}): no cells left in {stained.name} after gating: not measured"
        )
        return Measurement(
            MarkerResult(
                marker=assignment.label,
                channel=ch,
                expect=crit.expect,
                limit=crit.limit,
                tube=stained.name,
            ),
            np.zeros(stained.prep.compensated.shape[0], dtype=bool),
            warnings,
        )
    control, source = _pick_control(tubes, assignment.markers, ch)
    control_display = None
    ratio = 1.0
    if control is not None and stained.has_live_gate != control.has_live_gate:
        with_gate, without = (stained, control) if stained.has_live_gate else (control, stained)
        warnings.append(
            f"{with_gate.name} has a viability gate and {without.name} has none (no dye in it): "
            "dead cells are excluded from one tube only, which shifts the thresholds of the "
            "markers read against it"
        )
    if control is not None:
        ccol = control.column(ch)
        control_values = control.prep.compensated[control.final, ccol]
        if source == "fmo":  # an FMO carries the other dyes' spreading already
            threshold = control_threshold(control_values, percentile)
        else:
            threshold, ratio, moved = matched_threshold(
                control_values, values, percentile, shift=source == "unstained"
            )
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
        threshold = (
            float(logicle_inverse(np.array([t_display]), params)[0]) if params else t_display
        )
        warnings.append(
            f"{assignment.label} ({ch}): no control tube for this channel; the threshold was "
            "placed automatically at the valley of the stained distribution"
        )
    pct, ci, n = percent_above(values, threshold)
    hist = None
    if params is not None and display.size:
        edges = np.linspace(min(0.0, float(np.min(display))), max(1.0, float(np.max(display))), 129)
        hist = MarkerHistogram(
            edges=edges,
            stained=np.histogram(_drawn(display, seed, 1), edges)[0],
            control=None
            if control_display is None
            else np.histogram(_drawn(control_display, seed, 2), edges)[0],
            control_role=control.role if control is not None else None,
            threshold=float(logicle(np.array([threshold]), params)[0]),
            ticks=axis_ticks(params),
        )
    result = judge_marker(
        MarkerResult(
            marker=assignment.label,
            channel=ch,
            expect=crit.expect,
            limit=crit.limit,
            percent_positive=pct,
            ci95=ci,
            threshold=threshold,
            threshold_source=source,
            events=n,
            control_spread_ratio=ratio,
            tube=stained.name,
            histogram=hist,
        )
    )
    above = stained.prep.compensated[:, col] > threshold
    return Measurement(result, above, warnings)


def _drawn(values: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """The values a plot is drawn from: all of them up to HIST_MAX_EVENTS, else a seeded
    subsample of that many (a histogram's shape to a fraction of a percent per bin)."""
    if values.size <= HIST_MAX_EVENTS:
        return values
    rng = np.random.default_rng([seed, values.size, stream])
    pick = rng.choice(values.size, HIST_MAX_EVENTS, replace=False)
    return values[np.sort(pick)]


def joint_phenotype(
    markers: list[MarkerResult],
    missing: list[str],
    main: GatedTube,
    calls: dict[str, np.ndarray],
    read_in: dict[str, GatedTube],
) -> tuple[float, tuple[float, float]] | None:
    """% of cells positive for every positive marker and negative for every negative one at once
    (and its interval), when one tube holds every judged criterion: single-marker % overstate
    purity. ``read_in``: the tube each marker was read in."""
    from .positivity import percent_above

    judged = [m for m in markers if m.expect in ("positive", "negative")]
    if not judged or missing:
        return None
    if any(read_in[m.marker] is not main for m in judged):
        return None
    ok = main.final.copy()
    for m in judged:
        above = calls[m.marker]
        ok &= above if m.expect == "positive" else ~above
    pct, ci, _ = percent_above(ok[main.final].astype(float), 0.5)
    if not main.n_final or pct is None or ci is None:
        return None
    return pct, ci


# ---- the whole trip ---------------------------------------------------------------------------
def analyze_culture(
    spec: CultureSpec, panel: Panel, opts: Options, comp: CompSource, folder: str
) -> CultureAnalysis:
    """Analyse one culture (``folder``: its sanitized, unique output name). Raises
    ``CytomscError`` only for what stops the whole culture (a ``--comp`` matrix that does not fit
    its stained tube); the caller turns it into an error entry."""
    warnings: list[str] = [f"compensation from single stains: {n}" for n in opts.comp_notes]
    seed = culture_seed(opts.seed, spec.name)
    read = read_tubes(spec, opts.data_set)
    errors = list(read.errors)
    warnings += read.warnings
    tubes, files = read.tubes, read.files
    metadata = dict(spec.metadata)
    if files:
        metadata.setdefault("cytometer", files[0].cytometer or "")
        metadata.setdefault("date", files[0].date or "")
    metadata = record.release_metadata(
        metadata, [t.fcs.keywords for t in tubes], opts.operator, opts.comment
    )

    def unjudged(why: str) -> CultureAnalysis:
        return CultureAnalysis(
            CultureResult(
                culture=spec.name,
                verdict="inconclusive",
                borderline=False,
                files=files,
                events={"total": 0},
                markers=[],
                warnings=[*warnings, why],
                metadata=metadata,
                output_name=folder,
            ),
            errors,
        )

    if not any(t.role == "stained" for t in tubes):
        return unjudged("no stained tube could be read (only controls): nothing to judge")
    manual = None
    if opts.gates:
        lab = lab_gates(tubes, files, opts.gates, opts.gate_path)
        errors += lab.errors
        tubes, files, manual = lab.tubes, lab.files, lab.gating
        metadata["gating"] = lab.note
        if not any(t.role == "stained" for t in tubes):
            return unjudged(
                f"no stained tube has gates in {Path(opts.gates).name}: nothing to judge"
            )
    gated = prepare_and_gate(tubes, comp, seed, manual)
    warnings += gated.warnings
    every = gated.tubes
    stained = [t for t in every if t.role == "stained"]

    match = match_markers(stained, panel, opts.channel_map)
    errors += match.errors
    warnings += match.warnings
    chosen, missing = match.chosen, match.missing
    markers: list[MarkerResult] = []
    calls: dict[str, dict[str, np.ndarray]] = {}
    for label, (tube, a) in chosen.items():
        measured = measure(tube, a, every, opts.control_percentile, opts.seed)
        warnings += measured.warnings
        markers.append(measured.result)
        calls.setdefault(tube.name, {})[label] = measured.above
    order = {c.name: i for i, c in enumerate(panel.criteria)}
    markers.sort(key=lambda m: (order.get(chosen[m.marker][1].criterion.name, 99), m.marker))

    main = max(
        (t for t in stained if t.name in match.matchings),
        key=lambda t: len(match.matchings[t.name].assignments),
        default=stained[0],
    )
    used = sorted({chosen[m.marker][0].name for m in markers}) or [main.name]
    counted = [t.n_final for t in stained if t.name in used]
    for t in stained:
        if t.name in used and t.n_final < WARN_EVENTS:
            warnings.append(
                f"{t.name}: only {t.n_final:,} cells left after gating "
                f"(fewer than {WARN_EVENTS:,}): percentages are less precise"
            )
    if missing:
        warnings.append("markers in no channel: " + ", ".join(missing))
    verdict, borderline, reasons = culture_verdict(markers, missing, counted)
    warnings += reasons
    if gated.withheld:
        verdict, borderline = "inconclusive", False
        warnings += gated.withheld
    joint = joint_phenotype(
        markers,
        missing,
        main,
        calls.get(main.name, {}),
        {label: t for label, (t, _) in chosen.items()},
    )

    populations = clustering.Clustered()
    clustered = main  # the tube whose exported events carry the populations
    if opts.cluster == "all" or (opts.cluster == "pass" and verdict == "pass"):
        pick = clustering.cluster_tube(stained, match.matchings)
        if pick is not None:
            clustered, assignments, what = pick
            try:
                populations = clustering.cluster_culture(
                    clustered,
                    assignments,
                    seed,
                    markers,
                    match.matchings[clustered.name].assignments,
                )
            except CytomscError as err:  # events the clustering cannot take (scatter ~1e30)
                warnings.append(f"{clustered.name}: heterogeneity not computed ({err.reason})")
            if populations.result is not None and what.startswith("negative"):
                warnings.append(f"{clustered.name}: clustered on its {what}")

    # stained tubes first (the one the markers were read in first of all), then the controls
    ordered = sorted(every, key=lambda t: (t.role != "stained", t is not main))
    # each said once, in order; a message every tube shares said once for them all
    warnings = record.merge_tube_warnings(list(dict.fromkeys(warnings)), [t.name for t in every])
    if not any(t.gating.specs for t in every) and not opts.gates:
        # with --gates the lab's own file holds the gates
        warnings.append(
            "no gate could be placed in any tube (no scatter or time channels): "
            "every event was counted and no gates.xml was written"
        )
    result = CultureResult(
        culture=spec.name,
        verdict=verdict,
        borderline=borderline,
        files=files,
        events=_funnel(main),
        markers=markers,
        joint_phenotype_percent=joint[0] if joint else None,
        joint_phenotype_ci95=joint[1] if joint else None,
        warnings=warnings,
        missing_markers=missing,
        metadata=metadata,
        heterogeneity=populations.result,
        gates=[s for t in ordered for s in t.gating.steps],
        output_name=folder,
        funnels=[
            record.tube_funnel(
                t.name, t.role, t.prep.compensated.shape[0], t.gating.masks, t.gating.skipped
            )
            for t in ordered
        ],
        compensation=[
            record.compensation_used(
                t.name, t.prep.spill, comp.option, t.fcs.spillover, t.fcs.keywords
            )
            for t in ordered
        ],
    )
    return CultureAnalysis(
        result, errors, _files(every, clustered, populations.events, opts), populations.joint_sample
    )


def _funnel(tube: GatedTube) -> dict[str, int]:
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


def _files(
    tubes: list[GatedTube], main: GatedTube, population: np.ndarray | None, opts: Options
) -> CultureFiles:
    """What writing the culture's files needs, without its events: each tube's gates and scales
    (gates.xml), and with ``--export-events`` the file to re-read, the gate masks and the
    population ids (the exported events).

    The kept files' events are released (``FcsData.release_events``): the export reads the
    stored data set again, and a 5M-event tube's peak memory stays that of reading it."""
    if opts.export_events:
        for t in tubes:
            t.fcs.release_events()
    return CultureFiles(
        tubes=[
            TubeFiles(
                name=t.name,
                gating=t.gating,
                scales=_scales(t.prep),
                source=t.fcs if opts.export_events else None,
                population=population if t is main and opts.export_events else None,
            )
            for t in tubes
        ],
        gates_file=opts.gates,
        export_events=opts.export_events,
    )


def _scales(prep: Prepared) -> Prepared:
    """A tube's compensation and Logicle scales without its events (all gates.xml needs)."""
    empty = np.empty((0, len(prep.channels)))
    return replace(prep, compensated=empty, display=empty)
