"""The results store (cytomsc/store.py) on SQLite and on a live PostgreSQL.

The summaries here go through ``results.to_dict`` (the very code that writes summary.json), with
keys added that today's summary.json does not have, as other issues add them: the store must keep
them. tests/test_history_pipeline.py does the same with a real analysis.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from _dbs import normalised_numbers, summary_numbers

from cytomsc import store
from cytomsc.errors import CytomscError
from cytomsc.options import Options
from cytomsc.results import (
    BatchPopulation,
    BatchPopulations,
    BatchResult,
    Bimodality,
    CultureResult,
    FileInfo,
    HeterogeneityResult,
    InputError,
    MarkerResult,
    PanelInfo,
    Population,
    to_dict,
)

MARKERS = (
    ("CD73", "positive", 95.0),
    ("CD90", "positive", 95.0),
    ("CD105", "positive", 95.0),
    ("CD45", "negative", 2.0),
    ("HLA-DR", "negative", 2.0),
)


def _sha(*parts: object) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def make_summary(tag: str, n: int = 3, seed: int = 0, shared: int = 0) -> dict:
    """A summary.json document of ``n`` cultures with every kind of number summary.json has.
    The first ``shared`` cultures do not depend on ``tag`` (the same inputs in two batches)."""
    rng = random.Random(f"{tag}:{seed}")
    cultures = []
    for i in range(n):
        name = f"C{i}" if i < shared else f"{tag}-C{i}"
        crng = random.Random(name) if i < shared else rng
        files = [
            FileInfo(
                path=f"/data/{name}/{role}.fcs",
                role=role,
                sha256=_sha(name, role),
                events=crng.randint(5000, 30000),
                cytometer="BD LSRFortessa",
                date="15-JAN-2025",
            )
            for role in ("isotype", "stained")
        ]
        markers = []
        for m, expect, limit in MARKERS:
            pct = crng.uniform(98, 100) if expect == "positive" else crng.uniform(0, 2)
            markers.append(
                MarkerResult(
                    marker=m,
                    channel=f"{m}-A",
                    expect=expect,
                    limit=limit,
                    percent_positive=pct,
                    ci95=(pct - crng.random() / 3, pct + crng.random() / 3),
                    threshold=crng.uniform(100, 5000),
                    threshold_source="isotype",
                    control_spread_ratio=1.0 + crng.random(),
                    events=crng.randint(5000, 20000),
                    passed=True,
                    borderline=False,
                    tube=f"{name}_Stained.fcs",
                )
            )
        f1 = crng.uniform(0.5, 0.9)
        het = HeterogeneityResult(
            n_populations=2,
            populations=[
                Population(
                    1,
                    f1,
                    (f1 - 0.02, f1 + 0.02),
                    {"CD90-A": crng.uniform(1e4, 1e5), "FSC-A": 90000.5},
                    "typical",
                ),
                Population(
                    2,
                    1 - f1,
                    (1 - f1 - 0.02, 1 - f1 + 0.02),
                    {"CD90-A": crng.uniform(1e3, 1e4), "FSC-A": 70000.25},
                    "CD90 dim",
                ),
            ],
            entropy=crng.random(),
            effective_number=1 + crng.random(),
            bimodality={
                "CD90-A": Bimodality(
                    dip=crng.random() / 10,
                    p_value=crng.random(),
                    bimodal=True,
                    robust_cv=crng.random(),
                )
            },
            channels=["CD90-A", "FSC-A"],
            method="test",
            n_events=crng.randint(1000, 9000),
            names={"CD90-A": "CD90", "FSC-A": "FSC"},
            scatter_scale="log",
        )
        cultures.append(
            CultureResult(
                culture=name,
                verdict="pass",
                borderline=False,
                files=files,
                events={
                    "total": 20000,
                    "time_ok": 19990,
                    "margin_ok": 19900,
                    "cells": 18000,
                    "singlets": 17500,
                    "live": 17500,
                },
                markers=markers,
                joint_phenotype_percent=crng.uniform(90, 99),
                joint_phenotype_ci95=(90.0, 99.0),
                warnings=["a warning"],
                metadata={
                    "cytometer": "BD LSRFortessa",
                    "date": f"{10 + i:02d}-FEB-2025",
                    "lot": name,
                    "donor": "D01",
                    "passage": f"P{i + 1}",
                    "tissue": "bone marrow",
                    "detachment": "TrypLE",
                },
                heterogeneity=het,
                output_name=name,
            )
        )
    batch = BatchResult(
        cytomsc_version="0.1.0",
        panel=PanelInfo("isct-2006", "ISCT 2006", "Dominici 2006", "", _sha("panel")),
        parameters=Options(seed=seed).as_parameters(),
        cultures=cultures,
        errors=[InputError("/data/bad.fcs", "not an FCS file")],
        batch_populations=BatchPopulations(
            method="joint",
            per_culture=5000,
            populations=[BatchPopulation(1, "typical"), BatchPopulation(2, "CD90 dim")],
            table={c.culture: [0.7 + 0.01 * k, 0.3 - 0.01 * k] for k, c in enumerate(cultures)},
            events={c.culture: 17500 for c in cultures},
        ),
    )
    doc = json.loads(json.dumps(to_dict(batch)))
    # fields other issues are adding to summary.json: kept without being known
    doc["cultures"][0]["operator"] = "J. Doe"
    doc["cultures"][0]["markers"][0]["borderline_rule"] = {"points": 1.0}
    doc["report"] = {"csv": "per-culture.csv", "scale": 0.125}
    return doc


def _count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


# ---- round trip -------------------------------------------------------------------------------
def test_round_trip_keeps_every_number_and_unknown_keys(db_target: str) -> None:
    doc = make_summary("A", n=4)
    engine = store.connect(db_target, write=True)
    rec = store.record_summary(engine, doc)
    back = store.load_summary(engine, rec.batch_id)
    assert back == doc
    assert json.dumps(back) == json.dumps(doc)  # key order too
    assert back["cultures"][0]["operator"] == "J. Doe"
    assert back["report"] == {"csv": "per-culture.csv", "scale": 0.125}
    expected = summary_numbers(doc)
    got = normalised_numbers(engine, rec.batch_id)
    # every number of the normalised parts, exactly (doubles both ways)
    assert set(got) >= set(expected)
    assert {k: got[k] for k in expected} == expected
    assert len(expected) > 200
    engine.dispose()


def test_metadata_columns(db_target: str) -> None:
    engine = store.connect(db_target, write=True)
    store.record_summary(engine, make_summary("M", n=2))
    with engine.connect() as conn:
        rows = conn.execute(sa.select(store.culture_table).order_by(store.culture_table.c.id)).all()
    r = rows[1]._mapping
    assert (
        r["lot"],
        r["donor"],
        r["passage"],
        r["passage_text"],
        r["tissue"],
        r["detachment"],
    ) == ("M-C1", "D01", 2, "P2", "bone marrow", "TrypLE")
    assert r["acquired"].isoformat() == "2025-02-11"
    assert r["panel_id"] == "isct-2006" and r["panel_sha256"] == _sha("panel")
    assert r["cytomsc_version"] == "0.1.0"
    engine.dispose()


# ---- reruns ------------------------------------------------------------------------------------
def test_rerun_adds_nothing_and_shared_cultures_are_linked(db_target: str) -> None:
    engine = store.connect(db_target, write=True)
    first = store.record_summary(engine, make_summary("A", n=3, shared=2))
    counts = {t.name: _count(engine, t) for t in store.metadata.sorted_tables}
    again = store.record_summary(engine, make_summary("A", n=3, shared=2))
    assert (again.new_batch, again.batch_id, again.cultures_added) == (False, first.batch_id, 0)
    assert {t.name: _count(engine, t) for t in store.metadata.sorted_tables} == counts
    # another batch with the same two first cultures: they are linked, not copied
    other_doc = make_summary("B", n=3, shared=2)
    other_doc["cultures"][0]["output_name"] = "C0-2"  # batch-specific: kept for that batch
    other = store.record_summary(engine, other_doc)
    assert (other.new_batch, other.cultures_added, other.cultures_known) == (True, 1, 2)
    assert _count(engine, store.culture_table) == 4
    assert _count(engine, store.marker_table) == 4 * len(MARKERS)
    assert _count(engine, store.batch_culture_table) == 6
    assert store.load_summary(engine, other.batch_id) == other_doc
    assert store.load_summary(engine, first.batch_id) == make_summary("A", n=3, shared=2)
    engine.dispose()


def test_new_parameters_are_a_new_analysis(db_target: str) -> None:
    engine = store.connect(db_target, write=True)
    a = store.record_summary(engine, make_summary("S", n=2, seed=0))
    b = store.record_summary(engine, make_summary("S", n=2, seed=1))
    assert a.batch_id != b.batch_id and b.cultures_added == 2
    engine.dispose()


# ---- concurrent writers ------------------------------------------------------------------------
WRITER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from cytomsc import store
    target, docs, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    while not go.exists():
        time.sleep(0.01)
    engine = store.connect(target, write=True)   # both may find no schema yet
    for line in docs.read_text().splitlines():
        store.record_summary(engine, json.loads(line))
""")


