"""Write FCS 3.0/3.1 list-mode files: float32, float64 or 8/16/32-bit integer data, little-endian.

Why our own writer, beside FlowIO's ``create_fcs`` (which FlowKit's ``Sample.export`` uses and
``cytomsc.export`` prefers): FlowIO writes only float32 FCS 3.1 data and sets every $PnE to 0,0.
The simulator must also produce FCS 3.0 integer exports like older instruments, and the event
export must write integer, float64 and log-amplified originals back with their own values
(``write_data_set``: what it is given is written bit for bit, with the $PnR/$PnE/$PnG texts given).
The files are deterministic (the same input gives the same bytes: no timestamps are added unless
the caller passes them as keywords) and written atomically (a temporary name in the same folder,
then ``os.replace``), so a reader never sees half a file.

Layout: HEADER (58 bytes) | TEXT (from byte 58) | DATA. Offsets are inclusive byte positions. An
offset that does not fit the HEADER's 8 characters (> 99,999,999) is written there as 0 and read
from ``$BEGINDATA``/``$ENDDATA`` in TEXT, which always carry the true offsets (FCS 3.1 §3.2.2).
Keyword values are written as given (an empty value, which FCS forbids, becomes one space); the
delimiter is "/", doubled inside values, unless a keyword or value begins or ends with "/" (a path):
then the first of ``DELIMITERS`` that occurs in no keyword or value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CytomscError

HEADER_LEN = 58
MAX_HEADER_OFFSET = 99_999_999
# Candidates, first choice first: none is special in a regular expression but "|", which FlowIO
# escapes, so readers that split TEXT with a regular expression (FlowIO does) read it right.
DELIMITERS = ("/", "|", "~", "!", "#", "%", "&", ";", "@", ":")
# Keywords the writer sets from the data itself (lower case, without "$").
STRUCTURAL = frozenset(
    {
        "beginanalysis",
        "endanalysis",
        "begindata",
        "enddata",
        "beginstext",
        "endstext",
        "byteord",
        "datatype",
        "mode",
        "nextdata",
        "par",
        "tot",
    }
)
_DTYPES = {"F": "<f4", "D": "<f8"}


@dataclass(frozen=True)
class ChannelText:
    """One parameter's $Pn keywords as written ($PnB follows from the data)."""

    pnn: str
    pns: str = ""
    pnr: str = "262144"
    pne: str = "0,0"
    png: str = "1"


def header_bytes(
    version: str, text: tuple[int, int], data: tuple[int, int], analysis: tuple[int, int] = (0, 0)
) -> bytes:
    """The 58-byte HEADER; offsets beyond 99,999,999 become 0 (TEXT keywords then rule)."""
    if version not in ("3.0", "3.1"):
        raise ValueError(f"FCS version {version!r} not supported (3.0 or 3.1)")
    out = f"FCS{version}    "
    for begin, end in (text, data, analysis):
        if end > MAX_HEADER_OFFSET:
            begin, end = 0, 0
        out += f"{begin:>8d}{end:>8d}"
    assert len(out) == HEADER_LEN
    return out.encode("ascii")


def _format_float(x: float) -> str:
    """Shortest exact text for a float (repr), without a trailing '.0' for integers."""
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


def spillover_text(channels: list[str], matrix: np.ndarray) -> str:
    """``$SPILLOVER`` value: n, the n detector names, then the n×n matrix row by row."""
    matrix = np.asarray(matrix, dtype=float)
    n = len(channels)
    if matrix.shape != (n, n):
        raise ValueError(f"spillover matrix shape {matrix.shape} does not match {n} channels")
    return ",".join([str(n), *channels, *(_format_float(v) for v in matrix.ravel())])


