"""How often the Westgard rules would get the history preset wrong by noise alone.

``tests/test_history_pipeline.py`` requires the trend charts to flag exactly the lots the
``history`` preset drifted (CD105, passages 6-8) and nothing else, on 8 judged markers x 16 lots.
This script estimates, by Monte Carlo on the same rules (``cytomsc.trend.westgard``) and
reference window (first 10 lots), the chance that measurement noise alone breaks that:

1. with the preset's designed lot effects (``simulate.HISTORY_LOT_EFFECT`` x
   ``HISTORY_LOT_POINTS``) plus Gaussian measurement noise of the SD measured per marker;
2. with Gaussian lot effects of the same SD instead (what a drawn design would give).

The noise SDs are the spread of % positive over 24 replicate simulated cultures at 20,000 events
(isotype control, ``isct-8c``) measured on the development machine, rounded up.

    python benchmarks/trend_rules.py [--reps 20000]
"""

from __future__ import annotations

import argparse

import numpy as np

from cytomsc.simulate import (
    HISTORY_DRIFT,
    HISTORY_DRIFT_AFTER,
    HISTORY_DRIFT_MARKER,
    HISTORY_LOT_EFFECT,
    HISTORY_LOT_POINTS,
    HISTORY_REFERENCE,
    _history_lots,
)
from cytomsc.trend import westgard

NOISE_SD = {
    "CD73": 0.055,
    "CD90": 0.075,
    "CD105": 0.08,
    "CD45": 0.071,
    "CD34": 0.12,
    "CD14": 0.078,
    "CD19": 0.11,
    "HLA-DR": 0.105,
}


def flags(values: np.ndarray) -> np.ndarray:
    ref = values[:HISTORY_REFERENCE]
    c, s = ref.mean(), ref.std(ddof=1)
    return np.array([bool(r) for r in westgard(list((values - c) / s))])


def run(reps: int, gaussian: bool, rng: np.random.Generator) -> tuple[float, float, float]:
    """P(the exact-flags test fails), P(a drifted CD105 lot missed), false flags per undrifted
    lot and marker."""
    lots = _history_lots()
    drift = np.array([-x["drift_points"] for x in lots])
    truth = drift != 0
    u = np.array(HISTORY_LOT_EFFECT)
    fails = missed = false = undrifted = 0
    for _ in range(reps):
        bad = False
        for marker, amp in HISTORY_LOT_POINTS.items():
            sign = 1.0 if marker in ("CD73", "CD90", "CD105") else -1.0
            effect = (
                amp * np.std(u, ddof=1) * rng.standard_normal(len(u))
                if gaussian
                else sign * amp * u
            )
            x = effect + NOISE_SD[marker] * rng.standard_normal(len(u))
            if marker == HISTORY_DRIFT_MARKER:
                x = x + drift
                f = flags(x)
                missed += int((truth & ~f).any())
                false += int((f & ~truth).sum())
                undrifted += int((~truth).sum())
                bad |= bool((f != truth).any())
            else:
                f = flags(x)
                false += int(f.sum())
                undrifted += len(f)
                bad |= bool(f.any())
        fails += bad
    return fails / reps, missed / reps, false / undrifted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    print(
        f"history preset: 16 lots, reference = first {HISTORY_REFERENCE}, drift "
        f"{HISTORY_DRIFT} point/passage of {HISTORY_DRIFT_MARKER} after passage "
        f"{HISTORY_DRIFT_AFTER}; {args.reps} Monte Carlo repeats"
    )
    for gaussian, name in (
        (False, "designed lot effects (the preset)"),
        (True, "Gaussian lot effects, same SD"),
    ):
        fail, miss, false = run(args.reps, gaussian, rng)
        print(
            f"{name:36s} exact-flags test fails: {100 * fail:6.2f} %   a drifted lot "
            f"missed: {100 * miss:5.2f} %   false flags: {100 * false:5.2f} % of undrifted "
            "lot-markers"
        )


if __name__ == "__main__":
    main()
