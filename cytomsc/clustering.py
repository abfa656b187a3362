"""The pipeline's heterogeneity step: what of a culture is clustered (``cluster_culture``), and
the batch-wide clustering of cultures together (``cluster_batch``). The clustering itself is
``heterogeneity.py``'s.

These two functions were ``pipeline._cluster`` and ``pipeline._joint_clustering``; they return
typed values (``Clustered``, ``BatchPopulations``) instead of tuples and a dict to pop.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from .results import (
    BatchPopulation,
    BatchPopulations,
    CultureResult,
    HeterogeneityResult,
    MarkerResult,
)

if TYPE_CHECKING:  # pragma: no cover
    from .culture import GatedTube
    from .panel import Assignment

__all__ = ["CLUSTER_MAX_EVENTS", "CLUSTER_SUBSAMPLE_JOINT", "Clustered", "cluster_batch",
           "cluster_culture"]

CLUSTER_SUBSAMPLE_JOINT = 5_000  # events per culture sent to the batch-wide clustering
CLUSTER_MAX_EVENTS = 200_000  # cells of one tube clustered; a seeded subsample above it


@dataclass
class Clustered:
    """One culture's clustering: the result (None: not clustered), each event's population
    (0 = not clustered, 1..k) for the exported events, and a subsample of the clustered events
    for the batch-wide clustering."""

    result: HeterogeneityResult | None = None
    events: np.ndarray | None = None
    joint_sample: np.ndarray | None = None


def cluster_culture(stained: GatedTube, assignments: list[Assignment], seed: int,
                    markers: list[MarkerResult]) -> Clustered:
    """Heterogeneity of the live single cells: the positive markers (logicle) plus log FSC-A and
    log SSC-A.

    Size and granularity are part of an MSC's phenotype (large flat cells vs small rapidly
    self-renewing ones), so scatter enters the clustering next to the markers, on a log scale
    where a cell population's spread is symmetric. Negative markers stay out: in a culture that
    passes they are background (their contaminants are judged by the criteria), and their skewed
    compensation spread would be found as "populations". ``markers``: the culture's measured
    markers, for the populations' medians by marker name.
    """
    from .channels import find_scatter
    from .heterogeneity import describe_heterogeneity

    pnn = stained.prep.channels
    scatter = find_scatter(pnn, [c.pns for c in stained.fcs.channels])
    positive = [a for a in assignments if a.criterion.expect == "positive"]
    channels = [a.channel for a in positive]
    names = {a.channel: a.label for a in positive}
    logged = []
    for ch, word in ((scatter.fsc, "FSC"), (scatter.ssc, "SSC")):
        if ch and ch not in channels:
            channels.append(ch)
            names[ch] = word
            logged.append(len(channels) - 1)
    if not channels:
        return Clustered()
    cols = np.array([stained.column(c) for c in channels], dtype=np.intp)
    # Above CLUSTER_MAX_EVENTS cells, a seeded subsample is clustered (population fractions to
    # +-0.2 %; memory bounded for 10^6-10^7-event files); the rest get population 0.
    idx = np.flatnonzero(stained.final)
    if idx.size > CLUSTER_MAX_EVENTS:
        pick = np.random.default_rng([seed, 2]).choice(idx.size, CLUSTER_MAX_EVENTS, replace=False)
        idx = idx[np.sort(pick)]
    # fancy indexing: already a copy (float64 also where a large tube's display is float32)
    X = stained.prep.display[np.ix_(idx, cols)].astype(np.float64, copy=False)
    raw = stained.prep.compensated[np.ix_(idx, cols)]
    if logged:
        X[:, logged] = np.log10(np.maximum(raw[:, logged], 1.0))
    if X.shape[0] < 100:
        return Clustered()
    het, labels = describe_heterogeneity(X, channels, names, raw, seed=seed)
    # Each population's median of every marker of the tube, the negative ones too (they are
    # not clustered, but a lab reads "population 2 is CD45 dim" from them).
    others = [a for a in assignments if a.channel not in names]
    populations = het.populations
    if others:
        other_cols = np.array([stained.column(a.channel) for a in others], dtype=np.intp)
        extra = stained.prep.compensated[np.ix_(idx, other_cols)]
        populations = []
        for p in het.populations:
            mine = extra[labels == p.id]
            medians = {a.channel: float(np.median(mine[:, j])) if mine.size else float("nan")
                       for j, a in enumerate(others)}
            populations.append(replace(p, medians={**p.medians, **medians}))
        names.update({a.channel: a.label for a in others})
    # which tube, and medians by marker name as well as by channel
    marker_of = {m.channel: m.marker for m in markers if m.tube == stained.name}
    het = replace(
        het, tube=stained.name,
        names={ch: names[ch] for ch in [*channels, *(a.channel for a in others)]},
        populations=[replace(p, medians_by_marker={marker_of.get(ch, ch): v
                                                   for ch, v in p.medians.items()})
                     for p in populations])
    population = np.zeros(stained.prep.compensated.shape[0], dtype=np.int32)
    population[idx] = labels
    rng = np.random.default_rng(seed)
    take = rng.choice(X.shape[0], size=min(CLUSTER_SUBSAMPLE_JOINT, X.shape[0]), replace=False)
    return Clustered(het, population, X[np.sort(take)])


def cluster_batch(cultures: list[CultureResult], samples: dict[str, np.ndarray],
                  seed: int) -> BatchPopulations | None:
    """One clustering across cultures on equal subsamples, so population ids mean the same thing
    in every culture. Only cultures clustered on the same channels can be pooled."""
    if len(samples) < 2:
        return None
    from .heterogeneity import joint_populations

    by_channels: dict[tuple[str, ...], dict[str, np.ndarray]] = {}
    names: dict[str, str] = {}
    for c in cultures:
        if c.culture in samples and c.heterogeneity is not None:
            key = tuple(c.heterogeneity.channels)
            by_channels.setdefault(key, {})[c.culture] = samples[c.culture]
            names.update({m.channel: m.marker for m in c.markers if m.channel})
    if not by_channels:
        return None
    key, group = max(by_channels.items(), key=lambda kv: (len(kv[1]), kv[0]))
    if len(group) < 2:
        return None
    names = {ch: names.get(ch, ch) for ch in key}
    table = joint_populations(group, list(key), names, seed=seed,
                              per_culture=CLUSTER_SUBSAMPLE_JOINT)
    # the per-event labels (table["labels"]) are not part of the result
    return BatchPopulations(
        method=table["method"], per_culture=table["per_culture"],
        populations=[BatchPopulation(p["id"], p["label"]) for p in table["populations"]],
        table=table["table"], events=table["events"])
