"""Synthetic MSC cultures that look like real cytometer exports, with per-event ground truth.

Every later stage is tested against this simulator, so it models what makes real MSC data hard:
large autofluorescent cells (most in FITC/PE), debris, doublets (FSC-A ~2x at FSC-H ~1.2x, the two
cells' fluorescence summed), dead cells (bright in a viability dye, lower FSC, higher SSC),
hematopoietic contaminants, dim subpopulations, a known spillover matrix (written as $SPILLOVER),
photon (variance proportional to signal) and electronic (Gaussian) noise so that compensated
negatives spread around zero, saturated scatter events at $PnR, a Time channel with $TIMESTEP and an
optional acquisition anomaly (a clog or bubble: a stretch where the event rate jumps and/or the
signal shifts). Instrument styles: BD Diva, Accuri, MACSQuant (markers only in $PnS) and a generic
16-bit integer one; FCS 3.1 float or FCS 3.0 integer data.

How a culture is drawn: each tube is an independent sample of the same culture (same populations,
fractions and spillover); every event first gets a kind (cell, debris, doublet, dead, contaminant),
then the anomaly window and saturation overlay their own kinds. Intact live single cells are the
events whose final kind is ``cell`` (an MSC of population 1..k) or ``contaminant`` (a hematopoietic
cell): the truth's % positive of a marker is taken over exactly those events of the stained tube(s)
that carry the marker, from their per-event positive state (drawn from that marker's positive
component), so it is exact, not estimated.

truth.json (``write_preset``): ``{"format": "cytomsc.truth/1", "preset", "seed",
"label_encoding", "cultures": [...]}``; per culture the panel, expected verdict, number of
subpopulations, true % positive (with event counts) per marker, and per tube its role, file, event
count and ``labels``: a string with ONE CHARACTER PER EVENT in file order (see ``LABEL_CHARS``):
``"1"``-``"9"`` an intact live single MSC of that population, ``"h"`` a hematopoietic contaminant
(intact live single), ``"b"`` debris, ``"d"`` doublet, ``"x"`` dead cell, ``"a"`` event in the
acquisition anomaly, ``"s"`` saturated (a value at $PnR - 1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CytomscError
from ..fcswrite import _atomic_write, write_fcs

# ---- per-event kind codes (SimulatedTube.kind) ----
KIND_CELL = 0  # intact live single MSC (population id in SimulatedTube.population)
KIND_DEBRIS = 1
KIND_DOUBLET = 2
KIND_DEAD = 3
KIND_CONTAMINANT = 4  # intact live single hematopoietic cell (CD45+)
KIND_ANOMALY = 5  # acquired during the clog/bubble stretch (whatever it was)
KIND_SATURATED = 6  # an intact cell with a value clipped at $PnR - 1
KIND_NAMES = {
    KIND_CELL: "cell",
    KIND_DEBRIS: "debris",
    KIND_DOUBLET: "doublet",
    KIND_DEAD: "dead",
    KIND_CONTAMINANT: "contaminant",
    KIND_ANOMALY: "anomaly",
    KIND_SATURATED: "saturated",
}
# Kinds that make up "intact live single cells", the denominator of every true % positive.
GATED_KINDS = (KIND_CELL, KIND_CONTAMINANT)
LABEL_CHARS = {
    KIND_CONTAMINANT: "h",
    KIND_DEBRIS: "b",
    KIND_DOUBLET: "d",
    KIND_DEAD: "x",
    KIND_ANOMALY: "a",
    KIND_SATURATED: "s",
}  # KIND_CELL: the population digit
LABEL_ENCODING = (
    "one character per event in file order: '1'-'9' intact live single MSC of that "
    "population, 'h' hematopoietic contaminant (intact live single), 'b' debris, "
    "'d' doublet, 'x' dead, 'a' acquisition anomaly, 's' saturated"
)

# ---- the optics: dyes, detectors, autofluorescence, spillover ----
DYES = ("FITC", "PE", "PerCP-Cy5.5", "PE-Cy7", "APC", "APC-H7", "BV510", "BV605", "DAPI", "7-AAD")
# Median autofluorescence of an average MSC per detector (262144-range units): highest in FITC/PE.
AUTOFLUORESCENCE = {
    "FITC": 1200.0,
    "PE": 900.0,
    "PerCP-Cy5.5": 300.0,
    "PE-Cy7": 200.0,
    "APC": 90.0,
    "APC-H7": 70.0,
    "BV510": 400.0,
    "BV605": 200.0,
    "DAPI": 350.0,
    "7-AAD": 250.0,
}
# Non-specific antibody binding per detector: what an isotype control reproduces.
NONSPECIFIC = {d: 60.0 + 0.15 * af for d, af in AUTOFLUORESCENCE.items()}
# Fraction of a dye's signal seen in another dye's detector (row dye -> column detector).
SPILL_BASE = {
    "FITC": {"PE": 0.20, "PerCP-Cy5.5": 0.03, "PE-Cy7": 0.005, "7-AAD": 0.02},
    "PE": {"FITC": 0.01, "PerCP-Cy5.5": 0.12, "PE-Cy7": 0.03, "APC": 0.005, "7-AAD": 0.15},
    "PerCP-Cy5.5": {"PE-Cy7": 0.10, "APC": 0.03, "APC-H7": 0.05},
    "PE-Cy7": {"PerCP-Cy5.5": 0.02, "APC-H7": 0.08},
    "APC": {"PerCP-Cy5.5": 0.01, "APC-H7": 0.08, "PE-Cy7": 0.005},
    "APC-H7": {"APC": 0.04, "PE-Cy7": 0.02},
    "BV510": {"BV605": 0.05, "FITC": 0.02, "DAPI": 0.01},
    "BV605": {"BV510": 0.01, "PE": 0.01},
    "DAPI": {"BV510": 0.15, "FITC": 0.005},
    "7-AAD": {"PerCP-Cy5.5": 0.5, "PE-Cy7": 0.05},
}
PHOTON_VAR = 1.0  # detector variance per unit of signal (photon statistics)
ELECTRONIC_SD = 20.0  # fluorescence detectors; scatter gets SCATTER_SD
SCATTER_SD = 150.0
MSC_FSC, MSC_SSC = 90000.0, 50000.0  # medians of an average MSC (262144-range units)
SEPARATION_RATIO = 10.0  # positive level / negative median above which a marker is "separated"


@dataclass(frozen=True)
class Style:
    """How one instrument names and stores things."""

    cytometer: str
    scatter: tuple[str, ...]
    channels: dict[str, str]  # dye -> $PnN
    pns: str  # "marker" ($PnS "CD90") or "marker dye" ($PnS "CD90 FITC")
    version: str
    datatype: str
    range: float
    timestep: float
    # dyes whose detector is also recorded as a pulse area ("FL2-A" beside "FL2-H"): the
    # height is the dye's channel, the area an extra column (a FACSCalibur's DNA doublet pair)
    areas: dict[str, str] = field(default_factory=dict)


STYLES = {
    "diva": Style(
        "BD LSRFortessa",
        ("FSC-A", "FSC-H", "SSC-A", "SSC-H"),
        {
            "FITC": "FITC-A",
            "PE": "PE-A",
            "PerCP-Cy5.5": "PerCP-Cy5-5-A",
            "PE-Cy7": "PE-Cy7-A",
            "APC": "APC-A",
            "APC-H7": "APC-H7-A",
            "BV510": "BV510-A",
            "BV605": "BV605-A",
            "DAPI": "DAPI-A",
            "7-AAD": "7-AAD-A",
        },
        "marker",
        "3.1",
        "F",
        262144.0,
        0.01,
    ),
    "accuri": Style(
        "Accuri C6",
        ("FSC-A", "FSC-H", "SSC-A", "SSC-H"),
        {"FITC": "FL1-A", "PE": "FL2-A", "PerCP-Cy5.5": "FL3-A", "7-AAD": "FL3-A", "APC": "FL4-A"},
        "marker dye",
        "3.0",
        "I",
        16777216.0,
        0.1,
    ),
    "macsquant": Style(
        "MACSQuant Analyzer 10",
        ("FSC-A", "FSC-H", "SSC-A"),
        {
            "FITC": "B1-A",
            "PE": "B2-A",
            "PerCP-Cy5.5": "B3-A",
            "7-AAD": "B3-A",
            "PE-Cy7": "B4-A",
            "APC": "R1-A",
            "APC-H7": "R2-A",
            "DAPI": "V1-A",
            "BV510": "V2-A",
            "BV605": "V3-A",
        },
        "marker",
        "3.1",
        "F",
        262144.0,
        0.01,
    ),
    "generic": Style(
        "Cytometer",
        ("FSC-A", "FSC-H", "SSC-A"),
        {"FITC": "FL1", "PE": "FL2", "PerCP-Cy5.5": "FL3", "7-AAD": "FL3", "APC": "FL4"},
        "marker dye",
        "3.0",
        "I",
        65536.0,
        0.01,
    ),
    # heights only for scatter (FACSCalibur): doublets can be seen only on FL2-A against FL2-H
    "calibur": Style(
        "FACSCalibur",
        ("FSC-H", "SSC-H"),
        {"FITC": "FL1-H", "PE": "FL2-H", "PerCP-Cy5.5": "FL3-H", "7-AAD": "FL3-H", "APC": "FL4-H"},
        "marker dye",
        "3.0",
        "I",
        65536.0,
        0.1,
        areas={"PE": "FL2-A"},
    ),
}

COCKTAIL = "CD34/CD11b/CD19/CD45/HLA-DR"
# Stained tubes: dye -> marker (a marker with "/" is a cocktail of several in one channel).
LAYOUTS: dict[str, list[dict[str, str]]] = {
    # a 4-colour instrument: the ISCT panel split over two tubes
    "isct-4c": [
        {"FITC": "CD90", "PE": "CD73", "PerCP-Cy5.5": "CD45", "APC": "CD105"},
        {"FITC": "HLA-DR", "PE": "CD34", "PerCP-Cy5.5": "CD14", "APC": "CD19"},
    ],
    # an 8-colour instrument: one tube holds the whole ISCT panel (joint phenotype measurable)
    "isct-8c": [
        {
            "FITC": "CD90",
            "PE": "CD73",
            "PerCP-Cy5.5": "CD45",
            "PE-Cy7": "CD34",
            "APC": "CD105",
            "APC-H7": "CD14",
            "BV605": "HLA-DR",
            "BV510": "CD19",
        }
    ],
    # BD Stemflow-like kit: positives in both tubes, CD44 PE, then the PE negative cocktail
    "kit": [
        {"FITC": "CD90", "PE": "CD44", "PerCP-Cy5.5": "CD105", "APC": "CD73"},
        {"FITC": "CD90", "PE": COCKTAIL, "PerCP-Cy5.5": "CD105", "APC": "CD73"},
    ],
}

# marker -> (fraction positive, median level of the positives) for an MSC and a contaminant
MSC_MARKERS: dict[str, tuple[float, float]] = {
    "CD73": (0.998, 25000.0),
    "CD90": (0.998, 60000.0),
    "CD105": (0.995, 15000.0),
    "CD44": (0.998, 40000.0),
    "CD45": (0.002, 20000.0),
    "CD34": (0.002, 20000.0),
    "CD14": (0.001, 20000.0),
    "CD11b": (0.001, 20000.0),
    "CD19": (0.001, 20000.0),
    "CD79a": (0.001, 20000.0),
    "HLA-DR": (0.002, 20000.0),
}
CONTAMINANT_MARKERS: dict[str, tuple[float, float]] = {
    "CD45": (1.0, 25000.0),
    "CD34": (0.2, 15000.0),
    "CD14": (0.3, 15000.0),
    "CD11b": (0.35, 15000.0),
    "CD19": (0.15, 15000.0),
    "CD79a": (0.15, 15000.0),
    "HLA-DR": (0.45, 20000.0),
    "CD73": (0.0, 0.0),
    "CD90": (0.0, 0.0),
    "CD105": (0.0, 0.0),
    "CD44": (0.9, 20000.0),
}
POSITIVE_SIGMA = 0.35  # log-normal spread of positive levels (natural log)

KIT_PANEL = "stemflow-cocktail"  # panels/stemflow-cocktail.toml
# Expected verdict rules per panel id: positives (>= limit) and groups of alternatives (<= limit).
PANEL_RULES: dict[str, dict] = {
    "isct-2006": {
        "positive": ["CD73", "CD90", "CD105"],
        "pos_limit": 95.0,
        "negative": [["CD45"], ["CD34"], ["CD14", "CD11b"], ["CD79a", "CD19"], ["HLA-DR"]],
        "neg_limit": 2.0,
    },
    KIT_PANEL: {
        "positive": ["CD73", "CD90", "CD105", "CD44"],
        "pos_limit": 95.0,
        "negative": [["CD34"], ["CD11b"], ["CD19"], ["CD45"], ["HLA-DR"]],
        "neg_limit": 2.0,
    },
}
MIN_GATED = 1000  # fewer intact live single cells in a stained tube: inconclusive
BORDERLINE = 1.0  # points from a limit within which a marker is flagged borderline (issue 3)


@dataclass
class PopulationDesign:
    """One MSC subpopulation: its share of the MSCs, size, granularity and marker levels."""

    fraction: float = 1.0
    size: float = 1.0  # FSC scale (and autofluorescence, which grows with cell size)
    granularity: float = 1.0  # SSC scale
    markers: dict[str, tuple[float, float]] = field(default_factory=dict)  # overrides MSC_MARKERS

    def marker(self, name: str) -> tuple[float, float]:
        return self.markers.get(name, MSC_MARKERS.get(name, (0.0, 0.0)))


@dataclass
class Anomaly:
    """A clog or bubble: a stretch of the run (fractions of its duration) with more events and/or
    shifted signals. Every event acquired in it is labelled ``anomaly``."""

    start: float = 0.6
    duration: float = 0.05
    rate_factor: float = 4.0  # event rate inside the stretch / normal rate
    shift: float = 0.6  # all signals multiplied by this inside the stretch


@dataclass
class CultureDesign:
    """Everything that defines one simulated culture."""

    name: str
    style: str = "diva"
    layout: str = "isct-8c"  # a key of LAYOUTS
    n_events: int = 10000  # per tube
    populations: list[PopulationDesign] = field(default_factory=lambda: [PopulationDesign()])
    debris: float = 0.08  # fractions of all events
    doublets: float = 0.04
    dead: float = 0.0
    contaminants: float = 0.002
    contaminant_size: float = 0.55  # FSC of a contaminant / an average MSC's (lymphocytes ~0.3)
    saturated: float = 0.002
    viability: str | None = None  # a dye ("DAPI", "7-AAD") in every tube except the unstained
    controls: tuple[str, ...] = ("unstained", "isotype")  # and/or "fmo:<marker>"
    panel: str = "isct-2006"
    anomaly: Anomaly | None = None
    version: str | None = None  # default: the style's
    datatype: str | None = None
    seed_offset: int = 0
    date: str = "15-JAN-2025"
    tissue: str | None = None
    passage: int | None = None
    detachment: str | None = None
    donor: str | None = None  # written as the DONOR keyword when set
    lot: str | None = None  # written as the LOT keyword when set
    tags: dict[str, str | float] = field(default_factory=dict)  # copied into the truth entry

    def stained_layout(self) -> list[dict[str, str]]:
        if self.layout not in LAYOUTS:
            raise CytomscError(f"unknown layout {self.layout!r} in culture {self.name}")
        return LAYOUTS[self.layout]

    def dyes(self) -> list[str]:
        used = {d for tube in self.stained_layout() for d in tube}
        if self.viability:
            used.add(self.viability)
        return [d for d in DYES if d in used]


@dataclass
class SimulatedTube:
    """One simulated FCS file with its per-event truth."""

    role: str  # "stained" | "isotype" | "unstained" | "fmo:<marker>"
    filename: str
    events: np.ndarray  # (n, channels) in file units
    pnn: list[str]
    pns: list[str]
    keywords: dict[str, str]
    spillover: tuple[list[str], np.ndarray]
    kind: np.ndarray  # per event, KIND_* code after the anomaly/saturation overlay
    population: np.ndarray  # per event: 1..k for MSC cells (also dead/doublet/anomaly), 0 else
    positive: dict[str, np.ndarray]  # per marker: the event was drawn from its positive component
    base_kind: np.ndarray  # the kind before the anomaly/saturation overlay
    stains: dict[str, str] = field(default_factory=dict)  # dye -> marker stained in this tube
    version: str = "3.1"
    datatype: str = "F"
    ranges: list[float] = field(default_factory=list)

    def labels(self) -> str:
        """The per-event label string of truth.json (see LABEL_ENCODING)."""
        chars = np.array([LABEL_CHARS.get(k, "?") for k in range(7)])
        out = chars[self.kind]
        cells = self.kind == KIND_CELL
        out[cells] = np.char.mod("%d", self.population[cells])
        return "".join(out.tolist())

    def gated(self) -> np.ndarray:
        """Mask of the intact live single cells."""
        return np.isin(self.kind, GATED_KINDS)

    def write(self, folder: Path) -> Path:
        path = Path(folder) / self.filename
        write_fcs(
            path,
            self.events,
            self.pnn,
            self.pns,
            self.keywords,
            self.version,
            self.datatype,
            self.ranges,
            self.spillover,
        )
        return path


def _spillover(rng: np.random.Generator, dyes: list[str]) -> np.ndarray:
    """The culture's spillover matrix: the base values, each varied by up to ±10 %, 4 decimals."""
    n = len(dyes)
    m = np.eye(n)
    for i, a in enumerate(dyes):
        for j, b in enumerate(dyes):
            v = SPILL_BASE.get(a, {}).get(b, 0.0)
            if i != j and v:
                m[i, j] = round(v * (1 + 0.1 * rng.uniform(-1, 1)), 4)
    return m


