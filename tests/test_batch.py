"""A batch never stops for one bad file, never writes outside ``-o``, and gives the same bytes
whatever ``--jobs`` is (issue 6), tested end to end through the CLI.

Why end to end: the promises are about the whole run (exit status, stderr, summary.json, the
files left on disk), and each layer (layout, reader, pipeline, CLI) handles some of the bad cases,
so only the command line shows whether they all hold together. The truth of every case is what we
wrote: valid cultures come from the simulator (small, 3,000 events per tube, so the suite stays
fast), damaged files are built byte by byte with the reader tests' helpers.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_fcs import assemble, split_fcs, valid_fcs

from cytomsc.cli import main
from cytomsc.simulate import CultureDesign, SimulatedTube, simulate_culture

N_EVENTS = 3000  # per tube: enough for a verdict (>= 1,000 gated), small enough to be quick
SEED = 11


# ---------------------------------------------------------------------------------------------
# Building inputs


def _tubes(
    name: str, offset: int, src: str | None = None, n_events: int = N_EVENTS
) -> list[SimulatedTube]:
    """A small passing 8-colour Diva culture (stained + isotype); ``src`` overrides ``$SRC``."""
    design = CultureDesign(name, n_events=n_events, controls=("isotype",), seed_offset=offset)
    tubes = simulate_culture(design, SEED)
    if src is not None:
        for t in tubes:
            t.keywords["$SRC"] = src
    return tubes


def _write_culture(
    folder: Path, name: str, offset: int, src: str | None = None, n_events: int = N_EVENTS
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [t.write(folder) for t in _tubes(name, offset, src, n_events)]


def _data_start(raw: bytes) -> int:
    return int(raw[26:34])


def _patched_floats(raw: bytes, n_par: int, where: list[tuple[int, int]], value: float) -> bytes:
    """The file with DATA values at (event, channel) replaced by ``value`` (float32 data)."""
    buf = bytearray(raw)
    start = _data_start(raw)
    for ev, ch in where:
        off = start + 4 * (ev * n_par + ch)
        buf[off : off + 4] = np.array([value], dtype="<f4").tobytes()
    return bytes(buf)


def _with_keywords(raw: bytes, changes: dict[str, str], encoding: str = "utf-8") -> bytes:
    """Re-pack a file with keywords changed or added, TEXT encoded in ``encoding``."""
    keywords, data = split_fcs(raw)
    keys = {k.upper() for k, _ in keywords}
    out = [(k, changes.get(k.upper(), v)) for k, v in keywords]
    out += [(k, v) for k, v in changes.items() if k.upper() not in keys]
    return assemble(out, data, encoding=encoding)


def _bad_files(root: Path) -> dict[str, tuple[Path, str]]:
    """Unreadable files, one culture folder each: {case: (path, words the reason must contain)}."""
    valid, _ = valid_fcs(n_events=40, names=("FSC-A", "SSC-A", "FITC-A"), pns=("", "", "CD90"))
    text_end = int(valid[18:26])
    data_start = _data_start(valid)
    keywords, data = split_fcs(valid)
    cases = {
        "empty": (b"", "empty"),
        "random": (
            np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
            "not an fcs file",
        ),
        "text": (b"sample,CD90\nA,99.5\n" * 20, "not an fcs file"),
        "cut_in_text": (valid[: text_end - 20], "truncated in text"),
        "cut_in_data": (valid[: data_start + len(data) // 2], "truncated"),
        "text_only": (valid[: text_end + 1], "data"),
        "tot_too_large": (_with_keywords(valid, {"$TOT": "41"}), "$tot"),
        "par_mismatch": (_with_keywords(valid, {"$PAR": "4"}), "$par"),
        "tot_huge": (_with_keywords(valid, {"$TOT": str(10**12)}), "$tot"),
    }
    out = {}
    for case, (raw, words) in cases.items():
        folder = root / f"bad_{case}"
        folder.mkdir(parents=True)
        path = folder / f"{case}.fcs"
        path.write_bytes(raw)
        out[case] = (path, words)
    assert keywords  # the helper understood the file it damages
    return out


def _readable_but_odd(root: Path) -> dict[str, Path]:
    """Cultures with files that read but are awkward or unusable: {case: culture folder}."""
    out = {}
    # NaN and inf among otherwise valid float events of the stained tube: read, the events dropped
    folder = root / "nan_values"
    paths = _write_culture(folder, "nan_values", 1)  # MSC-A's events, 60 of them poisoned
    stained = [p for p in paths if "Stained" in p.name][0]
    raw = stained.read_bytes()
    n_par = len(_tubes("nan_values", 1)[0].pnn)
    raw = _patched_floats(raw, n_par, [(i, 5) for i in range(0, 60, 2)], float("nan"))
    raw = _patched_floats(raw, n_par, [(i, 6) for i in range(1, 60, 2)], float("inf"))
    stained.write_bytes(raw)
    out["nan_values"] = folder

    # duplicate channel names: a copy of SSC-A appended under the same name
    folder = root / "duplicate_names"
    folder.mkdir()
    for t in _tubes("duplicate_names", 1):
        j = t.pnn.index("SSC-A")
        t.events = np.column_stack([t.events, t.events[:, j]])
        t.pnn.append("SSC-A")
        t.pns.append("")
        t.ranges = [*t.ranges, t.ranges[j]]
        t.write(folder)
    out["duplicate_names"] = folder

    # zero events in the stained tube (its isotype is fine)
    folder = root / "zero_events"
    folder.mkdir()
    for t in _tubes("zero_events", 5):
        if t.role == "stained":
            t.events = t.events[:0]
        t.write(folder)
    out["zero_events"] = folder

    # only a control tube
    folder = root / "only_controls"
    folder.mkdir()
    for t in _tubes("only_controls", 7):
        if t.role != "stained":
            t.write(folder)
    out["only_controls"] = folder
    return out


UTF8_TISSUE = "Knochenmark (Jürgen Ødegård, 骨髓)"
LATIN1_TISSUE = "Nabelschnur Zürich, café"


def _non_ascii(root: Path) -> dict[str, Path]:
    """Valid cultures whose keywords hold non-ASCII text: UTF-8, and latin-1 (not UTF-8)."""
    folder = root / "Zellkultur_Müller_µ"
    paths = _write_culture(folder, "utf8", 8)
    for p in paths:
        p.write_bytes(_with_keywords(p.read_bytes(), {"TISSUE SOURCE": UTF8_TISSUE}))
    latin = root / "latin1"
    paths = _write_culture(latin, "latin1", 9)
    for p in paths:
        p.write_bytes(
            _with_keywords(p.read_bytes(), {"TISSUE SOURCE": LATIN1_TISSUE}, encoding="latin-1")
        )
    return {"utf8": folder, "latin1": latin}


def _tree(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: relative path -> (sha256, mtime_ns)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[p.relative_to(root).as_posix()] = (
                hashlib.sha256(p.read_bytes()).hexdigest(),
                p.stat().st_mtime_ns,
            )
    return out


def _run(args: list[str]) -> tuple[int, str, str]:
    """``cytomsc ARGS`` in-process: (exit code, stdout, stderr), exceptions surfaced as such."""
    result = CliRunner().invoke(main, args, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def _cultures(summary: dict) -> dict[str, dict]:
    return {c["culture"]: c for c in summary["cultures"]}


# ---------------------------------------------------------------------------------------------
# One batch with every kind of bad input


@pytest.fixture(scope="module")
def bad_batch(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("bad_batch")
    data = root / "in"
    _write_culture(data / "MSC-A", "MSC-A", 1)
    beside = _write_culture(data / "MSC-B", "MSC-B", 2)
    # a damaged tube beside the valid tubes of MSC-B: cut in the middle of its DATA
    raw = beside[0].read_bytes()
    cut = data / "MSC-B" / "MSC-B_Extra.fcs"
    cut.write_bytes(raw[: _data_start(raw) + 1000])
    bad = _bad_files(data)
    bad["beside_valid"] = (cut, "truncated")
    odd = _readable_but_odd(data)
    text = _non_ascii(data)
    for p in data.rglob("*.fcs"):  # inputs read-only: a write attempt would fail loudly
        p.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    before = _tree(data)
    out = root / "out"
    code, stdout, stderr = _run(
        ["analyze", str(data), "-o", str(out), "--no-pdf", "--cluster", "none", "--jobs", "1"]
    )
    return {
        "data": data,
        "out": out,
        "code": code,
        "stdout": stdout,
        "stderr": stderr,
        "bad": bad,
        "odd": odd,
        "text": text,
        "before": before,
        "summary": _summary(out),
    }


@pytest.mark.slow
def test_exit_status_one_and_no_traceback(bad_batch: dict) -> None:
    assert bad_batch["code"] == 1
    assert "Traceback" not in bad_batch["stderr"] + bad_batch["stdout"]


@pytest.mark.parametrize(
    "case",
    [
        "empty",
        "random",
        "text",
        "cut_in_text",
        "cut_in_data",
        "text_only",
        "tot_too_large",
        "par_mismatch",
        "tot_huge",
        "beside_valid",
    ],
)
@pytest.mark.slow
def test_bad_file_named_once_with_reason(bad_batch: dict, case: str) -> None:
    path, words = bad_batch["bad"][case]
    entries = [e for e in bad_batch["summary"]["errors"] if e["path"] == str(path)]
    assert len(entries) == 1, bad_batch["summary"]["errors"]
    message = entries[0]["message"]
    assert "\n" not in message and words in message.lower()
    lines = [ln for ln in bad_batch["stderr"].splitlines() if str(path) in ln]
    assert lines == [f"error: {path}: {message}"]


@pytest.mark.slow
def test_every_error_is_one_line_and_names_an_input(bad_batch: dict) -> None:
    errors = bad_batch["summary"]["errors"]
    expected = {str(p) for p, _ in bad_batch["bad"].values()}
    assert {e["path"] for e in errors} == expected
    assert all(e["message"].strip() and "\n" not in e["message"] for e in errors)
    assert len([ln for ln in bad_batch["stderr"].splitlines() if ln.startswith("error:")]) == len(
        errors
    )


@pytest.mark.slow
def test_valid_cultures_analysed_and_written(bad_batch: dict) -> None:
    cultures = _cultures(bad_batch["summary"])
    for name in ("MSC-A", "MSC-B", "Zellkultur_Müller_µ", "latin1"):
        c = cultures[name]
        assert c["verdict"] == "pass", (name, c["warnings"])
        assert (bad_batch["out"] / c["output_name"] / "gates.xml").stat().st_size > 0
    # MSC-B was judged on its two valid tubes; the cut one is an error, not a tube
    assert len(cultures["MSC-B"]["files"]) == 2
    rows = list(csv.DictReader((bad_batch["out"] / "summary.csv").open(encoding="utf-8")))
    assert {r["culture"] for r in rows} >= {"MSC-A", "MSC-B", "Zellkultur_Müller_µ", "latin1"}


@pytest.mark.slow
def test_non_ascii_keywords_read(bad_batch: dict) -> None:
    """Keyword values come back as written, whether the TEXT was UTF-8 or latin-1."""
    cultures = _cultures(bad_batch["summary"])
    assert cultures["Zellkultur_Müller_µ"]["metadata"]["tissue"] == UTF8_TISSUE
    assert cultures["latin1"]["metadata"]["tissue"] == LATIN1_TISSUE
    raw = next(bad_batch["text"]["latin1"].glob("*.fcs")).read_bytes()
    assert LATIN1_TISSUE.encode("latin-1") in raw and LATIN1_TISSUE.encode() not in raw


@pytest.mark.slow
def test_nan_and_inf_events_dropped_with_a_warning(bad_batch: dict) -> None:
    c = _cultures(bad_batch["summary"])["nan_values"]
    assert c["verdict"] == "pass"
    assert any("nan" in w.lower() and "infinite" in w.lower() for w in c["warnings"])
    # 30 NaN and 30 inf values in 60 distinct events: those events are not counted
    assert c["events"]["total"] == N_EVENTS
    assert c["events"]["time_ok"] <= N_EVENTS - 60
    assert all(m["events"] <= N_EVENTS - 60 for m in c["markers"])
    # the same events as MSC-A but for the 60 poisoned ones: the same percentages, nearly
    ref = {
        m["marker"]: m["percent_positive"]
        for m in _cultures(bad_batch["summary"])["MSC-A"]["markers"]
    }
    assert all(abs(m["percent_positive"] - ref[m["marker"]]) < 0.5 for m in c["markers"])


@pytest.mark.slow
def test_duplicate_channel_names_read_with_a_warning(bad_batch: dict) -> None:
    c = _cultures(bad_batch["summary"])["duplicate_names"]
    assert any("duplicate channel names" in w and "SSC-A_" in w for w in c["warnings"])
    assert c["verdict"] == "pass"


@pytest.mark.parametrize("case, words", [("zero_events", "events"), ("only_controls", "stained")])
@pytest.mark.slow
def test_unusable_culture_is_inconclusive_in_words(bad_batch: dict, case: str, words: str) -> None:
    c = _cultures(bad_batch["summary"])[case]
    assert c["verdict"] == "inconclusive"
    assert any(words in w for w in c["warnings"]), c["warnings"]
    assert all(m["pass"] is not True for m in c["markers"] if m["percent_positive"] is None)


@pytest.mark.slow
def test_folders_of_unreadable_files_are_errors_not_cultures(bad_batch: dict) -> None:
    cultures = _cultures(bad_batch["summary"])
    assert not [name for name in cultures if name.startswith("bad_")]
    assert not [p for p in bad_batch["out"].iterdir() if p.name.startswith("bad_")]


@pytest.mark.slow
def test_inputs_never_changed(bad_batch: dict) -> None:
    assert _tree(bad_batch["data"]) == bad_batch["before"]


def test_manifest_naming_missing_files(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    paths = _write_culture(folder, "M1", 1)
    sheet = tmp_path / "data" / "sheet.csv"
    rows = ["file,culture,role"] + [
        f"{p.name},M1,{'isotype' if 'Iso' in p.name else 'stained'}" for p in paths
    ]
    rows += ["gone/M2_Stained.fcs,M2,stained", "M1_Unstained.fcs,M1,unstained"]
    sheet.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    code, _, stderr = _run(
        [
            "analyze",
            str(folder),
            "-o",
            str(out),
            "--manifest",
            str(sheet),
            "--no-pdf",
            "--cluster",
            "none",
            "--jobs",
            "1",
        ]
    )
    summary = _summary(out)
    assert code == 1 and "Traceback" not in stderr
    missing = {str(folder / "gone" / "M2_Stained.fcs"), str(folder / "M1_Unstained.fcs")}
    assert {e["path"] for e in summary["errors"]} == missing
    assert all(
        "not found" in e["message"] and "sheet.csv:" in e["message"] for e in summary["errors"]
    )
    assert all(any(ln.startswith(f"error: {m}: ") for ln in stderr.splitlines()) for m in missing)
    assert [(c["culture"], c["verdict"]) for c in summary["cultures"]] == [("M1", "pass")]


def test_every_event_saturated_is_inconclusive(tmp_path: Path) -> None:
    """All scatter values at $PnR - 1: the margin gate must remove them all (issue 3/6)."""
    folder = tmp_path / "in" / "gated_out"
    folder.mkdir(parents=True)
    for t in _tubes("gated_out", 1):
        if t.role == "stained":
            for j, name in enumerate(t.pnn):
                if name.startswith(("FSC", "SSC")):
                    t.events[:, j] = t.ranges[j] - 1
        t.write(folder)
    out = tmp_path / "out"
    code, _, stderr = _run(
        ["analyze", str(folder), "-o", str(out), "--no-pdf", "--cluster", "none", "--jobs", "1"]
    )
    assert code == 0 and "Traceback" not in stderr
    c = _summary(out)["cultures"][0]
    assert c["verdict"] == "inconclusive"
    assert any("events" in w for w in c["warnings"])


def test_spillover_naming_a_detector_twice_is_not_judged(tmp_path: Path) -> None:
    """A $SPILLOVER that lists one detector twice cannot be inverted meaningfully: the culture is
    shown uncompensated but not judged, never a verdict on miscompensated values."""
    folder = tmp_path / "in" / "dup_spill"
    folder.mkdir(parents=True)
    for t in _tubes("dup_spill", 1):
        t.pnn[t.pnn.index("PE-Cy7-A")] = "FITC-A"
        names, matrix = t.spillover
        t.spillover = (["FITC-A" if n == "PE-Cy7-A" else n for n in names], matrix)
        t.write(folder)
    out = tmp_path / "out"
    code, _, stderr = _run(
        ["analyze", str(folder), "-o", str(out), "--no-pdf", "--cluster", "none", "--jobs", "1"]
    )
    assert "Traceback" not in stderr
    summary = _summary(out)
    judged = [c for c in summary["cultures"] if c["verdict"] != "inconclusive"]
    assert not judged and code == 0
    warnings = summary["cultures"][0]["warnings"]
    assert any("detector twice" in w and "no verdict" in w for w in warnings)


@pytest.mark.slow
def test_no_traceback_from_the_installed_command(tmp_path: Path) -> None:
    """The real entry point in a fresh process: a bad file gives a line, not a traceback; with
    --debug an unreadable manifest shows one."""
    data = tmp_path / "in"
    _write_culture(data / "ok", "ok", 1)
    (data / "broken").mkdir()
    (data / "broken" / "x.fcs").write_bytes(b"FCS3.1" + b"\xff" * 30)
    entry = [sys.executable, "-c", "from cytomsc.cli import main; main()"]
    proc = subprocess.run(
        [
            *entry,
            "analyze",
            str(data),
            "-o",
            str(tmp_path / "out"),
            "--no-pdf",
            "--cluster",
            "none",
            "--jobs",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert f"error: {data / 'broken' / 'x.fcs'}: too short for an FCS HEADER" in proc.stderr
    assert "ok: PASS" in proc.stdout
    proc = subprocess.run(
        [
            *entry,
            "--debug",
            "analyze",
            str(data),
            "-o",
            str(tmp_path / "o2"),
            "--manifest",
            str(tmp_path / "missing.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr


# ---------------------------------------------------------------------------------------------
# Output safety, reruns, PDFs


HOSTILE = "../../../tmp/x"
WINDOWS = 'a/b\\c<>:"|?*'


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Cultures whose ids come from hostile $SRC keywords and folder names, analysed with PDFs.

    The output folder sits three levels deep so that ``../../../tmp/x`` would land inside the
    snapshotted tree (and never in the real /tmp)."""
    root = tmp_path_factory.mktemp("hostile")
    files = []
    # single files given on the command line, grouped into a culture by their $SRC
    for i, src in enumerate((HOSTILE, WINDOWS, "a_b_c")):
        files += _write_culture(root / "in" / f"files{i}", f"h{i}", 1 + i, src=src, n_events=2000)
    _write_culture(root / "in" / "CON", "con", 4, n_events=2000)  # a name Windows reserves
    _write_culture(root / "in" / "tab\there", "tab", 5, n_events=2000)  # a control character
    out = root / "a" / "b" / "c" / "out"
    before = _tree(root)
    args = [
        "analyze",
        *map(str, files),
        str(root / "in" / "CON"),
        str(root / "in" / "tab\there"),
        "-o",
        str(out),
        "--cluster",
        "none",
        "--jobs",
        "1",
    ]
    code, stdout, stderr = _run(args)
    return {
        "root": root,
        "out": out,
        "before": before,
        "after": _tree(root),
        "code": code,
        "stdout": stdout,
        "stderr": stderr,
        "summary": _summary(out),
        "files": files,
    }


