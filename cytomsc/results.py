"""Result values of every stage, and their one machine-readable form.

Stages return these dataclasses; the report only draws them and never recomputes a number, so the
PDF and ``summary.json`` always agree. Fields that carry plot payloads (histograms, embeddings) are
marked ``json=False`` and stay out of ``summary.json``.

The JSON schema is versioned by ``SCHEMA``; the README documents it. Nothing time-dependent goes
into ``summary.json`` (the analysis time lives in the PDF audit page and ``run.json``) so that
the same input and seed give a byte-identical file whatever ``--jobs`` is.

Domain words are ``Literal`` types (``Verdict``, ``Expectation``, ``ThresholdSource``,
``GateName``, ``GateSource``; a tube's role is ``roles.Role``): the values stay the plain strings
``summary.json`` carries, and mypy (``strict_equality``) flags a comparison with a word that is
not one of them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .roles import Role

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from .spillover import SpilloverResult
    from .writing import CultureFiles

SCHEMA = "cytomsc.summary/3"

Verdict = Literal["pass", "fail", "inconclusive"]
Expectation = Literal["positive", "negative", "informative"]  # informative: reported, not judged
ThresholdSource = Literal["fmo", "isotype", "unstained", "auto"]  # the control, or none
GateName = Literal["time", "margin", "cells", "singlets", "live"]
GateSource = Literal["automatic", "manual"]  # placed by cytomsc, or the lab's --gates

# Gate names in the order labs expect; also the suffix of the exported event channels
# (``cytomsc_<gate>``) and the keys of the event funnel.
GATE_ORDER: tuple[GateName, ...] = ("time", "margin", "cells", "singlets", "live")


def plot_field(**kwargs: Any) -> Any:
    """A dataclass field that carries drawing data only: kept out of the JSON and the repr."""
    if "default_factory" not in kwargs:
        kwargs.setdefault("default", None)
    return field(metadata={"json": False}, repr=False, **kwargs)


@dataclass(frozen=True)
class PanelInfo:
    """The panel a batch was judged against, as ``summary.json`` records it."""

    id: str
    name: str
    reference: str
    version: str
    sha256: str


@dataclass(frozen=True)
class InputError:
    """An input that could not be used: the file (or culture) and the reason, in one line."""

    path: str
    message: str


@dataclass
class FileInfo:
    """One input tube as the analysis saw it."""

    path: str
    role: Role
    sha256: str
    events: int = 0
    cytometer: str | None = None
    date: str | None = None
    data_set: int = 0


@dataclass
class Histogram2D:
    """A 2-D histogram of events in plot coordinates (transformed units), for density plots."""

    x: str
    y: str
    counts: np.ndarray  # shape (len(x_edges)-1, len(y_edges)-1)
    x_edges: np.ndarray
    y_edges: np.ndarray
    x_ticks: list[tuple[float, str]] = field(default_factory=list)  # (position, label in raw units)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)


@dataclass
class GateStep:
    """One automatic gate applied to one tube: what it kept, and how to draw it."""

    tube: str  # file name of the tube
    gate: str  # automatic: a GateName; manual: the gate's name in the lab's file
    parent_count: int
    count: int
    x: str  # channel on the x axis
    y: str | None = None  # channel on the y axis (None for a 1-D gate)
    # Outline in plot coordinates: a closed polygon [(x, y), ...] for 2-D gates (several
    # outlines separated by (nan, nan)), or the kept intervals [(lo, hi), ...] on x for 1-D gates
    # (time stretches, viability range).
    vertices: list[tuple[float, float]] = field(default_factory=list)
    note: str = ""  # how the gate was placed, in words, for the report
    histogram: Histogram2D | None = plot_field()
    source: GateSource = "automatic"
    path: str = ""  # manual gates: the gate's path in the lab's file ("/Lymphocytes/Singlets")

    @property
    def percent(self) -> float:
        return 100.0 * self.count / self.parent_count if self.parent_count else 0.0


@dataclass
class MarkerHistogram:
    """Stained vs control distribution of one marker channel, in plot coordinates."""

    edges: np.ndarray
    stained: np.ndarray
    control: np.ndarray | None
    control_role: Role | None
    threshold: float | None  # in plot coordinates
    ticks: list[tuple[float, str]] = field(default_factory=list)


@dataclass
class MarkerResult:
    """% positive of one marker (or one cocktail channel) and its verdict."""

    marker: str  # canonical name; a cocktail's markers joined by "/"
    channel: str | None
    expect: Expectation
    limit: float | None  # percent; >= for positive, <= for negative
    percent_positive: float | None = None
    ci95: tuple[float, float] | None = None
    threshold: float | None = None  # in compensated channel units
    threshold_source: ThresholdSource | None = None
    # > 1 when the control's threshold was widened to the stained negatives' spread
    control_spread_ratio: float = 1.0
    events: int = 0  # gated events of the stained tube the percentage is taken over
    passed: bool | None = None  # None for informative markers and markers not measured
    borderline: bool = False
    tube: str | None = None
    histogram: MarkerHistogram | None = plot_field()


@dataclass
class Population:
    """One population found by the clustering."""

    id: int  # 1..k within the culture, the largest first (the batch table has its own ids)
    fraction: float
    ci95: tuple[float, float]
    medians: dict[str, float]  # per channel, compensated raw units
    label: str  # short phenotype, e.g. "CD90 dim CD105 bright, small"
    # the same medians keyed by marker name ("CD90"); scatter keeps its channel name
    medians_by_marker: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Bimodality:
    """One channel's Hartigan dip test and robust CV (1.4826 x MAD / median)."""

    dip: float
    p_value: float
    bimodal: bool  # p_value below the test's alpha
    robust_cv: float


