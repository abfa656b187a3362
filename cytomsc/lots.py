"""Comparability of lots: is % positive the same after a process change, within a margin?

``cytomsc compare-lots`` compares two lots, or two groups of lots (before and after a change),
marker by marker. For each marker it gives the difference in % positive (after - before, in
percentage points) with its 95 % interval, and an equivalence test against the margin the user
gives (TOST, two one-sided tests at 5 %: the groups are declared equivalent when both "the
difference is at least -margin" and "at most +margin" are rejected, which is the same as the 90 %
interval lying inside +-margin). It also gives the difference in population fractions.

The uncertainty depends on what is compared:

- **two single lots**: each lot's % positive is a count of positive events among the events
  read, so the difference of two proportions is used, with the Agresti-Caffo adjustment (one
  positive and one negative event added to each lot) that keeps the normal interval honest near
  0 % and 100 %. This is measurement uncertainty only: two lots of one process differ by more
  than their event counts say, so a single-lot comparison is weaker evidence than groups;
- **groups of at least 2 lots each**: the lots' values, Welch's t (unequal variances);
- **one lot against a group**: Student's t with the pooled variance of the group.

Population fractions are compared the same way on the lots' fractions (groups), or as the plain
difference for two single lots (a clustering gives no count-based interval for batch fractions).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from .errors import CytomscError
from .history import Lot, judged_markers

ALPHA = 0.05


@dataclass(frozen=True)
class Group:
    """One side of the comparison."""

    name: str  # "before" / "after", or "A" / "B"
    lots: tuple[Lot, ...]

    def describe(self) -> str:
        names = ", ".join(x.lot for x in self.lots)
        dates = sorted(x.when for x in self.lots)
        when = (
            dates[0].isoformat()
            if len(dates) == 1
            else f"{dates[0].isoformat()} to {dates[-1].isoformat()}"
        )
        return f"{len(self.lots)} lot(s): {names} ({when})"


@dataclass(frozen=True)
class Difference:
    """A difference (b - a) with its uncertainty and, with a margin, the TOST outcome."""

    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    diff: float
    se: float | None
    df: float | None  # None: normal approximation
    ci95: tuple[float, float] | None
    ci90: tuple[float, float] | None
    method: str
    margin: float | None = None
    p_lower: float | None = None  # H0: diff <= -margin
    p_upper: float | None = None  # H0: diff >= +margin
    p_tost: float | None = None
    equivalent: bool | None = None


@dataclass(frozen=True)
class MarkerComparison:
    marker: str
    expect: str
    difference: Difference


@dataclass(frozen=True)
class PopulationComparison:
    label: str
    difference: Difference | None  # None: the population's fractions are missing on one side


@dataclass(frozen=True)
class Comparison:
    a: Group
    b: Group
    markers: tuple[MarkerComparison, ...]
    populations: tuple[PopulationComparison, ...]
    source: str = ""
    skipped: tuple[str, ...] = ()  # markers not measured on both sides


# ---- statistics ------------------------------------------------------------------------------
def _quantile(df: float | None, q: float) -> float:
    from scipy import stats

    return float(stats.norm.ppf(q) if df is None else stats.t.ppf(q, df))


def _sf(x: float, df: float | None) -> float:
    from scipy import stats

    return float(stats.norm.sf(x) if df is None else stats.t.sf(x, df))


def _finish(
    n_a: int,
    n_b: int,
    mean_a: float,
    mean_b: float,
    diff: float,
    se: float,
    df: float | None,
    method: str,
    margin: float | None,
    centre: float | None = None,
) -> Difference:
    """Intervals and the two one-sided tests from a difference, its SE and degrees of freedom;
    ``centre`` (default: the difference) is where the intervals and tests are centred."""
    mid = diff if centre is None else centre
    if not se > 0:  # no spread at all: the difference is exact
        ci = (mid, mid)
        out = Difference(n_a, n_b, mean_a, mean_b, diff, 0.0, df, ci, ci, method)
        if margin is None:
            return out
        inside = -margin < mid < margin
        p = 0.0 if inside else 1.0
        return Difference(
            n_a, n_b, mean_a, mean_b, diff, 0.0, df, ci, ci, method, margin, p, p, p, inside
        )
    h95 = _quantile(df, 0.975) * se
    h90 = _quantile(df, 1 - ALPHA) * se
    ci95, ci90 = (mid - h95, mid + h95), (mid - h90, mid + h90)
    if margin is None:
        return Difference(n_a, n_b, mean_a, mean_b, diff, se, df, ci95, ci90, method)
    p_lower = _sf((mid + margin) / se, df)
    p_upper = _sf((margin - mid) / se, df)
    p = max(p_lower, p_upper)
    return Difference(
        n_a,
        n_b,
        mean_a,
        mean_b,
        diff,
        se,
        df,
        ci95,
        ci90,
        method,
        margin,
        p_lower,
        p_upper,
        p,
        p < ALPHA,
    )


def welch(a: list[float], b: list[float], margin: float | None = None) -> Difference:
    """mean(b) - mean(a) by Welch's t (each group >= 2 values)."""
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        raise ValueError("Welch's t needs at least 2 values per group")
    ma, mb = math.fsum(a) / na, math.fsum(b) / nb
    va = math.fsum((x - ma) ** 2 for x in a) / (na - 1)
    vb = math.fsum((x - mb) ** 2 for x in b) / (nb - 1)
    qa, qb = va / na, vb / nb
    se = math.sqrt(qa + qb)
    df = (qa + qb) ** 2 / (qa**2 / (na - 1) + qb**2 / (nb - 1)) if se > 0 else None
    return _finish(na, nb, ma, mb, mb - ma, se, df, "Welch t on lot values", margin)