@pytest.mark.slow
def test_hostile_names_write_nothing_outside_out(hostile: dict) -> None:
    assert hostile["code"] == 0, hostile["stderr"]
    out_rel = hostile["out"].relative_to(hostile["root"]).as_posix() + "/"
    changed = {k for k, v in hostile["after"].items() if hostile["before"].get(k) != v}
    assert changed and all(k.startswith(out_rel) for k in changed), sorted(changed)
    assert not (hostile["root"] / "a" / "tmp").exists()
    assert not Path("/tmp/x/gates.xml").exists() and not Path("/tmp/x.pdf").exists()


@pytest.mark.slow
def test_hostile_names_sanitized_and_distinct(hostile: dict) -> None:
    cultures = _cultures(hostile["summary"])
    assert set(cultures) == {HOSTILE, WINDOWS, "a_b_c", "CON", "tab\there"}
    names = [c["output_name"] for c in cultures.values()]
    assert len({n.lower() for n in names}) == len(names)
    for n in names:
        assert n and n.isprintable() and ".." not in n and n not in (".", "..")
        assert not set(n) & set('/\\<>:"|?*') and n.split(".")[0].upper() != "CON"
    assert cultures["CON"]["output_name"] != "CON"
    for c in cultures.values():  # every culture's outputs under its own sanitized name
        assert (hostile["out"] / c["output_name"] / "gates.xml").is_file()
        assert (hostile["out"] / f"{c['output_name']}.pdf").is_file()


