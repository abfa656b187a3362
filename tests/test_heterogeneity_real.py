"""Heterogeneity on a real file with an expert's answer: FlowSOM's example ``68983.fcs``.

Truth: ``gatingResult.csv`` (../shared/real-fcs/FlowSOM, SOURCES.md), one manual gate per event
(B cells, CD4 and CD8 T cells, NK cells, NK T cells, gd T cells; the rest "Unlabeled"). The
panel lists the file's 8 lineage markers as ``informative``; the culture is clustered with
``--cluster all`` and k chosen by cytomsc, through the whole pipeline (automatic gates,
the file's compensation, Logicle), and scored on the exported ``cytomsc_population`` channel.
For comparison (benchmarks/bench_heterogeneity.py): FlowSOM given k = 6 reaches ARI 0.97,
F1 0.77-0.80 on the same events.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import flowkit as fk
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from cytomsc.heterogeneity import matched_f1
from cytomsc.pipeline import Options, run_batch
from cytomsc.simulate.scoring import LINEAGE_68983, lineage_panel


@pytest.fixture(scope="module")
def scored(real_fcs: Path, tmp_path_factory) -> dict:
    src = real_fcs / "FlowSOM"
    root = tmp_path_factory.mktemp("het-68983")
    data = root / "data" / "bal"
    data.mkdir(parents=True)
    shutil.copy(src / "68983.fcs", data / "68983.fcs")  # a temporary copy, never in the project
    panel = lineage_panel(root / "lineage.toml")
    run_batch(
        [root / "data"],
        root / "out",
        Options(panel=str(panel), cluster="all", export_events=True, pdf=False, jobs=1),
    )
    exported = next((root / "out").rglob("events/68983.fcs"))
    s = fk.Sample(str(exported))
    pop = s.get_events(source="raw")[:, s.pnn_labels.index("cytomsc_population")].astype(int)
    labels = np.array(
        [x.strip().strip('"') for x in (src / "gatingResult.csv").read_text().splitlines()]
    )
    assert labels.size == pop.size
    summary = json.loads((root / "out" / "summary.json").read_text())
    return {"pop": pop, "labels": labels, "culture": summary["cultures"][0]}


def test_markers_not_scatter_alone_are_clustered(scored):
    het = scored["culture"]["heterogeneity"]
    clustered = {het["names"][ch] for ch in het["channels"]}
    assert set(LINEAGE_68983) <= clustered
    assert het["tube"]


def test_agrees_with_manual_gating(scored):
    pop, labels = scored["pop"], scored["labels"]
    expert = labels != "Unlabeled"
    both = expert & (pop > 0)
    assert both.sum() >= 0.9 * expert.sum()
    ari = adjusted_rand_score(labels[both], pop[both])
    f1 = matched_f1(labels[both], pop[both])
    assert ari >= 0.90, ari
    assert f1 >= 0.85, f1