@pytest.mark.slow
def test_two_writer_processes_keep_every_row(db_target: str, tmp_path: Path) -> None:
    n_batches, n_cultures = 12, 3
    go = tmp_path / "go"
    procs = []
    for w in ("P", "Q"):
        docs = tmp_path / f"{w}.jsonl"
        lines = [json.dumps(make_summary(f"{w}{k}", n=n_cultures)) for k in range(n_batches)]
        lines.append(json.dumps(make_summary("same", n=n_cultures)))  # both write this one
        docs.write_text("\n".join(lines) + "\n")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WRITER, db_target, str(docs), str(go)],
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    time.sleep(0.5)
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    engine = store.connect(db_target, write=False)
    assert _count(engine, store.batch_table) == 2 * n_batches + 1
    assert _count(engine, store.culture_table) == (2 * n_batches + 1) * n_cultures
    assert _count(engine, store.marker_table) == (2 * n_batches + 1) * n_cultures * len(MARKERS)
    assert _count(engine, store.batch_fraction_table) == (2 * n_batches + 1) * n_cultures * 2
    for bid in store.batch_ids(engine):
        doc = store.load_summary(engine, bid)
        tag = doc["cultures"][0]["culture"].rsplit("-", 1)[0]
        assert doc == make_summary(tag, n=n_cultures)
    engine.dispose()


