"""Automatic gates, every one a FlowKit gate: time -> margin -> cells -> singlets -> live.

Each gate adapts to the tube's own events (no fixed coordinates): it is placed from robust
statistics of its parent population, turned into a FlowKit gate, and its mask is computed here with
numpy by the same rule FlowKit applies (rectangles: ``min <= x < max``; polygons: even-odd
point-in-polygon), so that re-applying the exported GatingML with FlowKit gives the same counts.

Each gate is one function of the same form (``GATES``: the tube's events and the mask of the
events the gates before it kept, in; the mask of those it keeps, its step for the report and its
spec for GatingML, out), and ``gate_tube`` runs them in a loop over ``GATE_ORDER``. Up to
``FIT_MAX`` events every gate is placed from all of them; above, from the parent events among a
seeded subsample of ``FIT_MAX``, and its mask is applied to every event (``TubeEvents``).

Coordinates, stated once: scatter and time gates are in raw channel units with no compensation and
no transform (scatter is linear; ``Prepared.display`` leaves it raw); the viability gate is on the
compensated channel's Logicle scale (``transformation_ref`` to a ``LogicleTransform``).

- time: acquisition cut into bins; a bin is dropped when its event rate or the share of its
  events above a channel's overall median is a robust outlier (|z| > 5; z floored by Poisson /
  binomial sampling error), in the spirit of flowAI and PeacoQC; at most 30 % of events are
  dropped (the most extreme bins first) with a warning.
- margin: events piled at the top ($PnR saturation) or at the bottom of FSC-A/SSC-A.
- cells: a Gaussian mixture on log FSC-A / log SSC-A (EM on a 128 x 128 histogram of every event,
  k = 1..5 by BIC); components far below the main population on FSC that run down into the
  acquisition threshold or are broad smears are debris (small compact cells are not); the gate is
  the contour where the cell components outweigh debris and hold 99.5 % of their own mass.
- singlets: the band around the singlet ridge of FSC-H against FSC-A, fitted on log scales by a
  biweight (any slope: height proportional to area, or nearly flat as on some LSRs), 6 SD on the
  clean side and up to a density valley (else 4 SD) on the doublet side, SD from the clean side
  only; an FSC-W range where the instrument records width instead of height; where scatter has
  heights only (FACSCalibur), the same band on a fluorescence channel's area/height pair for the
  events bright enough to judge, or a warning that no doublet discrimination was possible.
- live: the dim population of a viability dye, cut at the density valley above it.

GatingML convention (one ``gates.xml`` per culture, every tube's gates in it): the i-th tube
(in the order given to ``gating_strategy``) gets the prefix ``t<i>_``; its gates form one chain
from the root, ``t1_time -> t1_margin -> t1_cells -> t1_singlets -> t1_live`` (skipped gates are
left out of the chain). A time gate that keeps several stretches is a BooleanGate ``or`` of
RectangleGates ``t1_time_1``, ``t1_time_2`` ... beside it at the root; a cells gate with separate
outlines (a small population apart from the main one) likewise an ``or`` of PolygonGates
``t1_cells_1``, ``t1_cells_2`` ... The tube's compensation matrix is ``t1_comp`` and its Logicle
scales ``t1_logicle_<channel>``. FlowKit applies every gate
to every sample: read tube i's counts from the ``t<i>_`` gates (with tubes of different channels,
remove the other tubes' root gates before applying).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import CytomscError
from .preprocess import LogicleParams, axis_ticks, flowkit_transform
from .results import GATE_ORDER, GateStep, Histogram2D

if TYPE_CHECKING:  # pragma: no cover
    import flowkit

    from .fcs import FcsData
    from .preprocess import Prepared

MAX_TIME_DROP = 0.30  # never drop more than this fraction of events for flow stability
TIME_WARN = 0.05  # a time gate removing more than this fraction of events is warned about
TIME_Z = 5.0
CELL_OUTSIDE = 0.005  # the cells gate leaves out this much of the cell components' mass
CELL_MASS = 1.0 - CELL_OUTSIDE  # ... and holds this much (0.995)
SINGLET_UP, SINGLET_DOWN = 4.0, 6.0  # robust SDs kept on the doublet side / the clean side
SINGLET_VALLEY_MAX = 12.0  # a density valley on the doublet side moves the cut up to this many SD
PAIR_FLOOR = 0.02  # fluorescence A/H pair: events below this share of $PnR in A cannot be judged
HIST_BINS = 64
CHUNK = 1_000_000  # events per block where a step's temporaries scale with the events
DEBRIS_SD = 0.45  # a mixture component broader than this on log FSC is a debris smear, not cells
FIT_EVENTS = 6_000  # the scatter mixture's BIC weighs model size as for this many events
FIT_MAX = 200_000  # above this many events a tube's gates are placed from a seeded subsample


@dataclass
class GateSpec:
    """One gate as placed, in terms FlowKit can rebuild under any tube prefix.

    kind: "rect" (``bounds``: channel -> (min, max), None = open) or "poly" (``vertices`` on
    ``channels``). ``logicle``: channel -> its Logicle scale, for gates on display coordinates;
    ``compensated``: whether those channels are compensated.
    """

    gate: str  # one of GATE_ORDER
    kind: str
    channels: list[str]
    bounds: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    vertices: list[tuple[float, float]] = field(default_factory=list)
    intervals: list[tuple[float, float]] = field(default_factory=list)  # time gate: kept stretches
    # several disjoint outlines (cells gate with a separate small population): their union, a
    # BooleanGate "or" of PolygonGates in GatingML; ``vertices`` is then the first of them
    rings: list[list[tuple[float, float]]] = field(default_factory=list)
    logicle: dict[str, LogicleParams] = field(default_factory=dict)
    compensated: bool = False


@dataclass
class GatingOutcome:
    """What the gates kept in one tube, how they were placed, and how to draw them."""

    masks: dict[str, np.ndarray]  # per gate in GATE_ORDER: cumulative mask (this and all before)
    steps: list[GateStep]
    warnings: list[str]
    specs: list[GateSpec] = field(default_factory=list)  # the applied gates, for GatingML
    # gates not applied, with the reason in words ("no viability dye"): the report says
    # "skipped (...)" instead of printing a count the gate never made
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def final(self) -> np.ndarray:
        """Events passing every gate applied (the last cumulative mask)."""
        return self.masks[GATE_ORDER[-1]]


# ---------------------------------------------------------------------------------------------
# Geometry shared with FlowKit


def points_in_polygon(
    x: np.ndarray, y: np.ndarray, vertices: list[tuple[float, float]]
) -> np.ndarray:
    """Even-odd rule over the polygon's edges, vectorized over events (FlowKit's rule).

    An edge can only flip events whose y lies in [its lower y, its upper y), so the events inside
    the polygon's y range are ordered by y once and each edge touches only its slice: about two
    passes over the events instead of one per vertex, with the same arithmetic per event and
    edge as the plain rule. The order is by a 16-bit bucket of y (a radix sort, linear in the
    events, where sorting the values themselves was the gates' largest cost on a 5M-event tube);
    bucketing is monotone, so an edge's slice of buckets holds every event of its y range, and
    the exact test picks them out.
    """
    v = np.asarray(vertices, dtype=float)
    shape = np.shape(x)
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.size > CHUNK:  # bounded temporaries on very large tubes
        return np.concatenate(
            [
                points_in_polygon(x[i : i + CHUNK], y[i : i + CHUNK], vertices)
                for i in range(0, x.size, CHUNK)
            ]
        ).reshape(shape)
    out = np.zeros(x.shape, dtype=bool)
    x0, y0 = v[:, 0], v[:, 1]
    lo_y, hi_y = float(y0.min()), float(y0.max())
    if not hi_y > lo_y or not x.size:
        return out.reshape(shape)
    cand = np.flatnonzero((y >= lo_y) & (y < hi_y))  # (never for NaN y)
    nb = 1 << 16
    scale = (nb - 1) / (hi_y - lo_y)
    radix = math.isfinite(scale) and scale > 0 and math.isfinite(scale * (hi_y - lo_y))

    def bucket(a: np.ndarray) -> np.ndarray:
        return np.clip((a - lo_y) * scale, 0, nb - 1).astype(np.uint16)

    if radix:
        key = bucket(y[cand])
        cand = cand[np.argsort(key, kind="stable")]  # a radix sort for 16-bit keys
        starts = np.zeros(nb + 1, dtype=np.intp)
        np.cumsum(np.bincount(key, minlength=nb), out=starts[1:])
    else:  # a y range that overflows (scatter near the float maximum): sort the values
        cand = cand[np.argsort(y[cand], kind="stable")]
    ys, xs = y[cand], x[cand]
    inside = np.zeros(ys.shape, dtype=bool)
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    for ax, ay, bx, by in zip(x0, y0, x1, y1, strict=True):
        if ay == by:
            continue
        lo, hi = min(ay, by), max(ay, by)
        if radix:
            b0, b1 = bucket(np.array([lo, hi]))
            i0, i1 = int(starts[b0]), int(starts[int(b1) + 1])
        else:
            i0, i1 = (int(i) for i in np.searchsorted(ys, (lo, hi), side="left"))
        if i1 <= i0:
            continue
        # (ay > y) != (by > y)  <=>  lo <= y < hi
        seg = ys[i0:i1]
        hit = np.flatnonzero((seg >= lo) & (seg < hi))
        if not hit.size:
            continue
        hit += i0
        xc = ax + (ys[hit] - ay) * (bx - ax) / (by - ay)
        inside[hit] ^= xs[hit] < xc
    out[cand[inside]] = True
    return out.reshape(shape)


def _polygon_mask(
    x: np.ndarray, y: np.ndarray, vertices: list[tuple[float, float]], where: np.ndarray
) -> np.ndarray:
    """``where & points_in_polygon(x, y, vertices)``, testing only the events of ``where`` inside
    the polygon's bounding box (padded so rounding at the edges cannot differ from the full
    test: outside the box no edge is crossed, or every crossing is on the same side)."""
    v = np.asarray(vertices, dtype=float)
    lo, hi = v.min(axis=0), v.max(axis=0)
    pad = 1e-9 * (hi - lo) + 1e-300
    lo, hi = lo - pad, hi + pad
    idx = np.flatnonzero(where & (x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1]))
    out = np.zeros(x.shape, dtype=bool)
    out[idx] = points_in_polygon(x[idx], y[idx], vertices)
    return out


def _rect_mask(
    cols: dict[str, np.ndarray], bounds: dict[str, tuple[float | None, float | None]], n: int
) -> np.ndarray:
    m = np.ones(n, dtype=bool)
    for ch, (lo, hi) in bounds.items():
        if lo is not None:
            m &= cols[ch] >= lo
        if hi is not None:
            m &= cols[ch] < hi
    return m


def _bin_index(v: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value on uniform ``edges`` as ``np.histogram`` assigns it (last bin closed),
    -1 outside: arithmetic, then corrected against the edges (``np.histogram2d`` would run a
    binary search per value, its whole cost on large tubes)."""
    nb = len(edges) - 1
    lo, hi = edges[0], edges[-1]
    ok = (v >= lo) & (v <= hi)
    idx = np.full(v.shape, -1, dtype=np.intp)
    w = v[ok]
    i = np.clip(((w - lo) * (nb / (hi - lo))).astype(np.intp), 0, nb - 1)
    i -= w < edges[i]
    i += (w >= edges[i + 1]) & (i != nb - 1)
    idx[ok] = i
    return idx


