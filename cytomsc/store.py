"""The results store: every analysed batch kept in one database, so lots can be trended.

``cytomsc analyze ... --db TARGET`` records the batch once its results are written; ``cytomsc
trend`` and ``cytomsc compare-lots`` read it back (``history.py``). TARGET is a file path (an
embedded SQLite database, made on first use) or any SQLAlchemy URL (``postgresql://user@host/db``
is read with the psycopg driver).

**What is kept.** summary.json as it was written (its bytes' SHA-256 too), read tolerantly: the
batch's own keys and each culture's full JSON are kept verbatim in one column each, so fields
that summary.json gains later are never lost, and :func:`load_summary` gives the document back
exactly. Beside them, normalised tables hold what trends query: cultures with their lot, donor,
passage, tissue, detachment and verdict; markers; populations; bimodality; the event funnel;
input files with their SHA-256; the batch-wide population fractions; and each output file's
SHA-256. Every number in those tables is the one in summary.json (floats as doubles).

**Keys.** A culture is keyed by its inputs and how they were analysed: the SHA-256 and role of
each input file, its name and metadata, the parameters, the panel's SHA-256 and the cytomsc
version. A batch is keyed by its cultures' keys in order plus the same parameters. Recording a
rerun adds nothing; a culture met again in another batch is linked to that batch, not copied.

**Concurrent writers.** A recording is one transaction that first takes the database's write
lock (SQLite: ``BEGIN IMMEDIATE``, waiting up to two minutes; PostgreSQL: a transaction-level
advisory lock), so two analyses finishing at once are written one after the other and neither
loses rows. Other databases rely on the unique keys and retry once.

**Schema version.** ``cytomsc_schema`` holds the version of these tables (SQLAlchemy metadata,
no Alembic: the tables belong to cytomsc alone). Opening a store made by an older cytomsc runs the
steps of ``MIGRATIONS`` in order, under the same lock; a store made by a newer cytomsc is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .errors import CytomscError

SCHEMA_VERSION = 1
# Steps from version n to n + 1, run in order on an older store (none yet: version 1 is the first).
MIGRATIONS: dict[int, Callable[[Connection], None]] = {}
_PG_LOCK = 0x6379746F6D7363  # "cytomsc": the advisory lock writers share on PostgreSQL
SQLITE_TIMEOUT = 120.0  # seconds a writer waits for another one's lock

metadata = sa.MetaData()
_id: dict[str, Any] = {"primary_key": True, "autoincrement": True}


def _fk(table: str) -> sa.ForeignKey:
    return sa.ForeignKey(f"cytomsc_{table}.id", ondelete="CASCADE")


schema_table = sa.Table(
    "cytomsc_schema",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("written_by", sa.Text),  # the cytomsc version that last created or migrated it
)
batch_table = sa.Table(
    "cytomsc_batch",
    metadata,
    sa.Column("id", sa.Integer, **_id),
    sa.Column("batch_key", sa.String(64), nullable=False, unique=True),
    sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("summary_schema", sa.Text),
    sa.Column("cytomsc_version", sa.Text),
    sa.Column("panel_id", sa.Text),
    sa.Column("panel_name", sa.Text),
    sa.Column("panel_version", sa.Text),
    sa.Column("panel_sha256", sa.String(64)),
    sa.Column("parameters_json", sa.Text),
    sa.Column("summary_sha256", sa.String(64)),
    sa.Column("out_dir", sa.Text),
    sa.Column("n_cultures", sa.Integer),
    sa.Column("n_errors", sa.Integer),
    sa.Column("header_json", sa.Text, nullable=False),  # summary.json, its cultures null
)
culture_table = sa.Table(
    "cytomsc_culture",
    metadata,
    sa.Column("id", sa.Integer, **_id),
    sa.Column("culture_key", sa.String(64), nullable=False, unique=True),
    sa.Column("batch_id", sa.Integer, _fk("batch"), nullable=False),  # first stored by
    sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("lot_key", sa.Text, nullable=False, index=True),  # the lot, else the culture name
    sa.Column("lot", sa.Text),
    sa.Column("donor", sa.Text, index=True),
    sa.Column("passage", sa.Integer),
    sa.Column("passage_text", sa.Text),
    sa.Column("tissue", sa.Text),
    sa.Column("detachment", sa.Text),
    sa.Column("acquired", sa.Date, index=True),  # the acquisition date, when it can be read
    sa.Column("date_text", sa.Text),
    sa.Column("cytometer", sa.Text),
    sa.Column("verdict", sa.Text),
    sa.Column("borderline", sa.Boolean),
    sa.Column("joint_phenotype_percent", sa.Double),
    sa.Column("joint_ci_low", sa.Double),
    sa.Column("joint_ci_high", sa.Double),
    sa.Column("n_populations", sa.Integer),
    sa.Column("entropy", sa.Double),
    sa.Column("effective_number", sa.Double),
    sa.Column("scatter_scale", sa.Text),
    sa.Column("cytomsc_version", sa.Text),
    sa.Column("panel_id", sa.Text),
    sa.Column("panel_version", sa.Text),
    sa.Column("panel_sha256", sa.String(64)),
    sa.Column("culture_json", sa.Text, nullable=False),  # the culture as summary.json has it
)
event_table = sa.Table(
    "cytomsc_event",
    metadata,
    sa.Column("culture_id", sa.Integer, _fk("culture"), primary_key=True),
    sa.Column("stage", sa.Text, primary_key=True),
    sa.Column("count", sa.BigInteger),
)
metadata_table = sa.Table(
    "cytomsc_metadata",
    metadata,
    sa.Column("culture_id", sa.Integer, _fk("culture"), primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text),
)
file_table = sa.Table(
    "cytomsc_file",
    metadata,
    sa.Column("culture_id", sa.Integer, _fk("culture"), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("path", sa.Text),
    sa.Column("role", sa.Text),
    sa.Column("sha256", sa.String(64), index=True),
    sa.Column("events", sa.BigInteger),
    sa.Column("cytometer", sa.Text),
    sa.Column("date", sa.Text),
    sa.Column("data_set", sa.Integer),
)
marker_table = sa.Table(
    "cytomsc_marker",
    metadata,
    sa.Column("culture_id", sa.Integer, _fk("culture"), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("marker", sa.Text, nullable=False, index=True),
    sa.Column("channel", sa.Text),
    sa.Column("expect", sa.Text),
    sa.Column("limit", sa.Double),
    sa.Column("percent_positive", sa.Double),
    sa.Column("ci_low", sa.Double),
    sa.Column("ci_high", sa.Double),
    sa.Column("threshold", sa.Double),
    sa.Column("threshold_source", sa.Text),
    sa.Column("control_spread_ratio", sa.Double),
    sa.Column("events", sa.BigInteger),
    sa.Column("passed", sa.Boolean),
    sa.Column("borderline", sa.Boolean),
    sa.Column("tube", sa.Text),
)
population_table = sa.Table(
    "cytomsc_population",
    metadata,
    sa.Column("culture_id", sa.Integer, _fk("culture"), primary_key=True),
    sa.Column("population_id", sa.Integer, primary_key=True),
    sa.Column("fraction", sa.Double),
    sa.Column("ci_low", sa.Double),
    sa.Column("ci_high", sa.Double),
    sa.Column("label", sa.Text),
    sa.Column("medians_json", sa.Text),
    sa.Column("medians_by_marker_json", sa.Text),
)
bimodality_table = sa.Table(
    "cytomsc_bimodality",
    metadata,
    sa.Column("culture_id", sa.Integer, _fk("culture"), primary_key=True),
    sa.Column("channel", sa.Text, primary_key=True),
    sa.Column("dip", sa.Double),
    sa.Column("p_value", sa.Double),
    sa.Column("bimodal", sa.Boolean),
    sa.Column("robust_cv", sa.Double),
)
batch_culture_table = sa.Table(
    "cytomsc_batch_culture",
    metadata,
    sa.Column("batch_id", sa.Integer, _fk("batch"), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("culture_id", sa.Integer, _fk("culture"), nullable=False, index=True),
    sa.Column("output_name", sa.Text),
    # the culture's JSON in this batch when it differs from the culture row's (else NULL)
    sa.Column("culture_json", sa.Text),
)
batch_population_table = sa.Table(
    "cytomsc_batch_population",
    metadata,
    sa.Column("batch_id", sa.Integer, _fk("batch"), primary_key=True),
    sa.Column("population_id", sa.Integer, primary_key=True),
    sa.Column("label", sa.Text),
)
batch_fraction_table = sa.Table(
    "cytomsc_batch_fraction",
    metadata,
    sa.Column("batch_id", sa.Integer, _fk("batch"), primary_key=True),
    sa.Column("culture_id", sa.Integer, _fk("culture"), primary_key=True, index=True),
    sa.Column("population_id", sa.Integer, primary_key=True),
    sa.Column("fraction", sa.Double),
)
output_table = sa.Table(
    "cytomsc_output",
    metadata,
    sa.Column("batch_id", sa.Integer, _fk("batch"), primary_key=True),
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("sha256", sa.String(64)),
)


@dataclass(frozen=True)
class Recorded:
    """What one recording did."""

    batch_id: int
    new_batch: bool  # False: this very batch was stored before (a rerun)
    cultures_added: int
    cultures_known: int  # stored before, linked to this batch


# ---- opening ---------------------------------------------------------------------------------
def database_url(target: str) -> sa.URL:
    """A file path becomes an SQLite URL; ``postgresql://`` means the psycopg (3) driver."""
    text = str(target).strip()
    if not text:
        raise CytomscError("--db: empty database path or URL")
    if "://" not in text:
        return sa.URL.create("sqlite", database=str(Path(text).expanduser().resolve()))
    try:
        url = sa.make_url(text)
    except sa.exc.ArgumentError as err:
        raise CytomscError(f"--db: not a database URL ({err})") from err
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


