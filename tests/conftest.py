"""Shared fixtures: where the real FCS corpus is (tests that need it skip when it is absent)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def corpus_path() -> Path | None:
    """``$CYTOMSC_FCS_CORPUS`` or ``../shared/fcs-corpus`` beside the checkout, if present."""
    env = os.environ.get("CYTOMSC_FCS_CORPUS")
    candidates = [Path(env)] if env else []
    candidates.append(ROOT.parent / "shared" / "fcs-corpus")
    for c in candidates:
        if (c / "expected.json").is_file():
            return c
    return None


@pytest.fixture(scope="session")
def corpus() -> Path:
    path = corpus_path()
    if path is None:
        pytest.skip("FCS corpus absent: set CYTOMSC_FCS_CORPUS or place ../shared/fcs-corpus")
    return path


def real_fcs_path() -> Path | None:
    """``$CYTOMSC_REAL_FCS`` or ``../shared/real-fcs`` beside the checkout, if present: real
    exports with an expert's answer (see its SOURCES.md). Never copied into the project."""
    env = os.environ.get("CYTOMSC_REAL_FCS")
    candidates = [Path(env)] if env else []
    candidates.append(ROOT.parent / "shared" / "real-fcs")
    for c in candidates:
        if (c / "SOURCES.md").is_file():
            return c
    return None


@pytest.fixture(scope="session")
def real_fcs() -> Path:
    path = real_fcs_path()
    if path is None:
        pytest.skip("real exports absent: set CYTOMSC_REAL_FCS or place ../shared/real-fcs")
    return path


@pytest.fixture(scope="session")
def corpus_expected(corpus: Path) -> dict:
    return json.loads((corpus / "expected.json").read_text())


@pytest.fixture(params=["sqlite", "postgresql"])
def db_target(request: pytest.FixtureRequest, tmp_path: Path):
    """A results database: an SQLite file, then a fresh database on the PostgreSQL server of
    $CYTOMSC_TEST_PG_URL (skipped with the reason when there is none; see tests/_dbs.py)."""
    from _dbs import database

    yield from database(request.param, tmp_path)
