"""Simulated data with known truth: the one simulator that the tests, the benchmarks and
``cytomsc simulate`` share.

- ``cultures``: whole cultures written as FCS exports of real instrument styles, with per-event
  ground truth (``truth.json``) and the presets of ``cytomsc simulate``;
- ``populations``: event matrices of populations with controlled shape (heavy tails, skew, their
  own correlation), as the clustering sees them: the heterogeneity stress grid;
- ``scoring``: a pipeline run scored against a preset's truth (population counts, ARI and the
  QDA ceiling), for the heterogeneity validation;
- ``identifiability``: what any clustering can tell apart (the ARI ceiling, shape against count);
- ``reports``: result values with set numbers, for the report's tests and benchmarks.

Only ``cultures`` is imported here (its names are re-exported); the others are imported by name.
"""

from .cultures import (
    GATED_KINDS,
    HISTORY_DRIFT,
    HISTORY_DRIFT_AFTER,
    HISTORY_DRIFT_MARKER,
    HISTORY_LOT_EFFECT,
    HISTORY_LOT_POINTS,
    HISTORY_REFERENCE,
    KIND_ANOMALY,
    KIND_CELL,
    KIND_CONTAMINANT,
    KIND_DEAD,
    KIND_DEBRIS,
    KIND_DOUBLET,
    KIND_NAMES,
    KIND_SATURATED,
    LABEL_CHARS,
    Anomaly,
    CultureDesign,
    PopulationDesign,
    SimulatedTube,
    preset,
    simulate_culture,
    simulate_single_stains,
    truth_of,
    write_compensation_set,
    write_preset,
)

__all__ = [
    "GATED_KINDS",
    "HISTORY_DRIFT",
    "HISTORY_DRIFT_AFTER",
    "HISTORY_DRIFT_MARKER",
    "HISTORY_LOT_EFFECT",
    "HISTORY_LOT_POINTS",
    "HISTORY_REFERENCE",
    "KIND_ANOMALY",
    "KIND_CELL",
    "KIND_CONTAMINANT",
    "KIND_DEAD",
    "KIND_DEBRIS",
    "KIND_DOUBLET",
    "KIND_NAMES",
    "KIND_SATURATED",
    "LABEL_CHARS",
    "Anomaly",
    "CultureDesign",
    "PopulationDesign",
    "SimulatedTube",
    "preset",
    "simulate_culture",
    "simulate_single_stains",
    "truth_of",
    "write_compensation_set",
    "write_preset",
]