def _markers_of(layout: list[dict[str, str]]) -> list[str]:
    """Single markers of the layout (cocktails split), in order of appearance."""
    out: list[str] = []
    for tube in layout:
        for m in tube.values():
            for part in m.split("/"):
                if part not in out:
                    out.append(part)
    return out


def _lognormal(
    rng: np.random.Generator, median: float | np.ndarray, sigma: float, n: int
) -> np.ndarray:
    return median * np.exp(sigma * rng.standard_normal(n))


class _Bodies:
    """Per-event physical quantities before the detectors: scatter, dye loads, autofluorescence."""

    def __init__(self, n: int, dyes: list[str], markers: list[str]) -> None:
        self.fsc_a = np.zeros(n)
        self.fsc_h = np.zeros(n)
        self.ssc_a = np.zeros(n)
        self.ssc_h = np.zeros(n)
        self.size = np.zeros(n)  # relative, scales autofluorescence
        self.af_scale = np.ones(n)
        self.population = np.zeros(n, dtype=np.int16)
        self.positive = {m: np.zeros(n, dtype=bool) for m in markers}
        self.level = {m: np.zeros(n) for m in markers}  # antigen load (0 for negatives)
        self.dead = np.zeros(n, dtype=bool)


def _draw_cells(
    rng: np.random.Generator,
    design: CultureDesign,
    n: int,
    contaminant: bool,
    markers: list[str],
    dyes: list[str],
) -> _Bodies:
    """``n`` intact cells: MSCs from the design's populations, or hematopoietic contaminants."""
    b = _Bodies(n, dyes, markers)
    size: np.ndarray
    gran: np.ndarray
    if contaminant:
        size = np.full(n, design.contaminant_size)
        gran = np.full(n, 0.35)
        b.af_scale = np.full(n, 0.3)
        for m in markers:
            frac, lvl = CONTAMINANT_MARKERS.get(m, (0.0, 0.0))
            b.positive[m] = rng.random(n) < frac
            b.level[m] = np.where(b.positive[m], _lognormal(rng, lvl, POSITIVE_SIGMA, n), 0.0)
    else:
        fr = np.array([p.fraction for p in design.populations], dtype=float)
        pop = rng.choice(len(fr), size=n, p=fr / fr.sum())
        b.population = (pop + 1).astype(np.int16)
        size = np.array([p.size for p in design.populations])[pop]
        gran = np.array([p.granularity for p in design.populations])[pop]
        for m in markers:
            fracs = np.array([p.marker(m)[0] for p in design.populations])[pop]
            lvls = np.array([p.marker(m)[1] for p in design.populations])[pop]
            b.positive[m] = rng.random(n) < fracs
            b.level[m] = np.where(
                b.positive[m], lvls * np.exp(POSITIVE_SIGMA * rng.standard_normal(n)), 0.0
            )
    f = _lognormal(rng, MSC_FSC * size, 0.18, n)
    rel = f / (MSC_FSC * size)
    b.fsc_a = f
    b.ssc_a = MSC_SSC * gran * np.sqrt(rel) * np.exp(0.25 * rng.standard_normal(n))
    b.fsc_h = b.fsc_a * np.clip(rng.normal(0.78, 0.03, n), 0.6, 0.95)
    b.ssc_h = b.ssc_a * np.clip(rng.normal(0.80, 0.04, n), 0.6, 0.98)
    b.size = f / MSC_FSC
    return b


