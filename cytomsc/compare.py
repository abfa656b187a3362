"""`cytomsc compare`: the automatic gates beside the lab's manual ones (a method comparison).

A lab adopts an automatic method after a method-comparison study against the manual gating it
uses today. For every tube, the automatic analysis runs exactly as ``analyze`` runs it, and the
lab's gates (a FlowJo 10 workspace or GatingML, applied by FlowKit: workspace.py) are applied to
the same events. Each cytomsc gate is set beside the workspace gate that corresponds to it (by the
gate's dimensions, ``workspace.correspond``; a marker's positive gate by ``is_positive_gate``;
``--match QUANTITY=PATH`` overrides either), and the table says which rule paired them.

Per tube and quantity: both counts, both percentages, the difference in percentage points
(automatic - manual) and the F1 score of event membership (2|A and M| / (|A| + |M|): 1 when both
methods keep exactly the same events). Cells, singlets and live are percentages of all the tube's
events (the two methods' parents differ: the automatic chain starts with the time and margin
gates), a marker's % positive is of its own parent in each method (the automatic gated cells;
the workspace positive gate's parent gate). Across a batch, each quantity gets a Bland-Altman
summary (bias, SD of the differences, 95 % limits of agreement: bias +- 1.96 SD) and plot.

Outputs in OUT: compare.csv and compare.json (the same rows; the JSON adds the summaries and the
correspondence of gates), compare.pdf (the correspondence, the summaries, one Bland-Altman plot
per quantity). Nothing time-dependent is written, so the same input gives the same files.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import CytomscError
from .options import CompSource, Options, culture_seed
from .results import InputError

if TYPE_CHECKING:  # pragma: no cover
    from .layout import CultureSpec
    from .panel import Panel

SLOT_QUANTITIES = ("cells", "singlets", "live")
CSV_FIELDS = (
    "culture",
    "sample",
    "quantity",
    "workspace_gate",
    "rule",
    "of",
    "manual_count",
    "automatic_count",
    "manual_percent",
    "automatic_percent",
    "difference_pp",
    "f1",
)


@dataclass
class AgreementRow:
    """One quantity of one tube, measured both ways."""

    culture: str
    sample: str  # the tube's file name
    quantity: str  # "cells" | "singlets" | "live" | "<marker> % positive"
    workspace_gate: str  # path in the lab's file
    rule: str  # why these gates correspond: "dimensions FSC-A, SSC-A", "name CD73+", "--match"
    of: str  # what the percentages are of: "all events" | "parent gate"
    manual_count: int
    automatic_count: int
    manual_percent: float
    automatic_percent: float
    difference_pp: float  # automatic - manual
    f1: float


@dataclass
class QuantitySummary:
    """Bland-Altman summary of one quantity over the batch."""

    quantity: str
    n: int
    bias_pp: float  # mean difference, automatic - manual
    sd_pp: float | None  # SD of the differences (n >= 2)
    limits_pp: tuple[float, float] | None  # bias -+ 1.96 SD (n >= 3)
    mean_f1: float
    worst_difference_pp: float


@dataclass
class Comparison:
    """What compare found: every row, the summaries, the gate correspondence and the errors."""

    gates_file: str
    gates_sha256: str
    rows: list[AgreementRow] = field(default_factory=list)
    summaries: list[QuantitySummary] = field(default_factory=list)
    correspondence: list[dict[str, str]] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)


def parse_matches(items: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``--match cells=/Lymphocytes --match CD73=/Cells/CD73+`` -> {"CELLS": "/Lymphocytes"}."""
    from .workspace import normal_path

    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise CytomscError(f"--match {item}: expected QUANTITY=/gate/path")
        key, path = item.split("=", 1)
        if not key.strip() or not path.strip():
            raise CytomscError(f"--match {item}: expected QUANTITY=/gate/path")
        out[_key(key)] = normal_path(path)
    return out


def _key(name: str) -> str:
    return "".join(name.upper().split()).replace("-", "").replace("_", "")


def f1_score(a: np.ndarray, m: np.ndarray) -> float:
    """F1 of two membership masks; 1.0 when both are empty."""
    na, nm = int(a.sum()), int(m.sum())
    return 1.0 if na + nm == 0 else 2.0 * int((a & m).sum()) / (na + nm)


