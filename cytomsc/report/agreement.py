"""compare.pdf: the method comparison of automatic against manual gating, as a lab files it.

First the summary per quantity (bias, SD, 95 % limits of agreement, mean F1), then which
workspace gate was set beside which cytomsc gate and why, then one Bland-Altman plot per quantity
(difference automatic - manual in percentage points against the mean of the two, with the bias
and the limits of agreement drawn), then every row. Nothing is recomputed: the numbers are those
of compare.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from ..compare import Comparison


def write_agreement_pdf(result: Comparison, path: Path) -> None:
    from .. import __version__
    from . import plots

    plots.save_pdf(
        agreement_pages(result), Path(path), "cytomsc agreement with manual gating", __version__
    )


def _f(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def agreement_pages(result: Comparison) -> list[Figure]:
    import matplotlib

    from .. import __version__
    from . import plots

    with matplotlib.rc_context(plots.RC):
        flow = plots.Flow(f"cytomsc {__version__} · agreement with manual gating")
        flow.new_section("Agreement with manual gating", page_break=False)
        samples = len({(r.culture, r.sample) for r in result.rows})
        flow.text(
            f"Automatic gates against the gates of {result.gates_file} (SHA-256 "
            f"{result.gates_sha256[:16]}…), applied by FlowKit, on {samples} tube(s). "
            "Difference = automatic - manual, in percentage points; cells, singlets and "
            "live are % of all the tube's events, a marker's % positive is of its parent in "
            "each method. F1: agreement of event membership (1 = the same events).",
            size=8.5,
        )
        flow.text("Summary per quantity", size=10, bold=True)
        flow.table(
            [
                "Quantity",
                "n",
                "Bias (pp)",
                "SD (pp)",
                "95 % limits of agreement (pp)",
                "Mean F1",
                "Largest difference (pp)",
            ],
            [
                [
                    s.quantity,
                    str(s.n),
                    _f(s.bias_pp),
                    _f(s.sd_pp),
                    "–" if s.limits_pp is None else f"{s.limits_pp[0]:.2f} to {s.limits_pp[1]:.2f}",
                    _f(s.mean_f1, 4),
                    _f(s.worst_difference_pp),
                ]
                for s in result.summaries
            ]
            or [["no corresponding gates", "", "", "", "", "", ""]],
            [0.22, 0.06, 0.1, 0.1, 0.24, 0.1, 0.18],
            size=8,
            aligns="lrrrlrr",
        )
        flow.text("Limits of agreement need 3 or more tubes; the SD needs 2.", size=7.5)
        flow.text("Which workspace gate stands for which cytomsc gate", size=10, bold=True)
        flow.table(
            ["Tube", "Quantity", "Workspace gate", "Why", "Automatic"],
            [
                [c["sample"], c["quantity"], c["workspace_gate"] or "–", c["rule"], c["automatic"]]
                for c in result.correspondence
            ]
            or [["–", "", "", "", ""]],
            [0.2, 0.16, 0.26, 0.28, 0.1],
            size=7.5,
        )
        quantities = [s.quantity for s in result.summaries]
        if quantities:
            flow.new_section("Bland-Altman plots")
            panels = flow.panels(len(quantities), 2, 170, title_room=30, below=34, wspace=60)
            for panel, s in zip(panels, result.summaries, strict=True):
                _bland_altman(panel, s, [r for r in result.rows if r.quantity == s.quantity])
        flow.new_section("Every tube")
        flow.table(
            [
                "Culture",
                "Tube",
                "Quantity",
                "Manual n",
                "Auto n",
                "Manual %",
                "Auto %",
                "Diff (pp)",
                "F1",
            ],
            [
                [
                    r.culture,
                    r.sample,
                    r.quantity,
                    f"{r.manual_count:,}",
                    f"{r.automatic_count:,}",
                    _f(r.manual_percent),
                    _f(r.automatic_percent),
                    _f(r.difference_pp),
                    _f(r.f1, 4),
                ]
                for r in result.rows
            ]
            or [["–"] + [""] * 8],
            [0.15, 0.17, 0.14, 0.09, 0.09, 0.09, 0.09, 0.09, 0.09],
            size=7,
            aligns="lllrrrrrr",
        )
        if result.errors:
            flow.text("Tubes that could not be compared", size=10, bold=True)
            flow.table(
                ["File", "Reason"],
                [[e.path, e.message] for e in result.errors],
                [0.4, 0.6],
                size=7.5,
            )
        plots.add_footers(flow, f"Agreement with {result.gates_file}")
    return flow.pages


def _bland_altman(p: Any, s: Any, rows: list[Any]) -> None:
    """Differences against means, the bias line and (n >= 3) the limits of agreement."""
    from . import plots

    mean = [0.5 * (r.manual_percent + r.automatic_percent) for r in rows]
    diff = [r.difference_pp for r in rows]
    lines = [s.bias_pp, *(s.limits_pp or ())]
    lo_x, hi_x = min(mean), max(mean)
    pad_x = max(1.0, 0.1 * (hi_x - lo_x))
    lo_y, hi_y = min([*diff, *lines, 0.0]), max([*diff, *lines, 0.0])
    pad_y = max(0.5, 0.15 * (hi_y - lo_y))
    xlim = (lo_x - pad_x, hi_x + pad_x)
    ylim = (lo_y - pad_y, hi_y + pad_y)
    p.limits(xlim, ylim)
    ax = p.axes()
    ax.axhline(0.0, color="#999999", linewidth=0.6)
    ax.axhline(s.bias_pp, color="black", linewidth=1.1)
    for v in s.limits_pp or ():
        ax.axhline(v, color="black", linewidth=0.9, linestyle="--")
    ax.scatter(mean, diff, s=14, facecolor="white", edgecolor="black", linewidth=0.9, zorder=3)
    p.frame(
        plots.auto_ticks(*xlim),
        plots.auto_ticks(*ylim),
        "mean of both methods (%)",
        "automatic - manual (pp)",
    )
    limits = "" if s.limits_pp is None else f"; limits {s.limits_pp[0]:.2f} to {s.limits_pp[1]:.2f}"
    p.title([s.quantity, f"n = {s.n}, bias {s.bias_pp:+.2f} pp{limits}; mean F1 {s.mean_f1:.3f}"])
