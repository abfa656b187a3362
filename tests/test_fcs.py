"""The FCS reader: the real corpus, values against independent readers, and damaged files.

Damaged files are built in ``tmp_path`` from a valid FlowIO-written file (helpers below, also used
by ``test_fuzz_fcs.py``); the truth of each case is what we wrote.
"""

from __future__ import annotations

import io
import json
import struct
import warnings

import flowio
import flowkit
import numpy as np
import pytest
from conftest import corpus_path

from cytomsc.errors import FcsReadError
from cytomsc.fcs import read_fcs, read_text, sha256_file

# ---------------------------------------------------------------------------------------------
# Building FCS files in memory


def valid_fcs(
    n_events: int = 50,
    names: tuple[str, ...] = ("FSC-A", "SSC-A", "FITC-A"),
    pns: tuple[str, ...] | None = None,
    seed: int = 0,
    metadata: dict[str, str] | None = None,
    events: np.ndarray | None = None,
) -> tuple[bytes, np.ndarray]:
    """(file bytes, the float32 events written) of a FlowIO-written FCS 3.1 float file."""
    rng = np.random.default_rng(seed)
    if events is None:
        events = rng.uniform(0, 1000, size=(n_events, len(names))).astype(np.float32)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flowio.create_fcs(
            buf,
            events.ravel().tolist(),
            channel_names=list(names),
            opt_channel_names=list(pns) if pns else None,
            metadata_dict=metadata,
        )
    return buf.getvalue(), events