def pooled(a: list[float], b: list[float], margin: float | None = None) -> Difference:
    """mean(b) - mean(a) by Student's t with the pooled variance (n_a + n_b >= 3)."""
    na, nb = len(a), len(b)
    if na < 1 or nb < 1 or na + nb < 3:
        raise ValueError("the pooled t needs at least 3 values in all")
    ma, mb = math.fsum(a) / na, math.fsum(b) / nb
    ss = math.fsum((x - ma) ** 2 for x in a) + math.fsum((x - mb) ** 2 for x in b)
    df = na + nb - 2
    se = math.sqrt(ss / df * (1 / na + 1 / nb))
    return _finish(na, nb, ma, mb, mb - ma, se, float(df), "Student t, pooled variance", margin)


def proportions(
    pct_a: float, n_a: int, pct_b: float, n_b: int, margin: float | None = None
) -> Difference:
    """pct_b - pct_a (percentage points) for two lots' event counts; the interval and the tests
    are Agresti-Caffo's (centred on the adjusted proportions)."""
    if n_a < 1 or n_b < 1:
        raise ValueError("event counts must be positive")
    xa, xb = round(pct_a / 100 * n_a), round(pct_b / 100 * n_b)
    pa, pb = (xa + 1) / (n_a + 2), (xb + 1) / (n_b + 2)
    se = 100 * math.sqrt(pa * (1 - pa) / (n_a + 2) + pb * (1 - pb) / (n_b + 2))
    return _finish(
        n_a,
        n_b,
        pct_a,
        pct_b,
        pct_b - pct_a,
        se,
        None,
        "difference of proportions (events, Agresti-Caffo)",
        margin,
        centre=100 * (pb - pa),
    )


def compare_values(a: list[float], b: list[float], margin: float | None = None) -> Difference:
    """Welch with >= 2 values per side, else the pooled t (one side has 1)."""
    if len(a) >= 2 and len(b) >= 2:
        return welch(a, b, margin)
    return pooled(a, b, margin)


# ---- lots -------------------------------------------------------------------------------------
def parse_margins(values: tuple[str, ...]) -> tuple[float | None, dict[str, float]]:
    """``--margin 2`` (every marker) and ``--margin CD105=1`` (one marker), in points."""
    default: float | None = None
    per: dict[str, float] = {}
    for v in values:
        name, eq, number = v.rpartition("=")
        try:
            x = float(number)
        except ValueError:
            raise CytomscError(f"--margin {v}: not a number of percentage points") from None
        if not x > 0 or not math.isfinite(x):
            raise CytomscError(f"--margin {v}: the margin must be above 0")
        if eq:
            per[name.strip()] = x
        else:
            default = x
    return default, per


