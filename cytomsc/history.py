"""Lots read back from the results store, one record per lot, in the order they were made.

``trend`` and ``compare-lots`` work on lots, not on analyses. A lot is the culture's ``lot``
metadata (manifest column or LOT keyword), else the culture's name. A lot analysed more than
once (a retest, new parameters, a newer cytomsc) is represented by the culture stored last.
Lots are put in time order by their acquisition date (the FCS $DATE), then by lot name; a lot
whose date cannot be read goes by the date it was stored.

Population fractions come from the batch-wide clustering of the latest batch that holds the
culture and had one, since only there does one population id mean the same cells in several
cultures. A culture analysed alone (no batch table) brings its own populations instead. Across
batches, populations are matched by their label ("CD90 dim"), which describes the population
relative to the batch it was found in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import store
from .errors import CytomscError


@dataclass(frozen=True)
class MarkerValue:
    """One marker of one lot, as stored."""

    marker: str
    expect: str | None
    limit: float | None
    percent_positive: float | None
    ci95: tuple[float, float] | None
    events: int | None
    passed: bool | None


@dataclass(frozen=True)
class Lot:
    """The latest stored culture of one lot."""

    lot: str
    culture: str
    culture_id: int
    donor: str | None
    passage: int | None
    acquired: date | None
    date_text: str | None
    stored_at: datetime
    verdict: str | None
    panel_id: str | None
    markers: dict[str, MarkerValue]
    populations: tuple[tuple[str, float], ...]  # (label, fraction 0-1)
    population_source: str  # "batch" | "culture" | "" (not clustered)

    @property
    def when(self) -> date:
        """The date the lot is ordered by: acquisition, else storage."""
        return self.acquired or self.stored_at.date()


def load_lots(
    engine: Engine,
    *,
    since: date | None = None,
    panel: str | None = None,
    lots: list[str] | None = None,
) -> list[Lot]:
    """Every lot in the store (optionally: acquired on or after ``since``, analysed with panel
    id ``panel``, or only the named lots), in time order."""
    c = store.culture_table
    latest = sa.select(sa.func.max(c.c.id).label("id")).group_by(c.c.lot_key)
    if panel:
        latest = latest.where(c.c.panel_id == panel)
    latest_ids = latest.subquery()
    with store._db_errors(engine.url), engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                c.c.id,
                c.c.lot_key,
                c.c.name,
                c.c.donor,
                c.c.passage,
                c.c.acquired,
                c.c.date_text,
                c.c.stored_at,
                c.c.verdict,
                c.c.panel_id,
            ).where(c.c.id.in_(sa.select(latest_ids.c.id)))
        ).all()
        m = store.marker_table
        markers: dict[int, dict[str, MarkerValue]] = {}
        for mr in conn.execute(
            sa.select(
                m.c.culture_id,
                m.c.marker,
                m.c.expect,
                m.c.limit,
                m.c.percent_positive,
                m.c.ci_low,
                m.c.ci_high,
                m.c.events,
                m.c.passed,
            )
            .where(m.c.culture_id.in_(sa.select(latest_ids.c.id)))
            .order_by(m.c.culture_id, m.c.position)
        ):
            ci = (
                (mr.ci_low, mr.ci_high)
                if mr.ci_low is not None and mr.ci_high is not None
                else None
            )
            markers.setdefault(mr.culture_id, {}).setdefault(
                mr.marker,
                MarkerValue(
                    mr.marker, mr.expect, mr.limit, mr.percent_positive, ci, mr.events, mr.passed
                ),
            )
        pops = _populations(conn, latest_ids)
    out = []
    wanted = set(lots) if lots else None
    for r in rows:
        if wanted is not None and r.lot_key not in wanted:
            continue
        stored_at = r.stored_at if isinstance(r.stored_at, datetime) else datetime.min
        lot = Lot(
            lot=r.lot_key,
            culture=r.name,
            culture_id=int(r.id),
            donor=r.donor,
            passage=r.passage,
            acquired=r.acquired,
            date_text=r.date_text,
            stored_at=stored_at,
            verdict=r.verdict,
            panel_id=r.panel_id,
            markers=markers.get(r.id, {}),
            populations=pops.get(r.id, ((), ""))[0],
            population_source=pops.get(r.id, ((), ""))[1],
        )
        if since is not None and lot.when < since:
            continue
        out.append(lot)
    out.sort(key=lambda x: (x.when, x.lot, x.culture_id))
    if wanted is not None:
        missing = sorted(wanted - {x.lot for x in out})
        if missing:
            raise CytomscError("no such lot in the results database: " + ", ".join(missing))
    return out


def _populations(
    conn: sa.Connection, latest_ids: sa.Subquery
) -> dict[int, tuple[tuple[tuple[str, float], ...], str]]:
    """Per culture: its fractions in the latest batch table that has it, else its own."""
    bf, bp = store.batch_fraction_table, store.batch_population_table
    batch: dict[int, dict[int, list[tuple[int, str, float]]]] = {}
    for r in conn.execute(
        sa.select(bf.c.culture_id, bf.c.batch_id, bf.c.population_id, bf.c.fraction, bp.c.label)
        .join(bp, (bp.c.batch_id == bf.c.batch_id) & (bp.c.population_id == bf.c.population_id))
        .where(bf.c.culture_id.in_(sa.select(latest_ids.c.id)))
    ):
        batch.setdefault(r.culture_id, {}).setdefault(r.batch_id, []).append(
            (r.population_id, r.label or f"population {r.population_id}", r.fraction or 0.0)
        )
    out: dict[int, tuple[tuple[tuple[str, float], ...], str]] = {}
    for cid, by_batch in batch.items():
        rows = sorted(by_batch[max(by_batch)])
        out[cid] = (_merge((label, f) for _, label, f in rows), "batch")
    p = store.population_table
    own: dict[int, list[tuple[int, str, float]]] = {}
    for pr in conn.execute(
        sa.select(p.c.culture_id, p.c.population_id, p.c.label, p.c.fraction).where(
            p.c.culture_id.in_(sa.select(latest_ids.c.id))
        )
    ):
        own.setdefault(pr.culture_id, []).append(
            (pr.population_id, pr.label or f"P{pr.population_id}", pr.fraction or 0.0)
        )
    for cid, rows in own.items():
        if cid not in out:
            out[cid] = (_merge((label, f) for _, label, f in sorted(rows)), "culture")
    return out


def _merge(pairs: Iterable[tuple[str, float]]) -> tuple[tuple[str, float], ...]:
    """Fractions of populations that share a label added up, first-seen order kept."""
    total: dict[str, float] = {}
    for label, f in pairs:
        total[label] = total.get(label, 0.0) + float(f)
    return tuple(total.items())


def judged_markers(lots: list[Lot]) -> list[str]:
    """Markers judged (positive or negative) in any lot, in the order the panel lists them."""
    seen: dict[str, None] = {}
    for lot in reversed(lots):  # the latest lot's panel order first
        for name, m in lot.markers.items():
            if m.expect in ("positive", "negative"):
                seen.setdefault(name, None)
    return list(seen)
