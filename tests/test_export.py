"""`--export-events` round trip: the exported FCS reads back, through FlowKit and FlowIO, with the
original file's values (bit for bit for float data), $PnR, $PnE, $PnG and keywords, and gates.xml
counts the same events on the export as on the original.

Checked on every instrument style of the simulator (through `analyze`), on every readable file of
``../shared/fcs-corpus`` and ``../shared/real-fcs`` (through the exporter, and through `analyze`
for real exports that can be gated), and on the limits of FlowIO's writer that keep cytomsc's own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import flowio
import flowkit as fk
import numpy as np
import pytest

from cytomsc.errors import CytomscError
from cytomsc.export import AddedChannel, export_events
from cytomsc.fcs import read_fcs
from cytomsc.fcswrite import STRUCTURAL, ChannelText, write_data_set
from cytomsc.pipeline import Options, run_batch
from cytomsc.simulate import preset, simulate_culture

STYLES = ("diva", "accuri", "macsquant", "generic")
NOT_FCS = {".json", ".md", ".csv", ".xml", ".wsp"}
NOT_FCS_NAMES = {"comp_match", "compmatrix", "compref"}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """FlowIO and FlowKit warn on the corpus's odd files; the values are what is checked."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit for bit (NaN included) for floats, equal for integers."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind == "f" and b.dtype.kind == "f" and a.dtype == b.dtype:
        return bool(np.array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}")))
    return bool(np.array_equal(a, b, equal_nan=True))


def _is_parameter_keyword(key: str) -> bool:
    return bool(re.match(r"^p\d+(b|n|s|r|e|g|datatype)$", key))


def _check_round_trip(original: Path, exported: Path, data_set: int = 0) -> dict[str, object]:
    """Every assertion of the round trip for one file; returns what was compared."""
    src = read_fcs(original, data_set=data_set)
    par = len(src.channels)
    back = read_fcs(exported)
    # cytomsc reads the export with the original's values, channel names and labels
    assert [c.pnn for c in back.channels[:par]] == [c.pnn for c in src.channels]
    assert [c.pns for c in back.channels[:par]] == [c.pns for c in src.channels]
    assert _same(back.events[:, :par], src.events), original
    for a, b in zip(src.channels, back.channels, strict=False):
        assert (b.range, b.amplification, b.gain) == (a.range, a.amplification, a.gain), (
            original,
            a.pnn,
        )
    # FlowKit alone reads the export with the original's pre-processed values
    with _quiet():
        sample = fk.Sample(exported)
    assert _same(sample.get_events(source="raw")[:, :par], src.events), original
    chans = sample.channels.iloc[:par]
    assert [float(r) for r in chans["pnr"]] == [c.range for c in src.channels]
    assert [tuple(e) for e in chans["pne"]] == [c.amplification for c in src.channels]
    # every keyword that does not describe the DATA layout, with its value (FlowIO, under
    # FlowKit, drops every "$" from TEXT and keeps the blanks the reader strips)
    meta = sample.metadata
    for key, value in src.keywords.items():
        if key in STRUCTURAL or _is_parameter_keyword(key):
            continue
        if key == "timestep" and not _numeric(value):
            continue
        assert back.keywords.get(key) == value, (original, key)
        assert meta.get(key.replace("$", ""), "").strip() == value.replace("$", ""), (original, key)
    # FlowIO: the stored values and its own pre-processing agree with its reading of the
    # original, where it can read the original at all
    stored = flowio.FlowData(str(exported)).as_array(preprocess=False)[:, :par]
    outcome = {"flowio_original": False}
    try:
        with _quiet():
            orig = flowio.FlowData(str(original), ignore_offset_error=True)
            orig_stored = orig.as_array(preprocess=False)
    except Exception:  # noqa: BLE001 - FlowIO cannot read several corpus files (24-bit, ...)
        return outcome
    if data_set == 0 and orig_stored.shape == stored.shape:
        outcome["flowio_original"] = True
        assert _same(stored, orig_stored), original
        new = flowio.FlowData(str(exported))
        assert _same(new.as_array()[:, :par], orig.as_array()), original
        for j in range(1, par + 1):
            assert (new.channels[j]["pnr"], new.channels[j]["pne"], new.channels[j]["png"]) == (
                orig.channels[j]["pnr"],
                orig.channels[j]["pne"],
                orig.channels[j]["png"],
            )
    return outcome


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return not text.strip()
    return True


