"""Thresholds from controls and % positive with confidence intervals.

All comparisons are made on compensated values in the channel's raw units. The display transform
(logicle) is monotone, so a threshold means the same on either scale; working in raw units keeps the
numbers independent of how the plots are scaled.

Control rule: the threshold is the ``percentile`` (default 99.5) of the control's gated events, so
that at most 0.5 % of the control lies above it. The best control for a marker is its FMO tube, else
an isotype tube, else the unstained tube. Without any control the threshold is the density valley
between the negative and positive peaks (flowDensity-style); it is recorded as ``auto``.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054
MIN_SPAN = 1e-3  # display units (Logicle 0..1): the narrowest range a density is binned over


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval for k of n, in percent.

    Wilson rather than the normal approximation because QC percentages sit near 0 % and 100 %, where
    the normal interval leaves [0, 100] and covers badly.
    """
    if n <= 0:
        return (0.0, 100.0)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (100.0 * max(0.0, centre - half), 100.0 * min(1.0, centre + half))


def control_threshold(control: np.ndarray, percentile: float = 99.5) -> float:
    """The value above which ``100 - percentile`` % of the control's events lie."""
    values = control[np.isfinite(control)]
    if values.size == 0:
        raise ValueError("control has no events")
    return float(np.percentile(values, percentile))


def percent_above(values: np.ndarray, threshold: float) -> tuple[float, tuple[float, float], int]:
    """% of events strictly above ``threshold``, its Wilson interval and the event count."""
    n = int(values.size)
    k = int(np.count_nonzero(values > threshold))
    pct = 100.0 * k / n if n else float("nan")
    return pct, wilson_interval(k, n), n


def _smooth_density(y: np.ndarray, bins: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of ``y`` smoothed with a Gaussian kernel: a cheap, deterministic KDE.

    Bounded whatever the data: the bins span at least ``MIN_SPAN`` (a channel whose values lie a
    few float steps apart would otherwise ask for bins narrower than floats can hold), and the
    kernel is never longer than the bins (a spread far wider than the binned range, as when one
    value holds nearly every event or only a handful are left, made it longer than the
    histogram, or unbounded). Neither bound is reached by 50 or more events of a real channel.
    """
    lo, hi = (float(v) for v in np.percentile(y, [0.1, 99.9]))
    if not hi - lo >= MIN_SPAN:
        mid = 0.5 * (lo + hi)
        lo, hi = mid - 0.5 * MIN_SPAN, mid + 0.5 * MIN_SPAN
    counts, edges = np.histogram(y, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    # Silverman's bandwidth, in bins.
    sd = float(np.std(y))
    iqr = float(np.subtract(*np.percentile(y, [75, 25])))
    bw = 0.9 * min(sd, iqr / 1.34 if iqr > 0 else sd) * y.size**-0.2
    width = min(max(1.0, bw / (edges[1] - edges[0])), (bins - 1) / 8)  # kernel <= bins long
    k = np.arange(-int(4 * width), int(4 * width) + 1)
    kernel = np.exp(-0.5 * (k / width) ** 2)
    density = np.convolve(counts.astype(float), kernel / kernel.sum(), mode="same")
    return centres, density


def valley_threshold(display: np.ndarray, min_peak_fraction: float = 0.03) -> float | None:
    """The deepest valley between the two main peaks of a 1-D distribution (display scale).

    Returns None when the distribution has a single peak: then no valley can be trusted and the
    caller decides (the unstained population alone, or the stained alone).
    """
    y = display[np.isfinite(display)]
    if y.size < 50:
        return None
    x, d = _smooth_density(y)
    peaks = [i for i in range(1, len(d) - 1) if d[i] >= d[i - 1] and d[i] > d[i + 1]]
    peaks = [i for i in peaks if d[i] >= min_peak_fraction * d.max()]
    if len(peaks) < 2:
        return None
    # The two highest peaks, then the lowest point between them.
    a, b = sorted(sorted(peaks, key=lambda i: d[i])[-2:])
    valley = a + int(np.argmin(d[a : b + 1]))
    if d[valley] > 0.8 * min(d[a], d[b]):  # too shallow to be a valley
        return None
    return float(x[valley])


def _lower_gaussian(v: np.ndarray) -> tuple[float, float]:
    """Centre and SD of a population read from its lower tail only (the 2.3rd and 15.9th
    percentiles are -2 and -1 SD of a normal population), which a positive minority above it does
    not reach."""
    p2, p16 = np.percentile(v, [2.275, 15.865])
    sd = float(p16 - p2)
    return float(p16) + sd, sd


def matched_threshold(
    control: np.ndarray, stained: np.ndarray, percentile: float = 99.5, shift: bool = False
) -> tuple[float, float, float]:
    """The control's threshold, matched to the stained tube's negative cells.

    An isotype or unstained control carries no other bright dye, so it lacks the spillover
    spreading that bright markers in other channels add to the stained tube's negative cells
    (what an FMO control captures). The spread of each negative population is read from its lower
    tail, and the control's distance from its centre to its threshold is scaled by the ratio
    (only ever widened). With ``shift`` (for an unstained control, which lacks the antibodies'
    background binding as well) the threshold also moves up with the stained negatives' centre.
    Only for channels whose stained events are mostly negative (their bulk within twice the
    control's threshold distance): otherwise the lower tail is not the negatives'. Returns
    (threshold, spread ratio, shift); ratio 1.0 and shift 0.0 when nothing was matched.
    """
    thr = control_threshold(control, percentile)
    c = control[np.isfinite(control)]
    v = stained[np.isfinite(stained)]
    if v.size < 100 or c.size < 100:
        return thr, 1.0, 0.0
    c_mid, c_sd = _lower_gaussian(c)
    v_mid, v_sd = _lower_gaussian(v)
    # Mostly negative: the stained bulk lies within twice the control's threshold distance (a
    # positive population sits decades above, background binding only a few SD).
    if c_sd <= 0 or v_sd <= 0 or v_mid > c_mid + 2.0 * (thr - c_mid):
        return thr, 1.0, 0.0
    ratio = v_sd / c_sd
    ratio = ratio if ratio > 1.05 else 1.0  # within sampling noise of the control's own spread
    moved = max(0.0, v_mid - c_mid) if shift else 0.0
    return c_mid + (thr - c_mid) * ratio + moved, ratio, moved


def auto_threshold_display(display: np.ndarray, negative_below: float = 0.5) -> float:
    """Threshold on the display scale (logicle, 0..1) without a control.

    Two peaks: the valley between them. One peak: where it sits decides what it is. On a logicle
    scale of 4.5 decades up to the channel's top, negative cells (autofluorescence, compensated to
    around zero) sit in the lower half and stained positives one to three decades higher, so a
    single peak below ``negative_below`` is the negative population (threshold 3 SD above it, the SD
    from its lower side, which positive events do not reach) and one above is the positive
    population (threshold 3 SD below it, from its upper side).
    """
    valley = valley_threshold(display)
    if valley is not None:
        return valley
    y = display[np.isfinite(display)]
    if y.size == 0:
        raise ValueError("no finite values to place a threshold on")
    x, d = _smooth_density(y)
    mode = float(x[int(np.argmax(d))])
    lower = y[y <= mode]
    upper = y[y >= mode]
    sd_low = float(np.sqrt(np.mean((lower - mode) ** 2))) if lower.size > 1 else 1e-3
    sd_high = float(np.sqrt(np.mean((upper - mode) ** 2))) if upper.size > 1 else 1e-3
    if mode < negative_below:
        return mode + 3.0 * max(sd_low, 1e-3)
    return mode - 3.0 * max(sd_high, 1e-3)
