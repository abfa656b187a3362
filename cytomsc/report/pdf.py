"""One culture's PDF: the page a QC reviewer reads and signs.

Sections, in order: QC summary (verdict, panel, instrument, files, criteria table, joint phenotype,
event funnel, warnings, sign-off), Gating (one page per tube), Marker histograms, Heterogeneity
(when the culture was clustered) and Audit trail. Every number printed comes from the
``CultureResult``/``BatchResult`` the analysis returned, percentages with one decimal exactly as in
``summary.csv``, so the PDF and ``summary.json`` cannot disagree.

matplotlib is imported inside the functions: the CLI imports this module and must start fast.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..results import BatchResult, CultureResult, GateStep, HeterogeneityResult, MarkerResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .plots import Flow

FUNNEL = (("total", "Acquired events (total)"), ("time_ok", "Stable flow (time QC)"),
          ("margin_ok", "Not saturated (margin events)"), ("cells", "Cells (not debris)"),
          ("singlets", "Single cells (not doublets)"), ("live", "Live cells"))
VERDICT_WORDS = {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE"}
# metadata a lab records about the culture; several spellings of the same keyword
CULTURE_FACTS = (("Tissue source", ("tissue_source", "tissue", "source")),
                 ("Passage", ("passage",)),
                 ("Detachment reagent", ("detachment_reagent", "detachment", "reagent")))
POP_SYMBOLS = ("●", "■", "▲", "◆", "▼", "✚", "✖", "★", "◀", "▶")
SECTIONS = ("QC summary", "Gating", "Marker histograms", "Heterogeneity", "Audit trail")


def write_culture_pdf(culture: CultureResult, batch: BatchResult, path: Path,
                      run_info: dict[str, Any]) -> None:
    """Write ``path`` (a PDF) for one culture; same input gives the same bytes."""
    from . import plots

    pages = culture_pages(culture, batch, run_info)
    plots.save_pdf(pages, Path(path), f"cytomsc QC report: {culture.culture}",
                   batch.cytomsc_version)


def culture_pages(culture: CultureResult, batch: BatchResult,
                  run_info: dict[str, Any]) -> list[Figure]:
    """The culture's pages as matplotlib figures, footers included (for the PDF or a PNG)."""
    import matplotlib

    from . import plots

    with matplotlib.rc_context(plots.RC):
        flow = plots.Flow(f"cytomsc {batch.cytomsc_version} · MSC flow cytometry QC · "
                          f"culture {culture.culture}")
        _summary(flow, culture, batch)
        _gating(flow, culture)
        _markers(flow, culture)
        if culture.heterogeneity is not None:
            _heterogeneity(flow, culture.heterogeneity)
        _audit(flow, culture, batch, run_info)
        plots.add_footers(flow, f"Culture {culture.culture}")
    return flow.pages