@dataclass
class HeterogeneityResult:
    """How heterogeneous a culture's live single cells are."""

    n_populations: int
    populations: list[Population]
    entropy: float  # Shannon entropy (nats) of the fractions
    effective_number: float  # exp(entropy)
    bimodality: dict[str, Bimodality]  # per channel
    channels: list[str]
    method: str
    n_events: int  # events clustered (after subsampling)
    names: dict[str, str] = field(default_factory=dict)  # channel -> marker ("FITC-A": "CD90")
    # the FSC/SSC scale chosen for the clustering: "log", "square root" or "linear" ("" without)
    scatter_scale: str = ""
    tube: str = ""  # the stained tube clustered (file name)
    # how many populations the bootstrap resamples found: {k: resamples} ("2 in 17 of 20")
    k_bootstrap: dict[int, int] = field(default_factory=dict)
    plots: PopulationPlots | None = plot_field()

    def resamples(self) -> list[tuple[int, int]]:
        """The bootstrap's answers as (k, resamples): the reported k first, then the others,
        most frequent first (the one order the page and the CSVs print them in)."""
        boot = {int(k): int(v) for k, v in self.k_bootstrap.items()}
        first = [(self.n_populations, boot.pop(self.n_populations, 0))]
        return first + sorted(boot.items(), key=lambda kv: (-kv[1], kv[0]))


@dataclass
class PopulationPlots:
    """What the heterogeneity page draws (not in summary.json): per clustered channel its plot
    range, tick labels (raw units) and a histogram per population (k x bins); the channel pairs
    on which the populations stand furthest apart (indices into ``channels``); a seeded
    subsample of events in plot units with their populations; each population's median per
    channel in plot units (Logicle 0..1 for markers: one absolute scale for all of them)."""

    ranges: dict[str, tuple[float, float]]
    histograms: dict[str, np.ndarray]
    ticks: dict[str, list[tuple[float, str]]]
    pairs: list[tuple[int, int]]
    sample: np.ndarray
    sample_labels: np.ndarray
    medians: np.ndarray


@dataclass
class TubeFunnel:
    """One tube's event funnel: the events left after each gate, in GATE_ORDER."""

    tube: str  # file name
    role: Role
    # total, time_ok, margin_ok, cells, singlets, live; None for a gate that was not applied
    counts: dict[str, int | None]
    skipped: dict[str, str] = field(default_factory=dict)  # gate -> why ("no viability dye")


