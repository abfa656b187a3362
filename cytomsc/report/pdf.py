"""One culture's PDF: the page a QC reviewer reads and signs.

Sections, in order: QC summary (page 1 always holds the verdict, the release facts, the criteria
table, the joint phenotype, the event funnel per stained tube and the sign-off block; warnings
that do not fit continue on a page that says so, then the files), Gating (one page per tube, the
stained tube first), Marker histograms, Heterogeneity (when the culture was clustered) and Audit
trail (software versions, parameters, compensation matrices, input and output hashes). Every
number printed comes from the ``CultureResult``/``BatchResult`` the analysis returned,
percentages with one decimal exactly as in ``summary.csv``, so the PDF and ``summary.json`` cannot
disagree.

matplotlib is imported inside the functions: the CLI imports this module and must start fast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..results import BatchResult, CultureResult, GateStep, HeterogeneityResult, MarkerResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .plots import Flow

FUNNEL = (
    ("total", "Acquired events (total)"),
    ("time_ok", "Stable flow (time QC)"),
    ("margin_ok", "Not saturated (margin events)"),
    ("cells", "Cells (not debris)"),
    ("singlets", "Single cells (not doublets)"),
    ("live", "Live cells"),
)
VERDICT_WORDS = {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE"}
# metadata a lab records about the culture; several spellings of the same keyword
CULTURE_FACTS = (
    ("Tissue source", ("tissue_source", "tissue", "source")),
    ("Passage", ("passage",)),
    ("Detachment reagent", ("detachment_reagent", "detachment", "reagent")),
)
POP_SYMBOLS = ("●", "■", "▲", "◆", "▼", "✚", "✖", "★", "◀", "▶")
SECTIONS = ("QC summary", "Gating", "Marker histograms", "Heterogeneity", "Audit trail")


def write_culture_pdf(
    culture: CultureResult, batch: BatchResult, path: Path, run_info: dict[str, Any]
) -> None:
    """Write ``path`` (a PDF) for one culture; same input gives the same bytes."""
    from . import plots

    pages = culture_pages(culture, batch, run_info)
    plots.save_pdf(
        pages, Path(path), f"cytomsc QC report: {culture.culture}", batch.cytomsc_version
    )


def culture_pages(
    culture: CultureResult, batch: BatchResult, run_info: dict[str, Any]
) -> list[Figure]:
    """The culture's pages as matplotlib figures, footers included (for the PDF or a PNG)."""
    import matplotlib

    from . import plots

    with matplotlib.rc_context(plots.RC):
        flow = plots.Flow(
            f"cytomsc {batch.cytomsc_version} · MSC flow cytometry QC · culture {culture.culture}"
        )
        _summary(flow, culture, batch)
        _gating(flow, culture)
        _markers(flow, culture)
        if culture.heterogeneity is not None:
            _heterogeneity(flow, culture.heterogeneity)
        _audit(flow, culture, batch, run_info)
        plots.add_footers(flow, f"Culture {culture.culture}")
    return flow.pages


# -- 1. summary ------------------------------------------------------------------------------
SIGN_OFF_HEIGHT = 74.0  # the sign-off block at the foot of page 1