# ---- schema version and migrations -------------------------------------------------------------
def test_schema_version_written_and_newer_refused(tmp_path: Path) -> None:
    target = str(tmp_path / "v.sqlite")
    engine = store.connect(target, write=True)
    with engine.begin() as conn:
        assert (
            conn.execute(sa.select(store.schema_table.c.version)).scalar_one()
            == store.SCHEMA_VERSION
        )
        conn.execute(store.schema_table.update().values(version=store.SCHEMA_VERSION + 1))
    engine.dispose()
    for write in (True, False):
        with pytest.raises(CytomscError, match="newer cytomsc"):
            store.connect(target, write=write)


def test_older_store_is_migrated_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = str(tmp_path / "m.sqlite")
    engine = store.connect(target, write=True)
    store.record_summary(engine, make_summary("old", n=2))
    engine.dispose()
    calls = []

    def step(conn: sa.Connection) -> None:  # what a real step does: change a table
        calls.append(1)
        conn.execute(sa.text("CREATE INDEX ix_test_lot_donor ON cytomsc_culture (lot, donor)"))

    monkeypatch.setattr(store, "SCHEMA_VERSION", store.SCHEMA_VERSION + 1)
    monkeypatch.setattr(store, "MIGRATIONS", {store.SCHEMA_VERSION - 1: step})
    with pytest.raises(CytomscError, match="older than this cytomsc"):
        store.connect(target, write=False)  # a reader does not migrate
    engine = store.connect(target, write=True)
    engine.dispose()
    engine = store.connect(target, write=True)  # already migrated: the step does not run again
    assert calls == [1]
    with engine.connect() as conn:
        assert (
            conn.execute(sa.select(store.schema_table.c.version)).scalar_one()
            == store.SCHEMA_VERSION
        )
        names = {ix["name"] for ix in sa.inspect(conn).get_indexes("cytomsc_culture")}
    assert "ix_test_lot_donor" in names
    assert store.load_summary(engine, 1) == make_summary("old", n=2)
    engine.dispose()