@dataclass
class Compensation:
    """The compensation applied to one tube, for the audit trail."""

    tube: str
    source: str  # in words: "the file's $SPILLOVER", "--comp matrix.csv", "none: ..."
    detectors: list[str] = field(default_factory=list)
    matrix: list[list[float]] = field(default_factory=list)  # spillover, rows = detectors


# Release metadata a lab records, and the names a manifest column or FCS keyword gives it
# ($OP is the FCS operator keyword, $COM its comment).
RELEASE_FACTS: dict[str, tuple[str, ...]] = {
    "lot": ("lot", "lot_number", "lot number", "lot_no", "lot no", "batch"),
    "donor": ("donor", "donor_id", "donor id"),
    "operator": ("operator", "op"),
    "comment": ("comment", "comments", "com", "note", "notes"),
    "tissue": ("tissue", "tissue_source", "tissue source", "source"),
    "passage": ("passage",),
    "detachment": ("detachment", "detachment_reagent", "detachment reagent", "reagent"),
}


def release_fact(metadata: dict[str, str], name: str) -> str:
    """One release fact from a culture's metadata, whichever spelling recorded it ("" if none)."""
    for key in RELEASE_FACTS.get(name, (name,)):
        value = str(metadata.get(key, "")).strip()
        if value:
            return value
    return ""


@dataclass(repr=False)
class CultureResult:
    """Everything the analysis found for one culture."""

    culture: str
    verdict: Verdict
    borderline: bool
    files: list[FileInfo]
    events: dict[str, int]  # funnel: total, time_ok, margin_ok, cells, singlets, live
    markers: list[MarkerResult]
    joint_phenotype_percent: float | None = None
    joint_phenotype_ci95: tuple[float, float] | None = None
    warnings: list[str] = field(default_factory=list)
    missing_markers: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)  # cytometer, date, tissue, passage...
    heterogeneity: HeterogeneityResult | None = None
    gates: list[GateStep] = field(default_factory=list)
    output_name: str = ""  # sanitized, unique name of this culture's outputs
    funnels: list[TubeFunnel] = field(default_factory=list)  # every tube, stained tubes first
    compensation: list[Compensation] = field(default_factory=list)
    # culture files written before its PDF (gates.xml, events): relative path -> SHA-256, for the
    # PDF's audit page (not in summary.json: the batch's sha256sums.txt lists every output)
    outputs: dict[str, str] = plot_field(default_factory=dict)

    def __repr__(self) -> str:
        flag = ", borderline" if self.borderline else ""
        pops = (
            ""
            if self.heterogeneity is None
            else f", {self.heterogeneity.n_populations} population(s)"
        )
        return (
            f"CultureResult({self.culture!r}: {self.verdict}{flag}, "
            f"{len(self.markers)} marker(s){pops}, {len(self.warnings)} warning(s))"
        )


@dataclass(frozen=True)
class BatchPopulation:
    """One population of the batch-wide clustering (its id means the same cells everywhere)."""

    id: int
    label: str


@dataclass
class BatchPopulations:
    """The cultures clustered together, so that a population id means the same cells in each."""

    method: str
    per_culture: int  # events each culture contributed (at most)
    populations: list[BatchPopulation]
    table: dict[str, list[float]]  # culture -> fraction of its cells in population 1, 2, ...
    events: dict[str, int]  # culture -> events assigned


