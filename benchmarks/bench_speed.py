"""Issue 13's figures in one run, each printed with the machine's load beside it.

Prints figures; it is not a test (timings on a shared 2-core machine are not pass/fail
material). Every line ends with ``[load a/b/c]``: the 1, 5 and 15-minute load averages
(``os.getloadavg``) when the figure was taken, so a reader can tell an idle machine's figure from
a loaded one's. CPU seconds (``time.process_time`` in-process, ``RUSAGE_CHILDREN`` for child
processes) depend far less on the load than wall time and are printed wherever they apply.

1. Logicle: max |cytomsc - FlowKit| over 226 W values and every corpus file (bench_logicle).
2. One culture (3 tubes x 20,000 events, BD Diva 8-colour with DAPI; PDFs), in this process
   after a warm-up run: CPU seconds of the culture and of each stage (min of ``--repeats``).
3. ``--cultures`` (96) such cultures through ``cytomsc analyze --jobs`` (2) in a child process:
   wall and CPU seconds.
4. A 5,000,000-event stained tube plus a 500,000-event isotype (``--jobs 1``, PDFs) in a child
   process: wall seconds and peak RSS.
5. Read + compensate + Logicle of a 1,000,000-event x 14-channel tube, in-process: cytomsc
   (``read_fcs`` + ``prepare``), FlowKit (``Sample``, ``apply_compensation``, ``apply_transform``)
   and a numpy floor (the DATA bytes as float64, one product with the inverse spillover, asinh).
6. One-culture process start-up: a fresh interpreter importing every module that analysing one
   culture loads (wall and CPU, the bare interpreter's start subtracted), and the largest imports.

Run: ``python benchmarks/bench_speed.py [--cultures 96] [--jobs 2] [--repeats 3]
[--skip logicle,culture,batch,big,read,startup]``.
"""

from __future__ import annotations

import argparse
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

N_EVENTS = 20_000
TARGETS = {
    "logicle": 1e-9,
    "culture_cpu": 0.55,
    "batch_wall": 40.0,
    "big_s": 10.0,
    "big_gib": 1.2,
    "vs_flowkit": 8.0,
    "vs_floor": 2.0,
    "startup": 0.8,
}


def load() -> str:
    a, b, c = os.getloadavg()
    return f"[load {a:.1f}/{b:.1f}/{c:.1f} on {os.cpu_count()} cores]"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def design(i: int):
    """Culture i: 3 tubes of 20k events, a few % debris, doublets and dead cells (as
    bench_stages)."""
    from cytomsc.simulate import CultureDesign

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
    from cytomsc.simulate import simulate_culture

    for i in range(n):
        d = design(i)
        for tube in simulate_culture(d, seed=0):
            tube.write(root / d.name)


def cytomsc_cmd() -> list[str]:
    return [sys.executable, "-m", "cytomsc"]


# ---------------------------------------------------------------------------------------------
# 1. Logicle


def logicle_part() -> None:
    import bench_logicle

    print("1. Logicle against FlowKit's LogicleTransform")
    worst = bench_logicle.w_grid()
    root = bench_logicle.corpus()
    if root is not None:
        worst = max(worst, bench_logicle.corpus_files(root))
    else:
        print("  corpus absent (../shared/fcs-corpus or $CYTOMSC_FCS_CORPUS): W grid only")
    print(
        f"  => max |cytomsc - FlowKit| = {worst:.1e} (target <= 1e-9: "
        f"{verdict(worst <= TARGETS['logicle'])}) {load()}"
    )


# ---------------------------------------------------------------------------------------------
# 2. One culture, stage by stage


