"""Heterogeneity of a culture: how many populations its cells form, how they differ, how sure.

Why this exists: a culture can pass the ISCT criteria and still be a mixture (CD90-dim cells, small
cells ...), which is one reason MSC therapies disagree. The populations are found by
``populations.PopulationFinder`` (k chosen, one allowed, robust to skewed and heavy-tailed
shapes); this module turns them into what a lab reads: each population's fraction with its
interval, its medians in the channels' own units, a short phenotype in words, how often the
bootstrap finds each number of populations, a dip test per channel, and the payload the report
draws (histograms per population, the most discriminating channel pairs, display medians). It
also clusters a batch's cultures together (``joint_populations``), so that a population id means
the same cells in every culture of the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import diptest
import numpy as np

from .channels import scatter_family
from .errors import CytomscError
from .populations import PopulationFinder, check_matrix
from .results import Bimodality, HeterogeneityResult, Population, PopulationPlots

METHOD = (
    "building blocks: Gaussian mixture of one shape, grown by BIC; populations: blocks "
    "joined unless two populations explain them better than one skewed, heavy-tailed "
    "population (BIC margin 10), with a bootstrap of the number"
)

DIP_SUBSAMPLE = 2000  # events per dip test: with 10^5 events every shoulder is "significant"
DIP_ALPHA = 0.05
LABEL_Z = 0.5  # |population median - culture median| in culture robust SDs to earn a word
LABEL_WORDS = {"FSC": ("small", "large"), "SSC": ("low SSC", "high SSC")}
PLOT_EVENTS = 4000  # events kept for the report's 2-D views
PLOT_BINS = 64
JOINT_FIT_EVENTS = 20_000


def dip_test(
    x: np.ndarray, n_max: int = DIP_SUBSAMPLE, random_state: int = 0
) -> tuple[float, float]:
    """Hartigan's dip statistic and its p-value (the ``diptest`` package: Hartigan's AS 217 and
    its interpolated null table), on at most ``n_max`` events of a seeded subsample: the dip is
    the effect size (0 unimodal .. 0.25 two point masses), and with 10^5 events any shoulder
    would be "significant" while mattering to nobody."""
    x = np.asarray(x, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if x.size > n_max:
        x = x[np.random.default_rng(random_state).choice(x.size, n_max, replace=False)]
    if x.size < 4 or x.min() == x.max():
        return 0.0, 1.0
    dip, p = diptest.diptest(x)
    return float(dip), float(min(max(p, 0.0), 1.0))


def robust_cv(raw: np.ndarray) -> float:
    """MAD * 1.4826 / median of raw (compensated, untransformed) values; NaN when the median is
    not positive (a negative marker sits around zero, and a CV of noise means nothing)."""
    raw = np.asarray(raw, dtype=float)
    raw = raw[np.isfinite(raw)]
    if raw.size == 0:
        return float("nan")
    med = float(np.median(raw))
    if med <= 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(raw - med)) / med)


def _is_scatter(channel: str) -> bool:
    return scatter_family(channel) is not None


def scale_name(power: float) -> str:
    """The Box-Cox power of the scatter scale in words, for reports."""
    return {0.0: "log", 0.5: "square root", 1.0: "linear"}.get(power, f"power {power:g}")


def scatter_columns(channels: list[str]) -> tuple[int, ...]:
    return tuple(i for i, ch in enumerate(channels) if _is_scatter(ch))


def phenotype_label(
    medians_t: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    channels: list[str],
    names: dict[str, str],
    max_terms: int = 3,
    ceilings: np.ndarray | None = None,
    straddles: np.ndarray | None = None,
) -> str:
    """Short phenotype of one population, relative to the culture's overall distribution.

    A channel earns a word when the population's median (model units) lies at least LABEL_Z
    robust SDs of the whole culture from the culture's median; the ``max_terms`` largest
    departures are named, markers first. A marker on which some populations are positive and
    others negative (``straddles``: their medians on both sides of its negative ceiling) reads
    "CD19+" or "CD3-", as a lab writes it; otherwise "dim"/"bright" (both sides positive, as a
    CD90-dim MSC population). FSC reads "small"/"large", SSC "low SSC"/"high SSC"; "typical"
    when no channel qualifies."""
    z = (medians_t - center) / scale
    order = [i for i in np.argsort(-np.abs(z), kind="stable") if abs(z[i]) >= LABEL_Z]
    order = order[:max_terms]
    markers = [i for i in order if not _is_scatter(channels[i])]
    scatter = [i for i in order if _is_scatter(channels[i])]
    words = []
    for i in markers:
        name = names.get(channels[i], channels[i])
        if ceilings is not None and straddles is not None and straddles[i]:
            words.append(f"{name}{'+' if medians_t[i] >= ceilings[i] else '−'}")
        else:
            words.append(f"{name} {'bright' if z[i] > 0 else 'dim'}")
    for i in scatter:
        lo, hi = LABEL_WORDS[scatter_family(channels[i]) or "FSC"]
        words.append(hi if z[i] > 0 else lo)
    if not words:
        return "typical"
    if markers and scatter:
        return " ".join(words[: len(markers)]) + ", " + ", ".join(words[len(markers) :])
    return " ".join(words) if markers else ", ".join(words)


def matched_f1(truth: np.ndarray, found: np.ndarray) -> float:
    """Agreement with a manual gating: the mean, over the expert's populations, of the F1 of
    the population matched to each one-to-one (Hungarian matching, as FlowCAP and FlowSOM's
    evaluations score it). An expert population left unmatched (fewer found) scores 0."""
    from scipy.optimize import linear_sum_assignment

    truth, found = np.asarray(truth).ravel(), np.asarray(found).ravel()
    ts, t_idx = np.unique(truth, return_inverse=True)
    fs, f_idx = np.unique(found, return_inverse=True)
    both = np.zeros((ts.size, fs.size))
    np.add.at(both, (t_idx, f_idx), 1.0)
    f1 = 2.0 * both / (both.sum(axis=1)[:, None] + both.sum(axis=0)[None, :])
    rows, cols = linear_sum_assignment(-f1)
    return float(f1[rows, cols].sum() / ts.size)


def _entropy(fractions: np.ndarray) -> float:
    p = fractions[fractions > 0]
    return float(-(p * np.log(p)).sum())


def _discriminating_pairs(
    Xd: np.ndarray, labels: np.ndarray, k: int, most: int = 3
) -> list[tuple[int, int]]:
    """The channel pairs on which the populations stand furthest apart: each channel's
    separation is its between-population variance over its within-population variance, and a
    pair scores the sum of its two channels'. Plot units, so markers and scatter compare."""
    d = Xd.shape[1]
    if d < 2 or k < 2:
        return [(0, 1)] if d >= 2 else []
    means = np.array([Xd[labels == j + 1].mean(axis=0) for j in range(k)])
    within = np.array([Xd[labels == j + 1].var(axis=0) for j in range(k)])
    w = np.bincount(labels - 1, minlength=k) / labels.size
    grand = w @ means
    between = w @ (means - grand) ** 2
    ratio = between / np.maximum(w @ within, 1e-12)
    pairs = sorted(
        ((ratio[i] + ratio[j], i, j) for i in range(d) for j in range(i + 1, d)), reverse=True
    )
    return [(i, j) for _, i, j in pairs[:most]]


