"""The overview's compensation pages: the matrix from the single-stain controls, and one page per
control with its fit against every other detector.

Each panel shows the control's scatter-gated events (stained detector across, the other detector
up, log10 axes), the two points the coefficient is the ratio of (the unstained control's medians
and the positive population's medians, both marked) and the line through them,
y = y0 + s (x - x0). The numbers are those of summary.json's ``compensation``; nothing is refitted.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def spillover_pages(flow: Any, result: Any) -> None:
    """Append the compensation section to an overview ``Flow``."""
    from .plots import Cell

    flow.new_section("Compensation from single-stain controls")
    used = (
        "used for every culture of this batch"
        if result.used
        else "written to compensation.csv but not applied (--comp was given)"
    )
    flow.text(
        f"Spillover matrix ({used}). Rows: the dye's own detector; columns: the share of "
        f"its signal seen in each detector. Method: {result.method}. Negative control: "
        f"{result.unstained}.",
        size=8,
    )
    flow.table(
        ["from \\ into", *result.detectors],
        [
            [Cell(d, bold=True), *[f"{v:.4f}" for v in row]]
            for d, row in zip(result.detectors, result.matrix, strict=True)
        ],
        [0.2, *[0.8 / max(len(result.detectors), 1)] * len(result.detectors)],
        size=8,
        aligns="l" + "r" * len(result.detectors),
    )
    flow.table(
        [
            "Control",
            "Detector",
            "Gated events",
            "Positive events",
            "Separation (spreads)",
            "Warnings",
        ],
        [
            [
                c.file,
                c.detector,
                f"{c.events:,}",
                f"{c.positive_events:,}",
                f"{c.separation:.1f}",
                "; ".join(c.warnings) or "none",
            ]
            for c in result.controls
        ],
        [0.26, 0.09, 0.09, 0.09, 0.1, 0.37],
        size=7.5,
        aligns="llrrrl",
    )
    for w in result.warnings:
        if not any(w.endswith(x) for c in result.controls for x in c.warnings):
            flow.text(w, size=8)
    index = {d: i for i, d in enumerate(result.detectors)}
    for c in result.controls:
        flow.new_section(f"Single-stain control: {Path(c.file).name} ({c.role}, {c.detector})")
        flow.text(
            f"{c.positive_events:,} positive events of {c.events:,} inside the scatter "
            "gate. Circle: unstained control's medians; square: the positive events' "
            "medians; line: the spillover fit through them.",
            size=8,
        )
        if c.warnings:
            flow.bullets([f"Warning: {w}" for w in c.warnings], size=8)
        others = [d for d in result.detectors if d != c.detector]
        panels = flow.panels(len(others), 4, 120, title_room=30, below=32, wspace=52)
        for panel, d in zip(panels, others, strict=True):
            s = result.matrix[index[c.detector]][index[d]]
            _fit_panel(panel, c, d, s)


def _fit_panel(p: Any, c: Any, d: str, s: float) -> None:
    from . import plots

    hist = (c.histograms or {}).get(d)
    if hist is not None:
        plots.density(p, hist)
    else:
        p.limits((0.0, 1.0), (0.0, 1.0))
        p.frame(xlabel=c.detector, ylabel=d)
        p.message("no plot data returned")
    ax = p.axes()
    my, y0 = c.medians.get(d, (math.nan, math.nan))
    x0, mx = c.x_medians
    if all(math.isfinite(v) for v in (x0, mx, y0, my)):
        xs = np.geomspace(max(x0, 1.0), 10 ** p.xlim[1], 60)
        ys = y0 + s * (xs - x0)
        ok = ys > 0
        ax.plot(
            np.log10(xs[ok]),
            np.log10(ys[ok]),
            color="black",
            linewidth=1.2,
            path_effects=plots.HALO,
        )
        for (u, v), marker in (((x0, y0), "o"), ((mx, my), "s")):
            if u > 0 and v > 0:
                ax.plot(
                    [math.log10(u)],
                    [math.log10(v)],
                    marker=marker,
                    markersize=6,
                    markerfacecolor="white",
                    markeredgecolor="black",
                    linestyle="none",
                )
    p.title([f"{c.detector} into {d}: {s:.4f}", "log10 axes, raw (uncompensated) units"])