def _draw_debris(rng: np.random.Generator, n: int, markers: list[str], dyes: list[str]) -> _Bodies:
    b = _Bodies(n, dyes, markers)
    b.fsc_a = _lognormal(rng, 9000.0, 0.6, n)
    b.ssc_a = _lognormal(rng, 7000.0, 0.7, n)
    b.fsc_h = b.fsc_a * np.clip(rng.normal(0.85, 0.08, n), 0.5, 1.0)
    b.ssc_h = b.ssc_a * np.clip(rng.normal(0.85, 0.08, n), 0.5, 1.0)
    b.size = b.fsc_a / MSC_FSC
    b.af_scale = np.exp(0.8 * rng.standard_normal(n)) * 0.5
    b.dead = rng.random(n) < 0.3  # fragments of dead cells take up the viability dye
    return b


def _combine(a: _Bodies, c: _Bodies, rng: np.random.Generator) -> _Bodies:
    """Doublets: areas and dye loads add; heights rise only ~1.2x over one cell."""
    n = len(a.fsc_a)
    out = _Bodies(n, [], list(a.positive))
    out.fsc_a = a.fsc_a + c.fsc_a
    out.ssc_a = a.ssc_a + c.ssc_a
    out.fsc_h = 0.5 * (a.fsc_h + c.fsc_h) * rng.normal(1.2, 0.05, n)
    out.ssc_h = 0.5 * (a.ssc_h + c.ssc_h) * rng.normal(1.2, 0.05, n)
    out.size = a.size + c.size
    out.af_scale = 0.5 * (a.af_scale + c.af_scale)
    out.population = a.population
    for m in a.positive:
        out.positive[m] = a.positive[m] | c.positive[m]
        out.level[m] = a.level[m] + c.level[m]
    return out


def _tubes_of(design: CultureDesign) -> list[tuple[str, str, dict[str, str]]]:
    """(role, tube name, dye -> stain) per tube; the stain is a marker, 'isotype' or a dye."""
    layout = design.stained_layout()
    all_dyes = [d for d in design.dyes() if d != design.viability]
    vi = {design.viability: "viability"} if design.viability else {}
    tubes: list[tuple[str, str, dict[str, str]]] = []
    for role in design.controls:
        if role == "unstained":
            tubes.append(("unstained", "Unstained", {}))
        elif role == "isotype":
            tubes.append(("isotype", "Isotype", {**{d: "isotype" for d in all_dyes}, **vi}))
        elif role.startswith("fmo:"):
            marker = role[4:]
            src = next((t for t in layout if marker in t.values()), None)
            if src is None:
                raise CytomscError(f"FMO {marker} names no stained marker in {design.name}")
            tubes.append(
                (role, f"FMO {marker}", {**{d: m for d, m in src.items() if m != marker}, **vi})
            )
        else:
            raise CytomscError(f"unknown control {role!r} in culture {design.name}")
    for i, t in enumerate(layout, 1):
        name = "Stained" if len(layout) == 1 else f"Stained {i}"
        tubes.append(("stained", name, {**t, **vi}))
    return tubes


