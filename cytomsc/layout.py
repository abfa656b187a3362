"""Which files are one culture, and what each tube is (stained, isotype, unstained, FMO).

A lab's export is a folder per culture (or per experiment), tubes named by whoever ran the
cytometer. The analysis needs each culture's stained tubes together with its own controls, so this
module groups files and gives each a role, from the most explicit source available:

1. a manifest CSV (``--manifest``): columns ``file,culture,role`` and optionally ``channels``
   (``FL1-A=CD90;FL2-A=CD105``); paths relative to the CSV's folder; other columns (tissue,
   passage, detachment, donor ...) become the culture's metadata;
2. otherwise folders: each folder that directly holds FCS files is one culture named after it,
   split by specimen keyword ($SRC, Diva's SPECIMEN or SAMPLE ID) when its files name different
   specimens; files given directly are a culture each, unless files of one folder name the same
   specimen. An FCS file is one named .fcs or .lmd (any case), or any file whose first bytes are
   an FCS header ("FCS2.0", "FCS3.1"...: FACSCalibur/CellQuest exports are named 060909.001).
   Symbolic links to folders are followed, each real folder read once (no loops); the output
   folder is never searched, nor, when it is itself an input, the files cytomsc wrote there;
3. roles from the TUBE NAME keyword, then $FIL, then the file name ("unstained", "blank", "iso",
   "IgG1", "FMO CD73", "CD73-FMO"...), else "stained".

Nothing here raises for one bad file: an unreadable file or a manifest row naming a missing file
becomes an error entry ``{"path", "message"}`` and the rest of the batch goes on.
"""

from __future__ import annotations

import csv
import os
import re
import stat
import unicodedata
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CytomscError, LayoutError
from .output import STAGING
from .results import InputError
from .roles import Role

if TYPE_CHECKING:
    from .panel import Panel

FCS_SUFFIXES = (".fcs", ".lmd")
_SPECIMEN_KEYS = ("src", "specimen", "specimen name", "sample id")
_ROLE_KEYS = ("tube name", "tube", "fil")
# Keywords that carry culture metadata (custom keywords labs add, and the instrument's own).
_META_KEYS = {
    "cyt": "cytometer",
    "date": "date",
    "tissue": "tissue",
    "tissue source": "tissue",
    "source tissue": "tissue",
    "passage": "passage",
    "detachment": "detachment",
    "detachment reagent": "detachment",
    "donor": "donor",
    "donor id": "donor",
    "lot": "lot",
}
_UNSTAINED = re.compile(
    r"^(UNSTAINED|UNSTAIN|UNST|UNS|BLANK|BLK|UNLABEL+ED|NOSTAIN|AUTOFL\w*|"
    r"AUTO)$"
)
_ISOTYPE = re.compile(
    r"^(ISO|ISOS|ISOTYPE|ISOTYPES|ISOTYP|ISOCTRL|IG[GMA]\d?[A-Z]?|"
    r"IGG\d[A-Z]?K?)$"
)
_STAINED = re.compile(r"^(STAINED|STAIN|SAMPLE|TEST|FULLSTAIN|ALLSTAIN)$")
_RESERVED = re.compile(r"^(CON|PRN|AUX|NUL|COM[0-9¹²³]|LPT[0-9¹²³])$", re.IGNORECASE)
_MAX_BYTES = 100


@dataclass
class Tube:
    """One FCS file of a culture and its role."""

    path: Path
    role: Role
    channel_map: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.role = Role(self.role)  # a role's text is checked once, here


@dataclass
class CultureSpec:
    """One culture to analyse: its name, tubes and what the lab recorded about it."""

    name: str
    tubes: list[Tube]
    metadata: dict[str, str] = field(default_factory=dict)


# ---- roles -----------------------------------------------------------------------------------
def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[^A-Z0-9]+", text.upper()) if t]


