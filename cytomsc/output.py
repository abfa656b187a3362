"""Writing results safely inside the output folder.

Culture names come from folder names and FCS keywords that anyone can write; they are sanitized
before they get here (``layout.safe_name``), and every path is checked again to lie inside the
output folder. Beyond that, this module keeps four promises:

- **Whole files only, under final names.** A run writes everything into a staging folder inside
  OUT (``.cytomsc-staging``), each file under a temporary name renamed into place. Only when the
  batch is complete are the files moved to their final names: a journal (``commit.json``) is
  written first, then the files are renamed, stale ones removed and ``run.json`` replaced last.
  ``run.json`` is never deleted before its successor exists. A run killed before the journal
  leaves only the staging folder, which the next run removes; one killed during the moves (a few
  milliseconds, with Ctrl-C held back) is finished by the next run from its journal.
- **Nothing cytomsc did not write is ever overwritten or deleted.** ``run.json`` lists every file
  a run wrote with its SHA-256; only those files, and only while their bytes still hash to what
  was recorded, may be replaced or removed. Any other file under a name this run would write is a
  conflict, and the run stops without changing anything.
- **Results of other cultures are removed only when asked** (``--overwrite``): the caller reads
  ``other_cultures`` before the analysis.
- **One run at a time.** OUT is locked by ``.cytomsc.lock``, which holds the running process's
  pid. The lock is an OS file lock (``flock``), so the kernel releases it when its holder dies:
  a lock file left by a killed run is simply taken over, and pid reuse cannot fool it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CytomscError

RUN_FILE = "run.json"
RUN_SCHEMA = "cytomsc.run/1"
LOCK_FILE = ".cytomsc.lock"
STAGING = ".cytomsc-staging"
JOURNAL = "commit.json"
BATCH_FILES = (
    "summary.json",
    "summary.csv",
    "cultures.csv",
    "overview.pdf",
    "compensation.csv",
    "sha256sums.txt",
    RUN_FILE,
)
# the kinds of file cytomsc writes
OUTPUT_SUFFIXES = (".pdf", ".json", ".csv", ".xml", ".fcs", ".txt")
# What tempfile.mkstemp(prefix=".tmp-", suffix=<one of ours>) names: 8 characters of
# [a-z0-9_]. A file of that exact shape in OUT was left by a killed writer of ours.
_TEMP_NAME = re.compile(r"^\.tmp-[a-z0-9_]{8}\.(pdf|json|csv|xml|fcs)$")


@contextlib.contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """Write ``final`` atomically: yield a temporary path beside it (same folder, so the same file
    system), renamed to ``final`` when the block ends without an error; removed otherwise. A
    reader sees the old file or the whole new one, never a part; a killed writer leaves only a
    ``.tmp-*`` file, which the next run removes (``RunFolder.recover``). The file is made 0644:
    results are for the whole lab to read (``mkstemp`` makes 0600). The one atomic write of
    cytomsc: results, run.json, FCS files, GatingML."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=final.suffix, dir=final.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o644)
        yield Path(tmp)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _why(err: OSError) -> str:
    return err.strerror or type(err).__name__