@dataclass(repr=False)
class BatchResult:
    """A whole run: what summary.json holds (``to_json``), and its tables as DataFrames.

    ``cytomsc.analyze`` returns one without writing anything; ``cytomsc.write`` writes its files.
    """

    cytomsc_version: str
    panel: PanelInfo
    parameters: dict[str, Any]
    cultures: list[CultureResult]
    errors: list[InputError] = field(default_factory=list)
    batch_populations: BatchPopulations | None = None  # when cultures were clustered together
    compensation: SpilloverResult | None = None  # when single-stain controls were given
    # not in summary.json: the run (command, start, versions) for run.json and the PDFs' audit
    # pages, and what writing each culture's files needs (gates, scales; see writing.py)
    run_info: dict[str, Any] = plot_field(default_factory=dict)
    culture_files: dict[str, CultureFiles] = plot_field(default_factory=dict)

    def __repr__(self) -> str:
        verdicts: dict[str, int] = {}
        for c in self.cultures:
            verdicts[c.verdict] = verdicts.get(c.verdict, 0) + 1
        said = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items())) or "none"
        return (
            f"BatchResult({len(self.cultures)} culture(s): {said}; "
            f"{len(self.errors)} error(s); panel {self.panel.id})"
        )

    def culture(self, name: str) -> CultureResult:
        """The culture of that name (``KeyError`` when the batch has none)."""
        for c in self.cultures:
            if c.culture == name:
                return c
        raise KeyError(name)

    def markers_frame(self) -> pandas.DataFrame:
        """One row per culture and marker: % positive, its interval, threshold and verdict."""
        import pandas as pd

        rows = [
            {
                "culture": c.culture,
                "verdict": c.verdict,
                "marker": m.marker,
                "tube": m.tube,
                "channel": m.channel,
                "expect": m.expect,
                "limit": m.limit,
                "percent_positive": m.percent_positive,
                "ci95_low": m.ci95[0] if m.ci95 else None,
                "ci95_high": m.ci95[1] if m.ci95 else None,
                "threshold": m.threshold,
                "threshold_source": m.threshold_source,
                "control_spread_ratio": m.control_spread_ratio,
                "events": m.events,
                "passed": m.passed,
                "borderline": m.borderline,
            }
            for c in self.cultures
            for m in c.markers
        ]
        return pd.DataFrame(rows, columns=list(_MARKER_FRAME))

    def cultures_frame(self) -> pandas.DataFrame:
        """One row per culture: verdict, joint phenotype, populations, events, release facts."""
        import pandas as pd

        rows = []
        for c in self.cultures:
            ci = c.joint_phenotype_ci95
            row: dict[str, Any] = {
                "culture": c.culture,
                "output_name": c.output_name,
                "verdict": c.verdict,
                "borderline": c.borderline,
                "joint_phenotype_percent": c.joint_phenotype_percent,
                "joint_phenotype_ci95_low": ci[0] if ci else None,
                "joint_phenotype_ci95_high": ci[1] if ci else None,
                "n_populations": c.heterogeneity.n_populations if c.heterogeneity else None,
                "missing_markers": list(c.missing_markers),
                "events_total": c.events.get("total"),
                "events_gated": c.events.get("live"),
                "warnings": len(c.warnings),
            }
            for name in RELEASE_FACTS:
                row[name] = release_fact(c.metadata, name) or None
            rows.append(row)
        frame = pd.DataFrame(rows, columns=[*_CULTURE_FRAME, *RELEASE_FACTS])
        for col in ("n_populations", "events_total", "events_gated"):
            frame[col] = frame[col].astype("Int64")  # a missing count stays missing, not NaN
        return frame

    def populations_frame(self) -> pandas.DataFrame:
        """One row per culture and population of its own clustering: fraction (0-1) with its
        interval, label, and the population's median of every marker (columns ``median_<marker>``,
        compensated units; scatter keeps its channel name)."""
        import pandas as pd

        rows = []
        names: dict[str, None] = {}
        for c in self.cultures:
            h = c.heterogeneity
            if h is None:
                continue
            for p in h.populations:
                medians = {f"median_{k}": v for k, v in p.medians_by_marker.items()}
                names.update(dict.fromkeys(medians))
                rows.append(
                    {
                        "culture": c.culture,
                        "tube": h.tube,
                        "population": p.id,
                        "fraction": p.fraction,
                        "ci95_low": p.ci95[0],
                        "ci95_high": p.ci95[1],
                        "label": p.label,
                        **medians,
                    }
                )
        return pd.DataFrame(rows, columns=[*_POPULATION_FRAME, *names])


_MARKER_FRAME = (
    "culture",
    "verdict",
    "marker",
    "tube",
    "channel",
    "expect",
    "limit",
    "percent_positive",
    "ci95_low",
    "ci95_high",
    "threshold",
    "threshold_source",
    "control_spread_ratio",
    "events",
    "passed",
    "borderline",
)
_CULTURE_FRAME = (
    "culture",
    "output_name",
    "verdict",
    "borderline",
    "joint_phenotype_percent",
    "joint_phenotype_ci95_low",
    "joint_phenotype_ci95_high",
    "n_populations",
    "missing_markers",
    "events_total",
    "events_gated",
    "warnings",
)
_POPULATION_FRAME = ("culture", "tube", "population", "fraction", "ci95_low", "ci95_high", "label")