@dataclass(frozen=True)
class ChannelAxes:
    """How the report draws one clustered channel: its plot range and tick labels in raw units
    (the pipeline knows the Logicle parameters; this module does not)."""

    lo: float
    hi: float
    ticks: list[tuple[float, str]]


def describe_heterogeneity(
    X: np.ndarray,
    channels: list[str],
    names: dict[str, str],
    raw: np.ndarray,
    seed: int = 0,
    display: np.ndarray | None = None,
    axes: dict[str, ChannelAxes] | None = None,
    negative_ceilings: tuple[float, ...] | None = None,
    **finder_kwargs: object,
) -> tuple[HeterogeneityResult, np.ndarray]:
    """Cluster one culture's cells and describe its heterogeneity.

    ``X``: events x channels, markers in plot (Logicle) units and FSC/SSC as log10; ``raw``: the
    same events compensated but untransformed (medians and robust CVs are reported in these
    units); ``display``: the same events as the report draws them (Logicle for markers, linear
    for scatter; defaults to ``X``); ``axes``: per channel, the plot range and ticks;
    ``negative_ceilings``: per channel, the top of the marker's negative region in ``X`` units
    (-inf for scatter), see ``PopulationFinder``. Returns the result and each event's
    population 1..k."""
    X = check_matrix(X, "heterogeneity input")
    raw = check_matrix(raw, "heterogeneity raw values")
    if X.shape != raw.shape or X.shape[1] != len(channels):
        raise CytomscError(
            f"heterogeneity input: shapes {X.shape} and {raw.shape} do not match "
            f"{len(channels)} channels"
        )
    if X.shape[0] < 50:
        raise CytomscError(f"heterogeneity input: {X.shape[0]} events are too few to cluster")
    shown = X if display is None else check_matrix(display, "heterogeneity display values")
    finder = PopulationFinder(
        random_state=seed,
        log_columns=scatter_columns(channels),
        negative_ceilings=negative_ceilings,
        **finder_kwargs,  # type: ignore[arg-type]
    )
    finder.fit(X)
    labels = finder.predict(X)
    k = finder.n_populations_
    fractions = np.bincount(labels - 1, minlength=k) / labels.size
    center_t = finder.center_
    populations = []
    shown_medians = np.zeros((k, X.shape[1]))
    meds_t = np.array(
        [finder.transform(np.median(X[labels == j + 1], axis=0)[None, :])[0] for j in range(k)]
    )
    ceil = None if negative_ceilings is None else np.asarray(negative_ceilings, dtype=float)
    straddles = (
        None
        if ceil is None
        else (meds_t >= ceil).any(axis=0) & (meds_t < ceil).any(axis=0) & np.isfinite(ceil)
    )
    for j in range(k):
        mine = labels == j + 1
        med_t = meds_t[j]
        med_raw = np.median(raw[mine], axis=0)
        shown_medians[j] = np.median(shown[mine], axis=0)
        label = (
            "all cells"
            if k == 1
            else phenotype_label(
                med_t, center_t, finder.scale_, channels, names, ceilings=ceil, straddles=straddles
            )
        )
        lo, hi = finder.fraction_ci95_[j]
        populations.append(
            Population(
                id=j + 1,
                fraction=float(fractions[j]),
                ci95=(float(min(lo, fractions[j])), float(max(hi, fractions[j]))),
                medians={ch: float(v) for ch, v in zip(channels, med_raw, strict=True)},
                label=label,
                medians_by_marker={
                    names.get(ch, ch): float(v) for ch, v in zip(channels, med_raw, strict=True)
                },
            )
        )
    bimodality: dict[str, Bimodality] = {}
    for i, ch in enumerate(channels):
        dip, p = dip_test(X[:, i], random_state=seed + i)
        bimodality[ch] = Bimodality(
            dip=dip, p_value=p, bimodal=bool(p < DIP_ALPHA), robust_cv=robust_cv(raw[:, i])
        )
    h = _entropy(fractions)
    result = HeterogeneityResult(
        n_populations=k,
        populations=populations,
        entropy=h,
        effective_number=math.exp(h),
        bimodality=bimodality,
        channels=list(channels),
        method=METHOD,
        n_events=int(finder.subsample_index_.size),
        scatter_scale=scale_name(finder.scatter_power_) if finder.log_columns else "",
        k_bootstrap=dict(finder.k_bootstrap_),
        plots=_plots(shown, labels, k, channels, axes or {}, shown_medians, seed),
    )
    return result, labels


