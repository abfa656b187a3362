"""Is a group of events one population or two? The evidence, on the line that separates them.

A culture's populations are skewed and heavy-tailed, each in its own way. A Gaussian mixture
models such a population with several components, and counting components counts shapes, not
populations. So two candidate populations A and B (groups of mixture components, with their
events' posterior weights) are kept apart only when their events, projected on the direction
that separates them (Fisher's: shape^-1 (mean_A - mean_B)), are better explained by two
populations than by one. "One population" is a sinh-arcsinh transformed Student t (Jones & Pewsey
2009): unimodal, with its own skew and tail weight, and no lighter tails than a Gaussian, so a
flat-topped pair of equal populations is never mistaken for one. "Two populations" is the better
(by BIC) of two Gaussians and two such skewed t's. The answer is a BIC difference, in the units
of Kass & Raftery (1995): > 10 is very strong evidence.

Everything is fitted on a 256-bin histogram of the projected, weighted events: the models are
smooth on that scale, and a fit then costs milliseconds whatever the number of events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import digamma, gammaln

LOG2PI = math.log(2.0 * math.pi)
BINS = 256
TAIL = 0.001  # share of the weight left out at each end before binning (lone outliers)
# loc, log scale, skew, log df: a df of 1-300 and a skew of +-3 cover every unimodal shape seen
_BOUNDS = [(None, None), (math.log(0.02), math.log(50.0)), (-3.0, 3.0), (0.0, math.log(300.0))]
CONCENTRIC = 1.0  # groups whose means are closer than this many SDs are one population


@dataclass(frozen=True)
class SplitTest:
    """The evidence for two populations on one separating line.

    ``gain``: BIC(one population) - BIC(two); > 0 favours two. ``centres``/``counts``: the
    histogram it was computed on, and ``llr``: per bin, log f_two - log f_one at the fitted
    parameters, so a bootstrap can re-weigh the bins without refitting (``resample``)."""

    gain: float
    separation: float  # |mean_A - mean_B| in pooled SDs on the line
    centres: np.ndarray
    counts: np.ndarray
    llr: np.ndarray
    extra_parameters: int

    def resample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` bootstrap values of ``gain`` (Poisson re-weighting of the events, bins fixed)."""
        if not self.counts.size or not np.isfinite(self.gain) or abs(self.gain) > 1e8:
            return np.full(n, self.gain)
        draws = rng.poisson(self.counts, size=(n, self.counts.size)).astype(float)
        total = np.maximum(draws.sum(axis=1), 2.0)
        return 2.0 * draws @ self.llr - self.extra_parameters * np.log(total)


def _sast(
    x: np.ndarray, loc: float, ls: float, eps: float, lnu: float
) -> tuple[np.ndarray, np.ndarray]:
    """log density of the sinh-arcsinh-t and its gradient (4, n) in (loc, log scale, eps,
    log df)."""
    s, nu = math.exp(ls), math.exp(lnu)
    y = (x - loc) / s
    r = np.sqrt(1.0 + y * y)
    a = np.arcsinh(y) - eps
    z, ca = np.sinh(a), np.cosh(a)
    q = 1.0 + z * z / nu
    c = gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * math.log(nu * math.pi)
    lp = c - (nu + 1) / 2 * np.log(q) + np.log(ca) - np.log(r) - ls
    da = -(nu + 1) * z * ca / (nu * q) + np.tanh(a)
    dy = da / r - y / (r * r)
    g = np.empty((4, x.size))
    g[0] = -dy / s
    g[1] = -dy * y - 1.0
    g[2] = -da
    dc = 0.5 * digamma((nu + 1) / 2) - 0.5 * digamma(nu / 2) - 0.5 / nu
    g[3] = nu * (dc - 0.5 * np.log(q) + (nu + 1) / 2 * z * z / (nu * nu * q))
    return lp, g


def _nll_one(th: np.ndarray, x: np.ndarray, c: np.ndarray) -> tuple[float, np.ndarray]:
    lp, g = _sast(x, *th)
    return -float(c @ lp), -(g @ c)


