"""Compensation and display scales: spillover from the file or a CSV, fast numpy Logicle.

FlowKit is the reference for both steps and stays the engine of record (the gates exported to
GatingML carry FlowKit's own ``Matrix`` and ``LogicleTransform``), but its Logicle solves a root per
event in C and is the slowest stage of a run. Here the Logicle is tabulated once per parameter set
on a uniform grid in ``u = asinh(x / s)`` (``s`` chosen so the curve is nearly a straight line in
``u``) and read back by cubic Hermite interpolation: one ``asinh``, four table look-ups and three
multiply-adds per event, within 1e-12 of FlowKit for every W in [0, M/2] (the tests check 1e-9
on a grid of W, negatives and values far beyond T included, and on the corpus files). Values
outside the table (beyond 1000 x T), and arrays too small to pay for a table (< 20,000 values),
are solved exactly with Halley's method, as FlowKit does. Everything is computed at T = 1 on
x / T (the scale depends on x / T only), so no T a file declares can overflow it.

Coordinates, stated once: ``Prepared.compensated`` is in compensated raw channel units;
``Prepared.display`` is the Logicle scale (0..1, T at 1) for fluorescence channels and the raw,
unscaled values for scatter and time (so scatter gates need no transform to be re-applied).
"""

from __future__ import annotations

import csv
import functools
import math
import sys
from dataclasses import dataclass, field
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
_TABLE_STEP = 4e-3  # grid step in u; cubic Hermite between nodes: error < 1e-12 (any W)
_TABLE_REACH = 1e3  # the table covers |x| <= _TABLE_REACH * T
_SMALL = 20_000  # below this many values, solving each exactly is cheaper than building a table
MAX_RANGE = float(2**32)  # a $PnR above this (32-bit integer data's range) is a damaged keyword
LARGE_EVENTS = 200_000  # above this many events: compensation in place, float32 display


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
    fcs: FcsData, comp: str | Path | tuple[list[str], np.ndarray] | None
) -> tuple[list[str], np.ndarray] | None:
    """The spillover to apply: the file's own (``None``/"file"), none ("none"), a CSV's, or a
    matrix already read (detector names, matrix: a batch reads its CSV once).

    The CSV has a header row of detector names (PnN) and one numeric row per detector, optionally
    led by the detector's name; rows are spillover *from* that detector, as in ``$SPILLOVER``.
    """
    if isinstance(comp, tuple):
        names, matrix = list(comp[0]), np.asarray(comp[1], dtype=float)
        _check_matrix(names, matrix, _pnn(fcs), None, "the compensation CSV")
        return names, matrix
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
        raise CytomscError(
            f"cannot read compensation matrix ({err.__class__.__name__})", path
        ) from None
    sample = text[:4096]
    delimiter = "\t" if sample.count("\t") > sample.count(",") else ","
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    rows = [[cell.strip() for cell in row] for row in reader]
    rows = [r for r in rows if any(r)]
    if len(rows) < 2:
        raise CytomscError(
            "compensation matrix needs a header row of detector names and rows of numbers", path
        )
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
                    f"row {i} is named '{row[0]}' but column {i - 1} is '{header[i - 2]}'", path
                )
            row = row[1:]
        if len(row) != n:
            raise CytomscError(f"row {i} has {len(row)} values, expected {n}", path)
        try:
            values.append([float(v) for v in row])
        except ValueError:
            raise CytomscError(f"row {i} holds a value that is not a number", path) from None
    return header, np.array(values, dtype=float)


def _check_matrix(
    names: list[str], matrix: np.ndarray, channels: list[str], path: str | Path | None, what: str
) -> None:
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


def compensate(
    events: np.ndarray, channel_names: list[str], spill: tuple[list[str], np.ndarray] | None
) -> np.ndarray:
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


