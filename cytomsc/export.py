"""Export a tube's events as FCS: the original channels exactly as the file stores them, plus
cytomsc's 0/1 gate channels and the population id (``--export-events``).

What must survive: every original channel reads back, through FlowKit and through FlowIO, with the
values of the original file (bit for bit for float data), its $PnR, $PnE and $PnG, and every
keyword that does not describe the DATA layout (passage, tissue, $SPILLOVER, $TIMESTEP ...), so
that gates.xml applied to the export counts the same events as on the original. So DATA is written
back as stored (``fcs.read_stored``) with the original $TIMESTEP, $PnE and $PnG texts, and a reader
applies them again exactly as it does on the original. (Writing FlowKit's pre-processed values
under the original $TIMESTEP scales Time twice; inverting the pre-processing is not exact.)

Which writer: FlowIO's ``create_fcs``, the maintained writer FlowKit's ``Sample.export`` is built
on, wherever it writes the file without changing it: float32 data whose $PnE are all linear and
whose keywords it can delimit. ``fcswrite.write_data_set`` for the rest, because ``create_fcs``
(FlowIO 1.4; each limit is asserted in tests/test_export.py, so a FlowIO that lifts one shows):

- writes float32 only (``NotImplementedError`` for $DATATYPE I): integer exports (Accuri, 16-bit
  instruments, FCS 2.0) would change type and their $PnR bit masking, float64 data would be rounded;
- sets every $PnE to 0,0: a log-amplified channel would be read back without its anti-log;
- delimits TEXT with "/" without a check: a value that begins or ends with "/", or a keyword
  name holding one (it escapes values only), corrupts the TEXT segment (an empty value too;
  those are written as one space, which the reader strips).

Integer data are written with one $PnB for every channel, the file's widest rounded up to 8, 16 or
32 bits (FlowIO reads no other width; the values are the stored ones, already masked to $PnR as
every reader masks them); integers wider than 32 bits as float64, exact below 2^53.

Keyword names: the reader keeps them in lower case without "$" (FlowIO and FlowKit read them the
same way), so standard keywords are written "$NAME" and the others "NAME", in upper case.
"""

from __future__ import annotations

import re
import sys
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import CytomscError
from .fcswrite import STRUCTURAL, ChannelText, write_data_set

if TYPE_CHECKING:  # pragma: no cover
    from .fcs import FcsData

# Per-parameter keywords the writer sets itself ($PnDATATYPE: FCS 3.2, one type per channel).
_OWN_PARAMETER = re.compile(r"^p(\d+)(b|e|g|n|r|s|datatype)$")
_PARAMETER = re.compile(r"^p(\d+)[a-z]")
_STANDARD_PARAMETER = re.compile(r"^p\d+([dfloptv]|calibration|type|analyte|feature|tag)$")


@dataclass(frozen=True)
class AddedChannel:
    """A channel cytomsc adds to the export: small non-negative integers (a gate's 0/1, a
    population id)."""

    name: str
    values: np.ndarray
    pns: str = ""