def _fmo_marker(text: str, panel: Panel | None) -> str | None:
    """The marker an FMO label leaves out ("FMO CD73", "CD73-FMO", "FMO_NT5E"), or "" if unnamed."""
    toks = _tokens(text)
    if "FMO" not in toks:
        return None
    rest = " ".join(t for t in toks if t != "FMO")
    if panel is not None:
        found = panel.find_markers(rest)
        if found:
            return found[0]
    m = re.search(r"(?<![A-Z0-9])(CD ?\d+[A-Z]?|HLA ?DR)(?![A-Z0-9])", rest)
    if m:
        name = m.group(1).replace(" ", "")
        name = "HLA-DR" if name == "HLADR" else name
        return (panel.canonical(name) if panel is not None else None) or name
    i = toks.index("FMO")
    near = [
        t
        for t in (toks[i + 1 : i + 2] + toks[i - 1 : i] if i else toks[i + 1 : i + 2])
        if not t.isdigit()
    ]
    return near[0] if near else ""


def _role_from_text(text: str, panel: Panel | None) -> Role | None:
    if not text or not text.strip():
        return None
    fmo = _fmo_marker(text, panel)
    if fmo is not None:
        return Role.fmo(fmo or "unknown")
    toks = _tokens(text)
    joined = "".join(toks)
    if any(_UNSTAINED.match(t) for t in toks) or "NOSTAIN" in joined or "UNSTAINED" in joined:
        return Role("unstained")
    if any(_ISOTYPE.match(t) for t in toks) or "ISOTYPE" in joined:
        return Role("isotype")
    return None


def role_of(keywords: dict[str, str], path: Path, panel: Panel | None = None) -> Role:
    """A tube's role from TUBE NAME, then $FIL, then the file name; "stained" when none says.

    Keywords are lower-case without "$" (as ``fcs.read_text`` gives them). Roles are "stained",
    "isotype", "unstained" or "fmo:<marker>" (the panel's canonical name when a panel is given).
    The culture's own name (its specimen keyword, its folder) is removed from each text first: a
    culture called "unstained_only" or "FMO_study" must not make every tube a control. A source
    that says "stained" (or "sample", "test") outright decides, before later sources are read.
    """
    low = {k.lower().lstrip("$"): v for k, v in keywords.items()}
    names = [n for n in (_specimen(low), Path(path).parent.name) if n and len(n) >= 3]
    texts = [low.get(key, "") for key in _ROLE_KEYS] + [Path(path).stem]
    for text in texts:
        for name in names:
            text = re.sub(re.escape(name), " ", text, flags=re.IGNORECASE)
        role = _role_from_text(text, panel)
        if role:
            return role
        if any(_STAINED.match(t) for t in _tokens(text)):
            return Role("stained")
    return Role("stained")


def _normal_role(value: str, panel: Panel | None) -> Role | None:
    """A manifest's role cell: the canonical roles, or anything role_of's words recognise."""
    v = value.strip()
    low = v.lower()
    if low in ("stained", "isotype", "unstained"):
        return Role(low)
    if low.startswith("fmo:") and low[4:].strip():
        marker = v[4:].strip()
        return Role.fmo((panel.canonical(marker) if panel else None) or marker)
    if low in ("stain", "sample", "test", "marker", "markers"):
        return Role("stained")
    if low.startswith("single:") and v[7:].strip():  # a single-stain control (spillover.py)
        return Role.single(v[7:].strip())
    return _role_from_text(v, panel)


# ---- discovery -------------------------------------------------------------------------------
def _default_reader() -> Callable[[Path], dict[str, str]]:
    from .fcs import read_text

    return read_text


_FCS_HEADER = re.compile(rb"FCS[23]\.\d")


def _is_fcs(path: Path) -> bool:
    """An FCS file by its name, or by its first 6 bytes whatever its name (cheap: no TEXT is
    read here). A file named .fcs that is not FCS is kept, so that it is reported, not skipped;
    macOS's "._" shadow files and anything that is not a regular file are skipped."""
    if path.name.startswith("._"):
        return False
    named = path.suffix.lower() in FCS_SUFFIXES
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
    except OSError:
        return named  # a broken link named .fcs: reported as unreadable
    if named:
        return True
    try:
        with open(path, "rb") as fh:
            return bool(_FCS_HEADER.fullmatch(fh.read(6)))
    except OSError:
        return False


