"""Cultures from folders, keywords and manifests; tube roles; safe output names."""

from __future__ import annotations

from pathlib import Path

import pytest

from cytomsc.errors import FcsReadError, LayoutError
from cytomsc.layout import discover, role_of, safe_name
from cytomsc.panel import load_panel
from cytomsc.results import InputError


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"FCS3.1")
    return path


def _reader(table: dict[str, dict[str, str]]):
    """Keywords by file name; files named 'bad*' are unreadable."""

    def read(path: Path) -> dict[str, str]:
        if path.name.startswith("bad"):
            raise FcsReadError("not an FCS file", path)
        return table.get(path.name, {})

    return read


@pytest.mark.parametrize(
    "keywords, name, role",
    [
        ({"tube name": "Unstained"}, "t1.fcs", "unstained"),
        ({"tube name": "FMO CD73"}, "t1.fcs", "fmo:CD73"),
        ({"tube name": "CD73-FMO"}, "t1.fcs", "fmo:CD73"),
        ({"tube name": "FMO_NT5E"}, "t1.fcs", "fmo:CD73"),  # alias via the panel
        ({"tube name": "Tube_002", "fil": "MSC_iso_002.fcs"}, "x.fcs", "isotype"),  # $FIL
        ({"tube name": "Tube_002"}, "P3_IgG1_ctrl.fcs", "isotype"),  # file name
        ({}, "Specimen_001_blank_001.fcs", "unstained"),
        ({}, "donor1_unst.fcs", "unstained"),
        ({}, "MSC_isotype.fcs", "isotype"),
        ({}, "FMO-HLA-DR.fcs", "fmo:HLA-DR"),
        ({"tube name": "Tube_001"}, "Specimen_001_Tube_001_001.fcs", "stained"),
        ({"$TUBE NAME": "blank"}, "a.fcs", "unstained"),  # keys with "$" and upper case
    ],
)
def test_role_of(keywords, name, role):
    assert role_of(keywords, Path(name), load_panel("isct-2006")) == role


def test_role_tube_name_wins_over_file_name():
    assert role_of({"tube name": "Isotype"}, Path("unstained.fcs")) == "isotype"


def test_folders_are_cultures_and_specimens_split(tmp_path):
    for n in ("stained.fcs", "unstained.fcs"):
        _touch(tmp_path / "batch" / "P3_donorA" / n)
    (tmp_path / "batch" / "P3_donorA" / "notes.txt").write_text("not FCS")  # no FCS header
    for n in ("a1.fcs", "a2.FCS", "b1.lmd"):
        _touch(tmp_path / "batch" / "mixed" / n)
    _touch(tmp_path / "batch" / "mixed" / "bad.fcs")
    kw = {
        "unstained.fcs": {"tube name": "Unstained", "passage": "3", "cyt": "LSRII"},
        "a1.fcs": {"src": "MSC-A"},
        "a2.FCS": {"src": "MSC-A", "tube name": "iso"},
        "b1.lmd": {"src": "MSC-B"},
    }
    cultures, errors = discover([tmp_path / "batch"], read_keywords=_reader(kw))
    assert [c.name for c in cultures] == ["P3_donorA", "mixed_MSC-A", "mixed_MSC-B"]
    p3 = cultures[0]
    assert [(t.path.name, t.role) for t in p3.tubes] == [
        ("stained.fcs", "stained"),
        ("unstained.fcs", "unstained"),
    ]
    assert p3.metadata == {"passage": "3", "cytometer": "LSRII"}
    assert [t.role for t in cultures[1].tubes] == ["stained", "isotype"]
    assert len(errors) == 1 and errors[0].path.endswith("bad.fcs")
    assert "not an FCS file" in errors[0].message


def test_single_files_group_by_specimen(tmp_path):
    files = [_touch(tmp_path / n) for n in ("s1.fcs", "s2.fcs", "lone.fcs")]
    kw = {"s1.fcs": {"src": "MSC7"}, "s2.fcs": {"src": "MSC7", "tube name": "unstained"}}
    cultures, errors = discover(files + [tmp_path / "missing.fcs"], read_keywords=_reader(kw))
    assert [(c.name, len(c.tubes)) for c in cultures] == [("MSC7", 2), ("lone", 1)]
    assert errors == [InputError(str(tmp_path / "missing.fcs"), "no such file or folder")]


def test_same_folder_name_in_two_places_is_qualified(tmp_path):
    _touch(tmp_path / "donor1" / "P3" / "a.fcs")
    _touch(tmp_path / "donor2" / "P3" / "a.fcs")
    cultures, _ = discover([tmp_path], read_keywords=_reader({}))
    assert [c.name for c in cultures] == ["donor1/P3", "donor2/P3"]


def test_manifest(tmp_path):
    _touch(tmp_path / "data" / "s.fcs")
    _touch(tmp_path / "data" / "u.fcs")
    _touch(tmp_path / "data" / "f.fcs")
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(
        "file,culture,role,channels,tissue,passage\n"
        "data/s.fcs,MSC-1,stained,FL1-A=CD90;FL2-A=CD105,bone marrow,4\n"
        "data/u.fcs,MSC-1,blank,,,\n"
        "data/f.fcs,MSC-1,fmo:NT5E,,,\n"
        "data/gone.fcs,MSC-1,stained,,,\n"
        "data/s.fcs,MSC-2,sometimes,,,\n",
        encoding="utf-8",
    )
    cultures, errors = discover(
        [], manifest=sheet, panel=load_panel("isct-2006"), read_keywords=_reader({})
    )
    assert [c.name for c in cultures] == ["MSC-1"]
    tubes = {t.path.name: t for t in cultures[0].tubes}
    assert tubes["s.fcs"].channel_map == {"FL1-A": "CD90", "FL2-A": "CD105"}
    assert (tubes["u.fcs"].role, tubes["f.fcs"].role) == ("unstained", "fmo:CD73")
    assert cultures[0].metadata == {"tissue": "bone marrow", "passage": "4"}
    assert len(errors) == 2
    assert "gone.fcs" in errors[0].path and "not found" in errors[0].message
    assert "sometimes" in errors[1].message


