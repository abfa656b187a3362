"""Compensation from single-stain controls: the spillover matrix a lab measures itself.

Manifest roles ``single:<fluorochrome or detector>`` name one control per dye; an ``unstained``
tube of the same manifest culture (or a ``single:unstained`` / ``single:negative`` row, e.g.
negative beads) is the negative. The matrix is computed once for the batch, written as
``OUT/compensation.csv`` (the CSV ``--comp`` reads) and used for every culture.

The method, and why: every control is gated on scatter first (the automatic time, margin, cells
and singlets gates of gating.py: debris and doublets carry other spillover), and its *positive*
events are those above the unstained control's 99.5th percentile in the stained detector and not
saturated in any detector. The coefficient from detector j (the stain's) into detector i is

    s_ji = (median_pos(i) - median_unstained(i)) / (median_pos(j) - median_unstained(j)),

the ratio of the positive population's background-corrected medians (flowCore's ``spillover``
does the same). Measured on the FACSCalibur set of flowCore (``compdata``), this is within 0.006
of the reference matrix ``compmatrix`` everywhere; the alternatives are worse there: the median
of the top decile only (0.055 off in the FL3 row, where the 7-AAD control's dead cells are a
minority), and a robust regression (Theil-Sen, Huber, least squares) of detector i on j over the
positive range (0.08-0.09 off in the FL3 row: on log-amplified detectors the local slope within
the positive range is not the ratio from the negatives to the positives). On simulated controls
with a known matrix it is within 0.005 (tests/test_spillover.py).

Bad controls are named in a warning: dim (fewer than 200 positive events, or a positive median
less than 3 times the unstained's spread above its median), saturated (more than 2 % of the
positive events at the top of their detector), positive in two detectors (a second population in
another detector beyond what spillover predicts, or a coefficient >= 1: brighter elsewhere than
in its own detector).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import CytomscError
from .results import Histogram2D, InputError, plot_field
from .roles import Role

if TYPE_CHECKING:  # pragma: no cover
    from .fcs import FcsData
    from .layout import CultureSpec
    from .writing import Sink

COMP_FILE = "compensation.csv"
NEGATIVE_ROLES = ("single:unstained", "single:negative", "single:blank")
POSITIVE_PERCENTILE = 99.5  # positives lie above this percentile of the unstained control
MIN_POSITIVES = 200
MIN_SEPARATION = 3.0  # positive median - unstained median, in unstained spreads (99.5th - median)
MAX_SATURATED = 0.02
SECOND_POPULATION = 0.05  # share of positives beyond spillover in another detector
# Conventional detectors of the common dyes on 4-colour instruments (FACSCalibur, Accuri).
_CONVENTIONAL = {
    "FITC": "FL1",
    "GFP": "FL1",
    "AF488": "FL1",
    "PE": "FL2",
    "PI": "FL2",
    "PERCP": "FL3",
    "PERCPCY55": "FL3",
    "7AAD": "FL3",
    "PECY5": "FL3",
    "APC": "FL4",
    "AF647": "FL4",
}


@dataclass
class ControlFit:
    """One single-stain control: its detector, positives and each coefficient's evidence."""

    file: str
    role: Role
    detector: str
    events: int  # inside the scatter gate
    positive_events: int
    separation: float  # (positive median - unstained median) / unstained spread
    saturated_fraction: float
    warnings: list[str] = field(default_factory=list)
    # per other detector: its positives' median and the unstained's (the fit's two points)
    medians: dict[str, tuple[float, float]] = field(default_factory=dict)
    x_medians: tuple[float, float] = (0.0, 0.0)  # the stained detector: unstained, positives
    # drawing: stained detector against each other one, gated events, log10 axes
    histograms: dict[str, Histogram2D] | None = plot_field()


@dataclass
class SpilloverResult:
    """The batch's spillover matrix from its single-stain controls."""

    method: str
    detectors: list[str]
    matrix: list[list[float]]  # rows: spillover from that detector's dye into each column
    unstained: str  # the negative control's file
    controls: list[ControlFit]
    used: bool  # False when --comp was given too: computed and written, not applied
    warnings: list[str] = field(default_factory=list)

    def as_tuple(self) -> tuple[list[str], np.ndarray]:
        return list(self.detectors), np.array(self.matrix, dtype=float)


