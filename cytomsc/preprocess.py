"""Compensation and display scales: spillover from the file or a CSV, fast numpy Logicle.

FlowKit is the reference for both steps and stays the engine of record (the gates exported to
GatingML carry FlowKit's own ``Matrix`` and ``LogicleTransform``), but its Logicle solves a root per
event in C and is the slowest stage of a run. Here the Logicle is tabulated once per parameter set
on a uniform grid in ``u = asinh(x / s)`` (``s`` chosen so the curve is nearly a straight line in
``u``) and read back by linear interpolation: one ``asinh`` and two table look-ups per event, within
1e-7 of FlowKit (the tests check 1e-4 on wide ranges, negatives included). Values outside the table
(beyond 1000 x T), and arrays too small to pay for a table (< 20,000 values), are solved exactly
with Halley's method, as FlowKit does.

Coordinates, stated once: ``Prepared.compensated`` is in compensated raw channel units;
``Prepared.display`` is the Logicle scale (0..1, T at 1) for fluorescence channels and the raw,
unscaled values for scatter and time (so scatter gates need no transform to be re-applied).
"""

from __future__ import annotations

import csv
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import CytomscError

if TYPE_CHECKING:  # pragma: no cover
    import flowkit

    from .fcs import FcsData

DEFAULT_M = 4.5
DEFAULT_W = 0.5  # used when a channel has too few negative events to measure their spread
MIN_NEGATIVES = 50
_TABLE_STEP = 1e-3  # grid step in u; the interpolation error is ~ step^2 * |y''| / 8 < 1e-7
_TABLE_REACH = 1e3  # the table covers |x| <= _TABLE_REACH * T
_SMALL = 20_000  # below this many values, solving each exactly is cheaper than building a table


@dataclass(frozen=True)
class LogicleParams:
    """Logicle parameters in FlowKit/GatingML terms: top T, width W, decades M, extra negative A."""

    t: float
    w: float
    m: float = DEFAULT_M
    a: float = 0.0


# ---------------------------------------------------------------------------------------------
# Compensation


def spillover_matrix(
    fcs: FcsData, comp: str | Path | None
) -> tuple[list[str], np.ndarray] | None:
    """The spillover to apply: the file's own (``None``/"file"), none ("none"), or a CSV's.

    The CSV has a header row of detector names (PnN) and one numeric row per detector, optionally
    led by the detector's name; rows are spillover *from* that detector, as in ``$SPILLOVER``.
    """
    if comp is None or (isinstance(comp, str) and comp.lower() == "file"):
        spill = fcs.spillover
        if spill is None:
            return None
        names, matrix = list(spill[0]), np.asarray(spill[1], dtype=float)
        _check_matrix(names, matrix, _pnn(fcs), getattr(fcs, "path", None), "the file's $SPILLOVER")
        return names, matrix
    if isinstance(comp, str) and comp.lower() == "none":
        return None
    path = Path(comp)
    names, matrix = _read_comp_csv(path)
    _check_matrix(names, matrix, _pnn(fcs), path, "the compensation CSV")
    return names, matrix


def _pnn(fcs: FcsData) -> list[str]:
    return [c.pnn for c in fcs.channels]


