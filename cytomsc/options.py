"""The analysis parameters of a batch, and the per-culture seed derived from them.

``Options`` is what a user sets (the CLI's options, ``cytomsc.analyze``'s keywords); everything in
``as_parameters`` changes results and goes to ``summary.json`` and the PDF audit page. How the
work is spread (``jobs``, a Dask client) and ``debug`` must not change results and are left out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = ["Cluster", "CompSource", "Options", "Spillover", "culture_seed"]

Cluster = Literal["pass", "all", "none"]  # which cultures are clustered for heterogeneity
Spillover = tuple[list[str], np.ndarray]  # detector names, spillover matrix (rows: from)


@dataclass
class Options:
    """Every analysis parameter; all of them go to summary.json and the PDF audit page."""

    panel: str = "isct-2006"
    comp: str | None = None  # None: the file's spillover; "none": off; else a CSV path
    control_percentile: float = 99.5
    seed: int = 0
    jobs: int = 1
    cluster: Cluster = "pass"
    export_events: bool = False
    pdf: bool = True
    data_set: int = 0
    channel_map: dict[str, str] = field(default_factory=dict)
    manifest: str | None = None
    gates: str | None = None  # the lab's gates: a FlowJo 10 workspace or GatingML (workspace.py)
    gate_path: str | None = None  # the analysed population in it (default: deepest common chain)
    comp_label: str | None = None  # what ``comp`` is when cytomsc wrote it (single-stain controls)
    comp_notes: tuple[str, ...] = ()  # warnings about that matrix, repeated in every culture
    debug: bool = False
    # release metadata for every culture without its own (manifest column, else $OP / $COM)
    operator: str = ""
    comment: str = ""

    def as_parameters(self) -> dict[str, Any]:
        """The parameters that change results (not jobs or debug: they must not)."""
        return {
            "panel": self.panel,
            "comp": self.comp_label or self.comp or "file",
            "control_percentile": self.control_percentile,
            "seed": self.seed,
            "cluster": self.cluster,
            "data_set": self.data_set,
            "channel_map": dict(sorted(self.channel_map.items())),
            "manifest": self.manifest,
            "gates": self.gates,
            "gate_path": self.gate_path,
        }


@dataclass(frozen=True)
class CompSource:
    """The compensation every culture of a batch gets, settled once before any culture runs.

    ``option`` is ``--comp`` as the audit names it: None for each file's own spillover,
    ``"none"``, or a CSV's path (``compensation.csv`` for the single-stain controls' matrix).
    ``matrix`` is that CSV's matrix, read once here, so that a worker (another process, another
    machine) needs no file but its FCS files.
    """

    option: str | None = None
    matrix: Spillover | None = None

    @classmethod
    def from_option(cls, comp: str | None) -> CompSource:
        """``--comp`` as given: None/"file", "none", or a CSV path (read and checked here:
        ``CytomscError`` naming the file when it is malformed)."""
        if comp is None or comp.lower() == "file":
            return cls(None)
        if comp.lower() == "none":
            return cls("none")
        from .preprocess import _read_comp_csv

        return cls(comp, _read_comp_csv(Path(comp)))

    @property
    def for_prepare(self) -> str | Spillover | None:
        """What ``preprocess.prepare`` takes: the matrix when there is one, else the option."""
        return self.matrix if self.matrix is not None else self.option


def culture_seed(seed: int, culture: str) -> int:
    """A per-culture seed that depends only on the run seed and the culture's name."""
    digest = hashlib.sha256(f"{seed}:{culture}".encode()).digest()
    return int.from_bytes(digest[:4], "little")
