"""Read any cytometer's FCS export into the arrays the analysis works on.

FlowKit (through FlowIO) is the engine of record: its conventions ($PnE log decoding, $PnG gain,
Time x $TIMESTEP, integer values masked by $PnR's bit width) are FlowIO's ``FlowData.as_array``,
which produces every value read here. FlowKit reads well-formed files but gives up on exports that
labs meet every day: 24-bit integers, an ``$ENDDATA`` one byte too far, HEADER and TEXT offsets
that disagree, blank HEADER offsets, a non-numeric ``$TIMESTEP``, several data sets in one file.
So HEADER/TEXT/DATA are decoded here with numpy and the raw values handed to FlowIO inside a
``flowio.FlowData`` (no float32 round trip, no temporary file), whose own pre-processing produces
the values, exactly as FlowKit's ``Sample`` holds them for a file it can read. The ``Sample``
itself is made only when asked for (``FcsData.sample``: the lab's gates of ``--gates``, GatingML
checks): importing FlowKit costs about 2 s a process (pandas, bokeh) and the analysis reads the
arrays.

Every HEADER/TEXT/DATA offset and size is checked against the file size *before* anything is read
or allocated, so a hostile or truncated file costs nothing and fails with one ``FcsReadError`` line.
Time and memory are linear in the file's bytes: TEXT is split in one pass (escaped delimiters
included), the data sets of a ``$NEXTDATA`` chain must follow one another without their TEXT
segments overlapping (so no byte of TEXT is parsed twice, however the offsets are forged), and at
most ``MAX_DATA_SETS`` data sets and ``MAX_PARAMETERS`` channels are read (an error past either).
The TEXT of a file read twice (``read_text`` for the layout, then ``read_fcs``) is parsed once.
By default every file goes through this decoder (measured as fast as FlowKit's reader and
value-identical to it); ``read_fcs(..., use_flowkit=True)`` lets FlowKit read the well-formed ones
itself, and only after those checks passed.

Choices for awkward but readable files (each leaves a line in ``FcsData.warnings``):
- duplicate ``$PnN``: read; the later channels are renamed ``<name>_<n>`` ($Pn index);
- zero events: read (the analysis reports the empty tube);
- NaN/inf in float data: read as-is; ``FcsData.nonfinite`` counts them (the analysis drops them);
- non-numeric ``$TIMESTEP``: Time is left unscaled (step 1);
- several data sets: the first (or ``data_set``, numbered from 0) is read;
- FCS 3.2: read like 3.1, with ``$PnDATATYPE`` (a channel stored as I, F or D whatever
  ``$DATATYPE`` says) decoded per channel;
- a ``$TIMESTEP`` that would make Time overflow: Time is left unscaled.
Keyword values are decoded as UTF-8, else latin-1, and stripped of surrounding blanks.
"""

from __future__ import annotations

import functools
import hashlib
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import flowio
import numpy as np

from .errors import FcsReadError

if TYPE_CHECKING:  # pragma: no cover
    import flowkit

__all__ = ["Channel", "FcsData", "read_fcs", "read_text", "sha256_file"]

HEADER_SIZE = 58
MAX_PARAMETERS = 10_000  # more than any instrument writes; bounds per-channel work on garbage
MAX_DATA_SETS = 1_000  # data sets in one $NEXTDATA chain; instruments write 1-3
MAX_SPILLOVER = 1_000  # detectors of a spillover matrix (inverting it is cubic in this)
VERSIONS = ("2.0", "3.0", "3.1", "3.2")
_TEXT_CACHE_BYTES = 64 << 20  # TEXT kept for a second read of the same unchanged file

_PNN = re.compile(r"^p(\d+)n$")


@dataclass
class Channel:
    """One parameter ($Pn) as read; ``amplification`` and ``gain`` are the values applied."""

    index: int  # 1-based $Pn index
    pnn: str
    pns: str  # "" when absent
    range: float  # $PnR
    bits: int  # $PnB
    amplification: tuple[float, float]  # $PnE (decades, offset); (0, 0) linear
    gain: float  # $PnG, 1.0 when absent


