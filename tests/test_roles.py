"""A tube's role: typed parts, the text labs write, and nothing else accepted."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from cytomsc.layout import Tube, role_of
from cytomsc.panel import load_panel
from cytomsc.roles import Role


def test_parts_by_name_and_the_text_unchanged() -> None:
    fmo = Role("fmo:CD73")
    assert (fmo.kind, fmo.target) == ("fmo", "CD73")
    assert fmo == "fmo:CD73" and json.dumps({"role": fmo}) == '{"role": "fmo:CD73"}'
    assert fmo.controls_for(("CD73",)) and not fmo.controls_for(("CD90",))
    assert (Role("isotype").kind, Role("isotype").target) == ("isotype", "")
    assert Role.single("FITC") == "single:FITC" and Role.single("FITC").kind == "single"
    back = pickle.loads(pickle.dumps(fmo))  # a job crosses processes and machines
    assert type(back) is Role and back.target == "CD73"


@pytest.mark.parametrize("text", ["", "fmo", "fmo:", "stained:CD73", "control", "FMO:CD73"])
def test_any_other_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a tube role"):
        Role(text)


def test_layout_gives_roles() -> None:
    panel = load_panel("isct-2006")
    role = role_of({"tube name": "FMO Thy-1"}, Path("x/t.fcs"), panel)
    assert isinstance(role, Role) and role.kind == "fmo" and role.target == "CD90"
    assert role_of({}, Path("x/MSC_unstained.fcs"), panel).kind == "unstained"
    tube = Tube(Path("a.fcs"), "isotype")  # text given: checked and typed once
    assert isinstance(tube.role, Role)
    with pytest.raises(ValueError):
        Tube(Path("a.fcs"), "nonsense")