@pytest.mark.slow
def test_pdfs_are_complete(hostile: dict) -> None:
    from pypdf import PdfReader

    pdfs = sorted(hostile["out"].glob("*.pdf"))
    assert len(pdfs) == len(hostile["summary"]["cultures"]) + 1  # + overview.pdf
    for pdf in pdfs:
        assert len(PdfReader(pdf).pages) >= 1


@pytest.mark.slow
def test_hostile_inputs_unchanged(hostile: dict) -> None:
    inputs = {k: v for k, v in hostile["before"].items() if k.startswith("in/")}
    assert inputs and all(hostile["after"][k] == v for k, v in inputs.items())


@pytest.mark.slow
def test_rerun_replaces_old_results(hostile: dict) -> None:
    """Run again into the same folder with one culture gone and no PDFs: without --overwrite the
    other cultures' results are kept and the run refuses, naming them; with it, they are removed
    (and said so), and nothing stale stays."""
    out = hostile["out"]
    keep = [f for f in hostile["files"] if "files0" in str(f)]  # the ../../../tmp/x culture
    args = [
        "analyze",
        *map(str, keep),
        "-o",
        str(out),
        "--no-pdf",
        "--cluster",
        "none",
        "--jobs",
        "1",
    ]
    before = _tree(out)
    code, _, stderr = _run(args)
    assert code == 1 and "--overwrite" in stderr and len(stderr.splitlines()) == 1
    others = sorted(
        c["output_name"] for c in hostile["summary"]["cultures"] if c["culture"] != HOSTILE
    )
    assert f"holds the results of 4 culture(s) not in this run ({', '.join(others)})" in stderr
    assert _tree(out) == before  # nothing changed
    code, _, stderr = _run([*args, "--overwrite"])
    assert code == 0, stderr
    assert "removing 8 file(s) of 4 culture(s) not in this run" in stderr
    summary = _summary(out)
    assert [c["culture"] for c in summary["cultures"]] == [HOSTILE]
    name = summary["cultures"][0]["output_name"]
    present = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    listed = set(json.loads((out / "run.json").read_text())["outputs"])
    assert present == listed
    assert present == {
        "summary.json",
        "summary.csv",
        "cultures.csv",
        "sha256sums.txt",
        "run.json",
        f"{name}/gates.xml",
    }
    assert [p for p in out.rglob("*") if p.is_dir()] == [out / name]
    assert not [p for p in out.rglob(".tmp-*")]