METHOD = (
    "positive population's median minus the unstained control's median, per detector, "
    "as a ratio to the stained detector's (scatter-gated; positives above the unstained "
    f"control's {POSITIVE_PERCENTILE:g}th percentile, saturated events left out)"
)


def is_single(role: Role) -> bool:
    return role.kind == "single"


def split_controls(specs: list[CultureSpec]) -> tuple[list[CultureSpec], list[Any], Any]:
    """(cultures without their single-stain tubes, the single-stain tubes, the negative tube).

    A culture that held only single stains and its unstained control is no culture to judge and
    leaves the batch; one with stained tubes keeps its unstained tube as its own control too."""
    from .layout import CultureSpec

    singles: list[Any] = []
    negative = None
    kept = []
    for spec in specs:
        mine = [t for t in spec.tubes if is_single(t.role)]
        if not mine:
            kept.append(spec)
            continue
        singles.extend(t for t in mine if t.role.lower() not in NEGATIVE_ROLES)
        neg = [t for t in mine if t.role.lower() in NEGATIVE_ROLES] or [
            t for t in spec.tubes if t.role == "unstained"
        ]
        if negative is None and neg:
            negative = neg[0]
        rest = [t for t in spec.tubes if not is_single(t.role)]
        if any(t.role == "stained" for t in rest):
            kept.append(CultureSpec(spec.name, rest, dict(spec.metadata)))
    return kept, singles, negative


