"""The command line as a user meets it (issue 11 "The command line", issue 12 "Where the output
goes"): what is found, where results go and what may be replaced, what is printed, and how.

Everything runs through the CLI: in-process with click's CliRunner where the process does not
matter, as a subprocess of the installed command where it does (a terminal, HOME, another user,
another live run). Inputs are small simulated cultures (2,000 events per tube), so each run takes
a few seconds; their verdicts are the simulator's truth (a passing 8-colour culture).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cytomsc.cli import main
from cytomsc.output import LOCK_FILE, RUN_FILE, STAGING
from cytomsc.simulate import CultureDesign, simulate_culture

SEED = 11
QUICK = ["--no-pdf", "--cluster", "none", "--jobs", "1"]
# the installed command, beside this interpreter (python -m cytomsc where there is no script)
_SCRIPT = Path(sys.executable).parent / "cytomsc"
ENTRY = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "cytomsc"]


def _culture(
    folder: Path, name: str, offset: int, src: str | None = None, n_events: int = 2000
) -> list[Path]:
    """A small passing culture (stained + isotype) written into ``folder``."""
    design = CultureDesign(name, n_events=n_events, controls=("isotype",), seed_offset=offset)
    paths = []
    for t in simulate_culture(design, SEED):
        if src is not None:
            t.keywords["$SRC"] = src
        paths.append(t.write(folder))
    return paths


def _run(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, args, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def _verdict_line(c: dict, name: str | None = None) -> str:
    """What the console prints for a culture of summary.json as it finishes."""
    flag = " (borderline)" if c["borderline"] else ""
    n = len(c["warnings"])
    return f"{name or c['culture']}: {c['verdict'].upper()}{flag}, {n} warning{'s' * (n != 1)}"


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones too): relative path -> SHA-256."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# ---- what is found ---------------------------------------------------------------------------


def test_a_manifest_alone_is_enough(tmp_path: Path) -> None:
    paths = _culture(tmp_path / "tubes", "M", 1)
    rows = ["file,culture,role"] + [f"tubes/{p.name},lot-7," for p in paths]
    (tmp_path / "sheet.csv").write_text("\n".join(rows) + "\n")
    code, stdout, stderr = _run(
        ["analyze", "--manifest", str(tmp_path / "sheet.csv"), "-o", str(tmp_path / "out"), *QUICK]
    )
    assert code == 0, stderr
    assert "lot-7: PASS" in stdout
    c = _summary(tmp_path / "out")["cultures"]
    assert [x["culture"] for x in c] == ["lot-7"] and len(c[0]["files"]) == 2
    code, _, stderr = _run(["analyze", "-o", str(tmp_path / "o2"), *QUICK])  # neither: usage
    assert code == 2 and "--manifest" in stderr and not (tmp_path / "o2").exists()


def test_fcs_files_are_recognised_by_their_header_whatever_their_name(tmp_path: Path) -> None:
    """FACSCalibur/CellQuest name their files 060909.001, 060909.002 ..."""
    paths = _culture(tmp_path / "in" / "calibur", "calibur", 2)
    for i, p in enumerate(sorted(paths), 1):
        p.rename(p.with_name(f"060909.{i:03d}"))
    (tmp_path / "in" / "calibur" / "comp_match").write_text("060909.001 unstained\n")
    code, stdout, stderr = _run(
        ["analyze", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *QUICK]
    )
    assert code == 0, stderr
    c = _summary(tmp_path / "out")["cultures"][0]
    assert sorted(Path(f["path"]).name for f in c["files"]) == ["060909.001", "060909.002"]
    assert c["verdict"] == "pass"


@pytest.mark.slow
def test_real_cellquest_exports_are_found(real_fcs: Path, tmp_path: Path) -> None:
    folder = real_fcs / "flowCore_compdata"
    code, _, stderr = _run(["analyze", str(folder), "-o", str(tmp_path / "out"), *QUICK])
    assert code == 0, stderr
    summary = _summary(tmp_path / "out")
    names = sorted(Path(f["path"]).name for c in summary["cultures"] for f in c["files"])
    assert names == [f"060909.00{i}" for i in range(1, 6)]  # not comp_match, compmatrix ...
    assert summary["errors"] == []


@pytest.mark.parametrize("content", [None, "notes.txt"])
def test_a_folder_without_fcs_files_is_one_line_and_exit_1(
    tmp_path: Path, content: str | None
) -> None:
    folder = tmp_path / "empty"
    (folder / "sub").mkdir(parents=True)
    if content:
        (folder / "sub" / content).write_text("no cytometry here")
    code, stdout, stderr = _run(["analyze", str(folder), "-o", str(tmp_path / "out"), *QUICK])
    assert code == 1 and stdout == ""
    assert stderr.splitlines() == [
        f"error: {folder}: no FCS files in this folder or its subfolders"
    ]
    assert not (tmp_path / "out").exists()  # nothing written, not even the folder


def test_an_output_folder_inside_the_input_is_never_read_back(tmp_path: Path) -> None:
    data = tmp_path / "in"
    _culture(data / "C1", "C1", 3)
    out = data / "reports"
    first = None
    for _ in range(2):
        code, _, stderr = _run(["analyze", str(data), "-o", str(out), "--export-events", *QUICK])
        assert code == 0, stderr
        assert [c["culture"] for c in _summary(out)["cultures"]] == ["C1"]
        assert (out / "C1" / "events" / "C1_Stained.fcs").is_file()
        first = first or (out / "summary.json").read_bytes()
    assert (out / "summary.json").read_bytes() == first


def test_output_equal_to_the_input_never_overwrites_a_users_file(tmp_path: Path) -> None:
    """-o IN with --export-events: the user's own C/events/X.fcs is neither overwritten nor read
    as cytomsc's; the run stops in one line before anything is written."""
    data = tmp_path / "in"
    paths = _culture(data / "C", "C", 4)
    stained = next(p for p in paths if "Stained" in p.name)
    (data / "C" / "events").mkdir()
    users = data / "C" / "events" / stained.name
    users.write_bytes(next(p for p in paths if p != stained).read_bytes())  # theirs, not ours
    before = _tree(data)
    code, _, stderr = _run(["analyze", str(data), "-o", str(data), "--export-events", *QUICK])
    assert code == 1 and len(stderr.splitlines()) == 1
    assert f"would overwrite C/events/{stained.name}, which cytomsc did not write" in stderr
    assert _tree(data) == before