# -- every instrument style of the simulator, through `analyze` --------------------------------
@pytest.fixture(scope="module")
def styles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    """The first validation design of each style (and the Diva integer variant), with the
    release keywords a lab records, analysed with --export-events and --cluster all."""
    data = tmp_path_factory.mktemp("styles")
    chosen, seen = [], set()
    for d in preset("validation"):
        key = (d.style, d.datatype)
        if d.style in STYLES and key not in seen and d.controls:
            seen.add(key)
            chosen.append(
                dataclasses.replace(
                    d, tissue="bone marrow", passage=4, detachment="TrypLE", n_events=4000
                )
            )
    assert {d.style for d in chosen} == set(STYLES)
    for d in chosen:
        folder = data / d.name
        folder.mkdir()
        for tube in simulate_culture(d, seed=0):
            tube.write(folder)
    out = tmp_path_factory.mktemp("styles_out")
    batch = run_batch(
        sorted(p for p in data.iterdir()),
        out,
        Options(jobs=1, pdf=False, export_events=True, cluster="all"),
    )
    assert batch.errors == []
    return data, out, batch


@pytest.mark.slow
def test_every_simulated_style_reads_back_unchanged(styles: tuple) -> None:
    _, out, batch = styles
    types = set()
    for c in batch.cultures:
        for f in c.files:
            exported = out / c.output_name / "events" / Path(f.path).name
            _check_round_trip(Path(f.path), exported)
            kw = read_fcs(exported).keywords
            types.add((read_fcs(f.path).keywords["datatype"], kw["datatype"]))
            assert kw["passage"] == "4" and kw["tissue source"] == "bone marrow"
            assert kw["detachment"] == "TrypLE"
            assert kw["cytomsc_source_sha256"] == f.sha256
    assert types == {("F", "F"), ("I", "I")}  # integer exports stay integer


@pytest.mark.slow
def test_time_and_range_of_the_accuri_export(styles: tuple) -> None:
    """The two faults seen on main: Time scaled by $TIMESTEP twice, $PnR always 262144."""
    _, out, batch = styles
    c = next(c for c in batch.cultures if "accuri" in c.culture)
    f = c.files[0]
    with _quiet():
        orig = fk.Sample(f.path)
        back = fk.Sample(out / c.output_name / "events" / Path(f.path).name)
    t = orig.pnn_labels.index("Time")
    np.testing.assert_array_equal(
        back.get_events(source="raw")[:, t], orig.get_events(source="raw")[:, t]
    )
    fl1 = orig.pnn_labels.index("FL1-A")
    assert back.channels["pnr"][fl1] == orig.channels["pnr"][fl1] == 16777216
    assert (back.get_events(source="raw")[:, fl1] > 262144).any()


@pytest.mark.slow
def test_gate_and_population_channels_stay(styles: tuple) -> None:
    _, out, batch = styles
    for c in batch.cultures:
        for f in c.files:
            with _quiet():
                s = fk.Sample(out / c.output_name / "events" / Path(f.path).name)
            names = list(s.pnn_labels)
            ev = s.get_events(source="raw")
            for step in (g for g in c.gates if g.tube == Path(f.path).name):
                col = ev[:, names.index(f"cytomsc_{step.gate}")]
                assert set(np.unique(col)) <= {0.0, 1.0}
                assert int(col.sum()) == step.count
        if c.heterogeneity is not None:
            stained = out / c.output_name / "events" / c.heterogeneity.tube
            with _quiet():
                s = fk.Sample(stained)
            pop = s.get_events(source="raw")[:, list(s.pnn_labels).index("cytomsc_population")]
            assert set(np.unique(pop)) <= set(range(c.heterogeneity.n_populations + 1))
            assert (pop > 0).sum() == c.heterogeneity.n_events