def _norm(text: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", text.upper())


def detector_of(fcs: FcsData, name: str) -> str:
    """The detector a ``single:<name>`` control stains: a $PnN, else the channel whose $PnN or
    $PnS names the fluorochrome, else the dye's conventional FL detector."""
    from .channels import is_fluorescence

    channels = [c for c in fcs.channels if is_fluorescence(c.pnn, c.pns)]
    key = _norm(name)
    for c in channels:
        if _norm(c.pnn) == key:
            return c.pnn
    for c in channels:
        pnn = _norm(re.sub(r"[-_ ]?[AHW]$", "", c.pnn))
        if key and (
            pnn == key
            or key in _norm(c.pns).split()
            or _norm(c.pns) == key
            or re.search(rf"(^|[^A-Z0-9]){re.escape(name.upper())}($|[^A-Z0-9])", c.pns.upper())
        ):
            return c.pnn
    fl = _CONVENTIONAL.get(key)
    if fl:
        for suffix in ("-H", "-A", ""):
            for c in channels:
                if c.pnn.upper() == fl + suffix:
                    return c.pnn
    raise CytomscError(
        f"single:{name}: no channel of this file is the {name} detector "
        "(name a detector, e.g. single:FL1-H)",
        fcs.path,
    )


def _top(fcs: FcsData, channel: str) -> float:
    """The largest value the detector can record, in FlowKit's decoded units."""
    c = next(c for c in fcs.channels if c.pnn == channel)
    decades, offset = c.amplification
    if decades > 0:
        return (offset if offset > 0 else 1.0) * 10.0**decades
    if c.range > 1:
        return float(c.range)
    return float(np.max(fcs.events[:, [ch.pnn for ch in fcs.channels].index(channel)]))


def _gated(fcs: FcsData, name: str) -> tuple[np.ndarray, list[str]]:
    """The control's events inside the automatic scatter gates (time, margin, cells, singlets),
    uncompensated; the live gate is not used (a 7-AAD control is stained with the viability dye)."""
    from .gating import gate_tube
    from .preprocess import prepare

    prep = prepare(fcs, comp="none")
    outcome = gate_tube(prep, fcs, name)
    return fcs.events[outcome.masks["singlets"]], outcome.warnings


def _log_hist(x: np.ndarray, y: np.ndarray, xname: str, yname: str) -> Histogram2D:
    from .gating import HIST_BINS

    lx, ly = np.log10(np.maximum(x, 1.0)), np.log10(np.maximum(y, 1.0))
    hi_x = max(1.0, float(np.ceil(np.percentile(lx, 99.9) + 0.2))) if lx.size else 1.0
    hi_y = max(1.0, float(np.ceil(np.percentile(ly, 99.9) + 0.2))) if ly.size else 1.0
    xe, ye = np.linspace(0.0, hi_x, HIST_BINS + 1), np.linspace(0.0, hi_y, HIST_BINS + 1)
    counts, _, _ = np.histogram2d(lx, ly, bins=[xe, ye])
    ticks = [(float(k), f"10^{k}") for k in range(0, 8)]
    return Histogram2D(
        xname,
        yname,
        counts,
        xe,
        ye,
        [t for t in ticks if t[0] <= hi_x],
        [t for t in ticks if t[0] <= hi_y],
    )


def compute_spillover(
    singles: list[tuple[str, Role, FcsData]], negative: tuple[str, FcsData]
) -> SpilloverResult:
    """The spillover matrix from (file, role, data) of each single stain and the negative."""
    neg_name, neg_fcs = negative
    neg_ev, _ = _gated(neg_fcs, Path(neg_name).name)
    neg_names = [c.pnn for c in neg_fcs.channels]
    if len(neg_ev) < 100:
        raise CytomscError(
            "the unstained control has fewer than 100 events inside the scatter "
            "gate: no spillover can be measured against it",
            neg_name,
        )
    fits: list[tuple[ControlFit, FcsData]] = []
    detectors: list[str] = []
    for file, role, fcs in singles:
        det = detector_of(fcs, role.target)
        if det in detectors:
            raise CytomscError(f"{role}: a second control for detector {det}", file)
        detectors.append(det)
        fits.append((ControlFit(file, role, det, 0, 0, 0.0, 0.0), fcs))
    missing = [d for d in detectors if d not in neg_names]
    if not missing:  # rows and columns in the instrument's channel order
        order = sorted(range(len(detectors)), key=lambda k: neg_names.index(detectors[k]))
        detectors = [detectors[k] for k in order]
        fits = [fits[k] for k in order]
    if missing:
        raise CytomscError(
            f"the unstained control lacks detector(s) {', '.join(missing)}", neg_name
        )
    base = {d: neg_ev[:, neg_names.index(d)] for d in detectors}
    med0 = {d: float(np.median(v)) for d, v in base.items()}
    thr0 = {d: float(np.percentile(v, POSITIVE_PERCENTILE)) for d, v in base.items()}
    n = len(detectors)
    matrix = np.eye(n)
    warnings: list[str] = []
    for j, (fit, fcs) in enumerate(fits):
        names = [c.pnn for c in fcs.channels]
        lacking = [d for d in detectors if d not in names]
        if lacking:
            raise CytomscError(
                f"lacks detector(s) {', '.join(lacking)} of the other controls", fit.file
            )
        ev, _ = _gated(fcs, Path(fit.file).name)
        cols = {d: ev[:, names.index(d)] for d in detectors}
        x = cols[fit.detector]
        tops = {d: _top(fcs, d) for d in detectors}
        sat = np.zeros(len(ev), dtype=bool)
        for d in detectors:
            sat |= cols[d] >= 0.98 * tops[d]
        above = x > thr0[fit.detector]
        pos = above & ~sat
        fit.events = int(len(ev))
        fit.positive_events = int(pos.sum())
        fit.saturated_fraction = float(
            (above & (x >= 0.98 * tops[fit.detector])).sum() / max(int(above.sum()), 1)
        )
        spread = max(thr0[fit.detector] - med0[fit.detector], 1e-9)
        mx = float(np.median(x[pos])) if pos.any() else med0[fit.detector]
        fit.separation = (mx - med0[fit.detector]) / spread
        fit.x_medians = (med0[fit.detector], mx)
        fit.histograms = {}
        for i, d in enumerate(detectors):
            if i == j:
                continue
            my = float(np.median(cols[d][pos])) if pos.any() else med0[d]
            fit.medians[d] = (my, med0[d])
            dx = mx - med0[fit.detector]
            matrix[j, i] = (my - med0[d]) / dx if dx > 0 else 0.0
            fit.histograms[d] = _log_hist(x, cols[d], fit.detector, d)
        _judge(fit, matrix[j], detectors, cols, pos, med0, thr0)
        warnings.extend(f"{Path(fit.file).name} ({fit.role}): {w}" for w in fit.warnings)
    return SpilloverResult(
        METHOD, detectors, matrix.round(6).tolist(), neg_name, [f for f, _ in fits], True, warnings
    )


def _judge(
    fit: ControlFit,
    row: np.ndarray,
    detectors: list[str],
    cols: dict[str, np.ndarray],
    pos: np.ndarray,
    med0: dict[str, float],
    thr0: dict[str, float],
) -> None:
    """Warnings for a dim, saturated or doubly positive control (module docstring)."""
    if fit.positive_events < MIN_POSITIVES or fit.separation < MIN_SEPARATION:
        fit.warnings.append(
            f"dim: {fit.positive_events} positive events, positive median "
            f"{fit.separation:.1f} unstained spreads above the unstained's (needs >= "
            f"{MIN_POSITIVES} events and {MIN_SEPARATION:g} spreads); its coefficients are "
            "imprecise"
        )
    if fit.saturated_fraction > MAX_SATURATED:
        fit.warnings.append(
            f"saturated: {100 * fit.saturated_fraction:.1f} % of its positive events at the top "
            f"of {fit.detector}; they were left out, and the dimmer rest may not span the range"
        )
    if fit.positive_events < 20:
        return
    x = cols[fit.detector][pos] - med0[fit.detector]
    for i, d in enumerate(detectors):
        if d == fit.detector:
            continue
        s = row[i]
        if s >= 1.0:
            fit.warnings.append(
                f"positive in two detectors: brighter in {d} than in its own {fit.detector} "
                f"(coefficient {s:.2f}); is it labelled right?"
            )
            continue
        resid = cols[d][pos] - med0[d] - s * x
        centre = float(np.median(resid))
        mad = 1.4826 * float(np.median(np.abs(resid - centre)))
        floor = thr0[d] - med0[d]  # the unstained's own spread in d
        beyond = resid > centre + 5.0 * max(mad, floor)
        if float(beyond.mean()) > SECOND_POPULATION:
            fit.warnings.append(
                f"positive in two detectors: {100 * beyond.mean():.0f} % of its positive events "
                f"are bright in {d} beyond what spillover from {fit.detector} explains (a "
                "second dye in the tube?)"
            )


def write_comp_csv(out: Sink, result: SpilloverResult) -> None:
    """compensation.csv: a blank top-left cell, detector names across and down (--comp reads
    it back unchanged: each value is written as the shortest text of the stored float)."""
    lines = ["," + ",".join(result.detectors)]
    for d, row in zip(result.detectors, result.matrix, strict=True):
        lines.append(d + "," + ",".join(repr(float(v)) for v in row))
    out.write_text("\n".join(lines) + "\n", COMP_FILE)


def compensation_from_controls(
    specs: list[CultureSpec], data_set: int, user_comp: str | None
) -> tuple[list[CultureSpec], SpilloverResult | None, list[InputError]]:
    """The batch's single-stain controls turned into its spillover matrix (written later as
    OUT/compensation.csv, ``write_comp_csv``).

    Returns the cultures to analyse (single-stain tubes removed), the result (None when the
    batch has no single stains or they could not be used) and the error entries saying why."""
    from .fcs import read_fcs

    kept, singles, negative = split_controls(specs)
    if not singles:
        return specs, None, []
    if negative is None:
        return (
            kept,
            None,
            [
                InputError(
                    str(singles[0].path),
                    "single-stain controls need an unstained (or single:negative) "
                    "control in the same manifest culture: no compensation computed from them",
                )
            ],
        )
    try:
        data = [(str(t.path), t.role, read_fcs(t.path, data_set=data_set)) for t in singles]
        neg = (str(negative.path), read_fcs(negative.path, data_set=data_set))
        result = compute_spillover(data, neg)
    except CytomscError as err:
        return (
            kept,
            None,
            [
                InputError(
                    err.path or str(singles[0].path),
                    f"compensation from single stains: {err.reason}",
                )
            ],
        )
    if user_comp is not None:
        result.used = False
        result.warnings.append(
            f"--comp {user_comp} was given: the matrix from the single-stain "
            "controls was written to compensation.csv but not applied"
        )
    return kept, result, []
