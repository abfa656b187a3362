"""The whole pipeline's speed and memory (issue 6), stage by stage, next to FlowKit alone.

Prints figures; it is not a test (timings on a shared 2-core machine are not pass/fail material).

Default part, for a simulated BD Diva 8-colour culture (stained + isotype tube, 14 channels:
FSC-A/H, SSC-A/H, 8 markers, DAPI, Time) of 10k, 100k and 1M events per tube:
- events/s of each stage as the real pipeline runs it (``run_batch`` with timing wrappers around
  the stage functions it calls): read, compensate+transform, gates, % positive, clustering, PDF;
- the same files through FlowKit alone: ``Sample`` read, ``apply_compensation`` and a Logicle
  ``apply_transform`` with the same per-channel parameters, and the ratio
  FlowKit / cytomsc for read + compensate + transform (target >= 5x);
- the largest absolute difference between our Logicle values and FlowKit's (target <= 1e-4);
- ``cytomsc --help`` wall time in a fresh process (target <= 0.5 s).
``--batch``: 96 cultures x 3 tubes x 20,000 events, PDFs included, ``--jobs 2`` (target <= 90 s).
``--big``: one 5,000,000-event tube analysed in a child process; its peak RSS (target <= 2.5 GB).
``--quick``: 10k and 100k only.

Run: ``python benchmarks/bench_pipeline.py [--quick] [--batch] [--big]``.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from cytomsc import clustering, culture, gating, pipeline, preprocess
from cytomsc import fcs as fcs_mod
from cytomsc.report import pdf as pdf_mod
from cytomsc.simulate import CultureDesign, simulate_culture

SEED = 0


def diva_culture(
    n: int, name: str = "bench", offset: int = 1, controls: tuple[str, ...] = ("isotype",)
) -> CultureDesign:
    """The 8-colour Diva culture every figure is measured on (DAPI makes it 14 channels)."""
    return CultureDesign(
        name,
        style="diva",
        layout="isct-8c",
        viability="DAPI",
        dead=0.03,
        n_events=n,
        controls=controls,
        seed_offset=offset,
    )


# ---------------------------------------------------------------------------------------------
# Stage timing inside the real pipeline


class StageClock:
    """Wraps the functions the pipeline calls for each stage and adds up their time and events.

    The pipeline imports its stage functions at call time (``from .fcs import read_fcs`` inside
    the function), so replacing the module attributes is enough to time the real run."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.events: dict[str, int] = defaultdict(int)
        self._undo: list[tuple[object, str, object]] = []

    def wrap(self, module: object, attr: str, stage: str, count) -> None:
        original = getattr(module, attr)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            result = original(*args, **kwargs)
            self.seconds[stage] += time.perf_counter() - t0
            self.events[stage] += count(args, result)
            return result

        self._undo.append((module, attr, original))
        setattr(module, attr, timed)

    def restore(self) -> None:
        for module, attr, original in reversed(self._undo):
            setattr(module, attr, original)
        self._undo.clear()


STAGES = ("read", "compensate+transform", "gates", "% positive", "clustering", "PDF")


def time_pipeline(folder: Path, out: Path) -> tuple[StageClock, float]:
    """Run the pipeline on one culture folder with every stage timed; (clock, total seconds)."""
    clock = StageClock()
    stained_n = {}

    def n_read(args, result):
        return result.n_events

    def n_prep(args, result):
        return int(result.compensated.shape[0])

    def n_gate(args, result):
        return int(args[0].compensated.shape[0])

    def n_measure(args, result):
        stained_n["n"] = int(args[0].prep.compensated.shape[0])
        return stained_n["n"]

    def n_cluster(args, result):
        return int(args[0].prep.compensated.shape[0])

    def n_pdf(args, result):
        return stained_n.get("n", 0)

    clock.wrap(fcs_mod, "read_fcs", "read", n_read)
    clock.wrap(preprocess, "prepare", "compensate+transform", n_prep)
    clock.wrap(gating, "gate_tube", "gates", n_gate)
    clock.wrap(culture, "measure", "% positive", n_measure)
    clock.wrap(clustering, "cluster_culture", "clustering", n_cluster)
    clock.wrap(pdf_mod, "write_culture_pdf", "PDF", n_pdf)
    try:
        opts = pipeline.Options(jobs=1, pdf=True, cluster="all", seed=SEED)
        t0 = time.perf_counter()
        batch = pipeline.run_batch([folder], out, opts)
        total = time.perf_counter() - t0
    finally:
        clock.restore()
    if batch.errors:
        raise SystemExit(f"benchmark culture failed: {batch.errors}")
    # ``measure`` runs once per marker on the same tube: events/s is per tube pass, so divide
    n_markers = max(1, len(batch.cultures[0].markers))
    clock.events["% positive"] //= n_markers
    return clock, total


