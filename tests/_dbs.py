"""Databases for the results-store tests: a temporary SQLite file, or a fresh database on the
PostgreSQL server named by ``$CYTOMSC_TEST_PG_URL`` (``.ci/run`` starts one).

Without that variable the PostgreSQL cases skip and say why; with it set but the server not
answering they skip too, except under CI (``CI=true``), where a server that CI started and that
does not answer is a failure, not a reason to skip. ``summary_numbers`` and
``normalised_numbers`` read the same numbers from a summary document and from the store's tables.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from cytomsc import store

PG_ENV = "CYTOMSC_TEST_PG_URL"


def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test (dropped afterwards); its URL."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"no PostgreSQL server: set {PG_ENV} (.ci/run starts a local one)")
    url = sa.make_url(base)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    name = f"cytomsc_t_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as err:
        admin.dispose()
        if os.environ.get("CI") == "true":
            pytest.fail(
                f"PostgreSQL at {url.render_as_string(hide_password=True)} does not "
                f"answer under CI: {err.orig}"
            )
        pytest.skip(f"PostgreSQL at {url.render_as_string(hide_password=True)} unreachable")
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def database(kind: str, tmp_path: Path) -> Iterator[str]:
    """An SQLite file in ``tmp_path`` or a fresh PostgreSQL database (conftest's db_target)."""
    if kind == "sqlite":
        yield str(tmp_path / "results.sqlite")
    else:
        yield from postgres_database()


def normalised_numbers(engine: sa.Engine, batch_id: int) -> dict[tuple, float]:
    """Every number the normalised tables hold for a batch, keyed by its place in summary.json."""
    out: dict[tuple, float] = {}
    c, m, p, b, e, f = (
        store.culture_table,
        store.marker_table,
        store.population_table,
        store.bimodality_table,
        store.event_table,
        store.file_table,
    )
    bc, bf = store.batch_culture_table, store.batch_fraction_table
    with engine.connect() as conn:
        links = conn.execute(
            sa.select(bc.c.position, bc.c.culture_id, c.c.name)
            .join(c, c.c.id == bc.c.culture_id)
            .where(bc.c.batch_id == batch_id)
        ).all()
        for pos, cid, name in links:
            row = conn.execute(sa.select(c).where(c.c.id == cid)).one()._mapping
            for key, col in (("joint_phenotype_percent", "joint_phenotype_percent"),):
                out[("cultures", pos, key)] = row[col]
            out[("cultures", pos, "joint_phenotype_ci95", 0)] = row["joint_ci_low"]
            out[("cultures", pos, "joint_phenotype_ci95", 1)] = row["joint_ci_high"]
            for key in ("n_populations", "entropy", "effective_number"):
                out[("cultures", pos, "heterogeneity", key)] = row[key]
            for r in conn.execute(sa.select(e).where(e.c.culture_id == cid)):
                out[("cultures", pos, "events", r.stage)] = r.count
            for r in conn.execute(sa.select(f).where(f.c.culture_id == cid)):
                out[("cultures", pos, "files", r.position, "events")] = r.events
                out[("cultures", pos, "files", r.position, "data_set")] = r.data_set
            for r in conn.execute(sa.select(m).where(m.c.culture_id == cid)):
                base = ("cultures", pos, "markers", r.position)
                for key in (
                    "limit",
                    "percent_positive",
                    "threshold",
                    "control_spread_ratio",
                    "events",
                ):
                    out[(*base, key)] = getattr(r, key)
                out[(*base, "ci95", 0)], out[(*base, "ci95", 1)] = r.ci_low, r.ci_high
            for r in conn.execute(
                sa.select(p).where(p.c.culture_id == cid).order_by(p.c.population_id)
            ):
                base = ("cultures", pos, "heterogeneity", "populations", r.population_id - 1)
                out[(*base, "id")] = r.population_id
                out[(*base, "fraction")] = r.fraction
                out[(*base, "ci95", 0)], out[(*base, "ci95", 1)] = r.ci_low, r.ci_high
                for ch, v in json.loads(r.medians_json).items():
                    out[(*base, "medians", ch)] = v
                for marker, v in (json.loads(r.medians_by_marker_json) or {}).items():
                    out[(*base, "medians_by_marker", marker)] = v
            for r in conn.execute(sa.select(b).where(b.c.culture_id == cid)):
                base = ("cultures", pos, "heterogeneity", "bimodality", r.channel)
                for key in ("dip", "p_value", "robust_cv"):
                    out[(*base, key)] = getattr(r, key)
            for r in conn.execute(
                sa.select(bf).where((bf.c.batch_id == batch_id) & (bf.c.culture_id == cid))
            ):
                out[("batch_populations", "table", name, r.population_id - 1)] = r.fraction
    return out


def summary_numbers(doc: dict) -> dict[tuple, float]:
    """The same places, read from the summary document itself."""
    out: dict[tuple, float] = {}

    def walk(v: object, path: tuple) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, (*path, k))
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, (*path, i))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[path] = v

    known_marker = (
        "limit",
        "percent_positive",
        "ci95",
        "threshold",
        "control_spread_ratio",
        "events",
    )
    for pos, c in enumerate(doc["cultures"]):
        for key in ("joint_phenotype_percent", "joint_phenotype_ci95", "events", "files"):
            walk(c.get(key), ("cultures", pos, key))
        for i, m in enumerate(c.get("markers", [])):  # the columns the marker table has
            walk({k: m[k] for k in known_marker if k in m}, ("cultures", pos, "markers", i))
        het = c.get("heterogeneity") or {}
        for key in ("n_populations", "entropy", "effective_number", "bimodality"):
            walk(het.get(key), ("cultures", pos, "heterogeneity", key))
        # a population's medians_by_marker repeats its medians under marker names: the
        # population table keeps the medians (the culture's JSON, kept verbatim, has both)
        for i, p in enumerate(het.get("populations") or []):
            walk(
                {k: v for k, v in p.items() if k != "medians_by_marker"},
                ("cultures", pos, "heterogeneity", "populations", i),
            )
    walk((doc.get("batch_populations") or {}).get("table"), ("batch_populations", "table"))
    return out
