"""Write docs/heterogeneity-validation.md: the populations found against known truth.

Every set is printed as a confusion table (rows: true k, columns: found k) and per culture:

1. The pipeline on the project simulator's ``heterogeneity`` preset (40 cultures: real gates,
   compensation and transforms; a doublet-rich homogeneous culture and a Stemflow-kit layout
   among them), asserted in tests/test_heterogeneity_pipeline.py.
2. The stress grid (cytomsc/simulate/populations.py, ``shape="heavy"``, seed 1000): 67 cultures
   whose populations each have their own correlation, width, t tails (df 8-20) and skew,
   asserted in tests/test_heterogeneity_grid.py.
3. The held-out grid (``shape="skewed"``, seed 5000: t tails of 4-8 df, twice the skew), made
   after the method was chosen and never used to tune it.
4. The scatter scale (linear or log FSC/SSC).
5. ``68983.fcs`` against its manual gating, when ../shared/real-fcs is present.

Run: python benchmarks/validate_heterogeneity.py  (10-15 minutes on 2 cores)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import adjusted_rand_score

from cytomsc.heterogeneity import METHOD, matched_f1
from cytomsc.pipeline import Options, run_batch
from cytomsc.populations import PopulationFinder
from cytomsc.simulate import write_preset
from cytomsc.simulate.populations import pipeline_view, simulate, stress_grid
from cytomsc.simulate.scoring import (
    culture_rows,
    grid_row,
    lineage_panel,
    required,
)

ROOT = Path(__file__).resolve().parent.parent


def confusion(pairs: list[tuple[int, int]]) -> list[str]:
    found = sorted({f for _, f in pairs} | {t for t, _ in pairs})
    count = Counter(pairs)
    lines = [
        "| true \\ found | " + " | ".join(map(str, found)) + " |",
        "|---|" + "---|" * len(found),
    ]
    for t in sorted({t for t, _ in pairs}):
        lines.append(f"| {t} | " + " | ".join(str(count[(t, f)]) for f in found) + " |")
    return lines


def _grid_row(args: tuple[str, int, int]) -> dict[str, Any]:
    shape, seed, i = args
    return grid_row(stress_grid(shape, seed=seed)[i])


def grid_section(title: str, text: str, shape: str, seed: int) -> list[str]:
    n = len(stress_grid(shape, seed=seed))
    with Pool(2) as pool:
        rows = pool.map(_grid_row, [(shape, seed, i) for i in range(n)])
    homo = [r for r in rows if r["k"] == 1]
    req = [r for r in rows if r["required"]]
    right = [r for r in req if r["found"] == r["k"]]
    near = [r for r in right if r["ari"] >= r["ceiling"] - 0.05]
    out = ["", title, "", text, ""]
    out += confusion([(r["k"], r["found"]) for r in rows])
    out += [
        "",
        f"- Homogeneous found as one: {sum(r['found'] == 1 for r in homo)}/{len(homo)}.",
        f"- Required set (>= 3.5 SD apart, >= 5 %), right number: {len(right)}/{len(req)}; "
        f"of those, ARI within 0.05 of the ceiling: {len(near)}/{len(right)}, within 0.1: "
        f"{sum(r['ari'] >= r['ceiling'] - 0.1 for r in right)}/{len(right)}.",
        f"- Below it (2-3 SD, or under 5 %), right number: "
        f"{sum(r['found'] == r['k'] for r in rows if r['k'] > 1 and not r['required'])}/"
        f"{sum(r['k'] > 1 and not r['required'] for r in rows)}; more populations than there "
        f"are: {sum(r['found'] > r['k'] for r in rows if r['k'] > 1 and not r['required'])}.",
        "",
        "| culture | true k | found k | ARI | ceiling |",
        "|---|---|---|---|---|",
    ]
    out += [
        f"| {r['name']} | {r['k']} | {r['found']} | {r['ari']:.2f} | {r['ceiling']:.2f} |"
        for r in rows
    ]
    return out


def preset_section() -> list[str]:
    out = [
        "## 1. The pipeline on the simulator's `heterogeneity` preset",
        "",
        "40 cultures of 10,000 events (8 homogeneous and one with 15 % doublets; 2 populations "
        "50/20/5 % apart by 5, 3, 2 or 1.5 SD in CD105 or CD90; 3 populations; size-only "
        "differences; a Stemflow-kit culture of three populations 4 SD apart), through the "
        "whole pipeline. ARI on the events both the truth and the pipeline call intact live "
        "single MSCs; the ceiling is a QDA trained on the true labels (what a rule that knows "
        "the answer reaches).",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        data, res = Path(tmp) / "data", Path(tmp) / "out"
        write_preset(data, preset="heterogeneity", seed=0)
        run_batch([data], res, Options(jobs=2, pdf=False, export_events=True, cluster="all"))
        rows = culture_rows(data, res)
    homo = [r for r in rows if r["true_k"] == 1]
    req = [r for r in rows if required(r)]
    right = [r for r in req if r["found_k"] == r["true_k"]]
    out += confusion([(r["true_k"], r["found_k"]) for r in rows])
    out += [
        "",
        f"- Homogeneous cultures found as one population: "
        f"{sum(r['found_k'] == 1 for r in homo)}/{len(homo)}.",
        f"- Required set (>= 2 SD apart in one dimension, >= 5 % of cells), right number: "
        f"{len(right)}/{len(req)}; of those, ARI within 0.1 of the ceiling: "
        f"{sum(r['ari'] >= r['ceiling'] - 0.1 for r in right)}/{len(right)}.",
        f"- Subtle set (1.5 SD), right number: "
        f"{sum(r['found_k'] == r['true_k'] for r in rows if r['tags'].get('separation_sd') == 1.5)}"
        f"/{sum(r['tags'].get('separation_sd') == 1.5 for r in rows)}.",
        "",
        "A 50/50 mixture of two Gaussians 2 SD apart has a flat-topped, unimodal density, and a "
        "20 % or 10 % population 2 SD away is a shoulder. A method that must not split one "
        "skewed population cannot see these reliably: the 2-SD cultures are where it misses a "
        "population or draws the boundary off the Gaussian one.",
        "",
        "| culture | true k | found k | ARI | ceiling |",
        "|---|---|---|---|---|",
    ]
    out += [
        f"| {r['culture']} | {r['true_k']} | {r['found_k']} | {r['ari']:.2f} | {r['ceiling']:.2f} |"
        for r in rows
    ]
    return out


def scatter_scale_section() -> list[str]:
    out = [
        "",
        "## 4. The scatter scale: linear or log",
        "",
        "Cell size is log-normal on some instruments and closer to Gaussian on the linear scale "
        "on others. The FSC/SSC scale is chosen per culture (Box-Cox power 0 = log, 0.5, 1 = "
        "linear) by BIC with the transform's Jacobian, before the populations are built. 6 "
        'cultures of 10,000 events per row (`shape="gaussian"`).',
        "",
        "| cultures | scatter | true k | scale chosen | found right |",
        "|---|---|---|---|---|",
    ]
    designs = [
        ("homogeneous", (1.0,), [{}]),
        ("10 % smaller cells, 3.5 SD", (0.9, 0.1), [{}, {"FSC-A": -3.5, "SSC-A": -3.5}]),
        ("5 % CD90 dim, 3.5 SD", (0.95, 0.05), [{}, {"FITC-A": -3.5}]),
    ]
    for name, fractions, shifts in designs:
        for scatter in ("normal", "lognormal"):
            right = 0
            powers: Counter = Counter()
            for i in range(6):
                c = simulate(
                    name,
                    fractions,
                    shifts,
                    n=10000,
                    seed=7000 + i,
                    shape="gaussian",
                    scatter=scatter,
                )
                X, _, _ = pipeline_view(c)
                f = PopulationFinder(random_state=0, log_columns=(0, 1), n_bootstrap=0).fit(X)
                right += f.n_populations_ == c.k
                powers[f.scatter_power_] += 1
            chosen = ", ".join(f"{p:g} ({n})" for p, n in sorted(powers.items()))
            out.append(f"| {name} | {scatter} | {len(fractions)} | {chosen} | {right}/6 |")
    return out


def real_section() -> list[str]:
    env = os.environ.get("CYTOMSC_REAL_FCS")
    src = (Path(env) if env else ROOT.parent / "shared" / "real-fcs") / "FlowSOM"
    out = ["", "## 5. A real file: FlowSOM's `68983.fcs` against its manual gating", ""]
    if not (src / "68983.fcs").is_file():
        return [*out, "Not run: ../shared/real-fcs is absent."]
    import flowkit as fk

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data" / "bal"
        data.mkdir(parents=True)
        shutil.copy(src / "68983.fcs", data / "68983.fcs")
        panel = lineage_panel(Path(tmp) / "lineage.toml")
        run_batch(
            [Path(tmp) / "data"],
            Path(tmp) / "out",
            Options(panel=str(panel), cluster="all", export_events=True, pdf=False),
        )
        s = fk.Sample(str(next((Path(tmp) / "out").rglob("events/68983.fcs"))))
        pop = s.get_events(source="raw")[:, s.pnn_labels.index("cytomsc_population")]
    pop = pop.astype(int)
    truth = np.array(
        [x.strip().strip('"') for x in (src / "gatingResult.csv").read_text().splitlines()]
    )
    expert = truth != "Unlabeled"
    both = expert & (pop > 0)
    out += [
        "Through `cytomsc analyze --cluster all` with a panel listing the 8 lineage markers as "
        "`informative` (tests/test_heterogeneity_real.py), k chosen by cytomsc, scored on the "
        "labelled events against `gatingResult.csv`:",
        "",
        f"- labelled events clustered: {both.sum():,} of {expert.sum():,} "
        f"({both.sum() / expert.sum():.1%}); populations found: {pop.max()}",
        f"- ARI {adjusted_rand_score(truth[both], pop[both]):.3f}, mean F1 (one-to-one "
        f"matched) {matched_f1(truth[both], pop[both]):.3f}",
        "",
        "| found population | events | expert's populations in it |",
        "|---|---|---|",
    ]
    for p in range(1, pop.max() + 1):
        inside = Counter(truth[pop == p]).most_common(3)
        out.append(
            f"| P{p} | {(pop == p).sum():,} | "
            + ", ".join(f"{name} {n:,}" for name, n in inside)
            + " |"
        )
    return out


def main() -> None:
    out = [
        "# Heterogeneity: validation of the populations found",
        "",
        f"Method: {METHOD} (cytomsc/populations.py, mixture.py, split_test.py). Generated by "
        "`python benchmarks/validate_heterogeneity.py`.",
        "",
    ]
    out += preset_section()
    out += grid_section(
        "## 2. The stress grid: heavy-tailed, skewed populations of different shapes",
        '67 cultures of 8,000 events (`stress_grid("heavy", seed=1000)`): 12 homogeneous; '
        "two populations differing in one marker, two markers or size, 5/15/50 %, 5-2 SD; "
        "three populations. Each population has its own correlation matrix and width, "
        "multivariate-t tails (df 8-20) and a sinh-arcsinh skew.",
        "heavy",
        1000,
    )
    out += grid_section(
        "## 3. Held out: heavier tails, twice the skew",
        'The same design with `shape="skewed"` and seed 5000 (t tails of 4-8 df, marker skew '
        "up to 0.4 and scatter skew 0.3-0.5), made after the method was chosen and never used "
        "to tune it.",
        "skewed",
        5000,
    )
    out += scatter_scale_section()
    out += real_section()
    doc = ROOT / "docs" / "heterogeneity-validation.md"
    doc.write_text("\n".join(out) + "\n")
    print(doc.read_text())


if __name__ == "__main__":
    main()
