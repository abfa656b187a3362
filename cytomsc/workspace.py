"""The lab's own gates: a FlowJo 10 workspace (.wsp) or a GatingML 2.0 file, applied by FlowKit.

A lab validating cytomsc gates its tubes by hand today; ``--gates FILE`` lets it analyse with those
gates instead of the automatic ones, and ``compare`` measures one against the other. FlowKit reads
the file and applies it (``flowkit.Workspace`` for .wsp, ``flowkit.parse_gating_xml`` for
GatingML), so the counts are FlowKit's: on the FlowSOM example workspace they are within 0.1 % of
FlowJo's own (Lymphocytes 19,225 against 19,212).

Which gates of the file belong to which tube: a FlowJo workspace names its samples; a tube is
matched by its file name, then case-insensitively, then by its ``$FIL`` keyword. A tube the
workspace lacks is an error for that tube. A GatingML file has one gate tree for every tube.

Gate paths are written from the root without it, ``/Lymphocytes/Singlets``. The analysed
population is ``--gate-path``, or by default the deepest chain of gates that every tube of the
culture shares, where each gate is the only child of its parent, stopping before the first gate on
a marker channel (% positive is measured on all cells, not on a phenotype).

Which workspace gate corresponds to which cytomsc gate is decided by the gate's dimensions,
stated once here and in the README (``correspond``); ``compare --match`` overrides it:

- time: a gate with the time channel among its dimensions;
- cells: a gate on exactly one forward- and one side-scatter channel (FSC-A/SSC-A, FSC-H/SSC-H);
- singlets: a gate on two measures (area, height, width) of one detector (FSC-A/FSC-H,
  FSC-H/FSC-W, SSC-H/SSC-W, FL2-A/FL2-H), or on FSC-W alone;
- live: a gate on the viability dye's channel, alone or against a scatter channel;
- a marker's positive gate: a gate on that marker's channel (alone or against scatter) named
  "<marker>+" / "<marker> pos", or a rectangle with a lower bound on it and no upper bound.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import CytomscError
from .results import GATE_ORDER, GateStep, Histogram2D, InputError

if TYPE_CHECKING:  # pragma: no cover
    from .fcs import FcsData
    from .gating import GatingOutcome

SLOTS = ("time", "cells", "singlets", "live")  # cytomsc gates a workspace gate can stand for


class WorkspaceError(CytomscError):
    """A gates file that cannot be used, or a tube or gate path it lacks."""


@dataclass(frozen=True)
class LabGate:
    """One gate of the lab's tree: FlowKit's name and ancestor path, kind and dimensions."""

    name: str
    ancestors: tuple[str, ...]  # FlowKit's gate path: ("root", "Lymphocytes", ...)
    kind: str  # FlowKit's class name: PolygonGate, RectangleGate, BooleanGate, ...
    channels: tuple[str, ...]  # dimension ids (PnN as the file names them)

    @property
    def path(self) -> str:
        """'/Lymphocytes/Singlets' (the root left out)."""
        return "/" + "/".join([*self.ancestors[1:], self.name])

    @property
    def parent_path(self) -> str:
        return "/" + "/".join(self.ancestors[1:]) if len(self.ancestors) > 1 else "/"


@dataclass
class LabGates:
    """A parsed gates file; ``strategy(sample_id)`` gives FlowKit's gates for one sample."""

    source: Path
    kind: str  # "FlowJo workspace" | "GatingML"
    sha256: str
    workspace: Any = None  # flowkit.Workspace (gate data only, no samples loaded)
    gating: Any = None  # flowkit.GatingStrategy (GatingML)

    @property
    def name(self) -> str:
        return self.source.name

    def sample_ids(self) -> list[str]:
        if self.workspace is None:
            return []
        return sorted(self.workspace.get_sample_ids(loaded_only=False))

    def sample_for(self, fcs: FcsData, tube_name: str) -> str:
        """The workspace sample holding this tube's gates (GatingML: one tree for all)."""
        if self.workspace is None:
            return tube_name
        ids = self.sample_ids()
        names = [tube_name, Path(fcs.path).name, fcs.keywords.get("fil", "")]
        for name in names:
            if name in ids:
                return name
        low = {i.lower(): i for i in ids}
        for name in names:
            if name and name.lower() in low:
                return low[name.lower()]
        listed = ", ".join(ids[:6]) + (", ..." if len(ids) > 6 else "")
        raise WorkspaceError(
            f"not in the workspace {self.name} (its samples: {listed or 'none'})", fcs.path
        )

    def strategy(self, sample_id: str) -> Any:
        if self.workspace is None:
            return copy.deepcopy(self.gating)
        return self.workspace.get_gating_strategy(sample_id)

    def tree(self, sample_id: str) -> list[LabGate]:
        gs = self.strategy(sample_id)
        out = []
        for name, ancestors in gs.get_gate_ids():
            gate = gs.get_gate(name, ancestors, sample_id=sample_id)
            out.append(
                LabGate(name, tuple(ancestors), type(gate).__name__, tuple(_dimension_ids(gate)))
            )
        return out


