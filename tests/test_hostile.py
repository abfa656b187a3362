"""Files the reader accepts but the analysis did not survive (issue 12), through ``analyze``.

Each case is a simulated culture whose stained tube was written with the project's writer and
then edited (keywords, or the DATA bytes) into one of the issue's hostile classes. All of them
go through one ``run_batch`` (PDFs included), as ``cytomsc analyze`` runs them. Every culture
must come out analysed, never as an "internal error": with a verdict where the edit leaves the
measurement intact, else inconclusive with the reason in its warnings. The CD90 file that took
9.8 GB runs in a child process under an address-space limit, so that a regression fails there
instead of taking the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_fcs import assemble, set_keywords, split_fcs

from cytomsc.pipeline import Options, run_batch
from cytomsc.simulate import CultureDesign, simulate_culture, truth_of

pytestmark = pytest.mark.slow  # a batch of hostile cultures

HERE = Path(__file__).resolve().parent


def _write(
    folder: Path,
    name: str,
    n: int = 3000,
    controls: tuple[str, ...] = ("isotype",),
    edit=None,
    spill: bool = True,
    seed_offset: int = 0,
) -> str:
    """A diva 8-colour culture; ``edit(raw bytes, tube) -> bytes`` applied to the stained tube.
    Returns the culture's true verdict (for edits that leave its measurements as they were)."""
    design = CultureDesign(
        name,
        style="diva",
        layout="isct-8c",
        n_events=n,
        controls=controls,
        seed_offset=700 + seed_offset,
    )
    tubes = simulate_culture(design, 0)
    for t in tubes:
        if not spill:
            t.spillover = None
        path = t.write(folder / name) if spill else _write_plain(folder / name, t)
        if t.role == "stained" and edit is not None:
            path.write_bytes(edit(path.read_bytes(), t))
    return truth_of(design, tubes)["expected_verdict"]


def _write_plain(folder: Path, t) -> Path:
    from cytomsc.fcswrite import write_fcs

    path = folder / t.filename
    write_fcs(path, t.events, t.pnn, t.pns, t.keywords, t.version, t.datatype, t.ranges)
    return path


def _events(raw: bytes, t) -> tuple[list[tuple[str, str]], np.ndarray]:
    keywords, data = split_fcs(raw)
    return keywords, np.frombuffer(data, "<f4").reshape(-1, len(t.pnn)).copy()


def _all_nan(raw: bytes, t) -> bytes:
    keywords, ev = _events(raw, t)
    ev[:, t.pnn.index("FSC-A")] = np.nan
    return assemble(keywords, ev.tobytes())


def _few_float_steps(raw: bytes, t) -> bytes:
    """CD90's channel (FITC-A) 1000 + 0..3 steps of float64, in float64 ($DATATYPE D) DATA."""
    keywords, ev = _events(raw, t)
    ev = ev.astype("<f8")
    j = t.pnn.index("FITC-A")
    ev[:, j] = 1000.0 + np.random.default_rng(1).integers(0, 4, len(ev)) * np.spacing(1000.0)
    keywords = [
        (k, "D" if k == "$DATATYPE" else "64" if k.endswith("B") and k[2:-1].isdigit() else v)
        for k, v in keywords
    ]
    return assemble(keywords, ev.tobytes())


def _three_events(raw: bytes, t) -> bytes:
    keywords, ev = _events(raw, t)
    return assemble([(k, "3" if k == "$TOT" else v) for k, v in keywords], ev[:3].tobytes())


def _width_only(raw: bytes, t) -> bytes:
    """FSC-A renamed FSC-W and FSC-H renamed to a non-scatter name: width without area/height."""
    i, h = t.pnn.index("FSC-A") + 1, t.pnn.index("FSC-H") + 1
    return set_keywords(raw, **{f"P{i}N": "FSC-W", f"P{h}N": "Extra"})


def _cd90_mostly_one_value(raw: bytes, t) -> bytes:
    """The issue's 440 KB file: CD90 one float32 value in 99.7 % of the events, the next float32
    in 0.25 %, and a 0.06 % tail; no spillover and no control for CD90."""
    keywords, ev = _events(raw, t)
    rng = np.random.default_rng(2)
    j = t.pnn.index("FITC-A")
    value = np.float32(523.7)
    ev[:, j] = value
    k = rng.choice(len(ev), 26, replace=False)
    ev[k[:5], j] = rng.uniform(1e3, 2e5, 5).astype(np.float32)
    ev[k[5:], j] = np.nextafter(value, np.float32(np.inf))
    return assemble(keywords, ev.tobytes())


CASES = {
    # name: (events, controls, edit, spillover kept, verdict kept)
    "all_nan": (3000, ("isotype",), _all_nan, True, False),
    "timestep_1e308": (
        3000,
        ("isotype",),
        lambda r, t: set_keywords(r, TIMESTEP="1e308"),
        True,
        True,
    ),
    "pnr_1e306_20k": (
        20_000,
        ("isotype",),
        lambda r, t: set_keywords(r, **{f"P{i}R": "1e306" for i in range(1, len(t.pnn) + 1)}),
        True,
        True,
    ),
    "pnr_1e306_small": (
        3000,
        (),
        lambda r, t: set_keywords(r, **{f"P{i}R": "1e306" for i in range(5, 13)}),
        True,
        False,
    ),
    "few_float_steps": (3000, (), _few_float_steps, False, False),
    "png_1e300": (
        3000,
        (),
        lambda r, t: set_keywords(r, **{f"P{i}G": "1e-300" for i in range(1, len(t.pnn) + 1)}),
        True,
        False,
    ),
    "three_events": (3000, (), _three_events, True, False),
    "width_only": (3000, ("isotype",), _width_only, True, False),
}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    truths = {}
    for i, (name, (n, controls, edit, spill, _)) in enumerate(CASES.items()):
        truths[name] = _write(root / "in", name, n, controls, edit, spill, seed_offset=i)
    result = run_batch([root / "in"], root / "out", Options(pdf=True, jobs=1))
    return result, truths, root