# ---------------------------------------------------------------------------------------------
# Determinism: --jobs and --seed


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """summary.json of three cultures (clustered: the seeded part runs) analysed three times:
    --jobs 1 and --jobs 2 with one seed, --jobs 2 with another."""
    root = tmp_path_factory.mktemp("small")
    data = root / "in"
    for i in range(3):
        _write_culture(data / f"C{i + 1}", f"C{i + 1}", 20 + i, n_events=2000)
    out = {}
    for key, args in {
        "jobs1": ["--jobs", "1", "--seed", "3"],
        "jobs2": ["--jobs", "2", "--seed", "3"],
        "seed4": ["--jobs", "2", "--seed", "4"],
    }.items():
        code, _, stderr = _run(["analyze", str(data), "-o", str(root / key), "--no-pdf", *args])
        assert code == 0, stderr
        out[key] = (root / key / "summary.json").read_bytes()
    return out


@pytest.mark.slow
def test_jobs_do_not_change_summary(runs: dict[str, bytes]) -> None:
    assert runs["jobs1"] == runs["jobs2"]  # two runs, same seed: the same bytes
    summary = json.loads(runs["jobs1"])
    assert [c["verdict"] for c in summary["cultures"]] == ["pass"] * 3
    assert all(c["heterogeneity"] for c in summary["cultures"])  # the random part ran


@pytest.mark.slow
def test_other_seed_moves_only_random_parts(runs: dict[str, bytes]) -> None:
    sa, sc = json.loads(runs["jobs2"]), json.loads(runs["seed4"])
    assert sa["parameters"]["seed"] == 3 and sc["parameters"]["seed"] == 4
    assert {k: v for k, v in sa["parameters"].items() if k != "seed"} == {
        k: v for k, v in sc["parameters"].items() if k != "seed"
    }
    for x, y in zip(sa["cultures"], sc["cultures"], strict=True):
        assert (x["culture"], x["verdict"], x["files"]) == (y["culture"], y["verdict"], y["files"])
        assert x["events"]["total"] == y["events"]["total"]
        for mx, my in zip(x["markers"], y["markers"], strict=True):
            assert (mx["marker"], mx["channel"], mx["pass"]) == (
                my["marker"],
                my["channel"],
                my["pass"],
            )
            # the seed enters the gates (mixture fits) and the clustering, not the thresholds'
            # rule: the same cells are judged within a fraction of a point
            assert abs(mx["percent_positive"] - my["percent_positive"]) < 0.5


# ---------------------------------------------------------------------------------------------
# Review findings, each pinned by a test


def test_two_tubes_with_one_file_name_keep_their_own_gates(tmp_path: Path) -> None:
    """A manifest may name a/s.fcs (stained) and b/s.fcs (isotype): both tubes are analysed."""
    tubes = _tubes("same", 1)
    for t, sub in zip(tubes, ("a", "b"), strict=True):
        t.filename = "s.fcs"
        t.write(tmp_path / sub)
    roles = {t.role for t in tubes}
    assert roles == {"stained", "isotype"}
    rows = ["file,culture,role"] + [
        f"{sub}/s.fcs,same,{t.role}" for t, sub in zip(tubes, ("a", "b"), strict=True)
    ]
    (tmp_path / "sheet.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    code, _, stderr = _run(
        [
            "analyze",
            "--manifest",
            str(tmp_path / "sheet.csv"),
            str(tmp_path),
            "-o",
            str(out),
            "--no-pdf",
            "--cluster",
            "none",
            "--jobs",
            "1",
        ]
    )
    assert code == 0, stderr
    c = _summary(out)["cultures"][0]
    assert c["verdict"] == "pass"
    assert {m["threshold_source"] for m in c["markers"]} == {"isotype"}
    gates = (out / c["output_name"] / "gates.xml").read_text()
    assert "t1_cells" in gates and "t2_cells" in gates