def compensate_in_place(
    events: np.ndarray, channel_names: list[str], spill: tuple[list[str], np.ndarray] | None
) -> np.ndarray:
    """``events`` compensated in its own memory (and returned): for large tubes, where a
    compensated copy beside the events would double the memory the data take.

    Only the detector columns change: blocks of events times the inverse spillover, the other
    columns untouched (so a non-finite value never spreads into them). Same spillover algebra
    as ``compensate``, blocked by events."""
    if spill is None:
        return events
    names, matrix = spill
    idx = [channel_names.index(d) for d in names]
    inv = np.linalg.inv(matrix)
    step = 1 << 16
    for start in range(0, events.shape[0], step):
        rows = slice(start, start + step)
        # (the product on the transposed block: a tall-skinny one is 20x slower in OpenBLAS)
        events[rows, idx] = (inv.T @ events[rows][:, idx].T).T
    return events


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
    """Root d in (0, b] of f(d) = 2 (ln d - ln b) + w (b + d) (Moore & Parks 2012).

    Newton's method safeguarded by bisection (Numerical Recipes' ``rtsafe``, as the reference C
    code of the Logicle authors): a Newton step is taken when it lands inside the bracket and
    shrinks fast enough, else a bisection step. The search ends when a step leaves ``d``
    unchanged, is below the precision of ``b``, or ``f`` stops changing: a converged Newton
    iterate is kept as it is. (It may land exactly on a bracket end, so the iterate must never
    be judged by "strictly inside the bracket" once Newton has converged.)
    """
    if w == 0:
        return b
    tol = 2 * b * sys.float_info.epsilon
    lo, hi = 0.0, b
    d = 0.5 * b
    last_delta = hi - lo
    f_b = -2 * math.log(b) + w * b
    f = 2 * math.log(d) + w * d + f_b
    last_f = math.nan
    for _ in range(100):
        df = 2 / d + w
        if ((d - hi) * df - f) * ((d - lo) * df - f) >= 0 or abs(1.9 * f) > abs(last_delta * df):
            delta = 0.5 * (hi - lo)  # Newton would leave the bracket or converge too slowly
            d = lo + delta
            if d == lo:
                return d
        else:
            delta = f / df
            before = d
            d -= delta
            if d == before:
                return d
        if abs(delta) < tol:
            return d
        last_delta = delta
        f = 2 * math.log(d) + w * d + f_b
        if f == 0 or f == last_f:
            return d
        last_f = f
        if f < 0:
            lo = d
        else:
            hi = d
    return d


def _unit(p: LogicleParams) -> LogicleParams:
    """The same scale with T = 1.

    The biexponential's a, c and f are proportional to T and b, d do not depend on it, so
    logicle(x; T) = logicle(x / T; 1) exactly. Working at T = 1 keeps every intermediate of the
    solver finite whatever T a file declares (at T = 1e306 Halley's squared derivatives and the
    table's reach overflowed), and lets channels that differ only in T share one table.
    """
    return LogicleParams(t=1.0, w=p.w, m=p.m, a=p.a)


def _check(p: LogicleParams) -> None:
    if not (math.isfinite(p.t) and p.t > 0):
        raise ValueError(f"Logicle T must be finite and positive, not {p.t}")


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


def _slope(y: np.ndarray, k: _Coef) -> np.ndarray:
    """dB/dy at y, mirrored below x1 (the scale is odd about x1)."""
    y = np.where(y < k.x1, 2 * k.x1 - y, y)
    return k.b * k.a * np.exp(k.b * y) + k.d * k.c * np.exp(-k.d * y)


def _logicle_exact(values: np.ndarray, p: LogicleParams) -> np.ndarray:
    """Halley's method on the biexponential for every value (the C reference, vectorized)."""
    _check(p)
    k = _coef(_unit(p))
    v = np.asarray(values, dtype=np.float64) / p.t
    neg = v < 0
    ax = np.abs(v)
    big = ax > 1e6  # solved in closed form below (inf included)
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
    """s with dy/du ~ 1/b both near zero and in the log region: y(u) is almost a straight line
    (for T = 1; a scale with top T uses s * T)."""
    k = _coef(_unit(p))
    return k.taylor[0] / k.b