def _read_comp_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """Parse a detector-named CSV matrix; every malformation is one CytomscError naming the file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise CytomscError(f"cannot read compensation matrix ({err.__class__.__name__})",
                           path) from None
    sample = text[:4096]
    delimiter = "\t" if sample.count("\t") > sample.count(",") else ","
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    rows = [[cell.strip() for cell in row] for row in reader]
    rows = [r for r in rows if any(r)]
    if len(rows) < 2:
        raise CytomscError("compensation matrix needs a header row of detector names and rows "
                           "of numbers", path)
    header = rows[0]
    if header and header[0].lstrip("#").strip() == "":
        header = header[1:]  # a blank top-left cell: rows are led by names
    n = len(header)
    if n == 0 or any(not h for h in header):
        raise CytomscError("compensation matrix header has empty detector names", path)
    if len(set(header)) != n:
        raise CytomscError("compensation matrix header repeats a detector name", path)
    body = rows[1:]
    if len(body) != n:
        raise CytomscError(f"compensation matrix has {n} detectors but {len(body)} rows", path)
    values = []
    for i, row in enumerate(body, start=2):
        if len(row) == n + 1:
            if row[0] != header[i - 2]:
                raise CytomscError(
                    f"row {i} is named '{row[0]}' but column {i - 1} is '{header[i - 2]}'", path)
            row = row[1:]
        if len(row) != n:
            raise CytomscError(f"row {i} has {len(row)} values, expected {n}", path)
        try:
            values.append([float(v) for v in row])
        except ValueError:
            raise CytomscError(f"row {i} holds a value that is not a number", path) from None
    return header, np.array(values, dtype=float)


def _check_matrix(names: list[str], matrix: np.ndarray, channels: list[str],
                  path: str | Path | None, what: str) -> None:
    n = len(names)
    if matrix.shape != (n, n):
        raise CytomscError(f"{what} is {matrix.shape} for {n} detectors", path)
    twice = sorted({d for d in names if names.count(d) > 1})
    if twice:  # one column would be compensated twice and another not at all
        raise CytomscError(f"{what} names a detector twice: {', '.join(twice)}", path)
    missing = [d for d in names if d not in channels]
    if missing:
        raise CytomscError(f"{what} names detectors not in the file: {', '.join(missing)}", path)
    if not np.all(np.isfinite(matrix)):
        raise CytomscError(f"{what} holds non-finite values", path)
    if np.linalg.cond(matrix) > 1e12:
        raise CytomscError(f"{what} is singular and cannot be inverted", path)


def compensate(events: np.ndarray, channel_names: list[str],
               spill: tuple[list[str], np.ndarray] | None) -> np.ndarray:
    """Compensated copy of ``events``: detector columns times the inverse spillover, once.

    Same result as FlowKit's ``Sample.apply_compensation`` (which solves a least-squares system per
    call); other columns are copied unchanged. The inverse is embedded in a p x p identity and
    applied as one product on the transposed view: a tall-skinny ``events @ M`` or a column gather
    on row-major events costs ten times more with OpenBLAS. The result is column-major (Fortran
    order) so that each channel, which is what every later stage reads, is contiguous.
    """
    a = np.asarray(events, dtype=np.float64)
    if spill is None:
        return np.array(a, order="F", copy=True)
    names, matrix = spill
    idx = [channel_names.index(d) for d in names]
    full = np.eye(a.shape[1])
    full[np.ix_(idx, idx)] = np.linalg.inv(matrix)
    out = (full.T @ a.T).T  # identity columns are exact for finite values (x*1 + 0*y = x)
    if not np.isfinite(out).all():  # 0*inf would have spread NaN into untouched columns
        other = [j for j in range(a.shape[1]) if j not in set(idx)]
        out[:, other] = a[:, other]
    return out


# ---------------------------------------------------------------------------------------------
# Logicle


@dataclass(frozen=True)
class _Coef:
    """Moore & Parks (2012) biexponential constants of one parameter set."""

    a: float
    b: float
    c: float
    d: float
    f: float
    x1: float
    x_taylor: float
    taylor: tuple[float, ...]


def _solve_d(b: float, w: float) -> float:
    """Root d of 2(ln d - ln b) + w(b + d) = 0 in (0, b]: safeguarded Newton, as the C code."""
    if w == 0:
        return b
    lo, hi = 0.0, b
    d = b / 2
    for _ in range(200):
        f = 2 * (math.log(d) - math.log(b)) + w * (b + d)
        if f < 0:
            lo = d
        else:
            hi = d
        step = f / (2 / d + w)
        nd = d - step
        d = nd if lo < nd < hi else (lo + hi) / 2
        if abs(step) < 2 * b * np.finfo(float).eps:
            break
    return d


@functools.lru_cache(maxsize=256)
def _coef(p: LogicleParams) -> _Coef:
    w = p.w / (p.m + p.a)
    x2 = p.a / (p.m + p.a)
    x1 = x2 + w
    x0 = x2 + 2 * w
    b = (p.m + p.a) * math.log(10)
    d = _solve_d(b, w)
    c_a = math.exp(x0 * (b + d))
    mf_a = math.exp(b * x1) - c_a / math.exp(d * x1)
    a = p.t / (math.exp(b) - mf_a - c_a / math.exp(d))
    c = c_a * a
    f = -mf_a * a
    pos, neg = a * math.exp(b * x1), -c / math.exp(d * x1)
    taylor = []
    for i in range(16):
        pos *= b / (i + 1)
        neg *= -d / (i + 1)
        taylor.append(pos + neg)
    taylor[1] = 0.0  # exactly zero by construction of d
    return _Coef(a, b, c, d, f, x1, x1 + w / 4, tuple(taylor))


def _biexp(y: np.ndarray, k: _Coef) -> np.ndarray:
    """B(y) for y >= x1 (the Taylor series near x1 keeps the cancellation accurate)."""
    out = (k.a * np.exp(k.b * y) + k.f) - k.c * np.exp(-k.d * y)
    near = y < k.x_taylor
    if np.any(near):
        x = y[near] - k.x1
        s = k.taylor[15] * x
        for i in range(14, 1, -1):
            s = (s + k.taylor[i]) * x
        out[near] = (s * x + k.taylor[0]) * x
    return out


def _logicle_exact(values: np.ndarray, p: LogicleParams) -> np.ndarray:
    """Halley's method on the biexponential for every value (the C reference, vectorized)."""
    k = _coef(p)
    v = np.asarray(values, dtype=np.float64)
    neg = v < 0
    ax = np.abs(v)
    big = ax > 1e6 * p.t  # solved in closed form below (inf included)
    bad = np.isnan(v)
    x = np.where(big | bad, 1.0, ax)
    # start on the asinh curve that shares both asymptotes' slopes: a few Halley steps suffice
    y = k.x1 + np.arcsinh(x * (k.b / k.taylor[0])) / k.b
    for _ in range(40):
        ae = k.a * np.exp(k.b * y)
        ce = k.c * np.exp(-k.d * y)
        fy = _biexp(y, k) - x
        dy = k.b * ae + k.d * ce
        ddy = k.b * k.b * ae - k.d * k.d * ce
        delta = fy / (dy * (1 - fy * ddy / (2 * dy * dy)))
        y = y - delta
        tol = 3 * np.maximum(y, 1.0) * np.finfo(float).eps
        if np.all(np.abs(delta) < tol):
            break
    # far above T the biexponential is a*exp(b*y) to double precision (and Halley would overflow)
    if np.any(big):
        y[big] = np.log(ax[big] / k.a) / k.b
    y[bad] = np.nan
    y = np.where(v == 0, k.x1, y)
    return np.where(neg, 2 * k.x1 - y, y)