def _pick(
    applied: Any,
    quantity: str,
    matches: dict[str, str],
    pnn: list[str],
    pns: list[str],
    where: str,
    source: str,
) -> tuple[Any, str]:
    """The workspace gate for cells/singlets/live: ``--match``, else the shallowest gate whose
    dimensions say it (``workspace.correspond``)."""
    from .workspace import correspond, find_gate

    if _key(quantity) in matches:
        return find_gate(applied.tree, matches[_key(quantity)], where, source), "--match"
    found = [g for g in applied.tree if correspond(g, pnn, pns) == quantity]
    if not found:
        return None, ""
    g = min(found, key=lambda g: len(g.ancestors))
    return g, "dimensions " + ", ".join(g.channels)


def _pick_positive(
    applied: Any,
    label: str,
    names: list[str],
    channel: str,
    matches: dict[str, str],
    where: str,
    source: str,
) -> tuple[Any, str]:
    from .workspace import find_gate, is_positive_gate

    if _key(label) in matches:
        return find_gate(applied.tree, matches[_key(label)], where, source), "--match"
    found = [
        g
        for g in applied.tree
        if is_positive_gate(g, applied.strategy, applied.sample_id, channel, names)
    ]
    if not found:
        return None, ""
    g = min(found, key=lambda g: len(g.ancestors))
    return g, f"positive gate on {channel} ({g.name})"


def _row(
    culture: str,
    sample: str,
    quantity: str,
    gate: Any,
    rule: str,
    of: str,
    manual: np.ndarray,
    auto: np.ndarray,
    m_pct: float,
    a_pct: float,
) -> AgreementRow:
    return AgreementRow(
        culture,
        sample,
        quantity,
        gate.path,
        rule,
        of,
        int(manual.sum()),
        int(auto.sum()),
        m_pct,
        a_pct,
        a_pct - m_pct,
        f1_score(auto, manual),
    )


def compare_culture(
    spec: CultureSpec,
    panel: Panel,
    opts: Options,
    comp: CompSource,
    lab: Any,
    matches: dict[str, str],
) -> tuple[list[AgreementRow], list[dict[str, str]], list[InputError]]:
    """Rows, correspondence entries and errors of one culture."""
    from .culture import match_markers, measure, prepare_and_gate, read_tubes
    from .workspace import WorkspaceError, apply_lab_gates

    read = read_tubes(spec, opts.data_set)
    errors = list(read.errors)
    if not read.tubes:
        return [], [], errors
    seed = culture_seed(opts.seed, spec.name)
    tubes = prepare_and_gate(read.tubes, comp, seed).tubes
    stained = [t for t in tubes if t.role == "stained"]
    match = match_markers(stained, panel, opts.channel_map)
    errors += match.errors
    chosen = match.chosen
    measured = {
        label: measure(t, a, tubes, opts.control_percentile, opts.seed)
        for label, (t, a) in chosen.items()
    }
    rows: list[AgreementRow] = []
    pairs: list[dict[str, str]] = []
    for tube in tubes:
        where = str(tube.fcs.path)
        try:
            applied = apply_lab_gates(lab, tube.fcs, tube.name)
        except WorkspaceError as err:
            errors.append(InputError(err.path or where, err.reason))
            continue
        pnn = [c.pnn for c in tube.fcs.channels]
        pns = [c.pns for c in tube.fcs.channels]
        n = max(int(tube.fcs.n_events), 1)
        placed = {s.gate for s in tube.gating.steps}
        try:
            for q in SLOT_QUANTITIES:
                gate, rule = _pick(applied, q, matches, pnn, pns, where, lab.name)
                pairs.append(
                    {
                        "sample": tube.name,
                        "quantity": q,
                        "workspace_gate": gate.path if gate else "",
                        "rule": rule if gate else "no corresponding workspace gate",
                        "automatic": "placed" if q in placed else "not placed",
                    }
                )
                if gate is None or q not in placed:
                    continue
                man = applied.member(gate.path)
                auto = tube.gating.masks[q]
                rows.append(
                    _row(
                        spec.name,
                        tube.name,
                        q,
                        gate,
                        rule,
                        "all events",
                        man,
                        auto,
                        100.0 * man.sum() / n,
                        100.0 * auto.sum() / n,
                    )
                )
            for label, (mt, a) in chosen.items():
                m, above = measured[label].result, measured[label].above
                if mt is not tube or m.percent_positive is None:
                    continue
                names = [
                    label,
                    *a.markers,
                    *(x for mk in a.markers for x in panel.aliases.get(mk, ())),
                ]
                gate, rule = _pick_positive(
                    applied, label, names, a.channel, matches, where, lab.name
                )
                q = f"{label} % positive"
                pairs.append(
                    {
                        "sample": tube.name,
                        "quantity": q,
                        "workspace_gate": gate.path if gate else "",
                        "rule": rule if gate else "no positive gate on " + a.channel,
                        "automatic": "measured",
                    }
                )
                if gate is None:
                    continue
                man = applied.member(gate.path)
                parent = applied.member(gate.parent_path)
                auto = tube.final & above
                m_pct = 100.0 * man.sum() / parent.sum() if parent.sum() else 0.0
                rows.append(
                    _row(
                        spec.name,
                        tube.name,
                        q,
                        gate,
                        rule,
                        "parent gate",
                        man,
                        auto,
                        m_pct,
                        float(m.percent_positive),
                    )
                )
        except WorkspaceError as err:  # a --match path this tube lacks
            errors.append(InputError(err.path or where, err.reason))
    return rows, pairs, errors


