"""Simulated MSC cultures with known populations, for the heterogeneity tests and validation.

Why not plain Gaussians: real logicle-transformed MSC data have correlated channels, heavy tails
and skew; a method validated only on perfect Gaussians invents populations on real data. Each
population here is a correlated multivariate t (df 8-20) pushed through a sinh-arcsinh skew per
channel, then standardized to unit SD within the population, so that "s SD apart" means s times
the real within-population SD of that channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CHANNELS = ["FSC-A", "SSC-A", "FITC-A", "PE-A", "APC-A", "PerCP-Cy5-5-A", "BV421-A"]
NAMES = {
    "FITC-A": "CD90",
    "PE-A": "CD73",
    "APC-A": "CD105",
    "PerCP-Cy5-5-A": "CD44",
    "BV421-A": "Lin-cocktail",
}
# Typical centres and within-population SDs: FSC/SSC linear raw units, markers logicle decades.
# Scatter sits low enough on a 262,144 scale that a population 5 SD larger still fits on it.
BASE_MEAN = np.array([90000.0, 60000.0, 3.4, 3.2, 2.9, 3.5, 0.6])
BASE_SD = np.array([18000.0, 14000.0, 0.22, 0.25, 0.30, 0.20, 0.35])
INDEX = {name: i for i, name in enumerate(CHANNELS)}
# logicle decades -> raw units, approximately (T = 262144, M = 4.5), for the raw medians
RAW_OFFSET = np.log10(262144) - 4.5


@dataclass
class Culture:
    """One simulated culture and its truth."""

    name: str
    X: np.ndarray  # events x channels: scatter raw, markers in logicle-like plot units
    raw: np.ndarray  # compensated raw values (markers back-transformed)
    labels: np.ndarray  # true population 1..k
    k: int
    fractions: tuple[float, ...]
    separation: float  # SD units of the shifted channel(s)
    kind: str  # "homogeneous" | "marker" | "phenotype" | "size"
    shifts: list[dict[str, float]] = field(default_factory=list)


def _gaussian_noise(rng: np.random.Generator, n: int, corr: np.ndarray) -> np.ndarray:
    """Correlated Gaussian noise with unit SD per channel: log-normal expression and cell size,
    as the project's simulator (cytomsc.simulate) draws them, seen on log scales."""
    return rng.multivariate_normal(np.zeros(corr.shape[0]), corr, size=n)


# per shape: (t degrees of freedom range, marker skew range, scatter skew range)
SHAPES = {"heavy": ((8, 20), 0.2, (0.1, 0.3)), "skewed": ((4, 8), 0.4, (0.3, 0.5))}


def _noise(rng: np.random.Generator, n: int, d: int, shape: str = "heavy") -> np.ndarray:
    """Correlated, heavy-tailed, skewed noise with unit SD per channel. ``"skewed"`` (the
    held-out shape): heavier tails (t, 4-8 df) and twice the skew of ``"heavy"``."""
    (df_lo, df_hi), skew, (sc_lo, sc_hi) = SHAPES[shape]
    a = rng.normal(size=(d, d)) * 0.5
    cov = a @ a.T + np.eye(d)
    sd = np.sqrt(np.diag(cov))
    corr = cov / np.outer(sd, sd)
    g = rng.multivariate_normal(np.zeros(d), corr, size=n)
    df = rng.uniform(df_lo, df_hi)
    g = g / np.sqrt(rng.chisquare(df, size=(n, 1)) / df)
    eps = rng.uniform(-skew, skew, size=d)
    eps[:2] = rng.uniform(sc_lo, sc_hi, size=2)  # scatter: right-skewed, log-normal-like
    z = np.sinh(np.arcsinh(g) + eps)
    return (z - np.median(z, axis=0)) / z.std(axis=0)


