"""Where a culture's time goes, stage by stage, and what a batch costs (issue 6 "Speed and memory").

Prints figures; it is not a test (timings on a shared 2-core machine are not pass/fail material).

1. One culture of 3 tubes (stained, isotype, unstained) x 20,000 events (BD Diva 8-colour with
   DAPI, 15 channels), analysed in this process by ``run_batch`` with PDFs, after one warm-up run
   so that imports are not counted. The functions the pipeline calls for each stage are wrapped
   with timers (the pipeline imports them at call time, so the real run is timed): read, SHA-256,
   compensate + transform, gates, % positive, clustering, GatingML, culture PDF, overview PDF,
   and the rest. Each stage's figure is its minimum over ``--repeats`` runs; events/s is the
   culture's events (all tubes) divided by that stage's seconds.
2. A fresh process importing what a worker needs (FlowKit, scipy, matplotlib): paid once
   per process, so once per worker of a ``--jobs`` pool.
3. ``--cultures N`` (default 12) such cultures through ``cytomsc analyze --jobs J`` (default 2) in
   a subprocess, PDFs included, minimum over ``--repeats``; with the per-culture cost it prints
   the time extrapolated to 96 cultures (target <= 90 s on this 2-core machine).
4. ``cytomsc --help`` in a fresh process (target <= 0.5 s).

Run: ``python benchmarks/bench_stages.py [--cultures N] [--jobs J] [--repeats R] [--no-batch]``.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from cytomsc import clustering, culture, gating, pipeline, preprocess
from cytomsc import fcs as fcs_mod
from cytomsc.simulate import CultureDesign, simulate_culture

N_EVENTS = 20_000
TARGET_CULTURES = 96

STAGES = [  # (module, function, stage)
    (fcs_mod, "read_fcs", "read"),
    (fcs_mod, "sha256_file", "sha256"),
    (preprocess, "prepare", "compensate+transform"),
    (gating, "gate_tube", "gates"),
    (culture, "measure", "% positive"),
    (clustering, "cluster_culture", "clustering"),
    (gating, "gating_strategy", "GatingML"),
    (gating, "write_gatingml", "GatingML"),
]


def design(i: int) -> CultureDesign:
    """Culture i of the benchmark: 3 tubes of 20k events, a few % debris, doublets, dead cells."""
    return CultureDesign(
        f"bench{i:03d}",
        style="diva",
        layout="isct-8c",
        viability="DAPI",
        dead=0.03,
        n_events=N_EVENTS,
        controls=("isotype", "unstained"),
        seed_offset=i,
    )


def write_cultures(root: Path, n: int) -> None:
    for i in range(n):
        d = design(i)
        for tube in simulate_culture(d, seed=0):
            tube.write(root / d.name)


class Clock:
    """Adds up the time spent in wrapped functions, per stage, while installed."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._undo: list[tuple[object, str, object]] = []

    def wrap(self, module: object, attr: str, stage: str) -> None:
        original = getattr(module, attr)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - t0

        self._undo.append((module, attr, original))
        setattr(module, attr, timed)

    def __enter__(self) -> Clock:
        from cytomsc.report import overview, pdf

        for module, attr, stage in STAGES:
            self.wrap(module, attr, stage)
        self.wrap(pdf, "write_culture_pdf", "culture PDF")
        self.wrap(overview, "write_overview", "overview PDF")
        return self

    def __exit__(self, *exc: object) -> None:
        for module, attr, original in reversed(self._undo):
            setattr(module, attr, original)


def one_culture(root: Path, repeats: int) -> None:
    data = root / "one"
    write_cultures(data, 1)
    n_events = 3 * N_EVENTS
    opts = pipeline.Options(jobs=1, pdf=True)
    pipeline.run_batch([data], root / "warm", opts)  # imports and caches, not counted
    best: dict[str, float] = {}
    for r in range(repeats):
        out = root / f"one-out-{r}"
        with Clock() as clock:
            t0 = time.perf_counter()
            pipeline.run_batch([data], out, opts)
            total = time.perf_counter() - t0
        clock.seconds["rest"] = total - sum(clock.seconds.values())
        clock.seconds["total"] = total
        for stage, s in clock.seconds.items():
            best[stage] = min(best.get(stage, float("inf")), s)
        shutil.rmtree(out, ignore_errors=True)
    print(f"One culture, 3 tubes x {N_EVENTS:,} events, PDFs on, in-process (min of {repeats}):")
    print(f"  {'stage':<22}{'seconds':>9}{'events/s':>14}")
    for stage, s in best.items():
        rate = f"{n_events / s:,.0f}" if s > 0 else "-"
        print(f"  {stage:<22}{s:>9.3f}{rate:>14}")


def timed_run(cmd: list[str], repeats: int, cwd: Path | None = None) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        elapsed = time.perf_counter() - t0
        if done.returncode not in (0,):
            raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")
        best = min(best, elapsed)
    return best


def imports(repeats: int) -> None:
    code = (
        "import cytomsc.fcs, cytomsc.gating, cytomsc.heterogeneity, cytomsc.report.pdf, "
        "scipy.stats, contourpy"
    )
    base = timed_run([sys.executable, "-c", "pass"], repeats)
    full = timed_run([sys.executable, "-c", code], repeats)
    fk = timed_run([sys.executable, "-c", "import flowkit"], repeats)
    print(
        f"Fresh-process imports (min of {repeats}, interpreter start {base:.2f} s excluded): "
        f"flowkit {fk - base:.2f} s; everything a worker needs {full - base:.2f} s"
    )


def cytomsc_cmd() -> list[str]:
    """The installed command, or this interpreter's ``-m cytomsc`` (the same entry point)."""
    exe = shutil.which("cytomsc")
    return [exe] if exe else [sys.executable, "-m", "cytomsc"]


def batch(root: Path, n: int, jobs: int, repeats: int) -> None:
    data = root / "batch"
    write_cultures(data, n)
    out = root / "batch-out"
    cmd = [*cytomsc_cmd(), "analyze", str(data), "-o", str(out), "--jobs", str(jobs)]
    best = timed_run(cmd, repeats)
    per = best / n
    print(
        f"Batch: {n} cultures x 3 tubes x {N_EVENTS:,} events, PDFs on, --jobs {jobs}, "
        f"cytomsc analyze in a subprocess (min of {repeats}): {best:.1f} s = {per:.2f} s per "
        f"culture; {TARGET_CULTURES} cultures ~ {per * TARGET_CULTURES:.0f} s "
        f"(target <= 90 s; linear, so fixed start-up costs are over-counted)"
    )


def help_time(repeats: int) -> None:
    best = timed_run([*cytomsc_cmd(), "--help"], repeats)
    print(f"cytomsc --help in a fresh process (min of {repeats}): {best:.2f} s (target <= 0.5 s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cultures", type=int, default=12)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-batch", action="store_true")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="cytomsc-bench-") as tmp:
        root = Path(tmp)
        one_culture(root, args.repeats)
        imports(args.repeats)
        if not args.no_batch:
            batch(root, args.cultures, args.jobs, max(1, min(args.repeats, 2)))
        help_time(max(args.repeats, 5))


if __name__ == "__main__":
    main()