def test_output_equal_to_the_input_reruns_cleanly(tmp_path: Path) -> None:
    """Without a clash, -o IN works: the exports of the first run are cytomsc's (by their
    recorded hashes), so the second run neither reads them as cultures nor refuses them."""
    data = tmp_path / "in"
    paths = _culture(data / "C", "C", 5)
    inputs = {p.name: p.read_bytes() for p in paths}
    for _ in range(2):
        code, _, stderr = _run(["analyze", str(data), "-o", str(data), "--export-events", *QUICK])
        assert code == 0, stderr
        assert [c["culture"] for c in _summary(data)["cultures"]] == ["C"]
    assert {p.name: p.read_bytes() for p in paths} == inputs
    listed = json.loads((data / RUN_FILE).read_text())["outputs"]
    assert f"C/events/{paths[0].name}" in listed


def test_a_symlinked_culture_folder_is_followed_once(tmp_path: Path) -> None:
    data = tmp_path / "in"
    _culture(data / "real", "real", 6)
    _culture(tmp_path / "elsewhere" / "C2", "C2", 7)
    (data / "linked").symlink_to(tmp_path / "elsewhere" / "C2", target_is_directory=True)
    (data / "real" / "loop").symlink_to(data, target_is_directory=True)  # a loop: not followed
    code, stdout, stderr = _run(["analyze", str(data), "-o", str(tmp_path / "out"), *QUICK])
    assert code == 0, stderr
    cultures = _summary(tmp_path / "out")["cultures"]
    assert sorted(c["culture"] for c in cultures) == ["linked", "real"]
    assert sum(len(c["files"]) for c in cultures) == 4  # each file once
    assert all(c["verdict"] == "pass" for c in cultures)


