"""Write FCS 3.0/3.1 list-mode files: float32 or 16/32-bit integer data, little-endian.

Why our own writer: FlowIO (and so FlowKit) writes only float FCS 3.1, but the simulator must also
produce FCS 3.0 integer exports like older instruments, and the pipeline exports events with extra
gate channels. The files are deterministic (the same input gives the same bytes: no timestamps are
added unless the caller passes them as keywords) and written atomically (a temporary name in the
same folder, then ``os.replace``), so a reader never sees half a file.

Layout: HEADER (58 bytes) | TEXT (from byte 58) | DATA. Offsets are inclusive byte positions. An
offset that does not fit the HEADER's 8 characters (> 99,999,999) is written there as 0 and read
from ``$BEGINDATA``/``$ENDDATA`` in TEXT, which always carry the true offsets (FCS 3.1 §3.2.2).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import CytomscError

HEADER_LEN = 58
MAX_HEADER_OFFSET = 99_999_999
DELIM = "/"


def header_bytes(version: str, text: tuple[int, int], data: tuple[int, int],
                 analysis: tuple[int, int] = (0, 0)) -> bytes:
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


def _escape(value: str) -> str:
    """Keyword values may not be empty and must double the delimiter."""
    value = " ".join(str(value).split()) or " "
    return value.replace(DELIM, DELIM * 2)


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


def _text_segment(keywords: list[tuple[str, str]]) -> str:
    parts = [DELIM]
    for key, value in keywords:
        parts.append(f"{_escape(key)}{DELIM}{_escape(value)}{DELIM}")
    return "".join(parts)


def encode_data(events: np.ndarray, datatype: str, ranges: list[float]) -> tuple[bytes, list[int]]:
    """DATA bytes and the $PnB of each channel (32 for float; 16 or 32 for integers)."""
    if datatype == "F":
        return np.ascontiguousarray(events, dtype="<f4").tobytes(), [32] * events.shape[1]
    if datatype != "I":
        raise ValueError(f"datatype {datatype!r} not supported ('F' or 'I')")
    top = max(ranges) if ranges else 0
    bits = 16 if top <= 65536 else 32
    if top > 2**32:
        raise ValueError("integer $PnR above 2^32 cannot be stored")
    hi = np.asarray(ranges, dtype=float) - 1
    ints = np.clip(np.rint(events), 0, hi)
    dtype = "<u2" if bits == 16 else "<u4"
    return np.ascontiguousarray(ints.astype(dtype)).tobytes(), [bits] * events.shape[1]


def write_fcs(path: str | Path, events: np.ndarray, pnn: list[str], pns: list[str] | None = None,
              keywords: dict[str, str] | None = None, version: str = "3.1", datatype: str = "F",
              ranges: list[float] | None = None,
              spillover: tuple[list[str], np.ndarray] | None = None) -> None:
    """Write ``events`` (n events × channels) as one list-mode FCS data set.

    ``ranges`` are the $PnR (default: 262144); integer data are rounded and clipped to
    [0, $PnR - 1]. ``keywords`` are written after the required ones, in the given order; they may
    not redefine a required keyword. ``spillover`` is (detector names, matrix) for ``$SPILLOVER``.
    """
    path = Path(path)
    events = np.asarray(events, dtype=float)
    if events.ndim != 2 or events.shape[1] != len(pnn):
        raise CytomscError(f"events of shape {events.shape} do not match {len(pnn)} channels",
                           path)
    n_ev, n_ch = events.shape
    if not np.all(np.isfinite(events)):
        raise CytomscError("events contain NaN or infinite values", path)
    ranges = list(ranges) if ranges is not None else [262144.0] * n_ch
    pns = list(pns) if pns is not None else [""] * n_ch
    if len(ranges) != n_ch or len(pns) != n_ch:
        raise CytomscError("pns/ranges do not have one entry per channel", path)
    try:
        data, bits = encode_data(events, datatype, ranges)
        spill = spillover_text(*spillover) if spillover is not None else None
        header_bytes(version, (0, 0), (0, 0))
    except ValueError as err:
        raise CytomscError(str(err), path) from None

    fixed: list[tuple[str, str]] = [
        ("$BYTEORD", "1,2,3,4"), ("$DATATYPE", datatype), ("$MODE", "L"), ("$NEXTDATA", "0"),
        ("$PAR", str(n_ch)), ("$TOT", str(n_ev)),
    ]
    for i in range(n_ch):
        j = i + 1
        fixed += [(f"$P{j}N", pnn[i]), (f"$P{j}B", str(bits[i])), (f"$P{j}E", "0,0"),
                  (f"$P{j}R", _format_float(ranges[i])), (f"$P{j}G", "1")]
        if pns[i].strip():
            fixed.append((f"$P{j}S", pns[i]))
    if spill is not None:
        fixed.append(("$SPILLOVER", spill))
    reserved = {k for k, _ in fixed} | {"$BEGINDATA", "$ENDDATA", "$BEGINANALYSIS",
                                        "$ENDANALYSIS", "$BEGINSTEXT", "$ENDSTEXT"}
    extra = []
    for key, value in (keywords or {}).items():
        if key.upper() in reserved:
            raise CytomscError(f"keyword {key} is set by the writer and cannot be given", path)
        extra.append((key, str(value)))

    # $BEGINDATA depends on the TEXT length, which depends on $BEGINDATA: iterate to a fixed point
    # (the digits only grow, so this ends within a few rounds).
    begin_data = HEADER_LEN
    while True:
        end_data = begin_data + len(data) - 1 if data else begin_data
        offsets = [("$BEGINANALYSIS", "0"), ("$ENDANALYSIS", "0"), ("$BEGINSTEXT", "0"),
                   ("$ENDSTEXT", "0"), ("$BEGINDATA", str(begin_data)),
                   ("$ENDDATA", str(end_data))]
        text = _text_segment(offsets + fixed + extra).encode("utf-8")
        start = HEADER_LEN + len(text)
        if start == begin_data:
            break
        begin_data = start
    header = header_bytes(version, (HEADER_LEN, HEADER_LEN + len(text) - 1),
                          (begin_data, end_data) if data else (0, 0))
    _atomic_write(path, header + text + data)


def _atomic_write(path: Path, payload: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it over: never a partial file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise CytomscError(f"cannot write: {err.strerror}", path) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; exports are meant to be shared
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise CytomscError(f"cannot write: {err.strerror}", path) from None
        raise