class CpuClock:
    """CPU seconds spent inside wrapped functions, per stage (the pipeline imports its stage
    functions at call time, so replacing module attributes times the real run)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._undo: list[tuple[object, str, object]] = []

    def wrap(self, module: object, attr: str, stage: str) -> None:
        original = getattr(module, attr)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            c0 = time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[stage] += time.process_time() - c0

        self._undo.append((module, attr, original))
        setattr(module, attr, timed)

    def __enter__(self) -> CpuClock:
        from cytomsc import clustering, culture, fcs, gating, pipeline, preprocess
        from cytomsc.report import overview, pdf

        for module, attr, stage in (
            (fcs, "read_fcs", "read"),
            (fcs, "sha256_file", "read"),
            (preprocess, "prepare", "compensate+Logicle"),
            (gating, "gate_tube", "gates"),
            (culture, "measure", "% positive"),
            (clustering, "cluster_culture", "clustering"),
            (gating, "gating_strategy", "GatingML"),
            (gating, "write_gatingml", "GatingML"),
            (pdf, "write_culture_pdf", "culture PDF"),
            (overview, "write_overview", "batch: overview PDF"),
            (pipeline, "write_batch_files", "batch: summary files + overview"),
        ):
            self.wrap(module, attr, stage)
        return self

    def __exit__(self, *exc: object) -> None:
        for module, attr, original in reversed(self._undo):
            setattr(module, attr, original)


def culture_part(root: Path, repeats: int) -> None:
    from cytomsc import pipeline

    data = root / "one"
    write_cultures(data, 1)
    opts = pipeline.Options(jobs=1, pdf=True)
    pipeline.run_batch([data], root / "warm", opts)  # imports and caches: not counted
    runs = []
    for r in range(repeats):
        out = root / f"one-{r}"
        with CpuClock() as clock:
            c0 = time.process_time()
            pipeline.run_batch([data], out, opts)
            total = time.process_time() - c0
        batch_only = clock.seconds.pop("batch: summary files + overview", 0.0)
        culture = total - batch_only
        clock.seconds["rest of the culture"] = culture - sum(
            v for k, v in clock.seconds.items() if not k.startswith("batch:")
        )
        runs.append((culture, total, dict(clock.seconds), batch_only))
        shutil.rmtree(out, ignore_errors=True)
    culture, total, stages, batch_only = min(runs, key=lambda r: r[0])
    print(
        f"2. One culture, 3 tubes x {N_EVENTS:,} events, PDFs, in-process after a warm-up "
        f"(the run of least CPU of {repeats}):"
    )
    for stage, s in stages.items():
        if not stage.startswith("batch:"):
            print(f"  {stage:<22}{s:>7.3f} CPU-s")
    print(
        f"  => CPU per culture {culture:.3f} s (target <= {TARGETS['culture_cpu']}: "
        f"{verdict(culture <= TARGETS['culture_cpu'])}) {load()}"
    )
    print(
        f"  batch files of a one-culture batch (summary.json/csv, overview PDF): "
        f"{batch_only:.3f} CPU-s, of which overview PDF "
        f"{stages.get('batch: overview PDF', 0.0):.3f}; whole run {total:.3f} CPU-s"
    )


# ---------------------------------------------------------------------------------------------
# 3. 96 cultures


def batch_part(root: Path, n: int, jobs: int) -> None:
    data = root / "batch"
    t0 = time.perf_counter()
    write_cultures(data, n)
    made = time.perf_counter() - t0
    out = root / "batch-out"
    before = load()
    cmd = [*cytomsc_cmd(), "analyze", str(data), "-o", str(out), "--jobs", str(jobs)]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    pdfs = len(list(out.glob("*.pdf")))
    print(
        f"3. {n} cultures x 3 tubes x {N_EVENTS:,} events, PDFs, `cytomsc analyze --jobs "
        f"{jobs}` in a child process (input simulated in {made:.0f} s, not counted):"
    )
    if done.returncode:
        print(f"  failed (exit {done.returncode}): {done.stderr[-1500:]}")
        return
    print(f"  load before {before}")
    print(
        f"  => wall {wall:.1f} s (target <= {TARGETS['batch_wall']:.0f} s on an idle machine: "
        f"{verdict(wall <= TARGETS['batch_wall'])}); CPU {cpu:.1f} s = {cpu / n:.2f} CPU-s "
        f"per culture, start-up and batch files included; {pdfs} PDFs {load()}"
    )
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(data, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# 4. A 5M-event tube

# Peak RSS from /proc/self/status (VmHWM): ru_maxrss survives exec, so a child started by a
# parent that holds the simulated 5M events would report the parent's size as its own.
BIG_CHILD = """
import resource, sys, time
from cytomsc.cli import main
t0 = time.perf_counter()
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    kb = ru.ru_maxrss
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                kb = int(line.split()[1])
    except OSError:
        pass
    print(f"CHILD {time.perf_counter() - t0:.2f} {kb} {ru.ru_utime + ru.ru_stime:.2f}",
          file=sys.stderr)