# ---- the edges ---------------------------------------------------------------------------------
def test_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(CytomscError, match="no results database here"):
        store.connect(str(tmp_path / "missing.sqlite"), write=False)
    with pytest.raises(CytomscError, match="folder does not exist"):
        store.connect(str(tmp_path / "no" / "such" / "db.sqlite"), write=True)
    other = tmp_path / "other.sqlite"
    other.write_bytes(b"")  # an empty file: SQLite opens it, but it is not ours
    with pytest.raises(CytomscError, match="not a cytomsc results database"):
        store.connect(str(other), write=False)
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not a database at all " * 100)
    with pytest.raises(CytomscError) as err:
        store.connect(str(junk), write=True)
    assert "\n" not in err.value.message and str(junk) in err.value.message
    with pytest.raises(CytomscError, match="no database driver"):
        store.connect("mysql+nosuchdriver://u@localhost/db", write=True)


def test_postgres_url_without_driver_uses_psycopg() -> None:
    url = store.database_url("postgresql://u:secret@db.example/cytomsc")
    assert url.drivername == "postgresql+psycopg"
    assert "secret" not in store.shown(url)
    assert store.database_url("results.sqlite").drivername == "sqlite"


def test_record_results_reads_only(tmp_path: Path, db_target: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    doc = make_summary("R", n=2)
    text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
    (out / "summary.json").write_text(text)
    (out / "R-C0.pdf").write_bytes(b"%PDF-1.4 test")
    (out / "run.json").write_text(
        json.dumps(
            {"cytomsc_version": "0.1.0", "outputs": ["summary.json", "R-C0.pdf", "../outside.txt"]}
        )
    )
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rec = store.record_results(db_target, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    engine = store.connect(db_target, write=False)
    with engine.connect() as conn:
        outputs = dict(
            conn.execute(sa.select(store.output_table.c.path, store.output_table.c.sha256)).all()
        )
        sha = conn.execute(sa.select(store.batch_table.c.summary_sha256)).scalar_one()
    assert outputs == {
        "summary.json": hashlib.sha256(text.encode()).hexdigest(),
        "R-C0.pdf": hashlib.sha256(b"%PDF-1.4 test").hexdigest(),
    }
    assert sha == outputs["summary.json"]
    assert store.load_summary(engine, rec.batch_id) == doc
    engine.dispose()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15-JAN-2025", "2025-01-15"),
        ("2025-03-04", "2025-03-04"),
        ("04-Mar-25", "2025-03-04"),
        ("", None),
        ("yesterday", None),
    ],
)
def test_parse_date(text: str, expected: str | None) -> None:
    got = store.parse_date(text)
    assert (got.isoformat() if got else None) == expected


def test_parse_passage() -> None:
    assert [store.parse_passage(t) for t in ("5", "P5", "p05", "passage 12", "n/a", None)] == [
        5,
        5,
        5,
        12,
        None,
        None,
    ]


def test_analyze_refuses_a_database_it_cannot_open_before_any_work(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cytomsc.cli import main

    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "analyze",
            str(tmp_path),
            "-o",
            str(out),
            "--db",
            str(tmp_path / "no" / "such" / "db.sqlite"),
        ],
    )
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "--db" in result.output
    assert not out.exists()


def test_lot_and_donor_under_other_column_names(tmp_path: Path) -> None:
    doc = make_summary("V", n=1)
    meta = doc["cultures"][0]["metadata"]
    for key in ("lot", "donor", "passage"):
        meta.pop(key)
    meta.update({"Lot_Number": "LN-7", "Donor ID": "D42", "Passage number": "p06"})
    engine = store.connect(str(tmp_path / "v.sqlite"), write=True)
    store.record_summary(engine, doc)
    with engine.connect() as conn:
        r = conn.execute(sa.select(store.culture_table)).one()._mapping
    assert (r["lot"], r["lot_key"], r["donor"], r["passage"]) == ("LN-7", "LN-7", "D42", 6)
    engine.dispose()
