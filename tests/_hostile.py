"""Hostile FCS files (issue 12): seeded mutants of real exports and of simulated cultures.

``tests/test_fuzz_fcs.py`` imports the mutators and runs :func:`campaign` in a subprocess under
an address-space limit (so a file that asks for gigabytes fails there instead of taking the
machine). The campaign writes every mutant, runs each through ``cytomsc inspect`` (the click
command, in-process) and through ``analyze`` batches (``pipeline.run_batch``, many cultures per
call), and measures each file: wall time, and peak resident memory beyond what was resident
before it (:class:`PeakMemory`). It returns a report of counts and problems; the test asserts on
it.

By hand, with more mutants or another seed::

    python tests/_hostile.py --mutants 20000 --seed 7 --corpus ../shared/fcs-corpus

Mutants are made from the bytes of a base file by one family of edits, all driven by one seeded
``numpy`` Generator, so a problem names a case (seed, index, family, base) that reproduces.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from test_fcs import assemble, split_fcs  # noqa: E402

TIME_LIMIT = 10.0  # seconds per file (inspect) or per culture (analyze)
FIXED_MEMORY = 500 << 20  # bytes allowed beyond 10x the file size


# ---------------------------------------------------------------------------------------------
# A general TEXT splitter (any delimiter, escaped delimiters), for re-packing real exports


@dataclass
class Parsed:
    """The first data set of a file: keywords in order, DATA bytes, version and delimiter."""

    keywords: list[tuple[str, str]]
    data: bytes
    version: str
    delim: str


def parse(raw: bytes) -> Parsed | None:
    """Keywords and DATA of a file's first data set, or None when it does not split cleanly."""
    try:
        t0, t1 = int(raw[10:18]), int(raw[18:26])
        text = raw[t0 : t1 + 1].decode("latin-1")
        delim = text[0]
        body = text[1:]
        if body.endswith(delim):
            body = body[:-1]
        parts = body.split(delim)
        tokens, i = [], 0
        while i < len(parts):
            pieces = [parts[i]]
            while i + 2 < len(parts) and parts[i + 1] == "":
                pieces.append(parts[i + 2])
                i += 2
            tokens.append(delim.join(pieces))
            i += 1
        kw = list(zip(tokens[::2], tokens[1::2], strict=False))
        low = {k.strip().upper(): v for k, v in kw}
        d0 = int(low.get("$BEGINDATA", "0") or 0) or int(raw[26:34])
        d1 = int(low.get("$ENDDATA", "0") or 0) or int(raw[34:42])
        data = raw[d0 : d1 + 1]
        if len(data) != d1 - d0 + 1 or not data:
            return None
        return Parsed(kw, data, raw[3:6].decode("latin-1"), delim)
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


def pack(
    p: Parsed, keywords: list[tuple[str, str]] | None = None, data: bytes | None = None
) -> bytes:
    """HEADER + TEXT + DATA with consistent offsets (latin-1 TEXT, the file's delimiter)."""
    kw = keywords if keywords is not None else p.keywords
    d = p.delim
    safe = [
        (k.replace(d, d + d), v.replace(d, d + d) or " ")
        for k, v in kw
        if k.strip().upper() != "$NEXTDATA"
    ] + [("$NEXTDATA", "0")]
    version = p.version if p.version in ("2.0", "3.0", "3.1", "3.2") else "3.0"
    return assemble(
        safe, p.data if data is None else data, version=version, delim=d, encoding="latin-1"
    )


def _get(kw: list[tuple[str, str]], key: str) -> str | None:
    for k, v in kw:
        if k.strip().upper() == key:
            return v
    return None


def _set(kw: list[tuple[str, str]], key: str, value: str | None) -> list[tuple[str, str]]:
    out = [(k, v) for k, v in kw if k.strip().upper() != key]
    return out if value is None else [*out, (key, value)]


def _events(p: Parsed) -> tuple[np.ndarray, str] | None:
    """(events as a writable (n, par) array of the stored dtype, dtype string) for float or
    uniform-width integer data; None for anything else."""
    kw = {k.strip().upper(): v.strip() for k, v in p.keywords}
    try:
        par = int(kw["$PAR"])
        dt = kw.get("$DATATYPE", "").upper()
        order = (
            ">"
            if kw.get("$BYTEORD", "1,2,3,4").replace(" ", "").startswith("4")
            or kw.get("$BYTEORD", "").replace(" ", "") == "2,1"
            else "<"
        )
        bits = {int(kw[f"$P{i}B"]) for i in range(1, par + 1)}
    except (KeyError, ValueError):
        return None
    if dt == "F":
        dtype = f"{order}f4"
    elif dt == "D":
        dtype = f"{order}f8"
    elif dt == "I" and len(bits) == 1 and next(iter(bits)) in (16, 32):
        dtype = f"{order}u{next(iter(bits)) // 8}"
    else:
        return None
    size = np.dtype(dtype).itemsize * par
    n = len(p.data) // size
    if n == 0:
        return None
    return np.frombuffer(p.data[: n * size], dtype=dtype).reshape(n, par).copy(), dtype


