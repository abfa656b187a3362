"""Channel kinds by name across instruments; corpus names read with FlowIO (independent)."""

from __future__ import annotations

import pytest

from cytomsc.channels import (
    FLUOROCHROME_WORDS,
    find_scatter,
    find_viability,
    is_blank_label,
    is_fluorescence,
    strip_fluorochromes,
)


@pytest.mark.parametrize(
    "pnn, expect",
    [
        # BD Diva / Fortessa / Aria
        (
            ["FSC-A", "FSC-H", "FSC-W", "SSC-A", "SSC-H", "SSC-W", "FITC-A", "Time"],
            ("FSC-A", "FSC-H", "FSC-W", "SSC-A", "SSC-H", "Time"),
        ),
        # Accuri
        (
            ["FSC-A", "FSC-H", "SSC-A", "SSC-H", "FL1-A", "FL2-A", "Time"],
            ("FSC-A", "FSC-H", None, "SSC-A", "SSC-H", "Time"),
        ),
        # FACSCalibur: height only
        (
            ["FSC-H", "SSC-H", "FL1-H", "FL2-H", "FL2-A", "Time"],
            (None, "FSC-H", None, None, "SSC-H", "Time"),
        ),
        # Beckman: integral, peak, time of flight
        (
            ["FS INT", "FS PEAK", "FS TOF", "SS INT", "SS PEAK", "FL1 INT", "TIME"],
            ("FS INT", "FS PEAK", "FS TOF", "SS INT", "SS PEAK", "TIME"),
        ),
        # Beckman FC500: linear preferred over log, no area/height word
        (["FS Log", "FS Lin", "SS Lin", "FL1 Log"], ("FS Lin", None, None, "SS Lin", None, None)),
        # Guava
        (
            ["FSC-HLog", "FSC-HLin", "SSC-HLin", "GRN-HLog"],
            (None, "FSC-HLin", None, None, "SSC-HLin", None),
        ),
        # Cytek xP: plain FSC is the height when FSCA exists
        (
            ["TIME", "FSC", "SSC", "FL1", "FSCW", "FSCA"],
            ("FSCA", "FSC", "FSCW", "SSC", None, "TIME"),
        ),
        # Partec
        (["FSC", "SSC", "FL1", "TIME"], ("FSC", None, None, "SSC", None, "TIME")),
        # MACSQuant
        (
            ["HDR-T", "FSC-A", "FSC-H", "SSC-A", "B1-A", "HDR-CE"],
            ("FSC-A", "FSC-H", None, "SSC-A", None, "HDR-T"),
        ),
        # Aria with FSC PMT and Aurora violet SSC: the plain detectors win
        (["FSC PMT-A", "FSC-A", "SSC-B-A", "SSC-A"], ("FSC-A", None, None, "SSC-A", None, None)),
    ],
)
def test_find_scatter_across_instruments(pnn, expect):
    sc = find_scatter(pnn, [""] * len(pnn))
    assert (sc.fsc_a, sc.fsc_h, sc.fsc_w, sc.ssc_a, sc.ssc_h, sc.time) == expect


def test_fsc_property_prefers_area_then_height():
    assert find_scatter(["FSC-H", "FSC-A", "SSC-H"], []).fsc == "FSC-A"
    sc = find_scatter(["FSC-H", "SSC-H"], [])
    assert (sc.fsc, sc.ssc) == ("FSC-H", "SSC-H")
    assert find_scatter(["FL1-A"], ["CD90"]).fsc is None


def test_time_only_in_pns_macsquant_31():
    sc = find_scatter(["Time", "FSC-A"], ["HDR-T", "FSC-A"])
    assert sc.time == "Time"


@pytest.mark.parametrize(
    "pnn, pns, expect",
    [
        ("FITC-A", "CD90", True),
        ("FL1-A", "", True),
        ("BL1-A", "", True),
        ("B1-A", "B1-A", True),
        ("FSC-A", "", False),
        ("SS INT LIN", "", False),
        ("Time", "", False),
        ("HDR-T", "", False),
        ("HDR-CE", "HDR-CE", False),
        ("Event #", "", False),
        ("Sort Classifier", "", False),
        ("cytomsc_singlets", "", False),
        ("Time_MSW", "", False),
        ("FSC PMT-A", "", False),
    ],
)
def test_is_fluorescence(pnn, pns, expect):
    assert is_fluorescence(pnn, pns) is expect


@pytest.mark.parametrize(
    "pns, expect",
    [
        ("CD90 FITC-A", "CD90"),
        ("PerCP-Cy5.5 CD105", "CD105"),
        ("CD103-FITC", "CD103"),
        ("CD21;FITC;530/30@488/B", "CD21"),
        ("IgG1 FITC", "IGG1"),
        ("HLA-DR APC-H7", "HLA DR"),
        ("CD45 PC7", "CD45"),
        ("CD73 BV421", "CD73"),
        ("Thy-1 Alexa Fluor 488", "THY 1"),
    ],
)
def test_strip_fluorochromes(pns, expect):
    assert strip_fluorochromes(pns) == expect


def test_fluorochrome_words_cover_the_common_dyes():
    for w in ("FITC", "PE", "APC", "PerCP", "PerCP-Cy5.5", "PE-Cy7", "APC-Cy7", "BV421"):
        assert w in FLUOROCHROME_WORDS


