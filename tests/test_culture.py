"""One culture's analysis as a value (culture.py) and as a job (scheduler.py): nothing written,
nothing kept of its events, and a job that never raises.

Truth: the simulator's (truth_of: the verdict), and the files a run writes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cytomsc.culture import analyze_culture
from cytomsc.layout import CultureSpec, Tube
from cytomsc.options import CompSource, Options
from cytomsc.panel import load_panel
from cytomsc.pipeline import plan_batch
from cytomsc.results import InputError
from cytomsc.roles import Role
from cytomsc.scheduler import CultureJob, WriteTo, run_culture
from cytomsc.simulate import CultureDesign, simulate_culture, truth_of


@pytest.fixture(scope="module")
def culture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("culture")
    design = CultureDesign("C1", n_events=3000, controls=("isotype",))
    tubes = simulate_culture(design, seed=3)
    for t in tubes:
        t.write(root / "C1")
    return root, truth_of(design, tubes)["expected_verdict"]


def test_analysis_writes_nothing_and_keeps_no_events(culture: tuple[Path, str]) -> None:
    root, verdict = culture
    before = sorted(root.rglob("*"))
    plan = plan_batch([root], Options(cluster="all"))
    analysis = analyze_culture(plan.specs[0], plan.panel, plan.options, plan.comp, "C1")
    assert sorted(root.rglob("*")) == before
    assert analysis.result.verdict == verdict and analysis.errors == []
    assert analysis.result.heterogeneity is not None  # clustered (--cluster all)
    assert analysis.joint_sample is not None and analysis.joint_sample.shape[0] <= 5000
    files = analysis.files
    assert files is not None and len(files.tubes) == 2
    for t in files.tubes:
        assert t.scales.compensated.shape[0] == 0 and t.scales.display.shape[0] == 0
        assert t.scales.logicle  # the scales gates.xml needs are there
        assert t.source is None and t.population is None  # no --export-events
        assert {m.shape for m in t.gating.masks.values()} == {(3000,)}


@pytest.mark.slow
def test_a_job_writes_into_memory_or_a_folder_alike(
    culture: tuple[Path, str], tmp_path: Path
) -> None:
    root, _ = culture
    plan = plan_batch([root], Options(export_events=True))
    header, info = plan.header, plan.run_info("test")
    in_memory = run_culture(plan.jobs(WriteTo(None, header, info, pdf=False))[0])
    on_disk = run_culture(plan.jobs(WriteTo(str(tmp_path), header, info, pdf=False))[0])
    assert (
        set(in_memory.files)
        == set(on_disk.written)
        == {"C1/gates.xml", "C1/events/C1_Isotype.fcs", "C1/events/C1_Stained.fcs"}
    )
    assert in_memory.written == {} and on_disk.files == {}
    for rel, data in in_memory.files.items():
        assert (tmp_path / rel).read_bytes() == data
    assert in_memory.result is not None and on_disk.result is not None
    assert in_memory.result.verdict == on_disk.result.verdict


def test_a_job_never_raises_unless_debugging(culture: tuple[Path, str], tmp_path: Path) -> None:
    bad = tmp_path / "C2_Stained.fcs"
    bad.write_bytes(b"FCS3.1" + b" " * 52 + b"not an FCS file at all")
    job = CultureJob(
        CultureSpec("C2", [Tube(bad, Role("stained"))]),
        load_panel("isct-2006"),
        Options(),
        CompSource(),
        "C2",
    )
    outcome = run_culture(job)
    assert outcome.result is not None and outcome.result.files == []  # only its error
    assert [e.path for e in outcome.errors] == [str(bad)]
    assert isinstance(outcome.errors[0], InputError) and "\n" not in outcome.errors[0].message
    # a stage that breaks (here: no panel to match the channels to): an error entry naming the
    # culture, in one line, and no result
    broken = dataclasses.replace(plan_batch([culture[0]], Options()).jobs()[0], panel=None)
    failed = run_culture(broken)
    assert failed.result is None and len(failed.errors) == 1
    assert failed.errors[0].path == "C1" and "internal error" in failed.errors[0].message
    assert "\n" not in failed.errors[0].message
    debug = dataclasses.replace(broken, options=Options(debug=True))
    with pytest.raises(AttributeError):
        run_culture(debug)


@pytest.mark.slow
def test_comp_csv_is_read_once_into_the_job(culture: tuple[Path, str], tmp_path: Path) -> None:
    root, _ = culture
    fcs_path = next((root / "C1").glob("*Stained.fcs"))
    from cytomsc.fcs import read_fcs

    names, matrix = read_fcs(fcs_path).spillover
    csv = tmp_path / "m.csv"
    csv.write_text(
        ","
        + ",".join(names)
        + "\n"
        + "".join(
            f"{n}," + ",".join(repr(float(v)) for v in row) + "\n"
            for n, row in zip(names, matrix, strict=True)
        )
    )
    comp = CompSource.from_option(str(csv))
    assert comp.option == str(csv) and comp.matrix is not None
    csv.unlink()  # the job needs the matrix, not the file
    plan = plan_batch([root], Options())
    job = dataclasses.replace(plan.jobs()[0], comp=comp)
    outcome = run_culture(job)
    assert outcome.errors == [] and outcome.result is not None
    assert {c.source for c in outcome.result.compensation} == {"--comp m.csv"}
    same = run_culture(plan.jobs()[0])  # the file's own matrix: the same numbers
    assert [m.percent_positive for m in outcome.result.markers] == [
        m.percent_positive for m in same.result.markers
    ]
    assert load_panel("isct-2006").id == plan.panel.id