@pytest.mark.slow
def test_gatingml_counts_the_same_on_export_and_original(styles: tuple) -> None:
    _, out, batch = styles
    for c in batch.cultures:
        strategy = fk.parse_gating_xml(str(out / c.output_name / "gates.xml"))
        ids = sorted({g[0] for g in strategy.get_gate_ids()})
        for f in c.files:
            with _quiet():
                a = strategy.gate_sample(fk.Sample(f.path))
                b = strategy.gate_sample(
                    fk.Sample(out / c.output_name / "events" / Path(f.path).name)
                )
            for g in ids:
                assert a.get_gate_count(g) == b.get_gate_count(g), (c.culture, f.path, g)


# -- real exports ------------------------------------------------------------------------------
def _real_files(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() not in NOT_FCS
        and p.name not in NOT_FCS_NAMES
        and not p.name.startswith("ANSWER")
    )


def _export_all(root: Path, tmp_path: Path) -> tuple[int, int, set[str]]:
    read = checked_flowio = 0
    writers = set()
    for k, path in enumerate(_real_files(root)):
        try:
            src = read_fcs(path)
        except CytomscError:
            continue  # the corpus's broken files: one-line errors, tested elsewhere
        read += 1
        n = src.n_events
        target = tmp_path / f"{k}.fcs"
        writers.add(
            export_events(
                target,
                src,
                [
                    AddedChannel("cytomsc_cells", (np.arange(n) % 2).astype(np.uint8)),
                    AddedChannel("cytomsc_population", (np.arange(n) % 4).astype(np.int64)),
                ],
            )
        )
        checked_flowio += bool(_check_round_trip(path, target)["flowio_original"])
        with _quiet():
            s = fk.Sample(target)
        extra = s.get_events(source="raw")[:, -2:]
        np.testing.assert_array_equal(extra[:, 0], np.arange(n) % 2)
        np.testing.assert_array_equal(extra[:, 1], np.arange(n) % 4)
    return read, checked_flowio, writers


@pytest.mark.slow
def test_every_corpus_file_reads_back_unchanged(
    corpus: Path, corpus_expected: dict, tmp_path: Path
) -> None:
    read, with_flowio, writers = _export_all(corpus, tmp_path)
    assert read == sum(1 for v in corpus_expected.values() if v is not None)  # 45
    assert with_flowio >= 15  # FlowIO reads these originals itself: compared value by value
    assert writers == {"flowio", "cytomsc"}


@pytest.mark.slow
def test_every_real_export_reads_back_unchanged(real_fcs: Path, tmp_path: Path) -> None:
    read, with_flowio, writers = _export_all(real_fcs, tmp_path)
    assert read >= 14 and with_flowio >= 14
    assert writers == {"flowio", "cytomsc"}


@pytest.mark.slow
def test_real_exports_gated_and_exported_count_the_same(real_fcs: Path, tmp_path: Path) -> None:
    """`analyze --export-events` on real exports: gates.xml counts the same events on each
    export as on its original (the log-amplified float itn_02 goes through cytomsc's writer)."""
    files = [
        real_fcs / "FlowSOM" / "68983.fcs",
        real_fcs / "cytoflow" / "itn_02.fcs",
        real_fcs / "flowWorkspaceData" / "124500.fcs",
    ]
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(
        "file,culture,role\n" + "".join(f"{p},real{i},stained\n" for i, p in enumerate(files))
    )
    out = tmp_path / "out"
    batch = run_batch(
        [], out, Options(jobs=1, pdf=False, export_events=True, cluster="none", manifest=str(sheet))
    )
    assert len(batch.cultures) == 3
    for c in batch.cultures:
        strategy = fk.parse_gating_xml(str(out / c.output_name / "gates.xml"))
        ids = sorted({g[0] for g in strategy.get_gate_ids()})
        assert ids
        for f in c.files:
            exported = out / c.output_name / "events" / Path(f.path).name
            _check_round_trip(Path(f.path), exported)
            with _quiet():
                a = strategy.gate_sample(fk.Sample(f.path))
                b = strategy.gate_sample(fk.Sample(exported))
            for g in ids:
                assert a.get_gate_count(g) == b.get_gate_count(g), (f.path, g)
            steps = [
                s for s in c.gates if s.tube == Path(f.path).name and f"t1_{s.gate}" in ids
            ]  # a margin gate that cut nothing is not written
            assert steps
            for step in steps:
                assert b.get_gate_count(f"t1_{step.gate}") == step.count