def split_fcs(raw: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """Keywords (in order) and DATA bytes of a simple single-data-set file (no escaped '/')."""
    t0, t1 = int(raw[10:18]), int(raw[18:26])
    d0, d1 = int(raw[26:34]), int(raw[34:42])
    text = raw[t0 : t1 + 1].decode("utf-8")
    parts = text[1:-1].split(text[0])
    return list(zip(parts[::2], parts[1::2], strict=False)), raw[d0 : d1 + 1]


def assemble(
    keywords: list[tuple[str, str]] | dict[str, str],
    data: bytes,
    version: str = "3.1",
    delim: str = "/",
    header_data: bool = True,
    encoding: str = "utf-8",
) -> bytes:
    """HEADER + TEXT + DATA with $BEGINDATA/$ENDDATA (and the HEADER) pointing at ``data``."""
    pairs = keywords.items() if isinstance(keywords, dict) else keywords
    items = [(k, v) for k, v in pairs if k.upper() not in ("$BEGINDATA", "$ENDDATA")]
    text_start = 58
    begin = 0
    for _ in range(5):  # the offsets' own digits move the DATA: iterate to a fixed point
        full = items + [("$BEGINDATA", str(begin)), ("$ENDDATA", str(begin + len(data) - 1))]
        text = (delim + delim.join(f"{k}{delim}{v}" for k, v in full) + delim).encode(encoding)
        if text_start + len(text) == begin:
            break
        begin = text_start + len(text)
    header = f"FCS{version}    {text_start:>8}{text_start + len(text) - 1:>8}"
    header += f"{begin:>8}{begin + len(data) - 1:>8}" if header_data else " " * 16
    header += f"{0:>8}{0:>8}"
    return header.encode("ascii") + text + data


def set_keywords(raw: bytes, **changes: str | None) -> bytes:
    """The same file with keywords changed (``None`` removes one); keys given without '$'."""
    keywords, data = split_fcs(raw)
    out, done = [], set()
    for k, v in keywords:
        key = k.lstrip("$").upper()
        if key in changes:
            done.add(key)
            if changes[key] is not None:
                out.append((k, changes[key]))
        else:
            out.append((k, v))
    out += [(f"${k}", v) for k, v in changes.items() if k not in done and v is not None]
    return assemble(out, data)


def int_fcs(
    values: np.ndarray,
    bits: list[int],
    ranges: list[int],
    order: str = "<",
    extra: dict[str, str] | None = None,
) -> bytes:
    """An integer-data FCS 3.0 file with per-channel widths (8/16/24/32 bits), byte order given."""
    n, par = values.shape
    rows = []
    for row in values:
        chunk = b""
        for v, b in zip(row, bits, strict=False):
            le = int(v).to_bytes(b // 8, "little")
            chunk += le if order == "<" else le[::-1]
        rows.append(chunk)
    kw = {
        "$BYTEORD": "1,2,3,4" if order == "<" else "4,3,2,1",
        "$DATATYPE": "I",
        "$MODE": "L",
        "$PAR": str(par),
        "$TOT": str(n),
        "$NEXTDATA": "0",
    }
    for i in range(par):
        kw.update(
            {
                f"$P{i + 1}N": f"CH{i + 1}",
                f"$P{i + 1}B": str(bits[i]),
                f"$P{i + 1}R": str(ranges[i]),
                f"$P{i + 1}E": "0,0",
            }
        )
    kw.update(extra or {})
    return assemble(kw, b"".join(rows), version="3.0")


def write(tmp_path, name: str, raw: bytes):
    path = tmp_path / name
    path.write_bytes(raw)
    return path


# ---------------------------------------------------------------------------------------------
# The real corpus


def _corpus_cases() -> list[str]:
    root = corpus_path()
    if root is None:
        return ["<corpus absent>"]
    return sorted(json.loads((root / "expected.json").read_text()))


@pytest.mark.parametrize("name", _corpus_cases())
def test_corpus_file_reads_with_expected_counts(corpus, corpus_expected, name):
    expected = corpus_expected[name]
    path = corpus / name
    if expected is None:
        with pytest.raises(FcsReadError) as err:
            read_fcs(path)
        assert str(path) in err.value.message and "\n" not in err.value.message
        return
    data = read_fcs(path)
    assert data.n_events == expected["events"]
    assert len(data.channels) == expected["channels"]
    assert data.events.shape == (expected["events"], expected["channels"])
    assert data.version in ("2.0", "3.0", "3.1")
    assert [c.pnn for c in data.channels] == list(data.sample.pnn_labels)
    # Our own decoder gives exactly what FlowKit gives, wherever FlowKit reads the file at all.
    ours = data
    assert ours.reader == "cytomsc"
    np.testing.assert_array_equal(read_fcs(path, use_flowkit=True).events, data.events)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = flowkit.Sample(path, ignore_offset_error=True)
    except Exception:  # noqa: BLE001 - FlowKit cannot read it: nothing to compare against
        return
    np.testing.assert_array_equal(ours.events, reference.get_events(source="raw"))


def test_flowkit_reader_option_for_well_formed_files(corpus):
    path = corpus / "FlowKit/data/100715.fcs"
    via_flowkit = read_fcs(path, use_flowkit=True)
    assert via_flowkit.reader == "flowkit"
    np.testing.assert_array_equal(via_flowkit.events, read_fcs(path).events)
    # files FlowKit cannot read still come through our decoder with use_flowkit=True
    assert read_fcs(corpus / "FlowCal/test/Data003.fcs", use_flowkit=True).reader == "cytomsc"


# Reference values from an independent reader, FlowCal 1.3.1 (FlowCal.io.FCSData, then
# FlowCal.transform.to_rfi for $PnE log decoding and gain), rows 0, 1, 100 and the last event.
# FlowCal leaves Time unscaled: our Time is FlowCal's times $TIMESTEP (FlowKit's convention).
FLOWCAL_DATA003 = {  # FlowCal/test/Data003.fcs: 24-bit integers, $PnR 1024, FL1-3 4 decades
    "raw": [
        [3, 0, 0, 0, 0, 0, 0, 0],
        [4, 1023, 350, 129, 80, 6, 0, 1],
        [123, 319, 519, 390, 496, 461, 0, 11],
        [1351, 317, 509, 395, 496, 464, 0, 11],
    ],
    "rfi_fl": [
        [1.0, 1.0, 1.0],
        [3.1908489806, 2.0535250265, 1.0554496009],
        [33.3762469429, 86.596432336, 63.2093391751],
        [34.9115193717, 86.596432336, 64.9381631576],
    ],
}
FLOWCAL_CYTEK_XP5_RAW = [[0, 286, 164], [0, 171, 128], [69, 997, 683], [18988, 330, 102]]
FLOWCAL_CYTEK_XP5_RFI_FL4_FL5 = [
    [9910.4585624886, 1018.1517217182],
    [6.6714271804, 1.11397386],
    [2.8643840715, 1.1341944035],
    [4.0679443211, 1.8938420273],
]
# fcsparser/FACSCaliburHTS/Sample_Well_A02.fcs: FCS 2.0, 16-bit, FSC/SSC/FL1-3 log (4 decades)
FLOWCAL_CALIBUR_RFI = [
    [1.8938420273, 2.1096905134, 1.0, 1.0090350448, 1.0, 1.0, 0.0, 0.0],
    [1.2634629177, 7.4317954878, 1.0, 1.3455698581, 1.0090350448, 0.0, 0.0, 0.0],
    [1.0, 2.2875732003, 1.9282185208, 1.0090350448, 1.1444419008, 0.0, 0.0, 2.0],
    [2.1287516618, 29.96142741, 1.0, 1.9282185208, 1.0554496009, 3.0, 0.0, 499.0],
]
# FlowKit/data/multi_dataset_fcs/coulter.lmd, second data set (FCS 3.0, 32-bit), values from
# fcsparser 0.2.8 (fcsparser.parse(path, data_set=1)); first data set (FCS 2.0, SS gain 2,
# log channels 4 decades with offset 0.1024) from FlowCal 1.3.1 to_rfi.
FCSPARSER_COULTER_SET1 = [
    [61056, 131840, 46, 324, 10309, 104, 11912, 0],
    [257280, 378656, 139, 1728, 58688, 354, 58720, 0],
    [228288, 667392, 210, 1734, 56800, 271, 48128, 1],
    [69216, 191296, 98, 591, 17976, 59, 19754, 155],
]
FLOWCAL_COULTER_SET0_RFI = [
    [59.0, 64.0, 0.1024, 0.3151963696, 0.0, 0.0, 10.0, 10.0574401453],
    [251.0, 184.5, 0.1353298831, 1.6793596209, 0.0, 1.0, 57.0, 56.5571421932],
    [222.0, 325.5, 0.2028499741, 1.6793596209, 0.0, 1.0, 55.0, 55.0514429395],
    [67.0, 93.0, 0.1024, 0.5706813851, 0.0, 0.0, 17.0, 17.4087948167],
]
ROWS = [0, 1, 100, -1]


def test_24bit_values_match_flowcal(corpus):
    data = read_fcs(corpus / "FlowCal/test/Data003.fcs")
    ev = data.events[ROWS]
    raw = np.array(FLOWCAL_DATA003["raw"], dtype=float)
    np.testing.assert_allclose(ev[:, 0], raw[:, 0] * 0.1)  # Time x $TIMESTEP 0.100
    np.testing.assert_array_equal(ev[:, [1, 2, 6, 7]], raw[:, [1, 2, 6, 7]])
    np.testing.assert_allclose(ev[:, 3:6], FLOWCAL_DATA003["rfi_fl"], rtol=1e-9)
    assert {c.bits for c in data.channels} == {24}

    xp5 = read_fcs(corpus / "fcsparser/Cytek_xP5/Cytek_xP5.fcs")
    ev = xp5.events[ROWS]
    step = float(xp5.keywords["timestep"])
    np.testing.assert_allclose(ev[:, 0], np.array(FLOWCAL_CYTEK_XP5_RAW)[:, 0] * step)
    np.testing.assert_array_equal(ev[:, 1:3], np.array(FLOWCAL_CYTEK_XP5_RAW)[:, 1:3])
    np.testing.assert_allclose(ev[:, 6:8], FLOWCAL_CYTEK_XP5_RFI_FL4_FL5, rtol=1e-9)


def test_log_amplified_fcs2_values_match_flowcal(corpus):
    data = read_fcs(corpus / "fcsparser/FACSCaliburHTS/Sample_Well_A02.fcs")
    assert data.version == "2.0"
    assert data.channels[0].amplification == (4.0, 1.0)
    np.testing.assert_allclose(data.events[ROWS], FLOWCAL_CALIBUR_RFI, rtol=1e-9)


def test_multi_data_set_file(corpus):
    path = corpus / "FlowKit/data/multi_dataset_fcs/coulter.lmd"
    first = read_fcs(path)
    assert (first.n_data_sets, first.data_set, first.version) == (2, 0, "2.0")
    assert "2 data sets (numbered 0 to 1); read data set 0 (--data-set N)" in first.warnings
    np.testing.assert_allclose(first.events[ROWS], FLOWCAL_COULTER_SET0_RFI, rtol=1e-9)
    second = read_fcs(path, data_set=1)
    assert (second.data_set, second.version, second.n_events) == (1, "3.0", 18110)
    np.testing.assert_array_equal(second.events[ROWS], FCSPARSER_COULTER_SET1)
    assert read_text(path, data_set=1)["p1n"] == "FS"
    with pytest.raises(
        FcsReadError,
        match=r"data set 2 requested but the file holds 2 \(numbered "
        r"0 to 1\)",
    ):
        read_fcs(path, data_set=2)


def test_noncompliant_offsets_use_text(corpus):
    for name in (
        "data_start_offset_discrepancy_example.fcs",
        "data_stop_offset_discrepancy_example.fcs",
    ):
        data = read_fcs(corpus / "FlowKit/data/noncompliant" / name)
        assert data.n_events == 2
        assert any("read with the TEXT offsets" in w for w in data.warnings)
        assert any("TIMESTEP" in w for w in data.warnings)
    blank = read_fcs(corpus / "fcsparser/fake_large_fcs/fake_large_fcs.fcs")
    reference = read_fcs(corpus / "fcsparser/Fortessa/FCS_3.0_Fortessa_PBS_Specimen_001_A1_A01.fcs")
    # the same acquisition; the "fake large" copy has blank HEADER offsets
    np.testing.assert_array_equal(blank.events, reference.events)


def test_spillover_keyword(corpus):
    data = read_fcs(corpus / "fcsparser/fake_large_fcs/fake_large_fcs.fcs")
    names, matrix = data.spillover
    assert names == ["FITC-A", "PerCP-Cy5-5-A", "AmCyan-A", "PE-Texas Red-A"]
    assert matrix.shape == (4, 4)
    assert matrix[0, 2] == pytest.approx(0.16)
    np.testing.assert_array_equal(np.diag(matrix), 1.0)


# ---------------------------------------------------------------------------------------------
# Known truth from files we write


def test_valid_written_file_roundtrip(tmp_path):
    raw, events = valid_fcs(
        pns=("", "", "CD90"),
        metadata={"$SPILLOVER": "2,SSC-A,FITC-A,1,0.1,0.02,1", "TUBE NAME": "MSC1 stained"},
    )
    path = write(tmp_path, "a.fcs", raw)
    data = read_fcs(path)
    np.testing.assert_array_equal(data.events, events.astype(np.float64))
    assert data.reader == "cytomsc" and data.warnings == []
    assert read_fcs(path, use_flowkit=True).reader == "flowkit"
    assert [c.pns for c in data.channels] == ["", "", "CD90"]
    assert data.keywords["tube name"] == "MSC1 stained"
    names, matrix = data.spillover
    assert names == ["SSC-A", "FITC-A"]
    np.testing.assert_allclose(matrix, [[1, 0.1], [0.02, 1]])
    assert read_text(path)["p3s"] == "CD90"
    assert sha256_file(path) == __import__("hashlib").sha256(raw).hexdigest()


def test_pickled_without_its_events_and_read_again(tmp_path):
    """An FcsData crosses processes (a pool worker's files for ``cytomsc.write``): it pickles,
    carries the layout rather than the events, and reads the same events from the file."""
    import pickle

    raw, events = valid_fcs(pns=("", "", "CD90"))
    data = read_fcs(write(tmp_path, "a.fcs", raw))
    copy = pickle.loads(pickle.dumps(data))
    assert copy._events is None and data._events is not None
    np.testing.assert_array_equal(copy.events, events.astype(np.float64))
    assert copy.keywords == data.keywords and copy.n_events == data.n_events
    assert list(copy.sample.pnn_labels) == list(data.sample.pnn_labels)
    data.release_events()
    np.testing.assert_array_equal(data.events, events.astype(np.float64))


def test_24bit_mixed_widths_big_endian_masked(tmp_path):
    rng = np.random.default_rng(1)
    values = np.column_stack(
        [
            rng.integers(0, 2**24, 40),
            rng.integers(0, 2**16, 40),
            rng.integers(0, 2**8, 40),
            rng.integers(0, 2**32, 40),
        ]
    )
    bits, ranges = [24, 16, 8, 32], [1024, 65536, 256, 2**32]
    for order in "<>":
        data = read_fcs(
            write(tmp_path, f"i{order == '<'}.fcs", int_fcs(values, bits, ranges, order))
        )
        expect = values.astype(np.float64)
        expect[:, 0] = values[:, 0] & 1023  # masked by $PnR's bit width (FlowKit's rule)
        np.testing.assert_array_equal(data.events, expect)
        assert [c.bits for c in data.channels] == bits


def test_uniform_24bit_log_gain_and_timestep(tmp_path):
    values = np.array([[0, 512, 100], [10, 1023, 200], [20, 0, 300]])
    extra = {"$P1N": "Time", "$TIMESTEP": "0.01", "$P2E": "4,1", "$P3G": "2.0", "$P1G": "5"}
    data = read_fcs(write(tmp_path, "log.fcs", int_fcs(values, [24] * 3, [1024] * 3, extra=extra)))
    np.testing.assert_allclose(data.events[:, 0], [0.0, 0.1, 0.2])  # Time: step, never gain
    np.testing.assert_allclose(data.events[:, 1], 10 ** (4 * values[:, 1] / 1024))
    np.testing.assert_allclose(data.events[:, 2], values[:, 2] / 2.0)
    assert data.channels[0].gain == 1.0 and data.channels[2].gain == 2.0


def test_enddata_one_byte_too_far(tmp_path):
    raw, events = valid_fcs()
    keywords, data = split_fcs(raw)
    bad = assemble(keywords, data)
    end = int(bad[34:42])
    bad = bad.replace(f"$ENDDATA/{end}/".encode(), f"$ENDDATA/{end + 1}/".encode())
    bad = bad[:34] + f"{end + 1:>8}".encode() + bad[42:]
    bad = bad[:18] + f"{int(bad[18:26]) + 0:>8}".encode() + bad[26:]
    read = read_fcs(write(tmp_path, "plus1.fcs", bad))
    np.testing.assert_array_equal(read.events, events)
    assert any("$ENDDATA one byte past the file" in w for w in read.warnings)


def test_blank_header_and_nonnumeric_timestep(tmp_path):
    raw, events = valid_fcs(names=("Time", "FSC-A"))
    keywords, data = split_fcs(raw)
    path = write(
        tmp_path, "blank.fcs", assemble(keywords + [("$TIMESTEP", "n.a.")], data, header_data=False)
    )
    read = read_fcs(path)
    np.testing.assert_array_equal(read.events, events)  # Time left unscaled
    assert any("HEADER DATA offsets blank" in w for w in read.warnings)
    assert any("TIMESTEP" in w for w in read.warnings)


def test_header_text_disagreement_text_wins(tmp_path):
    raw, events = valid_fcs()
    begin = int(raw[26:34])
    bad = raw[:26] + f"{begin - 7:>8}".encode() + raw[34:]
    read = read_fcs(write(tmp_path, "disagree.fcs", bad))
    np.testing.assert_array_equal(read.events, events)
    assert any("read with the TEXT offsets" in w for w in read.warnings)


def test_non_utf8_and_non_ascii_keywords(tmp_path):
    raw, _ = valid_fcs()
    keywords, data = split_fcs(raw)
    latin = assemble(
        keywords + [("$SRC", "Cellule souche \xe9"), ("$OP", "J\xfcrgen")], data, encoding="latin-1"
    )
    kw = read_fcs(write(tmp_path, "latin.fcs", latin)).keywords
    assert kw["src"] == "Cellule souche é" and kw["op"] == "Jürgen"
    utf = assemble(keywords + [("$SRC", "MSC µ-β 骨髄")], data)
    assert read_fcs(write(tmp_path, "utf.fcs", utf)).keywords["src"] == "MSC µ-β 骨髄"


def test_escaped_delimiter_in_value(tmp_path):
    raw, events = valid_fcs()
    keywords, data = split_fcs(raw)
    path = write(tmp_path, "esc.fcs", assemble(keywords + [("$P3F", "530//30 nm")], data))
    read = read_fcs(path)
    assert read.keywords["p3f"] == "530/30 nm"
    np.testing.assert_array_equal(read.events, events)


def test_duplicate_channel_names_are_renamed(tmp_path):
    raw, events = valid_fcs(names=("FSC-A", "PE-A", "PE-A"))
    read = read_fcs(write(tmp_path, "dup.fcs", raw))
    assert [c.pnn for c in read.channels] == ["FSC-A", "PE-A", "PE-A_3"]
    assert list(read.sample.pnn_labels) == ["FSC-A", "PE-A", "PE-A_3"]
    assert any("duplicate channel names" in w for w in read.warnings)
    np.testing.assert_array_equal(read.events, events)


def test_zero_events_read_with_warning(tmp_path):
    raw, _ = valid_fcs(events=np.zeros((0, 3), dtype=np.float32))
    read = read_fcs(write(tmp_path, "empty_events.fcs", raw))
    assert read.n_events == 0 and read.events.shape == (0, 3)
    assert "0 events" in read.warnings


def test_nonfinite_values_counted(tmp_path):
    events = np.arange(30, dtype=np.float32).reshape(10, 3)
    events[2, 1] = np.nan
    events[5, 0] = np.inf
    events[7, 2] = -np.inf
    read = read_fcs(write(tmp_path, "nan.fcs", valid_fcs(events=events)[0]))
    assert read.nonfinite == 3
    assert any("3 NaN/infinite" in w for w in read.warnings)
    np.testing.assert_array_equal(read.events, events)


# ---------------------------------------------------------------------------------------------
# Bad input: one-line FcsReadError naming the file


def _bad_cases() -> dict[str, tuple[bytes, str]]:
    raw, _ = valid_fcs(n_events=100)
    data_start = int(raw[26:34])
    rng = np.random.default_rng(7)
    return {
        "empty": (b"", "empty file"),
        "random": (rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(), "not an FCS file"),
        "text": (b"sample,CD90,CD73\n1,2,3\n" * 20, "not an FCS file"),
        "cut_in_header": (raw[:30], "too short"),
        "cut_in_text": (raw[:300], "truncated in TEXT"),
        "cut_in_data": (raw[: data_start + 400], "truncated"),
        "text_only": (raw[:data_start], "truncated in DATA"),
        "tot_too_large": (set_keywords(raw, TOT="150"), "$TOT is 150 events"),
        "tot_1e12": (set_keywords(raw, TOT=str(10**12)), "$TOT is 1000000000000 events"),
        "par_fewer": (set_keywords(raw, PAR="2"), "$PAR is 2"),
        "par_more": (set_keywords(raw, PAR="4"), "$PAR is 4"),
        "no_par": (set_keywords(raw, PAR=None), "no $PAR"),
        "bad_datatype": (set_keywords(raw, DATATYPE="Q"), "$DATATYPE"),
        "bad_pnb": (set_keywords(raw, DATATYPE="I", P1B="12"), "$P1B"),
        "bad_pne": (set_keywords(raw, P2E="x,y"), "$P2E"),
        "no_pnr": (set_keywords(raw, P1R=None), "$P1R"),
        "histogram_mode": (set_keywords(raw, MODE="U"), "list-mode"),
        "bad_byteord": (set_keywords(raw, BYTEORD="3,1,4,2"), "$BYTEORD"),
        "bad_header_offset": (raw[:10] + b"   abcde" + raw[18:], "not a number"),
        "text_past_file": (raw[:18] + f"{len(raw) + 5:>8}".encode() + raw[26:], "TEXT"),
    }


@pytest.mark.parametrize("case", sorted(_bad_cases()))
def test_bad_input_one_line_error(tmp_path, case):
    raw, reason = _bad_cases()[case]
    path = write(tmp_path, f"{case}.fcs", raw)
    with pytest.raises(FcsReadError) as err:
        read_fcs(path)
    message = err.value.message
    assert message.startswith(str(path) + ": ")
    assert "\n" not in message and reason in message
    if case not in (
        "cut_in_data",
        "tot_too_large",
        "tot_1e12",
        "par_fewer",
        "par_more",
        "bad_datatype",
        "bad_pnb",
        "bad_pne",
        "no_pnr",
        "histogram_mode",
        "bad_byteord",
        "text_only",
    ):
        with pytest.raises(FcsReadError):
            read_text(path)


def test_corpus_bad_files_reasons(corpus):
    with pytest.raises(FcsReadError, match="not an FCS file"):
        read_fcs(corpus / "fcsparser/corrupted/corrupted.fcs")
    with pytest.raises(FcsReadError, match="truncated in DATA"):
        read_fcs(corpus / "fcsparser/cytek-nl-2000/sample_header.fcs")
    # TEXT alone is still readable for layout purposes
    assert read_text(corpus / "fcsparser/cytek-nl-2000/sample_header.fcs")["cyt"] == "Aurora"


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FcsReadError, match="cannot open"):
        read_fcs(tmp_path / "nope.fcs")
    with pytest.raises(FcsReadError, match="directory"):
        read_fcs(tmp_path)


def test_giant_tot_is_refused_before_reading(tmp_path, monkeypatch):
    raw, _ = valid_fcs()
    path = write(tmp_path, "huge.fcs", set_keywords(raw, TOT=str(10**12)))
    calls = []
    original = np.frombuffer
    monkeypatch.setattr(np, "frombuffer", lambda *a, **k: calls.append(1) or original(*a, **k))
    with pytest.raises(FcsReadError):
        read_fcs(path)
    assert calls == []


def test_struct_sanity_of_helpers():
    # the helper writes what it claims: 24-bit big-endian 0x010203 is bytes 01 02 03
    raw = int_fcs(np.array([[0x010203]]), [24], [2**24], order=">")
    assert raw.endswith(b"\x01\x02\x03")
    assert struct.unpack(">I", b"\x00" + raw[-3:])[0] == 0x010203


# ---------------------------------------------------------------------------------------------
# Hostile files (issue 12): bounded by the file's own size, one-line errors past the caps


def test_zero_events_with_integer_channels_of_mixed_widths(tmp_path):
    path = write(
        tmp_path, "tot0.fcs", int_fcs(np.zeros((0, 3), dtype=int), [8, 16, 32], [256, 1024, 2**20])
    )
    read = read_fcs(path)
    assert read.n_events == 0 and read.events.shape == (0, 3)
    assert [c.bits for c in read.channels] == [8, 16, 32]


def test_escaped_delimiters_are_joined_in_linear_time(tmp_path):
    """400,000 escaped delimiters in one value (1.2 MB of TEXT): joined by repeated
    concatenation this took over 20 s; the issue's bound for any file is 10 s."""
    import time

    raw, events = valid_fcs()
    keywords, data = split_fcs(raw)
    path = write(tmp_path, "escapes.fcs", assemble(keywords + [("BLOAT", "a//" * 400_000)], data))
    start = time.perf_counter()
    read = read_fcs(path)
    assert time.perf_counter() - start < 10.0
    assert read.keywords["bloat"] == "a/" * 400_000
    np.testing.assert_array_equal(read.events, events)


def _headers_over_one_text(raw: bytes, k: int) -> bytes:
    """k HEADERs 58 bytes apart, chained by $NEXTDATA = 58, each pointing at the one TEXT (and
    DATA) that follows them: every data set would be the same TEXT again."""
    keywords, data = split_fcs(raw)
    kw = [(key, v) for key, v in keywords if key not in ("$NEXTDATA", "$BEGINDATA", "$ENDDATA")]
    kw += [("$NEXTDATA", "58"), ("$BEGINDATA", "00000000"), ("$ENDDATA", "00000000")]
    text = ("/" + "".join(f"{key}/{v}/" for key, v in kw)).encode()
    t0, t1 = 58 * k, 58 * k + len(text) - 1
    d0, d1 = t1 + 1, t1 + len(data)
    text = text.replace(b"$BEGINDATA/00000000/", f"$BEGINDATA/{d0:08d}/".encode())
    text = text.replace(b"$ENDDATA/00000000/", f"$ENDDATA/{d1:08d}/".encode())
    heads = [
        f"FCS3.1    {t0 - 58 * i:>8}{t1 - 58 * i:>8}{d0 - 58 * i:>8}{d1 - 58 * i:>8}"
        f"{0:>8}{0:>8}".encode()
        for i in range(k)
    ]
    return b"".join(heads) + text + data


def test_nextdata_chain_over_one_text_reads_that_text_once(tmp_path, monkeypatch):
    """1,000 HEADERs over one TEXT: each data set must start beyond the previous one's TEXT, so
    the chain ends at the second HEADER and the TEXT is parsed once (a 0.95 MB file of this
    shape took 6.2 GB when every data set re-read the TEXT)."""
    from cytomsc import fcs

    raw, events = valid_fcs(metadata={"PADDING": "x" * 20_000, "TEST": str(tmp_path)})
    path = write(tmp_path, "chain.fcs", _headers_over_one_text(raw, 1000))
    calls = []
    original = fcs._parse_text
    monkeypatch.setattr(fcs, "_parse_text", lambda *a: calls.append(1) or original(*a))
    read = read_fcs(path)
    assert read.n_data_sets == 1 and len(calls) == 1
    assert "$NEXTDATA of data set 0 points back into data set 0; ignored" in read.warnings
    np.testing.assert_array_equal(read.events, events)


def test_more_data_sets_than_the_cap_is_an_error(tmp_path):
    from cytomsc.fcs import MAX_DATA_SETS

    raw = int_fcs(np.arange(6).reshape(2, 3), [16] * 3, [1024] * 3)
    keywords, data = split_fcs(raw)
    one = assemble([(k, "00000000" if k == "$NEXTDATA" else v) for k, v in keywords], data)
    step = len(one)  # a fixed-width $NEXTDATA keeps every copy the same length
    linked = one.replace(b"$NEXTDATA/00000000/", f"$NEXTDATA/{step:08d}/".encode())
    for n, ok in ((MAX_DATA_SETS, True), (MAX_DATA_SETS + 1, False)):
        path = write(tmp_path, f"sets{n}.fcs", linked * (n - 1) + one)
        if ok:
            assert read_fcs(path, data_set=n - 1).n_data_sets == n
            continue
        for func in (read_fcs, read_text):
            with pytest.raises(FcsReadError, match=f"more than {MAX_DATA_SETS:,} data sets"):
                func(path)


def test_more_channels_than_the_cap_is_an_error(tmp_path):
    from cytomsc.fcs import MAX_PARAMETERS

    raw, _ = valid_fcs()
    with pytest.raises(FcsReadError, match=f"more than the {MAX_PARAMETERS:,} cytomsc reads"):
        read_fcs(write(tmp_path, "wide.fcs", set_keywords(raw, PAR=str(MAX_PARAMETERS + 1))))


def test_timestep_that_overflows_time_leaves_it_unscaled(tmp_path):
    raw, events = valid_fcs(names=("FSC-A", "SSC-A", "Time"))
    read = read_fcs(write(tmp_path, "step.fcs", set_keywords(raw, TIMESTEP="1e308")))
    assert np.isfinite(read.events).all() and read.nonfinite == 0
    np.testing.assert_array_equal(read.events, events)  # Time unscaled, as written
    assert "$TIMESTEP 1e+308 makes Time overflow; Time left unscaled" in read.warnings


def test_nonfinite_values_of_integer_data_are_counted(tmp_path):
    """A $PnE decoding (or gain) can overflow integer data too: those values are counted, so
    the analysis drops their events like NaN in float data."""
    values = np.array([[10, 2000, 1], [20, 3000, 2], [30, 4000, 3]])
    path = write(
        tmp_path, "overflow.fcs", int_fcs(values, [16] * 3, [4096] * 3, extra={"$P2G": "1e-305"})
    )
    read = read_fcs(path)
    assert read.nonfinite == 3 and not np.isfinite(read.events[:, 1]).any()
    assert "3 NaN/infinite values in the events" in read.warnings


def _fcs32(raw: bytes, types: dict[int, str] | None = None) -> bytes:
    keywords, data = split_fcs(raw)
    extra = [(f"$P{n}DATATYPE", t) for n, t in (types or {}).items()]
    extra += [("$P1TYPE", "Forward_Scatter"), ("$BEGINDATETIME", "2024-01-02T10:00:00")]
    return assemble(keywords + extra, data, version="3.2")


def test_fcs_3_2_is_read_as_flowkit_reads_it(tmp_path):
    raw, events = valid_fcs(names=("FSC-A", "SSC-A", "FITC-A"), pns=("", "", "CD90"))
    path = write(tmp_path, "v32.fcs", _fcs32(raw))
    read = read_fcs(path)
    assert read.version == "3.2" and read.channels[2].pns == "CD90"
    np.testing.assert_array_equal(read.events, events)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal(read.events, flowkit.Sample(path).get_events(source="raw"))


def test_fcs_3_2_channels_of_their_own_data_type(tmp_path):
    """$PnDATATYPE (FCS 3.2 §3.3.41): here an integer file whose second channel is a float and
    third a double; each is decoded as stored."""
    rows, expect = [], []
    for i in range(6):
        a, b, c = i * 100 + 7, 1.5 * i - 2.25, 1e-7 * i
        rows.append(struct.pack("<Hfd", a, b, c))
        expect.append([a, b, c])
    kw = {
        "$BYTEORD": "1,2,3,4",
        "$DATATYPE": "I",
        "$MODE": "L",
        "$PAR": "3",
        "$TOT": "6",
        "$NEXTDATA": "0",
        "$P1N": "FSC-A",
        "$P1B": "16",
        "$P1R": "1024",
        "$P1E": "0,0",
        "$P2N": "FITC-A",
        "$P2B": "32",
        "$P2R": "262144",
        "$P2E": "0,0",
        "$P2DATATYPE": "F",
        "$P3N": "PE-A",
        "$P3B": "64",
        "$P3R": "262144",
        "$P3E": "0,0",
        "$P3DATATYPE": "D",
    }
    read = read_fcs(write(tmp_path, "mixed.fcs", assemble(kw, b"".join(rows), version="3.2")))
    assert read.version == "3.2" and read.n_events == 6
    assert [c.bits for c in read.channels] == [16, 32, 64]
    np.testing.assert_array_equal(read.events, np.array(expect))
    with pytest.raises(FcsReadError, match=r"\$P2DATATYPE 'Q'"):
        read_fcs(
            write(
                tmp_path,
                "badtype.fcs",
                assemble({**kw, "$P2DATATYPE": "Q"}, b"".join(rows), version="3.2"),
            )
        )


def test_text_parsed_once_when_read_twice(tmp_path, monkeypatch):
    """`analyze` reads each file's TEXT for the layout, then the whole file: one parse."""
    from cytomsc import fcs

    raw, _ = valid_fcs(metadata={"TEST": str(tmp_path)})  # a TEXT no other test has parsed
    path = write(tmp_path, "twice.fcs", raw)
    calls = []
    original = fcs._parse_text
    monkeypatch.setattr(fcs, "_parse_text", lambda *a: calls.append(1) or original(*a))
    read_text(path)
    read_fcs(path)
    assert len(calls) == 1
    keywords = read_text(path)
    keywords["par"] = "999"  # callers get their own copy, never the remembered one
    assert read_fcs(path).keywords["par"] == "3"
    path.write_bytes(set_keywords(raw, CYT="Changed"))  # a changed file is parsed again
    assert read_text(path)["cyt"] == "Changed" and len(calls) == 2