def _walk(
    top: Path, pruned: Callable[[Path], bool], visited: set[str]
) -> Iterator[tuple[Path, list[str]]]:
    """(folder, file names) of every folder under ``top``, real folders first, then the folders
    reached through symbolic links; each real folder once (a link back up is not a loop), and
    never a folder ``pruned`` says (the output folder)."""
    queue = [top]
    while queue:
        start = queue.pop(0)
        links: list[Path] = []
        for root, dirs, files in os.walk(start):
            real = os.path.realpath(root)
            if real in visited:
                dirs[:] = []
                continue
            visited.add(real)
            keep = []
            for d in sorted(dirs):
                sub = Path(root) / d
                if pruned(Path(os.path.realpath(sub))):
                    continue
                if sub.is_symlink():
                    links.append(sub)
                else:
                    keep.append(d)
            dirs[:] = keep
            yield Path(root), files
        queue.extend(links)


def _specimen(keywords: dict[str, str]) -> str | None:
    for key in _SPECIMEN_KEYS:
        value = keywords.get(key, "").strip()
        if value:
            return value
    return None


def _metadata(keywords: list[dict[str, str]]) -> dict[str, str]:
    meta: dict[str, str] = {}
    for kw in keywords:
        for key, name in _META_KEYS.items():
            value = kw.get(key, "").strip()
            if value and name not in meta:
                meta[name] = value
    return meta


def _error(path: Path | str, message: str) -> InputError:
    return InputError(str(path), " ".join(message.split()))