def _simulate_tube(
    rng: np.random.Generator,
    design: CultureDesign,
    style: Style,
    stains: dict[str, str],
    spill: np.ndarray,
    dyes: list[str],
    markers: list[str],
) -> tuple[np.ndarray, dict]:
    n = design.n_events
    probs = np.array([design.debris, design.doublets, design.dead, design.contaminants])
    if probs.sum() >= 1:
        raise CytomscError(
            f"fractions of debris/doublets/dead/contaminants exceed 1 in {design.name}"
        )
    kinds = rng.choice(
        [KIND_DEBRIS, KIND_DOUBLET, KIND_DEAD, KIND_CONTAMINANT, KIND_CELL],
        size=n,
        p=[*probs, 1 - probs.sum()],
    )
    parts = {}
    for k in (KIND_CELL, KIND_DEAD, KIND_DOUBLET, KIND_CONTAMINANT, KIND_DEBRIS):
        idx = np.flatnonzero(kinds == k)
        m = len(idx)
        if k == KIND_DEBRIS:
            b = _draw_debris(rng, m, markers, dyes)
        elif k == KIND_CONTAMINANT:
            b = _draw_cells(rng, design, m, True, markers, dyes)
        elif k == KIND_DOUBLET:
            b = _combine(
                _draw_cells(rng, design, m, False, markers, dyes),
                _draw_cells(rng, design, m, False, markers, dyes),
                rng,
            )
        else:
            b = _draw_cells(rng, design, m, False, markers, dyes)
            if k == KIND_DEAD:
                b.dead[:] = True
                b.fsc_a *= 0.7
                b.fsc_h *= 0.7
                b.ssc_a *= 1.4
                b.ssc_h *= 1.4
        parts[k] = (idx, b)

    nd = len(dyes)
    scatter = np.zeros((n, 4))  # FSC-A, FSC-H, SSC-A, SSC-H
    load = np.zeros((n, nd))  # dye on the cell, before the optics
    af = np.zeros((n, nd))
    population = np.zeros(n, dtype=np.int16)
    positive = {m: np.zeros(n, dtype=bool) for m in markers}
    for k, (idx, b) in parts.items():
        m = len(idx)
        if m == 0:
            continue
        scatter[idx] = np.column_stack([b.fsc_a, b.fsc_h, b.ssc_a, b.ssc_h])
        population[idx] = b.population
        for mk in markers:
            positive[mk][idx] = b.positive[mk]
        ns_boost = 4.0 if k == KIND_DEAD else (0.3 if k == KIND_DEBRIS else 1.0)
        for j, d in enumerate(dyes):
            af[idx, j] = (
                AUTOFLUORESCENCE[d] * b.size * b.af_scale * np.exp(0.3 * rng.standard_normal(m))
            )
            stain = stains.get(d)
            if stain is None:
                continue
            if stain == "viability":
                load[idx, j] = np.where(
                    b.dead, _lognormal(rng, 30000.0, 0.4, m), _lognormal(rng, 100.0, 0.5, m)
                )
                continue
            ns = NONSPECIFIC[d] * ns_boost * b.size * np.exp(0.3 * rng.standard_normal(m))
            load[idx, j] = ns
            if stain != "isotype":
                for mk in stain.split("/"):
                    load[idx, j] += b.level[mk]

    det = load @ spill + af
    det += rng.standard_normal(det.shape) * np.sqrt(PHOTON_VAR * np.clip(det, 0, None))
    det += rng.normal(0.0, ELECTRONIC_SD, det.shape)
    scatter += rng.standard_normal(scatter.shape) * np.sqrt(PHOTON_VAR * scatter)
    scatter += rng.normal(0.0, SCATTER_SD, scatter.shape)

    # acquisition times in $TIMESTEP ticks (a coarser step when the run would overflow $PnR);
    # an anomaly packs more events into a stretch of whole ticks and shifts their signals
    kind = kinds.copy()
    top = style.range - 1
    rate = 300.0  # events per second
    timestep = style.timestep
    while n / rate / timestep > top:
        timestep *= 10
    span = n / rate / timestep
    ticks = rng.uniform(0, span, n)
    if design.anomaly is not None:
        a = design.anomaly
        q = a.duration * a.rate_factor / (1 - a.duration + a.duration * a.rate_factor)
        inside = rng.random(n) < q
        t0 = np.floor(a.start * span)
        t1 = max(t0 + 1, np.floor((a.start + a.duration) * span))
        ticks[inside] = rng.uniform(t0, t1, inside.sum())
        outside = ~inside
        u = rng.uniform(0, span - (t1 - t0), outside.sum())
        ticks[outside] = np.where(u < t0, u, u + (t1 - t0))
        det[inside] *= a.shift
        scatter[inside] *= a.shift
        kind[inside] = KIND_ANOMALY
    ticks = np.floor(ticks)

    # a dye recorded as area too: the area is the integrated signal, the height its pulse's peak,
    # shaped like the event's FSC pulse (a doublet's is wider: its height ~0.6 of its area's)
    area_cols = [dyes.index(d) for d in style.areas if d in dyes]
    areas = det[:, area_cols].copy()
    if area_cols:
        shape = np.clip(scatter[:, 1] / np.maximum(scatter[:, 0], 1.0), 0.05, 1.5)
        det[:, area_cols] = areas * shape[:, None]
    scale = style.range / 262144.0
    scatter *= scale
    det *= scale
    areas *= scale
    n_sat = int(rng.binomial(n, design.saturated)) if design.saturated > 0 else 0
    if n_sat:
        sat = rng.choice(np.flatnonzero(kind != KIND_ANOMALY), size=n_sat, replace=False)
        col = rng.choice([0, 2], size=n_sat)
        scatter[sat, col] = top
    clipped = (scatter >= top).any(axis=1) | (det >= top).any(axis=1) | (areas >= top).any(axis=1)
    scatter = np.clip(scatter, None, top)
    det = np.clip(det, None, top)
    areas = np.clip(areas, None, top)
    kind[clipped & np.isin(kind, GATED_KINDS)] = KIND_SATURATED

    order = np.argsort(ticks, kind="stable")
    sc_cols = {"FSC-A": 0, "FSC-H": 1, "SSC-A": 2, "SSC-H": 3}
    cols = [scatter[:, sc_cols[s]] for s in style.scatter] + [det[:, j] for j in range(nd)]
    cols += [areas[:, k] for k in range(areas.shape[1])]
    events = np.column_stack([*cols, ticks])[order]
    # hold exactly what the file will hold (float32, or integers clipped to [0, $PnR - 1])
    if (design.datatype or style.datatype) == "I":
        events = np.clip(np.rint(events), 0, top)
    else:
        events = events.astype(np.float32).astype(float)
    info = {
        "kind": kind[order],
        "base_kind": kinds[order],
        "population": population[order],
        "positive": {m: v[order] for m, v in positive.items()},
        "timestep": timestep,
    }
    return events, info


def _pns(style: Style, dye: str, stain: str | None) -> str:
    if stain is None:
        return ""
    if stain == "viability":
        return dye
    if stain == "isotype":
        return f"IgG1 {dye}"
    return stain if style.pns == "marker" else f"{stain} {dye}"


def simulate_culture(design: CultureDesign, seed: int) -> list[SimulatedTube]:
    """All tubes of one culture (controls first, then the stained tubes), deterministic in
    ``seed`` and ``design.seed_offset``."""
    if design.style not in STYLES:
        raise CytomscError(f"unknown instrument style {design.style!r} in culture {design.name}")
    style = STYLES[design.style]
    dyes = design.dyes()
    missing = [d for d in dyes if d not in style.channels]
    if missing:
        raise CytomscError(
            f"style {design.style} has no channel for {', '.join(missing)} (culture {design.name})"
        )
    if len({style.channels[d] for d in dyes}) != len(dyes):
        raise CytomscError(f"two dyes share one channel in culture {design.name}")
    markers = _markers_of(design.stained_layout())
    rng = np.random.default_rng([seed, design.seed_offset])
    spill = _spillover(rng, dyes)
    det_names = [style.channels[d] for d in dyes]
    area_names = [style.areas[d] for d in style.areas if d in dyes]
    pnn = [*style.scatter, *det_names, *area_names, "Time"]
    version = design.version or style.version
    datatype = design.datatype or style.datatype
    ranges = [style.range] * len(pnn)
    tubes = []
    for i, (role, tube_name, stains) in enumerate(_tubes_of(design)):
        trng = np.random.default_rng([seed, design.seed_offset, i + 1])
        events, info = _simulate_tube(trng, design, style, stains, spill, dyes, markers)
        pns = (
            ["" for _ in style.scatter]
            + [_pns(style, d, stains.get(d)) for d in dyes]
            + [_pns(style, d, stains.get(d)) for d in style.areas if d in dyes]
            + [""]
        )
        filename = f"{design.name}_{tube_name.replace(' ', '_')}.fcs"
        # $FIL is the file name, as instruments write it (unique, and it names the role too)
        keywords = {
            "$CYT": style.cytometer,
            "$SRC": design.name,
            "$DATE": design.date,
            "$FIL": filename,
            "TUBE NAME": tube_name,
            "$TIMESTEP": f"{info['timestep']:g}",
            "EXPERIMENT NAME": "MSC phenotype",
        }
        if design.tissue:
            keywords["TISSUE SOURCE"] = design.tissue
        if design.passage is not None:
            keywords["PASSAGE"] = str(design.passage)
        if design.detachment:
            keywords["DETACHMENT"] = design.detachment
        if design.donor:
            keywords["DONOR"] = design.donor
        if design.lot:
            keywords["LOT"] = design.lot
        tubes.append(
            SimulatedTube(
                role=role,
                filename=filename,
                events=events,
                pnn=list(pnn),
                pns=pns,
                keywords=keywords,
                spillover=(det_names, spill),
                kind=info["kind"],
                population=info["population"],
                positive=info["positive"],
                base_kind=info["base_kind"],
                stains={d: s for d, s in stains.items() if s not in ("isotype",)},
                version=version,
                datatype=datatype,
                ranges=ranges,
            )
        )
    return tubes