# -- 1. summary ------------------------------------------------------------------------------
def _summary(flow: Flow, c: CultureResult, batch: BatchResult) -> None:
    from . import plots
    from .plots import Cell

    flow.section = "QC summary"
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
    panel_line = f"Panel: {batch.panel.get('name') or batch.panel.get('id', '–')}"
    flow.put_text(plots.MARGIN, y0 + 24 + len(lines) * size * 1.2, panel_line, 9)
    # the verdict box: a word in large type; the colour only repeats it
    word = VERDICT_WORDS.get(c.verdict, c.verdict.upper())
    bx = plots.MARGIN + flow.width - box_w
    # FAIL reversed out (white on dark), INCONCLUSIVE in a dashed frame: legible in grey print
    bg = {"pass": plots.PASS_BG, "fail": "#7f0000"}.get(c.verdict, plots.BORDER_BG)
    ink = "white" if c.verdict == "fail" else "black"
    flow.put_rect(bx, y0, box_w, box_h, bg, edge="black", lw=1.5,
                  dashed=c.verdict == "inconclusive")
    flow.put_text(bx + box_w / 2, y0 + 8, "Verdict", 8, ha="center", color=ink)
    flow.put_text(bx + box_w / 2, y0 + 19, word, 24 if len(word) < 6 else 17, bold=True,
                  ha="center", color=ink)
    if c.borderline:
        flow.put_text(bx + box_w / 2, y0 + 47, "borderline", 10, bold=True, ha="center",
                      color=ink)
    flow.y = y0 + box_h + 10
    flow.text(_verdict_reason(c), size=9)

    # the culture and where it was measured
    cyts = _unique([f.cytometer for f in c.files] + [c.metadata.get("cytometer")])
    dates = _unique([f.date for f in c.files] + [c.metadata.get("date")])
    facts = [("Panel", f"{batch.panel.get('name', '–')} (id {batch.panel.get('id', '–')})"),
             ("Instrument ($CYT)", ", ".join(cyts) or "not recorded in the files"),
             ("Acquisition date", ", ".join(dates) or "not recorded in the files")]
    used = {"cytometer", "date"}
    for label, keys in CULTURE_FACTS:
        key = next((k for k in keys if c.metadata.get(k)), None)
        facts.append((label, c.metadata[key] if key else "not recorded"))
        used.update(keys)
    facts += [(k.replace("_", " ").capitalize(), str(v)) for k, v in sorted(c.metadata.items())
              if k not in used]
    # two facts a row keeps the summary on one page; the reference gets the full width
    if len(facts) % 2:
        facts.append(("", ""))
    flow.table(None, [[Cell(k, bold=True), v, Cell(k2, bold=True), v2]
                      for (k, v), (k2, v2) in zip(facts[::2], facts[1::2], strict=True)],
               [0.19, 0.31, 0.19, 0.31], size=8)
    flow.space(-4)
    flow.text(f"Panel reference: {batch.panel.get('reference') or '–'}", size=7.5, after=6)

    flow.text("Files", size=10, bold=True)
    flow.table(["File", "Role", "Events", "Instrument", "Date"],
               [[Path(f.path).name, f.role, f"{f.events:,}", f.cytometer or "–", f.date or "–"]
                for f in c.files], [0.42, 0.14, 0.12, 0.17, 0.15], size=8, aligns="llrll")

    flow.text("Criteria", size=10, bold=True)
    rows = [_criteria_row(m) for m in c.markers]
    listed = {part for m in c.markers for part in m.marker.split("/")}
    for name in c.missing_markers:
        if name not in listed:
            rows.append([Cell(name, bold=True), "none", "required", "–", "–", "–", "–", "–",
                         Cell("– not measured", bold=True)])
    flow.table(["Marker", "Channel", "Expected", "Limit %", "% positive", "95 % interval",
                "Threshold from", "Events", "Result"], rows,
               [0.15, 0.12, 0.09, 0.07, 0.09, 0.11, 0.13, 0.08, 0.16], size=7.5,
               aligns="llllrrlrl")
    if c.joint_phenotype_percent is not None:
        flow.text(f"Joint phenotype: {plots.pct(c.joint_phenotype_percent)} % of cells "
                  f"(95 % interval {plots.interval(c.joint_phenotype_ci95)}) are positive for "
                  "every positive marker and negative for every negative marker at once. "
                  "Single-marker percentages overstate purity; this is the stricter figure.",
                  size=8.5)
    else:
        flow.text("Joint phenotype: not available (the markers were not measured together in "
                  "one tube).", size=8.5)
    flow.space(4)

    flow.text("Event funnel", size=10, bold=True)
    funnel = [(label, c.events[key]) for key, label in FUNNEL if key in c.events]
    rows = []
    prev = None
    total = funnel[0][1] if funnel else 0
    for label, n in funnel:
        of_prev = plots.pct(100.0 * n / prev) if prev else "–"
        of_total = plots.pct(100.0 * n / total) if total else "–"
        rows.append([label, f"{n:,}", of_prev, of_total])
        prev = n
    flow.table(["Step", "Events", "% of previous step", "% of total"], rows,
               [0.46, 0.18, 0.18, 0.18], size=8, aligns="lrrr")

    flow.text("Warnings", size=10, bold=True)
    if c.warnings:
        flow.bullets(c.warnings)
    else:
        flow.text("None.", size=8.5)
    flow.space(8)
    flow.need(70)
    flow.text("Reviewed by: ______________________    Date: ______________    "
              "Signature: ______________________", size=9, after=6)
    flow.text("Decision:  ☐ release   ☐ reject   ☐ repeat measurement", size=9)


