"""Panels: a culture's acceptance criteria as data, and matching their markers to a file's channels.

Criteria differ between labs (ISCT 2006 >= 95 % / <= 2 %, adipose cells >= 80 %, release specs of
>= 90 % / <= 5 %, HLA-DR only reported), so they live in TOML files that a lab copies and edits,
never in code. The shipped panels are in ``panels/`` (installed as the package ``cytomsc.panels``).

Panel file format (TOML)::

    id = "isct-2006"                       # what --panel takes; letters, digits, "-", "_", "."
    name = "ISCT 2006 minimal criteria"
    reference = "Dominici M et al. Cytotherapy 2006;8:315-317. doi:10.1080/14653240600855905"
    version = "1"                          # optional: the lab's revision of this file
    notes = "..."                          # optional: free text, shown by `panels show`
    viability = "7-AAD"                    # optional: the viability dye the lab uses (a hint)

    [aliases]                              # other names and spellings of each marker
    CD73 = ["NT5E", "CD 73"]
    "HLA-DR" = ["HLADR", "HLA DR"]

    [[criterion]]                          # one criterion per block, judged in this order
    markers = ["CD73"]                     # canonical marker names
    expect = "positive"                    # positive | negative | informative
    limit = 95.0                           # percent: >= for positive, <= for negative
    source = "Dominici 2006, criterion 2"  # optional: where the number comes from
    cluster = true                         # optional: false keeps a positive or informative
                                           # marker out of the heterogeneity clustering

    [[criterion]]
    markers = ["CD14", "CD11b"]
    kind = "alternatives"                  # any one of the markers satisfies the criterion
    expect = "negative"
    limit = 2.0

    [[criterion]]
    markers = ["CD34", "CD11b", "CD19", "CD45", "HLA-DR"]
    kind = "cocktail"                      # several negative markers in one channel, judged once
    expect = "negative"
    limit = 2.0
    words = ["negative cocktail", "lin"]   # optional: $PnS words naming the cocktail channel

A criterion with several markers must say its ``kind``; ``name`` is optional (default "CD73",
"CD14 or CD11b", or the cocktail's markers joined by "/"). Names are compared without case,
spaces, hyphens or dots, so "HLA-DR", "HLA DR" and "hla-dr" are one marker.

Matching a file's channels (``Panel.match``): ``$PnS`` first, with fluorochrome words, filter specs
and the "-A/-H/-W" suffix ignored; then ``$PnN`` when ``$PnS`` names nothing; the user's channel map
(``CHANNEL=MARKER``) wins over both. Scatter, time and bookkeeping channels are never markers;
isotype labels ("IgG1 FITC") match none. A channel naming several negative markers is a cocktail
channel: the panel's cocktail criterion when it has one, else an ad-hoc cocktail covering the
criteria whose markers it names (judged at the strictest of their limits: if the cocktail is under
it, so is each marker). One detector recorded as area, height and/or width (``PE-Cy7-A`` and
``PE-Cy7-H``, same markers) is read in its area channel (else height), with a note in the
matching's warnings. Any other marker carried by two channels of one file is an error naming both.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, cast

from .channels import is_blank_label, is_fluorescence, strip_fluorochromes
from .errors import PanelError
from .results import Expectation

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CriterionKind = Literal["single", "alternatives", "cocktail"]
EXPECTS: tuple[Expectation, ...] = ("positive", "negative", "informative")
KINDS: tuple[CriterionKind, ...] = ("single", "alternatives", "cocktail")
DEFAULT_PANEL = "isct-2006"
_COCKTAIL_WORDS = ("negative cocktail", "neg cocktail", "cocktail", "lineage", "lin", "dump")
_ISOTYPE = re.compile(r"(?<![A-Z0-9])(IGG\d?[A-Z]?|IGM|IGA|IGE|ISOTYPE|ISO)(?![A-Z0-9])")
_TOP_KEYS = {"id", "name", "reference", "version", "notes", "viability", "aliases", "criterion"}
_CRIT_KEYS = {"name", "markers", "expect", "limit", "kind", "words", "source", "cluster"}


def _key(name: str) -> str:
    """Spelling-insensitive form of a marker name: "HLA-DR", "hla dr" -> "HLADR"."""
    return re.sub(r"[^A-Z0-9]", "", name.upper())


def _name_pattern(name: str) -> str:
    """Regex for a marker name inside free text: letter/digit runs with optional separators."""
    runs = re.findall(r"[A-Z]+|[0-9]+", name.upper())
    return r"[\s\-_.]?".join(re.escape(r) for r in runs)


@dataclass(frozen=True)
class Criterion:
    """One judged (or reported) line of a panel."""

    name: str
    markers: tuple[str, ...]
    expect: Expectation
    limit: float | None
    kind: CriterionKind
    words: tuple[str, ...] = ()  # cocktail only: $PnS words that name the cocktail channel
    source: str = ""  # where the limit comes from
    # whether the heterogeneity clustering uses this marker (positive and informative markers
    # do unless the panel says ``cluster = false``; negative markers never: clustering.cluster_tube)
    cluster: bool = True

    def describe_limit(self) -> str:
        if self.limit is None or self.expect == "informative":
            return "reported"
        return f"{'>=' if self.expect == 'positive' else '<='} {self.limit:g} %"


@dataclass(frozen=True)
class Assignment:
    """A channel and the criterion it is judged under."""

    channel: str
    criterion: Criterion
    markers: tuple[str, ...]
    label: str
    via: str = "pns"  # how it was matched: "pns" | "pnn" | "map" | "cocktail word"


@dataclass
class Matching:
    """How one file's channels meet a panel's criteria."""

    assignments: list[Assignment]
    by_channel: dict[str, Assignment]
    missing: list[str]
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Panel:
    """A loaded panel file."""

    id: str
    name: str
    reference: str
    path: Path
    sha256: str
    criteria: tuple[Criterion, ...]
    version: str = ""
    notes: str = ""
    viability: str | None = None
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False, compare=False)
    _table: dict[str, str] = field(init=False, repr=False, hash=False, compare=False)
    _scan: re.Pattern[str] = field(init=False, repr=False, hash=False, compare=False)

    def __post_init__(self) -> None:
        # Built once: matching runs on every tube of a batch.
        table = {_key(m): m for m in self.markers}
        for m, names in self.aliases.items():
            for a in names:
                table.setdefault(_key(a), m)
        spelled = set(self.markers) | {a for v in self.aliases.values() for a in v}
        pats = sorted({_name_pattern(n) for n in spelled if _key(n)}, key=len, reverse=True)
        scan = re.compile(r"(?<![A-Z0-9])(" + "|".join(pats) + r")(?![A-Z0-9])")
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_scan", scan)

    # ---- names -------------------------------------------------------------------------------
    @property
    def markers(self) -> tuple[str, ...]:
        """Every canonical marker, in criterion order."""
        seen: dict[str, None] = {}
        for c in self.criteria:
            for m in c.markers:
                seen.setdefault(m)
        return tuple(seen)

    def canonical(self, name: str) -> str | None:
        """The canonical marker for an alias or spelling ("Thy-1" -> "CD90"), or None."""
        return self._table.get(_key(name)) if _key(name) else None

    def find_markers(self, text: str) -> tuple[str, ...]:
        """Canonical markers named in free text ($PnS), fluorochrome words ignored, panel order.
        A label that is as a whole one marker's name or alias is that marker, even when it holds
        a "/" ("NK1/1" is NK1.1, not two markers)."""
        whole = self.canonical(strip_fluorochromes(text))
        if whole is not None:
            return (whole,)
        found = {self.canonical(m.group(1)) for m in self._scan.finditer(strip_fluorochromes(text))}
        return tuple(m for m in self.markers if m in found)

    def criterion_of(self, marker: str) -> Criterion | None:
        """The criterion judging a marker alone: its own one, else its cocktail's."""
        owners = [c for c in self.criteria if marker in c.markers]
        plain = [c for c in owners if c.kind != "cocktail"]
        found = plain or owners
        return found[0] if found else None

    # ---- matching ----------------------------------------------------------------------------
    def match(
        self,
        channels: list[tuple[str, str]],
        channel_map: dict[str, str] | None = None,
        source: str | Path | None = None,
    ) -> Matching:
        """Assign a file's (``$PnN``, ``$PnS``) channels to criteria; ``source`` names the file in
        errors. Raises PanelError for a marker carried by two channels or a bad channel map."""
        cmap = {k.strip().upper(): v for k, v in (channel_map or {}).items()}
        used_map: set[str] = set()
        claims: list[tuple[str, str, tuple[str, ...], str, bool]] = []  # pnn, pns, S, via, generic
        mapped: set[str] = set()
        for pnn, pns in channels:
            pns = pns or ""
            if pnn.strip().upper() in cmap:
                used_map.add(pnn.strip().upper())
                value = cmap[pnn.strip().upper()]
                if _key(value) in ("", "NONE", "IGNORE"):
                    continue
                names = []
                for part in re.split(r"[/+]", value):
                    if not part.strip():
                        continue
                    m = self.canonical(part)
                    if m is None:
                        raise PanelError(
                            f"channel map {pnn}={value}: '{part.strip()}' is no marker of panel "
                            f"{self.id} (markers: {', '.join(self.markers)})",
                            source,
                        )
                    names.append(m)
                s = tuple(m for m in self.markers if m in names)
                mapped.update(s)
                claims.append((pnn, pns, s, "map", False))
        for pnn, pns in channels:
            pns = pns or ""
            if pnn.strip().upper() in cmap or not is_fluorescence(pnn, pns):
                continue
            via, s, generic = "pns", (), False
            blank = is_blank_label(pnn, pns)
            if not blank:
                if _ISOTYPE.search(pns.upper()):
                    continue
                s = self.find_markers(pns)
                generic = not s and self._names_cocktail(pns)
                if generic:
                    via = "cocktail word"
            if not s and not generic and not _ISOTYPE.search(pnn.upper()):
                s, via = self.find_markers(pnn), "pnn"
            s = tuple(m for m in s if m not in mapped)
            if s or generic:
                claims.append((pnn, pns, s, via, generic))

        assignments: list[Assignment] = []
        warnings: list[str] = []
        for pnn, pns, s, via, generic in claims:
            a = self._assign(pnn, pns, s, via, generic, source)
            if a is None:
                warnings.append(
                    f"channel {pnn} ('{pns}') names a cocktail, but panel {self.id} "
                    "has no single cocktail criterion; ignored"
                )
            else:
                assignments.append(a)
        order = {pnn: i for i, (pnn, _) in enumerate(channels)}
        assignments.sort(key=lambda a: order.get(a.channel, 0))
        assignments, note = _prefer_area(assignments)
        if note:
            warnings.append(note)

        carriers: dict[str, list[Assignment]] = {}
        for a in assignments:
            for m in a.markers:
                carriers.setdefault(m, []).append(a)
        labels = dict(channels)
        for m in self.markers:
            if len(carriers.get(m, [])) > 1:
                a, b = carriers[m][:2]
                raise PanelError(
                    f"marker {m} is matched by two channels, {a.channel} ('{labels[a.channel]}') "
                    f"and {b.channel} ('{labels[b.channel]}'); say which with a channel map "
                    f"({a.channel}=none or {b.channel}=none)",
                    source,
                )
        for k in sorted(set(cmap) - used_map):
            warnings.append(f"channel map names {k}, which this file does not have")
        return Matching(
            assignments=assignments,
            by_channel={a.channel: a for a in assignments},
            missing=self._missing(assignments),
            warnings=warnings,
        )

    def _names_cocktail(self, pns: str) -> bool:
        """Does a $PnS name a cocktail by a word ("Neg cocktail", "Lin PE") rather than markers?"""
        text = " " + re.sub(r"[^A-Z0-9]+", " ", strip_fluorochromes(pns)) + " "
        words = {w for c in self.criteria if c.kind == "cocktail" for w in c.words}
        words |= set(_COCKTAIL_WORDS)
        return any(f" {re.sub(r'[^A-Z0-9]+', ' ', w.upper()).strip()} " in text for w in words)

    def _assign(
        self,
        pnn: str,
        pns: str,
        s: tuple[str, ...],
        via: str,
        generic: bool,
        source: str | Path | None,
    ) -> Assignment | None:
        cocktails = [c for c in self.criteria if c.kind == "cocktail"]
        if generic and not s:
            if len(cocktails) != 1:
                return None
            c = cocktails[0]
            return Assignment(pnn, c, c.markers, "/".join(c.markers), via)
        if len(s) == 1:
            crit = self.criterion_of(s[0])
            assert crit is not None  # s holds panel markers only
            if crit.kind == "cocktail":  # a cocktail's marker measured in a channel of its own
                crit = Criterion(
                    s[0], s, crit.expect, crit.limit, "single", (), crit.source, crit.cluster
                )
            return Assignment(pnn, crit, s, s[0], via)
        best = max(cocktails, key=lambda c: len(set(c.markers) & set(s)), default=None)
        if best is not None and len(set(best.markers) & set(s)) >= 2:
            return Assignment(pnn, best, s, "/".join(s), via)
        crits = [self.criterion_of(m) for m in s]
        positive = [m for m, c in zip(s, crits, strict=True) if c and c.expect == "positive"]
        negative = [c for c in crits if c and c.expect == "negative" and c.limit is not None]
        if positive or not negative:
            raise PanelError(
                f"channel {pnn} ('{pns}') carries several markers ({', '.join(s)})"
                + (f" including positive {', '.join(positive)}" if positive else "")
                + "; only negative markers can share a channel (a cocktail)",
                source,
            )
        limit = min(c.limit for c in negative if c.limit is not None)
        adhoc = Criterion(
            "/".join(s),
            s,
            "negative",
            limit,
            "cocktail",
            (),
            "ad-hoc cocktail: strictest limit of "
            + ", ".join(dict.fromkeys(c.name for c in negative)),
        )
        return Assignment(pnn, adhoc, s, adhoc.name, via)

    def missing(self, assignments: list[Assignment]) -> list[str]:
        """Names of the judged criteria that ``assignments`` (of one file, or of all the stained
        tubes of a culture together) leave without a channel."""
        return self._missing(assignments)

    def _missing(self, assignments: list[Assignment]) -> list[str]:
        covered = {m for a in assignments for m in a.markers}
        whole = {a.criterion for a in assignments}
        missing: list[str] = []
        for c in self.criteria:
            if c.expect == "informative" or c in whole:
                continue
            have = [m for m in c.markers if m in covered]
            if c.kind == "cocktail":
                if not have:
                    missing.append(c.name)
                else:
                    missing.extend(m for m in c.markers if m not in covered)
            elif not have:
                missing.append(c.name)
        return missing

    # ---- display -----------------------------------------------------------------------------
    def describe(self) -> str:
        """The criteria as a table, for ``cytomsc panels show``."""
        lines = [f"{self.id}: {self.name}", f"reference: {self.reference}"]
        if self.version:
            lines.append(f"version:   {self.version}")
        lines.append(f"file:      {self.path}")
        lines.append(f"sha256:    {self.sha256}")
        if self.viability:
            lines.append(f"viability: {self.viability}")
        width = max(len("criterion"), *(len(c.name) for c in self.criteria))
        lines += ["", f"{'criterion':<{width}}  {'expect':<11}  {'limit':<9}  kind"]
        lines.append("-" * (width + 38))
        for c in self.criteria:
            kind = {"single": "", "alternatives": "any one of", "cocktail": "one channel"}[c.kind]
            lines.append(
                f"{c.name:<{width}}  {c.expect:<11}  {c.describe_limit():<9}  {kind}".rstrip()
            )
            if c.source:
                lines.append(f"{'':<{width}}    source: {c.source}")
        aliases = [
            f"{m} = {', '.join(self.aliases[m])}" for m in self.markers if self.aliases.get(m)
        ]
        if aliases:
            lines += ["", "aliases:"] + [f"  {a}" for a in aliases]
        if self.notes:
            lines += ["", "notes: " + " ".join(self.notes.split())]
        return "\n".join(lines)


