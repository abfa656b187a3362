"""Compensation + Logicle: cytomsc's numpy path against FlowKit's own, on the same events.

Prints, for 10k, 100k and 1M events x 14 channels (FSC-A, SSC-A, Time and 11 fluorescence
detectors with a full spillover matrix), the events/s of
  cytomsc: compensate() + fit_logicle() + logicle() per fluorescence channel
  FlowKit: Sample.apply_compensation(Matrix) + Sample.apply_transform(LogicleTransform)
with the speed ratio (target >= 5x) and the largest absolute difference of the transformed values.
Best of 3 runs each (the machine is shared).
Run: ``python benchmarks/bench_preprocess.py [--quick]``.
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
from flowkit import Matrix, Sample, transforms

from cytomsc.preprocess import LogicleParams, compensate, fit_logicle, logicle

N_FLUO = 11
T = 262144.0


def make_events(n: int, seed: int = 0) -> tuple[np.ndarray, list[str], list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    fluo = [f"FL{i + 1}-A" for i in range(N_FLUO)]
    names = ["FSC-A", "SSC-A", *fluo, "Time"]
    spill = (
        np.eye(N_FLUO)
        + np.triu(rng.uniform(0, 0.15, (N_FLUO, N_FLUO)), 1)
        + np.tril(rng.uniform(0, 0.03, (N_FLUO, N_FLUO)), -1)
    )
    true = np.where(
        rng.random((n, N_FLUO)) < 0.5,
        rng.normal(0, 150, (n, N_FLUO)),
        rng.lognormal(np.log(2e4), 0.8, (n, N_FLUO)),
    )
    events = np.column_stack(
        [
            rng.uniform(1e4, 2.5e5, n),
            rng.uniform(1e3, 2e5, n),
            true @ spill,
            np.sort(rng.uniform(0, 600, n)),
        ]
    )
    return events, names, fluo, spill


def run_cytomsc(
    events: np.ndarray, names: list[str], fluo: list[str], spill: np.ndarray
) -> tuple[np.ndarray, dict[str, LogicleParams]]:
    comp = compensate(events, names, (fluo, spill))
    out = comp.copy()
    params = {}
    for name in fluo:
        j = names.index(name)
        p = fit_logicle(comp[:, j], T)
        params[name] = p
        out[:, j] = logicle(comp[:, j], p)
    return out, params


def run_flowkit(
    events: np.ndarray, names: list[str], fluo: list[str], spill: np.ndarray, p: LogicleParams
) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sample = Sample(events, sample_id="bench", channel_labels=names)
        sample.apply_compensation(Matrix(spill, fluo))
        sample.apply_transform(transforms.LogicleTransform(p.t, p.w, p.m, p.a))
    return sample.get_events(source="xform")


def best_of(fn, repeats: int = 3):
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> None:
    sizes = [10_000, 100_000] if "--quick" in sys.argv else [10_000, 100_000, 1_000_000]
    print(
        f"{'events':>9} {'cytomsc s':>10} {'ev/s':>12} {'FlowKit s':>10} {'ev/s':>12} "
        f"{'ratio':>6} {'max |diff|':>11}"
    )
    for n in sizes:
        events, names, fluo, spill = make_events(n)
        t_ours, (_, params) = best_of(
            lambda e=events, c=names, f=fluo, s=spill: run_cytomsc(e, c, f, s)
        )
        # FlowKit applies one transform to every fluorescence channel: compare on one shared W
        shared = params[fluo[0]]
        t_fk, theirs = best_of(
            lambda e=events, c=names, f=fluo, s=spill, p=shared: run_flowkit(e, c, f, s, p)
        )
        comp = compensate(events, names, (fluo, spill))
        idx = [names.index(f) for f in fluo]
        ours_shared = logicle(comp[:, idx], shared)
        diff = float(np.max(np.abs(ours_shared - theirs[:, idx])))
        print(
            f"{n:>9} {t_ours:>10.3f} {n / t_ours:>12.3g} {t_fk:>10.3f} {n / t_fk:>12.3g} "
            f"{t_fk / t_ours:>6.1f} {diff:>11.2e}"
        )


if __name__ == "__main__":
    main()