def choose_delimiter(texts: list[str]) -> str:
    """ "/" (doubled inside values), unless a keyword or value begins or ends with it: a doubled
    delimiter next to the separating one cannot be told apart. Then the first candidate that
    occurs in none of ``texts`` ("/" if each one does)."""
    if not any(t.startswith("/") or t.endswith("/") for t in texts):
        return "/"
    return next((d for d in DELIMITERS if not any(d in t for t in texts)), DELIMITERS[0])


def _text_segment(keywords: list[tuple[str, str]], delim: str) -> str:
    parts = [delim]
    for key, value in keywords:
        value = value if value != "" else " "  # FCS forbids empty values
        parts.append(
            f"{key.replace(delim, delim * 2)}{delim}{value.replace(delim, delim * 2)}{delim}"
        )
    return "".join(parts)


def encode_data(events: np.ndarray, datatype: str, ranges: list[float]) -> tuple[bytes, list[int]]:
    """DATA bytes and the $PnB of each channel (32 for float; 16 or 32 for integers)."""
    typed = _typed(events, datatype, ranges)
    return typed.tobytes(), [typed.dtype.itemsize * 8] * events.shape[1]


def _typed(events: np.ndarray, datatype: str, ranges: list[float]) -> np.ndarray:
    """Events as the array to store: float32, or integers rounded and clipped to [0, $PnR-1]."""
    if datatype == "F":
        return np.ascontiguousarray(events, dtype="<f4")
    if datatype != "I":
        raise ValueError(f"datatype {datatype!r} not supported ('F' or 'I')")
    top = max(ranges) if ranges else 0
    bits = 16 if top <= 65536 else 32
    if top > 2**32:
        raise ValueError("integer $PnR above 2^32 cannot be stored")
    hi = np.asarray(ranges, dtype=float) - 1
    ints = np.clip(np.rint(events), 0, hi)
    return np.ascontiguousarray(ints.astype("<u2" if bits == 16 else "<u4"))


def write_fcs(
    path: str | Path,
    events: np.ndarray,
    pnn: list[str],
    pns: list[str] | None = None,
    keywords: dict[str, str] | None = None,
    version: str = "3.1",
    datatype: str = "F",
    ranges: list[float] | None = None,
    spillover: tuple[list[str], np.ndarray] | None = None,
) -> None:
    """Write ``events`` (n events × channels) as one list-mode FCS data set.

    ``ranges`` are the $PnR (default: 262144); integer data are rounded and clipped to
    [0, $PnR - 1]. ``keywords`` are written after the required ones, in the given order; they may
    not redefine a required keyword. ``spillover`` is (detector names, matrix) for ``$SPILLOVER``.
    """
    path = Path(path)
    events = np.asarray(events, dtype=float)
    if events.ndim != 2 or events.shape[1] != len(pnn):
        raise CytomscError(f"events of shape {events.shape} do not match {len(pnn)} channels", path)
    n_ch = events.shape[1]
    if not np.all(np.isfinite(events)):
        raise CytomscError("events contain NaN or infinite values", path)
    ranges = list(ranges) if ranges is not None else [262144.0] * n_ch
    pns = list(pns) if pns is not None else [""] * n_ch
    if len(ranges) != n_ch or len(pns) != n_ch:
        raise CytomscError("pns/ranges do not have one entry per channel", path)
    try:
        typed = _typed(events, datatype, ranges)
        spill = spillover_text(*spillover) if spillover is not None else None
    except ValueError as err:
        raise CytomscError(str(err), path) from None
    channels = [ChannelText(pnn[i], pns[i], _format_float(ranges[i])) for i in range(n_ch)]
    extra = [("$SPILLOVER", spill)] if spill is not None else []
    extra += [(key, str(value)) for key, value in (keywords or {}).items()]
    write_data_set(path, typed, channels, extra, version=version)