# ---- loading ---------------------------------------------------------------------------------
_PULSE = re.compile(r"^(.+?)[-_ ]([AHW])$", re.IGNORECASE)


def _prefer_area(assignments: list[Assignment]) -> tuple[list[Assignment], str]:
    """One detector recorded as area and height (and width), as LSRII and Fortessa exports do
    for every fluorescence channel: the area channel is the measurement labs read, so the
    height and width copies of the same markers are dropped. Returns the assignments kept and
    a note naming what was chosen ("" when nothing was)."""
    groups: dict[tuple[str, tuple[str, ...]], list[tuple[int, Assignment]]] = {}
    for a in assignments:
        m = _PULSE.match(a.channel.strip())
        if m:
            key = (m.group(1).upper(), a.markers)
            groups.setdefault(key, []).append(("AHW".index(m.group(2).upper()), a))
    dropped: set[str] = set()
    chosen = []
    for members in groups.values():
        if len(members) < 2:
            continue
        members.sort(key=lambda item: item[0])
        keep = members[0][1]
        others = [a.channel for _, a in members[1:]]
        dropped.update(others)
        chosen.append(f"{keep.label} from {keep.channel} (not {', '.join(others)})")
    if not chosen:
        return assignments, ""
    note = "area channels used where a detector is also recorded as height or width: " + "; ".join(
        chosen
    )
    return [a for a in assignments if a.channel not in dropped], note