def _with_events(p: Parsed, ev: np.ndarray, kw: list[tuple[str, str]] | None = None) -> bytes:
    kw = _set(kw if kw is not None else p.keywords, "$TOT", str(ev.shape[0]))
    return pack(p, kw, ev.tobytes())


# ---------------------------------------------------------------------------------------------
# Mutators: (raw bytes, rng) -> bytes. The first six are the reader fuzz's (test_fuzz_fcs.py).

KEYWORDS = [
    "$TOT",
    "$PAR",
    "$P1B",
    "$P2B",
    "$P1R",
    "$P2E",
    "$P1N",
    "$P3N",
    "$BYTEORD",
    "$DATATYPE",
    "$BEGINDATA",
    "$ENDDATA",
    "$NEXTDATA",
    "$TIMESTEP",
    "$SPILLOVER",
    "$MODE",
    "$P1G",
    "$BEGINANALYSIS",
    "$ENDANALYSIS",
]
VALUES = [
    "",
    "0",
    "-1",
    "1",
    "3",
    "7",
    "24",
    "64",
    "1e12",
    "1000000000000",
    "99999999999999999999",
    "nan",
    "inf",
    "abc",
    "4,3,2,1",
    "1,2",
    "3,4,1,2",
    "I",
    "F",
    "D",
    "A",
    "U",
    "0,0",
    "4,0",
    "4",
    ",",
    "1e308,1",
    "-5,-5",
    "2,FSC-A,SSC-A,1,0,0,1",
    "1,FSC-A",
    "FSC-A",
    "é",
    "\x00",
]


def header_offsets(raw: bytes, rng: np.random.Generator) -> bytes:
    field = int(rng.integers(0, 6))
    choice = rng.integers(0, 5)
    if choice == 0:
        text = " " * 8
    elif choice == 1:
        text = f"{int(rng.integers(0, len(raw) + 50)):>8}"
    elif choice == 2:
        text = f"{int(rng.integers(0, 99_999_999)):>8}"
    elif choice == 3:
        text = "".join(chr(int(c)) for c in rng.integers(32, 127, 8))
    else:
        old = (
            int(raw[10 + 8 * field : 18 + 8 * field] or b"0")
            if raw[10 + 8 * field : 18 + 8 * field].strip().isdigit()
            else 0
        )
        text = f"{max(old + int(rng.integers(-3, 4)), 0):>8}"
    return raw[: 10 + 8 * field] + text.encode("latin-1")[:8] + raw[18 + 8 * field :]


def keyword_values(raw: bytes, rng: np.random.Generator) -> bytes:
    try:
        keywords, data = split_fcs(raw)
    except ValueError:
        return raw
    key = KEYWORDS[int(rng.integers(0, len(KEYWORDS)))]
    value = VALUES[int(rng.integers(0, len(VALUES)))]
    if rng.random() < 0.5:  # re-pack with consistent offsets
        out = [(k, value if k == key else v) for k, v in keywords]
        if key not in dict(keywords):
            out.append((key, value))
        if rng.random() < 0.2:
            out = [kv for kv in out if kv[0] != key]  # or drop it
        return assemble(out, data, encoding="latin-1")
    old = dict(keywords).get(key)  # patch in place: offsets now off
    if old is None:
        return raw
    return raw.replace(f"/{key}/{old}/".encode(), f"/{key}/{value}/".encode("latin-1"), 1)


def delimiters(raw: bytes, rng: np.random.Generator) -> bytes:
    t0 = int(raw[10:18])
    t1 = int(raw[18:26])
    text = bytearray(raw[t0 : t1 + 1])
    spots = [i for i, b in enumerate(text) if b == text[0]]
    op = rng.integers(0, 4)
    buf = bytearray(raw)
    if op == 0:  # change the delimiter character at the start only
        buf[t0] = int(rng.choice([ord("|"), ord("\\"), ord("*"), 12, 0, ord("$"), ord(" ")]))
    elif op == 1:  # replace some delimiters by another byte
        for i in rng.choice(spots, size=min(3, len(spots)), replace=False):
            buf[t0 + int(i)] = int(rng.integers(0, 256))
    elif op == 2:  # double a delimiter (an escaped one in the middle of a value)
        i = int(rng.choice(spots))
        buf = buf[: t0 + i] + bytes([text[0]]) + buf[t0 + i :]
    else:  # a whole new TEXT delimiter, consistently
        new = int(rng.choice([ord("|"), 12, ord("*"), ord("\\")]))
        for i in spots:
            buf[t0 + i] = new
    return bytes(buf)