def _dimension_ids(gate: Any) -> list[str]:
    out = []
    for d in getattr(gate, "dimensions", []) or []:
        ident = (
            getattr(d, "id", None)
            or getattr(d, "dimension_ref", None)
            or getattr(d, "ratio_ref", None)
        )
        if ident:
            out.append(str(ident))
    return out


def load_lab_gates(path: str | Path) -> LabGates:
    """Parse a FlowJo 10 workspace or a GatingML 2.0 file (one line of error otherwise)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as err:
        raise WorkspaceError(f"cannot read the gates file ({err.strerror or err})", p) from None
    return _load(str(p.resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime: int, size: int) -> LabGates:
    """One parse per file and process (each culture of a batch asks again)."""
    import warnings

    import flowkit

    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise WorkspaceError(f"cannot read the gates file ({err.strerror or err})", p) from None
    digest = hashlib.sha256(raw).hexdigest()
    head = raw[:4096].decode("latin-1", "replace")
    flowjo = re.search(r'flowJoVersion="(\d+)', head)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if flowjo:
                if int(flowjo.group(1)) < 10:
                    raise WorkspaceError(
                        f"a FlowJo {flowjo.group(1)} workspace: FlowKit reads "
                        "FlowJo 10 workspaces (.wsp) and GatingML 2.0 only; "
                        "re-save it in FlowJo 10",
                        p,
                    )
                ws = flowkit.Workspace(io.BytesIO(raw), load_missing_file_data=True)
                return LabGates(p, "FlowJo workspace", digest, workspace=ws)
            gs = flowkit.parse_gating_xml(io.BytesIO(raw))
            return LabGates(p, "GatingML", digest, gating=gs)
    except WorkspaceError:
        raise
    except Exception as err:  # noqa: BLE001 - FlowKit raises many kinds; one line for the user
        raise WorkspaceError(
            f"not a FlowJo 10 workspace or a valid GatingML 2.0 file ({_why(err, raw)})", p
        ) from None


def _why(err: Exception, raw: bytes) -> str:
    """FlowKit's reason, with the GatingML schema's first complaint when it has one."""
    reason = " ".join(str(err).split()) or type(err).__name__
    try:
        from flowkit._resources import gml_schema  # FlowKit's own GatingML 2.0 schema
        from lxml import etree

        if not gml_schema.validate(etree.parse(io.BytesIO(raw))):
            last = gml_schema.error_log.last_error
            if last is not None:
                msg = re.sub(r"\{[^}]*\}", "", last.message)
                reason += f"; schema, line {last.line}: {msg}"
    except Exception:  # noqa: BLE001 - the extra detail is optional
        pass
    return reason


# ---------------------------------------------------------------------------------------------
# Which workspace gate is which cytomsc gate


def _kind_of(channel: str, pnn: list[str], pns: list[str]) -> tuple[str, str, str]:
    """(family, measure, detector) of a channel: ("FSC"|"SSC"|"TIME"|"FL", "A"|"H"|"W"|"",
    detector name without the measure)."""
    from .channels import is_time, scatter_family

    if is_time(channel):
        return "TIME", "", channel
    fam = scatter_family(channel)
    m = re.match(r"^(.*?)[\s\-_]?(A|H|W|AREA|HEIGHT|WIDTH)$", channel.strip(), re.I)
    measure = m.group(2)[0].upper() if m else ""
    base = m.group(1) if m else channel
    if fam:
        return fam, measure, fam
    return "FL", measure, base.upper()


def correspond(gate: LabGate, pnn: list[str], pns: list[str]) -> str | None:
    """The cytomsc gate a workspace gate stands for (module docstring), or None."""
    from .channels import find_viability

    dims = [_kind_of(c, pnn, pns) for c in gate.channels]
    families = [d[0] for d in dims]
    if not dims or gate.kind in ("BooleanGate", "QuadrantGate"):
        return None
    if "TIME" in families:
        return "time"
    viability = find_viability(pnn, pns)
    flowjo = {c.replace("/", "_"): c for c in pnn}
    real = [flowjo.get(c, c) for c in gate.channels]
    fluo = [c for c, f in zip(real, families, strict=True) if f == "FL"]
    if viability and fluo == [viability]:
        return "live"
    if sorted(families) == ["FSC", "SSC"]:
        return "cells"
    if (
        len(dims) == 2
        and dims[0][2] == dims[1][2]
        and dims[0][1] != dims[1][1]
        and dims[0][1]
        and dims[1][1]
    ):
        return "singlets"
    if dims == [("FSC", "W", "FSC")]:
        return "singlets"
    return None


def is_positive_gate(
    gate: LabGate, strategy: Any, sample_id: str, channel: str, names: list[str]
) -> bool:
    """Whether a gate selects the positive cells of one marker channel: on that channel (alone or
    against scatter), named "<marker>+" / "<marker> pos", or a rectangle bounded below on it and
    open above. ``names``: the marker's name and aliases."""
    from .channels import is_scatter

    flowjo = channel.replace("/", "_")
    others = [c for c in gate.channels if c not in (channel, flowjo)]
    if len(others) == len(gate.channels) or any(not is_scatter(c) for c in others):
        return False
    label = re.sub(r"[\s_\-.]", "", gate.name.upper())
    for n in names:
        key = re.sub(r"[\s_\-.]", "", n.upper())
        if label in (key + "+", key + "POS", key + "POSITIVE", "+" + key):
            return True
    if gate.kind != "RectangleGate":
        return False
    g = strategy.get_gate(gate.name, gate.ancestors, sample_id=sample_id)
    for d in g.dimensions:
        if getattr(d, "id", None) in (channel, flowjo):
            return d.min is not None and d.max is None
    return False


