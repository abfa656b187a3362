"""Panels load from TOML and match channels: aliases, alternatives, cocktails, conflicts, CLI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from cytomsc.cli import main
from cytomsc.errors import PanelError
from cytomsc.panel import list_panels, load_panel

DIVA = [
    ("Time", ""),
    ("FSC-A", ""),
    ("FSC-H", ""),
    ("SSC-A", ""),
    ("FITC-A", "CD90 FITC"),
    ("PE-A", "CD34/CD45/CD11b/CD19/HLA-DR PE"),
    ("PerCP-Cy5-5-A", "PerCP-Cy5.5 Endoglin"),
    ("APC-A", "NT5E APC-A"),
    ("PE-Cy7-A", "IgG1 PE-Cy7"),
]


def test_shipped_panels_load_and_hash():
    ids = [p.id for p in list_panels()]
    assert ids[0] == "isct-2006"
    assert {"isct-2006", "isct-ifats-2013", "stemflow-cocktail"} <= set(ids)
    p = load_panel("isct-2006")
    assert p.sha256 == hashlib.sha256(p.path.read_bytes()).hexdigest()
    assert "10.1080/14653240600855905" in p.reference
    assert "10.1016/j.jcyt.2013.02.006" in load_panel("isct-ifats-2013").reference
    limits = {c.name: (c.expect, c.limit, c.kind) for c in p.criteria}
    assert limits["CD73"] == ("positive", 95.0, "single")
    assert limits["CD14 or CD11b"] == ("negative", 2.0, "alternatives")
    assert limits["HLA-DR"] == ("negative", 2.0, "single")
    adipose = {c.name: (c.expect, c.limit) for c in load_panel("isct-ifats-2013").criteria}
    assert adipose["CD90"] == ("positive", 80.0) and adipose["CD31"] == ("negative", 2.0)
    assert adipose["CD34"] == ("informative", None)


@pytest.mark.parametrize(
    "alias, canonical",
    [
        ("NT5E", "CD73"),
        ("cd 73", "CD73"),
        ("Thy-1", "CD90"),
        ("THY1", "CD90"),
        ("thy1", "CD90"),
        ("Endoglin", "CD105"),
        ("ENG", "CD105"),
        ("PTPRC", "CD45"),
        ("HLA DR", "HLA-DR"),
        ("HLADR", "HLA-DR"),
        ("Mac-1", "CD11b"),
        ("ITGAM", "CD11b"),
        ("MB-1", "CD79a"),
        ("MS4A1", "CD20"),
        ("CD44", None),
        ("IgG1", None),
    ],
)
def test_canonical(alias, canonical):
    assert load_panel("isct-2006").canonical(alias) == canonical


def test_match_isct_with_cocktail_channel_and_aliases():
    m = load_panel("isct-2006").match(DIVA)
    got = {a.channel: (a.label, a.criterion.kind, a.criterion.limit) for a in m.assignments}
    assert got["FITC-A"] == ("CD90", "single", 95.0)
    assert got["PerCP-Cy5-5-A"] == ("CD105", "single", 95.0)
    assert got["APC-A"] == ("CD73", "single", 95.0)
    # an ad-hoc cocktail covering five ISCT criteria, judged at the strictest limit
    assert got["PE-A"] == ("CD45/CD34/CD11b/CD19/HLA-DR", "cocktail", 2.0)
    assert "PE-Cy7-A" not in m.by_channel  # isotype label
    assert m.missing == []


def test_match_kit_cocktail_and_missing_named():
    m = load_panel("stemflow-cocktail").match(DIVA)
    a = m.by_channel["PE-A"]
    assert a.criterion.name == "CD34/CD11b/CD19/CD45/HLA-DR" and a.criterion.kind == "cocktail"
    assert a.label == "CD34/CD11b/CD19/CD45/HLA-DR"
    assert m.missing == ["CD44"]


@pytest.mark.parametrize("pns", ["Neg cocktail PE", "hMSC Negative Cocktail", "Lin PE", "lineage"])
def test_cocktail_by_word(pns):
    m = load_panel("stemflow-cocktail").match([("FL2-A", pns)])
    assert m.by_channel["FL2-A"].criterion.kind == "cocktail"
    assert "CD34/CD11b/CD19/CD45/HLA-DR" not in m.missing


def test_isotype_cocktail_and_linear_amplification_are_not_cocktails():
    m = load_panel("stemflow-cocktail").match(
        [("PE-A", "PE hMSC Negative Isotype Cocktail"), ("FL1 Lin", "FL1 Lin")]
    )
    assert m.assignments == []


def test_alternatives_and_missing():
    p = load_panel("isct-2006")
    m = p.match([("FL1-A", "CD90"), ("FL2-A", "CD11b PE"), ("FL3-A", "CD 20")])
    assert m.by_channel["FL2-A"].criterion.name == "CD14 or CD11b"
    assert m.by_channel["FL3-A"].criterion.name == "CD79a or CD19"
    assert m.missing == ["CD105", "CD73", "CD45", "CD34", "HLA-DR"]


def test_informative_marker_is_assigned_not_missing():
    p = load_panel("isct-ifats-2013")
    m = p.match([("FITC-A", "CD34 FITC")])
    assert m.by_channel["FITC-A"].criterion.expect == "informative"
    assert "CD34" not in m.missing and "CD90" in m.missing and "CD235a" in m.missing


def test_cocktail_marker_in_its_own_channel():
    m = load_panel("stemflow-cocktail").match([("PE-A", "CD45 PE"), ("APC-A", "HLA-DR")])
    assert m.by_channel["PE-A"].criterion.kind == "single"
    assert m.by_channel["PE-A"].criterion.limit == 2.0
    assert {"CD34", "CD11b", "CD19"} <= set(m.missing)
    assert "CD45" not in m.missing and "HLA-DR" not in m.missing


def test_two_channels_one_marker_is_an_error_naming_both():
    with pytest.raises(PanelError) as err:
        load_panel("isct-2006").match(
            [("FL1-A", "CD90 FITC"), ("FL2-A", "Thy-1 PE")], source="tube1.fcs"
        )
    msg = err.value.message
    assert msg.startswith("tube1.fcs: ") and "FL1-A" in msg and "FL2-A" in msg
    assert "\n" not in msg


def test_positive_markers_cannot_share_a_channel():
    with pytest.raises(PanelError, match="CD73"):
        load_panel("isct-2006").match([("FL1-A", "CD73/CD90")])


def test_pnn_fallback_and_channel_map_wins():
    p = load_panel("isct-2006")
    m = p.match([("CD90 FITC-A", ""), ("FL2-A", "FL2-A")])
    assert m.by_channel["CD90 FITC-A"].via == "pnn"
    m = p.match(
        [("FL1-A", ""), ("FL2-A", "CD90"), ("FL4-A", "")],
        {"FL1-A": "Thy-1", "FL4-A": "endoglin", "FL9-A": "CD73"},
    )
    assert m.by_channel["FL1-A"].label == "CD90" and m.by_channel["FL1-A"].via == "map"
    assert "FL2-A" not in m.by_channel  # the map claimed CD90
    assert m.by_channel["FL4-A"].label == "CD105"
    assert any("FL9-A" in w for w in m.warnings)
    with pytest.raises(PanelError, match="CD999"):
        p.match([("FL1-A", "")], {"FL1-A": "CD999"})


def test_scatter_and_time_never_markers():
    m = load_panel("isct-2006").match([("FSC-A", "CD90"), ("Time", "CD73"), ("SSC-A", "")])
    assert m.assignments == []


def test_corpus_diva_channels(corpus):
    from tests.test_channels import _corpus_channels

    pnn, pns = _corpus_channels(corpus / "fcsparser/FACS_Diva/facs_diva_test.fcs")
    m = load_panel("isct-2006").match(list(zip(pnn, pns, strict=True)))
    got = {a.channel: a.label for a in m.assignments}
    assert got == {"FITC-A": "CD20", "PerCP-A": "CD45", "PE-Cy7-A": "CD34", "APC-A": "CD19"}
    assert m.missing == ["CD105", "CD73", "CD90", "CD14 or CD11b", "HLA-DR"]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lab.toml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """
id = "lab-release"
name = "Lab release spec"
reference = "SOP-12"
[aliases]
CD90 = ["Thy-1"]
[[criterion]]
markers = ["CD90"]
expect = "positive"
limit = 90
[[criterion]]
markers = ["CD45"]
expect = "negative"
limit = 5
"""


def test_user_panel_by_path(tmp_path):
    p = load_panel(str(_write(tmp_path, GOOD)))
    assert p.id == "lab-release"
    assert [(c.name, c.limit) for c in p.criteria] == [("CD90", 90.0), ("CD45", 5.0)]
    assert p.match([("FL1-A", "Thy-1 FITC")]).missing == ["CD45"]


@pytest.mark.parametrize(
    "text, reason",
    [
        ("id = ", "not valid TOML"),
        (GOOD.replace("limit = 90", "limit = 190"), "percentage"),
        (GOOD.replace('expect = "positive"', 'expect = "pos"'), "expect"),
        (GOOD.replace("limit = 90", "limt = 90"), "unknown key"),
        (GOOD.replace('markers = ["CD45"]', 'markers = ["CD45", "CD34"]'), "kind"),
        (GOOD.replace('CD90 = ["Thy-1"]', 'CD90 = ["CD45"]'), "alias"),
        (GOOD.replace('id = "lab-release"', ""), "'id'"),
    ],
)
def test_malformed_panel_is_one_line_error_naming_the_file(tmp_path, text, reason):
    path = _write(tmp_path, text)
    with pytest.raises(PanelError) as err:
        load_panel(str(path))
    assert str(path) in err.value.message and reason in err.value.message
    assert "\n" not in err.value.message


def test_unknown_panel_id():
    with pytest.raises(PanelError, match="isct-2006"):
        load_panel("no-such-panel")


def test_cli_panels_list_and_show(tmp_path):
    runner = CliRunner()
    out = runner.invoke(main, ["panels"])
    assert out.exit_code == 0
    assert out.output.splitlines()[0].startswith("isct-2006")
    out = runner.invoke(main, ["panels", "show", "isct-2006"])
    assert out.exit_code == 0
    assert "CD14 or CD11b" in out.output and ">= 95 %" in out.output and "<= 2 %" in out.output
    bad = _write(tmp_path, "id = ")
    out = runner.invoke(main, ["panels", "show", str(bad)])
    assert out.exit_code == 1 and "Traceback" not in out.output


def test_missing_is_decided_over_all_stained_tubes() -> None:
    """A cocktail split over tubes is covered only by its markers, whichever tube has them: a
    tube without the cocktail and a tube with only CD34 leave four markers missing."""
    panel = load_panel("stemflow-cocktail")
    one = panel.match(
        [("FITC-A", "CD90"), ("APC-A", "CD73"), ("PerCP-Cy5-5-A", "CD105"), ("PE-A", "CD44")]
    )
    two = panel.match([("FITC-A", "CD90"), ("PE-A", "CD34")])
    assert "CD34" not in panel.missing(one.assignments + two.assignments)
    assert set(panel.missing(one.assignments + two.assignments)) >= {
        "CD11b",
        "CD19",
        "CD45",
        "HLA-DR",
    }
    full = panel.match([("PE-A", "CD34/CD11b/CD19/CD45/HLA-DR")])
    assert panel.missing(one.assignments + full.assignments) == []


def test_area_channel_is_read_where_a_detector_also_records_height_or_width():
    """LSRII/Fortessa exports record -A and -H (and -W) of one detector with the same label:
    the area is the measurement labs read (height where no area was recorded)."""
    channels = [
        ("FSC-A", ""),
        ("FSC-H", ""),
        ("PE-Cy7-A", "CD14"),
        ("PE-Cy7-H", "CD14"),
        ("PE-Cy7-W", "CD14"),
        ("APC-H", "CD90"),
        ("APC-W", "CD90"),
        ("FITC-A", "CD73"),
        ("PE-A", "CD34/CD45/CD11b/CD19/HLA-DR PE"),
        ("PE-H", "CD34/CD45/CD11b/CD19/HLA-DR PE"),
    ]
    m = load_panel("isct-2006").match(channels)
    chosen = {a.label: a.channel for a in m.assignments}
    assert chosen["CD14"] == "PE-Cy7-A" and chosen["CD90"] == "APC-H"
    assert chosen["CD73"] == "FITC-A" and chosen["CD45/CD34/CD11b/CD19/HLA-DR"] == "PE-A"
    assert set(m.by_channel) == {"PE-Cy7-A", "APC-H", "FITC-A", "PE-A"}
    assert m.warnings == [
        "area channels used where a detector is also recorded as height or "
        "width: CD14 from PE-Cy7-A (not PE-Cy7-H, PE-Cy7-W); CD90 from APC-H "
        "(not APC-W); CD45/CD34/CD11b/CD19/HLA-DR from PE-A (not PE-H)"
    ]


def test_two_detectors_of_one_marker_stay_an_error():
    """Area and height of *different* detectors are two measurements: still an error."""
    with pytest.raises(PanelError, match="CD14 is matched by two channels, PE-Cy7-A"):
        load_panel("isct-2006").match([("PE-Cy7-A", "CD14"), ("APC-H", "CD14")])
