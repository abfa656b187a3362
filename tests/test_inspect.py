"""``cytomsc inspect`` through the CLI: exit codes, JSON, one-line errors, every file reported."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from test_fcs import assemble, split_fcs, valid_fcs

from cytomsc.cli import main

GOOD = "fcsparser/fake_large_fcs/fake_large_fcs.fcs"
MULTI = "FlowKit/data/multi_dataset_fcs/coulter.lmd"
BAD = ["fcsparser/corrupted/corrupted.fcs", "fcsparser/cytek-nl-2000/sample_header.fcs"]


def _run(args: list[str]):
    return CliRunner().invoke(main, args)


def test_inspect_good_file_text(corpus):
    result = _run(["inspect", str(corpus / GOOD)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "FCS 3.0, cytometer: LSRII, 11585 events, 1 data set" in out
    assert "PerCP-Cy5-5-A" in out and "262144" in out
    assert "spillover: $SPILL 4x4 over FITC-A, PerCP-Cy5-5-A, AmCyan-A, PE-Texas Red-A" in out
    assert "role: stained" in out


def test_inspect_json_and_errors_for_unreadable(corpus):
    paths = [str(corpus / GOOD), *(str(corpus / b) for b in BAD), str(corpus / MULTI)]
    result = _run(["inspect", "--json", *paths])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    files = doc["files"]
    assert [f["path"] for f in files] == paths  # every file reported, in order
    assert [f["ok"] for f in files] == [True, False, False, True]
    assert files[0]["events"] == 11585 and len(files[0]["channels"]) == 11
    assert files[0]["spillover"]["channels"][0] == "FITC-A"
    assert files[3]["data_sets"] == 2 and files[3]["events"] == 18110
    assert files[3]["channels"][2]["amplification"] == [4.0, 0.1024]
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2
    for line, bad in zip(errors, BAD, strict=True):
        assert line.startswith(f"error: {corpus / bad}: ")
    assert "Traceback" not in result.output


def test_inspect_data_set_choice(corpus):
    result = _run(["inspect", "--json", "--data-set", "1", str(corpus / MULTI)])
    assert result.exit_code == 0
    f = json.loads(result.stdout)["files"][0]
    assert (f["version"], f["data_set"], f["channels"][0]["pnn"]) == ("3.0", 1, "FS")


def test_inspect_markers_roles_and_channel_map(tmp_path):
    names = ("FSC-A", "SSC-A", "FITC-A", "PE-A", "APC-A")
    raw, _ = valid_fcs(
        names=names,
        pns=("", "", "CD90", "CD105", ""),
        seed=3,
        metadata={"TUBE NAME": "MSC1 isotype", "$CYT": "FACSCanto II"},
    )
    path = tmp_path / "msc1.fcs"
    path.write_bytes(raw)
    result = _run(["inspect", "--json", "--channel-map", "APC-A=CD73", str(path)])
    assert result.exit_code == 0, result.output
    f = json.loads(result.stdout)["files"][0]
    markers = {c["pnn"]: c["marker"] for c in f["channels"]}
    assert markers["FITC-A"] == "CD90" and markers["PE-A"] == "CD105"
    assert markers["APC-A"] == "CD73" and markers["FSC-A"] is None
    assert f["role"] == "isotype" and f["cytometer"] == "FACSCanto II"
    assert "CD90" not in f["missing_markers"] and "CD45" in f["missing_markers"]


def test_inspect_missing_file_is_one_line(tmp_path):
    result = _run(["inspect", str(tmp_path / "absent.fcs")])
    assert result.exit_code == 1
    assert (
        result.stderr.strip() == f"error: {tmp_path / 'absent.fcs'}: cannot open "
        "(No such file or directory)"
    )


@pytest.mark.slow
def test_python_dash_m_runs_the_cli(tmp_path):
    """``python -m cytomsc`` is the same command (for environments without the script on PATH):
    it must run the CLI, not import it and exit 0 doing nothing."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "cytomsc", "inspect", str(tmp_path / "no.fcs")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "no.fcs" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------------------------------------