SINGLE_LEVEL = 40000.0  # median load of a single-stain control's positives (262144 units)
BAD_CONTROLS = ("dim", "saturated", "double")


def simulate_single_stains(
    design: CultureDesign,
    seed: int,
    level: float = SINGLE_LEVEL,
    n_events: int = 10000,
    bad: dict[str, str] | None = None,
) -> list[SimulatedTube]:
    """Single-stain compensation controls for the dyes of ``design``: an unstained tube, then one
    tube per dye (viability dye included), drawn through the culture's own spillover matrix (the
    same draw as ``simulate_culture``), so the matrix they should give is ``tube.spillover``.

    Every cell of a control carries its dye (log-normal around ``level``); debris and doublets as
    in the design. ``bad`` makes a control a known bad one: "dim" (level 100: inside the
    autofluorescence), "saturated" (most positives at $PnR), "double" (half of its cells also
    carry the next dye). Roles: "unstained" and "single:<dye>"."""
    if design.style not in STYLES:
        raise CytomscError(f"unknown instrument style {design.style!r} in culture {design.name}")
    style = STYLES[design.style]
    dyes = design.dyes()
    rng = np.random.default_rng([seed, design.seed_offset])
    spill = _spillover(rng, dyes)  # the culture's matrix: the first draw, as simulate_culture's
    det_names = [style.channels[d] for d in dyes]
    area_names = [style.areas[d] for d in style.areas if d in dyes]
    pnn = [*style.scatter, *det_names, *area_names, "Time"]
    version = design.version or style.version
    datatype = design.datatype or style.datatype
    bad = dict(bad or {})
    tubes = []
    for i, dye in enumerate([None, *dyes]):
        kind = bad.get(dye or "", "")
        lvl = {"dim": 100.0, "saturated": 1.3 * 262144.0}.get(kind, level)
        stains = {} if dye is None else {dye: "SS"}
        markers = {"SS": (1.0, lvl), "SS2": (0.5, level)}
        if kind == "double" and dye is not None:
            other = dyes[(dyes.index(dye) + 1) % len(dyes)]
            stains[other] = "SS2"
        one = CultureDesign(
            f"{design.name}_single",
            style=design.style,
            layout=design.layout,
            n_events=n_events,
            populations=[PopulationDesign(markers=markers)],
            debris=design.debris,
            doublets=design.doublets,
            dead=0.0,
            contaminants=0.0,
            saturated=0.0,
            controls=(),
            version=version,
            datatype=datatype,
            date=design.date,
        )
        trng = np.random.default_rng([seed, design.seed_offset, 1000 + i])
        events, info = _simulate_tube(trng, one, style, stains, spill, dyes, ["SS", "SS2"])
        label = "unstained" if dye is None else dye
        pns = (
            ["" for _ in style.scatter]
            + [dye if d == dye else "" for d in dyes]
            + [dye if d == dye else "" for d in style.areas if d in dyes]
            + [""]
        )
        filename = f"{design.name}_single_{label.replace(' ', '_')}.fcs"
        keywords = {
            "$CYT": style.cytometer,
            "$DATE": design.date,
            "$FIL": filename,
            "TUBE NAME": f"{label} single stain",
            "$TIMESTEP": f"{info['timestep']:g}",
            "EXPERIMENT NAME": "Compensation controls",
        }
        tubes.append(
            SimulatedTube(
                role="unstained" if dye is None else f"single:{dye}",
                filename=filename,
                events=events,
                pnn=list(pnn),
                pns=pns,
                keywords=keywords,
                spillover=(det_names, spill),
                kind=info["kind"],
                population=info["population"],
                positive=info["positive"],
                base_kind=info["base_kind"],
                stains=stains,
                version=version,
                datatype=datatype,
                ranges=[style.range] * len(pnn),
            )
        )
    return tubes