# -- the writer --------------------------------------------------------------------------------
def test_flowio_limits_that_keep_cytomsc_writer(tmp_path: Path) -> None:
    """What export.py's docstring says of FlowIO 1.4's create_fcs, as measured: if one of these
    starts failing, FlowIO lifted a limit and can write more of the exports."""
    with pytest.raises(NotImplementedError):
        flowio.create_fcs(io.BytesIO(), [1.0, 2.0], ["A"], metadata_dict={"datatype": "I"})
    buf = io.BytesIO()
    with _quiet():
        flowio.create_fcs(buf, [1.0, 2.0], ["A"], metadata_dict={"p1e": "4,1"})
    path = tmp_path / "log.fcs"
    path.write_bytes(buf.getvalue())
    assert flowio.FlowData(str(path)).channels[1]["pne"] == (0.0, 0.0)  # anti-log lost
    buf = io.BytesIO()
    flowio.create_fcs(buf, [1.0, 2.0], ["A"], metadata_dict={"note": "/data/x/", "cyt": "C6"})
    path.write_bytes(buf.getvalue())
    text = flowio.FlowData(str(path)).text
    assert text.get("note") != "/data/x/" or text.get("cyt") != "C6"  # TEXT misread


def test_writer_stores_every_value_type_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    cases = {
        "f4": rng.normal(0, 1e4, (200, 3)).astype(np.float32),
        "f8": rng.normal(0, 1e4, (200, 3)),
        "u1": rng.integers(0, 256, (200, 3)).astype(np.uint8),
        "u2": rng.integers(0, 65536, (200, 3)).astype(np.uint16),
        "u4": rng.integers(0, 2**32, (200, 3), dtype=np.uint64).astype(np.uint32),
    }
    cases["f4"][5, 1] = np.nan
    for name, values in cases.items():
        top = str(2 ** (values.itemsize * 8)) if values.dtype.kind == "u" else "262144"
        path = tmp_path / f"{name}.fcs"
        write_data_set(
            path,
            values,
            [ChannelText(f"C{i}", pnr=top) for i in range(3)],
            [("NOTE", "a/b|c~d"), ("EMPTY", "")],
        )
        back = flowio.FlowData(str(path))
        stored = np.asarray(back.events).reshape(200, 3)
        assert _same(stored.astype(values.dtype), values), name
        assert back.text["note"] == "a/b|c~d" and back.text["empty"] == " "


def test_float_gain_and_timestep_survive_flowio_writer(tmp_path: Path) -> None:
    """Float data with $PnG != 1 and a $TIMESTEP go through FlowIO's writer unchanged."""
    rng = np.random.default_rng(4)
    values = np.column_stack(
        [rng.normal(5e4, 1e4, 500), rng.normal(800, 300, 500), np.arange(500) * 3.0]
    ).astype(np.float32)
    src = tmp_path / "src.fcs"
    write_data_set(
        src,
        values,
        [
            ChannelText("FSC-A", png="2.5"),
            ChannelText("FITC-A", pns="CD90", png="0.7"),
            ChannelText("Time"),
        ],
        [("$TIMESTEP", "0.0123"), ("PASSAGE", "5"), ("$OP", "A. Lab")],
    )
    target = tmp_path / "out.fcs"
    assert (
        export_events(
            target, read_fcs(src), [AddedChannel("cytomsc_time", np.ones(500, dtype=np.uint8))]
        )
        == "flowio"
    )
    _check_round_trip(src, target)
    with _quiet():
        raw = fk.Sample(target).get_events(source="raw")
    np.testing.assert_array_equal(raw[:, 2], values[:, 2].astype(np.float64) * 0.0123)
    np.testing.assert_array_equal(raw[:, 0], values[:, 0].astype(np.float64) / 2.5)