def truncation(raw: bytes, rng: np.random.Generator) -> bytes:
    return raw[: int(rng.integers(0, len(raw)))]


def byte_flips(raw: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(raw)
    t1 = int(raw[18:26]) if raw[18:26].strip().isdigit() else len(raw)
    for _ in range(int(rng.integers(1, 8))):
        hi = t1 if rng.random() < 0.8 else len(buf)  # mostly HEADER and TEXT
        i = int(rng.integers(0, max(min(hi, len(buf)), 1)))
        buf[i] ^= 1 << int(rng.integers(0, 8))
    return bytes(buf)


def splices(raw: bytes, rng: np.random.Generator) -> bytes:
    i = int(rng.integers(0, len(raw)))
    n = int(rng.integers(1, 40))
    if rng.random() < 0.5:
        return raw[:i] + raw[i + n :]
    return raw[:i] + rng.integers(0, 256, n, dtype=np.uint8).tobytes() + raw[i:]


READER_FAMILIES = {
    "header_offsets": header_offsets,
    "keyword_values": keyword_values,
    "delimiters": delimiters,
    "truncation": truncation,
    "byte_flips": byte_flips,
    "splices": splices,
}


def segment_cut(raw: bytes, rng: np.random.Generator) -> bytes:
    """Truncated at a segment boundary (HEADER, TEXT start/end, DATA start/end) +- 1 byte."""
    cuts = [0, 1, 57, 58, 59]
    for a, b in ((10, 18), (18, 26), (26, 34), (34, 42)):
        try:
            cuts.append(int(raw[a:b]))
        except ValueError:
            pass
    at = int(rng.choice(cuts)) + int(rng.integers(-1, 2))
    return raw[: max(at, 0)]


def _channel(kw: list[tuple[str, str]], rng: np.random.Generator) -> int:
    try:
        par = int((_get(kw, "$PAR") or "1").strip())
    except ValueError:
        par = 1
    return int(rng.integers(1, max(par, 1) + 1))


ANALYSIS_VALUES = {
    "R": ["1e306", "1e-300", "0", "-5", "1", "4294967297", "1e12", "3.5"],
    "G": ["1e-300", "1e300", "0", "-1", "1e-30", "nan", "1e-8"],
    "E": ["20,1e300", "4,1e-300", "4,0", "0,5", "20,1", "2,0.001"],
    "TIMESTEP": ["1e308", "1e-308", "0", "-1", "1e300", "inf", "1e-300"],
}


def analysis_keywords(raw: bytes, rng: np.random.Generator) -> bytes:
    """A keyword the analysis reads ($PnR, $PnG, $PnE, $TIMESTEP, names, labels, spillover) set
    to an extreme or conflicting value, re-packed with consistent offsets."""
    p = parse(raw)
    if p is None:
        return raw
    kw = list(p.keywords)
    what = int(rng.integers(0, 8))
    n = _channel(kw, rng)
    if what <= 2:  # $PnR, $PnG, $PnE of one channel or all of them
        letter = "RGE"[what]
        value = str(rng.choice(ANALYSIS_VALUES[letter]))
        targets = [n] if rng.random() < 0.6 else range(1, int(_get(kw, "$PAR") or 1) + 1)
        for j in targets:
            kw = _set(kw, f"$P{j}{letter}", value)
    elif what == 3:
        kw = _set(kw, "$TIMESTEP", str(rng.choice(ANALYSIS_VALUES["TIMESTEP"])))
    elif what == 4:  # channel names: duplicates, scatter or time renamed or taken away
        value = str(rng.choice(["FSC-A", "FSC-W", "SSC-A", "Time", "FSC-H", "X", "time", "FSC"]))
        kw = _set(kw, f"$P{n}N", value)
    elif what == 5:  # marker labels: one marker in two channels, a positive "cocktail", none
        other = _channel(kw, rng)
        label = _get(kw, f"$P{other}S") or "CD90"
        value = str(rng.choice([label, "CD90", "CD90/CD73", "CD45 CD34", "IgG1 CD90", "CD14"]))
        kw = _set(kw, f"$P{n}S", value)
    elif what == 6:  # spillover: NaN, singular, unknown names, huge n, not a matrix
        names = [_get(kw, f"$P{j}N") or "X" for j in (1, 2)]
        value = str(
            rng.choice(
                [
                    f"2,{names[0]},{names[1]},1,nan,0,1",
                    f"2,{names[0]},{names[1]},1,1,1,1",
                    "2,NOPE,ALSO,1,0,0,1",
                    "1000000,A",
                    "inf,A",
                    f"2,{names[0]},{names[0]},1,0,0,1",
                    f"1,{names[0]},1e308",
                    f"2,{names[0]},{names[1]},1,-1e308,1e308,1",
                ]
            )
        )
        kw = _set(kw, "$SPILLOVER" if rng.random() < 0.5 else "$SPILL", value)
    else:  # FCS 3.2 channel types
        kw = _set(kw, f"$P{n}DATATYPE", str(rng.choice(["F", "D", "I", "Q", ""])))
    return pack(p, kw)


def data_values(raw: bytes, rng: np.random.Generator) -> bytes:
    """DATA edited (float or uniform integer data): a channel constant, a few float steps wide,
    mostly one value, NaN or infinite, huge, negative; every event NaN; or only k events."""
    p = parse(raw)
    got = _events(p) if p is not None else None
    if got is None:  # DATA this module cannot decode (24-bit, ASCII): edit a keyword instead
        return analysis_keywords(raw, rng)
    ev, dtype = got
    n, par = ev.shape
    j = int(rng.integers(0, par))
    is_float = dtype[1] == "f"
    what = int(rng.integers(0, 9))
    if what == 0:  # a constant channel
        ev[:, j] = (
            rng.choice([0, 1, 523.7, 262143])
            if not is_float
            else rng.choice([0.0, 1.0, 523.7, 1e30, -1e30, 3e38, 1e-40])
        )
    elif what == 1 and is_float:  # a few float steps wide
        base = ev.dtype.type(rng.choice([523.7, 1.0, 1e20]))
        steps = rng.integers(0, 4, n)
        ev[:, j] = base + steps * np.spacing(base)
    elif what == 2:  # mostly one value (the CD90), a tail of the original values
        keep = rng.random(n) < rng.choice([0.0005, 0.002, 0.01, 0.03])
        value = ev[int(rng.integers(0, n)), j]
        ev[~keep, j] = value
        if is_float:
            near = rng.random(n) < 0.002
            ev[near, j] = np.nextafter(ev.dtype.type(value), ev.dtype.type(np.inf))
    elif what == 3 and is_float:  # NaN / inf, some or all events of a channel
        share = rng.choice([0.01, 0.5, 1.0])
        ev[rng.random(n) < share, j] = rng.choice([np.nan, np.inf, -np.inf])
    elif what == 4 and is_float:  # every event non-finite
        ev[:, int(rng.integers(0, par))] = np.nan
    elif what == 5 and is_float:  # huge or tiny values everywhere
        ev *= ev.dtype.type(rng.choice([1e30, 1e-30, -1.0]))
    elif what == 6:  # only k events
        k = int(rng.choice([0, 1, 2, 3, 5, 20, 60, 150, 400]))
        ev = ev[:k]
    elif what == 7:  # all channels constant
        ev[:] = ev[:1]
    else:  # events shuffled in time, or time reversed
        ev = ev[rng.permutation(n)] if rng.random() < 0.5 else ev[::-1]
    return _with_events(p, np.ascontiguousarray(ev))


def text_bloat(raw: bytes, rng: np.random.Generator) -> bytes:
    """A long TEXT: one value full of escaped delimiters, or thousands of keywords."""
    p = parse(raw)
    if p is None:
        return raw
    size = int(rng.choice([20_000, 100_000, 300_000]))
    if rng.random() < 0.5:
        value = (p.delim * int(rng.integers(1, 4)) + "ab") * (size // 4)
        kw = [*p.keywords, ("BLOAT", value)]
    else:
        kw = [*p.keywords, *((f"K{i}", "v" * int(rng.integers(1, 30))) for i in range(size // 20))]
    return pack(p, kw)


def nextdata_chain(raw: bytes, rng: np.random.Generator) -> bytes:
    """k HEADERs chained by $NEXTDATA over one TEXT (the issue's attack), or k whole copies."""
    p = parse(raw)
    if p is None:
        return raw
    k = int(rng.choice([2, 5, 50, 300, 1001, 1200]))
    if rng.random() < 0.5:  # headers 58 bytes apart, all pointing at one TEXT after them
        single = pack(p, _set(p.keywords, "$NEXTDATA", None))
        text_at = 58 * k
        head = b""
        for i in range(k):
            base = 58 * i
            t0, t1 = int(single[10:18]), int(single[18:26])
            d0, d1 = int(single[26:34]), int(single[34:42])
            shift = text_at - 58  # TEXT (and DATA) now start after the k headers
            h = (
                single[:10]
                + f"{t0 + shift - base:>8}{t1 + shift - base:>8}"
                f"{d0 + shift - base:>8}{d1 + shift - base:>8}".encode()
                + single[42:58]
            )
            head += h
        body = single[58:].replace(
            b"$NEXTDATA" + p.delim.encode() + b"0", b"$NEXTDATA" + p.delim.encode() + b"58", 1
        )
        return head + body
    out = b""
    copies = [pack(p) for _ in range(min(k, 40))]
    for i, c in enumerate(copies):
        nxt = len(c) if i < len(copies) - 1 else 0
        c = c.replace(
            f"{p.delim}$NEXTDATA{p.delim}0{p.delim}".encode(),
            f"{p.delim}$NEXTDATA{p.delim}{nxt}{p.delim}".encode(),
            1,
        )
        out += c
    return out


ANALYSIS_FAMILIES = {
    "segment_cut": segment_cut,
    "analysis_keywords": analysis_keywords,
    "data_values": data_values,
    "text_bloat": text_bloat,
    "nextdata_chain": nextdata_chain,
}
FAMILIES = {**READER_FAMILIES, **ANALYSIS_FAMILIES}
# analysis families are drawn more often: they are the ones whose files still read
WEIGHTS = {
    **{f: 1.0 for f in READER_FAMILIES},
    "segment_cut": 0.5,
    "analysis_keywords": 3.0,
    "data_values": 3.0,
    "text_bloat": 0.5,
    "nextdata_chain": 0.5,
}


# ---------------------------------------------------------------------------------------------
# Base files


@dataclass
class Base:
    """A file to mutate; ``controls`` are unmutated files of the same culture (simulated)."""

    name: str
    raw: bytes
    kind: str  # "simulated" | "corpus"
    controls: list[tuple[str, bytes]]
    events: int


def simulated_bases(work: Path, seed: int) -> list[Base]:
    """Small simulated stained tubes of every instrument style (float and integer data), each
    with its culture's isotype control beside it."""
    from cytomsc.simulate import CultureDesign, simulate_culture

    designs = [
        ("diva", "isct-8c"),
        ("accuri", "isct-4c"),
        ("macsquant", "isct-8c"),
        ("generic", "isct-4c"),
    ]
    bases = []
    for i, (style, layout) in enumerate(designs):
        d = CultureDesign(
            f"sim_{style}",
            style=style,
            layout=layout,
            n_events=700,
            controls=("isotype",),
            seed_offset=900 + i,
        )
        tubes = simulate_culture(d, seed)
        folder = work / "bases" / d.name
        stained = next(t for t in tubes if t.role == "stained")
        control = next(t for t in tubes if t.role == "isotype")
        sp, cp = stained.write(folder), control.write(folder)
        bases.append(
            Base(
                d.name,
                sp.read_bytes(),
                "simulated",
                [(cp.name, cp.read_bytes())],
                len(stained.events),
            )
        )
    return bases


def corpus_bases(corpus: Path | None, events: int = 1_500) -> list[Base]:
    """Every file of the corpus (the unreadable ones too). A file with more than ``events``
    events whose DATA this module can re-pack is cut to its first ``events`` events, its TEXT
    kept: small files, so that every mutant can also go through an analysis."""
    if corpus is None:
        return []
    expected = json.loads((corpus / "expected.json").read_text())
    out = []
    for name in sorted(expected):
        raw = (corpus / name).read_bytes()
        n = expected[name]["events"] if expected[name] else 0
        p = parse(raw) if n > events else None
        cut = _first_events(p, events) if p is not None else None
        if cut is not None:
            raw, n = cut, events
        out.append(Base(name.replace("/", "__"), raw, "corpus", [], n))
    return out


def _first_events(p: Parsed, events: int) -> bytes | None:
    """The file with its first ``events`` events only (any fixed-width binary DATA: 24-bit
    integers included), its TEXT otherwise kept; None for ASCII or unreadable keywords."""
    kw = {k.strip().upper(): v.strip() for k, v in p.keywords}
    try:
        par = int(kw["$PAR"])
        bits = [int(kw[f"$P{i}B"]) for i in range(1, par + 1)]
    except (KeyError, ValueError):
        return None
    dt = kw.get("$DATATYPE", "").upper()
    if dt in ("F", "D"):
        bits = [32 if dt == "F" else 64] * par
    elif dt != "I" or any(b % 8 for b in bits):
        return None
    nbytes = events * sum(bits) // 8
    if len(p.data) < nbytes:
        return None
    return pack(p, _set(p.keywords, "$TOT", str(events)), p.data[:nbytes])


def good_culture(work: Path, seed: int) -> tuple[Path, str]:
    """An intact simulated culture with >= 1,000 gated events and its true verdict."""
    from cytomsc.simulate import CultureDesign, simulate_culture, truth_of

    d = CultureDesign(
        "good_reference",
        style="diva",
        layout="isct-8c",
        n_events=2500,
        controls=("isotype",),
        seed_offset=950,
    )
    tubes = simulate_culture(d, seed)
    folder = work / "good" / d.name
    for t in tubes:
        t.write(folder)
    return folder, truth_of(d, tubes)["expected_verdict"]


# ---------------------------------------------------------------------------------------------
# The campaign


@dataclass
class Mutant:
    index: int
    family: str
    base: Base
    path: Path
    size: int
    readable: bool | None = None
    read_error: str | None = None


def make_mutants(bases: list[Base], n: int, seed: int, work: Path) -> list[Mutant]:
    rng = np.random.default_rng([seed, 12])
    names = list(FAMILIES)
    weights = np.array([WEIGHTS[f] for f in names])
    weights /= weights.sum()
    simulated = [b for b in bases if b.kind == "simulated"]
    corpus = [b for b in bases if b.kind == "corpus"]
    mutants = []
    for i in range(n):
        # half the mutants from simulated cultures (controls beside them), half from the corpus
        pool = corpus if corpus and i % 2 else simulated
        base = pool[(i // 2) % len(pool)]
        family = names[int(rng.choice(len(names), p=weights))]
        try:
            raw = FAMILIES[family](base.raw, rng)
        except (ValueError, IndexError):  # a family that does not apply to this base
            raw = truncation(base.raw, rng)
            family = "truncation"
        folder = work / "mutants" / f"m{i:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"m{i:05d}_{base.name}.fcs"
        path.write_bytes(raw)
        mutants.append(Mutant(i, family, base, path, len(raw)))
    return mutants


class PeakMemory:
    """Peak resident memory since the last ``reset()``, beyond what was resident then.

    Linux: the kernel's own high-water mark (VmHWM), reset by writing 5 to
    /proc/self/clear_refs: it sees every allocation (numpy, C libraries) at no cost. Elsewhere:
    tracemalloc (numpy reports its buffers to it), about three times slower.
    """

    def __init__(self) -> None:
        self.proc = Path("/proc/self/clear_refs")
        try:
            self.proc.write_text("5")
            self._field("VmHWM")
        except (OSError, ValueError):
            self.proc = None
            tracemalloc.start()
        self.base = 0
        self.reset()

    @staticmethod
    def _field(name: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
        raise ValueError(name)

    def reset(self) -> None:
        if self.proc is not None:
            self.proc.write_text("5")
            self.base = self._field("VmRSS")
        else:
            tracemalloc.reset_peak()
            self.base = tracemalloc.get_traced_memory()[0]

    def peak(self) -> int:
        if self.proc is not None:
            return self._field("VmHWM") - self.base
        return tracemalloc.get_traced_memory()[1] - self.base

    def close(self) -> None:
        if self.proc is None:
            tracemalloc.stop()


MEMORY: PeakMemory | None = None


def _measure(func, *args, **kwargs) -> tuple[object, float, int, BaseException | None]:
    """(result, seconds, peak bytes beyond the start, exception) of one call."""
    assert MEMORY is not None
    MEMORY.reset()
    start = time.perf_counter()
    result, error = None, None
    try:
        result = func(*args, **kwargs)
    except BaseException as err:  # noqa: BLE001 - what the campaign looks for
        error = err
    return result, time.perf_counter() - start, MEMORY.peak(), error


def _allowed(size: int) -> int:
    return 10 * size + FIXED_MEMORY


def inspect_mutants(mutants: list[Mutant], problems: list[str], stats: dict) -> None:
    """Each mutant through ``cytomsc inspect`` (text and ``--json`` alternately), in-process."""
    from click.testing import CliRunner

    from cytomsc.cli import main
    from cytomsc.errors import FcsReadError
    from cytomsc.fcs import read_fcs

    runner = CliRunner()
    for m in mutants:
        as_json = m.index % 2 == 0
        args = ["inspect", *(["--json"] if as_json else []), str(m.path)]
        result, seconds, peak, error = _measure(runner.invoke, main, args)
        tag = f"inspect m{m.index:05d} ({m.family} of {m.base.name})"
        stats["max_seconds"] = max(stats["max_seconds"], seconds)
        stats["max_peak_ratio"] = max(stats["max_peak_ratio"], peak / _allowed(m.size))
        if error is not None:
            problems.append(f"{tag}: {type(error).__name__}: {error}")
            continue
        if seconds > TIME_LIMIT:
            problems.append(f"{tag}: {seconds:.1f} s")
        if peak > _allowed(m.size):
            problems.append(f"{tag}: {peak / 2**20:.0f} MB for a {m.size / 2**20:.2f} MB file")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            problems.append(
                f"{tag}: traceback {type(result.exception).__name__}: {result.exception}"
            )
            continue
        if result.exit_code not in (0, 1):
            problems.append(f"{tag}: exit {result.exit_code}")
        if "Traceback" in result.output or "internal error" in result.output:
            problems.append(f"{tag}: traceback or internal error in the output")
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        if result.exit_code == 1 and len(lines) != 1:
            problems.append(f"{tag}: {len(lines)} error lines for one file")
        for line in lines:
            if not line.startswith(f"error: {m.path}: "):
                problems.append(f"{tag}: error line does not name the file: {line[:120]!r}")
        if as_json:
            try:
                json.loads(result.stdout, parse_constant=_no_constant)
            except ValueError as err:
                problems.append(f"{tag}: --json output is not JSON ({err})")
        # the reader's own verdict on the file, for the analyze phase
        try:
            read_fcs(m.path)
            m.readable = True
        except FcsReadError as err:
            m.readable, m.read_error = False, err.reason
        except Exception as err:  # noqa: BLE001
            problems.append(f"{tag}: read_fcs raised {type(err).__name__}: {err}")
            m.readable = False
        stats["inspected"] += 1


def _no_constant(name: str) -> None:
    raise ValueError(f"bare {name}")


def analyze_mutants(
    mutants: list[Mutant],
    work: Path,
    seed: int,
    batch_size: int,
    pdf: int,
    cluster: int,
    problems: list[str],
    stats: dict,
) -> None:
    """The mutants through ``analyze`` batches: each mutant is one culture (beside its
    unmutated control, for simulated ones), with one intact culture of known verdict in every
    ``run_batch`` call. The first ``pdf`` mutants form a batch that writes PDFs, the next
    ``cluster`` one that clusters every culture (``--cluster all``), the rest batches of
    ``batch_size`` (the defaults, no PDFs: the PDF and the clustering cost 10x the rest)."""
    from cytomsc.pipeline import Options, run_batch

    good, truth = good_culture(work, seed)
    # once, untimed: imports, matplotlib's font cache, and the intact culture's own verdict
    warm = run_batch([good], work / "warm_out", Options(pdf=True, cluster="all", seed=seed))
    if [c.verdict for c in warm.cultures] != [truth]:
        problems.append(
            f"the intact culture alone: {[c.verdict for c in warm.cultures]}, truth {truth}"
        )
    chosen = mutants
    groups = [(chosen[:pdf], True, "pass"), (chosen[pdf : pdf + cluster], False, "all")]
    groups += [
        (chosen[b : b + batch_size], False, "none")
        for b in range(pdf + cluster, len(chosen), batch_size)
    ]
    for number, (group, with_pdf, clustering) in enumerate(groups):
        if not group:
            continue
        root = work / "batches" / f"b{number:04d}"
        inputs = [good]
        biggest = max(f.stat().st_size for f in good.iterdir())
        copies: dict[int, Path] = {}
        for m in group:
            folder = root / m.path.parent.name
            folder.mkdir(parents=True, exist_ok=True)
            copies[m.index] = folder / m.path.name
            shutil.copyfile(m.path, copies[m.index])
            for name, raw in m.base.controls if m.index % 4 == 0 else []:
                (folder / name).write_bytes(raw)  # a control beside one mutant in four
            biggest = max(biggest, m.size, *(len(r) for _, r in m.base.controls))
        inputs.append(root)
        opts = Options(pdf=with_pdf, jobs=1, cluster=clustering, seed=seed)
        progress = _CultureClock()
        batch, seconds, peak, error = _measure(
            run_batch,
            inputs,
            root.with_name(root.name + "_out"),
            opts,
            "cytomsc analyze (fuzz)",
            progress=progress,
        )
        timings = progress.timings
        tag = f"analyze batch {number} (m{group[0].index:05d}-m{group[-1].index:05d})"
        stats["batches"] += 1
        if error is not None:
            problems.append(f"{tag}: run_batch raised {type(error).__name__}: {error}")
            continue
        for sec, mem in timings:
            stats["max_seconds"] = max(stats["max_seconds"], sec)
            stats["max_peak_ratio"] = max(stats["max_peak_ratio"], mem / _allowed(biggest))
            if sec > TIME_LIMIT:
                problems.append(f"{tag}: a culture took {sec:.1f} s")
            if mem > _allowed(biggest):
                problems.append(
                    f"{tag}: a culture took {mem / 2**20:.0f} MB (largest file "
                    f"{biggest / 2**20:.2f} MB)"
                )
        _check_batch(batch, group, copies, good, truth, tag, problems, stats)


class _CultureClock:
    """A batch listener (``pipeline.Listener``) that times each culture and its peak memory."""

    def __init__(self) -> None:
        self.timings: list[tuple[float, int]] = []
        self.clock = time.perf_counter()

    def started(self, total: int) -> None:
        self.clock = time.perf_counter()  # the first culture's time starts here, not at planning

    def note(self, message: str) -> None:
        pass

    def tick(self) -> None:
        pass

    def finished(self, done: object) -> None:
        assert MEMORY is not None
        now = time.perf_counter()
        self.timings.append((now - self.clock, MEMORY.peak()))
        MEMORY.reset()
        self.clock = now


def _check_batch(
    batch,
    group: list[Mutant],
    copies: dict[int, Path],
    good: Path,
    truth: str,
    tag: str,
    problems: list[str],
    stats: dict,
) -> None:
    by_path: dict[str, list] = {}
    for c in batch.cultures:
        for f in c.files:
            by_path.setdefault(str(Path(f.path)), []).append(c)
        if c.verdict not in ("pass", "fail", "inconclusive"):
            problems.append(f"{tag}: culture {c.culture} has verdict {c.verdict!r}")
    errors: dict[str, list[str]] = {}
    for e in batch.errors:
        msg = e.message
        errors.setdefault(str(Path(e.path)), []).append(msg)
        if "internal error" in msg or "Traceback" in msg:
            problems.append(f"{tag}: {e.path}: {msg[:300]}")
        if "\n" in msg or "\n" in e.path:
            problems.append(f"{tag}: a multi-line error for {e.path}")
        if not Path(e.path).is_file():
            problems.append(f"{tag}: an error names {e.path!r}, not a file: {msg[:200]}")
    goods = [c for c in batch.cultures if c.culture == good.name]
    if len(goods) != 1 or goods[0].verdict != truth:
        problems.append(
            f"{tag}: the intact culture was not analysed right "
            f"({[c.verdict for c in goods]}, truth {truth})"
        )
    for m in group:
        path = str(copies[m.index])
        where = f"{tag}: m{m.index:05d} ({m.family} of {m.base.name})"
        if m.readable:
            if path not in by_path:
                problems.append(
                    f"{where}: reads, but its culture was not analysed "
                    f"({errors.get(path, ['no error'])[0][:200]})"
                )
            else:
                stats["analysed"] += 1
        else:
            mine = errors.get(path, [])
            if len(mine) != 1:
                problems.append(f"{where}: unreadable, {len(mine)} error lines for it")
            stats["refused"] += 1


def campaign(
    n_mutants: int,
    seed: int,
    corpus: Path | None,
    work: Path,
    batch_size: int = 150,
    pdf: int = 12,
    cluster: int = 60,
) -> dict:
    """Make the mutants, run them, and return the report (counts, problems, extremes)."""
    import warnings

    warnings.simplefilter("ignore")
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MPLCONFIGDIR", str(work / "mpl"))
    started = time.perf_counter()
    bases = simulated_bases(work, seed) + corpus_bases(corpus)
    mutants = make_mutants(bases, n_mutants, seed, work)
    problems: list[str] = []
    stats = {
        "mutants": len(mutants),
        "inspected": 0,
        "analysed": 0,
        "refused": 0,
        "batches": 0,
        "max_seconds": 0.0,
        "max_peak_ratio": 0.0,
        "families": {f: sum(m.family == f for m in mutants) for f in FAMILIES},
        "bases": {
            "simulated": sum(b.kind == "simulated" for b in bases),
            "corpus": sum(b.kind == "corpus" for b in bases),
        },
    }
    global MEMORY
    MEMORY = PeakMemory()
    stats["memory"] = "VmHWM" if MEMORY.proc is not None else "tracemalloc"
    try:
        inspect_mutants(mutants, problems, stats)
        stats["readable"] = sum(bool(m.readable) for m in mutants)
        analyze_mutants(mutants, work, seed, batch_size, pdf, cluster, problems, stats)
    finally:
        MEMORY.close()
    stats["analysed_mutants"] = stats["analysed"] + stats["refused"]
    stats["seconds"] = time.perf_counter() - started
    stats["cpu_seconds"] = time.process_time()
    stats["problems"] = problems
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mutants", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--corpus", default="")
    ap.add_argument("--work", default="")
    ap.add_argument("--batch-size", type=int, default=150)
    ap.add_argument("--pdf", type=int, default=12, help="mutants analysed with PDFs")
    ap.add_argument("--cluster", type=int, default=60, help="mutants analysed --cluster all")
    ap.add_argument("--report", default="")
    args = ap.parse_args(argv)
    corpus = Path(args.corpus) if args.corpus else None
    with contextlib.ExitStack() as stack:
        if args.work:
            work = Path(args.work)
        else:
            import tempfile

            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cytomsc-fuzz-")))
        report = campaign(
            args.mutants, args.seed, corpus, work, args.batch_size, args.pdf, args.cluster
        )
    text = json.dumps(report, indent=1)
    if args.report:
        Path(args.report).write_text(text + "\n")
    else:
        print(text)
    return 0 if not report["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