def shown(url: sa.URL) -> str:
    """The URL as printed in messages: never a password."""
    if url.get_backend_name() == "sqlite":
        return url.database or ":memory:"
    return url.render_as_string(hide_password=True)


def connect(target: str, *, write: bool) -> Engine:
    """An engine for ``target``. Writers get the schema created or migrated; a reader of an
    SQLite file that does not exist gets an error rather than an empty new database."""
    url = database_url(target)
    sqlite = url.get_backend_name() == "sqlite"
    if sqlite and url.database and url.database != ":memory:":
        path = Path(url.database)
        if not write and not path.is_file():
            raise CytomscError(
                "no results database here (store results with `cytomsc analyze --db` first)", path
            )
        if write and not path.parent.is_dir():
            raise CytomscError("the database's folder does not exist", path)
    kwargs: dict[str, Any] = {}
    if sqlite:
        kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT}
    try:
        engine = sa.create_engine(url, **kwargs)
    except (ModuleNotFoundError, sa.exc.NoSuchModuleError) as err:
        hint = " (pip install 'cytomsc[postgresql]')" if "psycopg" in str(err) else ""
        raise CytomscError(f"no database driver for {url.drivername}: {err}{hint}") from err
    except sa.exc.ArgumentError as err:
        raise CytomscError(f"--db {shown(url)}: {err}") from err
    if sqlite:
        _sqlite_transactions(engine, immediate=write)
    if write:
        with _db_errors(url):
            with write_transaction(engine) as conn:
                _ensure_schema(conn)
    else:
        with _db_errors(url), engine.connect() as conn:
            _check_version(conn)
    return engine