class OutputDir:
    """A folder written atomically: resolves and checks paths, remembers what it wrote and the
    SHA-256 of each file (hashed once, where it was written: in the worker that made it)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CytomscError(f"cannot create the output folder ({_why(err)})", root) from err
        self.written: list[str] = []
        self.hashes: dict[str, str] = {}

    def path(self, *parts: str) -> Path:
        """A path inside the folder; anything that would leave it is an error."""
        p = self.root.joinpath(*parts).resolve()
        if p != self.root and self.root not in p.parents:
            raise CytomscError("refusing to write outside the output folder", p)
        return p

    @contextlib.contextmanager
    def atomic(self, *parts: str) -> Iterator[Path]:
        """Yield a temporary path to write; on success it is renamed to the final path."""
        final = self.path(*parts)
        with atomic_file(final) as tmp:
            yield tmp
        rel = final.relative_to(self.root).as_posix()
        self.written.append(rel)
        self.hashes[rel] = sha256_of(final)

    def write_text(self, text: str, *parts: str) -> None:
        with self.atomic(*parts) as tmp:
            tmp.write_text(text, encoding="utf-8")

    def write_bytes(self, data: bytes, *parts: str) -> None:
        with self.atomic(*parts) as tmp:
            tmp.write_bytes(data)


class MemoryDir:
    """Files "written" into memory: the same ``atomic`` and ``write_text`` as ``OutputDir``, for a
    worker that cannot reach OUT (a Dask worker on another machine). Each file is made in a
    private temporary folder, read back and removed; ``files`` holds the bytes by path relative
    to OUT, for the batch to write into its staging folder (``OutputDir.write_bytes``)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hashes: dict[str, str] = {}

    @contextlib.contextmanager
    def atomic(self, *parts: str) -> Iterator[Path]:
        rel = Path(*parts)
        if rel.is_absolute() or ".." in rel.parts:
            raise CytomscError("refusing to write outside the output folder", rel)
        with tempfile.TemporaryDirectory(prefix="cytomsc-") as tmp:
            path = Path(tmp) / f"file{rel.suffix}"
            yield path
            data = path.read_bytes()
        self.files[rel.as_posix()] = data
        self.hashes[rel.as_posix()] = hashlib.sha256(data).hexdigest()

    def write_text(self, text: str, *parts: str) -> None:
        with self.atomic(*parts) as tmp:
            tmp.write_text(text, encoding="utf-8")


@dataclass
class PreviousRun:
    """What the last complete run into this folder recorded in its run.json."""

    hashes: dict[str, str | None] = field(default_factory=dict)  # file -> SHA-256 (None: none)
    cultures: dict[str, str] = field(default_factory=dict)  # output name -> culture
    foreign: bool = False  # a run.json that cytomsc did not write