def write_data_set(
    path: str | Path,
    values: np.ndarray,
    channels: list[ChannelText],
    keywords: Sequence[tuple[str, str]] = (),
    version: str = "3.1",
) -> None:
    """Write ``values`` exactly as given: float32 as $DATATYPE F, float64 as D, unsigned
    8/16/32-bit integers as I (one $PnB for every channel). Nothing is rounded, clipped or
    scaled, NaN included; ``channels`` give each parameter's $Pn texts as they are to be read.
    ``keywords`` (name as written, value) follow the required ones in order; a keyword the writer
    sets itself (offsets, $PAR, $TOT, $PnB/N/S/R/E/G ...) is an error."""
    path = Path(path)
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[1] != len(channels):
        raise CytomscError(
            f"events of shape {values.shape} do not match {len(channels)} channels", path
        )
    kind = values.dtype.kind
    if kind == "f" and values.dtype.itemsize in (4, 8):
        datatype = "F" if values.dtype.itemsize == 4 else "D"
        data = np.ascontiguousarray(values, dtype=_DTYPES[datatype]).tobytes()
    elif kind == "u" and values.dtype.itemsize in (1, 2, 4):
        datatype = "I"
        data = np.ascontiguousarray(values, dtype=f"<u{values.dtype.itemsize}").tobytes()
    else:
        raise CytomscError(f"cannot store {values.dtype} values (float32/64 or uint8/16/32)", path)
    bits = values.dtype.itemsize * 8
    n_ev, n_ch = values.shape
    try:
        header_bytes(version, (0, 0), (0, 0))
    except ValueError as err:
        raise CytomscError(str(err), path) from None

    fixed: list[tuple[str, str]] = [
        ("$BYTEORD", "1,2,3,4"),
        ("$DATATYPE", datatype),
        ("$MODE", "L"),
        ("$NEXTDATA", "0"),
        ("$PAR", str(n_ch)),
        ("$TOT", str(n_ev)),
    ]
    for j, ch in enumerate(channels, start=1):
        fixed += [
            (f"$P{j}N", ch.pnn),
            (f"$P{j}B", str(bits)),
            (f"$P{j}E", ch.pne),
            (f"$P{j}R", ch.pnr),
            (f"$P{j}G", ch.png),
        ]
        if ch.pns.strip():
            fixed.append((f"$P{j}S", ch.pns))
    reserved = {k for k, _ in fixed} | {f"${k.upper()}" for k in STRUCTURAL}
    extra = []
    for key, value in keywords:
        if key.upper() in reserved:
            raise CytomscError(f"keyword {key} is set by the writer and cannot be given", path)
        extra.append((key, str(value)))
    delim = choose_delimiter([t for kv in fixed + extra for t in kv])

    # $BEGINDATA depends on the TEXT length, which depends on $BEGINDATA: iterate to a fixed point
    # (the digits only grow, so this ends within a few rounds).
    begin_data = HEADER_LEN
    while True:
        end_data = begin_data + len(data) - 1 if data else begin_data
        offsets = [
            ("$BEGINANALYSIS", "0"),
            ("$ENDANALYSIS", "0"),
            ("$BEGINSTEXT", "0"),
            ("$ENDSTEXT", "0"),
            ("$BEGINDATA", str(begin_data)),
            ("$ENDDATA", str(end_data)),
        ]
        text = _text_segment(offsets + fixed + extra, delim).encode("utf-8")
        start = HEADER_LEN + len(text)
        if start == begin_data:
            break
        begin_data = start
    header = header_bytes(
        version,
        (HEADER_LEN, HEADER_LEN + len(text) - 1),
        (begin_data, end_data) if data else (0, 0),
    )
    _atomic_write(path, header + text + data)


def _atomic_write(path: Path, payload: bytes) -> None:
    """Write ``payload`` atomically (``output.atomic_file``): never a partial file; an OS error
    is a one-line ``CytomscError`` naming the file."""
    from .output import atomic_file

    try:
        with atomic_file(path) as tmp:
            tmp.write_bytes(payload)
    except OSError as err:
        raise CytomscError(f"cannot write: {err.strerror}", path) from None