def _panels_dir() -> Path:
    """Where the shipped panels are: the installed package ``cytomsc.panels``, or, when cytomsc
    runs from a source checkout (tests run from the repository root import the source tree),
    the top-level ``panels/`` beside the package."""
    try:
        return Path(str(resources.files("cytomsc.panels")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "panels"


def _shipped() -> list[Path]:
    return sorted(_panels_dir().glob("*.toml"), key=lambda p: p.name)


def list_panels() -> list[Panel]:
    """The shipped panels, sorted by id (the default first)."""
    panels = [_read(p) for p in _shipped()]
    return sorted(panels, key=lambda p: (p.id != DEFAULT_PANEL, p.id))


def load_panel(id_or_path: str) -> Panel:
    """A shipped panel by id, or a panel TOML file by path."""
    candidate = Path(id_or_path).expanduser()
    if candidate.suffix.lower() == ".toml" or candidate.is_file() or "/" in id_or_path:
        if not candidate.is_file():
            raise PanelError("no such panel file", candidate)
        return _read(candidate)
    for p in _shipped():
        if p.stem == id_or_path:
            return _read(p)
    for panel in list_panels():
        if panel.id == id_or_path:
            return panel
    ids = ", ".join(p.id for p in list_panels())
    raise PanelError(f"unknown panel '{id_or_path}' (shipped: {ids}; or give a .toml path)")


def _read(path: Path) -> Panel:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise PanelError(f"cannot read panel file ({err.strerror or err})", path) from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise PanelError("panel file is not UTF-8 text", path) from None
    except tomllib.TOMLDecodeError as err:
        raise PanelError(f"not valid TOML: {err}", path) from None
    return _build(doc, path, hashlib.sha256(raw).hexdigest())


def _text(doc: dict[str, Any], key: str, path: Path, required: bool = True) -> str:
    value = doc.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise PanelError(f"'{key}' must be a non-empty string", path)
    return value.strip()


def _build(doc: dict[str, Any], path: Path, sha: str) -> Panel:
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise PanelError(
            f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_TOP_KEYS))})", path
        )
    pid = _text(doc, "id", path)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", pid):
        raise PanelError(f"id '{pid}' may hold only letters, digits, '-', '_' and '.'", path)
    aliases_raw = doc.get("aliases", {})
    if not isinstance(aliases_raw, dict):
        raise PanelError("[aliases] must be a table of marker = [names]", path)
    crit_raw = doc.get("criterion")
    if not isinstance(crit_raw, list) or not crit_raw:
        raise PanelError("no [[criterion]] blocks", path)
    criteria = tuple(_criterion(c, i + 1, path) for i, c in enumerate(crit_raw))

    owner: dict[str, str] = {}
    for c in criteria:
        for m in c.markers:
            if _key(m) in owner and owner[_key(m)] != m:
                raise PanelError(f"markers '{owner[_key(m)]}' and '{m}' are one name", path)
            owner[_key(m)] = m
    plain: dict[str, str] = {}
    for c in criteria:
        if c.kind == "cocktail":
            continue
        for m in c.markers:
            if m in plain:
                raise PanelError(f"marker {m} is in two criteria ({plain[m]}, {c.name})", path)
            plain[m] = c.name
    aliases: dict[str, tuple[str, ...]] = {}
    for m, names in aliases_raw.items():
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise PanelError(f"aliases of {m} must be a list of strings", path)
        canon = owner.get(_key(m))
        if canon is None:
            continue  # aliases of markers this panel does not judge are harmless
        aliases[canon] = tuple(n for n in names if _key(n))
        for n in names:
            k = _key(n)
            if k in owner and owner[k] != canon:
                raise PanelError(f"alias '{n}' names both {canon} and {owner[k]}", path)
            owner[k] = canon
    viability = _text(doc, "viability", path, required=False) or None
    return Panel(
        id=pid,
        name=_text(doc, "name", path),
        reference=_text(doc, "reference", path),
        path=path,
        sha256=sha,
        criteria=criteria,
        version=str(doc.get("version", "")).strip(),
        notes=_text(doc, "notes", path, required=False),
        viability=viability,
        aliases=aliases,
    )


