"""Interrupted runs (issue 12 "Interrupted and concurrent runs", issue 11's Ctrl-C): SIGKILL
and Ctrl-C (SIGINT to the process group, as a terminal sends it) at several moments of a batch,
through the installed command in a subprocess.

After every kill: only whole files under final names, and exactly the previous complete results
(or nothing); no worker process outlives its parent (checked in /proc). After Ctrl-C: exit 130
within 2 s, no traceback, nothing left at all. The next complete run leaves nothing behind and
writes the same summary.json bytes as a clean run into a fresh folder.

The moments are found by watching the staging folder, so the test does not depend on timing:
"reading" (the workers exist, nothing is written yet), "PDFs" (a culture's PDF is being written),
"summary" (summary.json is written, the overview is next) and "commit" (a run killed by a fault
injected after its second rename into place). Two small cultures keep each run to a few seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from cytomsc.cli import main
from cytomsc.output import JOURNAL, LOCK_FILE, RUN_FILE, STAGING
from cytomsc.simulate import CultureDesign, simulate_culture

pytestmark = [
    pytest.mark.slow,  # runs killed and interrupted in child processes
    pytest.mark.skipif(
        not Path("/proc/self/task").is_dir(), reason="the orphan checks read /proc (Linux)"
    ),
]

_SCRIPT = Path(sys.executable).parent / "cytomsc"
ENTRY = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "cytomsc"]
ARGS = ["--cluster", "none", "--jobs", "2"]
# The same command with a fault: SIGKILL right after the second file is renamed into place.
KILL_IN_COMMIT = [
    sys.executable,
    "-c",
    """
import os, signal, sys
import cytomsc.output as output
real, moved = output._move, []
def move(src, dst):
    real(src, dst)
    moved.append(dst)
    if len(moved) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