def _culture(batch, name):
    result = batch[0]
    internal = [e for e in result.errors if "internal error" in e.message]
    assert not internal, internal
    found = [c for c in result.cultures if c.culture == name]
    assert len(found) == 1, (name, result.errors)
    return found[0]


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_culture_is_analysed(batch, name) -> None:
    culture = _culture(batch, name)
    *_, kept = CASES[name]
    assert (batch[2] / "out" / f"{name}.pdf").is_file()
    if kept:  # the edit leaves every measurement as it was: the verdict is the truth's
        assert culture.verdict == batch[1][name]
        assert all(m.percent_positive is not None for m in culture.markers)


def test_all_events_nan_is_inconclusive_with_the_reason(batch) -> None:
    c = _culture(batch, "all_nan")
    assert c.verdict == "inconclusive" and c.events["total"] == 3000 and c.events["cells"] == 0
    assert any("every event holds a NaN or infinite value" in w for w in c.warnings)


def test_timestep_that_overflows_is_left_out_with_a_warning(batch) -> None:
    c = _culture(batch, "timestep_1e308")
    assert any("$TIMESTEP 1e+308 makes Time overflow" in w for w in c.warnings)
    assert c.events["time_ok"] > 0.9 * c.events["total"]


def test_huge_range_on_20000_events_gets_a_scale_from_the_data(batch) -> None:
    c = _culture(batch, "pnr_1e306_20k")
    assert c.events["total"] == 20_000
    assert any("$PnR 1e+306 is beyond any detector's range" in w for w in c.warnings)


@pytest.mark.parametrize("name", ["pnr_1e306_small", "few_float_steps", "png_1e300"])
def test_squeezed_displays_still_get_automatic_thresholds(batch, name) -> None:
    c = _culture(batch, name)
    cd90 = next(m for m in c.markers if m.marker == "CD90")
    assert cd90.threshold_source == "auto" and cd90.percent_positive is not None
    assert np.isfinite(cd90.threshold)


def test_three_events_are_inconclusive(batch) -> None:
    c = _culture(batch, "three_events")
    assert c.verdict == "inconclusive" and c.events["total"] == 3
    assert any("fewer than 1,000 gated events" in w for w in c.warnings)


def test_width_only_scatter_is_gated_on_width(batch) -> None:
    c = _culture(batch, "width_only")
    singlets = [g for g in c.gates if g.gate == "singlets" and g.tube.endswith("Stained.fcs")]
    assert len(singlets) == 1 and singlets[0].y == "FSC-W"


CHILD = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    from cytomsc.pipeline import Options, run_batch
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    batch = run_batch([Path(sys.argv[1])], Path(sys.argv[2]), Options(pdf=False, jobs=1))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"errors": batch.errors, "peak_kb": peak, "before_kb": before,
                      "cultures": [{"name": c.culture, "verdict": c.verdict,
                                    "markers": {m.marker: m.percent_positive for m in c.markers}}
                                   for c in batch.cultures]}))
""")


def test_cd90_mostly_one_value_runs_in_bounded_memory(tmp_path) -> None:
    """The 440 KB file whose CD90 is one float32 value for most events: 3 minutes and 9.8 GB
    before, the smoothing kernel growing without bound. Run in a child limited to 3 GB of
    address space; it must finish, analysed, within 10x the file size plus 500 MB."""
    import resource

    _write(tmp_path / "in", "cd90", n=8500, controls=(), edit=_cd90_mostly_one_value, spill=False)
    stained = next((tmp_path / "in" / "cd90").glob("*Stained*"))
    size = stained.stat().st_size
    assert 400_000 < size < 480_000

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "in"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=600,
        cwd=HERE,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["errors"] == []
    (culture,) = report["cultures"]
    assert culture["markers"]["CD90"] is not None
    grown = (report["peak_kb"] - report["before_kb"]) * 1024
    assert grown < 10 * size + (500 << 20), f"{grown / 2**20:.0f} MB"


def test_analyze_parses_each_files_text_once(tmp_path, monkeypatch) -> None:
    """The layout reads every file's TEXT, then the analysis reads the files: one parse each
    (it was two, and a quadratic one made each 3 MB TEXT cost 31 s)."""
    from cytomsc import fcs

    _write(tmp_path / "in", f"once_{tmp_path.name}", n=1500)
    files = list((tmp_path / "in").rglob("*.fcs"))
    calls: list[int] = []
    original = fcs._parse_text
    monkeypatch.setattr(fcs, "_parse_text", lambda *a: calls.append(1) or original(*a))
    batch = run_batch([tmp_path / "in"], tmp_path / "out", Options(pdf=False, jobs=1))
    assert len(batch.cultures) == 1 and batch.errors == []
    assert len(files) == 2 and len(calls) == len(files)