def test_comp_csv_that_misses_a_control_detector_leaves_out_that_control(tmp_path: Path) -> None:
    tubes = _tubes("comp", 2)
    stained = next(t for t in tubes if t.role == "stained")
    names, matrix = stained.spillover
    for t in tubes:
        t.write(tmp_path / "in" / "comp")
    iso = next(t for t in tubes if t.role == "isotype")
    # the CSV names one more detector than the isotype tube has: rename it in the isotype file
    renamed = iso.pnn.index(names[-1])
    iso.pnn[renamed] = "Other-A"
    iso.spillover = ([("Other-A" if n == names[-1] else n) for n in names], matrix)
    iso.write(tmp_path / "in" / "comp")
    csv_path = tmp_path / "comp.csv"
    csv_path.write_text(
        ",".join(names)
        + "\n"
        + "\n".join(",".join(f"{v:.6g}" for v in row) for row in matrix)
        + "\n"
    )
    out = tmp_path / "out"
    code, _, stderr = _run(
        [
            "analyze",
            str(tmp_path / "in"),
            "-o",
            str(out),
            "--comp",
            str(csv_path),
            "--no-pdf",
            "--cluster",
            "none",
            "--jobs",
            "1",
        ]
    )
    assert code == 0 and "Traceback" not in stderr
    c = _summary(out)["cultures"][0]
    assert any("left out" in w and iso.filename in w for w in c["warnings"])
    assert {m["threshold_source"] for m in c["markers"]} == {"auto"}