output._move = move
from cytomsc.cli import entry
sys.argv[0] = "cytomsc"
entry()
""",
]


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("interrupt")
    for i in range(2):
        design = CultureDesign(
            f"K{i + 1}", n_events=1500, controls=("isotype",), seed_offset=40 + i
        )
        for t in simulate_culture(design, 5):
            t.write(root / "in" / f"K{i + 1}")
    ref = root / "clean"
    result = CliRunner().invoke(main, ["analyze", str(root / "in"), "-o", str(ref), *ARGS])
    assert result.exit_code == 0, result.output
    return {"root": root, "in": root / "in", "ref": ref}


def _final(out: Path) -> dict[str, str]:
    """Files under final names (everything but cytomsc's hidden lock and staging folder)."""
    found = {}
    if not out.exists():
        return found
    for dirpath, dirs, files in os.walk(out):
        dirs[:] = [d for d in dirs if not (Path(dirpath) == out and d == STAGING)]
        for f in files:
            p = Path(dirpath) / f
            rel = p.relative_to(out).as_posix()
            if rel != LOCK_FILE:
                found[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def _whole(out: Path) -> None:
    """Every file under a final name is complete: JSON parses, XML parses, PDFs end."""
    for rel in _final(out):
        p = out / rel
        if p.suffix == ".json":
            json.loads(p.read_text(encoding="utf-8"))
        elif p.suffix == ".xml":
            ET.parse(p)
        elif p.suffix == ".pdf":
            assert p.read_bytes().rstrip().endswith(b"%%EOF"), rel
        elif p.suffix == ".csv":
            assert p.read_text(encoding="utf-8").endswith("\n"), rel


def _descendants(pid: int) -> set[tuple[int, str]]:
    """(pid, start time) of every living descendant of ``pid``, from /proc."""
    found: set[tuple[int, str]] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            for k in kids:
                start = _start_time(k)
                if start is not None:
                    found.add((k, start))
                    todo.append(k)
    return found


def _start_time(pid: int) -> str | None:
    """The process's start time, or None when it is gone or a zombie (so a reused pid is not
    mistaken for it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def _run_until(
    command: list[str], out: Path, batch: dict, moment: Callable[[Path], bool], sig: int
) -> dict:
    """Start a run, wait until ``moment(staging folder)`` holds, send ``sig`` (to the process
    group for SIGINT, as a terminal does), and report what happened."""
    started = time.time()
    proc = subprocess.Popen(
        [*command, "analyze", str(batch["in"]), "-o", str(out), *ARGS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not (_this_run(out, proc.pid, started) and moment(out / STAGING)):
        assert proc.poll() is None, f"the run ended before the moment: {proc.communicate()}"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    workers = _descendants(proc.pid)
    sent = time.monotonic()
    if sig == signal.SIGINT:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    gone = time.monotonic() + 3
    while any(_start_time(p) == s for p, s in workers) and time.monotonic() < gone:
        time.sleep(0.02)
    alive = {p for p, s in workers if _start_time(p) == s}
    return {
        "code": proc.returncode,
        "took": took,
        "stdout": stdout,
        "stderr": stderr,
        "workers": workers,
        "alive": alive,
    }


def _this_run(out: Path, pid: int, started: float) -> bool:
    """OUT is locked by this run and the staging folder is its own: made after it started, and
    not the one of a killed commit, which this run first finishes (that one has a journal)."""
    try:
        return (
            int((out / LOCK_FILE).read_text()) == pid
            and (out / STAGING).stat().st_ctime >= started
            and not (out / STAGING / JOURNAL).exists()
        )
    except (OSError, ValueError):
        return False


def _reading(staging: Path) -> bool:
    """The workers are at work and nothing is written yet."""
    return staging.is_dir() and not any(staging.iterdir()) and _pool_started(staging)


def _pool_started(staging: Path) -> bool:
    lock = staging.parent / LOCK_FILE
    try:
        pid = int(lock.read_text())
    except (OSError, ValueError):
        return False
    return len(_descendants(pid)) >= 2


def _pdfs(staging: Path) -> bool:
    """A culture's PDF is being written (or just was) in the staging folder."""
    return staging.is_dir() and any(p.suffix == ".pdf" for p in staging.iterdir())


def _summary(staging: Path) -> bool:
    """summary.json is written; summary.csv and the overview are next."""
    return (staging / "summary.json").is_file()


def _killed(r: dict, workers: bool) -> None:
    assert r["code"] == -signal.SIGKILL
    if workers:
        assert len(r["workers"]) >= 2  # the moment had workers at work
    assert not r["alive"], f"orphan workers still alive: {r['alive']}"


def _interrupted(r: dict, out: Path) -> None:
    assert r["code"] == 130, r["stderr"]
    assert r["took"] < 2.0
    assert "Traceback" not in r["stderr"] and "Exception ignored" not in r["stderr"]
    assert r["stderr"].splitlines()[-1] == f"interrupted: nothing was changed in {out}"
    assert not r["alive"]


def _complete(out: Path, batch: dict) -> None:
    """A complete run (in this process: it costs no start-up): exit 0, the clean run's
    summary.json bytes and file names, nothing hidden left (no staging, no lock, no temporary
    file), run.json listing exactly what is there with the right hashes."""
    result = CliRunner().invoke(main, ["analyze", str(batch["in"]), "-o", str(out), *ARGS])
    assert result.exit_code == 0, result.output
    assert (out / "summary.json").read_bytes() == (batch["ref"] / "summary.json").read_bytes()
    present = _final(out)
    assert set(present) == set(_final(batch["ref"]))
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    assert not [p for p in out.rglob(".tmp-*")]
    run = json.loads((out / RUN_FILE).read_text())
    assert set(run["outputs"]) == set(present)
    assert all(present[rel] == digest for rel, digest in run["sha256"].items())


def test_kills_and_interrupts_leave_whole_files_and_the_next_run_cleans(batch: dict) -> None:
    out = batch["root"] / "out"

    # Ctrl-C into a new folder while the workers read: nothing appears, nothing is left
    r = _run_until(ENTRY, out, batch, _reading, signal.SIGINT)
    _interrupted(r, out)
    assert len(r["workers"]) >= 2
    assert not out.exists()

    _complete(out, batch)
    before = _final(out)

    # kill -9 while the workers write PDFs: the complete results stay, byte for byte
    r = _run_until(ENTRY, out, batch, _pdfs, signal.SIGKILL)
    _killed(r, workers=True)
    assert _final(out) == before
    assert (out / STAGING).is_dir() and (out / LOCK_FILE).is_file()  # for the next run to clean

    # kill -9 half-way through moving the results into place
    proc = subprocess.run(
        [*KILL_IN_COMMIT, "analyze", str(batch["in"]), "-o", str(out), *ARGS],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL
    _whole(out)  # two files already replaced, the rest not yet: each of them whole
    assert _final(out) != before and set(_final(out)) == set(before)
    assert json.loads((out / RUN_FILE).read_text())["outputs"]  # run.json never missing

    # the next run first finishes the killed commit from its journal; Ctrl-C as it writes the
    # summary then leaves that run's results, whole and as its run.json lists them
    r = _run_until(ENTRY, out, batch, _summary, signal.SIGINT)
    _interrupted(r, out)
    _whole(out)
    assert not (out / STAGING).exists() and not (out / LOCK_FILE).exists()
    run, present = json.loads((out / RUN_FILE).read_text()), _final(out)
    assert set(run["outputs"]) == set(present)
    assert all(present[rel] == digest for rel, digest in run["sha256"].items())

    _complete(out, batch)