def _histogram(
    x: np.ndarray,
    y: np.ndarray,
    xname: str,
    yname: str,
    xr: tuple[float, float],
    yr: tuple[float, float],
    x_ticks: list | None = None,
    y_ticks: list | None = None,
) -> Histogram2D:
    xe = np.linspace(xr[0], xr[1], HIST_BINS + 1)
    ye = np.linspace(yr[0], yr[1], HIST_BINS + 1)
    flat = np.zeros(HIST_BINS * HIST_BINS)
    for i in range(0, x.size, CHUNK):  # bounded temporaries on very large tubes
        ix, iy = _bin_index(x[i : i + CHUNK], xe), _bin_index(y[i : i + CHUNK], ye)
        ok = (ix >= 0) & (iy >= 0)
        flat += np.bincount(ix[ok] * HIST_BINS + iy[ok], minlength=HIST_BINS * HIST_BINS)
    counts = flat.reshape(HIST_BINS, HIST_BINS)
    return Histogram2D(xname, yname, counts, xe, ye, x_ticks or [], y_ticks or [])


def _span(v: np.ndarray, top: float | None = None) -> tuple[float, float]:
    """Plot range of a raw scatter/time channel: from min(0, 0.1th percentile) to $PnR or max."""
    if v.size == 0:
        return 0.0, 1.0
    lo = min(0.0, float(np.percentile(v, 0.1)))
    hi = float(top) if top else float(v.max())
    hi = max(hi, float(v.max()))
    return lo, hi if hi > lo else lo + 1.0


# ---------------------------------------------------------------------------------------------
# The gates


def _robust_sd(v: np.ndarray) -> float:
    if not v.size:
        return 0.0
    dev = v - np.median(v)
    return 1.4826 * float(np.median(np.abs(dev, out=dev), overwrite_input=True))