def _u_scale(p: LogicleParams) -> float:
    """s with dy/du ~ 1/b both near zero and in the log region: y(u) is almost a straight line."""
    k = _coef(p)
    return k.taylor[0] / k.b


@functools.lru_cache(maxsize=256)
def _table(p: LogicleParams) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(u0, 1/step, y at the nodes, slope per node) covering |x| <= _TABLE_REACH * T."""
    s = _u_scale(p)
    u_max = math.asinh(_TABLE_REACH * p.t / s)
    n = int(math.ceil(2 * u_max / _TABLE_STEP)) + 1
    u = np.linspace(-u_max, u_max, n)
    y = _logicle_exact(s * np.sinh(u), p)
    inv_step = (n - 1) / (2 * u_max)
    slope = np.append(np.diff(y), 0.0)
    y.flags.writeable = False
    slope.flags.writeable = False
    return -u_max, inv_step, y, slope


def logicle(values: np.ndarray, p: LogicleParams) -> np.ndarray:
    """Logicle scale of ``values`` (any shape), as FlowKit's ``LogicleTransform(t, w, m, a)``."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < _SMALL:
        with np.errstate(invalid="ignore", over="ignore"):
            return _logicle_exact(v, p)
    u0, inv_step, ytab, slope = _table(p)
    pos = (np.arcsinh(v * (1.0 / _u_scale(p))) - u0) * inv_step
    last = len(ytab) - 1
    with np.errstate(invalid="ignore"):
        outside = ~((pos >= 0) & (pos < last))
    any_outside = bool(outside.any())
    if any_outside:
        pos[outside] = 0.0
    i = pos.astype(np.intp)
    pos -= i
    out = ytab[i]
    out += pos * slope[i]
    if any_outside:
        out[outside] = _logicle_exact(v[outside], p)
    return out


def logicle_inverse(y: np.ndarray, p: LogicleParams) -> np.ndarray:
    """Raw values from Logicle scale values (closed form, as FlowKit's ``inverse``)."""
    k = _coef(p)
    s = np.asarray(y, dtype=np.float64)
    neg = s < k.x1
    s = np.where(neg, 2 * k.x1 - s, s)
    out = _biexp(s, k)
    return np.where(neg, -out, out)


