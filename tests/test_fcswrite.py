"""The FCS writer against FlowKit's reader (an independent implementation: FlowIO)."""

from __future__ import annotations

import os
from pathlib import Path

import flowkit as fk
import numpy as np
import pytest

from cytomsc.errors import CytomscError
from cytomsc.fcswrite import header_bytes, spillover_text, write_fcs

PNN = ["FSC-A", "SSC-A", "FITC-A", "PE-A", "Time"]


def _events(n: int = 500, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ev = rng.normal(2000.0, 1500.0, (n, len(PNN)))  # includes negative values
    ev[:, -1] = np.arange(n)
    return ev


def test_float31_round_trip(tmp_path: Path) -> None:
    ev = _events()
    path = tmp_path / "f.fcs"
    write_fcs(
        path,
        ev,
        PNN,
        ["", "", "CD90", "CD73 / NT5E", ""],
        keywords={"$TIMESTEP": "0.01", "TUBE NAME": "Stained", "$SRC": "MSC 1"},
    )
    s = fk.Sample(path)
    assert s.version == "3.1"
    assert s.event_count == 500
    assert s.pnn_labels == PNN
    assert s.pns_labels == ["", "", "CD90", "CD73 / NT5E", ""]
    raw = s.get_events(source="raw")
    np.testing.assert_array_equal(raw[:, :4], ev[:, :4].astype(np.float32))
    np.testing.assert_allclose(raw[:, 4], ev[:, 4] * 0.01)  # FlowKit applies $TIMESTEP
    assert s.metadata["tube name"] == "Stained"
    assert s.metadata["src"] == "MSC 1"
    assert s.metadata["p3e"] == "0,0" and s.metadata["p3g"] == "1"
    assert (raw[:, 2] < 0).any()


@pytest.mark.parametrize(("top", "bits"), [(1024.0, "16"), (65536.0, "16"), (16777216.0, "32")])
def test_int30_round_trip(tmp_path: Path, top: float, bits: str) -> None:
    ev = _events() * (top / 4096.0)
    ev[0, 0] = top * 3  # above $PnR: clipped to $PnR - 1
    path = tmp_path / "i.fcs"
    write_fcs(path, ev, PNN, version="3.0", datatype="I", ranges=[top] * len(PNN))
    s = fk.Sample(path)
    assert s.version == "3.0"
    assert s.metadata["datatype"] == "I" and s.metadata["p1b"] == bits
    expected = np.clip(np.rint(ev), 0, top - 1)
    np.testing.assert_array_equal(s.get_events(source="raw"), expected)
    assert s.get_events(source="raw")[0, 0] == top - 1


def test_spillover_round_trip(tmp_path: Path) -> None:
    names = ["FITC-A", "PE-A"]
    m = np.array([[1.0, 0.2137], [0.0104, 1.0]])
    ev = _events()
    path = tmp_path / "s.fcs"
    write_fcs(path, ev, PNN, spillover=(names, m))
    s = fk.Sample(path)
    parts = s.metadata["spillover"].split(",")
    assert parts[:3] == ["2", "FITC-A", "PE-A"]
    np.testing.assert_array_equal(np.array(parts[3:], dtype=float).reshape(2, 2), m)
    s.apply_compensation(s.metadata["spillover"])
    comp = s.get_events(source="comp")
    raw = s.get_events(source="raw")
    np.testing.assert_allclose(comp[:, 2:4], np.linalg.solve(m.T, raw[:, 2:4].T).T, rtol=1e-9)


def test_header_offsets_and_big_file_rule() -> None:
    h = header_bytes("3.1", (58, 1234), (1235, 99_999_999))
    assert len(h) == 58
    assert h[:10] == b"FCS3.1    "
    assert h[10:58] == (b"      58    1234    1235" + b"99999999" + b"       0       0")
    big = header_bytes("3.0", (58, 1234), (1235, 100_000_000))
    assert big[26:42] == b"       0       0"  # DATA offsets then only in TEXT
    assert big[10:26] == b"      58    1234"


def test_text_offsets_agree_with_header(tmp_path: Path) -> None:
    ev = _events(n=3000)
    path = tmp_path / "o.fcs"
    write_fcs(path, ev, PNN)
    raw = path.read_bytes()
    text_begin, text_end, data_begin, data_end = (
        int(raw[10 + 8 * i : 18 + 8 * i]) for i in range(4)
    )
    assert text_begin == 58 and raw[58:59] == b"/"
    text = raw[text_begin : text_end + 1].decode()
    fields = text[1:-1].split("/")
    kw = dict(zip(fields[0::2], fields[1::2], strict=True))
    assert int(kw["$BEGINDATA"]) == data_begin == text_end + 1
    assert int(kw["$ENDDATA"]) == data_end == len(raw) - 1
    assert data_end - data_begin + 1 == 3000 * len(PNN) * 4


def test_spillover_text_and_escaping(tmp_path: Path) -> None:
    assert spillover_text(["A", "B"], np.eye(2)) == "2,A,B,1,0,0,1"
    path = tmp_path / "e.fcs"
    write_fcs(path, _events(n=10), PNN, keywords={"NOTE": "a/b//c"})
    assert fk.Sample(path).metadata["note"] == "a/b//c"


def test_deterministic_bytes(tmp_path: Path) -> None:
    ev = _events()
    write_fcs(tmp_path / "a.fcs", ev, PNN, keywords={"$DATE": "01-JAN-2025"})
    write_fcs(tmp_path / "b.fcs", ev, PNN, keywords={"$DATE": "01-JAN-2025"})
    assert (tmp_path / "a.fcs").read_bytes() == (tmp_path / "b.fcs").read_bytes()


def test_atomic_write_leaves_old_file_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "x.fcs"
    write_fcs(path, _events(n=10), PNN)
    before = path.read_bytes()

    def broken(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)  # the rename of output.atomic_file
    with pytest.raises(CytomscError, match="x.fcs: cannot write: No space left"):
        write_fcs(path, _events(n=20), PNN)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["x.fcs"]  # no temporary file left behind


def test_bad_input_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(CytomscError, match=r"b\.fcs: events of shape \(5, 3\) do not match 5"):
        write_fcs(tmp_path / "b.fcs", np.zeros((5, 3)), PNN)
    ev = _events(n=5)
    ev[2, 2] = np.nan
    with pytest.raises(CytomscError, match="NaN"):
        write_fcs(tmp_path / "b.fcs", ev, PNN)
    with pytest.raises(CytomscError, match=r"keyword \$PAR is set by the writer"):
        write_fcs(tmp_path / "b.fcs", _events(n=5), PNN, keywords={"$PAR": "9"})
    assert not (tmp_path / "b.fcs").exists()
