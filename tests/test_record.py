"""The release record's pieces: ISO 8601 dates, release metadata precedence, merged warnings."""

from __future__ import annotations

import numpy as np

from cytomsc.dates import iso_date
from cytomsc.record import merge_tube_warnings, release_metadata, tube_funnel


def test_fcs_dates_become_iso_8601_and_ambiguous_ones_stay() -> None:
    assert iso_date("15-JAN-2025") == "2025-01-15"  # FCS 3.x
    assert iso_date("19-May-15") == "2015-05-19"  # FCS 2.0, two-digit year
    assert iso_date("2013-Jul-19") == "2013-07-19"  # Miltenyi
    assert iso_date("07/19/2013") == "2013-07-19" and iso_date("19.07.2013") == "2013-07-19"
    assert iso_date("03/04/2021") == "03/04/2021"  # US or European: not guessed
    assert iso_date("30-FEB-2020") == "30-FEB-2020" and iso_date("") == ""


def test_release_metadata_precedence() -> None:
    kw = [{"op": "Acq. Operator", "com": "instrument comment", "lot": "L-9", "passage": "6"}]
    # the manifest's own values come first, then the options, then the FCS keywords
    meta = release_metadata(
        {"operator": "Sheet Op", "date": "15-JAN-2025"},
        kw,
        operator="Option Op",
        comment="Option comment",
    )
    assert meta["operator"] == "Sheet Op" and meta["comment"] == "Option comment"
    assert meta["lot"] == "L-9" and meta["passage"] == "6" and meta["date"] == "2025-01-15"
    assert release_metadata({}, kw)["operator"] == "Acq. Operator"
    assert release_metadata({"lot_number": "X"}, kw).get("lot") is None  # a spelling of lot


def test_shared_tube_warnings_are_said_once() -> None:
    names = ["a.fcs", "b.fcs", "c.fcs"]
    got = merge_tube_warnings(
        [
            "a.fcs: no viability dye",
            "CD90: auto threshold",
            "b.fcs: no viability dye",
            "c.fcs: no viability dye",
            "a.fcs: the time gate removed 7.0 %",
            "b.fcs: fewer than 50 events",
            "c.fcs: fewer than 50 events",
        ],
        names,
    )
    assert got == [
        "every tube (3): no viability dye",
        "CD90: auto threshold",
        "a.fcs: the time gate removed 7.0 %",
        "b.fcs, c.fcs: fewer than 50 events",
    ]


def test_skipped_gate_has_no_count() -> None:
    kept = np.ones(10, dtype=bool)
    masks = {"time": kept.copy(), "margin": kept.copy()}
    kept[:3] = False
    masks.update(cells=kept.copy(), singlets=kept.copy(), live=kept.copy())  # live: skipped
    f = tube_funnel("t.fcs", "stained", 10, masks, {"live": "no viability dye"})
    assert f.counts == {
        "total": 10,
        "time_ok": 10,
        "margin_ok": 10,
        "cells": 7,
        "singlets": 7,
        "live": None,
    }
    assert f.skipped == {"live": "no viability dye"}
