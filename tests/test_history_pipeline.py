"""Lot history end to end: `cytomsc simulate --preset history` -> `analyze --db` -> `trend` and
`compare-lots`, on SQLite and on a live PostgreSQL.

The simulated history (16 lots of two donors over passages 1-8, see simulate.py) has a known
CD105 drift after passage 5 and a growing CD90-dim population; its truth.json says which lots
each chart must flag. Every analysis here runs through the real command line in its own process.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from _dbs import normalised_numbers, postgres_database, summary_numbers
from click.testing import CliRunner

from cytomsc import store
from cytomsc.cli import main
from cytomsc.simulate import write_preset

pytestmark = pytest.mark.slow  # the 16 lots of the history preset, analysed, stored and charted


def _cytomsc(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cytomsc", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _done(p: subprocess.Popen) -> str:
    out, err = p.communicate(timeout=900)
    assert p.returncode == 0, err
    return out


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The history preset, analysed once with `analyze --db` into an SQLite file."""
    root = tmp_path_factory.mktemp("history")
    data, out, db = root / "data", root / "out", root / "results.sqlite"
    write_preset(data, preset="history", seed=0)
    printed = _done(_cytomsc("analyze", str(data), "-o", str(out), "--no-pdf", "--db", str(db)))
    truth = json.loads((data / "truth.json").read_text())
    return {
        "root": root,
        "data": data,
        "out": out,
        "sqlite": str(db),
        "printed": printed,
        "truth": truth,
    }


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stored(request: pytest.FixtureRequest, history: dict):
    """The analysed history in a results database: the SQLite file analyze wrote, or a live
    PostgreSQL database the same results folder was recorded into."""
    if request.param == "sqlite":
        yield history["sqlite"]
        return
    for url in postgres_database():
        store.record_results(url, history["out"])
        yield url


def _run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_analyze_says_what_it_recorded(history: dict) -> None:
    assert "recorded in" in history["printed"] and "16 new culture(s)" in history["printed"]


def test_store_round_trips_the_real_summary(stored: str, history: dict) -> None:
    text = (history["out"] / "summary.json").read_text(encoding="utf-8")
    doc = json.loads(text)
    engine = store.connect(stored, write=False)
    (batch_id,) = store.batch_ids(engine)
    back = store.load_summary(engine, batch_id)
    assert back == doc
    assert json.dumps(back, indent=1, ensure_ascii=False) + "\n" == text  # the very bytes
    expected = summary_numbers(doc)
    got = normalised_numbers(engine, batch_id)
    assert {k: got.get(k) for k in expected} == expected
    assert len(expected) > 1000 and doc["batch_populations"] is not None
    engine.dispose()


def test_trend_flags_exactly_the_drifted_lots(stored: str, history: dict, tmp_path: Path) -> None:
    out = tmp_path / "trend"
    printed = _run("trend", "--db", stored, "-o", str(out))
    truth = history["truth"]["history"]
    charted = {r["marker"] for r in _csv(out / "trend.csv")}
    assert charted == set(truth["expected_flags"])
    flagged: dict[str, set[str]] = {m: set() for m in charted}
    for r in _csv(out / "trend-flags.csv"):
        flagged[r["marker"]].add(r["lot"])
    assert flagged == {m: set(lots) for m, lots in truth["expected_flags"].items()}
    assert len(flagged["CD105"]) == 6
    assert "6 lot(s) flagged" in printed
    # the reference window is the one the design assumed
    rows = _csv(out / "trend.csv")
    ref = sorted({r["lot"] for r in rows if r["in_reference"] == "true"})
    assert ref == truth["reference_lots"]


def test_trend_populations_follow_the_cd90_dim_growth(
    stored: str, history: dict, tmp_path: Path
) -> None:
    out = tmp_path / "trend"
    _run("trend", "--db", stored, "-o", str(out), "--by", "passage")
    truth = history["truth"]["history"]["cd90_dim"]["fraction"]
    rows = [r for r in _csv(out / "trend-populations.csv") if r["population"] == "CD90 dim"]
    got = {r["lot"]: float(r["fraction"]) for r in rows}
    assert set(got) == set(truth)
    assert {r["source"] for r in rows} == {"batch"}
    assert max(abs(got[lot] - truth[lot]) for lot in truth) <= 0.06
    for donor in ("D01", "D02"):
        mine = sorted(
            (int(r["passage"]), float(r["fraction"])) for r in rows if r["donor"] == donor
        )
        assert [p for p, _ in mine] == list(range(1, 9))
        assert all(b >= a - 0.01 for (_, a), (_, b) in zip(mine, mine[1:], strict=False))
        assert mine[-1][1] - mine[0][1] >= 0.15  # grown by most of the simulated 24 %