def _summary(flow: Flow, c: CultureResult, batch: BatchResult) -> None:
    """Page 1, the page a reviewer signs: verdict, release facts, criteria, funnel and the
    sign-off block always on it; warnings that do not fit continue on a page that says so."""
    from . import plots
    from .plots import Cell

    flow.section = "QC summary"
    # the sign-off block's place at the foot of page 1 is kept free: nothing flows into it
    flow.floor = sign_top = flow.size[1] - plots.BOTTOM - SIGN_OFF_HEIGHT - 6
    y0 = flow.y
    flow.put_text(plots.MARGIN, y0, "QC summary", 12, bold=True)
    box_w, box_h = 190.0, 62.0
    # the culture's name, as large as fits left of the verdict box (wrapped if very long)
    title = f"Culture {c.culture}"
    room = flow.width - box_w - 12
    size = max(10.0, min(16.0, room / (0.7 * len(title))))
    lines = plots.wrap(title, room, size, bold=True)
    if len(lines) > 2:  # the full name is in every page's header line
        lines = [lines[0], lines[1][:-1] + "…"]
    for k, line in enumerate(lines):
        flow.put_text(plots.MARGIN, y0 + 20 + k * size * 1.2, line, size, bold=True)
    version = f", version {batch.panel.version}" if batch.panel.version else ""
    panel_line = f"Panel: {batch.panel.name or batch.panel.id or '–'}{version}"
    flow.put_text(plots.MARGIN, y0 + 24 + len(lines) * size * 1.2, panel_line, 9)
    # the verdict box: a word in large type; the colour only repeats it
    word = VERDICT_WORDS.get(c.verdict, c.verdict.upper())
    bx = plots.MARGIN + flow.width - box_w
    # FAIL reversed out (white on dark), INCONCLUSIVE in a dashed frame: legible in grey print
    bg = {"pass": plots.PASS_BG, "fail": "#7f0000"}.get(c.verdict, plots.BORDER_BG)
    ink = "white" if c.verdict == "fail" else "black"
    flow.put_rect(
        bx, y0, box_w, box_h, bg, edge="black", lw=1.5, dashed=c.verdict == "inconclusive"
    )
    flow.put_text(bx + box_w / 2, y0 + 8, "Verdict", 8, ha="center", color=ink)
    flow.put_text(
        bx + box_w / 2,
        y0 + 19,
        word,
        24 if len(word) < 6 else 17,
        bold=True,
        ha="center",
        color=ink,
    )
    tag = "borderline" if c.borderline else ("no control" if _all_auto(c) else "")
    if tag:
        flow.put_text(bx + box_w / 2, y0 + 47, tag, 10, bold=True, ha="center", color=ink)
    flow.y = y0 + box_h + 10
    flow.text(_verdict_reason(c), size=9)
    if _all_auto(c):
        flow.text(
            "All thresholds automatic (no control): no control tube was measured for any "
            "judged marker, so every threshold was placed from the stained tube alone "
            f"{'and this PASS rests on them' if c.verdict == 'pass' else ''}. "
            "Confirm with an isotype, FMO or unstained control before release.",
            size=9,
            bold=True,
        )

    _release_facts(flow, c)

    keys = _tube_keys(c)
    several = len(keys) > 1
    flow.text("Criteria", size=10, bold=True)
    if several:
        flow.text(
            "Stained tubes: " + "; ".join(f"{k} = {t}" for t, k in keys.items()) + ".", size=8
        )
    elif keys:
        flow.text(f"Every marker was read in the stained tube {next(iter(keys))}.", size=8)
    rows = [_criteria_row(m, keys if several else None) for m in c.markers]
    listed = {part for m in c.markers for part in m.marker.split("/")}
    for name in c.missing_markers:
        if name not in listed:
            rows.append(
                [
                    Cell(name, bold=True),
                    *(["–"] if several else []),
                    "none",
                    "required",
                    "–",
                    "–",
                    "–",
                    "–",
                    "–",
                    Cell("– not measured", bold=True),
                ]
            )
    heads = [
        "Marker",
        *(["Tube"] if several else []),
        "Channel",
        "Limit %",
        "% pos.",
        "95 % interval",
        "Threshold (raw)",
        "Control",
        "Events",
        "Result",
    ]
    widths = [0.11, *([0.045] if several else []), 0.125, 0.075, 0.065, 0.1, 0.1, 0.16, 0.07, 0.14]
    flow.table(heads, rows, widths, size=7.5, aligns="l" + ("l" if several else "") + "llrrrlrl")
    flow.space(-4)
    flow.text(
        "Threshold: in the channel's compensated units (the instrument's scale); events "
        "above it count as positive.",
        size=7,
    )
    if c.joint_phenotype_percent is not None:
        flow.text(
            f"Joint phenotype: {plots.pct(c.joint_phenotype_percent)} % of cells "
            f"(95 % interval {plots.interval(c.joint_phenotype_ci95)}) are positive for "
            "every positive marker and negative for every negative marker at once. "
            "Single-marker percentages overstate purity; this is the stricter figure.",
            size=8.5,
        )
    else:
        flow.text(
            "Joint phenotype: not available (the markers were not measured together in one tube).",
            size=8.5,
        )
    flow.space(2)
    _funnel_table(flow, c, keys)
    _warnings(flow, c)
    with flow.on_page(0):
        _sign_off(flow, sign_top + 6)
    _files_table(flow, c)


def _sign_off(flow: Flow, top: float) -> None:
    """Reviewed by, date, signature and decision, in a ruled box at ``top`` of page 1."""
    from . import plots

    x, w = plots.MARGIN, flow.width
    flow.put_rect(x, top, w, SIGN_OFF_HEIGHT, None, edge="black", lw=0.8)
    flow.put_text(x + 8, top + 7, "Review and release decision", 10, bold=True)
    flow.put_text(x + 8, top + 27, "Reviewed by: ______________________________", 9)
    flow.put_text(x + 8 + w * 0.56, top + 27, "Date (YYYY-MM-DD): ______________", 9)
    flow.put_text(x + 8, top + 44, "Signature: ________________________________", 9)
    flow.put_text(x + 8, top + 61, "Decision:  ☐ release   ☐ reject   ☐ repeat measurement", 9)