def _criterion(raw: Any, n: int, path: Path) -> Criterion:
    where = f"criterion {n}"
    if not isinstance(raw, dict):
        raise PanelError(f"{where} is not a table", path)
    unknown = sorted(set(raw) - _CRIT_KEYS)
    if unknown:
        raise PanelError(
            f"{where}: unknown key(s) {', '.join(unknown)} (allowed: "
            f"{', '.join(sorted(_CRIT_KEYS))})",
            path,
        )
    markers = raw.get("markers")
    if isinstance(markers, str):
        markers = [markers]
    if (
        not isinstance(markers, list)
        or not markers
        or not all(isinstance(m, str) and _key(m) for m in markers)
    ):
        raise PanelError(f"{where}: 'markers' must be a non-empty list of marker names", path)
    markers = tuple(m.strip() for m in markers)
    if len({_key(m) for m in markers}) != len(markers):
        raise PanelError(f"{where}: a marker is listed twice", path)
    expect = raw.get("expect")
    if expect not in EXPECTS:
        raise PanelError(f"{where}: 'expect' must be one of {', '.join(EXPECTS)}", path)
    kind = raw.get("kind", "single" if len(markers) == 1 else None)
    if kind not in KINDS:
        raise PanelError(
            f'{where}: several markers need kind = "alternatives" or "cocktail"'
            if kind is None
            else f"{where}: 'kind' must be one of {', '.join(KINDS)}",
            path,
        )
    if kind == "single" and len(markers) != 1:
        raise PanelError(f'{where}: kind "single" takes one marker', path)
    if kind == "cocktail" and expect == "positive":
        raise PanelError(f"{where}: a cocktail judges negative markers only", path)
    limit = raw.get("limit")
    if expect == "informative":
        if limit is not None and not isinstance(limit, (int, float)):
            raise PanelError(f"{where}: 'limit' must be a number", path)
    elif (
        not isinstance(limit, (int, float))
        or isinstance(limit, bool)
        or not 0 <= float(limit) <= 100
    ):
        raise PanelError(f"{where}: 'limit' must be a percentage between 0 and 100", path)
    words = raw.get("words", [])
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise PanelError(f"{where}: 'words' must be a list of strings", path)
    default = {
        "single": markers[0],
        "alternatives": " or ".join(markers),
        "cocktail": "/".join(markers),
    }[kind]
    name = raw.get("name", default)
    if not isinstance(name, str) or not name.strip():
        raise PanelError(f"{where}: 'name' must be a non-empty string", path)
    source = raw.get("source", "")
    if not isinstance(source, str):
        raise PanelError(f"{where}: 'source' must be a string", path)
    cluster = raw.get("cluster", True)
    if not isinstance(cluster, bool):
        raise PanelError(f"{where}: 'cluster' must be true or false", path)
    return Criterion(
        name=name.strip(),
        markers=markers,
        expect=cast(Expectation, expect),
        limit=None if limit is None else float(limit),
        kind=cast(CriterionKind, kind),
        words=tuple(words),
        source=source.strip(),
        cluster=cluster,
    )
