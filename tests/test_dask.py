"""Cultures on a Dask cluster (``--scheduler``, ``cytomsc.analyze(client=...)``): the same
summary.json bytes, the same gates and exported events as ``--jobs 1``, on a 2-worker
``LocalCluster`` (separate processes, as remote workers would be). Skipped, saying why, when
Dask is not installed (``pip install "cytomsc[dask]"``; the test extra includes it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import cytomsc
from cytomsc.cli import main
from cytomsc.options import Options
from cytomsc.pipeline import run_batch
from cytomsc.results import to_json

distributed = pytest.importorskip(
    "dask.distributed",
    reason='Dask is not installed: pip install "cytomsc[dask]" (the test extra includes it)',
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_fcs"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as c:
        yield c


def _files(out: Path) -> dict[str, str]:
    """SHA-256 of each file but those that carry the time (PDFs' audit page, run.json,
    cultures.csv, sha256sums.txt)."""
    timed = {"run.json", "cultures.csv", "sha256sums.txt"}
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.suffix != ".pdf" and p.name not in timed
    }


def test_scheduler_gives_the_bytes_of_one_job(cluster, tmp_path: Path) -> None:
    one = run_batch([EXAMPLE], tmp_path / "one", Options(jobs=1, export_events=True))
    result = CliRunner().invoke(
        main,
        [
            "analyze",
            str(EXAMPLE),
            "-o",
            str(tmp_path / "dask"),
            "--export-events",
            "--scheduler",
            cluster.scheduler_address,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "4 culture(s) analysed, 0 error(s)" in result.output
    assert (tmp_path / "dask" / "summary.json").read_bytes() == (
        tmp_path / "one" / "summary.json"
    ).read_bytes()
    files = _files(tmp_path / "dask")
    assert files == _files(tmp_path / "one")
    assert sum(name.endswith(".fcs") for name in files) == 14  # every tube exported
    # the PDFs were drawn by the workers and written here, each one listed and whole
    sums = dict(
        reversed(line.split("  ", 1))
        for line in (tmp_path / "dask" / "sha256sums.txt").read_text().splitlines()
    )
    for c in one.cultures:
        pdf = tmp_path / "dask" / f"{c.output_name}.pdf"
        assert pdf.read_bytes().startswith(b"%PDF")
        assert sums[pdf.name] == hashlib.sha256(pdf.read_bytes()).hexdigest()


def test_api_client_gives_the_same_result(cluster, tmp_path: Path) -> None:
    with distributed.Client(cluster) as client:
        on_dask = cytomsc.analyze(EXAMPLE, client=client)
    here = cytomsc.analyze(EXAMPLE, jobs=1)
    assert to_json(on_dask) == to_json(here)
    assert [c.verdict for c in on_dask.cultures] == [
        c["expected_verdict"] for c in json.loads((EXAMPLE / "truth.json").read_text())["cultures"]
    ]
    cytomsc.write(on_dask, tmp_path / "out", pdf=False)  # what write needs came back too
    assert len(list((tmp_path / "out").glob("*/gates.xml"))) == 4


def test_no_scheduler_there_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["analyze", str(EXAMPLE), "-o", str(tmp_path / "o"), "--scheduler", "tcp://127.0.0.1:9"],
    )
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --scheduler: tcp://127.0.0.1:9: ")
    assert not (tmp_path / "o").exists()