def summarize(rows: list[AgreementRow]) -> list[QuantitySummary]:
    """Bland-Altman summary per quantity, in first-seen order."""
    order = list(dict.fromkeys(r.quantity for r in rows))
    out = []
    for q in order:
        d = np.array([r.difference_pp for r in rows if r.quantity == q])
        f = np.array([r.f1 for r in rows if r.quantity == q])
        sd = float(np.std(d, ddof=1)) if d.size >= 2 else None
        bias = float(d.mean())
        limits = (bias - 1.96 * sd, bias + 1.96 * sd) if sd is not None and d.size >= 3 else None
        out.append(
            QuantitySummary(
                q, int(d.size), bias, sd, limits, float(f.mean()), float(d[np.argmax(np.abs(d))])
            )
        )
    return out


def run_compare(
    inputs: list[Path], out_dir: Path, opts: Options, matches: dict[str, str], pdf: bool = True
) -> Comparison:
    """Compare the automatic gates with the lab's on every tube found in ``inputs``."""
    from .output import OutputDir
    from .pipeline import plan_batch
    from .workspace import load_lab_gates

    assert opts.gates is not None
    lab = load_lab_gates(opts.gates)
    out = OutputDir(out_dir)
    # single-stain controls compensate the automatic analysis here as they would in analyze
    plan = plan_batch(inputs, opts)
    if plan.compensation is not None:
        from .spillover import write_comp_csv

        write_comp_csv(out, plan.compensation)
    result = Comparison(gates_file=lab.name, gates_sha256=lab.sha256, errors=list(plan.errors))
    for spec in plan.specs:
        try:
            rows, pairs, errs = compare_culture(
                spec, plan.panel, plan.options, plan.comp, lab, matches
            )
        except CytomscError as err:
            result.errors.append(InputError(err.path or spec.name, err.reason))
            continue
        result.rows.extend(rows)
        result.correspondence.extend({"culture": spec.name, **p} for p in pairs)
        result.errors.extend(errs)
    result.summaries = summarize(result.rows)
    out.write_text(_csv(result.rows), "compare.csv")
    out.write_text(
        json.dumps(_plain(asdict(result)), indent=1, ensure_ascii=False) + "\n", "compare.json"
    )
    if pdf:
        from .report.agreement import write_agreement_pdf

        with out.atomic("compare.pdf") as tmp:
            write_agreement_pdf(result, tmp)
    return result


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, float):
        return round(v, 6) if math.isfinite(v) else None
    return v


def _csv(rows: list[AgreementRow]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_FIELDS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        d = asdict(r)
        for k in ("manual_percent", "automatic_percent", "difference_pp"):
            d[k] = f"{d[k]:.2f}"
        d["f1"] = f"{d['f1']:.4f}"
        w.writerow(d)
    return buf.getvalue()