# ---- what may be replaced, and who writes -----------------------------------------------------


def test_leftover_temporary_files_are_cleaned_by_the_next_run(tmp_path: Path) -> None:
    _culture(tmp_path / "in" / "C", "C", 8)
    out = tmp_path / "out"
    args = ["analyze", str(tmp_path / "in"), "-o", str(out), *QUICK]
    assert _run(args)[0] == 0
    for where in (out, out / "C"):  # what a writer killed between mkstemp and rename leaves
        (where / ".tmp-k1ll3d_x.pdf").write_bytes(b"")
    (out / ".tmp-notes.txt").write_text("the user's, whatever its name")
    assert _run(args)[0] == 0
    assert not list(out.rglob(".tmp-*.pdf"))
    assert (out / ".tmp-notes.txt").is_file()


def _lock_holder(root: Path) -> subprocess.Popen:
    code = (
        "import sys; from cytomsc.output import RunFolder\n"
        f"f = RunFolder({str(root)!r}); f.lock(); print('locked', flush=True)\n"
        "sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_live_run_into_one_folder_refuses(tmp_path: Path) -> None:
    _culture(tmp_path / "in" / "C", "C", 9)
    out = tmp_path / "out"
    holder = _lock_holder(out)
    try:
        code, stdout, stderr = _run(["analyze", str(tmp_path / "in"), "-o", str(out), *QUICK])
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert code == 1 and stdout == ""
    assert stderr.splitlines() == [
        f"error: {out}: another cytomsc run (pid {holder.pid}) is "
        "writing into this folder; wait for it to finish or choose "
        "another output folder"
    ]
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # the holder's, untouched
    code, _, stderr = _run(["analyze", str(tmp_path / "in"), "-o", str(out), *QUICK])
    assert code == 0, stderr  # the dead holder's lock is taken over
    assert not (out / LOCK_FILE).exists() and not (out / STAGING).exists()


def _without_root_override() -> None:
    """In the child, before exec: drop CAP_DAC_OVERRIDE from the bounding set (prctl
    PR_CAPBSET_DROP), so that even root obeys a folder's permissions, as any user does."""
    import ctypes

    if os.geteuid() == 0 and ctypes.CDLL(None, use_errno=True).prctl(24, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_a_non_writable_output_folder_is_one_line(tmp_path: Path) -> None:
    _culture(tmp_path / "in" / "C", "C", 10)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        proc = subprocess.run(
            [*ENTRY, "analyze", str(tmp_path / "in"), "-o", str(out), *QUICK],
            capture_output=True,
            text=True,
            timeout=300,
            preexec_fn=_without_root_override,
        )
    finally:
        out.chmod(0o755)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        f"error: {out}: cannot write into the output folder (Permission denied)"
    ]
    assert list(out.iterdir()) == []


# ---- what is printed --------------------------------------------------------------------------


def test_a_missing_comp_matrix_is_one_usage_error(tmp_path: Path) -> None:
    _culture(tmp_path / "in" / "A", "A", 11)
    _culture(tmp_path / "in" / "B", "B", 12)
    missing = tmp_path / "missing.csv"
    code, stdout, stderr = _run(
        [
            "analyze",
            str(tmp_path / "in"),
            "-o",
            str(tmp_path / "out"),
            "--comp",
            str(missing),
            *QUICK,
        ]
    )
    assert code == 2 and stdout == ""
    assert stderr.count(str(missing)) == 1 and "--comp" in stderr
    assert not (tmp_path / "out").exists()


def test_debug_is_accepted_after_the_subcommand(tmp_path: Path) -> None:
    from cytomsc.errors import LayoutError, PanelError

    args = ["analyze", "--manifest", str(tmp_path / "missing.csv"), "-o", str(tmp_path / "out")]
    code, _, stderr = _run(args)
    assert code == 1 and "Traceback" not in stderr and "cannot read manifest" in stderr
    with pytest.raises(LayoutError):  # --debug: the error itself, for its traceback
        _run([*args, "--debug"])
    with pytest.raises(PanelError):  # every subcommand takes it
        _run(["panels", "show", "no-such-panel", "--debug"])


def test_warnings_are_counted_per_culture_and_printed_with_verbose(tmp_path: Path) -> None:
    _culture(tmp_path / "in" / "W", "W", 13)
    args = ["analyze", str(tmp_path / "in"), "--channel-map", "FL9-A=CD90", *QUICK]
    code, stdout, _ = _run([*args, "-o", str(tmp_path / "out")])
    assert code == 0
    culture = _summary(tmp_path / "out")["cultures"][0]
    warnings = culture["warnings"]
    assert [w for w in warnings if "channel map names FL9-A" in w]  # the typo is one of them
    assert culture["verdict"] == "pass" and len(warnings) >= 2
    assert stdout.splitlines()[0] == _verdict_line(culture)
    assert f"{len(warnings)} warnings" in stdout and "FL9-A" not in stdout
    code, stdout, _ = _run([*args, "-o", str(tmp_path / "out2"), "-v"])
    lines = stdout.splitlines()
    assert lines[0] == _verdict_line(culture)
    assert lines[1 : 1 + len(warnings)] == [f"  warning: {w}" for w in warnings]


def test_control_characters_are_escaped_in_messages_and_csv(tmp_path: Path) -> None:
    data = tmp_path / "in"
    _culture(data / "new\nline", "nl", 14)  # a folder name
    tubes = _culture(tmp_path / "files", "src", 15, src="nul\x00and\x1b[31mred")  # $SRC
    (data / "bad\nfile.fcs").write_bytes(b"FCS3.1" + b"\xff" * 30)
    out = tmp_path / "out"
    code, stdout, stderr = _run(["analyze", str(data), *map(str, tubes), "-o", str(out), *QUICK])
    assert code == 1
    cultures = {c["culture"]: c for c in _summary(out)["cultures"]}
    assert set(cultures) == {"new\nline", "nul\x00and\x1b[31mred"}  # kept exact in JSON
    assert sorted(stdout.splitlines()[:2]) == sorted(
        [
            _verdict_line(cultures["new\nline"], "new\\nline"),
            _verdict_line(cultures["nul\x00and\x1b[31mred"], "nul\\x00and\\x1b[31mred"),
        ]
    )
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1  # one line, naming the file
    assert errors[0].startswith(f"error: {data}/bad\\nfile.fcs: too short for an FCS HEADER")
    text = (out / "summary.csv").read_text(encoding="utf-8")
    rows = text.split("\n")[1:-1]
    assert len(rows) == 2 * 8 and all(r.count(",") >= 16 for r in rows)
    assert {r.split(",")[0] for r in rows} == {"new\\nline", "nul\\x00and\\x1b[31mred"}
    raw = (out / "summary.json").read_text(encoding="utf-8")
    assert "\x00" not in raw and "\r" not in raw  # JSON escapes them: one line stays one line
    assert all(line.count('"') % 2 == 0 for line in raw.splitlines())  # no string split


@pytest.mark.slow
def test_simulate_says_what_it_wrote_and_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    code, stdout, stderr = _run(["simulate", str(out)])
    assert code == 0, stderr
    fcs = sorted(out.rglob("*.fcs"))
    folders = {p.parent for p in fcs}
    assert stdout.strip() == (
        f"wrote {len(folders)} simulated culture(s), {len(fcs)} FCS "
        f"file(s) and truth.json (the known answers) to {out}"
    )
    truth = json.loads((out / "truth.json").read_text())
    assert len(truth["cultures"]) == len(folders) == 4
    before = _tree(out)
    (out / "mine.txt").write_text("keep")
    code, stdout, stderr = _run(["simulate", str(out)])
    assert code == 1 and stdout == ""
    assert stderr.splitlines() == [
        f"error: {out}: is not empty: pass --overwrite to write the "
        "simulated cultures into it anyway"
    ]
    code, _, _ = _run(["simulate", str(out), "--overwrite"])
    assert code == 0
    assert {k: v for k, v in _tree(out).items() if k != "mine.txt"} == before  # same bytes


# ---- on a terminal, and the user's home --------------------------------------------------------


def _run_on_terminal(args: list[str], home: Path) -> tuple[int, list[tuple[float, str, str]]]:
    """Run the installed command with stderr on a pseudo-terminal (80 columns) and stdout on a
    pipe; returns the exit status and what came, in order: (time, "err"|"out", text)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")
    }
    env["HOME"] = str(home)
    start = time.monotonic()
    proc = subprocess.Popen(
        [*ENTRY, *args], stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, env=env
    )
    os.close(slave)
    events: list[tuple[float, str, str]] = []
    streams = {master: "err", proc.stdout.fileno(): "out"}
    while streams:
        ready, _, _ = select.select(list(streams), [], [], 60)
        assert ready, "no output for 60 s"
        for fd in ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the terminal closes with the process
                chunk = b""
            if not chunk:
                del streams[fd]
                continue
            events.append((time.monotonic() - start, streams[fd], chunk.decode("utf-8", "replace")))
    os.close(master)
    return proc.wait(timeout=60), events


@pytest.fixture(scope="module")
def terminal_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two cultures with PDFs, stderr on a terminal, HOME a fresh folder."""
    root = tmp_path_factory.mktemp("terminal")
    _culture(root / "in" / "T1", "T1", 16)
    _culture(root / "in" / "T2", "T2", 17)
    (root / "home").mkdir()
    code, events = _run_on_terminal(
        ["analyze", str(root / "in"), "-o", str(root / "out"), "--cluster", "none", "--jobs", "2"],
        root / "home",
    )
    return {"root": root, "code": code, "events": events}


@pytest.mark.slow
def test_progress_on_a_terminal_from_the_start_with_counts_and_time_left(
    terminal_run: dict,
) -> None:
    assert terminal_run["code"] == 0
    events = terminal_run["events"]
    err = "".join(text for _, kind, text in events if kind == "err")
    out = "".join(text for _, kind, text in events if kind == "out")
    assert "analysing 0/2 culture(s)" in err and "analysing 1/2 culture(s)" in err
    assert "elapsed" in err and "left" in err
    cultures = _summary(terminal_run["root"] / "out")["cultures"]
    assert sorted(out.splitlines()[:2]) == sorted(_verdict_line(c) for c in cultures)
    first_bar = next(t for t, kind, text in events if kind == "err" and "0/2" in text)
    first_verdict = next(t for t, kind, text in events if kind == "out")
    assert first_bar < first_verdict  # the bar is there before any culture is done
    assert next(t for t, kind, _ in events if kind == "err") < 1.0  # something in the 1st second


@pytest.mark.slow
def test_no_progress_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    _culture(tmp_path / "in" / "P", "P", 18)
    _culture(tmp_path / "in" / "Q", "Q", 19)
    code, stdout, stderr = _run(
        [
            "analyze",
            str(tmp_path / "in"),
            "-o",
            str(tmp_path / "out"),
            "--no-pdf",
            "--cluster",
            "none",
            "--jobs",
            "2",
        ]
    )
    assert code == 0
    assert stderr == ""  # no progress line, no carriage returns: nothing for a log
    cultures = _summary(tmp_path / "out")["cultures"]
    assert sorted(stdout.splitlines()[:2]) == sorted(_verdict_line(c) for c in cultures)


@pytest.mark.slow
def test_matplotlib_writes_nothing_into_the_home_folder(terminal_run: dict) -> None:
    root = terminal_run["root"]
    assert terminal_run["code"] == 0 and (root / "out" / "T1.pdf").is_file()
    assert list((root / "home").rglob("*")) == []  # no ~/.cache/matplotlib, no ~/.config
    assert not [p for p in (root / "out").rglob("*") if "fontlist" in p.name]