def split_groups(
    lots: list[Lot], a: list[str] | None, b: list[str] | None, split: date | None
) -> tuple[Group, Group]:
    """Two groups from named lots, or lots acquired before / on or after ``split``."""
    if split is not None:
        before = tuple(x for x in lots if x.when < split)
        after = tuple(x for x in lots if x.when >= split)
        if not before or not after:
            raise CytomscError(
                f"--split {split.isoformat()}: no lots on "
                f"{'or after' if not after else 'before'} that date"
            )
        return Group("before", before), Group("after", after)
    if not a or not b:
        raise CytomscError(
            "name two lots (or two comma-separated groups of lots), or give --split DATE"
        )
    by_name = {x.lot: x for x in lots}
    missing = [n for n in a + b if n not in by_name]
    if missing:
        raise CytomscError("no such lot in the results database: " + ", ".join(missing))
    both = set(a) & set(b)
    if both:
        raise CytomscError("a lot cannot be on both sides: " + ", ".join(sorted(both)))
    return (
        Group("A", tuple(by_name[n] for n in dict.fromkeys(a))),
        Group("B", tuple(by_name[n] for n in dict.fromkeys(b))),
    )


def compare(
    a: Group,
    b: Group,
    default_margin: float | None,
    margins: dict[str, float],
    markers: list[str] | None = None,
    source: str = "",
) -> Comparison:
    """Every judged marker measured on both sides, and every population label."""
    judged = judged_markers(list(a.lots) + list(b.lots))
    unknown = sorted(set(margins) - set(judged))
    if unknown:
        raise CytomscError("--margin: not a judged marker of these lots: " + ", ".join(unknown))
    if markers:
        judged = [m for m in judged if m in markers]
    rows, skipped = [], []
    for marker in judged:
        va = [x.markers[marker] for x in a.lots if _measured(x, marker)]
        vb = [x.markers[marker] for x in b.lots if _measured(x, marker)]
        pa = [float(m.percent_positive or 0.0) for m in va]  # measured: never None here
        pb = [float(m.percent_positive or 0.0) for m in vb]
        if not va or not vb or len(va) + len(vb) < 2:
            skipped.append(marker)
            continue
        margin = margins.get(marker, default_margin)
        if len(va) == 1 and len(vb) == 1:
            ma, mb = va[0], vb[0]
            if not ma.events or not mb.events:
                skipped.append(marker)
                continue
            d = proportions(pa[0], ma.events, pb[0], mb.events, margin)
        else:
            d = compare_values(pa, pb, margin)
        expect = next((m.expect for m in va + vb if m.expect), "positive")
        rows.append(MarkerComparison(marker, expect, d))
    return Comparison(
        a=a,
        b=b,
        markers=tuple(rows),
        populations=_populations(a, b),
        source=source,
        skipped=tuple(skipped),
    )


def _measured(lot: Lot, marker: str) -> bool:
    m = lot.markers.get(marker)
    return m is not None and m.percent_positive is not None


def _populations(a: Group, b: Group) -> tuple[PopulationComparison, ...]:
    """Per population label, each clustered lot's fraction in % (0 where a clustered lot lacks
    the label); lots that were not clustered are left out."""
    labels: dict[str, float] = {}
    for lot in a.lots + b.lots:
        for label, f in lot.populations:
            labels[label] = labels.get(label, 0.0) + f
    out = []
    for label in sorted(labels, key=lambda k: (-labels[k], k)):
        fa = [100 * dict(x.populations).get(label, 0.0) for x in a.lots if x.populations]
        fb = [100 * dict(x.populations).get(label, 0.0) for x in b.lots if x.populations]
        if not fa or not fb:
            out.append(PopulationComparison(label, None))
        elif len(fa) + len(fb) < 3:
            ma, mb = fa[0], fb[0]
            out.append(
                PopulationComparison(
                    label,
                    Difference(
                        1,
                        1,
                        ma,
                        mb,
                        mb - ma,
                        None,
                        None,
                        None,
                        None,
                        "single lots: difference only",
                    ),
                )
            )
        else:
            out.append(PopulationComparison(label, compare_values(fa, fb)))
    return tuple(out)