# Folders, data set numbers, strict JSON, area and height channels (issues 11 and 12)


def test_inspect_takes_folders(tmp_path):
    """A folder stands for the FCS files under it, in name order: .fcs files and files of any
    name that start with an FCS HEADER (FACSCalibur's 060909.001); an empty one is an error."""
    raw, _ = valid_fcs()
    (tmp_path / "run" / "sub").mkdir(parents=True)
    (tmp_path / "run" / "b.fcs").write_bytes(raw)
    (tmp_path / "run" / "sub" / "060909.001").write_bytes(raw)
    (tmp_path / "run" / "notes.txt").write_text("not FCS")
    (tmp_path / "run" / "._b.fcs").write_bytes(b"\x00\x05\x16\x07")  # a macOS resource fork
    (tmp_path / "empty").mkdir()
    result = _run(["inspect", "--json", str(tmp_path / "run"), str(tmp_path / "empty")])
    files = json.loads(result.stdout)["files"]
    assert [f["path"] for f in files] == [
        str(tmp_path / "run" / "b.fcs"),
        str(tmp_path / "run" / "sub" / "060909.001"),
        str(tmp_path / "empty"),
    ]
    assert [f["ok"] for f in files] == [True, True, False]
    assert result.exit_code == 1
    assert (
        result.stderr.strip() == f"error: {tmp_path / 'empty'}: folder holds no FCS files "
        "(.fcs, .lmd, or a file starting with an FCS HEADER)"
    )


def test_inspect_numbers_data_sets_as_data_set_takes_them(corpus):
    """Data sets are numbered from 0 everywhere: --data-set 1 is the one inspect calls 1."""
    path = str(corpus / MULTI)
    text = _run(["inspect", "--data-set", "1", path])
    assert text.exit_code == 0
    assert "data set 1 of 2 (numbered 0 to 1, as --data-set takes them)" in text.stdout
    assert "2 data sets (numbered 0 to 1); read data set 1 (--data-set N)" in text.stdout
    beyond = _run(["inspect", "--data-set", "2", path])
    assert beyond.exit_code == 1
    assert (
        beyond.stderr.strip() == f"error: {path}: data set 2 requested but the file holds 2 "
        "(numbered 0 to 1)"
    )


def test_inspect_json_is_strict_when_the_spillover_holds_nan(tmp_path):
    raw, _ = valid_fcs(names=("FSC-A", "FITC-A", "PE-A"))
    keywords, data = split_fcs(raw)
    path = tmp_path / "nan.fcs"
    path.write_bytes(assemble(keywords + [("$SPILLOVER", "2,FITC-A,PE-A,1,nan,0.1,1")], data))
    result = _run(["inspect", "--json", str(path)])
    assert result.exit_code == 0, result.output

    def refuse(name):
        raise ValueError(f"bare {name} in the JSON")

    doc = json.loads(result.stdout, parse_constant=refuse)
    assert doc["files"][0]["spillover"]["matrix"] == [[1.0, None], [0.1, 1.0]]


def test_inspect_reads_area_and_height_of_one_detector(real_fcs):
    """An LSRII export records -A and -H of every fluorescence channel: the area is read, and
    the report says so (this file was refused: "marker CD14 is matched by two channels")."""
    path = real_fcs / "flowWorkspaceData" / "a2004_O1T2pb05i_A2_A02.fcs"
    result = _run(["inspect", "--json", str(path)])
    assert result.exit_code == 0, result.output
    f = json.loads(result.stdout)["files"][0]
    markers = {c["pnn"]: c["marker"] for c in f["channels"]}
    assert markers["PE-CY7-A"] == "CD14" and markers["PE-CY7-H"] is None
    assert (
        "area channels used where a detector is also recorded as height or width: CD14 "
        "from PE-CY7-A (not PE-CY7-H)" in f["warnings"]
    )
