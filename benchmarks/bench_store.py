"""Results store at scale: insert and trend times for 10,000 stored cultures.

Records ``--cultures`` cultures (default 10,000) as batches of ``--batch`` (default 100), each a
summary.json document shaped like a real one (8 markers, 2 populations with medians, bimodality
of 5 channels, 2 files, the event funnel, lot/donor/passage metadata, a batch-wide population
table), then times what ``cytomsc trend`` does: reading the latest record of every lot, the
control charts and rules, and the whole report (PDF, PNGs and CSVs).

    python benchmarks/bench_store.py [--cultures 10000] [--db URL]

Without ``--db`` an SQLite file in a temporary folder is used; give a PostgreSQL URL
(``postgresql://user@host/db``, an empty database) to measure that instead.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

MARKERS = (
    ("CD105", "positive", 95.0, 99.4),
    ("CD73", "positive", 95.0, 99.5),
    ("CD90", "positive", 95.0, 99.5),
    ("CD45", "negative", 2.0, 0.6),
    ("CD34", "negative", 2.0, 0.8),
    ("CD14", "negative", 2.0, 0.6),
    ("CD19", "negative", 2.0, 1.1),
    ("HLA-DR", "negative", 2.0, 1.1),
)
CHANNELS = ("APC-A", "PE-A", "FITC-A", "FSC-A", "SSC-A")


def culture(i: int, rng: random.Random) -> dict:
    day = date(2020, 1, 1) + timedelta(days=i // 4)
    name = f"LOT{i:05d}"
    markers = []
    for k, (m, expect, limit, centre) in enumerate(MARKERS):
        pct = centre + rng.gauss(0, 0.15)
        markers.append(
            {
                "marker": m,
                "channel": f"{CHANNELS[k % 3]}",
                "expect": expect,
                "limit": limit,
                "percent_positive": round(pct, 6),
                "ci95": [round(pct - 0.1, 6), round(pct + 0.1, 6)],
                "threshold": round(rng.uniform(300, 3000), 6),
                "threshold_source": "isotype",
                "control_spread_ratio": 1.0,
                "events": 17000 + rng.randint(0, 500),
                "borderline": False,
                "tube": f"{name}_Stained.fcs",
                "pass": pct >= limit if expect == "positive" else pct <= limit,
            }
        )
    f = round(rng.uniform(0.6, 0.95), 6)
    pops = [
        {
            "id": 1,
            "fraction": f,
            "ci95": [f - 0.01, f + 0.01],
            "medians": {ch: round(rng.uniform(1e3, 1e5), 6) for ch in CHANNELS},
            "label": "typical",
        },
        {
            "id": 2,
            "fraction": round(1 - f, 6),
            "ci95": [1 - f - 0.01, 1 - f + 0.01],
            "medians": {ch: round(rng.uniform(1e3, 1e5), 6) for ch in CHANNELS},
            "label": "CD90 dim",
        },
    ]
    return {
        "culture": name,
        "output_name": name,
        "verdict": "pass",
        "borderline": False,
        "files": [
            {
                "path": f"/data/{name}/{role}.fcs",
                "role": role,
                "sha256": hashlib.sha256(f"{name}{role}".encode()).hexdigest(),
                "events": 20000,
                "cytometer": "BD LSRFortessa",
                "date": day.strftime("%d-%b-%Y").upper(),
                "data_set": 0,
            }
            for role in ("isotype", "stained")
        ],
        "events": {
            "total": 20000,
            "time_ok": 20000,
            "margin_ok": 19950,
            "cells": 18200,
            "singlets": 17500,
            "live": 17500,
        },
        "markers": markers,
        "joint_phenotype_percent": 95.0,
        "joint_phenotype_ci95": [94, 96],
        "missing_markers": [],
        "warnings": [],
        "metadata": {
            "cytometer": "BD LSRFortessa",
            "date": day.strftime("%d-%b-%Y").upper(),
            "lot": name,
            "donor": f"D{i % 40:02d}",
            "passage": str(1 + i % 8),
            "tissue": "bone marrow",
            "detachment": "TrypLE",
        },
        "heterogeneity": {
            "n_populations": 2,
            "populations": pops,
            "entropy": 0.5,
            "effective_number": 1.6,
            "bimodality": {
                ch: {"dip": 0.01, "p_value": 0.5, "bimodal": False, "robust_cv": 0.3}
                for ch in CHANNELS
            },
            "channels": list(CHANNELS),
            "names": {},
            "method": "bench",
            "n_events": 17500,
            "scatter_scale": "log",
        },
    }


def batch(start: int, n: int, rng: random.Random) -> dict:
    cultures = [culture(i, rng) for i in range(start, start + n)]
    return {
        "schema": "cytomsc.summary/2",
        "cytomsc_version": "0.1.0",
        "panel": {"id": "isct-2006", "name": "ISCT 2006", "reference": "", "sha256": "0" * 64},
        "parameters": {"panel": "isct-2006", "seed": 0},
        "cultures": cultures,
        "errors": [],
        "batch_populations": {
            "method": "bench",
            "per_culture": 5000,
            "populations": [{"id": 1, "label": "typical"}, {"id": 2, "label": "CD90 dim"}],
            "table": {c["culture"]: [0.8, 0.2] for c in cultures},
            "events": {c["culture"]: 17500 for c in cultures},
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cultures", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--db", default=None, help="SQLAlchemy URL (default: a temporary SQLite)")
    args = ap.parse_args()
    from cytomsc import store
    from cytomsc.history import load_lots
    from cytomsc.trend import build_trend, write_trend

    with tempfile.TemporaryDirectory() as tmp:
        target = args.db or str(Path(tmp) / "bench.sqlite")
        rng = random.Random(0)
        docs = [
            batch(s, min(args.batch, args.cultures - s), rng)
            for s in range(0, args.cultures, args.batch)
        ]
        engine = store.connect(target, write=True)
        t0 = time.perf_counter()
        for d in docs:
            store.record_summary(engine, d)
        t_insert = time.perf_counter() - t0
        t0 = time.perf_counter()
        for d in docs[:10]:  # reruns: found, nothing added
            store.record_summary(engine, d)
        t_rerun = (time.perf_counter() - t0) / 10
        engine.dispose()
        size = Path(target).stat().st_size / 2**20 if not args.db else float("nan")

        reader = store.connect(target, write=False)
        t0 = time.perf_counter()
        lots = load_lots(reader)
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        trend = build_trend(lots, source="bench")
        t_rules = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_trend(trend, Path(tmp) / "trend")
        t_report = time.perf_counter() - t0
        cut = lots[-500].when if len(lots) > 500 else lots[0].when
        since = load_lots(reader, since=cut)
        t0 = time.perf_counter()
        write_trend(build_trend(since, source="bench"), Path(tmp) / "trend-since")
        t_since = time.perf_counter() - t0
        reader.dispose()
    n = args.cultures
    print(f"database: {store.shown(store.database_url(target)) if args.db else 'SQLite file'}")
    print(
        f"insert {n:,} cultures in {len(docs)} batches: {t_insert:.1f} s "
        f"({1000 * t_insert / n:.2f} ms a culture)"
        + (f", file {size:.0f} MiB" if size == size else "")
    )
    print(f"rerun of a stored batch ({args.batch} cultures, nothing added): {t_rerun:.3f} s")
    print(
        f"trend: read {len(lots):,} lots {t_load:.2f} s, charts and rules "
        f"{t_rules:.2f} s, report (PDF, {len(trend.charts)} PNG charts, CSVs) {t_report:.1f} s"
    )
    print(f"trend --since {cut.isoformat()} ({len(since):,} lots): report {t_since:.1f} s")


if __name__ == "__main__":
    main()