class RunFolder:
    """The output folder of one run: lock, previous results, staging, commit.

    Use as a context manager: entering locks OUT and finishes or discards whatever a killed run
    left; leaving removes the staging folder (unless a commit must still be finished) and the
    lock."""

    def __init__(self, root: Path) -> None:
        self.given = Path(root)
        self.root = Path(root).resolve()
        self.created = not self.root.exists()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CytomscError(f"cannot create the output folder ({_why(err)})", root) from err
        if not self.root.is_dir():
            raise CytomscError("is not a folder", root)
        self.previous = PreviousRun()
        self.staged: OutputDir | None = None
        self._lock_fd: int | None = None
        self._ours: dict[str, bool] = {}
        self._keep_staging = False
        self.committed = False  # the results are in place (an interrupt may still follow)

    # ---- lifetime ----------------------------------------------------------------------------
    def __enter__(self) -> RunFolder:
        self.lock()
        try:
            self.recover()
            self.previous = self._read_previous()
        except BaseException:
            self.unlock()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if not self._keep_staging:
                self.discard()
        finally:
            self.unlock()
            if self.created:  # a run that found nothing to do leaves no empty folder behind
                with contextlib.suppress(OSError):
                    self.root.rmdir()

    def lock(self) -> None:
        """Take OUT's lock or refuse: another live run is writing there."""
        path = self.root / LOCK_FILE
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as err:
                raise CytomscError(
                    f"cannot write into the output folder ({_why(err)})", self.given
                ) from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip()
                os.close(fd)
                who = f" (pid {holder})" if holder.isdigit() else ""
                raise CytomscError(
                    f"another cytomsc run{who} is writing into this folder; wait "
                    "for it to finish or choose another output folder",
                    self.given,
                ) from None
            # The holder we waited on may have removed the file as it finished: lock the new one.
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.root / LOCK_FILE)
        os.close(self._lock_fd)
        self._lock_fd = None

    def recover(self) -> None:
        """Finish a commit a killed run had started (its journal says what), or discard the
        staging folder of a run killed earlier; remove temporary files a killed writer of an
        earlier version left among the results."""
        staging = self.root / STAGING
        if staging.is_symlink():
            raise CytomscError(
                f"{STAGING} is a symbolic link, not cytomsc's staging folder; remove it", self.given
            )
        if staging.is_dir():
            journal = staging / JOURNAL
            if journal.is_file():
                try:
                    doc = json.loads(journal.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    doc = None  # written atomically, so this is not ours: discard
                if isinstance(doc, dict) and isinstance(doc.get("run"), dict):
                    with interrupts_held():
                        self._apply(doc)
            self._rmtree(staging)
        for folder in self._result_folders():
            with contextlib.suppress(OSError):
                for entry in os.scandir(folder):
                    if _TEMP_NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
                        with contextlib.suppress(OSError):
                            os.unlink(entry.path)

    def _result_folders(self) -> Iterator[Path]:
        """Where cytomsc writes: OUT, each folder in it, and their ``events`` folders."""
        yield self.root
        with contextlib.suppress(OSError):
            for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
                if entry.name != STAGING and entry.is_dir(follow_symlinks=False):
                    yield Path(entry.path)
                    events = Path(entry.path) / "events"
                    if events.is_dir() and not events.is_symlink():
                        yield events

    def _rmtree(self, path: Path) -> None:
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise CytomscError(
                f"cannot remove {STAGING} left by an earlier run ({_why(err)})", self.given
            ) from err

    def _read_previous(self) -> PreviousRun:
        path = self.root / RUN_FILE
        if not path.exists():
            return PreviousRun()
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            doc = None
        if not isinstance(doc, dict) or "cytomsc_version" not in doc:
            return PreviousRun(foreign=True)  # never act on the word of another tool's run.json
        recorded = _mapping(doc.get("sha256"))
        hashes: dict[str, str | None] = {}
        for rel in doc.get("outputs", []):
            rel = str(rel)
            if rel != RUN_FILE and rel.lower().endswith(OUTPUT_SUFFIXES):
                value = recorded.get(rel)
                hashes[rel] = value if isinstance(value, str) else None
        cultures = _mapping(doc.get("cultures"))
        return PreviousRun(hashes=hashes, cultures={str(k): str(v) for k, v in cultures.items()})

    # ---- what is ours ------------------------------------------------------------------------
    def path(self, rel: str) -> Path:
        """The final path of ``rel`` inside OUT. Its folder is resolved (and must lie inside OUT)
        but the name itself is not: a symbolic link there is the thing replaced or refused, never
        a way to write to where it points."""
        name = Path(rel)
        folder = (self.root / name).parent.resolve()
        if (
            name.is_absolute()
            or name.name in ("", ".", "..")
            or (folder != self.root and self.root not in folder.parents)
        ):
            raise CytomscError("refusing to write outside the output folder", self.root / rel)
        return folder / name.name

    def ours(self, rel: str) -> bool:
        """True when ``rel`` is a regular file the previous run wrote and it still has the bytes
        recorded then: only such a file may be replaced or removed."""
        if rel not in self._ours:
            self._ours[rel] = _matches(self._safe(rel), self.previous.hashes.get(rel))
        return self._ours[rel]

    def _safe(self, rel: str) -> Path | None:
        try:
            return self.path(rel)
        except CytomscError:
            return None

    def owned_inputs(self) -> set[Path]:
        """Files under OUT that cytomsc wrote and still carry its bytes (discovery leaves them
        out when OUT is also an input folder)."""
        return {
            p
            for rel in self.previous.hashes
            if rel.lower().endswith(".fcs")
            and (p := self._safe(rel)) is not None
            and self.ours(rel)
        }

    def conflicts(self, rels: Iterable[str]) -> list[str]:
        """The names among ``rels`` where writing would replace something cytomsc did not write
        (or write through a file, or outside OUT)."""
        bad = []
        for rel in rels:
            if rel == RUN_FILE:
                if self.previous.foreign:
                    bad.append(rel)
                continue
            try:
                p = self.path(rel)
            except CytomscError:
                bad.append(rel)
                continue
            parents = [q for q in p.parents if q != self.root and self.root in q.parents]
            if any(q.exists() and not q.is_dir() for q in parents):
                bad.append(rel)
            elif (p.exists() or p.is_symlink()) and not self.ours(rel):
                bad.append(rel)
        return bad

    def check_free(self, rels: Iterable[str]) -> None:
        """Raise, naming the first, when any of ``rels`` would overwrite a file not ours."""
        bad = self.conflicts(rels)
        if bad:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise CytomscError(
                f"would overwrite {bad[0]}{more}, which cytomsc did not write "
                "(or which changed since): move it away or choose another output "
                "folder",
                self.given,
            )

    def other_cultures(self, names: set[str]) -> dict[str, list[str]]:
        """Results of the previous run that belong to no culture named in ``names`` (output
        names), by culture: what ``--overwrite`` would remove. Files no longer ours are left out:
        they are never removed."""
        found: dict[str, list[str]] = {}
        for rel in sorted(self.previous.hashes):
            if rel in BATCH_FILES or not self.ours(rel):
                continue
            top = rel.split("/", 1)[0]
            name = top[:-4] if "/" not in rel and top.lower().endswith(".pdf") else top
            if name not in names:
                found.setdefault(name, []).append(rel)
        return found

    # ---- staging and commit ------------------------------------------------------------------
    def staging(self) -> OutputDir:
        """A fresh staging folder for this run's files."""
        try:
            (self.root / STAGING).mkdir()
        except OSError as err:
            raise CytomscError(
                f"cannot write into the output folder ({_why(err)})", self.given
            ) from err
        self.staged = OutputDir(self.root / STAGING)
        return self.staged

    def discard(self) -> None:
        """Remove the staging folder (an interrupted or failed run leaves nothing)."""
        if (self.root / STAGING).is_dir() and not (self.root / STAGING).is_symlink():
            self._rmtree(self.root / STAGING)

    def commit(self, hashes: dict[str, str], run: dict[str, Any]) -> list[str]:
        """Move the staged files to their final names, remove the previous run's files this run
        did not write again (only those still ours), and replace run.json. Returns the files
        removed."""
        names = sorted(hashes)
        self.check_free([*names, RUN_FILE])
        remove = [
            rel for rel in sorted(self.previous.hashes) if rel not in hashes and self.ours(rel)
        ]
        doc = {
            "schema": RUN_SCHEMA,
            **run,
            "outputs": [*names, RUN_FILE],
            "sha256": {rel: hashes[rel] for rel in names},
        }
        journal = {"run": doc, "remove": {rel: self.previous.hashes[rel] for rel in remove}}
        assert self.staged is not None
        self.staged.write_text(json.dumps(journal, indent=1) + "\n", JOURNAL)
        self._keep_staging = True  # from here on, a failure is finished by the next run
        with interrupts_held():
            try:
                self._apply(journal)
            except OSError as err:
                raise CytomscError(
                    f"cannot move the results into place ({_why(err)}); the "
                    "next run into this folder finishes the move",
                    self.given,
                ) from err
            self._rmtree(self.root / STAGING)
            self.committed = True
        self._keep_staging = False
        return remove

    def _apply(self, journal: dict[str, Any]) -> None:
        """Carry out a journal: idempotent, so a run killed half-way is finished by the next."""
        staging = self.root / STAGING
        run = journal["run"]
        for rel in run.get("sha256", {}):
            src = staging / rel
            if src.is_file() and not src.is_symlink():
                dst = self.path(rel)
                dst.parent.mkdir(parents=True, exist_ok=True)
                _move(src, dst)
        for rel, digest in journal.get("remove", {}).items():
            p = self._safe(rel)
            if p is None or not _matches(p, digest):
                continue
            p.unlink()
            parent = p.parent
            while parent != self.root and self.root in parent.parents:
                try:
                    parent.rmdir()  # only folders left empty by what was removed
                except OSError:
                    break
                parent = parent.parent
        with atomic_file(self.root / RUN_FILE) as tmp:
            tmp.write_text(json.dumps(run, indent=1) + "\n", encoding="utf-8")


def _mapping(v: Any) -> dict[str, Any]:
    """A JSON object of run.json, or {} for anything else (never act on another tool's file)."""
    return v if isinstance(v, dict) else {}


def _matches(path: Path | None, digest: str | None) -> bool:
    if path is None or not digest:
        return False
    try:
        st = os.lstat(path)
        return stat.S_ISREG(st.st_mode) and sha256_of(path) == digest
    except OSError:
        return False


def _move(src: Path, dst: Path) -> None:
    """One rename of the commit (a seam for the tests that kill a run half-way through)."""
    os.replace(src, dst)


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C (and SIGTERM) back for a few milliseconds: while the results are moved into
    place, so that an interrupt never leaves half of one run and half of another, and while
    pool workers are forked. The signal is delivered when the block ends."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "pthread_sigmask"
    ):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