def discover(
    inputs: list[Path],
    manifest: Path | None = None,
    panel: Panel | None = None,
    read_keywords: Callable[[Path], dict[str, str]] | None = None,
    output: Path | None = None,
    output_files: Collection[Path] = (),
) -> tuple[list[CultureSpec], list[InputError]]:
    """Cultures found in ``inputs`` (files and folders), or described by a manifest CSV.

    Returns the cultures sorted by name (tubes sorted by path) and the error entries of files that
    could not be used; an input folder without FCS files is such an entry. When no input holds
    any FCS file there is nothing to analyse, and that raises LayoutError naming the input, as
    does a manifest that cannot be read or lacks its columns (it describes the whole batch).

    ``output`` (the output folder) is never searched from an input above it, so that a run's own
    exports are not read back as cultures; when it is an input itself (or below one), only
    ``output_files`` (the files cytomsc wrote there) and its staging folder are left out.
    """
    reader = read_keywords or _default_reader()
    if manifest is not None:
        return _from_manifest(Path(manifest), panel, reader)
    errors: list[InputError] = []
    folders: dict[Path, list[Path]] = {}
    singles: list[Path] = []
    seen: set[Path] = set()
    out = Path(os.path.realpath(output)) if output is not None else None
    skipped = {Path(os.path.realpath(p)) for p in output_files}
    visited: set[str] = set()
    found = 0
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            real = Path(os.path.realpath(item))
            inside = out is not None and (real == out or out in real.parents)

            def pruned(d: Path, inside: bool = inside) -> bool:
                if out is None:
                    return False
                if d == out / STAGING or out / STAGING in d.parents:
                    return True
                return not inside and (d == out or out in d.parents)

            if str(real) in visited:
                continue  # searched already, as part of another input
            candidates = 0
            for root, files in _walk(item, pruned, visited):
                fcs = sorted(Path(root) / f for f in files if _is_fcs(Path(root) / f))
                fcs = [f for f in fcs if f.resolve() not in skipped]
                candidates += len(fcs)
                fcs = [f for f in fcs if f.resolve() not in seen]
                seen.update(f.resolve() for f in fcs)
                if fcs:
                    folders.setdefault(Path(root), []).extend(fcs)
            found += candidates
            if not candidates:
                errors.append(_error(item, "no FCS files in this folder or its subfolders"))
        elif item.is_file():
            found += 1
            if item.resolve() not in seen:
                seen.add(item.resolve())
                singles.append(item)
        else:
            errors.append(_error(item, "no such file or folder"))
    if not found:
        if len(errors) == 1:
            raise LayoutError(errors[0].message, errors[0].path)
        raise LayoutError("no FCS files found in " + ", ".join(str(i) for i in inputs))

    groups: list[tuple[str, Path, list[tuple[Path, dict[str, str]]]]] = []
    for folder in sorted(folders):
        read = _read_all(folders[folder], reader, errors)
        by_spec: dict[str | None, list[tuple[Path, dict[str, str]]]] = {}
        for path, kw in read:
            by_spec.setdefault(_specimen(kw), []).append((path, kw))
        base = _folder_name(folder)
        if len(by_spec) <= 1:
            if read:
                groups.append((base, folder, read))
        else:
            for spec in sorted(by_spec, key=lambda s: (s is not None, s or "")):
                name = base if spec is None else f"{base}_{spec}"
                groups.append((name, folder, by_spec[spec]))
    read = _read_all(sorted(singles), reader, errors)
    together: dict[tuple[Path, str], list[tuple[Path, dict[str, str]]]] = {}
    for path, kw in read:
        spec = _specimen(kw)
        if spec is None:
            groups.append((path.stem, path.parent, [(path, kw)]))
        else:
            together.setdefault((path.parent.resolve(), spec), []).append((path, kw))
    for (parent, spec), members in sorted(together.items(), key=lambda x: (str(x[0][0]), x[0][1])):
        name = members[0][0].stem if len(members) == 1 else spec
        groups.append((name, parent, members))

    names = [g[0] for g in groups]
    cultures = []
    for name, where, members in groups:
        if names.count(name) > 1:  # same folder name in two places: say which
            name = f"{where.parent.name}/{name}" if where.parent.name else name
        tubes = [Tube(path=p, role=role_of(kw, p, panel)) for p, kw in members]
        cultures.append(
            CultureSpec(
                name=name,
                tubes=sorted(tubes, key=lambda t: str(t.path)),
                metadata=_metadata([kw for _, kw in members]),
            )
        )
    cultures.sort(key=lambda c: (c.name, str(c.tubes[0].path)))
    return cultures, errors


def _folder_name(folder: Path) -> str:
    return folder.name or folder.resolve().name or "culture"


def _read_all(
    paths: list[Path], reader: Callable[[Path], dict[str, str]], errors: list[InputError]
) -> list[tuple[Path, dict[str, str]]]:
    out = []
    for path in paths:
        try:
            kw = reader(path)
        except CytomscError as err:
            errors.append(_error(path, err.reason))
            continue
        except (OSError, ValueError) as err:
            errors.append(_error(path, f"cannot read FCS keywords: {err}"))
            continue
        out.append((path, {str(k).lower().lstrip("$"): str(v) for k, v in kw.items()}))
    return out


def parse_channels(text: str) -> dict[str, str]:
    """A manifest's channels cell: ``FL1-A=CD90;FL2-A=CD105`` (";" or ",") -> mapping."""
    mapping: dict[str, str] = {}
    for item in re.split(r"[;,]", text or ""):
        if not item.strip():
            continue
        if "=" not in item:
            raise ValueError(f"'{item.strip()}' is not CHANNEL=MARKER")
        channel, marker = item.split("=", 1)
        if not channel.strip():
            raise ValueError(f"'{item.strip()}' names no channel")
        mapping[channel.strip()] = marker.strip()
    return mapping


