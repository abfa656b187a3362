"""Logicle: cytomsc against FlowKit (flowutils' C code), accuracy first, then speed (issue 13).

Prints figures; it is not a test (tests/test_preprocess.py asserts the accuracy part):
- the largest |cytomsc - FlowKit| over 226 W values in [0, M/2] (T = 262144, M = 4.5), for the
  table cytomsc uses on >= 20,000 values and for the exact solver below that;
- the same on every fluorescence channel of every readable file of ``../shared/fcs-corpus``
  (or ``$CYTOMSC_FCS_CORPUS``), with the parameters the pipeline fits for it;
- the time to transform 1M values, cytomsc and FlowKit, with the machine's load average.

Run: ``python benchmarks/bench_logicle.py``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from flowkit import transforms

from cytomsc.errors import CytomscError
from cytomsc.fcs import read_fcs
from cytomsc.preprocess import LogicleParams, logicle, prepare

ROOT = Path(__file__).resolve().parent.parent


def corpus() -> Path | None:
    env = os.environ.get("CYTOMSC_FCS_CORPUS")
    for c in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "fcs-corpus"]:
        if (c / "expected.json").is_file():
            return c
    return None


def values(n: int, t: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) * 10 ** rng.uniform(-3, 6, n)
    x = np.concatenate([x, [0.0, t, -t, 3 * t, 5e3 * t, -5e3 * t]])
    return x[(np.abs(x) > 1e-6) | (x == 0)]  # FlowKit returns -1 near 0 (not 0) at W = 0


def w_grid() -> float:
    """Print, and return, the largest difference over the W grid (table and exact solver)."""
    t = 262144.0
    x = values(50_000, t)
    small = x[::50]
    worst = {"table": (0.0, 0.0), "exact": (0.0, 0.0)}
    for w in np.linspace(0.0, 2.25, 226):
        p = LogicleParams(t, float(w))
        fk = transforms.LogicleTransform(t, float(w), 4.5, 0.0)
        for name, v in (("table", x), ("exact", small)):
            d = float(np.max(np.abs(logicle(v, p) - fk.apply(v))))
            if d > worst[name][0]:
                worst[name] = (d, float(w))
    for name, (d, w) in worst.items():
        print(
            f"  W grid, 226 values in [0, 2.25], {name:5s}: max |cytomsc - FlowKit| = "
            f"{d:.2e} (at W = {w:.2f})"
        )
    return max(d for d, _ in worst.values())


def corpus_files(root: Path) -> float:
    """Print, and return, the largest difference over the corpus's fluorescence channels."""
    expected = json.loads((root / "expected.json").read_text())
    worst, where, channels, files = 0.0, "", 0, 0
    for name, info in sorted(expected.items()):
        if info is None:
            continue
        data = read_fcs(root / name)
        try:
            prep = prepare(data)
        except CytomscError:
            prep = prepare(data, comp="none")
        files += 1
        for ch, p in prep.logicle.items():
            j = prep.channels.index(ch)
            x = prep.compensated[:, j]
            ok = np.isfinite(x) & ((np.abs(x) > 1e-6 * p.t) | (x == 0) | (p.w > 0))
            fk = transforms.LogicleTransform(p.t, p.w, p.m, p.a).apply(x[ok])
            d = float(np.max(np.abs(prep.display[ok, j] - fk))) if ok.any() else 0.0
            channels += 1
            if d > worst:
                worst, where = d, f"{name} {ch} W={p.w:.4f}"
    print(
        f"  corpus, {files} files, {channels} channels: max |cytomsc - FlowKit| = "
        f"{worst:.2e} ({where})"
    )
    return worst


def speed() -> None:
    t = 262144.0
    x = np.random.default_rng(1).normal(0, 3000, 1_000_000) + np.random.default_rng(2).choice(
        [0.0, 5e4], 1_000_000
    )
    p = LogicleParams(t, 0.7)
    fk = transforms.LogicleTransform(t, 0.7, 4.5, 0.0)
    logicle(x, p)
    ours = min(_time(lambda: logicle(x, p)) for _ in range(5))
    theirs = min(_time(lambda: fk.apply(x)) for _ in range(3))
    print(
        f"  1M values: cytomsc {ours * 1e3:.0f} ms, FlowKit {theirs * 1e3:.0f} ms "
        f"({theirs / ours:.1f}x); load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores"
    )


def _time(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def main() -> None:
    print("Logicle, cytomsc vs FlowKit's LogicleTransform:")
    w_grid()
    root = corpus()
    if root is None:
        print(
            "  corpus absent: set CYTOMSC_FCS_CORPUS or place ../shared/fcs-corpus", file=sys.stderr
        )
    else:
        corpus_files(root)
    speed()


if __name__ == "__main__":
    main()