def _all_auto(c: CultureResult) -> bool:
    """Every judged marker's threshold came from the stained tube alone (no control)."""
    judged = [m for m in c.markers if m.passed is not None]
    return bool(judged) and all(m.threshold_source == "auto" for m in judged)


def _stained_tubes(c: CultureResult) -> list[str]:
    """The stained tubes the markers were read in, in the order of the criteria."""
    return list(dict.fromkeys(m.tube for m in c.markers if m.tube))


def _tube_keys(c: CultureResult) -> dict[str, str]:
    """Short keys (T1, T2 ...) for the stained tubes, so page 1's tables stay one line a row:
    the tubes the markers were read in first, then any other stained tube."""
    tubes = _stained_tubes(c) + [f.tube for f in c.funnels if f.role == "stained"]
    return {t: f"T{k}" for k, t in enumerate(dict.fromkeys(tubes), start=1)}


def _release_facts(flow: Flow, c: CultureResult) -> None:
    """Lot, donor, operator, tissue, passage, detachment, instrument, acquisition date (ISO
    8601), every other metadata the lab recorded, and the free comment on its own row."""
    from ..dates import iso_date
    from ..results import RELEASE_FACTS, release_fact
    from .plots import Cell

    cyts = _unique([f.cytometer for f in c.files] + [c.metadata.get("cytometer")])
    dates = _unique([iso_date(f.date) for f in c.files] + [iso_date(c.metadata.get("date"))])
    facts = [
        (label, release_fact(c.metadata, key) or "not recorded")
        for key, label in (("lot", "Lot"), ("donor", "Donor"), ("operator", "Operator"))
    ]
    facts += [
        (label, release_fact(c.metadata, key) or "not recorded")
        for key, label in (
            ("tissue", "Tissue source"),
            ("passage", "Passage"),
            ("detachment", "Detachment reagent"),
        )
    ]
    facts += [
        ("Instrument ($CYT)", ", ".join(cyts) or "not recorded in the files"),
        ("Acquisition date", ", ".join(dates) or "not recorded in the files"),
    ]
    used = {"cytometer", "date"} | {k for names in RELEASE_FACTS.values() for k in names}
    facts += [
        (k.replace("_", " ").capitalize(), str(v))
        for k, v in sorted(c.metadata.items())
        if k not in used and str(v).strip()
    ]
    if len(facts) % 2:
        facts.append(("", ""))
    rows: list[list[Cell | str]] = [
        [Cell(k, bold=True), v, Cell(k2, bold=True), v2]
        for (k, v), (k2, v2) in zip(facts[::2], facts[1::2], strict=True)
    ]
    flow.table(None, rows, [0.19, 0.31, 0.19, 0.31], size=8)
    comment = release_fact(c.metadata, "comment")
    if comment:
        flow.space(-4)
        flow.text(f"Comment: {comment}", size=8.5, after=5)


def _funnel_table(flow: Flow, c: CultureResult, keys: dict[str, str]) -> None:
    """The event funnel of each stained tube side by side; a skipped gate says why."""
    from . import plots

    funnels = sorted(
        (f for f in c.funnels if f.role == "stained"),
        key=lambda f: list(keys).index(f.tube) if f.tube in keys else len(keys),
    )
    if funnels:
        columns = [(keys.get(f.tube, f.tube), f.counts, f.skipped) for f in funnels]
    else:  # results without per-tube funnels: the culture's funnel
        columns = [("", dict(c.events), {})]
    flow.text(
        "Event funnel"
        + (" per stained tube" if len(columns) > 1 else f" ({funnels[0].tube})" if funnels else ""),
        size=10,
        bold=True,
    )
    gate_of = {
        "time_ok": "time",
        "margin_ok": "margin",
        "cells": "cells",
        "singlets": "singlets",
        "live": "live",
    }
    rows = []
    for key, label in FUNNEL:
        row = [label]
        for _, counts, skipped in columns:
            total = counts.get("total") or 0
            n = counts.get(key)
            gate = gate_of.get(key, "")
            if gate in skipped or (key != "total" and key in counts and n is None):
                row += [f"skipped ({skipped.get(gate, 'not applied')})", ""]
                continue
            if n is None:
                row += ["–", ""]
                continue
            share = plots.pct(100.0 * n / total) if total and key != "total" else ""
            row += [f"{n:,}", share]
        rows.append(row)
    heads = ["Step"]
    for tube, _, _ in columns:
        heads += [f"{tube}: events" if len(columns) > 1 else "Events", "% of total"]
    k = len(columns)
    widths = [0.28] + [0.72 / k * 0.7, 0.72 / k * 0.3] * k
    flow.table(heads, rows, widths, size=7.5, aligns="l" + "rr" * k)


