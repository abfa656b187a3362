"""``cytomsc inspect`` through the CLI: exit codes, JSON, one-line errors, every file reported."""

from __future__ import annotations

import json

from click.testing import CliRunner
from test_fcs import valid_fcs

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
    assert "FCS 3.0, cytometer: LSRII, 11585 events, data set 1 of 1" in out
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
    raw, _ = valid_fcs(names=names, pns=("", "", "CD90", "CD105", ""), seed=3,
                       metadata={"TUBE NAME": "MSC1 isotype", "$CYT": "FACSCanto II"})
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
    assert result.stderr.strip() == f"error: {tmp_path / 'absent.fcs'}: cannot open " \
                                    "(No such file or directory)"


def test_python_dash_m_runs_the_cli(tmp_path):
    """``python -m cytomsc`` is the same command (for environments without the script on PATH):
    it must run the CLI, not import it and exit 0 doing nothing."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "cytomsc", "inspect", str(tmp_path / "no.fcs")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1
    assert "no.fcs" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