@functools.lru_cache(maxsize=256)
def _table(p: LogicleParams) -> tuple[float, float, np.ndarray]:
    """(u0, 1/step, cubic coefficients per node) covering |x| <= _TABLE_REACH * T, for T = 1.

    Each interval holds the cubic Hermite polynomial through the exact values and slopes at its
    two nodes, y = c0 + t (c1 + t (c2 + t c3)) with t in [0, 1). Its error is of order step^4
    times the fourth derivative: below 1e-12 for every W in [0, M/2] (tests/test_preprocess.py),
    where a straight line between nodes 1e-3 apart was off by up to 1e-8.
    """
    p = _unit(p)
    k = _coef(p)
    s = _u_scale(p)
    u_max = math.asinh(_TABLE_REACH / s)
    n = int(math.ceil(2 * u_max / _TABLE_STEP)) + 1
    u = np.linspace(-u_max, u_max, n)
    step = 2 * u_max / (n - 1)
    y = _logicle_exact(s * np.sinh(u), p)
    m = step * s * np.cosh(u) / _slope(y, k)  # dy/du at the nodes, times the step
    y0, y1, m0, m1 = y[:-1], y[1:], m[:-1], m[1:]
    coef = np.zeros((4, n))
    coef[0] = y
    coef[1, :-1] = m0
    coef[2, :-1] = 3 * (y1 - y0) - 2 * m0 - m1
    coef[3, :-1] = 2 * (y0 - y1) + m0 + m1
    coef.flags.writeable = False
    return -u_max, 1.0 / step, coef


_BLOCK = 1 << 16  # values per block of the table look-up: its temporaries stay in cache


def logicle(values: np.ndarray, p: LogicleParams, out: np.ndarray | None = None) -> np.ndarray:
    """Logicle scale of ``values`` (any shape), as FlowKit's ``LogicleTransform(t, w, m, a)``.

    ``out``: where to write the result (any float dtype, the shape of ``values``), e.g. a column
    of a display array; the values are computed in float64 either way."""
    _check(p)
    v = np.asarray(values, dtype=np.float64)
    if v.size < _SMALL:
        with np.errstate(invalid="ignore", over="ignore"):
            y = _logicle_exact(v, p)
        if out is None:
            return y
        out[...] = y
        return out
    if out is not None and (out.ndim != 1 or not out.flags.c_contiguous):
        out[...] = logicle(v, p)  # (not one contiguous column: computed, then copied in)
        return out
    u0, inv_step, coef = _table(_unit(p))
    scale = 1.0 / (_u_scale(p) * p.t)
    flat = v.reshape(-1)
    result = np.empty(flat.shape) if out is None else out
    last = coef.shape[1] - 1
    c0, c1, c2, c3 = coef
    outside_at: list[np.ndarray] = []
    # In blocks: the dozen passes of the look-up then run over cached data, not over arrays of
    # 10^6-10^7 values in memory; every value gets the same arithmetic as in one pass.
    for start in range(0, flat.size, _BLOCK):
        blk = flat[start : start + _BLOCK]
        pos = np.arcsinh(blk * scale)
        pos -= u0
        pos *= inv_step
        with np.errstate(invalid="ignore"):
            outside = ~((pos >= 0) & (pos < last))
        if outside.any():
            pos[outside] = 0.0
            outside_at.append(start + np.flatnonzero(outside))
        i = pos.astype(np.intp)
        pos -= i
        y = c3[i]
        y *= pos
        y += c2[i]
        y *= pos
        y += c1[i]
        y *= pos
        y += c0[i]
        result[start : start + _BLOCK] = y
    if outside_at:  # solved exactly, all together (the solver iterates until all converge)
        at = np.concatenate(outside_at)
        result[at] = _logicle_exact(flat[at], p)
    return result.reshape(v.shape) if out is None else out