def _verdict_reason(c: CultureResult) -> str:
    """Why the verdict, in a sentence: names the markers, repeats no new number."""
    failed = [m.marker for m in c.markers if m.passed is False]
    border = [m.marker for m in c.markers if m.borderline]
    parts = []
    if c.verdict == "pass":
        parts.append("Every judged marker meets the panel's limit.")
    elif c.verdict == "fail":
        parts.append("Outside the panel's limit: " + (", ".join(failed) or "see criteria") + ".")
    else:
        why = []
        if c.missing_markers:
            why.append("markers in no channel: " + ", ".join(c.missing_markers))
        parts.append("No verdict possible" + (f" ({'; '.join(why)})" if why else "")
                     + "; see the warnings.")
    if border:
        parts.append("Borderline: the 95 % interval of " + ", ".join(border) + " crosses its "
                     "limit, so a repeat measurement could change the verdict.")
    return " ".join(parts)


def _criteria_row(m: MarkerResult) -> list[Any]:
    from . import plots
    from .plots import Cell

    measured = m.percent_positive is not None
    name = m.marker.replace("/", "/\u200b")
    if "/" in m.marker:
        name = "cocktail: " + ", ".join(m.marker.split("/"))
    return [Cell(name, bold=True), m.channel or "none", m.expect, plots.limit_text(m),
            plots.pct(m.percent_positive), plots.interval(m.ci95),
            plots.source_text(m),
            f"{m.events:,}",
            Cell(plots.mark(m.passed, m.borderline, measured), bg=plots.mark_bg(m.passed,
                 m.borderline), bold=m.passed is False)]


