"""Speed of the heterogeneity clustering: 1,000,000 events x 10 channels, k chosen.

Target (issue 4): <= 5 s on the 2-core reference machine. For comparison the same data go through
FlowSOM for Python (``pip install flowsom``; a benchmark-only tool, NOT a cytomsc dependency)
with the true k given to it, timed in the same run. Prints both times, the ratio and both ARIs.

    python benchmarks/bench_heterogeneity.py [--events 1000000] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import adjusted_rand_score

from cytomsc.heterogeneity import PopulationFinder


def make_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Three populations (60/30/10 %) in 10 channels: 8 markers (logicle-like) + FSC/SSC (raw),
    heavy-tailed (t, df 10) and correlated, separated by 3 SD in two channels each."""
    rng = np.random.default_rng(seed)
    d = 10
    k = 3
    labels = rng.choice(k, size=n, p=[0.6, 0.3, 0.1])
    a = rng.normal(size=(d, d)) * 0.4
    cov = a @ a.T + np.eye(d)
    sd = np.sqrt(np.diag(cov))
    corr = cov / np.outer(sd, sd)
    chol = np.linalg.cholesky(corr)
    z = rng.standard_normal((n, d)) @ chol.T
    z /= np.sqrt(rng.chisquare(10, size=(n, 1)) / 10)
    means = np.zeros((k, d))
    means[1, [2, 4]] = -3.0
    means[2, [0, 1]] = -3.0
    z += means[labels]
    scale = np.r_[26000.0, 16000.0, np.full(d - 2, 0.25)]
    centre = np.r_[130000.0, 70000.0, np.full(d - 2, 3.0)]
    return centre + scale * z, labels + 1, k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    X, truth, k = make_data(args.events, args.seed)
    print(f"data: {X.shape[0]:,} events x {X.shape[1]} channels, true k = {k}")

    # As the pipeline hands it over: scatter as log10, whose scale (log .. linear) the finder
    # then chooses; the markers as they are.
    t0 = time.perf_counter()
    X_in = X.copy()
    X_in[:, :2] = np.log10(np.maximum(X[:, :2], 1.0))
    finder = PopulationFinder(random_state=args.seed, log_columns=(0, 1)).fit(X_in)
    t_fit = time.perf_counter() - t0
    labels = finder.predict(X_in)
    t_ours = time.perf_counter() - t0
    ari_ours = adjusted_rand_score(truth, labels)
    print(f"cytomsc PopulationFinder: k found = {finder.n_populations_} "
          f"(scatter power {finder.scatter_power_:g}), "
          f"{t_ours:.2f} s (fit {t_fit:.2f} s, predict {t_ours - t_fit:.2f} s), "
          f"ARI = {ari_ours:.3f}")

    try:
        import flowsom  # noqa: F401  (benchmark only; not a project dependency)
    except ImportError:
        print("flowsom not installed: skipping the FlowSOM comparison (pip install flowsom)")
        return
    import anndata
    import flowsom as fs

    adata = anndata.AnnData(X.astype(np.float32))
    # FlowSOM expects comparable channel scales: give it the same robust scaling we use.
    med = np.median(X, axis=0)
    iqr = np.subtract(*np.percentile(X, [75, 25], axis=0)) / 1.349
    adata.X = ((X - med) / iqr).astype(np.float32)
    t0 = time.perf_counter()
    fsom = fs.FlowSOM(adata, cols_to_use=list(range(X.shape[1])), xdim=10, ydim=10,
                      n_clusters=k, seed=args.seed)
    t_fs = time.perf_counter() - t0
    meta = np.asarray(fsom.get_cell_data().obs["metaclustering"])
    ari_fs = adjusted_rand_score(truth, meta)
    print(f"FlowSOM (k = {k} given): {t_fs:.2f} s, ARI = {ari_fs:.3f}")
    print(f"ratio FlowSOM / cytomsc time: {t_fs / t_ours:.2f}")


if __name__ == "__main__":
    main()