"""


def big_part(root: Path, n: int = 5_000_000, block: int = 500_000) -> None:
    from cytomsc.fcswrite import write_fcs
    from cytomsc.simulate import CultureDesign, simulate_culture

    folder = root / "big-in" / "big"
    folder.mkdir(parents=True)
    d = CultureDesign(
        "big",
        style="diva",
        layout="isct-8c",
        viability="DAPI",
        dead=0.03,
        n_events=block,
        controls=("isotype",),
        seed_offset=1,
    )
    tubes = simulate_culture(d, 0)
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
    del events, tubes, stained, control
    before = load()
    cmd = [
        sys.executable,
        "-c",
        BIG_CHILD,
        "analyze",
        str(root / "big-in"),
        "-o",
        str(root / "big-out"),
        "--jobs",
        "1",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("CHILD ")]
    print(
        f"4. A {n:,}-event stained tube + a {block:,}-event isotype, PDFs, --jobs 1, in a "
        "child process:"
    )
    if proc.returncode or not line:
        print(f"  failed (exit {proc.returncode}): {proc.stderr[-1500:]}")
        return
    seconds, kb, cpu = line[-1].split()[1:]
    gib = int(kb) / 1024**2
    print(f"  load before {before}")
    print(
        f"  => {float(seconds):.1f} s wall, {float(cpu):.1f} CPU-s (target <= "
        f"{TARGETS['big_s']:.0f} s: {verdict(float(seconds) <= TARGETS['big_s'])}), peak RSS "
        f"{gib:.2f} GiB (target <= {TARGETS['big_gib']} GiB: "
        f"{verdict(gib <= TARGETS['big_gib'])}) {load()}"
    )
    shutil.rmtree(root / "big-in", ignore_errors=True)
    shutil.rmtree(root / "big-out", ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# 5. Read + compensate + Logicle at 1M x 14


def _best(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        got = fn()
        took = time.perf_counter() - t0
        if took < best:
            best, out = took, got
    return best, out


def _floor(
    path: Path,
    spill: tuple[list[str], np.ndarray],
    fluo: list[int],
    start: int,
    dtype: str,
    shape: tuple[int, int],
) -> np.ndarray:
    """The least any reader can do: DATA as float64, one product with the inverse spillover
    (embedded in an identity; on the transposed events, which OpenBLAS runs ten times faster
    than a tall-skinny product), asinh of the fluorescence channels in place."""
    raw = np.fromfile(path, dtype=dtype, count=shape[0] * shape[1], offset=start)
    ev = raw.reshape(shape).astype(np.float64)
    full = np.eye(shape[1])
    full[np.ix_(fluo, fluo)] = np.linalg.inv(spill[1])
    comp = full.T @ ev.T  # (channels, events): each channel contiguous
    for j in fluo:
        np.arcsinh(comp[j] * (1 / 150.0), out=comp[j])
    return comp


def read_part(root: Path, repeats: int) -> None:
    from cytomsc import fcs as fcs_mod
    from cytomsc import preprocess
    from cytomsc.simulate import CultureDesign, simulate_culture

    folder = root / "read"
    d = CultureDesign(
        "read",
        style="diva",
        layout="isct-8c",
        viability="DAPI",
        dead=0.03,
        n_events=1_000_000,
        controls=("isotype",),
        seed_offset=1,
    )
    tube = next(t for t in simulate_culture(d, 0) if t.role == "stained")
    path = tube.write(folder)
    del tube

    def ours():
        return preprocess.prepare(fcs_mod.read_fcs(path))

    t_ours, prep = _best(ours, repeats)
    shape = prep.compensated.shape
    spill = prep.spill
    params = dict(prep.logicle)
    fluo = [prep.channels.index(ch) for ch in spill[0]]
    text = fcs_mod.read_text(path)
    start = int(text["begindata"])
    dtype = (">" if text.get("byteord", "1,2,3,4") == "4,3,2,1" else "<") + {"F": "f4", "D": "f8"}[
        text["datatype"].upper()
    ]
    del prep
    from flowkit import Matrix, Sample

    def flowkit_alone():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = Sample(path)
            s.apply_compensation(Matrix(spill[1], spill[0], spill[0]))
            s.apply_transform({ch: preprocess.flowkit_transform(p) for ch, p in params.items()})
            return s.get_events(source="xform")

    t_fk, _ = _best(flowkit_alone, max(1, repeats - 1))
    t_floor, _ = _best(lambda: _floor(path, spill, fluo, start, dtype, shape), repeats)
    vs_fk, vs_floor = t_fk / t_ours, t_ours / t_floor
    print(
        f"5. Read + compensate + Logicle, {shape[0]:,} events x {shape[1]} channels, in-process "
        f"(best of {repeats}):"
    )
    print(f"  cytomsc {t_ours:.3f} s, FlowKit {t_fk:.3f} s, numpy floor {t_floor:.3f} s")
    print(
        f"  => {vs_fk:.1f}x FlowKit (target >= {TARGETS['vs_flowkit']:.0f}x: "
        f"{verdict(vs_fk >= TARGETS['vs_flowkit'])}); {vs_floor:.2f}x the floor (target <= "
        f"{TARGETS['vs_floor']:.0f}x: {verdict(vs_floor <= TARGETS['vs_floor'])}) {load()}"
    )
    shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# 6. Start-up

LIST_CHILD = """
import sys
from pathlib import Path
import cytomsc.cli  # noqa: F401  (what `cytomsc analyze` imports before it starts)
from cytomsc import fcs
from cytomsc.pipeline import Options, run_batch