def _unique(values: list[str | None]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


# -- 2. gating -------------------------------------------------------------------------------
def _gating(flow: Flow, c: CultureResult) -> None:
    from . import plots

    tubes: dict[str, list[GateStep]] = {}
    for g in c.gates:
        tubes.setdefault(g.tube, []).append(g)
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
            flow.text("Each plot shows the events the gate was applied to as a 2-D histogram "
                      "(shade: events per bin on a log scale, white = none, darker = more). "
                      "Black line: the gate outline; for a one-dimensional gate, the black lines "
                      "bound what was kept and the hatched stretches were removed. Percentages "
                      "are of the parent population.",
                      size=8)
        # two large plots a row: one tube a page, readable without a magnifier
        panels = flow.panels(len(steps), 2, 150, title_room=30, below=30, wspace=56)
        for panel, step in zip(panels, steps, strict=True):
            plots.gate_plot(panel, step)
        notes = [f"{s.gate}: {s.note}" for s in steps if s.note]
        if notes:
            flow.text("How each gate was placed", size=9, bold=True)
            flow.bullets(notes, size=8)


# -- 3. markers ------------------------------------------------------------------------------
def _markers(flow: Flow, c: CultureResult) -> None:
    from . import plots

    flow.new_section("Marker histograms")
    flow.text("Stained tube (grey, solid line) over its control (hatched, dashed line), on the "
              "transformed scale with axis labels in the instrument's units; each histogram is "
              "shown as % of its events per bin so tubes of different size compare. The "
              "dash-dot line is the threshold set on the control; events of the stained tube "
              "above it are counted positive.", size=8)
    shown = [m for m in c.markers if m.channel is not None]
    panels = flow.panels(len(shown), 2, 130, title_room=48, below=30, wspace=50)
    for panel, m in zip(panels, shown, strict=True):
        plots.marker_plot(panel, m)
        if "/" in m.marker:
            head = f"Cocktail channel {m.channel} carries {', '.join(m.marker.split('/'))}"
        else:
            head = f"{m.marker} ({m.channel})"
        result = plots.mark(m.passed, m.borderline, m.percent_positive is not None)
        role = m.histogram.control_role if m.histogram is not None else None
        drawn = "" if role == m.threshold_source else (
            f"; control drawn: {plots.SOURCE_WORDS.get(role or '', role or 'none')}")
        panel.title([head, f"{plots.pct(m.percent_positive)} % positive "
                     f"(95 % interval {plots.interval(m.ci95)})",
                     f"{result} · limit {plots.limit_text(m)} %",
                     f"threshold from {plots.source_text(m)}{drawn}"], loc="left")
    absent = [m.marker for m in c.markers if m.channel is None] + [
        n for n in c.missing_markers if n not in {m.marker for m in c.markers}]
    if absent:
        flow.text("Not measured (no channel carries them): " + ", ".join(_unique(absent)) + ".",
                  size=8.5, bold=True)


# -- 4. heterogeneity -------------------------------------------------------------------------
def _heterogeneity(flow: Flow, h: HeterogeneityResult) -> None:
    import numpy as np

    from . import plots
    from .plots import Cell

    flow.new_section("Heterogeneity")
    pops = h.populations
    if h.n_populations <= 1:
        flow.text("One population: no subpopulations found.", size=11, bold=True)
    else:
        desc = "; ".join(f"{plots.pct(100 * p.fraction)} % {p.label} (P{p.id})" for p in pops)
        flow.text(f"{h.n_populations} populations: {desc}.", size=11, bold=True)
    named = [_marker_name(h, ch) for ch in h.channels]
    scale = f"; scatter on the {h.scatter_scale} scale, chosen by BIC" if h.scatter_scale else ""
    flow.text(f"Live single cells clustered on {', '.join(named)} ({h.n_events:,} events{scale}; "
              f"method: {h.method}). Effective number of populations "
              f"{h.effective_number:.2f} (Shannon entropy {h.entropy:.3f} nats; 1.00 means one "
              "population).", size=8.5)

    glyph = {p.id: POP_SYMBOLS[k % len(POP_SYMBOLS)] for k, p in enumerate(pops)}
    flow.table(["Population", "Fraction %", "95 % interval", "Phenotype"],
               [[f"{glyph[p.id]} P{p.id}", plots.pct(100 * p.fraction),
                 plots.interval([100 * p.ci95[0], 100 * p.ci95[1]]), p.label] for p in pops],
               [0.14, 0.12, 0.16, 0.58], size=8, aligns="lrrl")

    if pops and h.channels:
        flow.space(6)
        rows = [f"P{p.id}" for p in pops]
        x, y = flow.block(20 + 24 * len(pops) + 58)
        grid = flow.panel(x + 60, y + 20, flow.width * 0.55, 24 * len(pops))
        # Clustered channels first, then the tube's other markers (medians, not clustered).
        columns = list(h.channels) + [ch for ch in pops[0].medians if ch not in h.channels]
        med = np.array([[p.medians.get(ch, np.nan) for ch in columns] for p in pops])
        scaled = np.arcsinh(med / 150.0)
        lo, hi = np.nanmin(scaled, axis=0), np.nanmax(scaled, axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        scaled = np.where(hi > lo, (scaled - lo) / span, 0.5)
        labels = np.array([[_short(v) for v in row] for row in med])
        plots.heatmap(grid, np.nan_to_num(scaled, nan=0.0), labels, rows,
                      [_marker_name(h, ch) for ch in columns])
        grid.title(["Population medians (compensated units)"], loc="left")
        bars = flow.panel(x + flow.width * 0.74, y + 20, flow.width * 0.26, 24 * len(pops))
        plots.fraction_bars(bars, rows, [p.fraction for p in pops], [p.ci95 for p in pops])
        bars.title(["Fractions"], loc="left")
        flow.text("Heatmap shade, per channel (column): arcsinh(median / 150) scaled from the "
                  "lowest population (white) to the highest (black); the printed numbers are "
                  "the medians themselves.", size=7.5)

    if h.embedding is not None and h.embedding_labels is not None and len(h.embedding):
        x, y = flow.block(250)
        view = flow.panel(x + 48, y + 16, flow.width * 0.5, 226)
        names = {p.id: f"P{p.id} ({plots.pct(100 * p.fraction)} %)" for p in pops}
        ids = [p.id for p in pops]
        plots.populations_scatter(view, np.asarray(h.embedding), np.asarray(h.embedding_labels),
                                  ids, lambda i: names.get(i, f"P{i}"))
        view.title([f"2-D view of {len(h.embedding):,} cells (subsample), one shape and "
                    "colour per population"], loc="left", size=7.5)

    flow.text("Bimodality per channel", size=10, bold=True)
    rows = []
    order = [ch for ch in h.channels if ch in h.bimodality]
    order += sorted(ch for ch in h.bimodality if ch not in h.channels)
    for ch in order:
        b = h.bimodality[ch]
        rows.append([_marker_name(h, ch), _num(b.get("dip"), 4), _num(b.get("p_value"), 3),
                     Cell("yes: two peaks" if b.get("bimodal") else "no",
                          bold=bool(b.get("bimodal"))), _num(b.get("robust_cv"), 3)])
    flow.table(["Channel", "Dip statistic", "p value", "Bimodal", "Robust CV"],
               rows or [["(no bimodality returned)", "", "", "", ""]],
               [0.3, 0.17, 0.17, 0.19, 0.17], size=8, aligns="lrrlr")
    flow.text("Hartigan's dip test: a small p value means the channel has more than one peak.",
              size=7.5)


def _marker_name(h: Any, channel: str) -> str:
    """'CD90 (FL1-A)' when the analysis named the channel's marker, else the channel."""
    name = getattr(h, "names", {}).get(channel)
    return f"{name} ({channel})" if name and name != channel else channel


def _num(v: Any, digits: int) -> str:
    if v is None or isinstance(v, bool) or not math.isfinite(float(v)):
        return "–"
    return f"{float(v):.{digits}g}"


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
    facts = [("cytomsc version", batch.cytomsc_version),
             ("Command", str(run_info.get("command", "–"))),
             ("Analysis started", str(run_info.get("started", "–"))),
             ("Random seed", str(run_info.get("seed", batch.parameters.get("seed", "–")))),
             ("Panel", f"{batch.panel.get('name', '–')} (id {batch.panel.get('id', '–')})"),
             ("Panel reference", batch.panel.get("reference") or "–"),
             ("Panel file SHA-256", batch.panel.get("sha256") or "–"),
             ("Output name", c.output_name or c.culture)]
    flow.table(None, [[Cell(k, bold=True), v] for k, v in facts], [0.25, 0.75], size=8)

    flow.text("Parameters", size=10, bold=True)
    params = dict(batch.parameters)
    for k, v in (run_info.get("parameters") or {}).items():
        params.setdefault(k, v)
    flow.table(["Parameter", "Value"],
               [[k, _value(v)] for k, v in sorted(params.items())]
               or [["(none recorded)", ""]], [0.35, 0.65], size=7.5)

    flow.text("Input files", size=10, bold=True)
    flow.table(["File", "Role", "Events", "SHA-256"],
               [[f.path, f.role, f"{f.events:,}", f.sha256] for f in c.files],
               [0.28, 0.09, 0.08, 0.55], size=7, aligns="llrl")


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_value(x) for x in v)
    if isinstance(v, dict):
        return "; ".join(f"{k}={_value(x)}" for k, x in sorted(v.items()))
    return str(v)