# ---- outputs ----------------------------------------------------------------------------------
MARKER_COLUMNS = (
    "marker",
    "expect",
    "group_a",
    "group_b",
    "n_a",
    "n_b",
    "mean_a",
    "mean_b",
    "difference",
    "ci95_low",
    "ci95_high",
    "ci90_low",
    "ci90_high",
    "se",
    "df",
    "margin",
    "p_lower",
    "p_upper",
    "p_tost",
    "equivalent",
    "method",
)
POPULATION_COLUMNS = (
    "population",
    "n_a",
    "n_b",
    "mean_a",
    "mean_b",
    "difference",
    "ci95_low",
    "ci95_high",
    "method",
)


def _f(v: float | None) -> str:
    return "" if v is None else repr(float(v))


def markers_csv(c: Comparison) -> str:
    rows = []
    for m in c.markers:
        d = m.difference
        rows.append(
            {
                "marker": m.marker,
                "expect": m.expect,
                "group_a": " ".join(x.lot for x in c.a.lots),
                "group_b": " ".join(x.lot for x in c.b.lots),
                "n_a": d.n_a,
                "n_b": d.n_b,
                "mean_a": _f(d.mean_a),
                "mean_b": _f(d.mean_b),
                "difference": _f(d.diff),
                "ci95_low": _f(d.ci95[0]) if d.ci95 else "",
                "ci95_high": _f(d.ci95[1]) if d.ci95 else "",
                "ci90_low": _f(d.ci90[0]) if d.ci90 else "",
                "ci90_high": _f(d.ci90[1]) if d.ci90 else "",
                "se": _f(d.se),
                "df": _f(d.df),
                "margin": _f(d.margin),
                "p_lower": _f(d.p_lower),
                "p_upper": _f(d.p_upper),
                "p_tost": _f(d.p_tost),
                "equivalent": "" if d.equivalent is None else str(d.equivalent).lower(),
                "method": d.method,
            }
        )
    return _csv(MARKER_COLUMNS, rows)


def populations_csv(c: Comparison) -> str:
    rows = []
    for p in c.populations:
        d = p.difference
        rows.append(
            {
                "population": p.label,
                "n_a": d.n_a if d else "",
                "n_b": d.n_b if d else "",
                "mean_a": _f(d.mean_a) if d else "",
                "mean_b": _f(d.mean_b) if d else "",
                "difference": _f(d.diff) if d else "",
                "ci95_low": _f(d.ci95[0]) if d and d.ci95 else "",
                "ci95_high": _f(d.ci95[1]) if d and d.ci95 else "",
                "method": d.method if d else "missing on one side",
            }
        )
    return _csv(POPULATION_COLUMNS, rows)


def _csv(columns: tuple[str, ...], rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_comparison(c: Comparison, out_dir: Path) -> list[str]:
    """compare.pdf (one page), compare.csv and compare-populations.csv inside ``out_dir``."""
    from .output import OutputDir
    from .report import comparison

    out = OutputDir(out_dir)
    out.write_text(markers_csv(c), "compare.csv")
    out.write_text(populations_csv(c), "compare-populations.csv")
    with out.atomic("compare.pdf") as tmp:
        comparison.write_pdf(c, tmp)
    return sorted(out.written)


def run_compare(
    db: str,
    out_dir: Path,
    *,
    a: list[str] | None,
    b: list[str] | None,
    split: date | None,
    margins: tuple[str, ...],
    markers: list[str] | None = None,
    panel: str | None = None,
) -> tuple[Comparison, list[str]]:
    """``cytomsc compare-lots``: read the store, compare, write the page into ``out_dir``."""
    from . import store
    from .history import load_lots

    default, per = parse_margins(margins)
    if default is None and not per:
        raise CytomscError("--margin: give the equivalence margin in percentage points")
    engine = store.connect(db, write=False)
    try:
        lots = load_lots(engine, panel=panel)
    finally:
        engine.dispose()
    ga, gb = split_groups(lots, a, b, split)
    c = compare(ga, gb, default, per, markers=markers, source=store.shown(store.database_url(db)))
    return c, write_comparison(c, out_dir)