def _two_logpdf(
    th: np.ndarray, x: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    lpa, ga = _sast(x, *th[:4])
    lpb, gb = _sast(x, *th[4:8])
    lwa, lwb = -np.logaddexp(0.0, -th[8]), -np.logaddexp(0.0, th[8])
    A, B = lpa + lwa, lpb + lwb
    m = np.maximum(A, B)
    ea, eb = np.exp(A - m), np.exp(B - m)
    return m + np.log(ea + eb), ea / (ea + eb), ga, gb, eb / (ea + eb), math.exp(lwa)


def _nll_two(th: np.ndarray, x: np.ndarray, c: np.ndarray) -> tuple[float, np.ndarray]:
    tot, ra, ga, gb, rb, pa = _two_logpdf(th, x)
    grad = np.concatenate([-(ga @ (c * ra)), -(gb @ (c * rb)), [-float(c @ (ra - pa))]])
    return -float(c @ tot), grad


def _moments(x: np.ndarray, c: np.ndarray) -> tuple[float, float]:
    w = float(c.sum())
    m = float(c @ x) / w
    return m, math.sqrt(max(float(c @ (x - m) ** 2) / w, 0.0)) + 1e-3


def fit_one(x: np.ndarray, c: np.ndarray) -> tuple[float, np.ndarray]:
    """The best single skewed t on the histogram (x: bin centres, c: weights): (NLL, params)."""
    m, s = _moments(x, c)
    best = None
    for e in (-0.5, 0.0, 0.5):
        r = minimize(
            _nll_one,
            [m + 0.25 * e * s, math.log(s), e, math.log(20.0)],
            args=(x, c),
            jac=True,
            method="L-BFGS-B",
            bounds=_BOUNDS,
        )
        if best is None or r.fun < best.fun:
            best = r
    assert best is not None
    return float(best.fun), np.asarray(best.x)


def fit_two(x: np.ndarray, c: np.ndarray, ca: np.ndarray) -> tuple[float, np.ndarray]:
    """The best mixture of two skewed t's, started from the split ``ca`` | ``c - ca``."""
    (ma, sa), (mb, sb) = _moments(x, ca + 1e-9), _moments(x, c - ca + 1e-9)
    p = min(max(float(ca.sum() / c.sum()), 0.01), 0.99)
    th = [
        ma,
        math.log(sa),
        0.0,
        math.log(20.0),
        mb,
        math.log(sb),
        0.0,
        math.log(20.0),
        math.log(p / (1 - p)),
    ]
    r = minimize(
        _nll_two, th, args=(x, c), jac=True, method="L-BFGS-B", bounds=_BOUNDS * 2 + [(-8.0, 8.0)]
    )
    return float(r.fun), np.asarray(r.x)


def fit_gauss_two(
    x: np.ndarray, c: np.ndarray, ca: np.ndarray, iters: int = 300
) -> tuple[float, np.ndarray]:
    """The best two-Gaussian mixture (EM from the split): (NLL, per-bin log density)."""
    r = np.column_stack([ca, c - ca]) / np.maximum(c, 1e-12)[:, None]
    prev, ll = -math.inf, np.zeros(x.size)
    tot = prev
    for _ in range(iters):
        rw = r * c[:, None]
        nk = rw.sum(axis=0) + 1e-12
        mu = (rw * x[:, None]).sum(axis=0) / nk
        var = (rw * (x[:, None] - mu) ** 2).sum(axis=0) / nk + 1e-4
        lp = np.log(nk / c.sum()) - 0.5 * (LOG2PI + np.log(var) + (x[:, None] - mu) ** 2 / var)
        top = lp.max(axis=1, keepdims=True)
        ll = top[:, 0] + np.log(np.exp(lp - top).sum(axis=1))
        r = np.exp(lp - ll[:, None])
        tot = float(c @ ll)
        if tot - prev < 1e-8 * abs(tot):
            break
        prev = tot
    return -tot, ll


def project(
    Z: np.ndarray, rA: np.ndarray, rB: np.ndarray, shape: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The events on A and B's separating line, as a histogram: bin centres, the weight of A and
    B together in each bin, and A's share. Units: robust SDs of the projected weights."""
    w = rA + rB
    muA = rA @ Z / rA.sum()
    muB = rB @ Z / rB.sum()
    u = np.linalg.solve(shape, muA - muB)
    live = w > 1e-6
    x, wl, al = Z[live] @ u, w[live], rA[live]
    order = np.argsort(x)
    x, wl, al = x[order], wl[order], al[order]
    cw = np.cumsum(wl)

    def q(p: float) -> float:
        return float(x[min(int(np.searchsorted(cw, p * cw[-1])), x.size - 1)])

    med, iqr, first, last = q(0.5), q(0.75) - q(0.25), q(TAIL), q(1.0 - TAIL)
    scale = iqr / 1.349 if iqr > 0 else float(np.std(x)) or 1.0
    x = (x - med) / scale
    lo, hi = (first - med) / scale - 2.0, (last - med) / scale + 2.0
    keep = (x >= lo) & (x <= hi)
    edges = np.linspace(lo, hi, BINS + 1)
    c = np.histogram(x[keep], edges, weights=wl[keep])[0]
    ca = np.histogram(x[keep], edges, weights=al[keep])[0]
    centre = 0.5 * (edges[1:] + edges[:-1])
    nz = c > 0
    return centre[nz], c[nz], ca[nz]


def split_evidence(Z: np.ndarray, rA: np.ndarray, rB: np.ndarray, shape: np.ndarray) -> SplitTest:
    """The evidence that A and B are two populations (see the module docstring)."""
    x, c, ca = project(Z, rA, rB, shape)
    cb = c - ca
    ma, mb = float(ca @ x / ca.sum()), float(cb @ x / cb.sum())
    va = float(ca @ (x - ma) ** 2 / ca.sum())
    vb = float(cb @ (x - mb) ** 2 / cb.sum())
    sep = abs(ma - mb) / math.sqrt(max((va + vb) / 2.0, 1e-12))
    empty = np.zeros(0)
    if sep < CONCENTRIC or x.size < 8:
        # a narrow and a wide component around one centre: one population's heavy tails
        return SplitTest(-math.inf, sep, empty, empty, empty, 0)
    ln = math.log(float(c.sum()))
    nll1, th1 = fit_one(x, c)
    bic1 = 2.0 * nll1 + 4.0 * ln
    nllg, llg = fit_gauss_two(x, c, ca)
    nllt, tht = fit_two(x, c, ca)
    lp1 = _sast(x, *th1)[0]
    if 2.0 * nllg + 5.0 * ln <= 2.0 * nllt + 9.0 * ln:
        bic2, ll2, extra = 2.0 * nllg + 5.0 * ln, llg, 1
    else:
        bic2, ll2, extra = 2.0 * nllt + 9.0 * ln, _two_logpdf(tht, x)[0], 5
    return SplitTest(bic1 - bic2, sep, x, c, ll2 - lp1, extra)
