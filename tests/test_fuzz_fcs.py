"""Fuzzing the reader: mutated FCS files either read or raise FcsReadError, each within 2 s.

Mutations of valid files (FlowIO-written float data, 24-bit and 16-bit integer data, several data
sets): HEADER offsets, TEXT keyword values (re-packed with consistent offsets and patched in place),
TEXT delimiters, truncation, byte flips and inserted/deleted bytes. One seeded numpy Generator
drives them all, so a failure names a case that reproduces.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from test_fcs import assemble, int_fcs, split_fcs, valid_fcs

from cytomsc.errors import FcsReadError
from cytomsc.fcs import read_fcs, read_text

SEED = 20240611
CASES_PER_FAMILY = 200  # 6 families -> 1,200 cases

KEYWORDS = ["$TOT", "$PAR", "$P1B", "$P2B", "$P1R", "$P2E", "$P1N", "$P3N", "$BYTEORD",
            "$DATATYPE", "$BEGINDATA", "$ENDDATA", "$NEXTDATA", "$TIMESTEP", "$SPILLOVER",
            "$MODE", "$P1G", "$BEGINANALYSIS", "$ENDANALYSIS"]
VALUES = ["", "0", "-1", "1", "3", "7", "24", "64", "1e12", "1000000000000", "99999999999999999999",
          "nan", "inf", "abc", "4,3,2,1", "1,2", "3,4,1,2", "I", "F", "D", "A", "U", "0,0", "4,0",
          "4", ",", "1e308,1", "-5,-5", "2,FSC-A,SSC-A,1,0,0,1", "1,FSC-A", "FSC-A", "é", "\x00"]


def _bases() -> list[bytes]:
    rng = np.random.default_rng(SEED)
    float_file, _ = valid_fcs(n_events=20, names=("FSC-A", "SSC-A", "FITC-A", "Time"),
                              metadata={"$SPILLOVER": "2,SSC-A,FITC-A,1,0.1,0.02,1",
                                        "$TIMESTEP": "0.01"})
    int24 = int_fcs(rng.integers(0, 2**20, (15, 3)), [24, 24, 24], [1024, 262144, 2**24])
    mixed = int_fcs(rng.integers(0, 255, (15, 3)), [8, 16, 32], [256, 1024, 2**20], order=">")
    # two data sets: the second starts right after the first ($NEXTDATA is relative)
    second = int_fcs(rng.integers(0, 1000, (5, 3)), [16, 16, 16], [1024] * 3)
    keywords, data = split_fcs(int_fcs(rng.integers(0, 1000, (5, 3)), [16] * 3, [1024] * 3))
    keywords = [(k, "00000000" if k == "$NEXTDATA" else v) for k, v in keywords]
    first = assemble(keywords, data, version="3.0")  # same length once the offset is filled in
    first = assemble([(k, v) if k != "$NEXTDATA" else (k, f"{len(first):08d}")
                      for k, v in keywords], data, version="3.0")
    return [float_file, int24, mixed, first + second]


def _header_offsets(raw: bytes, rng: np.random.Generator) -> bytes:
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
        old = int(raw[10 + 8 * field:18 + 8 * field] or b"0") if raw[10 + 8 * field:18 + 8 *
                                                                     field].strip().isdigit() else 0
        text = f"{max(old + int(rng.integers(-3, 4)), 0):>8}"
    return raw[:10 + 8 * field] + text.encode("latin-1")[:8] + raw[18 + 8 * field:]


def _keyword_value(raw: bytes, rng: np.random.Generator) -> bytes:
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


def _delimiters(raw: bytes, rng: np.random.Generator) -> bytes:
    t0 = int(raw[10:18])
    t1 = int(raw[18:26])
    text = bytearray(raw[t0:t1 + 1])
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
        buf = buf[:t0 + i] + bytes([text[0]]) + buf[t0 + i:]
    else:  # a whole new TEXT delimiter, consistently
        new = int(rng.choice([ord("|"), 12, ord("*"), ord("\\")]))
        for i in spots:
            buf[t0 + i] = new
    return bytes(buf)


def _truncate(raw: bytes, rng: np.random.Generator) -> bytes:
    return raw[:int(rng.integers(0, len(raw)))]


def _flip(raw: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(raw)
    t1 = int(raw[18:26]) if raw[18:26].strip().isdigit() else len(raw)
    for _ in range(int(rng.integers(1, 8))):
        hi = t1 if rng.random() < 0.8 else len(buf)  # mostly HEADER and TEXT
        i = int(rng.integers(0, max(min(hi, len(buf)), 1)))
        buf[i] ^= 1 << int(rng.integers(0, 8))
    return bytes(buf)


def _splice(raw: bytes, rng: np.random.Generator) -> bytes:
    i = int(rng.integers(0, len(raw)))
    n = int(rng.integers(1, 40))
    if rng.random() < 0.5:
        return raw[:i] + raw[i + n:]
    return raw[:i] + rng.integers(0, 256, n, dtype=np.uint8).tobytes() + raw[i:]


FAMILIES = {"header_offsets": _header_offsets, "keyword_values": _keyword_value,
            "delimiters": _delimiters, "truncation": _truncate, "byte_flips": _flip,
            "splices": _splice}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_mutated_files_read_or_fail_cleanly(tmp_path, family):
    rng = np.random.default_rng([SEED, list(FAMILIES).index(family)])
    bases = _bases()
    mutate = FAMILIES[family]
    problems, outcomes = [], {"read": 0, "error": 0}
    path = tmp_path / "case.fcs"
    for case in range(CASES_PER_FAMILY):
        raw = mutate(bases[case % len(bases)], rng)
        path.write_bytes(raw)
        for func in (read_fcs, read_text):
            start = time.perf_counter()
            try:
                func(path)
                outcomes["read"] += func is read_fcs
            except FcsReadError as err:
                outcomes["error"] += func is read_fcs
                if "\n" in err.message or not err.message.startswith(str(path)):
                    problems.append(f"case {case} {func.__name__}: message {err.message!r}")
            except Exception as err:  # noqa: BLE001 - exactly what the test looks for
                problems.append(f"case {case} {func.__name__}: {type(err).__name__}: {err}")
            elapsed = time.perf_counter() - start
            if elapsed > 2.0:
                problems.append(f"case {case} {func.__name__}: {elapsed:.1f} s")
    assert not problems, f"{len(problems)} bad outcomes, first: {problems[:5]}"
    assert sum(outcomes.values()) == CASES_PER_FAMILY


def test_base_files_are_valid(tmp_path):
    expected_events = [20, 15, 15, 5]
    for i, raw in enumerate(_bases()):
        path = tmp_path / f"base{i}.fcs"
        path.write_bytes(raw)
        assert read_fcs(path).n_events == expected_events[i]
    assert read_fcs(path).n_data_sets == 2
    assert read_fcs(path, data_set=1).n_events == 5