def _sqlite_transactions(engine: Engine, immediate: bool) -> None:
    """Let SQLAlchemy, not the sqlite3 module, start transactions; writers start them with
    BEGIN IMMEDIATE so that they queue for the write lock instead of failing halfway."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction holding the database's write lock (see the module docstring)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
        yield conn


@contextmanager
def _db_errors(url: sa.URL) -> Iterator[None]:
    """Database failures become one-line errors that name the database."""
    try:
        yield
    except CytomscError:
        raise
    except sa.exc.SQLAlchemyError as err:
        orig = getattr(err, "orig", None) or err
        reason = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
        raise CytomscError(f"results database: {reason}", shown(url)) from err


def _ensure_schema(conn: Connection) -> None:
    """Create the tables at the current version, or migrate an older store, under the lock."""
    inspector = sa.inspect(conn)
    if not inspector.has_table(schema_table.name):
        metadata.create_all(conn)
        conn.execute(
            schema_table.insert().values(id=1, version=SCHEMA_VERSION, written_by=_version())
        )
        return
    version = _stored_version(conn)
    if version > SCHEMA_VERSION:
        raise _newer(version)
    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise CytomscError(
                f"results database schema {version} has no migration to {version + 1}"
            )
        step(conn)
        version += 1
        conn.execute(
            schema_table.update()
            .where(schema_table.c.id == 1)
            .values(version=version, written_by=_version())
        )
    metadata.create_all(conn)  # tables a migration step left to the current metadata


def _stored_version(conn: Connection) -> int:
    row = conn.execute(sa.select(schema_table.c.version).where(schema_table.c.id == 1)).first()
    if row is None:
        raise CytomscError("results database has a cytomsc_schema table without a version")
    return int(row[0])


def _check_version(conn: Connection) -> None:
    if not sa.inspect(conn).has_table(schema_table.name):
        raise CytomscError("not a cytomsc results database (no cytomsc_schema table)")
    version = _stored_version(conn)
    if version > SCHEMA_VERSION:
        raise _newer(version)
    if version < SCHEMA_VERSION:
        raise CytomscError(
            f"results database schema {version} is older than this cytomsc's "
            f"({SCHEMA_VERSION}); record one batch into it with `cytomsc "
            "analyze --db` to migrate it"
        )


def _newer(version: int) -> CytomscError:
    return CytomscError(
        f"results database schema {version} was written by a newer cytomsc "
        f"(this one reads schema {SCHEMA_VERSION}): upgrade cytomsc"
    )


def _version() -> str:
    from . import __version__

    return __version__


# ---- recording -------------------------------------------------------------------------------
def record_results(target: str, out_dir: Path) -> Recorded:
    """Record the results folder that ``analyze`` has just written: its summary.json as written,
    and the SHA-256 of every output file that its run.json lists. Reads only; writes nothing in
    the folder."""
    out_dir = Path(out_dir)
    path = out_dir / "summary.json"
    try:
        raw = path.read_bytes()
        summary = json.loads(raw)
    except OSError as err:
        raise CytomscError(f"cannot read: {err.strerror}", path) from err
    except ValueError as err:
        raise CytomscError(f"not JSON ({err})", path) from err
    if not isinstance(summary, dict) or not isinstance(summary.get("cultures"), list):
        raise CytomscError("not a cytomsc summary (no cultures list)", path)
    engine = connect(target, write=True)
    try:
        return record_summary(
            engine,
            summary,
            hashlib.sha256(raw).hexdigest(),
            _output_hashes(out_dir, summary),
            str(out_dir.resolve()),
        )
    finally:
        engine.dispose()


def _output_hashes(out_dir: Path, summary: dict) -> dict[str, str]:
    """SHA-256 of the files the run wrote (run.json's list, else the usual names)."""
    names: list[str] = []
    try:
        run = json.loads((out_dir / "run.json").read_text(encoding="utf-8"))
        names = [str(n) for n in run.get("outputs", []) if isinstance(n, str)]
    except (OSError, ValueError, AttributeError):
        names = []
    if not names:
        names = ["summary.json", "summary.csv", "overview.pdf"]
        for c in summary.get("cultures", []):
            if isinstance(c, dict) and c.get("output_name"):
                names += [f"{c['output_name']}.pdf", f"{c['output_name']}/gates.xml"]
    out: dict[str, str] = {}
    root = out_dir.resolve()
    for name in sorted(set(names)):
        p = (root / name).resolve()
        if root in p.parents and p.is_file():
            out[name] = _sha256_file(p)
    return out


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_summary(
    engine: Engine,
    summary: dict,
    summary_sha256: str | None = None,
    outputs: dict[str, str] | None = None,
    out_dir: str | None = None,
    retries: int = 3,
) -> Recorded:
    """Record one summary.json document (already parsed) in one locked transaction."""
    url = engine.url
    prepared = _prepare(summary)
    for attempt in range(retries + 1):
        try:
            with _db_errors(url), write_transaction(engine) as conn:
                return _write(conn, prepared, summary_sha256, outputs or {}, out_dir)
        except CytomscError as err:
            cause = err.__cause__
            retry = isinstance(cause, (sa.exc.IntegrityError, sa.exc.OperationalError))
            if not retry or attempt == retries:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class _Prepared:
    """A summary document split into what the tables take, with its keys computed."""

    header: dict[str, Any]
    cultures: list[dict[str, Any]]
    culture_keys: list[str]
    culture_texts: list[str]
    batch_key: str
    panel_version: str | None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _prepare(summary: dict) -> _Prepared:
    # summary.json's own keys in their order, the cultures' place kept by a null
    header = {k: (None if k == "cultures" else v) for k, v in summary.items()}
    cultures = [c for c in summary["cultures"] if isinstance(c, dict)]
    panel = _mapping(header.get("panel"))
    context = {
        "parameters": header.get("parameters"),
        "panel_sha256": panel.get("sha256"),
        "cytomsc_version": header.get("cytomsc_version"),
    }
    keys = []
    for c in cultures:
        files = sorted(
            (str(f.get("sha256")), str(f.get("role")))
            for f in c.get("files", [])
            if isinstance(f, dict)
        )
        keys.append(
            hashlib.sha256(
                _canonical(
                    {
                        **context,
                        "culture": c.get("culture"),
                        "files": files,
                        "metadata": c.get("metadata"),
                    }
                ).encode()
            ).hexdigest()
        )
    batch_key = hashlib.sha256(
        _canonical({**context, "cultures": keys, "errors": header.get("errors")}).encode()
    ).hexdigest()
    return _Prepared(
        header=header,
        cultures=cultures,
        culture_keys=keys,
        culture_texts=[json.dumps(c, ensure_ascii=False) for c in cultures],
        batch_key=batch_key,
        panel_version=_panel_version(header),
    )


def _panel_version(header: dict) -> str | None:
    """summary.json's panel version when it has one, else the panel file's if it is the same
    file (same SHA-256) the analysis used."""
    panel = _mapping(header.get("panel"))
    if panel.get("version"):
        return str(panel["version"])
    ref = (header.get("parameters") or {}).get("panel") or panel.get("id")
    if not ref:
        return None
    try:
        from .panel import load_panel

        loaded = load_panel(str(ref))
    except CytomscError:
        return None
    return (loaded.version or None) if loaded.sha256 == panel.get("sha256") else None


def _write(
    conn: Connection,
    p: _Prepared,
    summary_sha256: str | None,
    outputs: dict[str, str],
    out_dir: str | None,
) -> Recorded:
    known = conn.execute(
        sa.select(batch_table.c.id).where(batch_table.c.batch_key == p.batch_key)
    ).first()
    if known is not None:
        return Recorded(
            batch_id=int(known[0]),
            new_batch=False,
            cultures_added=0,
            cultures_known=len(p.cultures),
        )
    now = datetime.now(timezone.utc)
    header = p.header
    panel = _mapping(header.get("panel"))
    errors = _sequence(header.get("errors"))
    batch_id = conn.execute(
        batch_table.insert().values(
            batch_key=p.batch_key,
            stored_at=now,
            summary_schema=_text(header.get("schema")),
            cytomsc_version=_text(header.get("cytomsc_version")),
            panel_id=_text(panel.get("id")),
            panel_name=_text(panel.get("name")),
            panel_version=p.panel_version,
            panel_sha256=_text(panel.get("sha256")),
            parameters_json=_canonical(header.get("parameters")),
            summary_sha256=summary_sha256,
            out_dir=out_dir,
            n_cultures=len(p.cultures),
            n_errors=len(errors),
            header_json=json.dumps(header, ensure_ascii=False),
        )
    ).inserted_primary_key[0]  # type: ignore[index]
    existing = _existing_cultures(conn, p.culture_keys)
    new: dict[str, tuple[dict, str]] = {}  # key -> (culture, JSON), first of the batch
    for c, key, text in zip(p.cultures, p.culture_keys, p.culture_texts, strict=True):
        if key not in existing:
            new.setdefault(key, (c, text))
    if new:
        # one INSERT ... RETURNING for the batch's new cultures, then one per child table
        rows = [
            _culture_row(c, key, text, batch_id, now, header, p.panel_version)
            for key, (c, text) in new.items()
        ]
        new_ids = (
            conn.execute(
                culture_table.insert().returning(culture_table.c.id, sort_by_parameter_order=True),
                rows,
            )
            .scalars()
            .all()
        )
        children: dict[str, list[dict]] = {}
        for (key, (c, text)), cid in zip(new.items(), new_ids, strict=True):
            existing[key] = (int(cid), text)
            for table, child in _child_rows(int(cid), c).items():
                children.setdefault(table, []).extend(child)
        for name, child in children.items():
            _many(conn, metadata.tables[name], child)
    ids = [existing[key][0] for key in p.culture_keys]
    stored_text = {existing[key][0]: existing[key][1] for key in p.culture_keys}
    added = len(new)
    conn.execute(
        batch_culture_table.insert(),
        [
            {
                "batch_id": batch_id,
                "position": i,
                "culture_id": cid,
                "output_name": _text(c.get("output_name")),
                "culture_json": None if stored_text[cid] == text else text,
            }
            for i, (c, cid, text) in enumerate(zip(p.cultures, ids, p.culture_texts, strict=True))
        ],
    )
    _insert_batch_populations(conn, batch_id, header.get("batch_populations"), p.cultures, ids)
    if outputs:
        conn.execute(
            output_table.insert(),
            [{"batch_id": batch_id, "path": k, "sha256": v} for k, v in sorted(outputs.items())],
        )
    return Recorded(
        batch_id=int(batch_id),
        new_batch=True,
        cultures_added=added,
        cultures_known=len(p.cultures) - added,
    )


def _existing_cultures(conn: Connection, keys: list[str]) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    unique = sorted(set(keys))
    for i in range(0, len(unique), 500):
        rows = conn.execute(
            sa.select(
                culture_table.c.culture_key, culture_table.c.id, culture_table.c.culture_json
            ).where(culture_table.c.culture_key.in_(unique[i : i + 500]))
        )
        out.update({r[0]: (int(r[1]), r[2]) for r in rows})
    return out


def _culture_row(
    c: dict,
    key: str,
    text: str,
    batch_id: int,
    now: datetime,
    header: dict,
    panel_version: str | None,
) -> dict[str, Any]:
    """The culture table's row of one culture of summary.json."""
    meta = _mapping(c.get("metadata"))
    het = _mapping(c.get("heterogeneity"))
    panel = _mapping(header.get("panel"))
    jci = _pair(c.get("joint_phenotype_ci95"))
    lot = _meta(meta, "lot")
    passage = _meta(meta, "passage")
    return dict(
        culture_key=key,
        batch_id=batch_id,
        stored_at=now,
        name=str(c.get("culture", "")),
        lot_key=lot or str(c.get("culture", "")),
        lot=lot,
        donor=_meta(meta, "donor"),
        passage=parse_passage(passage),
        passage_text=passage,
        tissue=_meta(meta, "tissue"),
        detachment=_meta(meta, "detachment"),
        acquired=parse_date(meta.get("date")),
        date_text=_text(meta.get("date")),
        cytometer=_text(meta.get("cytometer")),
        verdict=_text(c.get("verdict")),
        borderline=_bool(c.get("borderline")),
        joint_phenotype_percent=_num(c.get("joint_phenotype_percent")),
        joint_ci_low=jci[0],
        joint_ci_high=jci[1],
        n_populations=_int(het.get("n_populations")),
        entropy=_num(het.get("entropy")),
        effective_number=_num(het.get("effective_number")),
        scatter_scale=_text(het.get("scatter_scale")),
        cytomsc_version=_text(header.get("cytomsc_version")),
        panel_id=_text(panel.get("id")),
        panel_version=panel_version,
        panel_sha256=_text(panel.get("sha256")),
        culture_json=text,
    )


def _child_rows(cid: int, c: dict) -> dict[str, list[dict[str, Any]]]:
    """Rows of the normalised tables for one culture, by table name."""
    meta = _mapping(c.get("metadata"))
    het = _mapping(c.get("heterogeneity"))
    events = _mapping(c.get("events"))
    out: dict[str, list[dict[str, Any]]] = {}
    out[event_table.name] = [
        {"culture_id": cid, "stage": str(k), "count": _int(v)} for k, v in events.items()
    ]
    out[metadata_table.name] = [
        {"culture_id": cid, "key": str(k), "value": _text(v)} for k, v in meta.items()
    ]
    out[file_table.name] = [
        {
            "culture_id": cid,
            "position": i,
            "path": _text(f.get("path")),
            "role": _text(f.get("role")),
            "sha256": _text(f.get("sha256")),
            "events": _int(f.get("events")),
            "cytometer": _text(f.get("cytometer")),
            "date": _text(f.get("date")),
            "data_set": _int(f.get("data_set")),
        }
        for i, f in enumerate(c.get("files", []))
        if isinstance(f, dict)
    ]
    rows = []
    for i, m in enumerate(c.get("markers", [])):
        if not isinstance(m, dict):
            continue
        ci = _pair(m.get("ci95"))
        rows.append(
            {
                "culture_id": cid,
                "position": i,
                "marker": str(m.get("marker", "")),
                "channel": _text(m.get("channel")),
                "expect": _text(m.get("expect")),
                "limit": _num(m.get("limit")),
                "percent_positive": _num(m.get("percent_positive")),
                "ci_low": ci[0],
                "ci_high": ci[1],
                "threshold": _num(m.get("threshold")),
                "threshold_source": _text(m.get("threshold_source")),
                "control_spread_ratio": _num(m.get("control_spread_ratio")),
                "events": _int(m.get("events")),
                "passed": _bool(m.get("pass", m.get("passed"))),
                "borderline": _bool(m.get("borderline")),
                "tube": _text(m.get("tube")),
            }
        )
    out[marker_table.name] = rows
    pops = []
    for i, pop in enumerate(het.get("populations", []) or []):
        if not isinstance(pop, dict):
            continue
        ci = _pair(pop.get("ci95"))
        pops.append(
            {
                "culture_id": cid,
                "population_id": _int(pop.get("id")) or i + 1,
                "fraction": _num(pop.get("fraction")),
                "ci_low": ci[0],
                "ci_high": ci[1],
                "label": _text(pop.get("label")),
                "medians_json": json.dumps(pop.get("medians"), ensure_ascii=False),
                "medians_by_marker_json": json.dumps(
                    pop.get("medians_by_marker"), ensure_ascii=False
                ),
            }
        )
    out[population_table.name] = pops
    bim = _mapping(het.get("bimodality"))
    out[bimodality_table.name] = [
        {
            "culture_id": cid,
            "channel": str(ch),
            "dip": _num(v.get("dip")),
            "p_value": _num(v.get("p_value")),
            "bimodal": _bool(v.get("bimodal")),
            "robust_cv": _num(v.get("robust_cv")),
        }
        for ch, v in bim.items()
        if isinstance(v, dict)
    ]
    return out


def _insert_batch_populations(
    conn: Connection, batch_id: int, table: Any, cultures: list[dict], ids: list[int]
) -> None:
    """The batch-wide populations and each culture's fraction of them (the table is keyed by
    culture name; a name met twice in one batch is the first culture of that name)."""
    if not isinstance(table, dict):
        return
    pops = [p for p in table.get("populations", []) if isinstance(p, dict)]
    _many(
        conn,
        batch_population_table,
        [
            {
                "batch_id": batch_id,
                "population_id": _int(p.get("id")) or i + 1,
                "label": _text(p.get("label")),
            }
            for i, p in enumerate(pops)
        ],
    )
    by_name: dict[str, int] = {}
    for c, cid in zip(cultures, ids, strict=True):
        by_name.setdefault(str(c.get("culture")), cid)
    pop_ids: list[int] = [_int(p.get("id")) or i + 1 for i, p in enumerate(pops)]
    rows = []
    fractions = _mapping(table.get("table"))
    for name, values in fractions.items():
        known = by_name.get(str(name))
        if known is None or not isinstance(values, list):
            continue
        for j, v in enumerate(values):
            pid = pop_ids[j] if j < len(pop_ids) else j + 1
            rows.append(
                {
                    "batch_id": batch_id,
                    "culture_id": known,
                    "population_id": pid,
                    "fraction": _num(v),
                }
            )
    _many(conn, batch_fraction_table, rows)


def _many(conn: Connection, table: sa.Table, rows: list[dict]) -> None:
    if rows:
        conn.execute(table.insert(), rows)


# ---- reading back ----------------------------------------------------------------------------
def load_summary(engine: Engine, batch_id: int) -> dict[str, Any]:
    """The summary.json document of a stored batch, exactly as it was recorded."""
    with _db_errors(engine.url), engine.connect() as conn:
        row = conn.execute(
            sa.select(batch_table.c.header_json).where(batch_table.c.id == batch_id)
        ).first()
        if row is None:
            raise CytomscError(f"no batch {batch_id} in the results database")
        header = json.loads(row[0])
        links = conn.execute(
            sa.select(batch_culture_table.c.culture_json, culture_table.c.culture_json)
            .join(culture_table, culture_table.c.id == batch_culture_table.c.culture_id)
            .where(batch_culture_table.c.batch_id == batch_id)
            .order_by(batch_culture_table.c.position)
        ).all()
    header["cultures"] = [json.loads(own if own is not None else shared) for own, shared in links]
    return header


def batch_ids(engine: Engine) -> list[int]:
    with _db_errors(engine.url), engine.connect() as conn:
        return [
            int(r[0]) for r in conn.execute(sa.select(batch_table.c.id).order_by(batch_table.c.id))
        ]


# ---- values from JSON, tolerantly ------------------------------------------------------------
_META_NAMES = {  # metadata keys a lab may use for the columns the trends need
    "lot": ("lot", "lot number", "lot no", "lot id", "batch"),
    "donor": ("donor", "donor id"),
    "passage": ("passage", "passage number"),
    "tissue": ("tissue", "tissue source", "source tissue"),
    "detachment": ("detachment", "detachment reagent"),
}


def _meta(meta: dict, name: str) -> str | None:
    """A metadata value by its name or a common variant ("Lot number", "donor_id")."""
    norm = {" ".join(str(k).lower().replace("_", " ").split()): v for k, v in meta.items()}
    for key in _META_NAMES[name]:
        value = _text(norm.get(key))
        if value:
            return value
    return None


def _mapping(v: Any) -> dict[str, Any]:
    """A JSON object of summary.json, or {} for anything else (a field another version left
    out or wrote otherwise)."""
    return v if isinstance(v, dict) else {}


def _sequence(v: Any) -> list[Any]:
    """A JSON array of summary.json, or [] for anything else."""
    return v if isinstance(v, list) else []


def _text(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def _int(v: Any) -> int | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return int(v)


def _bool(v: Any) -> bool | None:
    return v if isinstance(v, bool) else None


def _pair(v: Any) -> tuple[float | None, float | None]:
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return _num(v[0]), _num(v[1])
    return None, None


def parse_passage(text: str | None) -> int | None:
    """ "5", "P5", "p05", "passage 5" -> 5; anything without a number -> None."""
    if not text:
        return None
    m = re.search(r"\d+", text)
    return int(m.group()) if m else None


_DATE_FORMATS = ("%d-%b-%Y", "%Y-%m-%d", "%d-%b-%y", "%Y/%m/%d", "%d.%m.%Y", "%Y%m%d")


def parse_date(value: Any) -> date | None:
    """An acquisition date as FCS writes it ($DATE "15-JAN-2025") or ISO; else None."""
    text = _text(value)
    if not text:
        return None
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text.title() if "%b" in fmt else text, fmt).date()
        except ValueError:
            continue
    return None
