"""Exports that were refused and are now analysed (issue 11): area and height of every
fluorescence channel (BD LSRII, Fortessa), and FCS 3.2.

Each is a simulated culture written the instrument's way, analysed with ``run_batch`` beside the
same culture written the plain way (same name, so the same seed): the verdict is the simulator's
truth and the numbers are the plain culture's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_fcs import assemble, split_fcs

from cytomsc.fcswrite import write_fcs
from cytomsc.pipeline import Options, run_batch
from cytomsc.simulate import CultureDesign, simulate_culture, truth_of

DESIGN = CultureDesign(
    "lsr", style="diva", layout="isct-8c", n_events=4000, controls=("isotype",), seed_offset=77
)


def _plain(folder: Path, tubes) -> None:
    for t in tubes:
        t.write(folder)


def _with_heights(folder: Path, tubes) -> None:
    """Every fluorescence channel X-A followed by X-H (its pulse height, 0.8 x), same $PnS."""
    for t in tubes:
        cols, pnn, pns, ranges = [], [], [], []
        for j, name in enumerate(t.pnn):
            cols.append(t.events[:, j])
            pnn.append(name)
            pns.append(t.pns[j])
            ranges.append(t.ranges[j])
            if name.endswith("-A") and not name.startswith(("FSC", "SSC")):
                cols.append(0.8 * t.events[:, j])
                pnn.append(name[:-2] + "-H")
                pns.append(t.pns[j])
                ranges.append(t.ranges[j])
        write_fcs(
            folder / t.filename,
            np.column_stack(cols),
            pnn,
            pns,
            t.keywords,
            t.version,
            t.datatype,
            ranges,
            t.spillover,
        )


def _as_fcs32(folder: Path, tubes) -> None:
    """The same files as FCS 3.2: the version in the HEADER and 3.2's $PnTYPE keywords."""
    _plain(folder, tubes)
    kinds = {"FSC": "Forward_Scatter", "SSC": "Side_Scatter", "Tim": "Time"}
    for t in tubes:
        path = folder / t.filename
        keywords, data = split_fcs(path.read_bytes())
        extra = [
            (f"$P{j + 1}TYPE", kinds.get(n[:3], "Raw_Fluorescence")) for j, n in enumerate(t.pnn)
        ]
        path.write_bytes(assemble(keywords + extra, data, version="3.2"))


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    tubes = simulate_culture(DESIGN, 0)
    root = tmp_path_factory.mktemp("plain")
    _plain(root / "in" / DESIGN.name, tubes)
    return run_batch([root / "in"], root / "out", Options(pdf=False, jobs=1)), tubes


def _analyse(tmp_path, tubes, writer):
    (tmp_path / "in" / DESIGN.name).mkdir(parents=True)
    writer(tmp_path / "in" / DESIGN.name, tubes)
    batch = run_batch([tmp_path / "in"], tmp_path / "out", Options(pdf=False, jobs=1))
    assert batch.errors == []
    (culture,) = batch.cultures
    return culture


@pytest.mark.slow
def test_area_and_height_of_every_channel_reads_the_area(plain, tmp_path) -> None:
    reference, tubes = plain
    culture = _analyse(tmp_path, tubes, _with_heights)
    assert culture.verdict == truth_of(DESIGN, tubes)["expected_verdict"] == "pass"
    assert {m.marker: m.channel for m in culture.markers} == {
        m.marker: m.channel for m in reference.cultures[0].markers
    }
    assert all(m.channel.endswith("-A") for m in culture.markers)
    notes = [w for w in culture.warnings if "area channels used" in w]
    assert notes and "CD90 from FITC-A (not FITC-H)" in notes[0]


@pytest.mark.slow
def test_fcs_3_2_gives_the_results_of_3_1(plain, tmp_path) -> None:
    reference, tubes = plain
    culture = _analyse(tmp_path, tubes, _as_fcs32)
    ref = reference.cultures[0]
    assert culture.verdict == ref.verdict == "pass"
    assert culture.events == ref.events
    assert [(m.marker, m.percent_positive, m.threshold) for m in culture.markers] == [
        (m.marker, m.percent_positive, m.threshold) for m in ref.markers
    ]