def test_manifest_without_columns_is_a_layout_error(tmp_path):
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("path,role\nx.fcs,stained\n", encoding="utf-8")
    with pytest.raises(LayoutError, match="culture"):
        discover([], manifest=sheet, read_keywords=_reader({}))


def test_safe_name_attacks(tmp_path):
    taken: set[str] = set()
    names = [
        safe_name(n, taken)
        for n in (
            "../../../tmp/x",
            'a/b\\c<>:"|?*',
            "CON",
            "nul.txt",
            "",
            "..",
            "x\x00y\x1b",
            "P3",
            "p3",
            "é" * 200,
        )
    ]
    for n in names:
        assert n and "/" not in n and "\\" not in n and ".." not in n
        assert not any(c in n for c in '<>:"|?*') and all(c.isprintable() for c in n)
        assert n.split(".")[0].upper() not in ("CON", "NUL", "PRN", "AUX")
        assert len(n.encode("utf-8")) <= 100
        # a file written under the name stays inside the output folder
        target = (tmp_path / n).resolve()
        assert target.parent == tmp_path.resolve()
    assert len({n.lower() for n in names}) == len(names)
    assert names[7:9] == ["P3", "p3-2"]
    assert taken == set(names) | {f"{n}.pdf" for n in names}  # each culture's folder and PDF


def test_folder_and_pdf_names_never_meet_other_outputs():
    """A culture writes NAME/ and NAME.pdf: cultures "x" and "x.pdf", or a culture named like a
    batch file, must not land on each other."""
    taken = {"summary.json", "summary.csv", "run.json", "overview.pdf"}
    names = [safe_name(n, taken) for n in ("x.pdf", "x", "summary.json", "overview", "run")]
    assert names[0] == "x.pdf" and names[1] == "x-2"  # "x" would write x.pdf: taken
    assert names[2] == "summary.json-2" and names[3] == "overview-2" and names[4] == "run"
    outputs = [o for n in names for o in (n, f"{n}.pdf")]
    assert len({o.lower() for o in outputs}) == len(outputs)
    assert not {o.lower() for o in outputs} & {
        "summary.json",
        "summary.csv",
        "run.json",
        "overview.pdf",
    }


def test_safe_name_duplicates_get_suffixes():
    taken = {"summary"}
    assert safe_name("summary", taken) == "summary-2"
    assert [safe_name("a/b", taken), safe_name("a\\b", taken), safe_name("a:b", taken)] == [
        "a_b",
        "a_b-2",
        "a_b-3",
    ]


def test_real_fcs_keywords_with_hostile_specimens(tmp_path):
    """Files written by FlowIO, read by the default reader (cytomsc.fcs.read_text)."""
    flowio = pytest.importorskip("flowio")
    folder = tmp_path / "in"
    folder.mkdir()
    for name, src, tube in (
        ("a.fcs", "../../../tmp/x", "Tube_001"),
        ("b.fcs", 'a/b\\c<>:"|?*', "Unstained"),
    ):
        with open(folder / name, "wb") as fh:
            flowio.create_fcs(
                fh,
                [1.0, 2.0, 3.0, 4.0],
                ["FSC-A", "FL1-A"],
                opt_channel_names=["", "CD90 FITC"],
                metadata_dict={"SRC": src, "TUBE NAME": tube},
            )
    cultures, errors = discover([folder])
    assert errors == []
    assert sorted(c.name for c in cultures) == sorted(["in_../../../tmp/x", 'in_a/b\\c<>:"|?*'])
    roles = {c.tubes[0].path.name: c.tubes[0].role for c in cultures}
    assert roles == {"a.fcs": "stained", "b.fcs": "unstained"}
    taken: set[str] = set()
    out = tmp_path / "out"
    for c in cultures:
        safe = safe_name(c.name, taken)
        (out / safe).mkdir(parents=True)
        (out / safe / "summary.json").write_text("{}")
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("summary.json"))
    assert all(w.startswith("out/") and w.count("/") == 2 for w in written)
    assert len(written) == 2


def test_culture_name_does_not_make_tubes_controls() -> None:
    # A culture named after a control word: the tube's own words decide, not the culture's name.
    kw = {"tube name": "Stained 1", "src": "D7_unstained_only", "fil": "D7_unstained_only_S1.fcs"}
    assert role_of(kw, Path("D7_unstained_only/D7_unstained_only_S1.fcs")) == "stained"
    kw = {"src": "FMO_study_3", "fil": "FMO_study_3_tube2.fcs"}
    assert role_of(kw, Path("FMO_study_3/FMO_study_3_tube2.fcs")) == "stained"
    kw = {"tube name": "FMO CD73", "src": "FMO_study_3"}
    assert role_of(kw, Path("FMO_study_3/t3.fcs")) == "fmo:CD73"
    kw = {"src": "iso_lot_4"}
    assert role_of(kw, Path("iso_lot_4/iso_lot_4_Unstained.fcs")) == "unstained"
