"""Writing results safely inside the output folder.

Every file is written under a temporary name in its final folder and renamed into place, so an
interrupted run never leaves a truncated PDF or JSON under its final name. Every path is checked to
lie inside the output folder: culture names come from folder names and FCS keywords that anyone can
write, and are sanitized before they get here (``layout.safe_name``); this is the second lock.
``run.json`` lists what a run wrote, so that a rerun into the same folder removes its own stale
results (and nothing else).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import CytomscError

RUN_FILE = "run.json"
OUTPUT_SUFFIXES = (".pdf", ".json", ".csv", ".xml", ".fcs")  # the kinds of file cytomsc writes


class OutputDir:
    """The output folder: resolves and checks paths, writes atomically, remembers what it wrote."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CytomscError(f"cannot create the output folder: {err.strerror}", root) from err
        self.written: list[str] = []

    def path(self, *parts: str) -> Path:
        """A path inside the output folder; anything that would leave it is an error."""
        p = self.root.joinpath(*parts).resolve()
        if p != self.root and self.root not in p.parents:
            raise CytomscError("refusing to write outside the output folder", p)
        return p

    @contextlib.contextmanager
    def atomic(self, *parts: str) -> Iterator[Path]:
        """Yield a temporary path to write; on success it is renamed to the final path."""
        final = self.path(*parts)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=final.suffix, dir=final.parent)
        os.close(fd)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are for the whole lab to read
        try:
            yield Path(tmp)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.written.append(final.relative_to(self.root).as_posix())

    def write_text(self, text: str, *parts: str) -> None:
        with self.atomic(*parts) as tmp:
            tmp.write_text(text, encoding="utf-8")

    def previous_outputs(self) -> list[str]:
        """Files the previous run into this folder listed in its run.json."""
        try:
            old = json.loads(self.path(RUN_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        if not isinstance(old, dict) or "cytomsc_version" not in old:
            return []  # not ours: never delete on the word of another tool's run.json
        return [str(f) for f in old.get("outputs", [])
                if str(f).lower().endswith(OUTPUT_SUFFIXES)]

    def remove_stale(self, previous: list[str]) -> None:
        """Delete what the previous run wrote and this one did not (only inside the folder)."""
        keep = set(self.written)
        for rel in previous:
            if rel in keep:
                continue
            try:
                p = self.path(rel)
            except CytomscError:
                continue
            with contextlib.suppress(OSError):
                p.unlink()
            # Empty folders left behind by removed files go too.
            parent = p.parent
            while parent != self.root and self.root in parent.parents:
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent
