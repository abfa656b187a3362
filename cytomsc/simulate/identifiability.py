"""What any clustering can and cannot tell apart: figures behind the heterogeneity targets.

Why this exists: issue 4 asks, for populations >= 2 SD apart in one channel, for both the right
number of populations and an adjusted Rand index (ARI) >= 0.9. It also asks for one population
on homogeneous cultures, including ones whose shape is not Gaussian. This script prints two
tables that show how far the data allow either.

1. The ceiling on ARI. For two Gaussian populations (fraction p, d SD apart in one channel) the
   script finds the best ARI that any split of the events into two groups reaches, knowing the
   truth: no clustering that finds two populations can do better.
2. Shape against count. The same two-population samples, and single populations that are skewed
   or heavy-tailed, are fitted two ways: as a two-Gaussian mixture (5 parameters), and as one
   sinh-arcsinh population (Jones & Pewsey 2009: location, scale, skew, tail weight; 4
   parameters). The table gives BIC(two Gaussians) - BIC(one skewed population); negative means
   the data say "two". At 2 SD the evidence either way is weak (single digits to about 20 on
   10,000 events, either sign at 50 %), about what a single skewed population scores the other
   way, so there the count rests on the assumed shape of a population. cytomsc assumes Gaussian
   populations on logicle/log scales: that is why it finds 5 % populations 2 SD apart in the
   simulator, and why it over-splits skewed ones (docs/heterogeneity-validation.md, stress grid).

Printed by ``python benchmarks/identifiability.py`` (about two minutes).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import optimize, stats

N_CEILING = 200_000  # events per ceiling: the ARI is then exact to about 0.005
N_FIT = 10_000  # events per shape comparison: one culture's clustering subsample
SEPARATIONS = (1.5, 2.0, 3.0, 4.0, 5.0)
MINORS = (0.05, 0.2, 0.5)


def _ari_2x2(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, tn: np.ndarray) -> np.ndarray:
    """Adjusted Rand index of 2 x 2 contingency tables (vectorised over cuts)."""

    def pairs(v):
        return v * (v - 1) / 2

    n = tp + fp + fn + tn
    index = pairs(tp) + pairs(fp) + pairs(fn) + pairs(tn)
    rows = pairs(tp + fn) + pairs(fp + tn)
    cols = pairs(tp + fp) + pairs(fn + tn)
    expected = rows * cols / pairs(n)
    return (index - expected) / ((rows + cols) / 2 - expected)


def best_split_ari(p: float, d: float, rng: np.random.Generator) -> float:
    """The highest ARI any split into two groups reaches on (1 - p) N(0, 1) + p N(d, 1).

    For a given size of the upper group a cut on x catches the most true minor events (the
    likelihood ratio rises with x), and with the groups' sizes fixed the ARI rises with that
    count, so scanning every cut gives the best two-group partition of all.
    """
    y = rng.random(N_CEILING) < p
    x = rng.normal(size=N_CEILING) + d * y
    y_sorted = y[np.argsort(x)]
    above_true = np.cumsum(y_sorted[::-1])[::-1]  # minor events at or above each position
    n_above = np.arange(N_CEILING, 0, -1, dtype=float)
    tp = above_true.astype(float)
    fp = n_above - tp
    fn = y.sum() - tp
    tn = N_CEILING - tp - fp - fn
    return float(np.max(_ari_2x2(tp, fp, fn, tn)[1:]))


def _sas_nll(theta: np.ndarray, x: np.ndarray) -> tuple[float, np.ndarray]:
    """Negative log-likelihood of the sinh-arcsinh distribution (Jones & Pewsey 2009) and its
    gradient in (location, log scale, skew, log tail weight)."""
    mu, log_s, eps, log_delta = theta
    s, delta = math.exp(log_s), math.exp(log_delta)
    z = (x - mu) / s
    q = 1 + z * z
    ash = np.arcsinh(z)
    a = delta * ash - eps
    sh = np.sinh(a)
    ll = (
        log_delta
        + np.log(np.cosh(a))
        - 0.5 * np.log(q)
        - 0.5 * math.log(2 * math.pi)
        - 0.5 * sh * sh
        - log_s
    )
    dll_da = np.tanh(a) - sh * np.cosh(a)
    dll_dz = dll_da * delta / np.sqrt(q) - z / q
    grad = np.array(
        [
            (dll_dz / -s).sum(),
            (dll_dz * -z).sum() - x.size,
            -dll_da.sum(),
            x.size + (dll_da * delta * ash).sum(),
        ]
    )
    return float(-ll.sum()), -grad


def one_skewed_population_ll(x: np.ndarray) -> float:
    """Maximum log-likelihood of one sinh-arcsinh population (best of three starts)."""
    med = float(np.median(x))
    iqr = float(np.subtract(*np.percentile(x, [75, 25]))) / 1.349
    best = math.inf
    for eps0 in (-0.5, 0.0, 0.5):
        r = optimize.minimize(
            _sas_nll,
            [med, math.log(iqr), eps0, 0.0],
            args=(x,),
            jac=True,
            method="L-BFGS-B",
            bounds=[(None, None), (None, None), (-5, 5), (-3, 3)],
        )
        best = min(best, r.fun)
    return -best


def two_gaussians_ll(x: np.ndarray) -> float:
    """Maximum log-likelihood of a two-component Gaussian mixture with unequal variances: EM
    to convergence from cuts at the 5th, 50th and 95th percentiles, the best kept."""
    best = -math.inf
    for q in (5, 50, 95):
        high = x > np.percentile(x, q)
        w = np.array([1 - high.mean(), high.mean()])
        m = np.array([x[~high].mean(), x[high].mean()])
        v = np.array([x[~high].var(), x[high].var()]) + 1e-9
        prev = -math.inf
        for _ in range(5000):
            lj = np.log(w) - 0.5 * np.log(2 * math.pi * v) - 0.5 * (x[:, None] - m) ** 2 / v
            top = lj.max(axis=1, keepdims=True)
            lse = top[:, 0] + np.log(np.exp(lj - top).sum(axis=1))
            ll = float(lse.sum())
            r = np.exp(lj - lse[:, None])
            nk = r.sum(axis=0) + 1e-12
            w, m = nk / x.size, (r * x[:, None]).sum(axis=0) / nk
            v = (r * (x[:, None] - m) ** 2).sum(axis=0) / nk + 1e-9
            if ll - prev < 1e-9 * x.size:
                break
            prev = ll
        best = max(best, ll)
    return best


def delta_bic(x: np.ndarray) -> float:
    """BIC(two Gaussians, 5 parameters) - BIC(one sinh-arcsinh population, 4 parameters)."""
    n = x.size
    return (-2 * two_gaussians_ll(x) + 5 * math.log(n)) - (
        -2 * one_skewed_population_ll(x) + 4 * math.log(n)
    )


def main() -> None:
    rng = np.random.default_rng(20261127)
    print("1. Ceiling on ARI: the best split of two Gaussian populations in one channel")
    print("   (rows: separation in SD; columns: the minor population's fraction)\n")
    print("   SD   " + "".join(f"{p:>8.0%}" for p in MINORS))
    for d in SEPARATIONS:
        row = "".join(f"{best_split_ari(p, d, rng):8.2f}" for p in MINORS)
        print(f"   {d:<4g} {row}")

    print(
        "\n2. BIC(two Gaussians) - BIC(one skewed population), "
        f"{N_FIT:,} events (negative: the data say two)\n"
    )
    cases: list[tuple[str, Callable[..., np.ndarray]]] = []
    for d in (2.0, 3.0, 5.0):
        for p in MINORS:
            cases.append(
                (
                    f"two populations, {p:.0%} at {d:g} SD",
                    lambda p=p, d=d: rng.normal(size=N_FIT) + d * (rng.random(N_FIT) < p),
                )
            )
    cases += [
        ("one Gaussian population", lambda: rng.normal(size=N_FIT)),
        (
            "one population, t(10) tails, skew 0.3",
            lambda: np.sinh(np.arcsinh(stats.t.rvs(10, size=N_FIT, random_state=rng)) + 0.3),
        ),
        (
            "one population, log10 of a Gaussian FSC (CV 20 %)",
            lambda: np.log10(np.maximum(rng.normal(1.0, 0.2, N_FIT), 1e-3)),
        ),
    ]
    width = max(len(name) for name, _ in cases)
    for name, draw in cases:
        values = [delta_bic(draw()) for _ in range(3)]
        print(f"   {name:<{width}}  " + "  ".join(f"{v:8.1f}" for v in values))