def _plots(
    shown: np.ndarray,
    labels: np.ndarray,
    k: int,
    channels: list[str],
    axes: dict[str, ChannelAxes],
    medians: np.ndarray,
    seed: int,
) -> PopulationPlots:
    """What the report draws, computed here so that it never recomputes: per channel, a
    histogram per population on the channel's plot range; the most discriminating channel
    pairs; a seeded subsample of events with their populations; the display medians."""
    ranges = {}
    hists = {}
    for i, ch in enumerate(channels):
        ax = axes.get(ch)
        lo, hi = (
            (ax.lo, ax.hi)
            if ax
            else (float(np.percentile(shown[:, i], 0.5)), float(np.percentile(shown[:, i], 99.5)))
        )
        if not hi > lo:
            hi = lo + 1.0
        ranges[ch] = (lo, hi)
        edges = np.linspace(lo, hi, PLOT_BINS + 1)
        hists[ch] = np.array([np.histogram(shown[labels == j + 1, i], edges)[0] for j in range(k)])
    rng = np.random.default_rng([seed, 3])
    take = np.arange(shown.shape[0])
    if take.size > PLOT_EVENTS:
        take = np.sort(rng.choice(take.size, PLOT_EVENTS, replace=False))
    return PopulationPlots(
        ranges=ranges,
        histograms=hists,
        ticks={ch: list(ax.ticks) for ch, ax in axes.items()},
        pairs=_discriminating_pairs(shown, labels, k),
        sample=shown[take].astype(np.float32),
        sample_labels=labels[take].astype(np.int16),
        medians=medians,
    )


