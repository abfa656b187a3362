"""How long writing one culture's PDF takes, and how large it is (target: <= 1 s, <= 1.5 MB).

A culture of 3 tubes of 50,000 events each (8 ISCT markers, 2 populations clustered), built with
the simulator's result builder (``cytomsc.simulate.reports``); the histograms are precomputed
by the analysis, so the event count matters little. Prints wall and CPU time (median of several
runs) and the file size; also the overview for 25 cultures with the joint clustering's
populations table.

Figures on the 2-core shared machine (load ~3), CPU median of 5: 1.78 s before the text layer
and core fonts, 0.56 s after (wall 2.55 s -> 0.64 s); 0.19 MB. With one embedded TrueType font
(DejaVu Sans, pdf.fonttype 42; issue 11) at load 5: 1.74 s against 1.04 s for the core-font code
in the same conditions, 0.22 MB; about 0.35 s of it is fontTools subsetting the regular and bold
faces, the rest the TrueType text layout of each line.

    python benchmarks/bench_report.py [--runs 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from cytomsc.report import write_culture_pdf, write_overview
from cytomsc.simulate.reports import JOINT, RUN_INFO, build_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    batch = build_batch(n=50_000)
    culture = next(c for c in batch.cultures if c.culture == "BM-077")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "culture.pdf"
        t0 = time.perf_counter()
        write_culture_pdf(culture, batch, path, RUN_INFO)  # first run: imports, font cache
        first = time.perf_counter() - t0
        wall, cpu = [], []
        for _ in range(args.runs):
            t0, c0 = time.perf_counter(), time.process_time()
            write_culture_pdf(culture, batch, path, RUN_INFO)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        size = path.stat().st_size
        from pypdf import PdfReader

        pages = len(PdfReader(path).pages)
        print(
            f"culture PDF (3 tubes x 50,000 events, {pages} pages): "
            f"first {first:.2f} s, then median wall {statistics.median(wall):.2f} s, "
            f"CPU {statistics.median(cpu):.2f} s; size {size / 1e6:.2f} MB"
        )
        batch.cultures = [
            dataclasses.replace(c, culture=f"{c.culture}-{k}")
            for k in range(4)
            for c in batch.cultures
        ][:25]
        # the joint clustering's table for every culture (3 populations)
        rows = list(JOINT.table.values())
        batch.batch_populations = dataclasses.replace(
            JOINT,
            table={c.culture: rows[i % 3] for i, c in enumerate(batch.cultures)},
            events={c.culture: 20_000 for c in batch.cultures},
        )
        over = Path(tmp) / "overview.pdf"
        t0 = time.perf_counter()
        write_overview(batch, over, RUN_INFO)
        print(
            f"overview PDF (25 cultures): {time.perf_counter() - t0:.2f} s; "
            f"size {over.stat().st_size / 1e6:.2f} MB"
        )


if __name__ == "__main__":
    main()