def test_manifest_row_with_an_extra_cell_is_no_traceback(tmp_path: Path) -> None:
    paths = _write_culture(tmp_path / "x", "x", 3)
    rows = ["file,culture,role"] + [f"x/{p.name},x,,extra" for p in paths]
    (tmp_path / "sheet.csv").write_text("\n".join(rows) + "\n")
    code, _, stderr = _run(
        [
            "analyze",
            "--manifest",
            str(tmp_path / "sheet.csv"),
            str(tmp_path),
            "-o",
            str(tmp_path / "out"),
            "--no-pdf",
            "--cluster",
            "none",
            "--jobs",
            "1",
        ]
    )
    assert "Traceback" not in stderr
    assert [c["culture"] for c in _summary(tmp_path / "out")["cultures"]] == ["x"]


def test_a_foreign_run_json_deletes_nothing(tmp_path: Path) -> None:
    """Another tool's run.json is neither obeyed (nothing it lists is deleted) nor overwritten:
    the run refuses in one line and leaves the folder as it was."""
    _write_culture(tmp_path / "in" / "f", "f", 4)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.pdf").write_text("mine")
    foreign = json.dumps({"outputs": ["notes.pdf"]})
    (out / "run.json").write_text(foreign)
    args = [
        "analyze",
        str(tmp_path / "in"),
        "-o",
        str(out),
        "--no-pdf",
        "--cluster",
        "none",
        "--jobs",
        "1",
    ]
    code, _, stderr = _run(args)
    assert code == 1 and len(stderr.splitlines()) == 1
    assert "would overwrite run.json, which cytomsc did not write" in stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.pdf", "run.json"]
    assert (out / "notes.pdf").read_text() == "mine" and (out / "run.json").read_text() == foreign
    (out / "run.json").unlink()
    code, _, _ = _run(args)
    assert code == 0
    assert (out / "notes.pdf").read_text() == "mine"
    assert oct((out / "summary.json").stat().st_mode & 0o777) == oct(0o644)
