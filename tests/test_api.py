"""The Python API: ``cytomsc.analyze`` writes nothing and returns the batch; its DataFrames hold
the numbers summary.json holds; ``cytomsc.write`` writes what ``cytomsc analyze`` writes, byte
for byte; the README's notebook example runs as printed.

Truth: example_fcs/truth.json (verdicts, true % positive of every marker, population counts) and
the command line's own output on the same files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import cytomsc
from cytomsc.cli import main
from cytomsc.results import to_json

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_fcs"
TRUTH = json.loads((EXAMPLE / "truth.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The example set analysed twice from the same folder: by the API, then by the command."""
    root = tmp_path_factory.mktemp("api")
    (root / "example_fcs").symlink_to(EXAMPLE)
    cwd = Path.cwd()
    os.chdir(root)
    try:
        before = sorted(p.relative_to(root) for p in root.rglob("*"))
        batch = cytomsc.analyze("example_fcs", panel="isct-2006", seed=0)
        after = sorted(p.relative_to(root) for p in root.rglob("*"))
        result = CliRunner().invoke(main, ["analyze", "example_fcs", "-o", "cli", "--jobs", "1"])
        assert result.exit_code == 0, result.output
        written = cytomsc.write(batch, "api")
    finally:
        os.chdir(cwd)
    return {"root": root, "batch": batch, "before": before, "after": after, "written": written}


