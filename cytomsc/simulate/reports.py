"""Result values with set numbers, for the report's tests and benchmarks: the report must print
exactly these (with one decimal, as summary.csv does). The event clouds behind the plots are
drawn from a seeded numpy Generator, so the same seed gives the same results.

``build_batch`` makes seven cultures (pass, fail, inconclusive, borderline, cocktail,
heterogeneous, long warnings); ``JOINT`` a batch-wide clustering of three of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..results import (
    BatchPopulation,
    BatchPopulations,
    BatchResult,
    Bimodality,
    CultureResult,
    FileInfo,
    GateStep,
    HeterogeneityResult,
    Histogram2D,
    InputError,
    MarkerHistogram,
    MarkerResult,
    PanelInfo,
    Population,
    PopulationPlots,
    Verdict,
)
from ..roles import Role

__all__ = [
    "COCKTAIL",
    "FLUOR_TICKS",
    "ISCT",
    "JOINT",
    "RUN_INFO",
    "SCATTER_TICKS",
    "build_batch",
    "cloud",
    "culture_result",
    "gate_steps",
    "heterogeneity_result",
    "hist2d",
    "marker_result",
]

RUN_INFO = {
    "command": "cytomsc analyze example_fcs -o reports --seed 0",
    "started": "2026-11-27T12:00:00+00:00",
    "seed": 0,
    "parameters": {"jobs": 2, "export_events": False},
}
COCKTAIL = "CD34/CD11b/CD19/CD45/HLA-DR"
ISCT = [
    ("CD73", "APC-A", "positive", 95.0),
    ("CD90", "FITC-A", "positive", 95.0),
    ("CD105", "PerCP-Cy5-5-A", "positive", 95.0),
    ("CD45", "PE-A", "negative", 2.0),
    ("CD34", "PE-Cy7-A", "negative", 2.0),
    ("CD14 or CD11b", "BV421-A", "negative", 2.0),
    ("CD79a or CD19", "BV510-A", "negative", 2.0),
    ("HLA-DR", "APC-H7-A", "negative", 2.0),
]
SCATTER_TICKS = [(0.0, "0"), (0.25, "65k"), (0.5, "131k"), (0.75, "196k"), (1.0, "262k")]
FLUOR_TICKS = [(0.1, "0"), (0.3, "10²"), (0.5, "10³"), (0.7, "10⁴"), (0.9, "10⁵")]


def cloud(
    rng: np.random.Generator,
    n: int,
    centre: tuple[float, float],
    sd: tuple[float, float],
    rho: float = 0.0,
) -> np.ndarray:
    cov = [[sd[0] ** 2, rho * sd[0] * sd[1]], [rho * sd[0] * sd[1], sd[1] ** 2]]
    return rng.multivariate_normal(centre, cov, size=n)


def hist2d(xy: np.ndarray, x: str, y: str, xt=SCATTER_TICKS, yt=SCATTER_TICKS) -> Histogram2D:
    edges = np.linspace(0.0, 1.0, 129)
    counts, _, _ = np.histogram2d(xy[:, 0], xy[:, 1], bins=[edges, edges])
    return Histogram2D(
        x=x, y=y, counts=counts, x_edges=edges, y_edges=edges, x_ticks=list(xt), y_ticks=list(yt)
    )


def gate_steps(rng: np.random.Generator, tube: str, n: int) -> list[GateStep]:
    t = np.column_stack([rng.uniform(0, 1, n), rng.normal(0.45, 0.08, n)])
    t[(t[:, 0] > 0.47) & (t[:, 0] < 0.52), 1] += 0.3  # a clog: signal jumps
    time_kept = int(n * 0.95)
    cells = np.vstack(
        [
            cloud(rng, int(n * 0.8), (0.5, 0.4), (0.1, 0.09), 0.5),
            cloud(rng, int(n * 0.2), (0.08, 0.06), (0.04, 0.04)),
        ]
    )
    n_cells = int(time_kept * 0.78)
    single = np.vstack(
        [
            cloud(rng, int(n * 0.85), (0.5, 0.5), (0.1, 0.1), 0.97),
            cloud(rng, int(n * 0.15), (0.75, 0.45), (0.08, 0.08), 0.9),
        ]
    )
    n_single = int(n_cells * 0.88)
    live = np.column_stack(
        [
            np.concatenate(
                [rng.normal(0.2, 0.05, int(n * 0.9)), rng.normal(0.7, 0.06, int(n * 0.1))]
            ),
            rng.normal(0.4, 0.1, n),
        ]
    )
    n_live = int(n_single * 0.91)

    def step(gate, parent, count, x, y, vertices, note, hist) -> GateStep:
        return GateStep(
            tube=tube,
            gate=gate,
            parent_count=parent,
            count=count,
            x=x,
            y=y,
            vertices=vertices,
            note=note,
            histogram=hist,
        )

    return [
        step(
            "time",
            n,
            time_kept,
            "Time",
            None,
            [(0.0, 0.47), (0.52, 1.0)],
            "dropped 5 % of acquisition time where the median signal jumped (clog)",
            hist2d(t, "Time", "FSC-A", xt=[]),
        ),
        step(
            "cells",
            time_kept,
            n_cells,
            "FSC-A",
            "SSC-A",
            [(0.22, 0.12), (0.85, 0.2), (0.9, 0.8), (0.35, 0.75), (0.2, 0.4)],
            "polygon around the main FSC/SSC density peak; debris near the origin left out",
            hist2d(cells, "FSC-A", "SSC-A"),
        ),
        step(
            "singlets",
            n_cells,
            n_single,
            "FSC-A",
            "FSC-H",
            [(0.2, 0.15), (0.85, 0.8), (0.8, 0.92), (0.15, 0.3)],
            "band along the FSC-A = FSC-H diagonal, 3 robust SD wide",
            hist2d(single, "FSC-A", "FSC-H"),
        ),
        step(
            "live",
            n_single,
            n_live,
            "7-AAD-A",
            None,
            [(0.0, 0.45)],
            "viability dye below the valley between the live and dead peaks",
            hist2d(live, "7-AAD-A", "SSC-A", xt=FLUOR_TICKS),
        ),
    ]


def marker_result(
    rng: np.random.Generator,
    name: str,
    channel: str | None,
    expect: Any,
    limit: float,
    pct: float | None,
    n: int,
    *,
    passed: bool | None = None,
    borderline: bool = False,
    source: Any = "isotype",
    half_width: float = 0.3,
    spread: float = 1.0,
) -> MarkerResult:
    if channel is None or pct is None:
        return MarkerResult(marker=name, channel=channel, expect=expect, limit=limit)
    if passed is None and expect != "informative":
        passed = pct >= limit if expect == "positive" else pct <= limit
    edges = np.linspace(0.0, 1.0, 201)
    n_pos = int(round(n * pct / 100))
    stained = np.concatenate([rng.normal(0.25, 0.05, n - n_pos), rng.normal(0.68, 0.07, n_pos)])
    control = rng.normal(0.25, 0.05, n)
    hist = MarkerHistogram(
        edges=edges,
        stained=np.histogram(stained, edges)[0],
        control=np.histogram(control, edges)[0],
        control_role=source,
        threshold=0.38,
        ticks=list(FLUOR_TICKS),
    )
    return MarkerResult(
        marker=name,
        channel=channel,
        expect=expect,
        limit=limit,
        percent_positive=pct,
        ci95=(max(0.0, pct - half_width), min(100.0, pct + half_width)),
        threshold=1234.5,
        threshold_source=source,
        control_spread_ratio=spread,
        events=n,
        passed=passed,
        borderline=borderline,
        tube="stained.fcs",
        histogram=hist,
    )


def heterogeneity_result(
    rng: np.random.Generator, fractions: list[float], labels: list[str]
) -> HeterogeneityResult:
    channels = ["FSC-A", "SSC-A", "CD90 FITC-A", "CD105 PerCP-Cy5-5-A", "CD73 APC-A"]
    pops, xy, lab = [], [], []
    k_all = len(fractions)
    for k, (f, label) in enumerate(zip(fractions, labels, strict=True), start=1):
        medians = rng.uniform(200, 120_000, len(channels))
        pops.append(
            Population(
                id=k,
                fraction=f,
                ci95=(f - 0.012, f + 0.012),
                label=label,
                medians={ch: float(v) for ch, v in zip(channels, medians, strict=True)},
            )
        )
        m = int(3000 * f)
        xy.append(rng.normal(0.3 + 0.1 * k, 0.05, (m, len(channels))))
        lab.append(np.full(m, k))
    sample = np.vstack(xy)
    sample_labels = np.concatenate(lab)
    edges = np.linspace(0.0, 1.0, 65)
    hists = {
        ch: np.array(
            [np.histogram(sample[sample_labels == j + 1, i], edges)[0] for j in range(k_all)]
        )
        for i, ch in enumerate(channels)
    }
    plots = PopulationPlots(
        ranges={ch: (0.0, 1.0) for ch in channels},
        histograms=hists,
        ticks={},
        pairs=[(2, 3), (0, 1)] if k_all > 1 else [],
        sample=sample.astype(np.float32),
        sample_labels=sample_labels.astype(np.int16),
        medians=np.array([np.median(c, axis=0) for c in xy]),
    )
    ent = float(-sum(f * np.log(f) for f in fractions))
    bim = {
        ch: Bimodality(
            dip=0.004 + 0.01 * i,
            p_value=0.9 if len(fractions) == 1 or i else 0.001,
            bimodal=len(fractions) > 1 and i == 0,
            robust_cv=0.2 + 0.05 * i,
        )
        for i, ch in enumerate(channels[2:])
    }
    return HeterogeneityResult(
        n_populations=k_all,
        populations=pops,
        entropy=ent,
        effective_number=float(np.exp(ent)),
        bimodality=bim,
        channels=channels,
        method="building blocks merged by a test",
        n_events=20_000,
        tube="stained.fcs",
        k_bootstrap={k_all: 17, k_all + 1: 3},
        plots=plots,
    )


def culture_result(
    rng: np.random.Generator,
    name: str,
    verdict: Verdict,
    markers: list[MarkerResult],
    n: int,
    *,
    borderline: bool = False,
    warnings: list[str] | None = None,
    missing: list[str] | None = None,
    joint: float | None = None,
    het: HeterogeneityResult | None = None,
) -> CultureResult:
    tubes = ["stained.fcs", "isotype.fcs", "unstained.fcs"]
    files = [
        FileInfo(
            path=f"/data/{name}/{t}",
            role=Role(t.split(".")[0]),
            sha256=f"{i:x}" * 64,
            events=n,
            cytometer="FACSCanto II",
            date="2026-11-20",
        )
        for i, t in enumerate(tubes, start=10)
    ]
    gates = [g for t in tubes for g in gate_steps(rng, t, n)]
    live = gates[3].count
    events = {
        "total": n,
        "time_ok": gates[0].count,
        "cells": gates[1].count,
        "singlets": gates[2].count,
        "live": live,
    }
    return CultureResult(
        culture=name,
        verdict=verdict,
        borderline=borderline,
        files=files,
        events=events,
        markers=markers,
        joint_phenotype_percent=joint,
        joint_phenotype_ci95=(joint - 0.6, joint + 0.6) if joint is not None else None,
        warnings=warnings or [],
        missing_markers=missing or [],
        metadata={"tissue_source": "bone marrow", "passage": "P4", "detachment_reagent": "TrypLE"},
        heterogeneity=het,
        gates=gates,
        output_name=name,
    )


def build_batch(n: int = 5000, seed: int = 0) -> BatchResult:
    """Seven cultures: pass, fail, inconclusive, borderline, cocktail, heterogeneous, and one
    with long warnings; every % positive is set here and must appear in the PDFs as is."""
    rng = np.random.default_rng(seed)
    good = {
        "CD73": 99.1,
        "CD90": 98.7,
        "CD105": 97.3,
        "CD45": 0.4,
        "CD34": 0.8,
        "CD14 or CD11b": 0.3,
        "CD79a or CD19": 0.2,
        "HLA-DR": 1.1,
    }

    def isct(values: Mapping[str, float | None], **kw: Any) -> list[MarkerResult]:
        return [
            marker_result(
                rng,
                m,
                ch if values.get(m) is not None else None,
                e,
                lim,
                values.get(m),
                n,
                **kw.get(m, {}),
            )
            for m, ch, e, lim in ISCT
        ]

    cultures = [
        culture_result(
            rng,
            "BM-041",
            "pass",
            isct(good),
            n,
            joint=94.6,
            het=heterogeneity_result(rng, [1.0], ["CD90 bright CD105 bright, large"]),
        ),
        culture_result(
            rng,
            "BM-042",
            "fail",
            isct({**good, "CD105": 88.3, "HLA-DR": 6.4}, CD105={"spread": 1.37}),
            n,
            joint=81.2,
            warnings=[
                "CD105 is dim: trypsin detachment lowers CD105; check "
                "the detachment reagent before repeating."
            ],
        ),
        culture_result(
            rng,
            "AD-007",
            "inconclusive",
            isct({k: v for k, v in good.items() if k not in ("CD14 or CD11b", "CD79a or CD19")}),
            n,
            missing=["CD14 or CD11b", "CD79a or CD19"],
            warnings=[
                "No channel carries CD14 or CD11b, nor CD79a or CD19: the panel cannot be judged."
            ],
        ),
        culture_result(
            rng,
            "UC-113",
            "pass",
            isct({**good, "CD73": 95.4}, CD73={"borderline": True, "half_width": 0.9}),
            n,
            borderline=True,
            joint=93.0,
        ),
        culture_result(
            rng,
            "BM-050",
            "pass",
            [marker_result(rng, m, ch, e, lim, good[m], n) for m, ch, e, lim in ISCT[:3]]
            + [marker_result(rng, COCKTAIL, "PE-A", "negative", 2.0, 1.3, n, source="fmo")],
            n,
            joint=95.8,
        ),
        culture_result(
            rng,
            "BM-077",
            "pass",
            isct(good),
            n,
            joint=96.1,
            het=heterogeneity_result(
                rng,
                [0.68, 0.32],
                ["CD90 bright CD105 bright, large", "CD90 dim CD105 bright, small"],
            ),
        ),
        culture_result(
            rng,
            "BM-099",
            "pass",
            isct(good, CD90={"source": "auto"}),
            n,
            warnings=[
                f"Warning {i}: only 8,512 gated events in the stained tube (fewer "
                "than 10,000), so each % positive is less precise; the interval "
                "shows how much. " * 2
                for i in range(14)
            ],
        ),
    ]
    errors = [
        InputError(
            "/data/broken/tube3.fcs", "not an FCS file: the header does not start with 'FCS'"
        ),
        InputError(
            "/data/broken/truncated.fcs", "truncated: $ENDDATA points past the end of the file"
        ),
    ]
    return BatchResult(
        cytomsc_version="0.1.0",
        panel=PanelInfo(
            "isct-2006",
            "ISCT 2006 minimal criteria",
            "Dominici et al., Cytotherapy 2006;8:315-317",
            "",
            "ab" * 32,
        ),
        parameters={
            "seed": 0,
            "control_percentile": 99.5,
            "panel": "isct-2006",
            "comp": "file",
            "min_events": 1000,
        },
        cultures=cultures,
        errors=errors,
    )


# the batch-wide clustering of three of build_batch's cultures
JOINT = BatchPopulations(
    method="gaussian mixture, BIC",
    per_culture=5000,
    populations=[
        BatchPopulation(1, "CD90 bright CD105 bright, large"),
        BatchPopulation(2, "CD90 dim CD105 bright, small"),
        BatchPopulation(3, "CD73 dim, small"),
    ],
    table={
        "BM-077": [0.6804, 0.2996, 0.02],
        "BM-041": [0.9551, 0.0449, 0.0],
        "UC-113": [0.2012, 0.0, 0.7988],
    },
    events={"BM-077": 20_000, "BM-041": 18_250, "UC-113": 9_731},
)
