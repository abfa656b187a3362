"""The batch overview PDF: every culture's verdict on one line, the files that failed, and the
populations of the batch-wide (joint) clustering.

About 25 cultures per landscape page: verdict, each marker's % positive (printed with one
decimal as in ``summary.csv``, followed by a symbol; the cell shading only repeats the symbol so
a black-and-white print loses nothing), the joint phenotype, and the populations found. Then the
list of input files that could not be read, with the reason. When the cultures were also
clustered together (``BatchResult.batch_populations``), a cultures x populations table of
fractions follows: there population P2 means the same cells in every culture, which the
per-culture clusterings cannot promise. Nothing is recomputed.

matplotlib is imported inside the functions: the CLI imports this module and must start fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..results import BatchResult, CultureResult, MarkerResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LEGEND = (
    "✓ pass   ✗ fail   ? borderline (the 95 % interval crosses the limit)   "
    "· reported, not judged   – not measured.   The shading repeats the symbol."
)


def write_overview(batch: BatchResult, path: Path, run_info: dict[str, Any]) -> None:
    """Write the batch overview PDF at ``path``; same input gives the same bytes."""
    from . import plots

    plots.save_pdf(
        overview_pages(batch, run_info), Path(path), "cytomsc batch overview", batch.cytomsc_version
    )


def overview_pages(batch: BatchResult, run_info: dict[str, Any]) -> list[Figure]:
    """The overview's pages as matplotlib figures, footers included."""
    import matplotlib

    from . import plots
    from .plots import Cell

    with matplotlib.rc_context(plots.RC):
        flow = plots.Flow(
            f"cytomsc {batch.cytomsc_version} · MSC flow cytometry QC · batch overview",
            landscape=True,
        )
        flow.new_section("Batch overview", page_break=False)
        flow.text(_tally(batch), size=10, bold=True)
        flow.text(
            f"Panel: {batch.panel.name or '–'} (id {batch.panel.id or '–'}); "
            f"{batch.panel.reference or 'no reference given'}. "
            f"Command: {run_info.get('command', '–')}. "
            f"Started: {run_info.get('started', '–')}.",
            size=8,
        )
        flow.text(LEGEND, size=7.5)
        markers = _marker_columns(batch.cultures)
        headers = [
            "Culture",
            "Verdict",
            *[f"{name.replace('/', '/ ')}\n{_limit(m)}" for name, m in markers],
            "Joint %",
            "Populations: fractions %",
        ]
        mw = min(0.085, 0.52 / max(len(markers), 1))
        widths = [0.19, 0.1, *[mw] * len(markers), 0.05, 0.14]
        # one table across as many pages as needed (~25 cultures a page, header repeated)
        rows = [_row(c, markers) for c in batch.cultures] or [
            [Cell("no culture analysed")] + [""] * (len(headers) - 1)
        ]
        flow.table(headers, rows, widths, size=7.5, aligns="ll" + "r" * len(markers) + "rl")

        flow.text("Files that could not be read", size=10, bold=True, after=4)
        if batch.errors:
            flow.table(
                ["File", "Reason"],
                [[e.path, e.message] for e in batch.errors],
                [0.45, 0.55],
                size=8,
            )
        else:
            flow.text("None: every input file was read.", size=8.5)
        if batch.batch_populations:
            _joint(flow, batch)
        if batch.compensation is not None:
            from .compensation import spillover_pages

            spillover_pages(flow, batch.compensation)
        plots.add_footers(flow, "Batch overview")
    return flow.pages


def _tally(batch: BatchResult) -> str:
    n = len(batch.cultures)
    counts = {
        v: sum(c.verdict == v for c in batch.cultures) for v in ("pass", "fail", "inconclusive")
    }
    border = sum(c.borderline for c in batch.cultures)
    text = (
        f"{n} culture{'s' if n != 1 else ''}: {counts['pass']} pass, {counts['fail']} fail, "
        f"{counts['inconclusive']} inconclusive"
    )
    text += f" ({border} borderline)." if border else "."
    if batch.errors:
        k = len(batch.errors)
        text += f" {k} file{'s' if k != 1 else ''} could not be read (listed below)."
    return text


def _marker_columns(cultures: list[CultureResult]) -> list[tuple[str, MarkerResult]]:
    """Markers in the order they first appear, with one example result for the limit."""
    seen: dict[str, MarkerResult] = {}
    for c in cultures:
        for m in c.markers:
            seen.setdefault(m.marker, m)
    return list(seen.items())