def simulate(
    name: str,
    fractions: tuple[float, ...],
    shifts: list[dict[str, float]],
    n: int = 8000,
    seed: int = 0,
    separation: float = 0.0,
    kind: str = "homogeneous",
    shape: str = "heavy",
    scatter: str = "lognormal",
) -> Culture:
    """A culture of populations with the given fractions; population i is moved by
    ``shifts[i]`` (channel -> SD units) from the base phenotype (population 1: no shift).

    ``shape="heavy"``: every population has its own correlation, width, t tails and skew (the
    stress test). ``shape="gaussian"``: populations share one correlation and width and are
    Gaussian in plot units, scatter log-normal (the project simulator's physics), or with
    ``scatter="normal"`` Gaussian on the linear scale (shifts then in linear SDs)."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, fractions)
    d = len(CHANNELS)
    spread = BASE_SD * rng.uniform(0.9, 1.1, size=d)
    a = rng.normal(size=(d, d)) * 0.3
    shared = a @ a.T + np.eye(d)
    shared = shared / np.sqrt(np.outer(np.diag(shared), np.diag(shared)))
    blocks, labels = [], []
    for i, (c, shift) in enumerate(zip(counts, shifts, strict=True)):
        mean = BASE_MEAN.copy()
        if shape == "gaussian":
            z = _gaussian_noise(rng, int(c), shared)
            block = mean + spread * z
            for ch, s in shift.items():
                block[:, INDEX[ch]] += s * spread[INDEX[ch]]
            # scatter log-normal: SD of log(FSC) = spread/mean, shifts in those SDs
            for j in (0, 1):
                cv = spread[j] / BASE_MEAN[j]
                zj = z[:, j] + shift.get(CHANNELS[j], 0.0)
                block[:, j] = BASE_MEAN[j] * (
                    np.exp(cv * zj) if scatter == "lognormal" else 1.0 + cv * zj
                )
            blocks.append(block)
            labels.append(np.full(int(c), i + 1))
            continue
        for ch, s in shift.items():
            mean[INDEX[ch]] += s * spread[INDEX[ch]]
        own = spread * rng.uniform(0.85, 1.15, size=d)  # populations are not equally wide
        blocks.append(mean + own * _noise(rng, int(c), d, shape))
        labels.append(np.full(int(c), i + 1))
    X = np.vstack(blocks)
    y = np.concatenate(labels)
    order = rng.permutation(n)
    X, y = X[order], y[order]
    # Events beyond the scatter range would pile up at its top or bottom: the pipeline's margin
    # gate removes them, so they are left out here too (a pile is no population's shape).
    inside = np.all((X[:, :2] >= 1.0) & (X[:, :2] < 262143.0), axis=1)
    X, y = X[inside], y[inside]
    raw = X.copy()
    raw[:, 2:] = 10 ** (X[:, 2:] + RAW_OFFSET)
    return Culture(name, X, raw, y, len(fractions), tuple(fractions), separation, kind, shifts)


KIND_SHIFTS = {
    # one marker only
    "marker": lambda s: {"FITC-A": -s},
    # two markers (CD90 and CD105 dim), the usual MSC subpopulation
    "phenotype": lambda s: {"FITC-A": -s, "APC-A": -s},
    # size only: larger, more granular cells
    "size": lambda s: {"FSC-A": s, "SSC-A": s},
}


def pipeline_view(c: Culture) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The culture as the pipeline hands it to the clustering: positive markers in plot units and
    log10 FSC-A/SSC-A; the negative lineage channel left out."""
    keep = [i for i, ch in enumerate(CHANNELS) if ch != "BV421-A"]
    X = c.X[:, keep].copy()
    X[:, :2] = np.log10(np.maximum(X[:, :2], 1.0))
    return X, c.raw[:, keep], [CHANNELS[i] for i in keep]


def stress_grid(
    shape: str = "heavy",
    seed: int = 1000,
    n: int = 8000,
    seps: tuple[float, ...] = (5.0, 4.0, 3.5, 3.0, 2.0),
    minors: tuple[float, ...] = (0.05, 0.15, 0.5),
    n_homogeneous: int = 12,
) -> list[Culture]:
    """The issue's stress grid: homogeneous cultures; two populations differing in one marker,
    two markers, or size; three populations; at each separation and minor share."""
    out = []
    s = seed
    for i in range(n_homogeneous):
        out.append(simulate(f"homogeneous-{i}", (1.0,), [{}], n=n, seed=s, shape=shape))
        s += 1
    for kind, shift in KIND_SHIFTS.items():
        for sep in seps:
            for minor in minors:
                out.append(
                    simulate(
                        f"2pop-{kind}-{sep}sd-{minor:.0%}",
                        (1 - minor, minor),
                        [{}, shift(sep)],
                        n=n,
                        seed=s,
                        separation=sep,
                        kind=kind,
                        shape=shape,
                    )
                )
                s += 1
    for sep in seps:
        for fr in ((0.6, 0.3, 0.1), (0.75, 0.2, 0.05)):
            shifts = [{}, {"FITC-A": -sep, "APC-A": -sep}, {"FSC-A": -sep, "SSC-A": -sep}]
            out.append(
                simulate(
                    f"3pop-{sep}sd-{round(fr[2] * 100)}%",
                    fr,
                    shifts,
                    n=n,
                    seed=s,
                    separation=sep,
                    kind="phenotype+size",
                    shape=shape,
                )
            )
            s += 1
    return out