# ---------------------------------------------------------------------------------------------
# FlowKit alone on the same files


def flowkit_alone(
    path: Path, params: dict[str, preprocess.LogicleParams], spill: tuple[list[str], np.ndarray]
) -> tuple[float, float, float, np.ndarray]:
    """(read s, compensate s, logicle s, transformed events) with FlowKit's own methods; the
    file's spillover matrix (parsed once, outside the clock) as a FlowKit Matrix."""
    from flowkit import Matrix, Sample

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        sample = Sample(path)
        t1 = time.perf_counter()
        sample.apply_compensation(Matrix(spill[1], spill[0]))
        t2 = time.perf_counter()
        sample.apply_transform({ch: preprocess.flowkit_transform(p) for ch, p in params.items()})
        t3 = time.perf_counter()
        xform = sample.get_events(source="xform")
    return t1 - t0, t2 - t1, t3 - t2, xform


def _spill_of(path: Path) -> tuple[list[str], np.ndarray]:
    spill = fcs_mod.read_fcs(path).spillover
    if spill is None:
        raise SystemExit(f"{path}: no $SPILLOVER")
    return spill[0], spill[1]


def best_of(fn, repeats: int):
    """Shortest wall time of ``repeats`` calls, and the result of that fastest call."""
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        got = fn()
        took = time.perf_counter() - t0
        if took < best:
            best, result = took, got
    return best, result


def stage_table(sizes: list[int]) -> None:
    print(
        "Per-stage throughput of `cytomsc analyze` (one culture: stained + isotype tube, "
        "14 channels; --cluster all, PDF on; events/s per tube pass)"
    )
    header = f"{'events':>9} " + " ".join(f"{s:>21}" for s in STAGES) + f" {'total s':>8}"
    print(header)
    accuracy = []
    versus = []
    for i, n in enumerate([sizes[0], *sizes]):  # run 0 only warms up (imports, caches)
        work = Path(tempfile.mkdtemp(prefix="cytomsc-bench-"))
        try:
            folder = work / "in" / "bench"
            folder.mkdir(parents=True)
            paths = [t.write(folder) for t in simulate_culture(diva_culture(n), SEED)]
            clock, total = time_pipeline(folder, work / "out")
            if i == 0:
                continue
            cells = []
            for s in STAGES:
                sec, ev = clock.seconds.get(s, 0.0), clock.events.get(s, 0)
                cells.append(f"{ev / sec:>11.3g} ({sec:>6.2f}s)" if sec else f"{'-':>21}")
            print(f"{n:>9} " + " ".join(cells) + f" {total:>8.2f}")

            stained = next(p for p in paths if "Stained" in p.name)
            repeats = 3 if n <= 100_000 else 1
            t_ours, prep = best_of(
                lambda s=stained: preprocess.prepare(fcs_mod.read_fcs(s)), repeats
            )
            spill = _spill_of(stained)
            t_fk, (r, c, x, xform) = best_of(
                lambda s=stained, p=prep, m=spill: flowkit_alone(s, p.logicle, m), repeats
            )
            idx = [prep.channels.index(ch) for ch in prep.logicle]
            diff = float(np.max(np.abs(prep.display[:, idx] - xform[:, idx])))
            versus.append((n, t_ours, r, c, x, t_fk))
            accuracy.append((n, diff))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        "Read + compensate + Logicle of the stained tube: cytomsc vs FlowKit alone "
        "(best of 3 below 1M events)"
    )
    print(
        f"{'events':>9} {'cytomsc s':>10} {'ev/s':>10} {'FK read':>8} {'FK comp':>8} "
        f"{'FK logicle':>10} {'FK s':>7} {'ev/s':>10} {'ratio':>6}"
    )
    for n, ours, r, c, x, fk in versus:
        print(
            f"{n:>9} {ours:>10.3f} {n / ours:>10.3g} {r:>8.3f} {c:>8.3f} {x:>10.3f} "
            f"{fk:>7.3f} {n / fk:>10.3g} {fk / ours:>6.1f}x"
        )
    print()
    print(
        "Logicle accuracy, cytomsc vs FlowKit with the same per-channel parameters "
        "(transformed units, target <= 1e-4):"
    )
    for n, diff in accuracy:
        print(f"{n:>9} max |diff| = {diff:.2e}")