def _limit(m: MarkerResult) -> str:
    from . import plots

    text = plots.limit_text(m)
    return "" if text == "–" else f"({text})"


def _row(c: CultureResult, markers: list[tuple[str, MarkerResult]]) -> list[Any]:
    from . import plots
    from .plots import Cell

    by_name = {m.marker: m for m in c.markers}
    verdict = c.verdict.upper() + (" (borderline)" if c.borderline else "")
    # a borderline pass is a caution (yellow); a fail stays a fail whatever its intervals
    bg = {"pass": plots.PASS_BG, "fail": plots.FAIL_BG}.get(c.verdict, plots.BORDER_BG)
    if c.borderline and c.verdict == "pass":
        bg = plots.BORDER_BG
    row: list[Any] = [Cell(c.culture, bold=True), Cell(verdict, bg=bg, bold=True)]
    for name, _ in markers:
        m = by_name.get(name)
        row.append(_marker_cell(m))
    row.append(plots.pct(c.joint_phenotype_percent))
    h = c.heterogeneity
    if h is None:
        row.append("not clustered")
    else:
        fr = " / ".join(plots.pct(100 * p.fraction) for p in h.populations)
        row.append(f"{h.n_populations}: {fr}")
    return row


def _marker_cell(m: MarkerResult | None) -> Any:
    from . import plots
    from .plots import Cell

    if m is None or m.percent_positive is None:
        return Cell("–")
    if m.passed is None:
        return Cell(f"{plots.pct(m.percent_positive)} ·")
    symbol = "✓" if m.passed else "✗"
    if m.borderline:
        symbol += "?"
    return Cell(
        f"{plots.pct(m.percent_positive)} {symbol}",
        bg=plots.mark_bg(m.passed, m.borderline),
        bold=m.passed is False,
    )


def _joint(flow: Any, batch: BatchResult) -> None:
    """The joint clustering: its populations in words, then % of each culture's cells in each.

    ``batch_populations``: ``populations`` (id, label), ``table`` ``{culture: [fraction per
    id, in id order]}`` (a mapping ``{id: fraction}`` is read too), ``events`` ``{culture: n}``,
    ``method``, ``per_culture``.
    """
    from . import plots
    from .plots import Cell

    joint = batch.batch_populations
    assert joint is not None
    pops = list(joint.populations)
    table = dict(joint.table)
    events = dict(joint.events)
    flow.space(6)
    flow.new_section("Populations across the batch", page_break=False)
    per = joint.per_culture
    sample = (
        f"an equal subsample of up to {per:,} cells from each"
        if isinstance(per, int)
        else "an equal subsample from each"
    )
    flow.text(
        f"One clustering of {len(table)} cultures together ({sample}, method: "
        f"{joint.method or '–'}), so a population id means the same cells in every "
        "culture; the per-culture columns above number each culture's populations on "
        "their own. Percent of each culture's live single cells, one decimal.",
        size=8,
    )
    if not pops:
        flow.text("The joint clustering returned no populations.", size=8.5)
        return
    flow.table(
        ["Population", "Phenotype"],
        [[Cell(f"P{p.id}", bold=True), p.label or "–"] for p in pops],
        [0.12, 0.88],
        size=8,
    )
    # the batch's culture order first, then any other culture the table holds
    order = [c.culture for c in batch.cultures if c.culture in table]
    order += sorted(name for name in table if name not in set(order))
    n = len(pops)
    width = min(0.1, 0.7 / n)
    rows = [
        [
            Cell(name, bold=True),
            f"{events[name]:,}" if name in events else "–",
            *[plots.pct(_fraction(table[name], k, p.id)) for k, p in enumerate(pops)],
        ]
        for name in order
    ]
    flow.table(
        ["Culture", "Cells", *[f"P{p.id} %" for p in pops]],
        rows or [[Cell("no culture pooled"), "", *[""] * n]],
        [0.19, 0.09, *[width] * n],
        size=7.5,
        aligns="lr" + "r" * n,
    )


def _fraction(row: Any, index: int, pid: Any) -> float | None:
    """A population's fraction (0-1) in one culture's row, as percent; None when absent."""
    if isinstance(row, dict):
        value = row.get(pid, row.get(str(pid)))
    else:
        value = row[index] if index < len(row) else None
    return None if value is None else 100.0 * float(value)