def _plain(value: Any) -> Any:
    """Turn dataclasses, numpy scalars/arrays and tuples into JSON-ready values (floats rounded)."""
    if isinstance(value, str):
        return str(value)  # a Role is its text
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            if f.metadata.get("json", True):
                out[f.name] = _plain(getattr(value, f.name))
        return out
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return round(v, 6) if math.isfinite(v) else None
    return value


def to_dict(batch: BatchResult) -> dict[str, Any]:
    """The ``summary.json`` document."""
    body = _plain(batch)
    body["cultures"] = [_culture_json(c) for c in body["cultures"]]
    return {"schema": SCHEMA, **body}


def _culture_json(c: dict[str, Any]) -> dict[str, Any]:
    # The public field name is "pass" (a Python keyword, hence ``passed`` inside).
    for m in c["markers"]:
        m["pass"] = m.pop("passed")
    # every gate, marked manual or automatic (outlines and plots stay in gates.xml and the PDF)
    c["gates"] = [
        {k: g[k] for k in ("tube", "gate", "source", "path", "parent_count", "count", "x", "y")}
        for g in c.get("gates", [])
    ]
    return c


def to_json(batch: BatchResult) -> str:
    """Deterministic JSON text (sorted within our control, fixed float rounding)."""
    return json.dumps(to_dict(batch), indent=1, ensure_ascii=False) + "\n"


CSV_COLUMNS = (
    "culture",
    "verdict",
    "marker",
    "tube",
    "channel",
    "expect",
    "limit",
    "percent_positive",
    "ci95_low",
    "ci95_high",
    "threshold",
    "threshold_source",
    "events",
    "pass",
    "borderline",
    "joint_phenotype_percent",
    "n_populations",
    "populations",
    "k_resamples",
)
# cultures.csv, one row per culture (for a LIMS); the culture's other metadata follow these
CULTURE_COLUMNS = (
    "culture",
    "output_name",
    "verdict",
    "borderline",
    "joint_phenotype_percent",
    "joint_phenotype_ci95_low",
    "joint_phenotype_ci95_high",
    "n_populations",
    "populations",
    "k_resamples",
    "failed_markers",
    "missing_markers",
    "borderline_markers",
    "thresholds_automatic",
    "stained_tubes",
    "events_total",
    "events_gated",
    "lot",
    "donor",
    "operator",
    "comment",
    "tissue",
    "passage",
    "detachment",
    "cytometer",
    "acquisition_date",
    "panel_id",
    "panel_version",
    "panel_sha256",
    "cytomsc_version",
    "analysis_date",
    "warnings",
)


def _populations(c: CultureResult) -> tuple[str, str, str]:
    """n_populations, the populations in words, and how sure: the bootstrap's k, the reported
    one first ("2 in 17 of 20; 3 in 3 of 20")."""
    if c.heterogeneity is None:
        return "", "", ""
    h = c.heterogeneity
    total = sum(h.k_bootstrap.values())
    sure = "; ".join(f"{k} in {n} of {total}" for k, n in h.resamples()) if total else ""
    return (
        str(h.n_populations),
        "; ".join(f"P{p.id} {100 * p.fraction:.1f} % {p.label}" for p in h.populations),
        sure,
    )