def default_path(trees: list[list[LabGate]], pnn: list[str], pns: list[str]) -> str:
    """The deepest chain of only-children from the root common to every tube, stopping before
    the first gate on a marker channel; '/' when the trees branch at once."""
    chains = []
    for tree in trees:
        kids: dict[str, list[LabGate]] = {}
        for g in tree:
            kids.setdefault(g.parent_path, []).append(g)
        chain, at = [], "/"
        while len(kids.get(at, [])) == 1:
            g = kids[at][0]
            if correspond(g, pnn, pns) is None and any(
                _kind_of(c, pnn, pns)[0] == "FL" for c in g.channels
            ):
                break
            chain.append(g.path)
            at = g.path
        chains.append(chain)
    common: list[str] = []
    for level in zip(*chains, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return common[-1] if common else "/"


def normal_path(text: str) -> str:
    """'/Lymphocytes/Singlets' from what a user types ('Lymphocytes/Singlets', 'root/...')."""
    t = text.strip()
    if t.startswith("root/") or t == "root":
        t = t[4:]
    return "/" + t.strip("/") if t.strip("/") else "/"


def find_gate(tree: list[LabGate], path: str, where: str, source: str) -> LabGate | None:
    """The gate at ``path`` ('/' is the root: None); an error that lists the tree otherwise."""
    path = normal_path(path)
    if path == "/":
        return None
    for g in tree:
        if g.path == path:
            return g
    known = ", ".join(g.path for g in tree[:8]) + (", ..." if len(tree) > 8 else "")
    raise WorkspaceError(
        f"no gate {path} in {source} for this tube (its gates: {known or 'none'})", where
    )


def check_gate_path(lab: LabGates, path: str | None) -> None:
    """A ``--gate-path`` that is in no sample of the file is a usage error, found before any
    work (a path only some tubes lack is an error for those tubes)."""
    if not path or normal_path(path) == "/":
        return
    want = normal_path(path)
    trees = [lab.tree(s) for s in lab.sample_ids()] if lab.workspace is not None else [lab.tree("")]
    paths = sorted({g.path for t in trees for g in t})
    if want not in paths:
        known = ", ".join(paths[:8]) + (", ..." if len(paths) > 8 else "")
        raise WorkspaceError(f"no gate {want} in {lab.name} (its gates: {known or 'none'})")


# ---------------------------------------------------------------------------------------------
# Applying the gates to a tube


@dataclass
class AppliedGates:
    """The lab's gates applied to one tube by FlowKit: membership of every gate."""

    sample_id: str
    tree: list[LabGate]
    strategy: Any
    sample: Any  # the flowkit.Sample the gates were applied to (id = sample_id)
    members: dict[str, np.ndarray] = field(default_factory=dict)  # path -> events inside

    def member(self, path: str) -> np.ndarray:
        path = normal_path(path)
        if path == "/":
            return np.ones(int(self.sample.event_count), dtype=bool)
        return self.members[path]

    def gate(self, path: str) -> LabGate:
        return next(g for g in self.tree if g.path == normal_path(path))


def apply_lab_gates(lab: LabGates, fcs: FcsData, tube_name: str) -> AppliedGates:
    """Every gate of the file applied to one tube by FlowKit (``GatingStrategy.gate_sample``)."""
    sample_id = lab.sample_for(fcs, tube_name)
    strategy = lab.strategy(sample_id)
    tree = lab.tree(sample_id)
    sample = copy.copy(fcs.sample)  # shares the events; only the id differs (custom gates)
    sample.id = sample_id
    try:
        results = strategy.gate_sample(sample)
    except Exception as err:  # noqa: BLE001 - a gate naming a channel the tube lacks, ...
        raise WorkspaceError(
            f"FlowKit could not apply {lab.name} to it: {' '.join(str(err).split())}", fcs.path
        ) from None
    members = {
        g.path: np.asarray(results.get_gate_membership(g.name, g.ancestors), dtype=bool)
        for g in tree
    }
    return AppliedGates(sample_id, tree, strategy, sample, members)


def manual_outcome(
    applied: AppliedGates, fcs: FcsData, tube_name: str, path: str, source: str
) -> GatingOutcome:
    """The chain of workspace gates from the root to ``path`` as the tube's gating: every gate a
    ``GateStep`` marked manual, and the cumulative masks of cytomsc's funnel (each step holds the
    deepest workspace gate that corresponds to it or to an earlier step; the last holds the
    analysed population itself)."""
    from .gating import GatingOutcome

    target = find_gate(applied.tree, path, str(fcs.path), source)
    chain: list[LabGate] = []
    g = target
    while g is not None:
        chain.insert(0, g)
        g = next((p for p in applied.tree if p.path == g.parent_path), None)
    pnn = [c.pnn for c in fcs.channels]
    pns = [c.pns for c in fcs.channels]
    n = int(fcs.n_events)
    finite = np.isfinite(fcs.events).all(axis=1)
    steps: list[GateStep] = []
    slot_mask: dict[str, np.ndarray] = {}
    parent = np.ones(n, dtype=bool)
    for gate in chain:
        inside = applied.member(gate.path)
        slot = correspond(gate, pnn, pns)
        steps.append(_step(applied, gate, tube_name, parent, inside, slot, source))
        if slot in SLOTS:
            slot_mask[slot] = inside
        parent = inside
    final = (parent & finite).copy()
    masks: dict[str, np.ndarray] = {}
    last = finite.copy()
    for gate_name in GATE_ORDER:
        last = slot_mask.get(gate_name, last) & finite
        masks[gate_name] = last
    masks[GATE_ORDER[-1]] = final
    warnings = (
        []
        if chain
        else [f"{tube_name}: the analysed population is the root of {source}: no gate applied"]
    )
    return GatingOutcome(masks, steps, warnings, [])


def _step(
    applied: AppliedGates,
    gate: LabGate,
    tube: str,
    parent: np.ndarray,
    inside: np.ndarray,
    slot: str | None,
    source: str,
) -> GateStep:
    """A manual gate as the report draws it: its outline over the parent's events, both in the
    gate's own coordinates (compensated and transformed as the workspace defines them)."""
    x = gate.channels[0] if gate.channels else ""
    y = gate.channels[1] if len(gate.channels) > 1 else None
    role = f"; stands for cytomsc's {slot} gate" if slot else ""
    note = (
        f"{gate.kind.replace('Gate', '').lower()} gate {gate.path} from {source}, applied "
        f"by FlowKit{role}"
    )
    step = GateStep(
        tube,
        gate.name,
        int(parent.sum()),
        int(inside.sum()),
        x,
        y,
        [],
        note,
        None,
        source="manual",
        path=gate.path,
    )
    try:
        fk_gate = applied.strategy.get_gate(gate.name, gate.ancestors, sample_id=applied.sample_id)
        # FlowKit's own preprocessing of the gate's dimensions (compensation, transforms)
        ev = applied.strategy._preprocess_sample_events(applied.sample, fk_gate)
        pts = ev.to_numpy(dtype=float)[parent]
    except Exception:  # noqa: BLE001 - drawing is optional; the counts are not
        return step
    if y is None or pts.shape[1] < 2 or not len(pts):
        lo, hi = _bounds(fk_gate, x)
        step.vertices = [(lo if lo is not None else -np.inf, hi if hi is not None else np.inf)]
        step.y = None
        if len(pts):
            xr = _range(pts[:, 0], [v for v in (lo, hi) if v is not None])
            step.histogram = _hist(pts[:, 0], np.zeros(len(pts)), x, "", xr, (-1.0, 1.0))
        return step
    verts = _outline(fk_gate, pts)
    xr = _range(pts[:, 0], [v[0] for v in verts])
    yr = _range(pts[:, 1], [v[1] for v in verts])
    step.vertices = [(float(a), float(b)) for a, b in verts]
    step.histogram = _hist(pts[:, 0], pts[:, 1], x, y, xr, yr)
    return step


def _bounds(gate: Any, channel: str) -> tuple[float | None, float | None]:
    for d in getattr(gate, "dimensions", []):
        if getattr(d, "id", None) == channel:
            return d.min, d.max
    return None, None


def _outline(gate: Any, pts: np.ndarray) -> list[tuple[float, float]]:
    """Polygon vertices, rectangle corners (open sides at the data's range), or an ellipse."""
    kind = type(gate).__name__
    if kind == "PolygonGate":
        return [(float(v[0]), float(v[1])) for v in gate.vertices]
    if kind == "EllipsoidGate":
        c = np.asarray(gate.coordinates, dtype=float)
        w, v = np.linalg.eigh(np.asarray(gate.covariance_matrix, dtype=float))
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        circle = np.column_stack([np.cos(t), np.sin(t)]) * np.sqrt(w * gate.distance_square)
        return [(float(a), float(b)) for a, b in c + circle @ v.T]
    dims = gate.dimensions[:2]
    lo = [
        d.min if d.min is not None else float(np.min(pts[:, i])) - 1.0 for i, d in enumerate(dims)
    ]
    hi = [
        d.max if d.max is not None else float(np.max(pts[:, i])) + 1.0 for i, d in enumerate(dims)
    ]
    return [(lo[0], lo[1]), (hi[0], lo[1]), (hi[0], hi[1]), (lo[0], hi[1])]


def _range(v: np.ndarray, extra: list[float]) -> tuple[float, float]:
    vals = [float(x) for x in extra if np.isfinite(x)]
    if v.size:
        vals += [float(x) for x in np.percentile(v, [0.1, 99.9])]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    return lo - pad, hi + pad


def _hist(
    x: np.ndarray,
    y: np.ndarray,
    xname: str,
    yname: str,
    xr: tuple[float, float],
    yr: tuple[float, float],
) -> Histogram2D:
    from .gating import HIST_BINS

    xe = np.linspace(xr[0], xr[1], HIST_BINS + 1)
    ye = np.linspace(yr[0], yr[1], HIST_BINS + 1)
    counts, _, _ = np.histogram2d(x, y, bins=[xe, ye])
    return Histogram2D(xname, yname, counts, xe, ye)


def gate_culture(
    lab: LabGates, tubes: list[tuple[str, FcsData]], gate_path: str | None
) -> tuple[dict[str, GatingOutcome], str, list[InputError]]:
    """The lab's gates for every tube of a culture: the gating of each tube that has them, the
    analysed population's path, and an error entry for each tube that cannot be gated (not in
    the workspace, no such gate path, a gate FlowKit cannot apply)."""
    applied: dict[str, AppliedGates] = {}
    errors: list[InputError] = []
    for name, fcs in tubes:
        try:
            applied[name] = apply_lab_gates(lab, fcs, name)
        except WorkspaceError as err:
            errors.append(InputError(err.path or str(fcs.path), err.reason))
    fcs_of = dict(tubes)
    if gate_path:
        path = normal_path(gate_path)
    elif applied:
        first = fcs_of[next(iter(applied))]
        path = default_path(
            [a.tree for a in applied.values()],
            [c.pnn for c in first.channels],
            [c.pns for c in first.channels],
        )
    else:
        path = "/"
    outcomes: dict[str, GatingOutcome] = {}
    for name, a in applied.items():
        fcs = fcs_of[name]
        try:
            outcomes[name] = manual_outcome(a, fcs, name, path, lab.name)
        except WorkspaceError as err:
            errors.append(InputError(err.path or str(fcs.path), err.reason))
    return outcomes, path, errors