def _files_table(flow: Flow, c: CultureResult) -> None:
    from ..dates import iso_date

    flow.need(60)  # the heading with the table's first rows, never alone at a page's foot
    flow.text("Files", size=10, bold=True)
    flow.table(
        ["File", "Role", "Events", "Instrument", "Acquired"],
        [
            [
                Path(f.path).name,
                f.role,
                f"{f.events:,}",
                f.cytometer or "–",
                iso_date(f.date) or "–",
            ]
            for f in c.files
        ],
        [0.42, 0.14, 0.12, 0.17, 0.15],
        size=7.5,
        aligns="llrll",
    )


def _warnings(flow: Flow, c: CultureResult) -> None:
    """As many warnings as fit above the sign-off block; the rest on a continuation page that
    says where it continues from."""
    from . import plots

    size, line_h = 8.0, 8.0 * 1.3
    flow.text("Warnings", size=10, bold=True)
    if not c.warnings:
        flow.text("None.", size=8.5)
        return
    note_h = line_h + 4
    k = 0
    for k, item in enumerate(c.warnings):
        lines = plots.wrap(item, flow.width - 12, size)
        rest = len(c.warnings) - k - 1
        need = len(lines) * line_h + 2 + (note_h if rest else 0)
        if flow.floor is not None and need > flow.room:
            break
        flow.bullets([item], size=size)
    else:
        return
    more = len(c.warnings) - k
    flow.text(
        f"{more} more warning{'s' if more > 1 else ''} continue{'s' if more == 1 else ''} "
        "on the next page (Warnings, continued from page 1).",
        size=8,
        bold=True,
    )
    flow.new_section("Warnings (continued from page 1)")
    flow.bullets(c.warnings[k:], size=size)


def _verdict_reason(c: CultureResult) -> str:
    """Why the verdict, in a sentence: names the markers, repeats no new number."""
    failed = [m.marker for m in c.markers if m.passed is False]
    border = [m.marker for m in c.markers if m.borderline and m.passed is not None]
    parts = []
    if c.verdict == "pass":
        parts.append("Every judged marker meets the panel's limit.")
    elif c.verdict == "fail":
        parts.append("Outside the panel's limit: " + (", ".join(failed) or "see criteria") + ".")
    else:
        why = []
        if c.missing_markers:
            why.append("markers in no channel: " + ", ".join(c.missing_markers))
        # the other reasons the analysis gave (too few cells, no usable compensation)
        why += [
            w.removesuffix(": verdict inconclusive")
            for w in c.warnings
            if (w.endswith(": verdict inconclusive") and not w.startswith("no channel"))
            or "no verdict is given" in w
        ]
        parts.append(
            "No verdict possible" + (f" ({'; '.join(why)})" if why else "") + "; see the warnings."
        )
    if border and c.borderline:
        parts.append(
            "Borderline: the 95 % interval of " + ", ".join(border) + " crosses its "
            "limit, so a repeat measurement could change the verdict."
        )
    elif border and c.verdict == "fail":
        far = [m for m in failed if m not in border]
        parts.append(
            "The 95 % interval of " + ", ".join(border) + " contains its limit, but "
            "the verdict does not depend on it: "
            + ", ".join(far)
            + (" fails" if len(far) == 1 else " fail")
            + " regardless."
        )
    return " ".join(parts)


def _threshold_text(v: float | None) -> str:
    """A threshold in raw channel units: thousands separated, about 4 significant figures."""
    if v is None or not math.isfinite(v):
        return "–"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _criteria_row(m: MarkerResult, keys: dict[str, str] | None = None) -> list[Any]:
    from . import plots
    from .plots import Cell

    measured = m.percent_positive is not None
    name = m.marker.replace("/", "/\u200b")
    if "/" in m.marker:
        name = "cocktail: " + ", ".join(m.marker.split("/"))
    tube = [keys.get(m.tube or "", m.tube or "–")] if keys is not None else []
    return [
        Cell(name, bold=True),
        *tube,
        m.channel or "none",
        plots.limit_text(m),
        plots.pct(m.percent_positive),
        plots.interval(m.ci95),
        _threshold_text(m.threshold),
        plots.source_text(m),
        f"{m.events:,}",
        Cell(
            plots.mark(m.passed, m.borderline, measured),
            bg=plots.mark_bg(m.passed, m.borderline),
            bold=m.passed is False,
        ),
    ]


