"""The issue's stress grid, and a held-out grid the method was not tuned on.

Truth: cytomsc/simulate/populations.py's cultures, whose populations and labels are set when
they are made.
``heavy`` (the stress grid, seed 1000): every population with its own correlation and width,
t tails (8-20 df) and skew. ``skewed`` (held out, seed 5000, never used while choosing the
method): t tails of 4-8 df and twice the skew. The ceiling is a QDA trained on the true labels
(what a rule that knows the answer reaches on these events).

Targets (issue 10): homogeneous cultures are one population in >= 90 %; populations >= 3.5 SD
apart and >= 5 % get the right number in >= 90 %, with an ARI within 0.05 of the ceiling. The
held-out grid is held to the same counts; its ARI is within 0.05 of the ceiling in >= 85 % and
within 0.1 in all (docs/heterogeneity-validation.md has every culture).
"""

from __future__ import annotations

import numpy as np
import pytest

from cytomsc.simulate.populations import stress_grid
from cytomsc.simulate.scoring import grid_row

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def heavy() -> list[dict]:
    return [grid_row(c) for c in stress_grid("heavy", seed=1000)]


@pytest.fixture(scope="module")
def held_out() -> list[dict]:
    return [grid_row(c) for c in stress_grid("skewed", seed=5000)]


def _check(rows: list[dict], near_share: float, worst_gap: float) -> None:
    homo = [r["found"] == 1 for r in rows if r["k"] == 1]
    assert len(homo) == 12 and np.mean(homo) >= 0.9, [
        r["name"] for r in rows if r["k"] == 1 and r["found"] != 1
    ]
    req = [r for r in rows if r["required"]]
    right = [r for r in req if r["found"] == r["k"]]
    assert len(req) >= 12 and len(right) >= 0.9 * len(req), [
        (r["name"], r["found"]) for r in req if r["found"] != r["k"]
    ]
    gaps = [r["ceiling"] - r["ari"] for r in right]
    assert np.mean([g <= 0.05 for g in gaps]) >= near_share, [
        (r["name"], round(r["ari"], 3), round(r["ceiling"], 3)) for r in right
    ]
    assert max(gaps) <= worst_gap


def test_stress_grid(heavy):
    _check(heavy, near_share=1.0, worst_gap=0.05)


def test_below_the_required_separation_nothing_is_invented(heavy):
    """At 2-3 SD a population is a shoulder; it may be missed, but the culture is not split
    into more populations than it has."""
    weak = [r for r in heavy if r["k"] > 1 and not r["required"]]
    assert len(weak) >= 12
    assert all(r["found"] <= r["k"] for r in weak), [
        (r["name"], r["found"]) for r in weak if r["found"] > r["k"]
    ]


def test_held_out_grid(held_out):
    _check(held_out, near_share=0.85, worst_gap=0.1)
