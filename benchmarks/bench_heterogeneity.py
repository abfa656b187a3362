"""cytomsc's clustering against FlowSOM (given the true k), on a real file and on 10^6 events.

1. ``68983.fcs`` (FlowSOM's example; ``../shared/real-fcs/FlowSOM`` or ``$CYTOMSC_REAL_FCS``):
   read, compensated and gated as ``cytomsc analyze`` does; its 8 lineage markers (Logicle) plus
   log FSC-A/SSC-A; scored against the expert's ``gatingResult.csv`` on the labelled events.
2. 1,000,000 simulated events x 10 channels (8 markers, FSC, SSC): three heavy-tailed,
   correlated populations (60/30/10 %), 3 SD apart in two channels each.

cytomsc chooses k (``PopulationFinder``, as the pipeline calls it: the negative ceilings of the
markers, no bootstrap since the pipeline's 20 resamples reuse the fitted tests and cost ~0.1 s).
FlowSOM for Python (``pip install flowsom``: benchmark only, not a cytomsc dependency) is given
the true k, a 10 x 10 grid, and the same channels; it is run once on a small sample first so that
its JIT compilation is not counted. Prints, per data set: time (wall and CPU), k, ARI and the
mean F1 of one-to-one matched populations. Target (issue 10): cytomsc <= 5 s on 1M x 10 and
faster than FlowSOM on both.

    python benchmarks/bench_heterogeneity.py [--events 1000000] [--seed 0] [--no-flowsom]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

from cytomsc.heterogeneity import matched_f1
from cytomsc.populations import PopulationFinder

ROOT = Path(__file__).resolve().parents[1]
LINEAGE = {
    "Pacific Blue-A": "CD8",
    "APC-A": "TCRgd",
    "Alexa Fluor 700-A": "CD45",
    "APC-Cy7-A": "TCRb",
    "PE-A": "NK1.1",
    "PE-Texas Red-A": "CD4",
    "PE-Cy5-A": "CD19",
    "PE-Cy7-A": "CD3",
}


def simulated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], int]:
    """Three populations (60/30/10 %) in 10 channels: FSC/SSC (log10) + 8 markers (Logicle
    0..1), heavy-tailed (t, df 10) and correlated, 3 SD apart in two channels each."""
    rng = np.random.default_rng(seed)
    d, k = 10, 3
    labels = rng.choice(k, size=n, p=[0.6, 0.3, 0.1])
    a = rng.normal(size=(d, d)) * 0.4
    cov = a @ a.T + np.eye(d)
    sd = np.sqrt(np.diag(cov))
    chol = np.linalg.cholesky(cov / np.outer(sd, sd))
    z = rng.standard_normal((n, d)) @ chol.T
    z /= np.sqrt(rng.chisquare(10, size=(n, 1)) / 10)
    means = np.zeros((k, d))
    means[1, [2, 4]] = -3.0
    means[2, [0, 1]] = -3.0
    z += means[labels]
    scale = np.r_[0.09, 0.1, np.full(d - 2, 0.05)]
    centre = np.r_[5.1, 4.8, np.full(d - 2, 0.7)]
    return centre + scale * z, labels + 1, (0, 1), k


def real_68983() -> tuple[np.ndarray, np.ndarray, tuple[int, ...], int] | None:
    """68983's gated cells as the pipeline clusters them, and the expert's label per cell."""
    env = os.environ.get("CYTOMSC_REAL_FCS")
    base = Path(env) if env else ROOT.parent / "shared" / "real-fcs"
    path = base / "FlowSOM" / "68983.fcs"
    if not path.is_file():
        return None
    from cytomsc.fcs import read_fcs
    from cytomsc.gating import gate_tube
    from cytomsc.preprocess import prepare

    fcs = read_fcs(path)
    prep = prepare(fcs)
    final = gate_tube(prep, fcs, path.name, seed=0).final
    cols = [prep.channels.index(c) for c in LINEAGE]
    scatter = [prep.channels.index(c) for c in ("FSC-A", "SSC-A")]
    X = np.column_stack(
        [
            prep.display[final][:, cols],
            np.log10(np.maximum(prep.compensated[final][:, scatter], 1.0)),
        ]
    )
    truth = np.array(
        [x.strip().strip('"') for x in (path.parent / "gatingResult.csv").read_text().splitlines()]
    )[final]
    return X, truth, (8, 9), 6


def timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float, float]:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def cytomsc_labels(X: np.ndarray, log_columns: tuple[int, ...], seed: int) -> np.ndarray:
    from cytomsc.positivity import auto_threshold_display

    ceilings = tuple(
        -np.inf if j in log_columns else float(auto_threshold_display(X[:, j]))
        for j in range(X.shape[1])
    )
    finder = PopulationFinder(
        random_state=seed, log_columns=log_columns, n_bootstrap=0, negative_ceilings=ceilings
    ).fit(X)
    return finder.predict(X)


def flowsom_labels(X: np.ndarray, k: int, seed: int, markers_only: bool) -> np.ndarray:
    """FlowSOM as it is used: on a real file, the lineage markers on their (Logicle) scale, as
    FlowSOM's own vignette clusters 68983 (measured best for it: with scatter added and every
    channel rescaled its ARI falls to 0.87); on the simulated set all 10 channels, robustly
    rescaled so that log scatter and Logicle markers weigh alike."""
    import warnings

    import anndata
    import flowsom as fs

    try:
        from loguru import logger

        logger.disable("flowsom")
    except ImportError:
        pass
    if markers_only:
        Z = X[:, :8]
    else:
        Z = (X - np.median(X, axis=0)) / (np.subtract(*np.percentile(X, [75, 25], axis=0)) / 1.349)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        fsom = fs.FlowSOM(
            anndata.AnnData(Z.astype(np.float32)),
            cols_to_use=list(range(Z.shape[1])),
            xdim=10,
            ydim=10,
            n_clusters=k,
            seed=seed,
        )
    return np.asarray(fsom.get_cell_data().obs["metaclustering"]).astype(int)


def report(
    name: str, truth: np.ndarray, labels: np.ndarray, wall: float, cpu: float, scored: np.ndarray
) -> None:
    ari = adjusted_rand_score(truth[scored], labels[scored])
    f1 = matched_f1(truth[scored], labels[scored])
    print(
        f"  {name:<22} {wall:6.2f} s wall {cpu:6.2f} s CPU  k = {len(np.unique(labels)):2d}  "
        f"ARI {ari:.3f}  mean F1 {f1:.3f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-flowsom", action="store_true")
    args = ap.parse_args()
    use_flowsom = not args.no_flowsom
    if use_flowsom:
        try:
            import flowsom  # noqa: F401  (benchmark only)
        except ImportError:
            print("flowsom not installed (pip install flowsom): cytomsc alone")
            use_flowsom = False
        else:  # JIT warm-up, not counted
            warm, _, _, _ = simulated(5000, 1)
            flowsom_labels(warm, 3, 0, markers_only=False)
    sets = []
    real = real_68983()
    if real is None:
        print("68983.fcs absent (../shared/real-fcs or $CYTOMSC_REAL_FCS): simulated set only")
    else:
        sets.append(("68983.fcs", *real))
    sets.append((f"simulated {args.events:,} x 10", *simulated(args.events, args.seed)))
    for name, X, truth, log_columns, k in sets:
        scored = truth != "Unlabeled" if truth.dtype.kind == "U" else np.ones(truth.size, bool)
        print(
            f"{name}: {X.shape[0]:,} events x {X.shape[1]} channels, true k = {k}, "
            f"{int(scored.sum()):,} scored"
        )
        labels, wall, cpu = timed(lambda X=X, lc=log_columns: cytomsc_labels(X, lc, args.seed))
        report("cytomsc (k chosen)", truth, labels, wall, cpu, scored)
        if use_flowsom:
            real_file = truth.dtype.kind == "U"
            fl, fwall, fcpu = timed(
                lambda X=X, k=k, m=real_file: flowsom_labels(X, k, args.seed, m)
            )
            report(f"FlowSOM (k = {k} given)", truth, fl, fwall, fcpu, scored)
            print(f"  FlowSOM / cytomsc wall time: {fwall / wall:.2f}")


if __name__ == "__main__":
    main()