def _from_manifest(
    manifest: Path,
    panel: Panel | None,
    reader: Callable[[Path], dict[str, str]],
) -> tuple[list[CultureSpec], list[InputError]]:
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise LayoutError(f"cannot read manifest ({err.strerror or err})", manifest) from None
    except UnicodeDecodeError:
        raise LayoutError("manifest is not UTF-8 text", manifest) from None
    rows = list(csv.DictReader(text.splitlines()))
    # (extra cells beyond the header land under the key None: not a column, ignored)
    fields = {f.strip().lower(): f for f in (rows[0].keys() if rows else []) if f is not None}
    if not rows:
        raise LayoutError("manifest has no rows (expected columns file,culture,role)", manifest)
    lacking = [c for c in ("file", "culture") if c not in fields]
    if lacking:
        raise LayoutError(
            f"manifest lacks column(s) {', '.join(lacking)} "
            "(expected file,culture,role[,channels])",
            manifest,
        )
    base = manifest.parent
    errors: list[InputError] = []
    cultures: dict[str, CultureSpec] = {}
    reserved = {"file", "culture", "role", "channels"}
    for line, row in enumerate(rows, start=2):
        cell = {k: (row.get(orig) or "").strip() for k, orig in fields.items()}
        where = f"{manifest}:{line}"
        if not cell["file"] or not cell["culture"]:
            errors.append(_error(where, "row lacks a file or a culture"))
            continue
        path = Path(cell["file"])
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            errors.append(_error(path, f"named in {where} but not found"))
            continue
        try:
            cmap = parse_channels(cell.get("channels", ""))
        except ValueError as err:
            errors.append(_error(where, f"channels column: {err}"))
            continue
        if cell.get("role"):
            role = _normal_role(cell["role"], panel)
            if role is None:
                errors.append(
                    _error(
                        where,
                        f"unknown role '{cell['role']}' (stained, isotype, "
                        "unstained, fmo:MARKER or single:DYE)",
                    )
                )
                continue
        else:
            got = _read_all([path], reader, errors)
            if not got:
                continue
            role = role_of(got[0][1], path, panel)
        spec = cultures.setdefault(cell["culture"], CultureSpec(cell["culture"], [], {}))
        spec.tubes.append(Tube(path=path, role=role, channel_map=cmap))
        for key, value in cell.items():
            if key not in reserved and value:
                spec.metadata.setdefault(key, value)
    out = sorted(cultures.values(), key=lambda c: c.name)
    for c in out:
        c.tubes.sort(key=lambda t: str(t.path))
    return out, errors


# ---- output names ----------------------------------------------------------------------------
def safe_name(name: str, taken: set[str]) -> str:
    """An output-file-safe name for a culture, distinct from every name in ``taken``; the name and
    its PDF's name (NAME.pdf) are added to ``taken``.

    Culture names come from folder names and FCS keywords that anyone can write, and become folder
    and file names under ``-o``: so no path separators, no "..", no control characters, nothing
    Windows refuses (CON, NUL, COM1..., <>:"/\\|?*, trailing dots or spaces), at most 100 bytes of
    UTF-8, never empty. Uniqueness is case-insensitive, as on Windows and macOS file systems.
    """
    text = unicodedata.normalize("NFC", str(name))
    text = "".join(ch if ch.isprintable() else "_" for ch in text)
    text = re.sub(r"[^\w.\-+ ]", "_", text)  # separators, <>:"|?* and other punctuation
    text = re.sub(r"\s+", "_", text)
    text = re.sub(r"\.{2,}", ".", text)
    text = re.sub(r"_{2,}", "_", text).strip("._- ")
    while len(text.encode("utf-8")) > _MAX_BYTES:
        text = text[:-1]
    text = text.rstrip("._- ")
    if not text:
        text = "culture"
    if _RESERVED.match(text.split(".")[0]):
        text = "_" + text
    lowered = {t.lower() for t in taken}
    result, n = text, 1
    # A culture writes both NAME/ and NAME.pdf: neither may meet a name already taken.
    while result.lower() in lowered or f"{result}.pdf".lower() in lowered:
        n += 1
        suffix = f"-{n}"
        stem = text
        while len((stem + suffix).encode("utf-8")) > _MAX_BYTES:
            stem = stem[:-1]
        result = stem + suffix
    taken.update((result, f"{result}.pdf"))
    return result
