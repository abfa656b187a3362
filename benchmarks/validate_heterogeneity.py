"""Write docs/heterogeneity-validation.md: the confusion table of PopulationFinder on the
simulated validation grid (tests/_popsim.py, 8,000 events per culture, default parameters).

    python benchmarks/validate_heterogeneity.py
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from _popsim import validation_set  # noqa: E402
from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

from cytomsc.heterogeneity import METHOD, PopulationFinder  # noqa: E402

PIPELINE_MARK = "<!-- pipeline -->"
HEAD = """# Heterogeneity: validation of the population count

Method: `{method}` (cytomsc/heterogeneity.py). Channels are robust-scaled (median, IQR/1.349);
Gaussian mixtures (full covariance, k = 1..6) are fitted to a seeded subsample of <= 10,000 events
and the lowest BIC wins; components under 2 % are folded into their neighbour; components whose
means are closer than 1.3 (Mahalanobis, averaged covariance) are merged (a skewed or heavy-tailed
population is modelled by two overlapping Gaussians); populations whose mean bootstrap Jaccard
(20 warm-started refits on 4,000-event resamples) is under 0.75 are merged into the population they
are most confused with. Fractions carry the bootstrap 95 % percentile interval.

Phenotype label: a channel is named when the population's median lies >= 0.5 robust SD of the
whole culture from the culture median (markers "dim"/"bright", FSC "small"/"large", SSC "low
SSC"/"high SSC"), at most the 3 largest departures; "typical" otherwise, "all cells" when k = 1.
Bimodality: Hartigan's dip (effect size) and its p-value on a seeded 2,000-event subsample
(null table simulated once and embedded), "bimodal" when p < 0.05. Robust CV: MAD x 1.4826 /
median of the raw compensated values (undefined when the median is <= 0).

Simulator (tests/_popsim.py): 7 channels (FSC-A, SSC-A raw; 5 markers in logicle decades);
each population is a correlated multivariate t (df 8-20) with a sinh-arcsinh skew per channel
(scatter right-skewed), standardized so that "s SD" is s times the real within-population SD;
populations differ in width by +-15 %. Kinds: `marker` (CD90 shifted), `phenotype` (CD90 and
CD105 shifted), `size` (FSC and SSC shifted), 3 populations (phenotype + size).
"ceiling" is the ARI of a QDA trained on the true labels: what a classifier that knows the answer
reaches; no clustering can be expected to beat it. With shifts of 2 SD in one channel it is far
below 0.9, so the issue's "ARI >= 0.9" cannot be met there by any method.

"""


def main() -> None:
    rows = []
    for c in validation_set(n=8000):
        f = PopulationFinder(random_state=0).fit(c.X)
        lab = f.predict(c.X)
        ceil = 1.0
        if c.k > 1:
            ceil = adjusted_rand_score(
                c.labels, QuadraticDiscriminantAnalysis().fit(c.X, c.labels).predict(c.X))
        rows.append((c, f.n_populations_, adjusted_rand_score(c.labels, lab), ceil))
    out = [HEAD.format(method=METHOD)]
    conf = Counter((c.k, found) for c, found, _, _ in rows)
    ks = sorted({c.k for c, *_ in rows} | {f for _, f, _, _ in rows})
    out.append("## Confusion table, all cultures (rows: true k, columns: found k)\n")
    out.append("| true \\ found | " + " | ".join(map(str, ks)) + " |")
    out.append("|---" * (len(ks) + 1) + "|")
    for t in sorted({c.k for c, *_ in rows}):
        out.append(f"| {t} | " + " | ".join(str(conf[(t, f)]) for f in ks) + " |")
    for title, keep in (
        ("homogeneous", lambda c: c.k == 1),
        (">= 2 SD and >= 5 % (the issue's required set)", lambda c: c.k > 1 and c.separation >= 2),
        ("subtle: 1.5 SD", lambda c: c.k > 1 and c.separation < 2),
    ):
        sel = [r for r in rows if keep(r[0])]
        right = sum(f == r[0].k for r in sel for f in [r[1]])
        out.append(f"\n**{title}**: k right in {right}/{len(sel)} ({100 * right / len(sel):.0f} %)")
    out.append("\n## Every culture\n")
    out.append("| culture | kind | SD | fractions | true k | found k | ARI | ceiling |")
    out.append("|---|---|---|---|---|---|---|---|")
    for c, found, ari, ceil in rows:
        fr = "/".join(f"{100 * x:.0f}" for x in c.fractions)
        out.append(f"| {c.name} | {c.kind} | {c.separation:g} | {fr} | {c.k} | {found} | "
                   f"{ari:.3f} | {ceil:.3f} |")
    doc = ROOT / "docs" / "heterogeneity-validation.md"
    # The end-to-end pipeline section (tests/test_heterogeneity_pipeline.py) is kept as written.
    old = doc.read_text() if doc.exists() else ""
    keep = old[old.index(PIPELINE_MARK):] if PIPELINE_MARK in old else ""
    doc.write_text("\n".join(out) + "\n\n" + keep)
    print("\n".join(out[1:12]))


if __name__ == "__main__":
    main()
