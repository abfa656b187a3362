"""Writing only inside the output folder, atomically; the run folder's lock, staging, commit and
recovery (the whole-run behaviour is tested through the CLI in test_cli.py and
test_interrupt.py)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cytomsc.errors import CytomscError
from cytomsc.output import JOURNAL, LOCK_FILE, RUN_FILE, STAGING, OutputDir, RunFolder


def test_refuses_paths_outside(tmp_path: Path) -> None:
    out = OutputDir(tmp_path / "out")
    with pytest.raises(CytomscError):
        out.path("..", "escape.txt")
    with pytest.raises(CytomscError):
        out.path("/tmp/x")
    assert out.path("a", "b.txt") == (tmp_path / "out" / "a" / "b.txt").resolve()


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    out.write_text("old", "r.json")
    with pytest.raises(RuntimeError), out.atomic("r.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert (tmp_path / "r.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    assert out.hashes == {"r.json": hashlib.sha256(b"old").hexdigest()}


def _run(root: Path, files: dict[str, str], cultures: dict[str, str] | None = None) -> list[str]:
    """One run through RunFolder writing ``files``: returns what the commit removed."""
    with RunFolder(root) as folder:
        staged = folder.staging()
        for rel, text in files.items():
            staged.write_text(text, *rel.split("/"))
        return folder.commit(staged.hashes, {"cytomsc_version": "test", "cultures": cultures or {}})


def test_commit_replaces_and_removes_only_its_own_unchanged_files(tmp_path: Path) -> None:
    _run(tmp_path, {"c1/gates.xml": "x", "c2/gates.xml": "y", "c3.pdf": "z", "summary.json": "{}"})
    (tmp_path / "user-notes.txt").write_text("mine")
    (tmp_path / "c3.pdf").write_text("signed by the reviewer")  # changed since: no longer ours
    run = json.loads((tmp_path / RUN_FILE).read_text())
    assert run["sha256"]["c1/gates.xml"] == hashlib.sha256(b"x").hexdigest()
    removed = _run(tmp_path, {"c1/gates.xml": "x2", "summary.json": "{}"})
    assert removed == ["c2/gates.xml"]
    assert (tmp_path / "c1" / "gates.xml").read_text() == "x2"
    assert not (tmp_path / "c2").exists()  # emptied by the removal: gone too
    assert (tmp_path / "c3.pdf").read_text() == "signed by the reviewer"
    assert (tmp_path / "user-notes.txt").read_text() == "mine"
    assert sorted(json.loads((tmp_path / RUN_FILE).read_text())["outputs"]) == [
        "c1/gates.xml",
        RUN_FILE,
        "summary.json",
    ]
    assert not (tmp_path / STAGING).exists() and not (tmp_path / LOCK_FILE).exists()
    # c3.pdf is no longer listed: a run writing it again must not overwrite the reviewer's file
    with pytest.raises(CytomscError, match="would overwrite c3.pdf, which cytomsc did not write"):
        _run(tmp_path, {"c3.pdf": "new"})
    assert (tmp_path / "c3.pdf").read_text() == "signed by the reviewer"


def test_a_link_under_a_final_name_is_never_written_through(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / "c.pdf").symlink_to(target)
    with pytest.raises(CytomscError, match="would overwrite c.pdf"):
        _run(out, {"c.pdf": "new"})
    assert target.read_text() == "keep" and (out / "c.pdf").is_symlink()


def test_other_cultures_lists_what_overwrite_would_remove(tmp_path: Path) -> None:
    _run(
        tmp_path,
        {
            "A.pdf": "a",
            "A/gates.xml": "a",
            "B.pdf": "b",
            "B/events/t.fcs": "b",
            "summary.json": "{}",
        },
    )
    with RunFolder(tmp_path) as folder:
        assert folder.other_cultures({"A"}) == {"B": ["B.pdf", "B/events/t.fcs"]}
        assert folder.other_cultures({"A", "B"}) == {}


def _lock_holder(root: Path) -> subprocess.Popen:
    """Another process that holds ``root``'s lock until its stdin closes."""
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


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path: Path) -> None:
    holder = _lock_holder(tmp_path)
    try:
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(holder.pid)
        with pytest.raises(
            CytomscError,
            match=f"another cytomsc run \\(pid {holder.pid}\\) is writing into this folder",
        ):
            RunFolder(tmp_path).lock()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    # The holder exited without removing its lock file (as a killed run does): taken over.
    assert (tmp_path / LOCK_FILE).read_text().strip() == str(holder.pid)
    folder = RunFolder(tmp_path)
    folder.lock()
    assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
    folder.unlock()
    assert not (tmp_path / LOCK_FILE).exists()


def test_recovery_discards_an_unfinished_staging_folder(tmp_path: Path) -> None:
    _run(tmp_path, {"A.pdf": "a", "summary.json": "{}"})
    before = (tmp_path / RUN_FILE).read_bytes()
    (tmp_path / STAGING / "A").mkdir(parents=True)
    (tmp_path / STAGING / "A.pdf").write_text("half")
    (tmp_path / ".tmp-abcd1234.pdf").write_bytes(b"")  # left by a killed writer of an old version
    (tmp_path / "A").mkdir()
    (tmp_path / "A" / ".tmp-zz_9y8x7.xml").write_bytes(b"")
    (tmp_path / ".tmp-mine.txt").write_text("not ours: other shape")
    with RunFolder(tmp_path):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".tmp-mine.txt",
        "A",
        "A.pdf",
        RUN_FILE,
        "summary.json",
    ]
    assert list((tmp_path / "A").iterdir()) == []
    assert (tmp_path / "A.pdf").read_text() == "a" and (tmp_path / RUN_FILE).read_bytes() == before


def test_recovery_finishes_a_commit_from_its_journal(tmp_path: Path) -> None:
    """A run killed half-way through its moves: the next run completes them (the journal says
    which files, what to remove and the new run.json), so OUT is one run's results again."""
    _run(tmp_path, {"A.pdf": "a", "B.pdf": "b", "summary.json": "{}"})
    new = {"A.pdf": "a2", "C.pdf": "c", "summary.json": "{2}"}
    digest = {rel: hashlib.sha256(t.encode()).hexdigest() for rel, t in new.items()}
    run = {
        "schema": "cytomsc.run/1",
        "cytomsc_version": "test",
        "cultures": {},
        "outputs": [*sorted(new), RUN_FILE],
        "sha256": digest,
    }
    staging = tmp_path / STAGING
    staging.mkdir()
    for rel, text in new.items():
        (staging / rel).write_text(text)
    old_b = hashlib.sha256(b"b").hexdigest()
    (staging / JOURNAL).write_text(json.dumps({"run": run, "remove": {"B.pdf": old_b}}))
    os.replace(staging / "A.pdf", tmp_path / "A.pdf")  # the killed run had moved this one
    with RunFolder(tmp_path) as folder:
        assert folder.previous.hashes == digest
    assert {p.name: p.read_text() for p in tmp_path.iterdir() if p.name != RUN_FILE} == new
    assert json.loads((tmp_path / RUN_FILE).read_text()) == run
    assert not staging.exists()