def _time_gate(
    tp: np.ndarray, signals: Iterable[np.ndarray]
) -> tuple[list[tuple[float, float]], str, str | None]:
    """Kept time stretches [lo, hi) of the parent events, a note, and a warning if capped.

    ``tp``: the parent events' times; ``signals``: the same events' values of each channel whose
    level must stay stable (any monotone scale: only their order against the channel's median
    counts)."""
    n = tp.size
    t_lo, t_hi = float(tp.min()), float(tp.max())
    end = np.nextafter(t_hi, np.inf)
    # (a span that overflows, or is a few float steps wide, cannot be cut into bins)
    if (
        n < 500
        or not t_hi - t_lo > 1e-9 * max(abs(t_lo), abs(t_hi))
        or not np.isfinite(t_hi - t_lo)
    ):
        return [(t_lo, end)], "too few events or no time span: all kept", None
    nb = int(min(100, max(10, n // 150)))
    edges = np.linspace(t_lo, end, nb + 1)
    integer = np.all(tp == np.round(tp))
    if integer:  # bins on whole ticks, so their widths differ by at most one tick
        edges = np.unique(np.floor(edges))
        edges[-1] = end
        nb = len(edges) - 1
        if nb < 5:
            return [(t_lo, end)], "time has too few ticks to bin: all kept", None
    which = np.clip(np.searchsorted(edges, tp, side="right") - 1, 0, nb - 1)
    counts = np.bincount(which, minlength=nb).astype(float)
    widths = np.diff(edges)
    rate = counts / widths
    med_rate = float(np.median(rate))
    sd_rate = max(_robust_sd(rate), math.sqrt(max(np.median(counts), 1.0)) / np.median(widths))
    score = np.abs(rate - med_rate) / sd_rate
    for signal in signals:  # one channel at a time: few n-sized temporaries, whatever n
        # The share of a bin's events above the channel's overall median, not the bin's median:
        # a bimodal channel (a marker ~50 % positive) makes a bin's median jump between the two
        # peaks with the sampling noise of the positive fraction, which is no acquisition fault
        # (it dropped 11 % of a real, stable run), while this share moves smoothly with any shift
        # and has an exact binomial sampling error. Its power on unimodal channels is the median's.
        above = signal > np.median(signal)
        p0 = float(above.mean())
        if not 0.0 < p0 < 1.0:
            continue  # a constant channel says nothing about stability
        share = np.bincount(which, weights=above, minlength=nb) / np.maximum(counts, 1.0)
        ok = counts > 0
        if ok.sum() < 5:
            continue
        se = np.sqrt(p0 * (1.0 - p0) / np.maximum(counts, 1.0))
        sd = np.maximum(_robust_sd(share[ok]), se)
        z = np.where(ok, np.abs(share - p0) / sd, 0.0)
        score = np.maximum(score, z)
    bad = score > TIME_Z
    warning = None
    if counts[bad].sum() > MAX_TIME_DROP * n:
        keep_bad = np.zeros(nb, dtype=bool)
        dropped = 0.0
        for i in np.argsort(-score):
            if not bad[i] or dropped + counts[i] > MAX_TIME_DROP * n:
                continue
            keep_bad[i] = True
            dropped += counts[i]
        bad = keep_bad
        warning = (
            f"unstable acquisition: time bins holding more than {MAX_TIME_DROP:.0%} of "
            f"events look anomalous; only the worst {dropped / n:.1%} were dropped"
        )
    intervals: list[tuple[float, float]] = []
    for i in range(nb):
        if bad[i]:
            continue
        lo, hi = float(edges[i]), float(edges[i + 1])
        if intervals and intervals[-1][1] == lo:
            intervals[-1] = (intervals[-1][0], hi)
        else:
            intervals.append((lo, hi))
    dropped_bins = int(bad.sum())
    note = (
        f"{nb} time bins; {dropped_bins} dropped (event rate or a channel's level beyond "
        f"{TIME_Z:g} robust SD)"
        if dropped_bins
        else f"{nb} time bins; event rate and signal levels stable, all kept"
    )
    return intervals, note, warning


def _pile_bounds(v: np.ndarray, top: float | None) -> tuple[float | None, float | None, int, int]:
    """Cut points below/above values piled at the extremes (midway to the next distinct value).

    Only the two smallest and two largest distinct values and the counts of the extremes
    matter: found in a few passes over the events (sorting them all for ``np.unique`` was the
    margin gate's whole cost on large tubes)."""
    finite = v[np.isfinite(v)]
    if finite.size < 10:
        return None, None, 0, 0
    n = finite.size
    need = max(3, int(0.0005 * n))
    top_v, bottom_v = finite.max(), finite.min()
    if top_v == bottom_v:  # one distinct value: nothing beside the pile to cut to
        return None, None, 0, 0
    c_top = int(np.count_nonzero(finite == top_v))
    c_bottom = int(np.count_nonzero(finite == bottom_v))
    lo = hi = None
    n_lo = n_hi = 0
    if c_top >= need or (top and top_v >= top - 1 and c_top >= 2):
        hi, n_hi = 0.5 * (top_v + finite[finite < top_v].max()), c_top
    if c_bottom >= need:
        lo, n_lo = 0.5 * (bottom_v + finite[finite > bottom_v].min()), c_bottom
    return lo, hi, n_lo, n_hi


def _positive_ratio(a: np.ndarray, h: np.ndarray) -> bool:
    """Whether the FSC-A/FSC-H ratios of these events have a positive, finite median."""
    ok = h > 0
    if ok.sum() < 50:
        return False
    r0 = float(np.median(a[ok] / h[ok]))
    return math.isfinite(r0) and r0 > 0


def _log(v: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(v, 1.0))


@dataclass
class _Mixture:
    """A fitted 2-D Gaussian mixture: weights (k,), means (k, 2), covariances (k, 2, 2)."""

    weights: np.ndarray
    means: np.ndarray
    covs: np.ndarray
    loglik: float  # total weighted log-likelihood of the data it was fitted to
    n: float  # total weight of that data

    @property
    def k(self) -> int:
        return len(self.weights)

    def bic(self) -> float:
        return -2.0 * self.loglik + (6 * self.k - 1) * math.log(self.n)

    def log_components(self, p: np.ndarray) -> np.ndarray:
        """log(weight_i * N(p; mean_i, cov_i)) for every point and component, shape (len(p), k)."""
        return _log_gauss(p, self.means, self.covs) + np.log(self.weights)


def _log_gauss(p: np.ndarray, means: np.ndarray, covs: np.ndarray) -> np.ndarray:
    """log N(p; mean_i, cov_i) for 2-D points, closed-form 2x2 algebra (no per-call overhead)."""
    a, b, c = covs[:, 0, 0], covs[:, 0, 1], covs[:, 1, 1]
    det = a * c - b * b
    dx = p[:, :1] - means[:, 0]
    dy = p[:, 1:2] - means[:, 1]
    m2 = (c * dx * dx - 2.0 * b * dx * dy + a * dy * dy) / det
    return -0.5 * m2 - 0.5 * np.log(det) - math.log(2.0 * math.pi)


def _m_step(x: np.ndarray, r: np.ndarray, reg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights, means and covariances from weighted responsibilities ``r`` (n, k)."""
    nk = r.sum(axis=0) + 10 * np.finfo(float).eps
    means = (r.T @ x) / nk[:, None]
    covs = np.empty((len(nk), 2, 2))
    for i in range(len(nk)):
        d = x - means[i]
        covs[i] = (r[:, i, None] * d).T @ d / nk[i]
        covs[i].flat[::3] += reg
    return nk / nk.sum(), means, covs


def _fit_mixture(
    x: np.ndarray,
    w: np.ndarray,
    k: int,
    rng: np.random.Generator,
    reg: float = 1e-4,
    tol: float = 1e-3,
    max_iter: int = 100,
) -> _Mixture:
    """EM for a k-component full-covariance mixture on weighted 2-D points.

    The scatter gate needs five small fits per tube; scikit-learn's per-iteration overhead made
    them the slowest step of a run, so this is the same algorithm (k-means++ seeding, a few
    Lloyd steps, EM to a mean log-likelihood change < ``tol``, ``reg`` added to the variances)
    written for 2-D points carrying weights (histogram counts).
    """
    total = float(w.sum())
    prob = w / total
    centers = [x[rng.choice(len(x), p=prob)]]
    d2 = np.full(len(x), np.inf)
    for _ in range(1, k):
        d2 = np.minimum(d2, ((x - centers[-1]) ** 2).sum(axis=1))
        pw = w * d2
        centers.append(x[rng.choice(len(x), p=pw / pw.sum())] if pw.sum() > 0 else centers[0])
    cen = np.array(centers)
    for _ in range(10):  # Lloyd steps: a stable start for EM
        lab = ((x[:, None, :] - cen[None]) ** 2).sum(axis=2).argmin(axis=1)
        mass = np.bincount(lab, weights=w, minlength=k)
        filled = mass > 0
        for d in range(2):
            cen[filled, d] = (
                np.bincount(lab, weights=w * x[:, d], minlength=k)[filled] / mass[filled]
            )
    r = np.zeros((len(x), k))
    r[np.arange(len(x)), lab] = 1.0
    weights, means, covs = _m_step(x, r * w[:, None], reg)
    prev = -np.inf
    ll = -np.inf
    for _ in range(max_iter):
        lc = _log_gauss(x, means, covs) + np.log(weights)
        top = lc.max(axis=1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(lc - top).sum(axis=1))
        ll = float(w @ lse)
        r = np.exp(lc - lse[:, None])
        weights, means, covs = _m_step(x, r * w[:, None], reg)
        if abs(ll - prev) / total < tol:
            break
        prev = ll
    return _Mixture(weights, means, covs, ll, total)


def _binned(pts: np.ndarray, n_eff: float, bins: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Occupied cells of a bins x bins histogram of ``pts`` (centres, weights summing to n_eff).

    Every event informs the fit (no subsampling noise) at the cost of a few thousand weighted
    points; the cell width (~1/100 of the range, < 1/5 of a population's SD) biases variances
    by width^2/12, far below ``reg``-level. Weights are scaled to ``n_eff`` events so that the
    BIC weighs model size as it would for a fit on that many events, whatever the tube's size.
    """
    lo = np.percentile(pts, 0.1, axis=0) - 0.5
    hi = np.percentile(pts, 99.9, axis=0) + 0.5
    clipped = np.clip(pts, lo, hi)
    h, xe, ye = np.histogram2d(
        clipped[:, 0], clipped[:, 1], bins=bins, range=[(lo[0], hi[0]), (lo[1], hi[1])]
    )
    ix, iy = np.nonzero(h)
    xc = 0.5 * (xe[ix] + xe[ix + 1])
    yc = 0.5 * (ye[iy] + ye[iy + 1])
    w = h[ix, iy]
    return np.column_stack([xc, yc]), w * (n_eff / w.sum())


def _debris_components(gm: _Mixture, fsc_floor: float) -> np.ndarray:
    """Which mixture components are debris (log FSC in column 0; ``fsc_floor``: the 0.5th
    percentile of the events' log FSC, where the acquisition threshold cuts them).

    Debris is a smear that runs down into the threshold: a component far below the main cell
    population on FSC (more than ~2.5-fold) that either reaches the threshold (its mean - 2 SD
    within 0.5 of ``fsc_floor``) or is broad (FSC SD > DEBRIS_SD). Distance alone called any
    small cell population debris: lymphocyte-sized contaminants of an MSC culture (a third of its
    FSC) were removed entirely, hiding exactly the CD45+ cells the criteria look for. A compact
    population well above the threshold is cells, however small. The main population is the
    heaviest component that is not broad, so a tube that is mostly debris keeps its cells."""
    sd = np.sqrt(gm.covs[:, 0, 0])
    broad = sd > DEBRIS_SD
    pool = np.flatnonzero(~broad) if np.any(~broad) else np.arange(gm.k)
    main = int(pool[np.argmax(gm.weights[pool])])
    far_below = gm.means[:, 0] < gm.means[main, 0] - 0.9
    reaches = gm.means[:, 0] - 2.0 * sd < fsc_floor + 0.5
    return far_below & (reaches | broad)


def _cells_polygons(
    fa: np.ndarray, sa: np.ndarray, seed: int, names: str = "FSC-A/SSC-A"
) -> tuple[list[list[tuple[float, float]]], str]:
    """The cell populations' outlines on raw FSC-A/SSC-A (the main one first, then any separate
    island of small cells), from a mixture fitted on the log scale."""
    from contourpy import contour_generator

    rng = np.random.default_rng(seed)
    pts = np.column_stack([_log(fa), _log(sa)])
    n_eff = float(min(len(pts), FIT_EVENTS))
    xs, ws = _binned(pts, n_eff)
    best: _Mixture | None = None
    for k in (1, 2, 3, 4, 5):
        if n_eff < 50 * k or len(xs) < 3 * k:
            break
        gm = _fit_mixture(xs, ws, k, rng)
        # Every k up to 5 is fitted: stopping once BIC rises would be cheaper but is not the
        # same gate, since BIC here often rises at k = 4 and falls below k = 3 at k = 5 (it
        # moved the cells gate of 12 of the 28 validation cultures, by up to 1.5 % of events)
        if best is None or gm.bic() < best.bic():
            best = gm
    if best is None:
        raise CytomscError("too few events to place a cells gate")
    gm = best
    debris = _debris_components(gm, float(np.percentile(pts[:, 0], 0.5)))
    cells = ~debris
    main = int(np.flatnonzero(cells)[np.argmax(gm.weights[cells])])

    # each cell component's ellipse holding CELL_MASS of its mass (a union: a small population
    # such as hematopoietic contaminants keeps its own outline), where cells outweigh debris
    # the chi-square quantile of 2 degrees of freedom in closed form: -2 ln(1 - mass), equal to
    # scipy.stats.chi2.ppf(CELL_MASS, 2) to the last bit (tests/test_gating.py) without
    # importing scipy.stats (about 0.4 s a process)
    r2 = -2.0 * math.log(CELL_OUTSIDE)
    prec = np.linalg.inv(gm.covs)

    def inside_ellipses(p: np.ndarray) -> np.ndarray:
        best = np.full(len(p), -np.inf)
        for i in np.flatnonzero(cells):
            dlt = p - gm.means[i]
            m2 = np.einsum("ij,jk,ik->i", dlt, prec[i], dlt)
            best = np.maximum(best, 0.5 * (r2 - m2))
        return best

    lo = np.percentile(pts, 0.1, axis=0) - 1.0
    hi = np.percentile(pts, 99.9, axis=0) + 1.0
    gx, gy = np.linspace(lo[0], hi[0], 160), np.linspace(lo[1], hi[1], 160)
    xx, yy = np.meshgrid(gx, gy)
    grid = np.column_stack([xx.ravel(), yy.ravel()])
    dens = np.exp(gm.log_components(grid))
    pc = dens[:, cells].sum(axis=1)
    pd = dens[:, debris].sum(axis=1)
    with np.errstate(divide="ignore"):
        field = np.minimum(
            np.log(pc) - np.log(np.maximum(pd, 1e-300)), inside_ellipses(grid)
        ).reshape(xx.shape)
    field[:, [0, -1]] = -1.0
    field[[0, -1], :] = -1.0
    lines = contour_generator(gx, gy, np.nan_to_num(field, neginf=-50.0)).lines(0.0)
    rings = _outer_rings(lines, xs, ws, gm.means[main])
    if not rings:
        raise CytomscError("no cell population found on FSC/SSC")
    out = []
    top = math.log(np.finfo(float).max)  # exp capped: scatter near the float maximum stays finite
    for ring in rings:
        verts = [
            (math.exp(min(float(px), top)), math.exp(min(float(py), top)))
            for px, py in _thin(ring, 120)
        ]
        out.append(verts[:-1] if verts[0] == verts[-1] else verts)
    islands = f", {len(out)} separate outlines" if len(out) > 1 else ""
    note = (
        f"Gaussian mixture on log {names} ({gm.k} components, "
        f"{int(debris.sum())} debris); contour holding {CELL_MASS:.1%} of the cells{islands}"
    )
    return out, note


def _outer_rings(lines: Any, xs: np.ndarray, ws: np.ndarray, main: np.ndarray) -> list[np.ndarray]:
    """The closed outlines that hold cells: every outermost contour holding >= 0.2 % of the
    events (``xs``/``ws``: binned points and weights), the one around the main population first.

    A small population far from the main one (lymphocyte-sized contaminants of an MSC culture)
    has its own island of the contour; keeping only the outline around the main population
    removed it as if it were debris. Outlines inside another one (holes) and specks are left out.
    """
    total = float(ws.sum())
    kept: list[tuple[float, np.ndarray]] = []
    for ln in sorted(lines, key=_area, reverse=True):
        if len(ln) < 4:
            continue
        if any(points_in_polygon(ln[:1, 0], ln[:1, 1], other.tolist())[0] for _, other in kept):
            continue  # inside a larger outline: a hole or a nested level, not a new population
        inside = points_in_polygon(xs[:, 0], xs[:, 1], ln.tolist())
        has_main = bool(points_in_polygon(main[:1], main[1:2], ln.tolist())[0])
        mass = float(ws[inside].sum())
        if has_main or mass >= 0.002 * total:
            kept.append((mass + (1e18 if has_main else 0.0), ln))
    return [ln for _, ln in sorted(kept, key=lambda t: -t[0])]


def _area(line: np.ndarray) -> float:
    x, y = line[:, 0], line[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _joined(rings: list[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    """Several outlines as one vertex list for the report, separated by (nan, nan)."""
    out: list[tuple[float, float]] = []
    for ring in rings:
        if out:
            out.append((math.nan, math.nan))
        out.extend(ring)
    return out


def _thin(line: np.ndarray, most: int) -> np.ndarray:
    if len(line) <= most:
        return line
    step = int(math.ceil(len(line) / most))
    return line[::step]


def _valley_threshold(v: np.ndarray) -> tuple[float, str]:
    """Upper bound of the dim (live) population on a Logicle axis: the valley above its peak, or
    the peak + 5 robust SD of its lower side when no valley exists."""
    lo, hi = np.percentile(v, [0.5, 99.5])
    edges = np.linspace(lo - 0.05, hi + 0.05, 201)
    h, _ = np.histogram(v, edges)
    k = np.exp(-0.5 * (np.arange(-8, 9) / 3.0) ** 2)
    s = np.convolve(h, k / k.sum(), mode="same")
    mids = 0.5 * (edges[1:] + edges[:-1])
    peak = int(np.argmax(s))
    left = v[v <= mids[peak]]
    sd = 1.4826 * float(np.median(mids[peak] - left)) if left.size else 0.02
    limit = mids[peak] + 5 * max(sd, 0.01)
    # a valley: the lowest point after the peak that is followed by a second, real peak
    after = s[peak:]
    if len(after) > 3:
        j = int(
            np.argmin(
                after[: int(np.searchsorted(mids[peak:], limit + 0.3))]
                if np.any(mids[peak:] > limit + 0.3)
                else after
            )
        )
        valley = peak + j
        rest = s[valley:]
        if rest.size and rest.max() > 2.0 * s[valley] + 2 and mids[valley] < limit + 0.3:
            return float(mids[valley]), "density valley above the dim (live) population"
    return float(limit), "dim population's peak + 5 robust SD (no dead population seen)"


@dataclass(frozen=True)
class _SingletBand:
    """The singlet ridge on log scales, log H = offset + slope * log A, and the kept band around
    it (``lo`` <= residual <= ``hi``, natural-log units); ``sd`` is the ridge's robust SD."""

    slope: float
    offset: float
    lo: float
    hi: float
    sd: float
    doublet_side: int  # -1: doublets sit below the ridge (lower H for their A), +1: above
    valley: bool  # the doublet-side cut sits at a density valley (else at SINGLET_UP SD)

    def describe(self) -> str:
        side = (
            "density valley before the doublets"
            if self.valley
            else f"{SINGLET_UP:g} SD, no separate doublet cluster"
        )
        return (
            f"singlet ridge H ~ A^{self.slope:.2f} (biweight fit on log scales, robust SD "
            f"{self.sd:.2g}); kept {self.lo / self.sd:+.1f} to {self.hi / self.sd:+.1f} SD "
            f"around it (doublet side: {side})"
        )


def _ridge_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(slope, offset) of y = offset + slope x by Tukey's biweight (IRLS), from slope 1.

    Singlets lie on one ridge of height against area; doublets lie off it on one side. Instruments
    differ in the ridge's slope on log scales: ~1 where height is proportional to area (most), but
    ~0.05 on a cytometer whose FSC-H barely grows with cell size (a real LSR export: small
    lymphocytes at FSC-H ~70,000 over FSC-A 55,000-140,000), where a ratio band cut 2.5 % of
    doublets too few. A redescending fit gives doublets zero weight once they lie more than
    4.7 SD off, however many there are; starting from the proportional ridge (slope 1, offset
    the median log ratio) keeps the start on the singlets whenever they are the majority."""
    b = 1.0
    c = float(np.median(y - x))
    for _ in range(50):
        r = y - (c + b * x)
        s = 1.4826 * float(np.median(np.abs(r - np.median(r))))
        if not s > 0:
            break
        u = r / (4.685 * s)
        w = np.where(np.abs(u) < 1.0, (1.0 - u * u) ** 2, 0.0)
        sw = float(w.sum())
        if sw <= 0:
            break
        xm, ym = float(w @ x) / sw, float(w @ y) / sw
        sxx = float(w @ ((x - xm) ** 2))
        nb = float(w @ ((x - xm) * (y - ym))) / sxx if sxx > 0 else b
        nc = ym - nb * xm
        moved = abs(nb - b) + abs(nc - c)
        b, c = nb, nc
        if moved < 1e-7:
            break
    return b, c


def _doublet_cut(d: np.ndarray) -> tuple[float, bool]:
    """Cut on the doublet side, in SD: the density valley between the singlet ridge and a
    separate doublet cluster when there is one (searched from SINGLET_UP to SINGLET_VALLEY_MAX
    SD), else SINGLET_UP SD. ``d``: distances (in SD) of the events on the doublet side."""
    edges = np.arange(SINGLET_UP, SINGLET_VALLEY_MAX + 4.0 + 1e-9, 0.25)
    h, _ = np.histogram(d, edges)
    k = np.exp(-0.5 * (np.arange(-4, 5) / 2.0) ** 2)
    sm = np.convolve(np.pad(h.astype(float), 4, mode="edge"), k / k.sum(), mode="valid")
    last = int(np.searchsorted(edges, SINGLET_VALLEY_MAX)) - 1
    i = int(np.argmin(sm[: last + 1]))
    rest = sm[i + 1 :]
    # a cluster beyond: at least 1.5 times the valley's density (with ~50 events per smoothing
    # window, > 3 sampling SD), plus a few events so that empty tails never count
    if i > 0 and rest.size and rest.max() >= 1.5 * sm[i] + 2.0:
        return float(0.5 * (edges[i] + edges[i + 1])), True
    return SINGLET_UP, False


def _singlet_band(a: np.ndarray, h: np.ndarray) -> _SingletBand:
    """The band of singlets on a height-against-area plot (any instrument, any cell size).

    The ridge is fitted on log scales (``_ridge_fit``). Which side the doublets are on is read
    from the data: the side with more events beyond 4 SD (normally below: two cells in the beam
    add their areas but not their heights; one real LSR export has them above). The SD comes from
    the other, clean side only, so doublets cannot widen it. The clean side keeps
    SINGLET_DOWN SD; the doublet side is cut at a density valley before a doublet cluster, else
    at SINGLET_UP SD."""
    ok = (a > 0) & (h > 0)
    x, y = np.log(a[ok]), np.log(h[ok])
    if x.size < 20:  # nothing to fit: a proportional band of the conventional width
        c = float(np.median(y - x)) if x.size else 0.0
        sd = 0.05
        return _SingletBand(1.0, c, -SINGLET_DOWN * sd, SINGLET_UP * sd, sd, -1, False)
    step = max(1, x.size // 100_000)  # the fit needs no more; every event is still gated
    b, c = _ridge_fit(x[::step], y[::step])
    r = y - (c + b * x)
    s = max(1.4826 * float(np.median(np.abs(r))), 1e-4)
    side = 1 if np.count_nonzero(r > 4 * s) > np.count_nonzero(r < -4 * s) else -1
    clean = -side * r[side * r < 0]
    sd = max(1.4826 * float(np.median(clean)) if clean.size else s, 1e-4)
    cut, valley = _doublet_cut(side * r[side * r > 0] / sd)
    lo, hi = (-cut * sd, SINGLET_DOWN * sd) if side < 0 else (-SINGLET_DOWN * sd, cut * sd)
    return _SingletBand(b, c, lo, hi, sd, side, valley)


def _positive_extent(a: np.ndarray, parent: np.ndarray) -> tuple[float, float] | None:
    """The smallest and largest positive area among the parent events (None if none): the
    band's polygon must reach every event, not only those it was fitted on."""
    v = a[parent]
    pos = v[v > 0]
    return (float(pos.min()), float(pos.max())) if pos.size else None


def _band_vertices(
    band: _SingletBand,
    extent: tuple[float, float] | None,
    floor: float | None = None,
    reach: float | None = None,
) -> list[tuple[float, float]]:
    """The band as a polygon on raw (A, H): its two edges H = exp(offset + lo|hi) A^slope drawn
    through 48 areas from half the smallest positive area to twice the largest (``extent``;
    straight in linear units wherever the slope is 1, and within a small fraction of the band
    elsewhere). With ``floor``, events with A below it (too dim to judge) are inside too: a strip
    left of the band."""
    a_lo = float(floor) if floor is not None else (0.5 * extent[0] if extent else 1.0)
    a_hi = max(2.0 * extent[1] if extent else 2.0 * a_lo, 2.0 * a_lo)
    xs = np.geomspace(a_lo, a_hi, 48)
    lower = np.exp(band.offset + band.lo) * xs**band.slope
    upper = np.exp(band.offset + band.hi) * xs**band.slope
    verts = [(float(u), float(v)) for u, v in zip(xs, lower, strict=True)]
    verts += [(float(u), float(v)) for u, v in zip(xs[::-1], upper[::-1], strict=True)]
    if floor is not None:
        r = float(reach) if reach else 4.0 * max(a_hi, float(upper.max()))
        verts = [(-r, -r), (float(floor), -r), *verts, (float(floor), r), (-r, r)]
    return verts


def _fluorescence_pair(
    fcs: FcsData, names: list[str], pns: list[str], ranges: dict[str, float], parent: np.ndarray
) -> tuple[str, str, float] | None:
    """A fluorescence detector recorded as both area and height (FACSCalibur FL2-A/FL2-H, a
    Diva "-A"/"-H" pair) with enough bright events to see doublets: (area, height, floor).

    Where scatter has heights only, pulse area against height of a bright fluorescence signal is
    the only doublet evidence in the file (the classic DNA-content doublet gate). Events dimmer
    than ``PAIR_FLOOR`` of the area's $PnR are noise on a linear FL-A and cannot be judged; the
    pair needs 200 bright events and 5 % of the parent."""
    from .channels import is_fluorescence

    upper = {n.upper(): n for n in names}
    best: tuple[int, str, str, float] | None = None
    n_parent = int(parent.sum())
    for n, label in zip(names, pns, strict=False):
        if not n.upper().endswith("-A") or not is_fluorescence(n, label or ""):
            continue
        hname = upper.get(n.upper()[:-2] + "-H")
        if hname is None:
            continue
        top = ranges.get(n) or 0.0
        a = fcs.events[:, names.index(n)]
        floor = PAIR_FLOOR * (top if top > 1 else float(np.max(a[parent], initial=1.0)))
        bright = int(np.count_nonzero(parent & (a >= floor)))
        if bright >= max(200, 0.05 * n_parent) and (best is None or bright > best[0]):
            best = (bright, n, hname, floor)
    return None if best is None else (best[1], best[2], best[3])


# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# One gate a function, run in a loop over GATE_ORDER


@dataclass(frozen=True)
class TubeEvents:
    """What every gate reads from one tube: its events by channel (views, no copies), its
    channel facts, and the events the gates are placed from.

    Up to ``FIT_MAX`` events, the gates are placed from all of them. Above it (a 10^6-10^7-event
    acquisition), each gate is placed and plotted from the parent events among one seeded
    subsample of ``FIT_MAX`` (a few hundredths of a percent on any fraction, far below what
    moves a gate), and only the resulting masks are applied to every event: counts, percentages
    and exported gate channels are always of every event."""

    name: str
    channels: list[str]
    pns: list[str]
    ranges: dict[str, float]
    scatter: Any  # channels.ScatterChannels
    col: dict[str, np.ndarray]  # compensated raw units (scatter and time unchanged)
    disp: dict[str, np.ndarray]  # display scale (Logicle for fluorescence)
    logicle: dict[str, LogicleParams]
    spill_detectors: frozenset[str]
    fcs: Any  # FcsData: uncompensated events (fluorescence area/height pair)
    n: int
    seed: int
    sub: np.ndarray | None  # sorted indices of the fitting subsample; None: every event

    def pick(self, parent: np.ndarray) -> np.ndarray:
        """The parent events to place a gate from: the mask itself, or the subsample's indices
        inside it (either indexes a column the same way)."""
        return parent if self.sub is None else self.sub[parent[self.sub]]

    def span(self, ch: str, parent: np.ndarray) -> tuple[float, float]:
        return _span(self.col[ch][self.pick(parent)], self.ranges.get(ch))

    def scatter_hist(self, x: str, y: str, parent: np.ndarray) -> Histogram2D:
        pick = self.pick(parent)
        return _histogram(
            self.col[x][pick],
            self.col[y][pick],
            x,
            y,
            _span(self.col[x][pick], self.ranges.get(x)),
            _span(self.col[y][pick], self.ranges.get(y)),
        )


@dataclass
class GateResult:
    """What one gate function returns (FlowCal's per-gate form: events in, mask out, plus what
    the plot needs): ``mask`` of every event kept (parent and gate), or None when the gate was
    not applied (``skipped`` says why); its step for the report and spec for GatingML."""

    mask: np.ndarray | None
    step: GateStep | None = None
    spec: GateSpec | None = None
    warnings: list[str] = field(default_factory=list)
    skipped: str | None = None


def _step(
    tube: TubeEvents,
    gate: str,
    mask: np.ndarray,
    parent: np.ndarray,
    x: str,
    y: str | None,
    vertices: list,
    note: str,
    hist: Histogram2D | None,
) -> GateStep:
    return GateStep(
        tube.name,
        gate,
        int(parent.sum()),
        int(mask.sum()),
        x,
        y,
        [(float(a), float(b)) for a, b in vertices],
        note,
        hist,
    )


def _gate_time(tube: TubeEvents, parent: np.ndarray) -> GateResult:
    """Stable flow: the time stretches whose event rate and signal levels do not jump."""
    sc, n = tube.scatter, tube.n
    if not n:
        return GateResult(None, skipped="no events")
    if not sc.time:
        return GateResult(
            None,
            warnings=[f"{tube.name}: no Time channel; time gate skipped"],
            skipped="no Time channel",
        )
    warnings = []
    fsc, ssc = sc.fsc, sc.ssc
    t = tube.col[sc.time]
    pick = tube.pick(parent)
    sig_names = [c for c in (fsc, ssc) if c] + list(tube.logicle)
    signals = (tube.disp[c][pick] for c in sig_names)  # one channel's copy at a time
    intervals, note, warn = _time_gate(t[pick], signals)
    if warn:
        warnings.append(f"{tube.name}: {warn}")
    m = np.zeros(n, dtype=bool)
    for lo, hi in intervals:
        m |= (t >= lo) & (t < hi)
    new = parent & m
    removed = 1.0 - new.sum() / max(int(parent.sum()), 1)
    if removed > TIME_WARN and not warn:
        warnings.append(
            f"{tube.name}: the time gate removed {removed:.1%} of events "
            f"(more than {TIME_WARN:.0%}): the flow was unstable in the hatched "
            "stretches of the gating page; check the acquisition"
        )
    yname = fsc or tube.channels[0]
    hist = _histogram(
        t[pick], tube.col[yname][pick], sc.time, yname, _span(t[pick]), tube.span(yname, parent)
    )
    return GateResult(
        new,
        _step(tube, "time", new, parent, sc.time, yname, intervals, note, hist),
        GateSpec("time", "rect", [sc.time], intervals=intervals),
        warnings,
    )


def _gate_margin(tube: TubeEvents, parent: np.ndarray) -> GateResult:
    """Events piled at the top ($PnR) or bottom of FSC/SSC (every parent event counted)."""
    fsc, ssc = tube.scatter.fsc, tube.scatter.ssc
    if not (fsc and ssc and tube.n):
        return GateResult(None, skipped="no FSC/SSC pair" if tube.n else "no events")
    bounds: dict[str, tuple[float | None, float | None]] = {}
    notes = []
    for ch in dict.fromkeys((fsc, ssc)):
        low, high, n_lo, n_hi = _pile_bounds(tube.col[ch][parent], tube.ranges.get(ch))
        if low is not None or high is not None:
            bounds[ch] = (low, high)
            if n_hi:
                notes.append(f"{n_hi} piled at the top of {ch}")
            if n_lo:
                notes.append(f"{n_lo} piled at the bottom of {ch}")
    new = parent & _rect_mask(tube.col, bounds, tube.n)
    x0, x1 = tube.span(fsc, parent)
    y0, y1 = tube.span(ssc, parent)
    (bx0, bx1), (by0, by1) = bounds.get(fsc, (None, None)), bounds.get(ssc, (None, None))
    bx = (bx0 if bx0 is not None else x0, bx1 if bx1 is not None else x1)
    by = (by0 if by0 is not None else y0, by1 if by1 is not None else y1)
    verts = [(bx[0], by[0]), (bx[1], by[0]), (bx[1], by[1]), (bx[0], by[1])]
    note = "; ".join(notes) if notes else "no events piled at the scatter margins"
    step = _step(
        tube, "margin", new, parent, fsc, ssc, verts, note, tube.scatter_hist(fsc, ssc, parent)
    )
    return GateResult(
        new, step, GateSpec("margin", "rect", list(bounds), bounds=bounds) if bounds else None
    )


def _gate_cells(tube: TubeEvents, parent: np.ndarray) -> GateResult:
    """Cells, not debris: outlines of a Gaussian mixture on log FSC/SSC."""
    fsc, ssc = tube.scatter.fsc, tube.scatter.ssc
    if not (fsc and ssc and parent.sum() >= 100):
        return GateResult(
            None,
            warnings=[f"{tube.name}: no FSC/SSC pair or too few events; cells gate skipped"],
            skipped="no FSC/SSC pair" if not (fsc and ssc) else "fewer than 100 events left",
        )
    pick = tube.pick(parent)
    rings, note = _cells_polygons(
        tube.col[fsc][pick], tube.col[ssc][pick], tube.seed, f"{fsc}/{ssc}"
    )
    new = np.zeros(tube.n, dtype=bool)
    for ring in rings:
        new |= _polygon_mask(tube.col[fsc], tube.col[ssc], ring, parent & ~new)
    step = _step(
        tube,
        "cells",
        new,
        parent,
        fsc,
        ssc,
        _joined(rings),
        note,
        tube.scatter_hist(fsc, ssc, parent),
    )
    return GateResult(
        new,
        step,
        GateSpec(
            "cells", "poly", [fsc, ssc], vertices=rings[0], rings=rings if len(rings) > 1 else []
        ),
    )


def _gate_singlets(tube: TubeEvents, parent: np.ndarray) -> GateResult:
    """Single cells: a band around the singlet ridge of FSC-H against FSC-A, else an FSC-W
    range, else the same band on a fluorescence area/height pair; or why none was possible."""
    sc, name = tube.scatter, tube.name
    left = int(parent.sum())
    pair = (
        None
        if (sc.fsc_a and sc.fsc_h) or sc.fsc_w
        else _fluorescence_pair(tube.fcs, tube.channels, tube.pns, tube.ranges, parent)
    )
    ratio_ok = False
    if sc.fsc_a and sc.fsc_h:
        pick = tube.pick(parent)
        ratio_ok = _positive_ratio(tube.col[sc.fsc_a][pick], tube.col[sc.fsc_h][pick])
    warnings = []
    if sc.fsc_a and sc.fsc_h and left >= 50 and not ratio_ok:
        # (zero or negative FSC-A/FSC-H: no band to place; FSC-W may serve)
        warnings.append(f"{name}: FSC-A/FSC-H ratios are not positive; no singlets gate on them")
    if ratio_ok and left >= 50:
        res = _singlets_on_height(tube, parent)
    elif sc.fsc_w and left >= 50:
        res = _singlets_on_width(tube, parent)
    elif pair is not None and left >= 50:
        res = _singlets_on_pair(tube, parent, pair)
    elif sc.fsc_a and sc.fsc_h and left >= 50:  # the ratios were not positive (above)
        res = GateResult(None, skipped="FSC-A/FSC-H ratios are not positive")
    elif (sc.fsc_a and sc.fsc_h) or sc.fsc_w or pair is not None:
        res = GateResult(
            None,
            warnings=[f"{name}: fewer than 50 events left to place the singlets gate; skipped"],
            skipped="fewer than 50 events left",
        )
    elif sc.fsc_h and not sc.fsc_a:
        res = GateResult(
            None,
            warnings=[
                f"{name}: no doublet discrimination was possible: the scatter channels are heights "
                "only (no FSC-A or FSC-W) and no fluorescence channel recorded as both area and "
                "height is bright enough in this tube; singlets gate skipped"
            ],
            skipped="no doublet discrimination possible (heights only)",
        )
    else:
        res = GateResult(
            None,
            warnings=[
                f"{name}: no FSC-H or FSC-W channel and no fluorescence area/height pair: no "
                "doublet discrimination was possible; singlets gate skipped"
            ],
            skipped="no FSC-H or FSC-W channel",
        )
    res.warnings[:0] = warnings
    return res


def _singlets_on_height(tube: TubeEvents, parent: np.ndarray) -> GateResult:
    sc = tube.scatter
    a, h = tube.col[sc.fsc_a], tube.col[sc.fsc_h]
    pick = tube.pick(parent)
    band = _singlet_band(a[pick], h[pick])
    verts = _band_vertices(band, _positive_extent(a, parent))
    new = _polygon_mask(a, h, verts, parent)
    step = _step(
        tube,
        "singlets",
        new,
        parent,
        sc.fsc_a,
        sc.fsc_h,
        verts,
        f"FSC-H against FSC-A: {band.describe()}",
        tube.scatter_hist(sc.fsc_a, sc.fsc_h, parent),
    )
    return GateResult(new, step, GateSpec("singlets", "poly", [sc.fsc_a, sc.fsc_h], vertices=verts))


def _singlets_on_width(tube: TubeEvents, parent: np.ndarray) -> GateResult:
    sc = tube.scatter
    w = tube.col[sc.fsc_w]
    wv = w[tube.pick(parent)]
    w0 = float(np.median(wv))
    below = w0 - wv[wv < w0]
    sd = max(1.4826 * float(np.median(below)) if below.size else 0.05 * abs(w0), 1e-9)
    lo, hi = w0 - SINGLET_DOWN * sd, w0 + SINGLET_UP * sd
    new = parent & (w >= lo) & (w < hi)
    x = sc.fsc_a or sc.fsc or sc.fsc_w  # a file may record FSC-W without FSC-A or FSC-H
    x0, x1 = tube.span(x, parent)
    verts = [(x0, lo), (x1, lo), (x1, hi), (x0, hi)]
    note = f"FSC-W {w0:.4g} (robust SD {sd:.2g} on the singlet side); kept {lo:.4g}-{hi:.4g}"
    step = _step(
        tube,
        "singlets",
        new,
        parent,
        x,
        sc.fsc_w,
        verts,
        note,
        tube.scatter_hist(x, sc.fsc_w, parent),
    )
    return GateResult(
        new, step, GateSpec("singlets", "rect", [sc.fsc_w], bounds={sc.fsc_w: (lo, hi)})
    )


def _singlets_on_pair(
    tube: TubeEvents, parent: np.ndarray, pair: tuple[str, str, float]
) -> GateResult:
    ach, hch, floor = pair
    names = tube.channels
    a, h = tube.fcs.events[:, names.index(ach)], tube.fcs.events[:, names.index(hch)]
    bright = parent & (a >= floor)
    pick = tube.pick(bright)
    band = _singlet_band(a[pick], h[pick])
    verts = _band_vertices(band, _positive_extent(a, bright), floor=floor)
    new = _polygon_mask(a, h, verts, parent)
    dim = int((parent & ~bright).sum())
    note = (
        f"{hch} against {ach} (scatter has heights only): {band.describe()}; "
        f"{dim} events dimmer than {floor:g} in {ach} cannot be judged and are kept"
    )
    at = tube.pick(parent)
    hist = _histogram(
        a[at],
        h[at],
        ach,
        hch,
        _span(a[at], tube.ranges.get(ach)),
        _span(h[at], tube.ranges.get(hch)),
    )
    return GateResult(
        new,
        _step(tube, "singlets", new, parent, ach, hch, verts, note, hist),
        GateSpec("singlets", "poly", [ach, hch], vertices=verts),
    )


def _gate_live(tube: TubeEvents, parent: np.ndarray) -> GateResult:
    """Live cells: the dim population of a viability dye, cut at the density valley above."""
    from .channels import find_viability

    via = find_viability(tube.channels, tube.pns)
    if not via:
        return GateResult(
            None,
            warnings=[f"{tube.name}: no viability dye channel; live gate skipped"],
            skipped="no viability dye",
        )
    if via not in tube.logicle or parent.sum() < 50:
        return GateResult(
            None,
            skipped="fewer than 50 events left"
            if via in tube.logicle
            else f"{via} is not on a fluorescence scale",
        )
    p = tube.logicle[via]
    v = tube.disp[via]
    pick = tube.pick(parent)
    thr, how = _valley_threshold(v[pick])
    new = parent & (v < thr)
    y = tube.scatter.fsc or via
    yv = tube.disp[y] if y in tube.logicle else tube.col[y]
    y_span = (0.0, 1.0) if y in tube.logicle else tube.span(y, parent)
    hist = _histogram(v[pick], yv[pick], via, y, (0.0, 1.0), y_span, axis_ticks(p))
    step = _step(tube, "live", new, parent, via, None, [(0.0, thr)], f"{via}: {how}", hist)
    return GateResult(
        new,
        step,
        GateSpec(
            "live",
            "rect",
            [via],
            bounds={via: (None, thr)},
            logicle={via: p},
            compensated=via in tube.spill_detectors,
        ),
    )


GATES = {
    "time": _gate_time,
    "margin": _gate_margin,
    "cells": _gate_cells,
    "singlets": _gate_singlets,
    "live": _gate_live,
}  # in GATE_ORDER


def tube_events(prep: Prepared, fcs: FcsData, tube_name: str, seed: int = 0) -> TubeEvents:
    """One tube's events as the gates read them (see ``TubeEvents``)."""
    from .channels import find_scatter

    names = prep.channels
    pns = [c.pns for c in fcs.channels]
    n = prep.compensated.shape[0]
    sub = None
    if n > FIT_MAX:
        sub = np.sort(np.random.default_rng([seed, 3]).choice(n, FIT_MAX, replace=False))
    return TubeEvents(
        name=tube_name,
        channels=names,
        pns=pns,
        ranges={c.pnn: float(c.range) for c in fcs.channels},
        scatter=find_scatter(names, pns),
        col={ch: prep.compensated[:, j] for j, ch in enumerate(names)},
        disp={ch: prep.display[:, j] for j, ch in enumerate(names)},
        logicle=dict(prep.logicle),
        spill_detectors=frozenset(prep.spill[0]) if prep.spill is not None else frozenset(),
        fcs=fcs,
        n=n,
        seed=seed,
        sub=sub,
    )


def gate_tube(prep: Prepared, fcs: FcsData, tube_name: str, seed: int = 0) -> GatingOutcome:
    """Place and apply the automatic gates on one tube, one gate function after another in
    GATE_ORDER, each on the events the previous ones kept (see the module docstring)."""
    from threadpoolctl import threadpool_limits

    tube = tube_events(prep, fcs, tube_name, seed)
    finite = np.ones(tube.n, dtype=bool)
    for j in range(len(tube.channels)):  # per column: no (events x channels) temporary
        finite &= np.isfinite(prep.compensated[:, j])
    if tube.n and not finite.any():
        raise CytomscError("every event holds a NaN or infinite value")
    warnings: list[str] = []
    if not finite.all():
        warnings.append(
            f"{tube_name}: {int((~finite).sum())} events with NaN/infinite values excluded"
        )
    masks: dict[str, np.ndarray] = {}
    steps: list[GateStep] = []
    specs: list[GateSpec] = []
    skipped: dict[str, str] = {}
    current = finite
    # Small vector and matrix products: BLAS threads only contend (the singlet ridge's dot
    # products spent 0.7 CPU-s a culture spinning on a loaded 2-core machine), and one thread
    # makes every sum independent of the number of cores.
    with threadpool_limits(1):
        for gate in GATE_ORDER:
            res = GATES[gate](tube, current)
            warnings.extend(res.warnings)
            if res.mask is None:
                skipped[gate] = res.skipped or "not applied"
            else:
                current = res.mask
                if res.step is not None:
                    steps.append(res.step)
                if res.spec is not None:
                    specs.append(res.spec)
            masks[gate] = current.copy()
    return GatingOutcome(masks, steps, warnings, specs, skipped)


# ---------------------------------------------------------------------------------------------
# FlowKit objects and GatingML


def _flowkit_gates(
    spec: GateSpec, prefix: str, comp_id: str | None
) -> tuple[list[Any], dict[str, LogicleParams]]:
    """FlowKit gates for one spec: [(gate, at_root)], and the transforms they reference."""
    from flowkit import Dimension, gates

    name = f"{prefix}{spec.gate}"
    xforms: dict[str, LogicleParams] = {}

    def dim(ch: str, lo: float | None = None, hi: float | None = None) -> Any:
        xref = None
        if ch in spec.logicle:
            xref = f"{prefix}logicle_{ch}"
            xforms[xref] = spec.logicle[ch]
        cref = comp_id if (spec.compensated and comp_id) else "uncompensated"
        return Dimension(
            ch, compensation_ref=cref, transformation_ref=xref, range_min=lo, range_max=hi
        )

    if spec.intervals:
        ch = spec.channels[0]
        if len(spec.intervals) == 1:
            lo, hi = spec.intervals[0]
            return [(gates.RectangleGate(name, [dim(ch, lo, hi)]), False)], xforms
        parts = [
            (gates.RectangleGate(f"{name}_{i + 1}", [dim(ch, lo, hi)]), True)
            for i, (lo, hi) in enumerate(spec.intervals)
        ]
        refs = [{"ref": g.gate_name, "path": ("root",), "complement": False} for g, _ in parts]
        return [*parts, (gates.BooleanGate(name, "or", refs), False)], xforms
    if spec.kind == "rect":
        dims = [dim(ch, *spec.bounds[ch]) for ch in spec.channels]
        return [(gates.RectangleGate(name, dims), False)], xforms
    dims = [dim(ch) for ch in spec.channels]
    if spec.rings:
        parts = [
            (
                gates.PolygonGate(
                    f"{name}_{i + 1}", [dim(ch) for ch in spec.channels], [list(v) for v in ring]
                ),
                True,
            )
            for i, ring in enumerate(spec.rings)
        ]
        refs = [{"ref": g.gate_name, "path": ("root",), "complement": False} for g, _ in parts]
        return [*parts, (gates.BooleanGate(name, "or", refs), False)], xforms
    return [(gates.PolygonGate(name, dims, [list(v) for v in spec.vertices]), False)], xforms


def gating_strategy(outcomes: dict[str, tuple[Prepared, GatingOutcome]]) -> flowkit.GatingStrategy:
    """One FlowKit GatingStrategy holding every tube's gates (prefix ``t<i>_``, in dict order)."""
    from flowkit import GatingStrategy, Matrix

    gs = GatingStrategy()
    for i, (_, (prep, outcome)) in enumerate(outcomes.items(), start=1):
        prefix = f"t{i}_"
        comp_id = None
        if prep.spill is not None and any(s.compensated for s in outcome.specs):
            comp_id = f"{prefix}comp"
            detectors = list(prep.spill[0])
            gs.add_comp_matrix(comp_id, Matrix(prep.spill[1], detectors, detectors))
        path: tuple[str, ...] = ("root",)
        for spec in outcome.specs:
            made, xforms = _flowkit_gates(spec, prefix, comp_id)
            for xid, p in xforms.items():
                gs.add_transform(xid, flowkit_transform(p))
            for gate, at_root in made:
                gs.add_gate(gate, ("root",) if at_root else path)
            path = (*path, made[-1][0].gate_name)
    return gs


def write_gatingml(strategy: flowkit.GatingStrategy, path: Path) -> None:
    """Write the strategy as GatingML 2.0, atomically (``output.atomic_file``)."""
    from flowkit import export_gatingml

    from .output import atomic_file

    with atomic_file(Path(path)) as tmp, open(tmp, "wb") as fh:
        export_gatingml(strategy, fh)