def _digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file but the PDFs (their audit page prints the time) and the files that
    carry the time (cultures.csv, run.json, sha256sums.txt, which lists the PDFs)."""
    timed = {"cultures.csv", "run.json", "sha256sums.txt"}
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix != ".pdf" and p.name not in timed
    }


@pytest.mark.slow
def test_analyze_writes_nothing(runs: dict) -> None:
    assert runs["after"] == runs["before"]  # not a file more, in the folder or below it
    assert runs["batch"].errors == []


@pytest.mark.slow
def test_write_gives_the_commands_bytes(runs: dict) -> None:
    root = runs["root"]
    assert _digests(root / "api") == _digests(root / "cli")
    assert "summary.json" in _digests(root / "api")
    assert to_json(runs["batch"]).encode() == (root / "cli" / "summary.json").read_bytes()
    # every file written is listed, and is there; the PDFs too
    listed = set(runs["written"])
    on_disk = {
        p.relative_to(root / "api").as_posix()
        for p in (root / "api").rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }
    assert listed == on_disk
    assert {f"{c['culture']}.pdf" for c in TRUTH["cultures"]} <= listed
    sums = (root / "api" / "sha256sums.txt").read_text().splitlines()
    assert len(sums) == len(listed) - 2  # all but sha256sums.txt itself and run.json


@pytest.mark.slow
def test_frames_hold_the_results_and_match_the_truth(runs: dict) -> None:
    batch = runs["batch"]
    cultures = batch.cultures_frame()
    expected = {c["culture"]: c["expected_verdict"] for c in TRUTH["cultures"]}
    assert dict(zip(cultures["culture"], cultures["verdict"], strict=True)) == expected
    clustered = cultures.dropna(subset=["n_populations"])
    truth_k = {c["culture"]: c["n_populations"] for c in TRUTH["cultures"]}
    assert len(clustered) == 2  # the two that pass
    assert all(
        int(k) == truth_k[c]
        for c, k in zip(clustered["culture"], clustered["n_populations"], strict=True)
    )

    markers = batch.markers_frame()
    assert len(markers) == sum(len(c.markers) for c in batch.cultures)
    checked = 0
    for t in TRUTH["cultures"]:
        rows = markers[markers["culture"] == t["culture"]].set_index("marker")
        for name, m in t["markers"].items():
            if name in rows.index and m["separated"]:
                assert abs(rows.loc[name, "percent_positive"] - m["percent_positive"]) <= 1.0
                assert bool(rows.loc[name, "passed"]) == m["pass"]
                checked += 1
    assert checked >= 20
    # the frame's numbers are summary.json's, unrounded by the frame
    doc = json.loads(to_json(batch))
    first = doc["cultures"][0]["markers"][0]
    row = markers.iloc[0]
    assert round(row["percent_positive"], 6) == first["percent_positive"]
    assert (row["ci95_low"], row["ci95_high"]) == pytest.approx(tuple(first["ci95"]), abs=1e-6)

    pops = batch.populations_frame()
    for _, group in pops.groupby("culture"):
        assert group["fraction"].sum() == pytest.approx(1.0)
        assert list(group["population"]) == list(range(1, len(group) + 1))
        assert all(group["ci95_low"] <= group["fraction"]) and all(
            group["fraction"] <= group["ci95_high"]
        )
    two = pops[pops["culture"] == "MSC-02_pass_heterogeneous"]
    truth = next(c for c in TRUTH["cultures"] if c["culture"] == "MSC-02_pass_heterogeneous")
    assert sorted(two["fraction"], reverse=True) == pytest.approx(
        sorted(truth["population_fractions"], reverse=True), abs=0.05
    )
    assert "median_CD90" in pops.columns


@pytest.mark.slow
def test_reprs_are_short(runs: dict) -> None:
    batch = runs["batch"]
    assert repr(batch) == ("BatchResult(4 culture(s): 2 fail, 2 pass; 0 error(s); panel isct-2006)")
    for c in batch.cultures:
        assert len(repr(c)) < 120 and c.culture in repr(c)
        for m in c.markers:
            assert len(repr(m)) < 600  # the histogram (plot data) is left out
    assert batch.culture("MSC-01_pass") is batch.cultures[0]
    with pytest.raises(KeyError):
        batch.culture("no such culture")


def test_public_names_and_a_light_import() -> None:
    assert set(cytomsc.__all__) == {
        "BatchResult",
        "CultureResult",
        "CytomscError",
        "PopulationFinder",
        "__version__",
        "analyze",
        "load_panel",
        "read_fcs",
        "write",
    }
    for name in cytomsc.__all__:
        assert getattr(cytomsc, name) is not None
    assert cytomsc.load_panel("isct-2006").id == "isct-2006"
    fcs = cytomsc.read_fcs(next(EXAMPLE.glob("MSC-01_pass/*Stained.fcs")))
    assert fcs.events.shape[0] == 8000
    with pytest.raises(AttributeError):
        cytomsc.no_such_name  # noqa: B018
    # importing the package loads none of the heavy libraries (cytomsc --help stays fast)
    code = (
        "import sys, cytomsc; print(sorted(m for m in ('numpy', 'flowkit', 'matplotlib', "
        "'pandas', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_bad_options_raise_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(cytomsc.CytomscError, match="unknown panel|no panel"):
        cytomsc.analyze(EXAMPLE, panel="no-such-panel")
    bad = tmp_path / "comp.csv"
    bad.write_text("FL1-A,FL2-A\n1,0\n")
    with pytest.raises(cytomsc.CytomscError, match="comp.csv"):
        cytomsc.analyze(EXAMPLE, comp=str(bad))
    with pytest.raises(cytomsc.CytomscError, match="give the FCS files"):
        cytomsc.analyze([])


@pytest.mark.slow
def test_write_refuses_other_cultures_without_overwrite(runs: dict, tmp_path: Path) -> None:
    batch = runs["batch"]
    out = tmp_path / "out"
    cytomsc.write(batch, out, pdf=False)
    fewer = type(batch)(
        batch.cytomsc_version,
        batch.panel,
        batch.parameters,
        batch.cultures[:1],
        run_info=batch.run_info,
        culture_files=batch.culture_files,
    )
    with pytest.raises(cytomsc.CytomscError, match="not in this run"):
        cytomsc.write(fewer, out, pdf=False)
    assert (out / "MSC-04_fail_contaminated" / "gates.xml").is_file()  # nothing was changed
    cytomsc.write(fewer, out, pdf=False, overwrite=True)
    assert not (out / "MSC-04_fail_contaminated").exists()
    assert [c["culture"] for c in json.loads((out / "summary.json").read_text())["cultures"]] == [
        "MSC-01_pass"
    ]


@pytest.mark.slow
def test_readme_notebook_example_runs(tmp_path: Path) -> None:
    """The README's example, as printed, in a folder holding example_fcs."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### From Python (a notebook)", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "example_fcs").symlink_to(EXAMPLE)
    scope: dict = {}
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own code
    finally:
        os.chdir(cwd)
    # what the example's comments say
    assert str(scope["batch"]) in code
    assert list(scope["table"].index) == sorted(c["culture"] for c in TRUTH["cultures"])
    assert scope["table"].loc["MSC-03_fail_CD105", "CD105"] < 95.0  # the failed marker
    assert (tmp_path / "reports" / "summary.json").is_file()
    assert "summary.json" in scope["written"] and "overview.pdf" in scope["written"]
    assert len(scope["populations"]) == 3  # 1 + 2 populations of the two that pass