def _unique(values: Sequence[str | None]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


# -- 2. gating -------------------------------------------------------------------------------
def _gating(flow: Flow, c: CultureResult) -> None:
    from . import plots

    tubes: dict[str, list[GateStep]] = {}
    for g in c.gates:
        tubes.setdefault(g.tube, []).append(g)
    # the stained tubes' pages first (the one most markers were read in first), then controls
    roles = {Path(f.path).name: f.role for f in c.files}
    read_in = _stained_tubes(c)
    tubes = dict(
        sorted(
            tubes.items(),
            key=lambda kv: (
                roles.get(Path(kv[0]).name) != "stained",
                read_in.index(kv[0]) if kv[0] in read_in else len(read_in),
            ),
        )
    )
    skipped = {f.tube: f.skipped for f in c.funnels}
    if not tubes:
        flow.new_section("Gating")
        flow.text("The analysis returned no gates for this culture.")
        return
    for i, (tube, steps) in enumerate(tubes.items()):
        flow.new_section(f"Gating: {Path(tube).name}")
        role = next((f.role for f in c.files if Path(f.path).name == Path(tube).name), None)
        if role:
            flow.text(f"Tube role: {role}.", size=8.5)
        if i == 0:
            flow.text(
                "Each plot shows the events the gate was applied to as a 2-D histogram "
                "(shade: events per bin on a log scale, white = none, darker = more). "
                "Black line: the gate outline; for a one-dimensional gate, the black lines "
                "bound what was kept and the hatched stretches were removed. Percentages "
                "are of the parent population.",
                size=8,
            )
        # two large plots a row: one tube a page, readable without a magnifier
        panels = flow.panels(len(steps), 2, 150, title_room=30, below=30, wspace=56)
        for panel, step in zip(panels, steps, strict=True):
            plots.gate_plot(panel, step)
        notes = [f"{s.gate}: {s.note}" for s in steps if s.note]
        notes += [f"{gate}: skipped ({why})" for gate, why in skipped.get(tube, {}).items()]
        if notes:
            flow.text("How each gate was placed", size=9, bold=True)
            flow.bullets(notes, size=8)


# -- 3. markers ------------------------------------------------------------------------------
def _markers(flow: Flow, c: CultureResult) -> None:
    from . import plots

    flow.new_section("Marker histograms")
    flow.text(
        "Stained tube (grey, solid line) over its control (hatched, dashed line), on the "
        "transformed scale with axis labels in the instrument's units; each histogram is "
        "shown as % of its events per bin so tubes of different size compare. The "
        "dash-dot line is the threshold set on the control (its value in raw units in "
        "the title); events of the stained tube above it are counted positive.",
        size=8,
    )
    shown = [m for m in c.markers if m.channel is not None]
    panels = flow.panels(len(shown), 2, 120, title_room=58, below=30, wspace=50)
    for panel, m in zip(panels, shown, strict=True):
        plots.marker_plot(panel, m)
        if "/" in m.marker:
            head = f"Cocktail channel {m.channel} carries {', '.join(m.marker.split('/'))}"
        else:
            head = f"{m.marker} ({m.channel})"
        result = plots.mark(m.passed, m.borderline, m.percent_positive is not None)
        role = m.histogram.control_role if m.histogram is not None else None
        drawn = (
            ""
            if role == m.threshold_source
            else (f"; control drawn: {plots.SOURCE_WORDS.get(role or '', role or 'none')}")
        )
        panel.title(
            [
                head,
                f"tube {m.tube or '–'}",
                f"{plots.pct(m.percent_positive)} % positive "
                f"(95 % interval {plots.interval(m.ci95)})",
                f"{result} · limit {plots.limit_text(m)} %",
                f"threshold {_threshold_text(m.threshold)} from {plots.source_text(m)}{drawn}",
            ],
            loc="left",
        )
    absent = [m.marker for m in c.markers if m.channel is None] + [
        n for n in c.missing_markers if n not in {m.marker for m in c.markers}
    ]
    if absent:
        flow.text(
            "Not measured (no channel carries them): " + ", ".join(_unique(absent)) + ".",
            size=8.5,
            bold=True,
        )


# -- 4. heterogeneity -------------------------------------------------------------------------
def _heterogeneity(flow: Flow, h: HeterogeneityResult) -> None:
    """The populations in words, how sure the number is, what was clustered, the medians on one
    absolute scale, each clustered channel per population, the channel pairs that tell the
    populations apart, and the dip test. Everything drawn was computed by the analysis."""
    from . import plots
    from .plots import Cell

    flow.new_section("Heterogeneity")
    pops = h.populations
    if h.n_populations <= 1:
        flow.text("One population: no subpopulations found.", size=11, bold=True)
    else:
        desc = "; ".join(f"{plots.pct(100 * p.fraction)} % {p.label} (P{p.id})" for p in pops)
        flow.text(f"{h.n_populations} populations: {desc}.", size=11, bold=True)
    flow.text(_certainty(h), size=9)
    markers = [ch for ch in h.channels if ch not in _scatter(h)]
    named = ", ".join(_marker_name(h, ch) for ch in markers) or "no marker"
    scatter = ", ".join(_scatter(h))
    scale = (
        (
            f" (size and granularity on the {h.scatter_scale} scale, the one that fits these "
            "cells best)"
        )
        if h.scatter_scale
        else ""
    )
    tube = f"tube {h.tube}: " if h.tube else ""
    flow.text(
        f"Clustered: {tube}the live single cells, on {named}"
        + (f" and {scatter}{scale}" if scatter else "")
        + f"; the populations were found on {h.n_events:,} of them drawn at random, and "
        "every cell was then assigned to one.",
        size=8.5,
    )
    flow.text(
        "How populations are told apart: cells are first described by many small "
        "Gaussian pieces; two groups of pieces count as two populations only when the "
        "cells between them are explained better by two populations than by one skewed, "
        "long-tailed population (very strong evidence, by 10 BIC points), when each holds "
        "at least 1.5 % of the cells, and when they differ in size or granularity or in "
        "a marker above its negative range (differences in the spread of negative cells "
        "alone are not a population).",
        size=7.5,
    )

    glyph = {p.id: POP_SYMBOLS[k % len(POP_SYMBOLS)] for k, p in enumerate(pops)}
    flow.table(
        ["Population", "% of cells", "95 % interval", "Phenotype"],
        [
            [
                f"{glyph[p.id]} P{p.id}",
                plots.pct(100 * p.fraction),
                plots.interval([100 * p.ci95[0], 100 * p.ci95[1]]),
                p.label,
            ]
            for p in pops
        ],
        [0.14, 0.12, 0.16, 0.58],
        size=8,
        aligns="lrrl",
    )
    pl = h.plots
    if pops and h.channels and pl is not None:
        _medians_block(flow, h, pl)
        _channel_histograms(flow, h, pl)
        _pair_views(flow, h, pl)

    flow.text("Bimodality per channel", size=10, bold=True)
    rows: list[list[Cell | str]] = []
    for ch in [c for c in h.channels if c in h.bimodality]:
        b = h.bimodality[ch]
        rows.append(
            [
                _marker_name(h, ch),
                _num(b.dip, 3),
                _pvalue(b.p_value),
                Cell("yes: two peaks" if b.bimodal else "no", bold=b.bimodal),
                _num(b.robust_cv, 3),
            ]
        )
    flow.table(
        ["Channel", "Dip", "p value", "Two peaks?", "Robust CV"],
        rows or [["(no bimodality returned)", "", "", "", ""]],
        [0.3, 0.15, 0.15, 0.22, 0.18],
        size=8,
        aligns="lrrlr",
    )
    flow.text(
        "Hartigan's dip test on 2,000 cells: a small p value means the channel has more "
        "than one peak. A population can differ from the rest without a second peak "
        "(a shoulder), and a second peak of a few cells is not a population.",
        size=7.5,
    )


def _scatter(h: HeterogeneityResult) -> list[str]:
    return [ch for ch in h.channels if h.names.get(ch) in ("FSC", "SSC")]


def _certainty(h: HeterogeneityResult) -> str:
    """'How sure: 2 populations in 17 of 20 bootstrap resamples; 1 in 3.'"""
    (_, first), *others = h.resamples()
    total = sum(h.k_bootstrap.values())
    if not total:
        return "How sure: not measured (no bootstrap)."
    rest = [f"{k} in {v}" for k, v in others]
    word = "population" if h.n_populations == 1 else "populations"
    return (
        f"How sure: {h.n_populations} {word} in {first} of {total} bootstrap resamples of "
        f"the cells" + (f"; {', '.join(rest)}" if rest else "") + "."
    )


def _medians_block(flow: Flow, h: HeterogeneityResult, pl: Any) -> None:
    """Population medians: markers shaded on one absolute Logicle scale (0 to the channel's top),
    so a small difference looks small; scatter printed only (not a Logicle channel)."""
    import numpy as np

    from . import plots

    pops = h.populations
    flow.space(6)
    rows = [f"P{p.id}" for p in pops]
    x, y = flow.block(20 + 22 * len(pops) + 62)
    grid = flow.panel(x + 60, y + 20, flow.width * 0.55, 22 * len(pops))
    scatter = set(_scatter(h))
    shade = np.array(
        [
            [
                float(pl.medians[i, j]) if ch not in scatter else np.nan
                for j, ch in enumerate(h.channels)
            ]
            for i in range(len(pops))
        ]
    )
    shade = np.clip(shade, 0.0, 1.0)
    labels = np.array(
        [[_short(p.medians.get(ch, float("nan"))) for ch in h.channels] for p in pops]
    )
    plots.heatmap(grid, shade, labels, rows, [_marker_name(h, ch) for ch in h.channels])
    grid.title(["Population medians (compensated units)"], loc="left")
    bars = flow.panel(x + flow.width * 0.74, y + 20, flow.width * 0.26, 22 * len(pops))
    plots.fraction_bars(bars, rows, [p.fraction for p in pops], [p.ci95 for p in pops])
    bars.title(["% of cells"], loc="left")
    flow.text(
        "Shade: the median's place on the marker's Logicle scale, from 0 (white) to the "
        "channel's top (black), the same scale for every marker and population; the "
        "printed numbers are the medians. FSC and SSC are printed, not shaded.",
        size=7.5,
    )


def _channel_histograms(flow: Flow, h: HeterogeneityResult, pl: Any) -> None:
    """Every clustered channel, each population's cells as its own outline."""
    from . import plots

    ids = [p.id for p in h.populations]
    names = {p.id: f"P{p.id} ({plots.pct(100 * p.fraction)} %)" for p in h.populations}
    flow.need(18 + 18 + 92 + 30)
    flow.text("Each clustered channel, population by population", size=10, bold=True)
    # the key takes a panel of its own once it would crowd a plot
    own_key = len(ids) > 4
    panels = flow.panels(len(h.channels) + own_key, 3, 92, title_room=18, below=30, wspace=36)
    for k, (panel, ch) in enumerate(zip(panels, h.channels, strict=False)):
        plots.population_histograms(
            panel,
            pl.histograms[ch],
            pl.ranges[ch],
            pl.ticks.get(ch, []),
            ids,
            names,
            legend=k == 0 and not own_key,
        )
        panel.title([_marker_name(h, ch)], loc="left", size=7.5)
    if own_key:
        plots.line_key(panels[-1], ids, names)


def _pair_views(flow: Flow, h: HeterogeneityResult, pl: Any) -> None:
    """The channel pairs on which the populations stand furthest apart, cells coloured and
    shaped by population."""
    from . import plots

    if h.n_populations < 2 or not pl.pairs:
        return
    ids = [p.id for p in h.populations]
    names = {p.id: f"P{p.id}" for p in h.populations}
    flow.need(18 + 18 + 130 + 30)
    flow.text("Where the populations differ most", size=10, bold=True)
    panels = flow.panels(len(pl.pairs), 3, 130, title_room=18, below=30, wspace=40)
    for k, (panel, (i, j)) in enumerate(zip(panels, pl.pairs, strict=False)):
        xi, yj = h.channels[i], h.channels[j]
        plots.population_pair(
            panel,
            pl.sample[:, i],
            pl.sample[:, j],
            pl.sample_labels,
            ids,
            names,
            pl.ranges[xi],
            pl.ranges[yj],
            pl.ticks.get(xi, []),
            pl.ticks.get(yj, []),
            _marker_name(h, xi),
            _marker_name(h, yj),
            legend=k == 0,
        )
    flow.text(
        f"{len(pl.sample):,} cells drawn at random; the pairs are the channels whose "
        "populations differ most relative to their spread.",
        size=7.5,
    )


def _pvalue(v: Any) -> str:
    """p values as read: '< 0.001' below it, three decimals above, never '-0.000'."""
    if v is None or isinstance(v, bool) or not math.isfinite(float(v)):
        return "–"
    v = float(v)
    return "< 0.001" if v < 0.001 else f"{v:.3f}"


def _marker_name(h: Any, channel: str) -> str:
    """'CD90 (FL1-A)' when the analysis named the channel's marker, else the channel."""
    name = getattr(h, "names", {}).get(channel)
    return f"{name} ({channel})" if name and name != channel else channel


def _num(v: Any, digits: int) -> str:
    if v is None or isinstance(v, bool) or not math.isfinite(float(v)):
        return "–"
    text = f"{float(v):.{digits}g}"
    return "0" if float(text) == 0 else text  # never "-0"


def _short(v: float) -> str:
    """A median in a heatmap cell: 3 significant figures with k/M, so it fits."""
    if not math.isfinite(v):
        return "–"
    for scale, unit in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{unit}"
    return f"{v:.3g}"


# -- 5. audit --------------------------------------------------------------------------------
def _audit(flow: Flow, c: CultureResult, batch: BatchResult, run_info: dict[str, Any]) -> None:
    from .plots import Cell

    flow.new_section("Audit trail")
    versions = run_info.get("versions") or {}
    software = "; ".join(
        f"{'Python' if k == 'python' else k} {v}" for k, v in versions.items() if k != "cytomsc"
    )
    facts = [
        ("cytomsc version", batch.cytomsc_version),
        ("Python and libraries", software or "not recorded"),
        ("Command", str(run_info.get("command") or "not recorded")),
        ("Analysis started", str(run_info.get("started") or "not recorded")),
        ("Random seed", str(run_info.get("seed", batch.parameters.get("seed", "–")))),
        (
            "Panel",
            f"{batch.panel.name or '–'} (id {batch.panel.id or '–'}"
            + (f", version {batch.panel.version}" if batch.panel.version else "")
            + ")",
        ),
        ("Panel reference", batch.panel.reference or "–"),
        ("Panel file SHA-256", batch.panel.sha256 or "–"),
        ("Output name", c.output_name or c.culture),
    ]
    flow.table(None, [[Cell(k, bold=True), v] for k, v in facts], [0.25, 0.75], size=8)

    flow.text("Parameters", size=10, bold=True)
    params = dict(batch.parameters)
    for k, v in (run_info.get("parameters") or {}).items():
        params.setdefault(k, v)
    flow.table(
        ["Parameter", "Value"],
        [[_option(k), _value(k, v)] for k, v in sorted(params.items())]
        or [["(none recorded)", ""]],
        [0.35, 0.65],
        size=7.5,
    )

    _compensation(flow, c)

    flow.text("Input files", size=10, bold=True)
    flow.table(
        ["File", "Role", "Events", "SHA-256"],
        [[f.path, f.role, f"{f.events:,}", f.sha256] for f in c.files],
        [0.24, 0.09, 0.07, 0.6],
        size=7,
        aligns="llrl",
    )

    flow.text("Outputs of this culture", size=10, bold=True)
    if c.outputs:
        flow.table(
            ["File (in the output folder)", "SHA-256"],
            [[rel, digest] for rel, digest in sorted(c.outputs.items())],
            [0.4, 0.6],
            size=7,
        )
    flow.text(
        "This PDF, summary.json, summary.csv, cultures.csv and the overview are listed "
        "with their SHA-256 in sha256sums.txt in the output folder (check them with "
        "`sha256sum -c sha256sums.txt`).",
        size=7.5,
    )


OPTION_NAMES = {"comp": "--comp", "export_events": "--export-events", "pdf": "--no-pdf"}


def _option(key: str) -> str:
    """A parameter by the command-line option that sets it."""
    return OPTION_NAMES.get(key, "--" + key.replace("_", "-"))


def _value(key: str, v: Any) -> str:
    """A parameter's value in words: no Python spellings (None, True, {})."""
    if key == "comp" and v in (None, "file"):
        return "the file's own spillover matrix"
    if v is None or v == "" or v == {} or v == []:
        return "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_value("", x) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k}={_value('', x)}" for k, x in sorted(v.items()))
    return str(v)