# ---------------------------------------------------------------------------------------------
# --help, --batch, --big


def help_time() -> None:
    """The installed console script when there is one (its startup is what users wait for)."""
    script = shutil.which("cytomsc")
    cmd = [script] if script else [sys.executable, "-c", "from cytomsc.cli import main; main()"]
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([*cmd, "--help"], check=True, capture_output=True)
        runs.append(time.perf_counter() - t0)
    print(
        f"\n`{'cytomsc' if script else 'python -c main()'} --help` in a fresh process: best "
        f"{min(runs):.2f} s, worst {max(runs):.2f} s (target <= 0.5 s)"
    )


def batch_time() -> None:
    work = Path(tempfile.mkdtemp(prefix="cytomsc-batch-"))
    try:
        t0 = time.perf_counter()
        for i in range(96):
            design = diva_culture(
                20_000, name=f"B{i + 1:02d}", offset=1000 + i, controls=("unstained", "isotype")
            )
            folder = work / "in" / design.name
            folder.mkdir(parents=True)
            for t in simulate_culture(design, SEED):
                t.write(folder)
        made = time.perf_counter() - t0
        cmd = [
            sys.executable,
            "-c",
            "from cytomsc.cli import main; main()",
            "analyze",
            str(work / "in"),
            "-o",
            str(work / "out"),
            "--jobs",
            "2",
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        n_pdf = len(list((work / "out").glob("*.pdf")))
        print(
            f"\nBatch: 96 cultures x 3 tubes x 20,000 events, PDFs, --jobs 2: {wall:.1f} s wall "
            f"(target <= 90 s); exit {proc.returncode}, {n_pdf} PDFs; "
            f"simulating the input took {made:.0f} s"
        )
        if proc.returncode:
            print(proc.stderr[-2000:])
    finally:
        shutil.rmtree(work, ignore_errors=True)


BIG_CHILD = """
import resource, sys, time
from cytomsc.cli import main
t0 = time.perf_counter()
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    print(f"CHILD {time.perf_counter() - t0:.1f} "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", file=sys.stderr)
"""


def big_memory(n: int = 5_000_000, block: int = 500_000) -> None:
    """A 5M-event stained tube (10 simulated blocks, Time continued) plus a 500k isotype."""
    from cytomsc.fcswrite import write_fcs

    work = Path(tempfile.mkdtemp(prefix="cytomsc-big-"))
    try:
        folder = work / "in" / "big"
        folder.mkdir(parents=True)
        tubes = simulate_culture(diva_culture(block, name="big"), SEED)
        stained = next(t for t in tubes if t.role == "stained")
        control = next(t for t in tubes if t.role != "stained")
        control.write(folder)
        j = stained.pnn.index("Time")
        span = float(stained.events[:, j].max()) + 1.0
        parts = []
        for k in range(n // block):
            part = stained.events.copy()
            part[:, j] += k * span
            parts.append(part)
        events = np.vstack(parts)
        del parts
        write_fcs(
            folder / stained.filename,
            events,
            stained.pnn,
            stained.pns,
            stained.keywords,
            ranges=[*stained.ranges[:-1], float(events[:, j].max() + 1)],
            spillover=stained.spillover,
        )
        del events
        cmd = [
            sys.executable,
            "-c",
            BIG_CHILD,
            "analyze",
            str(work / "in"),
            "-o",
            str(work / "out"),
            "--jobs",
            "1",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = [ln for ln in proc.stderr.splitlines() if ln.startswith("CHILD ")]
        if proc.returncode or not line:
            print(f"\n--big failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
            return
        seconds, kb = line[-1].split()[1:]
        print(
            f"\n5,000,000-event tube (+ 500,000-event isotype), PDF on: {float(seconds):.1f} s, "
            f"peak RSS {int(kb) / 1024**2:.2f} GB (target <= 2.5 GB)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    sizes = [10_000, 100_000] if "--quick" in sys.argv else [10_000, 100_000, 1_000_000]
    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} "
        f"(shared: figures vary with the other jobs)\n"
    )
    stage_table(sizes)
    help_time()
    if "--batch" in sys.argv:
        batch_time()
    if "--big" in sys.argv:
        big_memory()
    print(
        f"\nbenchmark process peak RSS: "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.2f} GB"
    )


if __name__ == "__main__":
    main()