def fit_logicle(values: np.ndarray, t: float) -> LogicleParams:
    """Logicle parameters for one channel, the width from the spread of its negative events.

    Parks, Roederer & Moore (Cytometry A 2006;69:541) set W so that the linear region just holds
    the negative spread caused by compensation and noise: W = (M - log10(T / |r|)) / 2, with r the
    5th percentile of the negative values; clamped to [0, M/2]. With fewer than 50 negative events
    that spread is not measurable and the conventional W = 0.5 is used.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    negatives = v[v < 0]
    m = DEFAULT_M
    if negatives.size < MIN_NEGATIVES:
        return LogicleParams(t=float(t), w=DEFAULT_W, m=m, a=0.0)
    r = abs(float(np.percentile(negatives, 5)))
    w = (m - math.log10(t / r)) / 2 if r > 0 else 0.0
    return LogicleParams(t=float(t), w=float(min(max(w, 0.0), m / 2)), m=m, a=0.0)


def flowkit_transform(p: LogicleParams) -> flowkit.transforms.LogicleTransform:
    """The same scale as a FlowKit transform, for the exported GatingML."""
    from flowkit import transforms

    return transforms.LogicleTransform(p.t, p.w, p.m, p.a)


def axis_ticks(p: LogicleParams) -> list[tuple[float, str]]:
    """Tick positions on the Logicle scale with raw-unit labels ("0", "10^3", "-10^2")."""
    ticks = [(float(logicle(np.array([0.0]), p)[0]), "0")]
    zero = ticks[0][0]
    top = int(math.floor(math.log10(p.t))) if p.t > 1 else 0
    for e in range(1, top + 1):
        for sign, label in ((1.0, f"10^{e}"), (-1.0, f"-10^{e}")):
            pos = float(logicle(np.array([sign * 10.0**e]), p)[0])
            if 0.0 <= pos <= 1.0 and abs(pos - zero) >= 0.04:
                ticks.append((pos, label))
    return sorted(ticks)


# ---------------------------------------------------------------------------------------------
# One tube, ready for gating


@dataclass
class Prepared:
    """A tube's events compensated and on display scales (see the module docstring for units)."""

    channels: list[str]  # PnN
    compensated: np.ndarray  # (n, p) compensated raw units (scatter/time unchanged)
    display: np.ndarray  # (n, p) Logicle 0..1 for fluorescence, raw for scatter and time
    logicle: dict[str, LogicleParams]  # per fluorescence channel
    spill: tuple[list[str], np.ndarray] | None


def _finite_max(events: np.ndarray) -> np.ndarray:
    """Per-column maximum over finite values (0 for a column without any): one fast reduction,
    and a masked one only for the rare column holding NaN or infinity."""
    if events.shape[0] == 0:
        return np.zeros(events.shape[1])
    tops = events.max(axis=0).astype(float)
    for j in np.flatnonzero(~np.isfinite(tops)):
        col = events[:, j]
        finite = col[np.isfinite(col)]
        tops[j] = finite.max() if finite.size else 0.0
    return tops


def _top(maximum: float, declared: float | None) -> float:
    top = max(float(declared) if declared and declared > 1 else 0.0, maximum)
    return top if top > 1 else 262144.0


def prepare(fcs: FcsData, comp: str | Path | None = None,
            logicle_params: dict[str, LogicleParams] | None = None) -> Prepared:
    """Compensate a tube and put it on display scales.

    ``logicle_params`` (per PnN) lets the pipeline use one scale for all the tubes of a culture, so
    a control's threshold and the stained tube are read on the same axis; channels it lacks are
    fitted from this tube.
    """
    from .channels import is_fluorescence

    names = [c.pnn for c in fcs.channels]
    spill = spillover_matrix(fcs, comp)
    comp_events = compensate(fcs.events, names, spill)
    display = np.empty_like(comp_events)  # same memory order as comp_events (column-major)
    params: dict[str, LogicleParams] = {}
    maxima = None
    for j, ch in enumerate(fcs.channels):
        if not is_fluorescence(ch.pnn, ch.pns):
            display[:, j] = comp_events[:, j]  # scatter and time: raw units
            continue
        p = (logicle_params or {}).get(ch.pnn)
        if p is None:
            if maxima is None:
                maxima = _finite_max(fcs.events)
            p = fit_logicle(comp_events[:, j], _top(float(maxima[j]), ch.range))
        params[ch.pnn] = p
        display[:, j] = logicle(comp_events[:, j], p)
    return Prepared(names, comp_events, display, params, spill)
