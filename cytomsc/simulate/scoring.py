"""A pipeline run scored against a simulated preset's truth: the heterogeneity validation's
numbers (tests/test_heterogeneity_pipeline.py asserts them; benchmarks/validate_heterogeneity.py
writes them into docs/heterogeneity-validation.md).

Truth: truth.json's ``n_populations`` per culture and the per-event labels of the stained tube
('1'-'9' = intact live single MSC of that population). The ARI is taken on the events that both
the truth and the pipeline call intact live single MSCs (label digit and population > 0). The
"ceiling" is the ARI of a QDA trained on the true labels of those same events: what a rule that
knows the answer reaches (two Gaussians 2 SD apart overlap ~16 % each way, so no clustering can
reach ARI 0.9 there). Needs scikit-learn (``pip install "cytomsc[validation]"``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LINEAGE_68983", "culture_rows", "grid_row", "lineage_panel", "required"]

# the 8 lineage markers of FlowSOM's example 68983.fcs (../shared/real-fcs/FlowSOM)
LINEAGE_68983 = ("CD3", "CD4", "CD8", "CD19", "CD45", "TCRb", "TCRgd", "NK1.1")


def culture_rows(data: Path, out: Path) -> list[dict[str, Any]]:
    """Per culture: truth k, found k, tags, ARI, QDA ceiling, and event counts. ``data`` holds the
    preset (truth.json), ``out`` a run over it with ``--export-events``."""
    import flowkit as fk
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
    from sklearn.metrics import adjusted_rand_score

    truth = json.loads((data / "truth.json").read_text())["cultures"]
    summary = json.loads((out / "summary.json").read_text())
    found = {c["culture"]: c for c in summary["cultures"]}
    rows = []
    for t in truth:
        res = found[t["culture"]]
        het = res.get("heterogeneity")
        tube = next(u for u in t["tubes"] if u["role"] == "stained")
        sample = fk.Sample(str(out / res["output_name"] / "events" / tube["file"]))
        ev = sample.get_events(source="raw")
        pop = ev[:, sample.pnn_labels.index("cytomsc_population")].astype(int)
        lab = np.frombuffer(tube["labels"].encode("ascii"), dtype=np.uint8)
        is_msc = (lab >= ord("1")) & (lab <= ord("9"))
        both = is_msc & (pop > 0)
        y = (lab[both] - ord("0")).astype(int)
        ari = adjusted_rand_score(y, pop[both])
        ceiling = 1.0
        if t["n_populations"] > 1:
            # Supervised ceiling on the same events and the same channels the pipeline clustered.
            cols = [sample.pnn_labels.index(c) for c in het["channels"]]
            feats = ev[both][:, cols]
            feats = np.sign(feats) * np.log1p(np.abs(feats))
            qda = QuadraticDiscriminantAnalysis(reg_param=1e-3).fit(feats, y)
            ceiling = adjusted_rand_score(y, qda.predict(feats))
        rows.append(
            {
                "culture": t["culture"],
                "true_k": t["n_populations"],
                "found_k": het["n_populations"] if het else 0,
                "tags": t["tags"],
                "fractions": t["population_fractions"],
                "ari": ari,
                "ceiling": ceiling,
                "clustered": int((pop > 0).sum()),
                "max_id": int(pop.max()),
                "clustered_msc": int(both.sum()),
                "msc": int(is_msc.sum()),
                "clustered_names": [het["names"].get(c, c) for c in het["channels"]] if het else [],
                "tube": het["tube"] if het else "",
            }
        )
    return rows


def required(row: dict[str, Any]) -> bool:
    """The issue's required set: >= 2 SD apart in at least one dimension, >= 5 % of cells."""
    tags = row["tags"]
    return bool(
        row["true_k"] > 1 and tags.get("separation_sd", 0) >= 2 and tags.get("minor", 0) >= 0.05
    )


def grid_row(culture: Any) -> dict[str, Any]:
    """One stress-grid culture (``populations.stress_grid``) clustered as the pipeline clusters
    it, scored: the number found, the ARI, the QDA ceiling, and whether the issue's required
    set holds it (>= 3.5 SD apart, >= 5 % of cells)."""
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
    from sklearn.metrics import adjusted_rand_score

    from ..populations import PopulationFinder
    from .populations import pipeline_view

    X, _, _ = pipeline_view(culture)
    finder = PopulationFinder(random_state=0, log_columns=(0, 1), n_bootstrap=0).fit(X)
    labels = finder.predict(X)
    ceiling = 1.0
    if culture.k > 1:
        qda = QuadraticDiscriminantAnalysis(reg_param=1e-3).fit(X, culture.labels)
        ceiling = adjusted_rand_score(culture.labels, qda.predict(X))
    return {
        "name": culture.name,
        "k": culture.k,
        "found": finder.n_populations_,
        "ari": adjusted_rand_score(culture.labels, labels),
        "ceiling": ceiling,
        "required": culture.k > 1 and culture.separation >= 3.5 and min(culture.fractions) >= 0.05,
    }


def lineage_panel(path: Path) -> Path:
    """A panel TOML listing 68983's lineage markers as ``informative``, as a lab would write it
    (the file's $PnS spell TCRgd as TCRyd and NK1.1 as NK1/1)."""
    lines = [
        'id = "lineage-68983"',
        'name = "FlowSOM example lineage panel"',
        'reference = "FlowSOM example 68983.fcs"',
        "[aliases]",
        'TCRgd = ["TCRyd"]',
        '"NK1.1" = ["NK1/1"]',
    ]
    for m in LINEAGE_68983:
        lines += ["[[criterion]]", f'markers = ["{m}"]', 'expect = "informative"']
    path.write_text("\n".join(lines) + "\n")
    return path