@dataclass
class FcsData:
    """One data set of an FCS file: its events as FlowKit's Sample would hold them."""

    path: Path
    # (n_events, n_channels) float64 raw (FlowKit-preprocessed) values, order of channels;
    # column-major above COLUMN_MAJOR_EVENTS events (read through ``events``)
    _events: np.ndarray | None
    shape: tuple[int, int]  # (events, channels)
    version: str  # "2.0" | "3.0" | "3.1" | "3.2"
    keywords: dict[str, str]  # TEXT keywords: lower-case, leading "$" removed
    channels: list[Channel]
    n_data_sets: int
    data_set: int  # 0-based, the one read
    warnings: list[str] = field(default_factory=list)
    spillover: tuple[list[str], np.ndarray] | None = None
    nonfinite: int = 0  # NaN/inf values in the events (float data only)
    reader: str = "flowkit"  # "flowkit": FlowKit read the file; "cytomsc": decoded here
    _sample: Any = field(default=None, repr=False, compare=False)
    _make_sample: Callable[[], Any] | None = field(default=None, repr=False, compare=False)
    _reread: Callable[[], np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def events(self) -> np.ndarray:
        """The events (see ``_events``); read from the file again if they were handed over."""
        if self._events is None:
            if self._reread is None:
                raise FcsReadError("the events were released and cannot be read again", self.path)
            self._events = self._reread()
        return self._events

    def release_events(self) -> None:
        """Free the events (read from the file again if asked for); kept if they cannot be."""
        if self._reread is not None:
            self._events = None

    def take_events(self) -> np.ndarray:
        """The events array itself, for the caller to overwrite (compensation in place on a
        large tube, where a second copy would cost as much memory as the file's data). This
        FcsData reads the file again if its events are asked for afterwards."""
        ev = self.events
        if self._reread is None:  # FlowKit's Sample holds them: never hand its buffer over
            return ev.copy(order="K")
        self._events = None
        return ev

    @property
    def sample(self) -> flowkit.Sample:
        """FlowKit's Sample of this data set (the same raw events), made when first asked for.

        It is built as it always was (FlowKit's ``Sample`` around the decoded FlowData, the file
        read again), so FlowKit gates the lab's files exactly as before; the analysis itself
        never needs it."""
        if self._sample is None:
            if self._make_sample is None:
                raise FcsReadError("no FlowKit Sample can be made for these events", self.path)
            self._sample = self._make_sample()
        return self._sample

    @property
    def n_events(self) -> int:
        return int(self.shape[0])

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without what can be read from the file again (the events, the Sample): a
        copy sent to or from a worker carries the layout, not the data."""
        state = dict(self.__dict__)
        if self._reread is not None:
            state["_events"] = None
        if self._make_sample is not None:
            state["_sample"] = None
        return state


@dataclass
class _DataSet:
    """HEADER and TEXT of one data set, validated against the file size."""

    base: int  # byte offset of this data set's HEADER in the file
    version: str
    header: dict[str, int | None]
    keywords: dict[str, str]
    warnings: list[str]


# ----------------------------------------------------------------------------------------------
# HEADER and TEXT


def _header_int(raw: bytes) -> int | None:
    """An 8-byte ASCII offset; blanks (as some exporters write) mean 'not given'."""
    text = raw.decode("latin-1").strip()
    if not text:
        return None
    if not text.isdigit():
        raise ValueError(text)
    return int(text)


def _parse_header(
    raw: bytes, base: int, size: int, path: Path
) -> tuple[str, dict[str, int | None]]:
    if raw[:3] != b"FCS"[: len(raw)] or not raw:
        raise FcsReadError("not an FCS file (no 'FCS' signature at the start)", path)
    if len(raw) < HEADER_SIZE:
        where = "file" if base == 0 else f"data set at byte {base}"
        raise FcsReadError(f"too short for an FCS HEADER ({len(raw)} bytes in the {where})", path)
    version = raw[3:6].decode("latin-1")
    if version not in VERSIONS:
        raise FcsReadError(
            f"unsupported FCS version {version!r} (cytomsc reads {', '.join(VERSIONS)})", path
        )
    names = (
        "text_start",
        "text_stop",
        "data_start",
        "data_stop",
        "analysis_start",
        "analysis_stop",
    )
    header: dict[str, int | None] = {}
    for i, name in enumerate(names):
        chunk = raw[10 + 8 * i : 18 + 8 * i]
        try:
            header[name] = _header_int(chunk)
        except ValueError:
            if name.startswith("analysis"):
                header[name] = None
                continue
            raise FcsReadError(
                f"HEADER {name.replace('_', ' ')} offset is not a number "
                f"({chunk.decode('latin-1')!r})",
                path,
            ) from None
    start, stop = header["text_start"], header["text_stop"]
    if start is None or stop is None:
        raise FcsReadError("HEADER gives no TEXT offsets", path)
    if start < HEADER_SIZE or stop < start:
        raise FcsReadError(f"HEADER TEXT offsets {start}-{stop} are impossible", path)
    if base + stop >= size:
        raise FcsReadError(
            f"truncated in TEXT (TEXT ends at byte {base + stop}, the file has {size} bytes)", path
        )
    return version, header


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _parse_text(raw: bytes, path: Path) -> tuple[dict[str, str], list[str]]:
    """Split a TEXT segment into keywords; a doubled delimiter stands for the character itself."""
    warns: list[str] = []
    if len(raw) < 2:
        raise FcsReadError("TEXT segment is empty", path)
    delim = raw[:1]
    body = raw[1:]
    if delim not in b" \x00\r\n":
        body = body.rstrip(b" \x00\r\n")
    if body.endswith(delim):
        body = body[:-1]
    parts = body.split(delim)
    # An empty part between two others is a doubled (escaped) delimiter: join the pieces once,
    # never by repeated concatenation (quadratic on a value holding many escapes).
    tokens: list[bytes] = []
    i, n = 0, len(parts)
    while i < n:
        pieces = [parts[i]]
        while i + 2 < n and parts[i + 1] == b"":
            pieces.append(parts[i + 2])
            i += 2
        tokens.append(delim.join(pieces) if len(pieces) > 1 else pieces[0])
        i += 1
    if len(tokens) % 2:
        warns.append(f"TEXT keyword '{_decode(tokens[-1])[:40]}' has no value; ignored")
        tokens = tokens[:-1]
    keywords: dict[str, str] = {}
    for key, value in zip(tokens[::2], tokens[1::2], strict=False):
        name = _decode(key).strip().lstrip("$").lower()
        if name:
            keywords[name] = _decode(value).strip()
    if "par" not in keywords:
        raise FcsReadError("TEXT has no $PAR keyword (not a readable FCS TEXT segment)", path)
    return keywords, warns


def _read_data_set(fh, base: int, size: int, path: Path) -> _DataSet:
    fh.seek(base)
    version, header = _parse_header(fh.read(HEADER_SIZE), base, size, path)
    text_start, text_stop = header["text_start"], header["text_stop"]
    assert text_start is not None and text_stop is not None  # _parse_header refuses blanks
    fh.seek(base + text_start)
    raw = fh.read(text_stop - text_start + 1)
    keywords, warns = _parse_text_once(raw, path)
    return _DataSet(base, version, header, keywords, warns)


class _TextMemo:
    """Parsed TEXT segments by a digest of their bytes, at most ``limit`` bytes of TEXT."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: dict[bytes, tuple[dict[str, str], list[str], int]] = {}  # oldest first
        self.total = 0

    def parse(self, raw: bytes, path: Path) -> tuple[dict[str, str], list[str]]:
        key = hashlib.blake2b(raw, digest_size=20).digest() + len(raw).to_bytes(8, "little")
        hit = self.items.pop(key, None)
        if hit is None:
            keywords, warns = _parse_text(raw, path)
            hit = (keywords, warns, len(raw))
            self.total += len(raw)
        self.items[key] = hit  # (re)inserted last: the most recently used
        while self.total > self.limit and len(self.items) > 1:
            self.total -= self.items.pop(next(iter(self.items)))[2]
        return dict(hit[0]), list(hit[1])


_memo = _TextMemo(_TEXT_CACHE_BYTES)


def _parse_text_once(raw: bytes, path: Path) -> tuple[dict[str, str], list[str]]:
    """``_parse_text``, remembered by the TEXT's own bytes.

    ``cytomsc analyze`` reads each file's TEXT to lay out the cultures, then reads the file:
    the second read hashes the TEXT (fast) instead of splitting it again, and a process pool
    forked after the layout inherits what was parsed. Keyed by content, never by name or date,
    a changed file is always parsed afresh; callers get their own copies, and at most
    ``_TEXT_CACHE_BYTES`` of TEXT is remembered (the oldest dropped first).
    """
    return _memo.parse(raw, path)


def _data_sets(fh, size: int, path: Path, wanted: int) -> tuple[_DataSet, int, list[str]]:
    """Follow $NEXTDATA from the first data set: the wanted one, the count, and any warnings.

    Each data set must start beyond the end of the previous one's TEXT, so the TEXT segments of
    a chain are disjoint and the whole walk reads each byte of the file at most once; a chain
    that points backwards or into the previous TEXT ends there (with a warning). Only the wanted
    data set is kept. More than ``MAX_DATA_SETS`` data sets is an error.
    """
    if size == 0:
        raise FcsReadError("empty file", path)
    if wanted < 0:
        raise FcsReadError(f"data set {wanted} requested; data sets are numbered from 0", path)
    current = _read_data_set(fh, 0, size, path)
    chosen = current if wanted == 0 else None
    count = 1
    warns: list[str] = []
    while True:
        nxt = _as_int(current.keywords.get("nextdata", "0"))
        if not nxt:
            break
        target = current.base + nxt
        text_end = current.base + int(current.header["text_stop"] or 0)
        if nxt < 0 or target <= text_end or target + HEADER_SIZE > size:
            where = (
                "outside the file"
                if target + HEADER_SIZE > size or target < 0
                else "back into data set " + str(count - 1)
            )
            warns.append(f"$NEXTDATA of data set {count - 1} points {where}; ignored")
            break
        if count == MAX_DATA_SETS:
            raise FcsReadError(
                f"more than {MAX_DATA_SETS:,} data sets chained by $NEXTDATA "
                f"(cytomsc reads at most {MAX_DATA_SETS:,})",
                path,
            )
        try:
            current = _read_data_set(fh, target, size, path)
        except FcsReadError as err:
            warns.append(f"data set {count} unreadable ({err.reason}); ignored")
            break
        if count == wanted:
            chosen = current
        count += 1
    if chosen is None:
        raise FcsReadError(
            f"data set {wanted} requested but the file holds {count} (numbered 0 to {count - 1})",
            path,
        )
    if count > 1:
        warns.append(
            f"{count} data sets (numbered 0 to {count - 1}); read data set {wanted} (--data-set N)"
        )
    return chosen, count, warns


def _as_int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            return None
        return int(value) if np.isfinite(value) and value == int(value) else None


def _as_float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def read_text(path: str | Path, data_set: int = 0) -> dict[str, str]:
    """TEXT keywords of one data set, without decoding DATA (for layout and role detection)."""
    path = Path(path)
    with _open(path) as (fh, size):
        ds, _, _ = _data_sets(fh, size, path, data_set)
    return ds.keywords


class _open:
    """Open a file read-only with its size; OS errors become FcsReadError."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self):
        try:
            self.fh = open(self.path, "rb")  # noqa: SIM115 - closed in __exit__
            self.fh.seek(0, 2)
            size = self.fh.tell()
        except IsADirectoryError:
            raise FcsReadError("is a directory, not an FCS file", self.path) from None
        except OSError as err:
            raise FcsReadError(f"cannot open ({err.strerror or err})", self.path) from None
        return self.fh, size

    def __exit__(self, *exc) -> None:
        self.fh.close()


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (inputs are recorded in results by their hash)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as err:
        raise FcsReadError(f"cannot open ({err.strerror or err})", path) from None
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# Channels and layout of DATA


@dataclass
class _Layout:
    """Everything needed to decode DATA, derived from and checked against the keywords."""

    datatype: str  # "I" | "F" | "D" | "A"
    order: str  # "<" | ">"
    par: int
    tot: int
    names: list[str]
    pns: list[str]
    bits: list[int]
    ranges: list[float]
    pne: list[tuple[float, float]]
    png: list[float]
    start: int  # absolute byte offsets of the DATA to read
    nbytes: int
    timestep: float | None
    warnings: list[str]
    flowkit_ok: bool  # FlowKit's own reader will give the same answer
    types: list[str]  # per channel: "I" | "F" | "D" (FCS 3.2 $PnDATATYPE), or all "A"


def _byte_order(byteord: str, path: Path) -> str:
    order = [int(x) for x in re.findall(r"\d+", byteord)]
    if order and order == sorted(order):
        return "<"
    if order and order == sorted(order, reverse=True):
        return ">"
    raise FcsReadError(f"unsupported $BYTEORD '{byteord}'", path)


def _layout(ds: _DataSet, size: int, path: Path) -> _Layout:
    kw = ds.keywords
    warns = list(ds.warnings)
    par = _as_int(kw.get("par"))
    if par is not None and par > MAX_PARAMETERS:
        raise FcsReadError(
            f"$PAR is {par:,} channels, more than the {MAX_PARAMETERS:,} cytomsc reads", path
        )
    if par is None or not 0 < par:
        raise FcsReadError(f"$PAR '{kw.get('par')}' is not a valid number of parameters", path)
    extra = sorted(int(m.group(1)) for k in kw if (m := _PNN.match(k)) and int(m.group(1)) > par)
    missing = [n for n in range(1, par + 1) if f"p{n}n" not in kw]
    if extra or missing:
        found = par - len(missing) + len(extra)
        raise FcsReadError(
            f"$PAR is {par} but the TEXT names {found} channels ($PnN)"
            f"{' beyond $PAR: ' + str(extra[:5]) if extra else ''}"
            f"{' missing: ' + str(missing[:5]) if missing else ''}",
            path,
        )
    datatype = kw.get("datatype", "").upper()
    if datatype not in ("I", "F", "D", "A"):
        raise FcsReadError(f"unsupported $DATATYPE '{kw.get('datatype', '')}'", path)
    mode = kw.get("mode", "L").upper()
    if mode != "L":
        raise FcsReadError(f"$MODE '{mode}' (histogram data) is not list-mode event data", path)
    order = _byte_order(kw.get("byteord", "1,2,3,4"), path)

    names, pns, bits, ranges, pne, png, types = [], [], [], [], [], [], []
    for n in range(1, par + 1):
        names.append(kw[f"p{n}n"])
        pns.append(kw.get(f"p{n}s", ""))
        t = datatype
        own = kw.get(f"p{n}datatype", "").strip().upper()  # FCS 3.2: this channel's own type
        if own:
            if own not in ("I", "F", "D") or datatype == "A":
                raise FcsReadError(
                    f"unsupported $P{n}DATATYPE '{kw[f'p{n}datatype']}' "
                    f"(with $DATATYPE {datatype})",
                    path,
                )
            t = own
        types.append(t)
        b = _as_int(kw.get(f"p{n}b"))
        if t in ("F", "D"):
            want = 32 if t == "F" else 64
            if b != want:
                if b is not None:
                    warns.append(
                        f"$P{n}B is {b} for {'float' if want == 32 else 'double'} "
                        f"data; read as {want} bits"
                    )
                b = want
        elif b is None or b <= 0 or (t == "I" and (b % 8 or b > 64)):
            raise FcsReadError(f"unsupported $P{n}B '{kw.get(f'p{n}b')}' for $DATATYPE {t}", path)
        bits.append(b)
        r = _as_float(kw.get(f"p{n}r"))
        if r is None:
            raise FcsReadError(f"$P{n}R '{kw.get(f'p{n}r')}' is missing or not a number", path)
        ranges.append(r)
        pne.append(_amplification(kw.get(f"p{n}e"), n, path))
        g = _as_float(kw.get(f"p{n}g")) if f"p{n}g" in kw else 1.0
        if g is None:
            warns.append(f"$P{n}G '{kw[f'p{n}g']}' is not a number; gain 1 used")
            g = 1.0
        png.append(g)

    dup: dict[str, int] = {}
    renamed = []
    for i, name in enumerate(names):
        if name in dup:
            names[i] = f"{name}_{i + 1}"
            renamed.append(f"$P{i + 1}N '{name}' -> '{names[i]}'")
        dup.setdefault(names[i], i)
    if renamed:
        warns.append("duplicate channel names renamed: " + ", ".join(renamed))

    step_text = kw.get("timestep")
    timestep = _as_float(step_text) if step_text else None
    if step_text and timestep is None:
        warns.append(f"$TIMESTEP '{step_text}' is not a number; Time left unscaled")

    bytes_per_event = _bytes_per_event(datatype, bits)
    start, nbytes, tot, offset_ok = _data_range(ds, bytes_per_event, size, path, warns)
    if tot == 0:
        warns.append("0 events")
    analysis_ok = _analysis_ok(ds, size)
    if len(set(types)) == 1:
        datatype = types[0]  # every channel says the same: that is the file's type
    mixed = len(set(types)) > 1
    flowkit_ok = (
        offset_ok
        and not renamed
        and analysis_ok
        and tot > 0
        and not mixed
        and datatype == kw.get("datatype", "").upper()
        and ds.base == 0
        and not ds.warnings
        and (step_text is None or timestep is not None or not step_text.strip())
        and datatype in ("F", "D", "I")
        and (datatype != "I" or (len(set(bits)) == 1 and bits[0] in (8, 16, 32)))
        and kw.get("byteord", "").replace(" ", "") in ("1,2,3,4", "4,3,2,1", "1,2", "2,1")
    )
    return _Layout(
        datatype,
        order,
        par,
        tot,
        names,
        pns,
        bits,
        ranges,
        pne,
        png,
        start,
        nbytes,
        timestep,
        warns,
        flowkit_ok,
        types,
    )


def _amplification(text: str | None, n: int, path: Path) -> tuple[float, float]:
    """$PnE as FlowIO reads it: (decades, offset), offset 0 with decades > 0 read as 1."""
    if text is None or not text.strip():
        return (0.0, 0.0)
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        decades, log0 = (float(parts[0]), float(parts[1]))
    except (ValueError, IndexError):
        raise FcsReadError(f"$P{n}E '{text}' is not 'decades,offset'", path) from None
    if not (np.isfinite(decades) and np.isfinite(log0)) or decades < 0 or decades > 20:
        raise FcsReadError(f"$P{n}E '{text}' is out of range", path)
    if log0 == 0 and decades != 0:
        log0 = 1.0
    return (decades, log0)


def _bytes_per_event(datatype: str, bits: list[int]) -> int:
    if datatype == "A":
        return sum(bits)  # $PnB is the number of characters for ASCII data
    return sum(bits) // 8


def _analysis_ok(ds: _DataSet, size: int) -> bool:
    """FlowIO reads the ANALYSIS segment too: only hand it files where that is in bounds."""
    a = _as_int(ds.keywords.get("beginanalysis"))
    b = _as_int(ds.keywords.get("endanalysis"))
    if a is None:
        a = ds.header["analysis_start"]
    if b is None:
        b = ds.header["analysis_stop"]
    if a is None or b is None:
        return "beginanalysis" not in ds.keywords and ds.header["analysis_start"] is not None
    return a == b or (0 <= a < b < size)


def _data_range(
    ds: _DataSet, bpe: int, size: int, path: Path, warns: list[str]
) -> tuple[int, int, int, bool]:
    """(absolute start, bytes to read, events, HEADER/TEXT agree and sizes exact)."""
    kw, hdr = ds.keywords, ds.header
    t_start, t_stop = _as_int(kw.get("begindata")), _as_int(kw.get("enddata"))
    h_start, h_stop = hdr["data_start"], hdr["data_stop"]
    text_given = t_start is not None and t_stop is not None and (t_start or t_stop)
    header_given = h_start is not None and h_stop is not None and (h_start or h_stop)
    agree = True
    if text_given:
        assert t_start is not None and t_stop is not None  # text_given says so
        start, stop = t_start, t_stop
        if header_given and (h_start, h_stop) != (t_start, t_stop):
            assert h_start is not None and h_stop is not None  # header_given says so
            agree = False
            if _fits(h_start, h_stop, ds.base, size) and not _fits(t_start, t_stop, ds.base, size):
                start, stop = h_start, h_stop
                warns.append(
                    f"TEXT DATA offsets {t_start}-{t_stop} lie outside the file; "
                    f"read with the HEADER offsets {h_start}-{h_stop}"
                )
            else:
                warns.append(
                    f"HEADER DATA offsets {h_start}-{h_stop} disagree with TEXT "
                    f"{t_start}-{t_stop}; read with the TEXT offsets"
                )
        elif not header_given:
            agree = False  # FlowIO needs HEADER offsets (0 only above 99,999,999 bytes)
            if not (h_start == 0 and h_stop == 0 and t_stop > 99_999_999):
                warns.append("HEADER DATA offsets blank; read with the TEXT offsets")
    elif header_given:
        assert h_start is not None and h_stop is not None  # header_given says so
        start, stop = h_start, h_stop
    else:
        raise FcsReadError("no DATA offsets in HEADER or TEXT", path)
    if start < 0 or stop < start - 1:
        raise FcsReadError(f"DATA offsets {start}-{stop} are impossible", path)
    if ds.base + start > size:
        raise FcsReadError(
            f"truncated in DATA (DATA starts at byte {ds.base + start}, the file has {size} bytes)",
            path,
        )
    segment = stop - start + 1
    tot = _as_int(kw.get("tot"))
    if "tot" in kw and (tot is None or tot < 0):
        raise FcsReadError(f"$TOT '{kw['tot']}' is not a number of events", path)
    if tot is None:
        tot = segment // bpe if bpe else 0
        warns.append(f"no $TOT; {tot} events from the DATA size")
    need = tot * bpe
    available = size - (ds.base + start)
    if need > segment:
        if need > available:
            raise FcsReadError(
                f"$TOT is {tot} events ({need} bytes) but the file holds "
                f"{max(available, 0)} bytes of DATA (truncated or wrong $TOT)",
                path,
            )
        raise FcsReadError(
            f"$TOT is {tot} events ({need} bytes) but the DATA segment holds {segment} bytes", path
        )
    if need > available:
        raise FcsReadError(f"truncated in DATA ({available} of {need} bytes present)", path)
    exact = segment == need
    if segment == need + 1:
        past = " past the file" if ds.base + stop >= size else " past the DATA"
        warns.append(f"$ENDDATA one byte{past}; read {tot} events from $BEGINDATA")
    elif segment > need:
        warns.append(f"DATA segment has {segment - need} bytes beyond $TOT events; ignored")
    if ds.base + stop >= size and segment != need + 1:
        warns.append(f"$ENDDATA {stop} lies past the end of the file; read {tot} events")
        exact = False
    return ds.base + start, need, tot, agree and exact


def _fits(start: int, stop: int, base: int, size: int) -> bool:
    return 0 <= start <= stop and base + stop < size


# ----------------------------------------------------------------------------------------------
# DATA


def _decode_data(raw: bytes, lay: _Layout, path: Path) -> np.ndarray:
    """Raw stored values, flat (event-major), before FlowKit's pre-processing."""
    n, par = lay.tot, lay.par
    if len(set(lay.types)) > 1:
        return _decode_mixed(raw, lay)
    if lay.datatype in ("F", "D"):
        return np.frombuffer(raw, dtype=f"{lay.order}f{4 if lay.datatype == 'F' else 8}")
    if lay.datatype == "A":
        return _decode_ascii(raw, lay, path)
    bits = lay.bits
    masks = [_int_mask(b, r) for b, r in zip(bits, lay.ranges, strict=False)]
    if len(set(bits)) == 1 and bits[0] in (8, 16, 32, 64):
        values = np.frombuffer(raw, dtype=f"{lay.order}u{bits[0] // 8}").reshape(n, par)
        if any(m is not None for m in masks):
            mask = np.array(
                [m if m is not None else (1 << bits[0]) - 1 for m in masks],
                dtype=values.dtype.newbyteorder("="),
            )
            values = values & mask
        return values.reshape(-1)
    widths = [b // 8 for b in bits]
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(n, sum(widths))
    padded = 4 if max(widths) <= 4 else 8
    if len(set(widths)) == 1:  # e.g. all 24-bit: pad every value to 4 bytes at once
        w = widths[0]
        buf = np.zeros((n, par, padded), dtype=np.uint8)
        cells = rows.reshape(n, par, w)
        if lay.order == "<":
            buf[:, :, :w] = cells
        else:
            buf[:, :, padded - w :] = cells
        out = buf.view(f"{lay.order}u{padded}").reshape(n, par)
    else:
        out = np.empty((n, par), dtype=f"u{padded}")
        offset = 0
        for i, w in enumerate(widths):
            buf = np.zeros((n, padded), dtype=np.uint8)
            if lay.order == "<":
                buf[:, :w] = rows[:, offset : offset + w]
            else:
                buf[:, padded - w :] = rows[:, offset : offset + w]
            out[:, i] = buf.view(f"{lay.order}u{padded}")[:, 0]
            offset += w
    if any(m is not None for m in masks):
        full = [(1 << b) - 1 for b in bits]
        out = out & np.array(
            [m if m is not None else f for m, f in zip(masks, full, strict=True)],
            dtype=f"u{padded}",
        )
    return out.reshape(-1)


def _decode_mixed(raw: bytes, lay: _Layout) -> np.ndarray:
    """FCS 3.2 channels of different types ($PnDATATYPE): each column decoded as stored, the
    integer ones masked as FlowIO masks them, all returned as float64 (event-major)."""
    n, par = lay.tot, lay.par
    widths = [b // 8 for b in lay.bits]
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(n, sum(widths))
    out = np.empty((n, par), dtype=np.float64)
    offset = 0
    for i, (t, w) in enumerate(zip(lay.types, widths, strict=True)):
        cells = rows[:, offset : offset + w]
        offset += w
        if t in ("F", "D"):
            out[:, i] = np.ascontiguousarray(cells).view(f"{lay.order}f{w}")[:, 0]
            continue
        padded = 4 if w <= 4 else 8
        buf = np.zeros((n, padded), dtype=np.uint8)
        if lay.order == "<":
            buf[:, :w] = cells
        else:
            buf[:, padded - w :] = cells
        values = buf.view(f"{lay.order}u{padded}")[:, 0]
        mask = _int_mask(lay.bits[i], lay.ranges[i])
        out[:, i] = values & mask if mask is not None else values
    return out.reshape(-1)


def _int_mask(bits: int, prange: float) -> int | None:
    """FlowIO's rule: keep the bits below $PnR rounded up to a power of 2."""
    r = int(prange)
    top = 1 if r <= 0 else 1 << (r - 1).bit_length()
    return top - 1 if (1 << bits) > top else None


def _decode_ascii(raw: bytes, lay: _Layout, path: Path) -> np.ndarray:
    """Fixed-width ASCII data ($DATATYPE A, $PnB characters per value)."""
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(lay.tot, -1) if lay.tot else None
    out = np.empty((lay.tot, lay.par), dtype=np.float64)
    offset = 0
    for i, width in enumerate(lay.bits):
        if lay.tot:
            assert rows is not None
            cells = rows[:, offset : offset + width].copy().view(f"S{width}").ravel()
            try:
                out[:, i] = cells.astype(np.float64)
            except ValueError:
                raise FcsReadError(f"ASCII DATA of $P{i + 1}N is not numeric", path) from None
        offset += width
    return out.reshape(-1)


def _check_timestep(events: np.ndarray, lay: _Layout) -> None:
    """Leave Time unscaled (with a warning) when ``$TIMESTEP`` would make it overflow: a Time
    channel of infinities would drop every event as non-finite, for a keyword's sake."""
    t = next((i for i, name in enumerate(lay.names) if name.lower() == "time"), None)
    if lay.timestep is None or t is None or not lay.tot:
        return
    with np.errstate(all="ignore"):  # (a signalling NaN in float data sets "invalid")
        col = events.reshape(lay.tot, lay.par)[:, t].astype(np.float64)
        col = np.abs(col[np.isfinite(col)])
        overflow = col.size and not np.isfinite(float(col.max()) * lay.timestep)
    if overflow:
        lay.warnings.append(f"$TIMESTEP {lay.timestep:g} makes Time overflow; Time left unscaled")
        lay.timestep = None


def _flow_data(ds: _DataSet, lay: _Layout, events: np.ndarray, path: Path) -> flowio.FlowData:
    """A FlowIO FlowData around already-decoded events, so FlowKit pre-processes them itself."""
    fd = flowio.FlowData.__new__(flowio.FlowData)
    text = dict(ds.keywords)
    text["timestep"] = repr(lay.timestep) if lay.timestep is not None else "1.0"
    fd.name = path.name
    fd.version = ds.version
    fd.text = text
    fd.header = dict(ds.header)
    fd.analysis = {}
    fd.channel_count = lay.par
    fd.event_count = lay.tot
    fd.data_type = lay.datatype
    fd.file_size = None
    fd.null_channels = []
    fd.events = events
    fd.channels = {}
    fd.pnn_labels, fd.pns_labels, fd.pnr_values = [], [], []
    fd.fluoro_indices, fd.scatter_indices, fd.time_index = [], [], None
    for i, name in enumerate(lay.names):
        gain = lay.png[i]
        low = name.lower()
        if low[:4] not in ("fsc-", "ssc-", "time"):
            fd.fluoro_indices.append(i)
        elif low[:4] in ("fsc-", "ssc-"):
            fd.scatter_indices.append(i)
        elif low == "time":
            fd.time_index = i
            gain = 1.0  # FlowIO: Time is scaled by $TIMESTEP, never by a gain
        fd.channels[i + 1] = {
            "pnn": name,
            "pns": lay.pns[i],
            "pne": lay.pne[i],
            "png": gain,
            "pnr": lay.ranges[i],
        }
        fd.pnn_labels.append(name)
        fd.pns_labels.append(lay.pns[i])
        fd.pnr_values.append(lay.ranges[i])
    return fd


def _spillover(
    keywords: dict[str, str], names: list[str], warns: list[str]
) -> tuple[list[str], np.ndarray] | None:
    for key in ("spillover", "spill"):
        if key in keywords:
            text = keywords[key]
            break
    else:
        return None
    parts = [p.strip() for p in text.replace("\n", ",").split(",")]
    parts = [p for p in parts if p != ""]
    try:
        n = int(float(parts[0]))
        detectors = parts[1 : 1 + n]
        values = np.array([float(v) for v in parts[1 + n : 1 + n + n * n]], dtype=np.float64)
        if n <= 0 or len(detectors) != n or values.size != n * n:
            raise ValueError
        if n > MAX_SPILLOVER:
            warns.append(
                f"${key.upper()} is {n}x{n}, more than the {MAX_SPILLOVER:,} detectors "
                "cytomsc compensates; ignored"
            )
            return None
    except (ValueError, IndexError, OverflowError):
        warns.append(
            f"${key.upper()} is not a readable spillover matrix (n, n names, n*n values); ignored"
        )
        return None
    unknown = [d for d in detectors if d not in names]
    if unknown:
        warns.append(f"${key.upper()} names detectors not in the file: {', '.join(unknown)}")
    return detectors, values.reshape(n, n)


def _channels(lay: _Layout) -> list[Channel]:
    out = []
    for i, name in enumerate(lay.names):
        gain = 1.0 if name.lower() == "time" else lay.png[i]
        out.append(Channel(i + 1, name, lay.pns[i], lay.ranges[i], lay.bits[i], lay.pne[i], gain))
    return out


def _via_flowkit(path: Path, lay: _Layout) -> flowkit.Sample | None:
    """FlowKit's own reader, for files that passed every check; None if it disagrees or fails."""
    import flowkit

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sample = flowkit.Sample(path)
    except Exception:  # noqa: BLE001 - any FlowKit failure means: decode it ourselves
        return None
    if sample.event_count != lay.tot or list(sample.pnn_labels) != lay.names:
        return None
    return sample


def read_fcs(path: str | Path, data_set: int = 0, use_flowkit: bool = False) -> FcsData:
    """Read one data set of an FCS file; ``FcsReadError`` (one line) for anything unreadable.

    By default DATA is decoded here and pre-processed by FlowIO (``FlowData.as_array``, what
    FlowKit's Sample holds): measured faster than FlowKit's own file reader
    (benchmarks/bench_read.py) and value-identical to it on every corpus file FlowKit reads
    (tests/test_fcs.py). ``use_flowkit=True`` lets FlowKit read well-formed files itself (same
    values; this module's decoder still takes what FlowKit cannot read).
    """
    path = Path(path)
    sample = None
    with _open(path) as (fh, size):
        ds, n_sets, set_warns = _data_sets(fh, size, path, data_set)
        lay = _layout(ds, size, path)
        sample = (
            _via_flowkit(path, lay) if (use_flowkit and lay.flowkit_ok and n_sets == 1) else None
        )
        reader = "flowkit" if sample is not None else "cytomsc"
        if sample is None:
            values = _preprocessed(_flow_data(ds, lay, _decoded(fh, lay, path), path), lay, path)
        else:
            values = sample.get_events(source="raw")
    warns = set_warns + lay.warnings
    nonfinite = 0
    if lay.tot:  # float data may hold NaN; a gain, $PnE or $TIMESTEP may overflow any data
        nonfinite = int(lay.tot * lay.par - np.count_nonzero(np.isfinite(values)))
        if nonfinite:
            warns.append(f"{nonfinite} NaN/infinite values in the events")
    spill = _spillover(ds.keywords, lay.names, warns)

    own = sample is None
    # partials of module functions, not closures: an FcsData crosses processes (a pool worker's
    # CultureFiles for ``cytomsc.write``) and must pickle
    return FcsData(
        path=path,
        _events=values,
        shape=(lay.tot, lay.par),
        version=ds.version,
        keywords=ds.keywords,
        channels=_channels(lay),
        n_data_sets=n_sets,
        data_set=data_set,
        warnings=warns,
        spillover=spill,
        nonfinite=nonfinite,
        reader=reader,
        _sample=sample,
        _make_sample=functools.partial(_sample_of, path, ds, lay) if own else None,
        _reread=functools.partial(_reread_events, path, ds, lay) if own else None,
    )


def _reread_events(path: Path, ds: _DataSet, lay: _Layout) -> np.ndarray:
    """The data set's events read from the file again (``FcsData.events`` once released)."""
    with _open(path) as (fh, _):
        return _preprocessed(_flow_data(ds, lay, _decoded(fh, lay, path), path), lay, path)


def _decoded(fh: Any, lay: _Layout, path: Path) -> np.ndarray:
    """DATA of the data set as stored (decoded to numbers, before any pre-processing)."""
    fh.seek(lay.start)
    raw = fh.read(lay.nbytes)
    if len(raw) != lay.nbytes:
        raise FcsReadError(f"truncated in DATA ({len(raw)} of {lay.nbytes} bytes)", path)
    events = _decode_data(raw, lay, path)
    _check_timestep(events, lay)
    return events


COLUMN_MAJOR_EVENTS = 200_000  # above this many events, the events are held column-major
_ROWS = 1 << 16  # events per block when converting a large data set


def _preprocessed(fd: flowio.FlowData, lay: _Layout, path: Path) -> np.ndarray:
    """FlowIO's pre-processing of the decoded events ($PnE, $PnG, $TIMESTEP), as float64.

    Up to COLUMN_MAJOR_EVENTS events, FlowIO's ``as_array`` as FlowKit calls it. Above, the same
    ``as_array`` on blocks of events, written into one column-major array: no full-size
    row-major temporary beside it (a 5M x 14 tube is 560 MB a copy), and each channel, which is
    what compensation and the gates read, is contiguous."""
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            if lay.tot <= COLUMN_MAJOR_EVENTS:
                return fd.as_array(preprocess=True)
            flat = np.asarray(fd.events).reshape(-1)
            out = np.empty((lay.tot, lay.par), order="F")
            for start in range(0, lay.tot, _ROWS):
                stop = min(start + _ROWS, lay.tot)
                fd.events = flat[start * lay.par : stop * lay.par]
                out[start:stop] = fd.as_array(preprocess=True)
            fd.events = flat
            return out
    except Exception as err:  # noqa: BLE001 - FlowIO rejecting decoded data is bad input
        raise FcsReadError(
            f"the data cannot be pre-processed ({type(err).__name__}: {err})", path
        ) from None


def _sample_of(path: Path, ds: _DataSet, lay: _Layout) -> flowkit.Sample:
    """FlowKit's Sample around the decoded data set (the file's DATA read again)."""
    import flowkit

    with _open(path) as (fh, _):
        events = _decoded(fh, lay, path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return flowkit.Sample(_flow_data(ds, lay, events, path), sample_id=path.name)
    except Exception as err:  # noqa: BLE001 - FlowKit rejecting decoded data is bad input
        raise FcsReadError(
            f"FlowKit cannot hold the data ({type(err).__name__}: {err})", path
        ) from None


def read_stored(path: str | Path, data_set: int = 0) -> tuple[str, np.ndarray]:
    """The DATA segment as the file stores it: ($DATATYPE, values of shape (events, $PAR)).

    For the event export (``cytomsc.export``), which must write the original values back, not
    FlowKit's pre-processed ones: those are already multiplied by $TIMESTEP, divided by $PnG and
    anti-logged by $PnE, and inverting that in floating point is not exact. Integer values are
    masked to $PnR's bit width as FlowKit masks them; float data keep their stored bits.
    """
    path = Path(path)
    with _open(path) as (fh, size):
        ds, _, _ = _data_sets(fh, size, path, data_set)
        lay = _layout(ds, size, path)
        fh.seek(lay.start)
        raw = fh.read(lay.nbytes)
    if len(raw) != lay.nbytes:
        raise FcsReadError(f"truncated in DATA ({len(raw)} of {lay.nbytes} bytes)", path)
    values = _decode_data(raw, lay, path).reshape(lay.tot, lay.par)
    return lay.datatype, values.astype(values.dtype.newbyteorder("="), copy=False)