def names():
    return sorted(m for m in sys.modules if not m.startswith("_") and m != "__main__")

first = []
read = fcs.read_fcs
def spy(*args, **kwargs):
    if not first:
        first.extend(names())
    return read(*args, **kwargs)
fcs.read_fcs = spy
run_batch([Path(sys.argv[1])], Path(sys.argv[2]), Options(jobs=1, pdf=True))
Path(sys.argv[3]).write_text("\\n".join(first))
Path(sys.argv[4]).write_text("\\n".join(names()))
"""

IMPORT_CHILD = """
import importlib, sys, time
from pathlib import Path
c0, t0 = time.process_time(), time.perf_counter()
for m in Path(sys.argv[1]).read_text().split():
    try:
        importlib.import_module(m)
    except Exception:
        pass
print(f"{time.perf_counter() - t0:.4f} {time.process_time() - c0:.4f}")
"""


def startup_part(root: Path, repeats: int) -> None:
    data = root / "start"
    write_cultures(data, 1)
    before_read, everything = root / "modules-start.txt", root / "modules-all.txt"
    subprocess.run(
        [
            sys.executable,
            "-c",
            LIST_CHILD,
            str(data),
            str(root / "start-out"),
            str(before_read),
            str(everything),
        ],
        check=True,
        capture_output=True,
    )

    def child(code: str, *args: str) -> tuple[float, float]:
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True
        ).stdout.split()
        wall = time.perf_counter() - t0
        return (wall, float(out[1]) if len(out) > 1 else 0.0)

    bare = min(child("pass")[0] for _ in range(repeats))

    def timed(mods: Path) -> tuple[float, float]:
        runs = [child(IMPORT_CHILD, str(mods)) for _ in range(repeats)]
        return min(w for w, _ in runs) - bare, min(c for _, c in runs)

    print(
        f"6. Process start-up: fresh interpreters importing the modules a one-culture "
        f"`analyze` loads (min of {repeats}, bare interpreter {bare:.2f} s subtracted):"
    )
    for label, mods in (
        ("up to its first file read (CLI, pipeline, reader)", before_read),
        ("all of the run (gates, % positive, clustering, GatingML, PDFs)", everything),
    ):
        names = mods.read_text().split()
        wall, cpu = timed(mods)
        prof = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", IMPORT_CHILD, str(mods)],
            capture_output=True,
            text=True,
        ).stderr
        by_package: dict[str, float] = defaultdict(float)  # self time of its modules
        for line in prof.splitlines():
            parts = line.split("|")
            if len(parts) == 3 and parts[0].strip().split()[-1].isdigit():
                by_package[parts[2].strip().split(".")[0]] += int(parts[0].split()[-1]) / 1e6
        costs = sorted(((v, k) for k, v in by_package.items()), reverse=True)
        print(
            f"  {label}: {len(names)} modules; {wall:.2f} s wall, {cpu:.2f} CPU-s "
            f"(target <= {TARGETS['startup']} s: {verdict(wall <= TARGETS['startup'])}) "
            f"{load()}"
        )
        print(
            "    by package (self time, -X importtime): "
            + ", ".join(f"{n} {c:.2f} s" for c, n in costs[:9])
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cultures", type=int, default=96)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip", default="", help="comma-separated parts to leave out")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    import cytomsc

    print(
        f"cytomsc {cytomsc.__version__} from {Path(cytomsc.__file__).parent}; python "
        f"{sys.version.split()[0]} {load()}"
    )
    with tempfile.TemporaryDirectory(prefix="cytomsc-speed-") as tmp:
        root = Path(tmp)
        parts = [
            ("logicle", logicle_part, ()),
            ("culture", culture_part, (root, args.repeats)),
            ("startup", startup_part, (root, args.repeats)),
            ("read", read_part, (root, args.repeats)),
            ("big", big_part, (root,)),
            ("batch", batch_part, (root, args.cultures, args.jobs)),
        ]
        for name, fn, fargs in parts:
            if name not in skip:
                fn(*fargs)
                sys.stdout.flush()


if __name__ == "__main__":
    main()