def _compensation(flow: Flow, c: CultureResult) -> None:
    """The spillover matrix each tube was compensated with (tubes sharing one listed together),
    at most 10 detectors to a table."""
    from .plots import Cell

    flow.text("Compensation", size=10, bold=True)
    if not c.compensation:
        flow.text("Not recorded in these results.", size=8)
        return
    groups: dict[tuple, list[str]] = {}
    for comp in c.compensation:
        key = (comp.source, tuple(comp.detectors), tuple(tuple(row) for row in comp.matrix))
        groups.setdefault(key, []).append(comp.tube)
    for (source, detectors, matrix), tubes in groups.items():
        flow.text(f"{', '.join(tubes)}: {source}.", size=8)
        if not detectors:
            continue
        flow.text(
            "Spillover matrix (row: the dye's own detector; column: the detector it spills into).",
            size=7.5,
        )
        for start in range(0, len(detectors), 10):
            cols = list(range(start, min(start + 10, len(detectors))))
            rows = [
                [Cell(d, bold=True)] + [f"{matrix[i][j]:.4g}" for j in cols]
                for i, d in enumerate(detectors)
            ]
            flow.table(
                ["", *(detectors[j] for j in cols)],
                rows,
                [1.4] + [1.0] * len(cols),
                size=7,
                aligns="l" + "r" * len(cols),
            )