def csv_rows(batch: BatchResult) -> list[dict[str, str]]:
    """``summary.csv``: one row per culture and marker; percentages with one decimal. Each row
    names the tube its number was read in and carries its own borderline flag (the culture's is
    in ``cultures.csv``)."""
    rows = []
    for c in batch.cultures:
        n_pop, pops, sure = _populations(c)
        for m in c.markers:
            rows.append(
                {
                    "culture": c.culture,
                    "verdict": c.verdict,
                    "marker": m.marker,
                    "tube": m.tube or "",
                    "channel": m.channel or "",
                    "expect": m.expect,
                    "limit": _fmt(m.limit),
                    "percent_positive": _fmt(m.percent_positive),
                    "ci95_low": _fmt(m.ci95[0]) if m.ci95 else "",
                    "ci95_high": _fmt(m.ci95[1]) if m.ci95 else "",
                    "threshold": "" if m.threshold is None else f"{m.threshold:.6g}",
                    "threshold_source": m.threshold_source or "",
                    "events": str(m.events),
                    "pass": "" if m.passed is None else str(m.passed).lower(),
                    "borderline": str(m.borderline).lower(),
                    "joint_phenotype_percent": _fmt(c.joint_phenotype_percent),
                    "n_populations": n_pop,
                    "populations": pops,
                    "k_resamples": sure,
                }
            )
    return rows


def culture_rows(batch: BatchResult, analysis_date: str) -> tuple[list[str], list[dict[str, str]]]:
    """``cultures.csv``: the columns (CULTURE_COLUMNS, then every other metadata key of the
    batch, sorted) and one row per culture. ``analysis_date`` is the run's ISO 8601 start."""
    used = {k for names in RELEASE_FACTS.values() for k in names} | {"cytometer", "date"}
    extra = sorted(
        {k for c in batch.cultures for k in c.metadata if k not in used} - set(CULTURE_COLUMNS)
    )
    rows = []
    for c in batch.cultures:
        n_pop, pops, sure = _populations(c)
        judged = [m for m in c.markers if m.passed is not None]
        ci = c.joint_phenotype_ci95
        stained = [f.tube for f in c.funnels if f.role == "stained"]
        row = {
            "culture": c.culture,
            "output_name": c.output_name,
            "verdict": c.verdict,
            "borderline": str(c.borderline).lower(),
            "joint_phenotype_percent": _fmt(c.joint_phenotype_percent),
            "joint_phenotype_ci95_low": _fmt(ci[0]) if ci else "",
            "joint_phenotype_ci95_high": _fmt(ci[1]) if ci else "",
            "n_populations": n_pop,
            "populations": pops,
            "k_resamples": sure,
            "failed_markers": "; ".join(m.marker for m in judged if not m.passed),
            "missing_markers": "; ".join(c.missing_markers),
            "borderline_markers": "; ".join(m.marker for m in judged if m.borderline),
            "thresholds_automatic": str(
                bool(judged) and all(m.threshold_source == "auto" for m in judged)
            ).lower(),
            "stained_tubes": "; ".join(stained),
            "events_total": str(c.events.get("total", "")),
            "events_gated": str(c.events.get("live", "")),
            "cytometer": str(c.metadata.get("cytometer", "")),
            "acquisition_date": str(c.metadata.get("date", "")),
            "panel_id": batch.panel.id,
            "panel_version": batch.panel.version,
            "panel_sha256": batch.panel.sha256,
            "cytomsc_version": batch.cytomsc_version,
            "analysis_date": analysis_date,
            "warnings": str(len(c.warnings)),
        }
        for name in RELEASE_FACTS:
            row[name] = release_fact(c.metadata, name)
        for k in extra:
            row[k] = str(c.metadata.get(k, ""))
        rows.append(row)
    return [*CULTURE_COLUMNS, *extra], rows


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str) -> str:
    """A cell a spreadsheet shows as text: a value starting with a formula prefix (= + - @, tab,
    CR) gets a leading apostrophe (OWASP's CSV-injection rule), unless it is a plain number
    ("-0.5" stays a number)."""
    if value.startswith(FORMULA_PREFIXES) and not _NUMBER.match(value):
        return "'" + value
    return value


def csv_text(columns: list[str] | tuple[str, ...], rows: list[dict[str, str]]) -> str:
    """CSV text of ``rows``, every cell neutralised by :func:`csv_cell`, its control characters
    escaped (a name holding a newline must not split a row)."""
    import csv
    import io

    from .errors import one_line

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: csv_cell(one_line(str(v))) for k, v in row.items()} for row in rows)
    return buf.getvalue()


def _fmt(x: float | None) -> str:
    """Percent with one decimal, as printed everywhere (CSV, PDF)."""
    return "" if x is None else f"{x:.1f}"
