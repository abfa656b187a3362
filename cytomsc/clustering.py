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
    from .panel import Assignment, Matching

__all__ = [
    "CLUSTER_MAX_EVENTS",
    "CLUSTER_SUBSAMPLE_JOINT",
    "Clustered",
    "cluster_batch",
    "cluster_culture",
    "cluster_tube",
]

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


def cluster_tube(
    stained: list[GatedTube], matchings: dict[str, Matching]
) -> tuple[GatedTube, list[Assignment], str] | None:
    """The stained tube whose cells are clustered, with the markers clustered in it.

    Every positive and informative marker counts (a lab's MSC subset markers, CD146, CD271,
    SSEA-4, are informative markers of its panel), unless its criterion says ``cluster = false``;
    a split panel or a kit is clustered in the tube that carries most of them, on that tube's
    own channels (a marker read in another tube for its % positive is measured here too).
    Negative markers stay out: in a culture that passes they are background, and contaminants
    are the criteria's business. A tube with negative markers only is clustered on them rather
    than on scatter alone. Returns None when no stained tube has a marker channel; the third
    value says in words what was clustered."""
    best: tuple[int, int, GatedTube, list[Assignment]] | None = None
    for i, tube in enumerate(stained):
        matching = matchings.get(tube.name)
        if matching is None:
            continue
        marks = [
            a
            for a in matching.assignments
            if a.criterion.expect in ("positive", "informative") and a.criterion.cluster
        ]
        key = (len(marks), -i)
        if marks and (best is None or key > best[:2]):
            best = (key[0], key[1], tube, marks)
    if best is not None:
        return best[2], best[3], "positive and informative markers"
    for tube in stained:
        matching = matchings.get(tube.name)
        if matching is not None and matching.assignments:
            return (
                tube,
                list(matching.assignments),
                "negative markers (the tube has no positive or informative marker)",
            )
    return None


def cluster_culture(
    stained: GatedTube,
    assignments: list[Assignment],
    seed: int,
    markers: list[MarkerResult],
    tube_assignments: list[Assignment] | None = None,
) -> Clustered:
    """Heterogeneity of the tube's live single cells: its clustered markers (``assignments``)
    on the Logicle scale plus log10 FSC-A and SSC-A.

    Size and granularity are part of an MSC's phenotype (large flat cells vs small rapidly
    self-renewing ones), so scatter enters the clustering next to the markers. Each marker's
    threshold (``markers``: the culture's measured markers; raw units, from its control or
    placed automatically) marks the top of its negative region: populations that differ only
    below it (the spread of negative cells after compensation) are not told apart
    (``populations.PopulationFinder``). ``tube_assignments``: every marker of the tube, for
    the populations' medians of the markers not clustered (a lab reads "population 2 is CD45
    dim" from them).
    """
    from .channels import find_scatter
    from .heterogeneity import ChannelAxes, describe_heterogeneity
    from .positivity import auto_threshold_display
    from .preprocess import axis_ticks, logicle

    pnn = stained.prep.channels
    scatter = find_scatter(pnn, [c.pns for c in stained.fcs.channels])
    channels = list(dict.fromkeys(a.channel for a in assignments))
    names = {a.channel: a.label for a in assignments}
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
    shown = stained.prep.display[np.ix_(idx, cols)].astype(np.float64, copy=False)
    X = shown.copy()  # as clustered: scatter as log10 (shown: linear, as the page draws it)
    raw = stained.prep.compensated[np.ix_(idx, cols)]
    if logged:
        X[:, logged] = np.log10(np.maximum(raw[:, logged], 1.0))
    if X.shape[0] < 100:
        return Clustered()
    thresholds = {
        m.channel: m.threshold
        for m in markers
        if m.tube == stained.name and m.threshold is not None and m.channel
    }
    ceilings: list[float] = []
    axes: dict[str, ChannelAxes] = {}
    for j, ch in enumerate(channels):
        params = stained.prep.logicle.get(ch)
        if j in logged or params is None:
            ceilings.append(-np.inf)
            lo, hi = np.percentile(shown[:, j], [0.5, 99.5])
            axes[ch] = ChannelAxes(float(lo), float(hi), [])
            continue
        if ch in thresholds:
            ceilings.append(float(logicle(np.array([thresholds[ch]]), params)[0]))
        else:
            ceilings.append(float(auto_threshold_display(X[:, j])))
        axes[ch] = ChannelAxes(
            min(0.0, float(np.percentile(X[:, j], 0.1))), 1.0, axis_ticks(params)
        )
    het, labels = describe_heterogeneity(
        X,
        channels,
        names,
        raw,
        seed=seed,
        display=shown,
        axes=axes,
        negative_ceilings=tuple(ceilings),
    )
    others = [a for a in (tube_assignments or []) if a.channel not in names]
    populations = het.populations
    if others:
        other_cols = np.array([stained.column(a.channel) for a in others], dtype=np.intp)
        extra = stained.prep.compensated[np.ix_(idx, other_cols)]
        populations = []
        for p in het.populations:
            mine = extra[labels == p.id]
            medians = {
                a.channel: float(np.median(mine[:, j])) if mine.size else float("nan")
                for j, a in enumerate(others)
            }
            populations.append(replace(p, medians={**p.medians, **medians}))
        names.update({a.channel: a.label for a in others})
    # which tube, and medians by marker name as well as by channel
    marker_of = {m.channel: m.marker for m in markers if m.tube == stained.name}
    het = replace(
        het,
        tube=stained.name,
        names={ch: names[ch] for ch in [*channels, *(a.channel for a in others)]},
        populations=[
            replace(p, medians_by_marker={marker_of.get(ch, ch): v for ch, v in p.medians.items()})
            for p in populations
        ],
    )
    population = np.zeros(stained.prep.compensated.shape[0], dtype=np.int32)
    population[idx] = labels
    rng = np.random.default_rng(seed)
    take = rng.choice(X.shape[0], size=min(CLUSTER_SUBSAMPLE_JOINT, X.shape[0]), replace=False)
    return Clustered(het, population, X[np.sort(take)])


def cluster_batch(
    cultures: list[CultureResult], samples: dict[str, np.ndarray], seed: int
) -> BatchPopulations | None:
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
    table = joint_populations(
        group, list(key), names, seed=seed, per_culture=CLUSTER_SUBSAMPLE_JOINT
    )
    # the per-event labels (table["labels"]) are not part of the result
    return BatchPopulations(
        method=table["method"],
        per_culture=table["per_culture"],
        populations=[BatchPopulation(p["id"], p["label"]) for p in table["populations"]],
        table=table["table"],
        events=table["events"],
    )
