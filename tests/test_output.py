"""Writing only inside the output folder, atomically, and cleaning a rerun's stale files."""

from __future__ import annotations

from pathlib import Path

import pytest

from cytomsc.errors import CytomscError
from cytomsc.output import OutputDir


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


def test_remove_stale_only_removes_previous_outputs(tmp_path: Path) -> None:
    out = OutputDir(tmp_path)
    out.write_text("x", "c1", "gates.xml")
    out.write_text("y", "c2", "gates.xml")
    (tmp_path / "user-notes.txt").write_text("mine")
    previous = list(out.written) + ["../outside.txt"]
    (tmp_path.parent / "outside.txt").write_text("keep")
    again = OutputDir(tmp_path)
    again.write_text("x2", "c1", "gates.xml")
    again.remove_stale(previous)
    assert (tmp_path / "c1" / "gates.xml").read_text() == "x2"
    assert not (tmp_path / "c2").exists()
    assert (tmp_path / "user-notes.txt").exists()
    assert (tmp_path.parent / "outside.txt").exists()