@pytest.mark.parametrize(
    "pnn, pns, blank",
    [
        ("FL1-A", "", True),
        ("FSC-A", "FSC-A", True),
        ("FL1 Log", "FL1 Log", True),
        ("FL1-H", "FL1-Height", True),
        ("FL2-A", "V2-A", True),
        ("FITC-A", "FITC", True),
        ("FITC-A", "CD90", False),
        ("PE-A", "Lin PE", False),
        ("FL2-A", "Neg cocktail", False),
    ],
)
def test_blank_labels(pnn, pns, blank):
    assert is_blank_label(pnn, pns) is blank


@pytest.mark.parametrize(
    "pnn, pns, expect",
    [
        (["FITC-A", "PerCP-Cy5-5-A"], ["CD90", "7-AAD"], "PerCP-Cy5-5-A"),
        (["BL 695/40-A"], ["viability;7-AAD;695/40@488/A"], "BL 695/40-A"),
        (["AmCyan-A"], ["l/d"], "AmCyan-A"),
        (["APC-Cy7-A"], ["Live/Dead NIR"], "APC-Cy7-A"),
        (["PE-A"], ["Propidium iodide"], "PE-A"),
        (["FL3-A"], ["PI"], "FL3-A"),
        (["V450-A"], ["Zombie Violet"], "V450-A"),
        (["APC-Cy7-A"], ["FVS780"], "APC-Cy7-A"),
        (["APC-Cy7-A"], ["eFluor 780 fixable viability"], "APC-Cy7-A"),
        (["7-AAD-A"], [""], "7-AAD-A"),  # $PnN names the dye, $PnS blank
        (["DAPI-A"], ["CD90"], None),  # $PnN is a detector name, $PnS a marker
        (["V450-A"], ["VIVID / CD14"], None),  # dump channel with a marker: not a live gate
        (["FITC-A", "PE-A"], ["CD90", "CD105"], None),
        (["PIPE-A"], [""], None),  # "PI" only as a whole word
    ],
)
def test_find_viability(pnn, pns, expect):
    assert find_viability(pnn, pns) == expect


def _corpus_channels(path):
    flowio = pytest.importorskip("flowio")
    try:
        text = flowio.FlowData(str(path), only_text=True, ignore_offset_error=True).text
    except flowio.exceptions.MultipleDataSetsError:
        text = flowio.read_multiple_data_sets(str(path), only_text=True, ignore_offset_error=True)[
            0
        ].text
    except Exception as err:  # noqa: BLE001 - an unreadable corpus file is skipped, not failed
        pytest.skip(f"{path.name} not readable by flowio: {err}")
    n = int(text["par"])
    return (
        [text.get(f"p{i}n", "") for i in range(1, n + 1)],
        [text.get(f"p{i}s", "") for i in range(1, n + 1)],
    )


@pytest.mark.parametrize(
    "rel, expect",
    [
        (
            "fcsparser/Fortessa/FCS_3.0_Fortessa_PBS_Specimen_001_A1_A01.fcs",
            ("FSC-A", "FSC-H", "FSC-W", "SSC-A", "SSC-H", "Time"),
        ),
        ("fcsparser/FACS_Diva/facs_diva_test.fcs", ("FSC-A", None, "FSC-W", "SSC-A", None, "Time")),
        (
            "FlowKit/data/multi_dataset_fcs/coulter.lmd",
            ("FS Lin", None, None, "SS Lin", None, None),
        ),
        (
            "fcsparser/fake_bitmask_error/fcs1_cleaned.lmd",
            ("FS INT LIN", None, None, "SS INT LIN", None, None),
        ),
        (
            "fcsparser/FACSCaliburHTS/Sample_Well_A02.fcs",
            (None, "FSC-H", None, None, "SSC-H", "Time"),
        ),
        (
            "fcsparser/MiltenyiBiotec/FCS3.0/FCS3.0_Custom_Compatible.fcs",
            ("FSC-A", "FSC-H", "FSC-W", "SSC-A", "SSC-H", "HDR-T"),
        ),
        ("fcsparser/cyflow_cube_8/cyflow_cube_8.fcs", ("FSC", None, None, "SSC", None, "TIME")),
        ("FlowCal/test/Data003.fcs", ("FSCA", "FSC", "FSCW", "SSC", None, "TIME")),
    ],
)
def test_corpus_scatter(corpus, rel, expect):
    pnn, pns = _corpus_channels(corpus / rel)
    sc = find_scatter(pnn, pns)
    assert (sc.fsc_a, sc.fsc_h, sc.fsc_w, sc.ssc_a, sc.ssc_h, sc.time) == expect


def test_corpus_viability_and_fluorescence(corpus):
    pnn, pns = _corpus_channels(corpus / "FlowKit/data/index_sorted/index_sorted_example.fcs")
    assert find_viability(pnn, pns) == "BL 695/40-A"
    pnn, pns = _corpus_channels(corpus / "FlowSOM_Python/tests/data/ff.fcs")
    assert find_viability(pnn, pns) == "AmCyan-A"
    fluo = [n for n, s in zip(pnn, pns, strict=True) if is_fluorescence(n, s)]
    assert fluo[0] == "FITC-A" and len(fluo) == 11
    pnn, pns = _corpus_channels(
        corpus / "fcsparser/MiltenyiBiotec/FCS3.1/EY_2013-07-19_PBS_FCS_3.1_Well_A1.001.fcs"
    )
    fluo = [n for n, s in zip(pnn, pns, strict=True) if is_fluorescence(n, s)]
    assert fluo == ["FL2-A", "FL2-H", "FL2-W", "FL4-A", "FL4-H", "FL4-W", "FL7-A", "FL7-H", "FL7-W"]
