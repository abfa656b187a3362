"""Writing an analysed batch's files: each culture's gates.xml, exported events and PDF, then the
batch's summary.json, summary.csv, cultures.csv, compensation.csv and overview.pdf.

Nothing here analyses: it writes the values the analysis returned (``culture.CultureAnalysis``,
``results.BatchResult``) into an ``output.OutputDir`` (the staging folder of a run) or a
``output.MemoryDir`` (a worker on another machine, whose files the batch then writes). Every file
is written atomically (``output.atomic_file``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from . import __version__
from .results import (
    CSV_COLUMNS,
    GATE_ORDER,
    BatchResult,
    CultureResult,
    csv_rows,
    csv_text,
    culture_rows,
    to_json,
)

if TYPE_CHECKING:  # pragma: no cover
    from contextlib import AbstractContextManager

    from .fcs import FcsData
    from .gating import GatingOutcome
    from .preprocess import Prepared

__all__ = ["CultureFiles", "Sink", "TubeFiles", "write_batch_files", "write_culture_files"]

# matplotlib's pyplot state is per process: a Dask worker running several threads must not draw
# two PDFs at once
_DRAWING = threading.Lock()


class Sink(Protocol):
    """Where files are written: ``output.OutputDir`` or ``output.MemoryDir``."""

    hashes: dict[str, str]

    def atomic(self, *parts: str) -> AbstractContextManager[Path]: ...

    def write_text(self, text: str, *parts: str) -> None: ...


@dataclass
class TubeFiles:
    """What writing one tube's files needs: its gates and scales (gates.xml); with
    ``--export-events``, the file the export re-reads and its population ids."""

    name: str
    gating: GatingOutcome
    scales: Prepared  # compensation and Logicle scales; no events
    source: FcsData | None = None  # --export-events only
    population: np.ndarray | None = None  # the clustered stained tube, --export-events only


@dataclass
class CultureFiles:
    """What writing one culture's files needs beside its ``CultureResult``."""

    tubes: list[TubeFiles] = field(default_factory=list)  # input order: gates.xml's t1, t2...
    gates_file: str | None = None  # --gates: the lab's file holds the gates, none is written
    export_events: bool = False


def write_culture_files(
    out: Sink,
    result: CultureResult,
    files: CultureFiles,
    header: BatchResult | None,
    run_info: dict[str, Any],
    pdf: bool,
) -> None:
    """gates.xml, the exported events, then the culture's PDF (whose audit page lists the
    SHA-256 of the files written before it), under the culture's output name. ``header``: the
    batch's panel and parameters, for the PDF (None: no PDF)."""
    folder = result.output_name
    before = set(out.hashes)
    if any(t.gating.specs for t in files.tubes):
        from .gating import gating_strategy, write_gatingml

        strategy = gating_strategy({t.name: (t.scales, t.gating) for t in files.tubes})
        with out.atomic(folder, "gates.xml") as tmp:
            write_gatingml(strategy, tmp)
    if files.export_events:
        hashes = {f.path: f.sha256 for f in result.files}
        for t in files.tubes:
            if t.source is not None:
                _export_events(out, folder, t, hashes.get(str(t.source.path)))
    if pdf and header is not None:
        from .report.pdf import write_culture_pdf

        # for the PDF's audit page: what this culture wrote before it
        written = {rel: out.hashes[rel] for rel in sorted(set(out.hashes) - before)}
        with _DRAWING, out.atomic(f"{folder}.pdf") as tmp:
            write_culture_pdf(replace(result, outputs=written), header, tmp, run_info)


def _export_events(out: Sink, folder: str, tube: TubeFiles, sha256: str | None) -> None:
    """The tube's original channels as stored, plus one 0/1 channel per gate (and the population
    id); see ``export.py`` for what survives the round trip."""
    from .export import AddedChannel, export_events

    assert tube.source is not None
    added = [
        AddedChannel(f"cytomsc_{gate}", tube.gating.masks[gate].astype(np.uint8))
        for gate in GATE_ORDER
        if gate in tube.gating.masks and gate not in tube.gating.skipped
    ]
    if tube.population is not None:
        added.append(AddedChannel("cytomsc_population", tube.population.astype(np.int64)))
    name = tube.name  # unique within the culture (culture.read_tubes)
    if not name.lower().endswith(".fcs"):
        name += ".fcs"
    own = {"CYTOMSC_VERSION": __version__, "CYTOMSC_SOURCE": Path(tube.source.path).name}
    if sha256:
        own["CYTOMSC_SOURCE_SHA256"] = sha256
    with out.atomic(folder, "events", name) as tmp:
        export_events(tmp, tube.source, added, own)


def write_batch_files(out: Sink, batch: BatchResult, pdf: bool) -> None:
    """summary.json, summary.csv, cultures.csv, compensation.csv (single-stain controls) and
    the overview PDF."""
    if batch.compensation is not None:
        from .spillover import write_comp_csv

        write_comp_csv(out, batch.compensation)
    out.write_text(to_json(batch), "summary.json")
    out.write_text(csv_text(CSV_COLUMNS, csv_rows(batch)), "summary.csv")
    out.write_text(
        csv_text(*culture_rows(batch, str(batch.run_info.get("started", "")))), "cultures.csv"
    )
    if pdf:
        from .report.overview import write_overview

        with _DRAWING, out.atomic("overview.pdf") as tmp:
            write_overview(batch, tmp, batch.run_info)