def test_trend_report_pages_and_pictures(history: dict, tmp_path: Path) -> None:
    from pypdf import PdfReader

    out = tmp_path / "trend"
    _run("trend", "--db", history["sqlite"], "-o", str(out))
    pdf = PdfReader(str(out / "trend.pdf"))
    text = "\n".join(p.extract_text() for p in pdf.pages)
    assert "Flagged lots: 6" in text and "first 10 lots in time order" in text
    for lot in ("L11", "L16"):
        assert lot in text
    markers = history["truth"]["history"]["expected_flags"]
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == len(markers) + 2  # one chart per judged marker, one stack per donor
    for name in pngs:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(_csv(out / "trend.csv")) == 16 * len(markers)


def test_compare_lots_before_and_after(stored: str, history: dict, tmp_path: Path) -> None:
    from pypdf import PdfReader

    out = tmp_path / "compare"
    # passage 6 onwards (L11-L16, drifted) against passages 1-5
    _run(
        "compare-lots",
        "--db",
        stored,
        "--split",
        "2025-05-20",
        "--margin",
        "1",
        "--margin",
        "CD105=0.5",
        "-o",
        str(out),
    )
    rows = {r["marker"]: r for r in _csv(out / "compare.csv")}
    assert rows["CD105"]["equivalent"] == "false"
    lots = history["truth"]["history"]["lots"]
    drift = sum(x["drift_points"] for x in lots if x["drift_points"]) / 6
    assert float(rows["CD105"]["difference"]) == pytest.approx(-drift, abs=0.3)
    # the lot effects average to 0 on both sides: every other marker is the same lot mix
    others = {m: r["equivalent"] for m, r in rows.items() if m != "CD105"}
    assert others and set(others.values()) == {"true"}
    pdf = PdfReader(str(out / "compare.pdf"))
    assert len(pdf.pages) == 1
    assert "Comparability of lots" in pdf.pages[0].extract_text()
    pops = {r["population"]: r for r in _csv(out / "compare-populations.csv")}
    assert float(pops["CD90 dim"]["difference"]) > 5  # points of cells: the dim cells grew


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small cultures (3,000 events a tube) for the runs that race each other."""
    from cytomsc.simulate import CultureDesign, simulate_culture

    root = tmp_path_factory.mktemp("small")
    for i in range(2):
        design = CultureDesign(
            f"S{i + 1}",
            n_events=3000,
            controls=("isotype",),
            seed_offset=40 + i,
            lot=f"S{i + 1}",
            donor="D09",
            passage=i + 1,
        )
        for tube in simulate_culture(design, 0):
            tube.write(root / design.name)
    return root


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_two_concurrent_analyses_keep_every_row(kind: str, small: Path, tmp_path: Path) -> None:
    gen = postgres_database() if kind == "postgresql" else None
    target = next(gen) if gen else str(tmp_path / "both.sqlite")
    try:
        procs = [
            _cytomsc(
                "analyze",
                str(small / f"S{i + 1}"),
                "-o",
                str(tmp_path / f"out{i}"),
                "--no-pdf",
                "--jobs",
                "1",
                "--db",
                target,
            )
            for i in range(2)
        ]
        for p in procs:
            _done(p)
        engine = store.connect(target, write=False)
        ids = store.batch_ids(engine)
        assert len(ids) == 2
        docs = [store.load_summary(engine, i) for i in ids]
        written = [
            json.loads((tmp_path / f"out{i}" / "summary.json").read_text()) for i in range(2)
        ]
        assert sorted(docs, key=lambda d: d["cultures"][0]["culture"]) == written
        # a rerun of one of them adds nothing
        again = _done(
            _cytomsc(
                "analyze",
                str(small / "S1"),
                "-o",
                str(tmp_path / "again"),
                "--no-pdf",
                "--jobs",
                "1",
                "--db",
                target,
            )
        )
        assert "nothing added" in again
        assert store.batch_ids(engine) == ids
        engine.dispose()
        if kind == "sqlite":  # recording never changes what analyze writes
            plain = tmp_path / "plain"
            _done(
                _cytomsc("analyze", str(small / "S1"), "-o", str(plain), "--no-pdf", "--jobs", "1")
            )
            assert (plain / "summary.json").read_bytes() == (
                tmp_path / "out0" / "summary.json"
            ).read_bytes()
    finally:
        if gen:
            gen.close()