def joint_populations(
    cultures: dict[str, np.ndarray],
    channels: list[str],
    names: dict[str, str],
    seed: int = 0,
    per_culture: int = 5000,
    **finder_kwargs: object,
) -> dict:
    """One clustering across a batch, so population ids mean the same in every culture.

    Each culture contributes an equal seeded subsample (``per_culture`` events, or all it has) so a
    big culture cannot outvote a small one; the model's building blocks are then applied to every
    event of each culture with that culture's own weights (``predict_own_weights``). Returns
    ``{"populations": [{"id", "label"}...], "table": {culture: [fraction per id]}, "events":
    {culture: n}, "method": ...}`` (JSON-ready) plus ``"labels": {culture: per-event ids}``,
    which must be popped before serializing."""
    if not cultures:
        raise CytomscError("joint clustering: no cultures given")
    names_sorted = sorted(cultures)
    parts = []
    for i, name in enumerate(names_sorted):
        Xc = check_matrix(cultures[name], f"culture {name}")
        if Xc.shape[1] != len(channels):
            raise CytomscError(f"culture {name}: {Xc.shape[1]} channels, expected {len(channels)}")
        rng = np.random.default_rng([seed, i])
        take = min(per_culture, Xc.shape[0])
        parts.append(Xc[np.sort(rng.choice(Xc.shape[0], take, replace=False))])
    pooled = np.vstack(parts)
    kwargs = {
        "n_subsample": min(pooled.shape[0], JOINT_FIT_EVENTS),
        "n_bootstrap": 0,
        "log_columns": scatter_columns(channels),
        **finder_kwargs,
    }
    finder = PopulationFinder(random_state=seed, **kwargs).fit(pooled)
    k = finder.n_populations_
    pooled_labels = finder.predict(pooled)
    populations = []
    for j in range(k):
        med = finder.transform(np.median(pooled[pooled_labels == j + 1], axis=0)[None, :])[0]
        label = (
            "all cells"
            if k == 1
            else phenotype_label(med, finder.center_, finder.scale_, channels, names)
        )
        populations.append({"id": j + 1, "label": label})
    labels, table, events = {}, {}, {}
    for name in names_sorted:
        lab = finder.predict_own_weights(cultures[name])
        labels[name] = lab
        table[name] = (np.bincount(lab - 1, minlength=k) / lab.size).tolist()
        events[name] = int(lab.size)
    return {
        "method": METHOD,
        "per_culture": per_culture,
        "populations": populations,
        "table": table,
        "events": events,
        "labels": labels,
    }