def export_events(
    path: Path, fcs: FcsData, added: list[AddedChannel], own_keywords: dict[str, str] | None = None
) -> str:
    """Write ``fcs``'s data set with ``added`` channels to ``path``; returns the writer used
    ("flowio" or "cytomsc"). ``own_keywords`` (e.g. CYTOMSC_VERSION) replace any original
    keyword of the same name."""
    from .fcs import read_stored

    datatype, stored = read_stored(fcs.path, fcs.data_set)
    n, par = stored.shape
    for a in added:
        if a.values.shape != (n,):
            raise CytomscError(
                f"added channel {a.name} has {a.values.shape[0]} values for {n} events", fcs.path
            )
    kw = fcs.keywords
    channels = [
        ChannelText(
            c.pnn,
            c.pns,
            kw.get(f"p{c.index}r", "262144"),
            kw.get(f"p{c.index}e") or "0,0",
            kw.get(f"p{c.index}g") or "1",
        )
        for c in fcs.channels
    ]
    for a in added:
        top = int(a.values.max()) if n else 0
        channels.append(ChannelText(a.name, a.pns, str(max(2, top + 1))))
    own = {k.lower().lstrip("$"): str(v) for k, v in (own_keywords or {}).items()}
    keywords = {k: v for k, v in kw.items() if _kept(k, par)}
    keywords.update(own)
    step = kw.get("timestep")
    if step is not None and not _is_number(step):
        keywords.pop("timestep", None)  # unreadable: the reader left Time unscaled, and so will
        # FlowIO without it

    linear = all(c.amplification[0] == 0 for c in fcs.channels)
    if datatype == "F" and linear and _flowio_can_delimit(channels, keywords):
        values = np.hstack(
            [
                stored.astype(np.float32, copy=False),
                *(a.values.astype(np.float32)[:, None] for a in added),
            ]
        )
        _write_flowio(path, values, channels, keywords)
        return "flowio"
    if datatype == "F":
        values = np.hstack(
            [
                stored.astype(np.float32, copy=False),
                *(a.values.astype(np.float32)[:, None] for a in added),
            ]
        )
    elif datatype == "I" and max((c.bits for c in fcs.channels), default=8) <= 32:
        width = next(w for w in (8, 16, 32) if w >= max(c.bits for c in fcs.channels))
        top = max((int(a.values.max()) for a in added if n), default=0)
        while top >= 2**width:
            width *= 2
        dtype = f"u{width // 8}"
        values = np.hstack(
            [stored.astype(dtype), *(a.values.astype(dtype)[:, None] for a in added)]
        )
    else:  # float64, ASCII and integers wider than 32 bits: float64 holds them exactly
        values = np.hstack(
            [stored.astype(np.float64), *(a.values.astype(np.float64)[:, None] for a in added)]
        )
    write_data_set(path, values, channels, [(_fcs_name(k), v) for k, v in keywords.items()])
    return "cytomsc"


def _kept(key: str, par: int) -> bool:
    """A keyword the export copies: not one describing the DATA layout or the channels (the
    writer sets those), nor a per-parameter keyword of an index beyond $PAR (it would describe
    an added channel)."""
    if key in STRUCTURAL or _OWN_PARAMETER.match(key):
        return False
    m = _PARAMETER.match(key)
    return not (m and int(m.group(1)) > par)


def _is_number(text: str) -> bool:
    try:
        return bool(np.isfinite(float(text)))
    except ValueError:
        return not text.strip()  # blank: FlowIO reads it as 1


def _fcs_name(key: str) -> str:
    from flowio.fcs_keywords import FCS_STANDARD_OPTIONAL_KEYWORDS

    standard = key in FCS_STANDARD_OPTIONAL_KEYWORDS or _STANDARD_PARAMETER.match(key)
    return ("$" if standard else "") + key.upper()


def _flowio_can_delimit(channels: list[ChannelText], keywords: dict[str, str]) -> bool:
    texts = [t for c in channels for t in (c.pnn, c.pns, c.pnr, c.png)] + list(keywords.values())
    return (
        not any(t.startswith("/") or t.endswith("/") for t in texts)
        and all(c.pnn.strip() for c in channels)
        and not any("/" in k for k in keywords)
    )


def _write_flowio(
    path: Path, values: np.ndarray, channels: list[ChannelText], keywords: dict[str, str]
) -> None:
    import flowio

    meta = {k: v or " " for k, v in keywords.items()}  # FCS forbids empty values; blank reads
    # back as the reader's "" (values are stripped)
    for j, c in enumerate(channels, start=1):
        meta[f"p{j}r"] = c.pnr
        meta[f"p{j}g"] = c.png
    data = array("f")
    data.frombytes(np.ascontiguousarray(values, dtype="<f4").tobytes())
    if sys.byteorder == "big":  # create_fcs declares $BYTEORD 1,2,3,4 and writes native order
        data.byteswap()
    try:
        with open(path, "wb") as fh:
            flowio.create_fcs(
                fh,
                data,
                [c.pnn for c in channels],
                opt_channel_names=[c.pns for c in channels],
                metadata_dict=meta,
            )
    except OSError as err:
        raise CytomscError(f"cannot write: {err.strerror or err}", path) from None