def logicle_inverse(y: np.ndarray, p: LogicleParams) -> np.ndarray:
    """Raw values from Logicle scale values (closed form, as FlowKit's ``inverse``)."""
    _check(p)
    k = _coef(_unit(p))
    s = np.asarray(y, dtype=np.float64)
    neg = s < k.x1
    s = np.where(neg, 2 * k.x1 - s, s)
    with np.errstate(over="ignore"):
        out = _biexp(s, k) * p.t
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
    top = int(math.floor(math.log10(p.t))) if p.t > 1 else 0
    labels = ["0"] + [f"{sign}10^{e}" for e in range(1, top + 1) for sign in ("", "-")]
    values = [0.0] + [s * 10.0**e for e in range(1, top + 1) for s in (1.0, -1.0)]
    where = logicle(np.array(values), p)  # one call: a call per tick cost more than the plot
    zero = float(where[0])
    ticks = [(zero, "0")]
    for pos, label in zip(where[1:].tolist(), labels[1:], strict=True):
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
    warnings: list[str] = field(default_factory=list)


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
    """T of a channel's Logicle scale: its $PnR, or the data's maximum where that is higher.

    A $PnR above ``MAX_RANGE`` is no detector's range but a damaged keyword: it would squeeze
    every event into the bottom of the scale, so the data's maximum is used instead."""
    if declared is not None and not declared <= MAX_RANGE:
        declared = None
    top = max(float(declared) if declared and declared > 1 else 0.0, maximum)
    return top if top > 1 else 262144.0


def prepare(
    fcs: FcsData,
    comp: str | Path | tuple[list[str], np.ndarray] | None = None,
    logicle_params: dict[str, LogicleParams] | None = None,
) -> Prepared:
    """Compensate a tube and put it on display scales.

    ``logicle_params`` (per PnN) lets the pipeline use one scale for all the tubes of a culture, so
    a control's threshold and the stained tube are read on the same axis; channels it lacks are
    fitted from this tube.
    """
    from .channels import is_fluorescence

    names = [c.pnn for c in fcs.channels]
    spill = spillover_matrix(fcs, comp)
    fluo = [is_fluorescence(ch.pnn, ch.pns) for ch in fcs.channels]
    maxima = None
    if any(
        f and ch.pnn not in (logicle_params or {}) for f, ch in zip(fluo, fcs.channels, strict=True)
    ):
        maxima = _finite_max(fcs.events)  # of the raw events, before any compensation
    large = fcs.n_events > LARGE_EVENTS
    if large:
        # compensated in the events' own memory, the display scale in float32: a 5M-event
        # tube takes two arrays of its size instead of three of twice it
        comp_events = compensate_in_place(fcs.take_events(), names, spill)
    else:
        comp_events = compensate(fcs.events, names, spill)
    # same memory order as comp_events (column-major)
    display = np.empty_like(comp_events, dtype=np.float32 if large else np.float64)
    params: dict[str, LogicleParams] = {}
    warns: list[str] = []
    for j, ch in enumerate(fcs.channels):
        if not fluo[j]:
            display[:, j] = comp_events[:, j]  # scatter and time: raw units
            continue
        p = (logicle_params or {}).get(ch.pnn)
        if p is None:
            if not ch.range <= MAX_RANGE:
                warns.append(
                    f"{ch.pnn}: $PnR {ch.range:g} is beyond any detector's range "
                    f"({MAX_RANGE:.3g}); the Logicle scale's top is the data's maximum"
                )
            assert maxima is not None  # computed above for every channel without a scale
            p = fit_logicle(comp_events[:, j], _top(float(maxima[j]), ch.range))
        params[ch.pnn] = p
        logicle(comp_events[:, j], p, out=display[:, j])
    return Prepared(names, comp_events, display, params, spill, warns)