def write_compensation_set(
    out: str | Path,
    design: CultureDesign,
    seed: int = 0,
    bad: dict[str, str] | None = None,
    file_spillover: bool = False,
    n_events: int = 10000,
) -> dict:
    """One culture and its single-stain controls under ``out``, with ``manifest.csv`` (roles
    ``single:<dye>``) and ``truth.json`` (the culture's truth and the spillover matrix the
    controls must give). Without ``file_spillover`` the culture's files carry no $SPILLOVER, so
    the controls are their only compensation."""
    out = Path(out)
    tubes = simulate_culture(design, seed)
    singles = simulate_single_stains(design, seed, bad=bad, n_events=n_events)
    rows = ["file,culture,role"]
    for t in tubes:
        if not file_spillover:
            t.spillover = None  # type: ignore[assignment]
        t.write(out / design.name)
        rows.append(f"{design.name}/{t.filename},{design.name},{t.role}")
    for t in singles:
        t.write(out / "controls")
        rows.append(f"controls/{t.filename},controls,{t.role}")
    _atomic_write(out / "manifest.csv", ("\n".join(rows) + "\n").encode("utf-8"))
    names, matrix = singles[0].spillover
    doc = {
        "format": "cytomsc.truth/1",
        "preset": "compensation",
        "seed": seed,
        "label_encoding": LABEL_ENCODING,
        "cultures": [truth_of(design, tubes)],
        "spillover": {"detectors": list(names), "matrix": np.asarray(matrix).tolist()},
        "controls": [
            {
                "file": f"controls/{t.filename}",
                "role": t.role,
                "bad": (bad or {}).get(t.role.split(":", 1)[-1]),
            }
            for t in singles
        ],
    }
    _atomic_write(
        out / "truth.json", (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
    )
    return doc


def _separated(design: CultureDesign, dye: str, entity: str) -> bool:
    """Whether every positive component of a marker (or cocktail) is far above the negatives."""
    neg = (AUTOFLUORESCENCE[dye] + NONSPECIFIC[dye]) * max(p.size for p in design.populations)
    levels = []
    for mk in entity.split("/"):
        for p in design.populations:
            frac, lvl = p.marker(mk)
            if 0 < frac:
                levels.append(lvl)
        if design.contaminants > 0:
            frac, lvl = CONTAMINANT_MARKERS.get(mk, (0.0, 0.0))
            if frac > 0:
                levels.append(lvl)
    return all(lvl >= SEPARATION_RATIO * neg for lvl in levels)


def _expectation(panel: str, entity: str) -> tuple[str, float | None]:
    rules = PANEL_RULES.get(panel)
    if rules is None:
        return "unknown", None
    parts = entity.split("/")
    if len(parts) == 1 and entity in rules["positive"]:
        return "positive", rules["pos_limit"]
    negatives = {m for group in rules["negative"] for m in group}
    if all(p in negatives for p in parts):
        return "negative", rules["neg_limit"]
    return "informative", None


def truth_of(design: CultureDesign, tubes: list[SimulatedTube]) -> dict:
    """The truth.json entry of one culture: % positive per marker (exact from the per-event
    labels), expected verdict under the design's panel, populations and per-tube labels."""
    stained = [t for t in tubes if t.role == "stained"]
    style = STYLES[design.style]
    markers: dict[str, dict] = {}
    for t in stained:
        g = t.gated()
        for dye, entity in t.stains.items():
            if entity == "viability":
                continue
            pos = np.zeros(len(g), dtype=bool)
            for mk in entity.split("/"):
                pos |= t.positive[mk]
            rec = markers.setdefault(
                entity,
                {
                    "channel": style.channels[dye],
                    "dye": dye,
                    "events": 0,
                    "positive_events": 0,
                    "by_tube": {},
                },
            )
            n, k = int(g.sum()), int((pos & g).sum())
            rec["events"] += n
            rec["positive_events"] += k
            rec["by_tube"][t.filename] = round(100.0 * k / n, 6) if n else None
    verdict_markers = {}
    for entity, rec in markers.items():
        rec["percent_positive"] = (
            round(100.0 * rec["positive_events"] / rec["events"], 6) if rec["events"] else None
        )
        expect, limit = _expectation(design.panel, entity)
        rec["expect"], rec["limit"] = expect, limit
        rec["separated"] = _separated(design, rec["dye"], entity)
        pct = rec["percent_positive"]
        if expect in ("positive", "negative") and pct is not None:
            rec["pass"] = pct >= limit if expect == "positive" else pct <= limit
            rec["borderline"] = abs(pct - limit) < BORDERLINE
            verdict_markers[entity] = rec["pass"]
        else:
            rec["pass"] = None
            rec["borderline"] = False
    gated = {t.filename: int(t.gated().sum()) for t in tubes}
    missing = _missing(design.panel, list(markers))
    low = any(gated[t.filename] < MIN_GATED for t in stained)
    if low or missing:
        verdict = "inconclusive"
    elif not all(verdict_markers.values()):
        verdict = "fail"
    else:
        verdict = "pass"
    joint = _joint(design.panel, stained)
    fr = np.array([p.fraction for p in design.populations], dtype=float)
    return {
        "culture": design.name,
        "style": design.style,
        "cytometer": style.cytometer,
        "panel": design.panel,
        "layout": design.layout,
        "expected_verdict": verdict,
        "borderline": any(r["borderline"] for r in markers.values()),
        "missing_markers": missing,
        "n_populations": len(design.populations),
        "population_fractions": [round(float(f), 6) for f in fr / fr.sum()],
        "design": {
            "debris": design.debris,
            "doublets": design.doublets,
            "dead": design.dead,
            "contaminants": design.contaminants,
            "saturated": design.saturated,
            "viability": design.viability,
            "anomaly": design.anomaly is not None,
            "controls": list(design.controls),
            "n_events": design.n_events,
        },
        "markers": markers,
        "joint_phenotype_percent": joint,
        "tags": dict(design.tags),
        "tubes": [
            {
                "file": t.filename,
                "role": t.role,
                "events": int(len(t.kind)),
                "gated_events": gated[t.filename],
                "labels": t.labels(),
            }
            for t in tubes
        ],
    }


def _missing(panel: str, measured: list[str]) -> list[str]:
    rules = PANEL_RULES.get(panel)
    if rules is None:
        return []
    have = {p for e in measured for p in e.split("/")}
    out = [m for m in rules["positive"] if m not in have]
    out += [" or ".join(g) for g in rules["negative"] if not any(m in have for m in g)]
    return out


def _joint(panel: str, stained: list[SimulatedTube]) -> float | None:
    """% of intact live single cells positive for every positive and negative for every negative
    marker at once, when one stained tube holds the whole panel."""
    rules = PANEL_RULES.get(panel)
    if rules is None:
        return None
    for t in stained:
        have = [m for m in t.stains.values() if m != "viability"]
        singles = {p for e in have for p in e.split("/")}
        if all(m in singles for m in rules["positive"]) and all(
            any(m in singles for m in g) for g in rules["negative"]
        ):
            g = t.gated()
            ok = g.copy()
            for e in have:
                expect, _ = _expectation(panel, e)
                pos = np.zeros(len(g), dtype=bool)
                for mk in e.split("/"):
                    pos |= t.positive[mk]
                if expect == "positive":
                    ok &= pos
                elif expect == "negative":
                    ok &= ~pos
            return round(100.0 * ok.sum() / g.sum(), 6) if g.sum() else None
    return None


# ---- presets ----


def _dim(marker: str, frac: float, level: float) -> dict[str, tuple[float, float]]:
    return {marker: (frac, level)}


def _example() -> list[CultureDesign]:
    """Small cultures for example_fcs/: one per outcome the README shows."""
    return [
        CultureDesign(
            "MSC-01_pass",
            style="diva",
            layout="isct-8c",
            viability="DAPI",
            dead=0.03,
            controls=("unstained", "isotype", "fmo:CD105"),
            tissue="bone marrow",
            passage=3,
            detachment="TrypLE",
            seed_offset=1,
            n_events=8000,
        ),
        CultureDesign(
            "MSC-02_pass_heterogeneous",
            style="accuri",
            layout="isct-4c",
            populations=[
                PopulationDesign(0.65),
                PopulationDesign(
                    0.35,
                    size=0.75,
                    granularity=0.8,
                    markers={"CD105": (0.99, 4500.0), "CD90": (0.995, 15000.0)},
                ),
            ],
            controls=("isotype",),
            tissue="adipose",
            passage=4,
            detachment="TrypLE",
            seed_offset=2,
            n_events=8000,
        ),
        CultureDesign(
            "MSC-03_fail_CD105",
            style="macsquant",
            layout="kit",
            panel=KIT_PANEL,
            populations=[PopulationDesign(markers={"CD105": (0.86, 9000.0)})],
            controls=("isotype",),
            tissue="umbilical cord",
            passage=5,
            detachment="trypsin",
            seed_offset=3,
            n_events=8000,
        ),
        CultureDesign(
            "MSC-04_fail_contaminated",
            style="generic",
            layout="isct-4c",
            contaminants=0.03,
            controls=("unstained", "isotype"),
            anomaly=Anomaly(),
            tissue="bone marrow",
            passage=1,
            detachment="TrypLE",
            seed_offset=4,
            n_events=8000,
        ),
    ]


def _validation() -> list[CultureDesign]:
    """24+ cultures spanning instrument styles, outcomes and control types (issue 3)."""
    d: list[CultureDesign] = []

    def add(name: str, **kw) -> None:
        kw.setdefault("n_events", 12000)
        d.append(CultureDesign(f"V{len(d) + 1:02d}_{name}", seed_offset=100 + len(d), **kw))

    het2 = [
        PopulationDesign(0.7),
        PopulationDesign(0.3, size=0.75, markers={"CD105": (0.99, 5000.0)}),
    ]
    het3 = [
        PopulationDesign(0.5),
        PopulationDesign(0.3, markers={"CD90": (0.995, 12000.0)}),
        PopulationDesign(0.2, size=0.7, granularity=1.4),
    ]
    # passes, every style
    add("diva_pass", style="diva", layout="isct-8c", viability="DAPI", dead=0.02)
    add("accuri_pass", style="accuri", layout="isct-4c")
    add("macsquant_pass", style="macsquant", layout="isct-8c", viability="DAPI", dead=0.02)
    add("generic_pass", style="generic", layout="isct-4c")
    add("diva_int30_pass", style="diva", layout="isct-4c", version="3.0", datatype="I")
    add("kit_pass", style="diva", layout="kit", panel=KIT_PANEL)
    add("kit_accuri_pass", style="accuri", layout="kit", panel=KIT_PANEL)
    # control types
    add("no_control_pass", style="diva", layout="isct-8c", controls=())
    add("unstained_only_pass", style="accuri", layout="isct-4c", controls=("unstained",))
    add("fmo_pass", style="diva", layout="isct-8c", controls=("fmo:CD73", "fmo:CD90", "fmo:CD105"))
    add(
        "fmo_isotype_fail_CD73",
        style="macsquant",
        layout="isct-8c",
        populations=[PopulationDesign(markers={"CD73": (0.88, 20000.0)})],
        controls=("isotype", "fmo:CD73"),
    )
    # hard event mixes
    add("low_events", style="diva", layout="isct-8c", n_events=1300, debris=0.3)
    add("debris30_pass", style="accuri", layout="isct-4c", debris=0.30)
    add("doublets15_pass", style="diva", layout="isct-8c", doublets=0.15)
    add("dead10_pass", style="diva", layout="isct-8c", viability="DAPI", dead=0.10)
    add(
        "dead10_macsquant_pass",
        style="macsquant",
        layout="isct-8c",
        viability="DAPI",
        dead=0.10,
        debris=0.15,
    )
    add("anomaly_pass", style="diva", layout="isct-8c", anomaly=Anomaly())
    add(
        "bubble_pass",
        style="accuri",
        layout="isct-4c",
        anomaly=Anomaly(start=0.3, duration=0.08, rate_factor=1.0, shift=0.5),
    )
    # outcomes
    add("contaminated_fail", style="diva", layout="isct-8c", contaminants=0.03)
    add(
        "contaminated_kit_fail", style="macsquant", layout="kit", panel=KIT_PANEL, contaminants=0.06
    )
    add("contaminated_accuri_fail", style="accuri", layout="isct-4c", contaminants=0.08)
    add(
        "fail_CD105",
        style="generic",
        layout="isct-4c",
        populations=[PopulationDesign(markers={"CD105": (0.85, 12000.0)})],
    )
    add(
        "fail_CD90",
        style="diva",
        layout="isct-8c",
        populations=[PopulationDesign(markers={"CD90": (0.80, 50000.0)})],
    )
    add(
        "fail_HLA-DR",
        style="accuri",
        layout="isct-4c",
        populations=[PopulationDesign(markers={"HLA-DR": (0.08, 9000.0)})],
    )
    add(
        "dim_CD105_pass",
        style="diva",
        layout="isct-8c",
        populations=[PopulationDesign(markers={"CD105": (0.995, 3000.0)})],
    )
    # heterogeneity
    add("two_populations_pass", style="diva", layout="isct-8c", populations=het2)
    add("three_populations_pass", style="macsquant", layout="isct-8c", populations=het3)
    add("two_populations_accuri_pass", style="accuri", layout="isct-4c", populations=het2)
    return d


def _apart(level: float, sd: float) -> float:
    """A positive level ``sd`` log-normal SDs below ``level`` (the populations' separation)."""
    return level * float(np.exp(-sd * POSITIVE_SIGMA))


def _heterogeneity() -> list[CultureDesign]:
    """40 passing cultures for the clustering: homogeneous (one with 15 % doublets); 2 and 3
    populations in proportions down to 5 %; separations of 5 SD, 3 SD down to 1.5 SD in one
    marker; size only; a kit layout with three populations.
    Each truth entry's ``tags`` give the kind, the minor fraction and the separation in SD."""
    d: list[CultureDesign] = []

    def add(name: str, pops: list[PopulationDesign], design: dict | None = None, **tags) -> None:
        style = ("diva", "macsquant")[len(d) % 2]
        fields = {
            "style": style,
            "layout": "isct-8c",
            "controls": ("isotype",),
            "n_events": 10000,
            **(design or {}),
        }
        d.append(
            CultureDesign(
                f"H{len(d) + 1:02d}_{name}",
                populations=pops,
                seed_offset=500 + len(d),
                tags=tags,
                **fields,
            )
        )

    base = {m: MSC_MARKERS[m][1] for m in ("CD73", "CD90", "CD105")}
    for i in range(8):
        add(f"homogeneous_{i + 1}", [PopulationDesign()], kind="homogeneous")
    for marker in ("CD105", "CD90"):
        for frac in (0.5, 0.2, 0.05):
            for sd in (3.0, 2.0, 1.5):
                if marker == "CD90" and sd == 1.5:
                    continue
                pop2 = PopulationDesign(frac, markers={marker: (0.998, _apart(base[marker], sd))})
                add(
                    f"two_{marker}_{int(frac * 100)}pct_{sd:g}sd",
                    [PopulationDesign(1 - frac), pop2],
                    kind="two",
                    marker=marker,
                    minor=frac,
                    separation_sd=sd,
                )
    for fr in ((0.6, 0.3, 0.1), (0.8, 0.15, 0.05)):
        for sd in (3.0, 2.0):
            pops = [
                PopulationDesign(fr[0]),
                PopulationDesign(fr[1], markers={"CD105": (0.995, _apart(base["CD105"], sd))}),
                PopulationDesign(fr[2], markers={"CD73": (0.998, _apart(base["CD73"], sd))}),
            ]
            add(
                f"three_{int(fr[2] * 100)}pct_{sd:g}sd",
                pops,
                kind="three",
                minor=fr[2],
                separation_sd=sd,
            )
    for frac in (0.3, 0.1):
        for sd in (3.0, 2.0):
            size = float(np.exp(-sd * 0.18))  # FSC spread of one population: 0.18 (log)
            add(
                f"size_only_{int(frac * 100)}pct_{sd:g}sd",
                [PopulationDesign(1 - frac), PopulationDesign(frac, size=size)],
                kind="size",
                minor=frac,
                separation_sd=sd,
            )
    # Well apart (5 SD): the only separations where any partition can reach ARI >= 0.9 (two
    # populations 3 SD apart overlap by ~7 % each way). Appended, so the cultures above keep
    # their seeds.
    for marker in ("CD105", "CD90"):
        for frac in (0.5, 0.2, 0.05):
            pop2 = PopulationDesign(frac, markers={marker: (0.998, _apart(base[marker], 5.0))})
            add(
                f"two_{marker}_{int(frac * 100)}pct_5sd",
                [PopulationDesign(1 - frac), pop2],
                kind="two",
                marker=marker,
                minor=frac,
                separation_sd=5.0,
            )
    pops = [
        PopulationDesign(0.6),
        PopulationDesign(0.3, markers={"CD105": (0.995, _apart(base["CD105"], 5.0))}),
        PopulationDesign(0.1, markers={"CD73": (0.998, _apart(base["CD73"], 5.0))}),
    ]
    add("three_10pct_5sd", pops, kind="three", minor=0.1, separation_sd=5.0)
    # One population among 15 % doublets (the singlets gate leaves some): still one population.
    add(
        "homogeneous_doublets15",
        [PopulationDesign()],
        design={"doublets": 0.15},
        kind="homogeneous",
    )
    # A kit layout (positive markers in both tubes, CD44 in one, the PE negative cocktail in the
    # other): the three populations must be found on the markers, whichever tube carries them.
    pops = [
        PopulationDesign(0.6),
        PopulationDesign(0.25, markers={"CD90": (0.998, _apart(base["CD90"], 4.0))}),
        PopulationDesign(0.15, markers={"CD73": (0.998, _apart(base["CD73"], 4.0))}),
    ]
    add(
        "kit_three_15pct_4sd",
        pops,
        design={"layout": "kit", "panel": KIT_PANEL},
        kind="three",
        minor=0.15,
        separation_sd=4.0,
    )
    return d


# ---- the history preset (issue 16): lots of two donors over passages, with a known drift ----
# One lot per donor and passage (passages 1-8 of donors D01 and D02), made a fortnight apart in
# the order L01 = D01 P1, L02 = D02 P1, L03 = D01 P2, ... L16 = D02 P8. After passage 5, CD105
# falls HISTORY_DRIFT points a passage (lots of passages 6-8 are the drifted ones; every one still
# passes the ISCT 95 % limit, which is what a trend is for), and from passage 5 a CD90-dim
# population (3 SD dimmer, still CD90 positive) grows by 6 % of the cells a passage.
#
# Every marker also varies from lot to lot, by a set amount per lot rather than a drawn one:
# HISTORY_LOT_EFFECT (in -1..1, chart order) times HISTORY_LOT_POINTS (percentage points; the
# sign is reversed for negative markers). Drawn Gaussian lot effects would make the Westgard rules
# raise false alarms at their own rate (about 1 % of lot-markers with limits from 10 lots), and
# the test that the charts flag exactly the drifted lots would fail for about 60 % of seeds
# (benchmarks/trend_rules.py). The set sequence spreads evenly over -1..1 in the reference
# window (the first 10 lots) and averages 0 there and after it, stays within +-0.7 after it,
# keeps any two neighbours within 1.35 of 0 together (|u| + |u'|) and has no more than two of
# one sign in a row (no 10-x). Its amplitude is about 5 times each marker's measurement noise at
# 20,000 events (CD105: 2 times, so that its 1-point drift stands about 12 SD out). So an
# undrifted lot reaches 3 SD only if noise alone moves it by more than 5 of its own SD, and two
# neighbours reach 2 SD together (2-2s, R-4s) only if noise moves one by more than 3 and the
# other by more than 4; benchmarks/trend_rules.py found no false or missed flag in 20,000
# Monte Carlo repeats of the design.
HISTORY_DONORS = ("D01", "D02")
HISTORY_PASSAGES = tuple(range(1, 9))
HISTORY_REFERENCE = 10  # lots in the reference window (trend's default)
HISTORY_DRIFT_MARKER = "CD105"
HISTORY_DRIFT_AFTER = 5  # passages after this one drift
HISTORY_DRIFT = 1.0  # points of % positive lost per passage after HISTORY_DRIFT_AFTER
HISTORY_DIM_FROM = 5  # first passage with the CD90-dim population
HISTORY_DIM_STEP = 0.06  # its fraction of the cells grows by this per passage
HISTORY_DIM_LEVEL = 60000.0 * float(np.exp(-3.0 * POSITIVE_SIGMA))  # CD90 3 SD dimmer
HISTORY_LOT_EFFECT = (
    1.0,
    -0.33,
    0.56,
    -0.11,
    -1.0,
    0.11,
    0.78,
    -0.56,
    0.33,
    -0.78,
    -0.4,
    0.1,
    -0.7,
    0.4,
    0.7,
    -0.1,
)
HISTORY_LOT_POINTS = {
    "CD73": 0.3,
    "CD90": 0.4,
    "CD105": 0.15,
    "CD45": 0.35,
    "CD34": 0.6,
    "CD14": 0.4,
    "CD19": 0.55,
    "HLA-DR": 0.55,
}
HISTORY_POSITIVE = 0.995  # fraction positive of CD73, CD90 and CD105 before lot effects
HISTORY_EVENTS = 20000
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def _history_lots() -> list[dict]:
    """Lot, donor, passage, date, lot effect, drift and dim fraction of every history lot."""
    import datetime

    start = datetime.date(2025, 1, 6)
    lots = []
    for i, (passage, donor) in enumerate((p, d) for p in HISTORY_PASSAGES for d in HISTORY_DONORS):
        day = start + datetime.timedelta(days=14 * i)
        lots.append(
            {
                "lot": f"L{i + 1:02d}",
                "donor": donor,
                "passage": passage,
                "date": f"{day.day:02d}-{_MONTHS[day.month - 1]}-{day.year}",
                "lot_effect": HISTORY_LOT_EFFECT[i],
                "drift_points": HISTORY_DRIFT * max(0, passage - HISTORY_DRIFT_AFTER),
                "cd90_dim_fraction": round(
                    HISTORY_DIM_STEP * max(0, passage - HISTORY_DIM_FROM + 1), 6
                ),
            }
        )
    return lots


def _history() -> list[CultureDesign]:
    """16 lots of two donors over passages 1-8 with a known CD105 drift and a growing CD90-dim
    population (see the comment above HISTORY_DONORS)."""
    d: list[CultureDesign] = []
    for i, lot in enumerate(_history_lots()):
        u = lot["lot_effect"]
        markers: dict[str, tuple[float, float]] = {}
        for m, points in HISTORY_LOT_POINTS.items():
            level = MSC_MARKERS[m][1]
            if m in ("CD73", "CD90", "CD105"):
                frac = HISTORY_POSITIVE + points * u / 100
                if m == HISTORY_DRIFT_MARKER:
                    frac -= lot["drift_points"] / 100
            else:  # a negative marker's positive fraction: its lot effect above a floor
                frac = (points + 0.05 - points * u) / 100
            markers[m] = (round(frac, 6), level)
        dim = lot["cd90_dim_fraction"]
        pops = [PopulationDesign(1.0 - dim, markers=dict(markers))]
        if dim > 0:
            pops.append(
                PopulationDesign(
                    dim, markers={**markers, "CD90": (markers["CD90"][0], HISTORY_DIM_LEVEL)}
                )
            )
        name = f"{lot['lot']}_{lot['donor']}_P{lot['passage']}"
        d.append(
            CultureDesign(
                name,
                style="diva",
                layout="isct-8c",
                n_events=HISTORY_EVENTS,
                populations=pops,
                controls=("isotype",),
                seed_offset=700 + i,
                date=lot["date"],
                tissue="bone marrow",
                passage=lot["passage"],
                detachment="TrypLE",
                donor=lot["donor"],
                lot=lot["lot"],
                tags={k: v for k, v in lot.items() if k != "date"},
            )
        )
    return d


def _history_truth(cultures: list[dict]) -> dict:
    """What trend must find in the history preset: the drifted lots, per judged marker."""
    lots = _history_lots()
    drifted = [x["lot"] for x in lots if x["drift_points"] > 0]
    judged = sorted(
        {
            m
            for c in cultures
            for m, r in c["markers"].items()
            if r["expect"] in ("positive", "negative")
        }
    )
    return {
        "order": "lots by acquisition date, L01 first",
        "reference_lots": [x["lot"] for x in lots[:HISTORY_REFERENCE]],
        "drift": {
            "marker": HISTORY_DRIFT_MARKER,
            "after_passage": HISTORY_DRIFT_AFTER,
            "points_per_passage": HISTORY_DRIFT,
        },
        "drifted_lots": {HISTORY_DRIFT_MARKER: drifted},
        "expected_flags": {m: (drifted if m == HISTORY_DRIFT_MARKER else []) for m in judged},
        "lot_effect_points": dict(HISTORY_LOT_POINTS),
        "cd90_dim": {
            "from_passage": HISTORY_DIM_FROM,
            "step": HISTORY_DIM_STEP,
            "level": round(HISTORY_DIM_LEVEL, 3),
            "fraction": {x["lot"]: x["cd90_dim_fraction"] for x in lots},
        },
        "lots": lots,
    }


COMPENSATION_CULTURE = CultureDesign(
    "MSC-comp",
    style="accuri",
    layout="isct-4c",
    controls=("isotype",),
    seed_offset=900,
    n_events=10000,
)
PRESETS = {
    "example": _example,
    "validation": _validation,
    "heterogeneity": _heterogeneity,
    "history": _history,
}


def preset(name: str) -> list[CultureDesign]:
    """The culture designs of a named preset: "example", "validation", "heterogeneity" or
    "history"."""
    return _designs(name)


def _designs(name: str) -> list[CultureDesign]:
    if name not in PRESETS:
        raise CytomscError(
            f"unknown preset {name!r} (choose from {', '.join([*PRESETS, 'compensation'])})"
        )
    return PRESETS[name]()


def write_preset(out: str | Path, preset: str = "example", seed: int = 0) -> list[Path]:
    """Simulate a preset: one folder of FCS files per culture under ``out``, plus
    ``out/truth.json``. The same preset and seed give the same bytes. Returns the files
    written (the FCS files, then truth.json)."""
    out = Path(out)
    if preset == "compensation":  # one culture without $SPILLOVER and its single-stain controls
        write_compensation_set(out, COMPENSATION_CULTURE, seed)
        folders = (out / COMPENSATION_CULTURE.name, out / "controls")
        return [
            *(p for f in folders for p in sorted(f.glob("*.fcs"))),
            out / "manifest.csv",
            out / "truth.json",
        ]
    designs = _designs(preset)
    cultures = []
    written = []
    for design in designs:
        tubes = simulate_culture(design, seed)
        folder = out / design.name
        for t in tubes:
            written.append(t.write(folder))
        cultures.append(truth_of(design, tubes))
    doc = {
        "format": "cytomsc.truth/1",
        "preset": preset,
        "seed": seed,
        "label_encoding": LABEL_ENCODING,
        "cultures": cultures,
    }
    if preset == "history":  # what trend must flag, beside the per-culture truth
        doc["history"] = _history_truth(cultures)
    text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
    _atomic_write(out / "truth.json", text.encode("utf-8"))
    return [*written, out / "truth.json"]


__all__ = [
    "KIND_CELL",
    "KIND_DEBRIS",
    "KIND_DOUBLET",
    "KIND_DEAD",
    "KIND_CONTAMINANT",
    "KIND_ANOMALY",
    "KIND_SATURATED",
    "KIND_NAMES",
    "GATED_KINDS",
    "LABEL_CHARS",
    "Anomaly",
    "CultureDesign",
    "PopulationDesign",
    "SimulatedTube",
    "simulate_culture",
    "truth_of",
    "preset",
    "write_preset",
    "simulate_single_stains",
    "write_compensation_set",
]
