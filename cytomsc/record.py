"""What makes a culture's results a record a reviewer signs and a LIMS files: its release facts,
each tube's event funnel and compensation, the software that made it, and the hashes of what was
written.

Plain functions the pipeline calls once per culture or batch; each returns a value (or writes
one file inside the output folder) and keeps no state.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .dates import iso_date
from .results import GATE_ORDER, Compensation, TubeFunnel, release_fact
from .roles import Role

if TYPE_CHECKING:  # pragma: no cover
    from .output import OutputDir

SUMS_FILE = "sha256sums.txt"  # the batch's outputs manifest: SHA-256 of every file written
FUNNEL_KEYS = {"time": "time_ok", "margin": "margin_ok"}  # gate -> funnel key (else the gate)
# FCS keywords that carry release metadata (lower case, no "$"): read from the tubes when the
# manifest (or the folder layout) and the options give none. $OP is the FCS operator keyword,
# $COM its comment.
KEYWORD_FACTS = {
    "operator": ("op",),
    "comment": ("com",),
    "lot": ("lot", "lot number"),
    "donor": ("donor", "donor id"),
    "tissue": ("tissue source", "tissue", "source tissue"),
    "passage": ("passage",),
    "detachment": ("detachment", "detachment reagent"),
}
NUMERIC = (
    "numpy",
    "scipy",
    "pandas",
    "flowkit",
    "flowio",
    "flowutils",
    "matplotlib",
    "threadpoolctl",
)


def release_metadata(
    metadata: dict[str, str], keywords: list[dict[str, str]], operator: str = "", comment: str = ""
) -> dict[str, str]:
    """The culture's metadata completed for release: the acquisition date as ISO 8601; the
    operator and comment from the options where the manifest gave none; then lot, donor,
    operator, comment, tissue, passage and detachment from the tubes' FCS keywords."""
    out = dict(metadata)
    if out.get("date"):
        out["date"] = iso_date(out["date"])
    for name, value in (("operator", operator), ("comment", comment)):
        if value and not release_fact(out, name):
            out[name] = value
    for name, keys in KEYWORD_FACTS.items():
        if not release_fact(out, name):
            value = next((kw[k] for kw in keywords for k in keys if kw.get(k, "").strip()), "")
            if value:
                out[name] = value
    return out


def tube_funnel(
    name: str, role: Role, n_events: int, masks: dict[str, np.ndarray], skipped: dict[str, str]
) -> TubeFunnel:
    """A tube's events left after each gate; ``None`` (and the reason) for a gate skipped."""
    counts: dict[str, int | None] = {"total": int(n_events)}
    last = int(n_events)
    for gate in GATE_ORDER:
        if gate in masks:
            last = int(np.count_nonzero(masks[gate]))
        counts[FUNNEL_KEYS.get(gate, gate)] = None if gate in skipped else last
    return TubeFunnel(name, role, counts, dict(skipped))


def compensation_used(
    name: str,
    spill: tuple[list[str], Any] | None,
    comp: str | None,
    file_spillover: Any,
    keywords: dict[str, str],
) -> Compensation:
    """Which matrix compensated a tube, in words, and the matrix itself (``comp`` as the
    ``--comp`` option: None for the file's own, "none", or a CSV path)."""
    if spill is None:
        if comp == "none":
            source = "none (--comp none)"
        elif file_spillover is not None and comp is None:
            source = "none: the file's spillover matrix could not be used"
        else:
            source = "none: the file has no spillover matrix"
        return Compensation(name, source)
    if comp not in (None, "none"):
        source = f"--comp {Path(comp).name}"
    else:
        key = next((k for k in ("spillover", "spill") if k in keywords), "spillover")
        source = f"the file's ${key.upper()}"
    detectors, matrix = spill
    return Compensation(
        name, source, list(detectors), [[float(v) for v in row] for row in np.asarray(matrix)]
    )


def software_versions() -> dict[str, str]:
    """Python's, cytomsc's and every numeric dependency's version (audit page, run.json)."""
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("cytomsc", *NUMERIC):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def merge_tube_warnings(warnings: list[str], names: list[str]) -> list[str]:
    """One line for a message several tubes share ("A.fcs, B.fcs: no viability dye channel;
    live gate skipped", "every tube (4): ..." when all do), at its first place: page 1 has room
    for the warnings that differ."""
    groups: dict[tuple[str, bool], list[str]] = {}
    for w in warnings:
        tube = next((n for n in names if w.startswith(f"{n}: ")), None)
        key = (w[len(tube) + 2 :], True) if tube else (w, False)
        groups.setdefault(key, [])
        if tube:
            groups[key].append(tube)
    out = []
    for (msg, tubed), tubes in groups.items():
        tubes = list(dict.fromkeys(tubes))
        if not tubed:
            out.append(msg)
        elif len(tubes) == 1:
            out.append(f"{tubes[0]}: {msg}")
        elif len(tubes) == len(names):
            out.append(f"every tube ({len(tubes)}): {msg}")
        else:
            out.append(f"{', '.join(tubes)}: {msg}")
    return out


def write_sums(out: OutputDir, hashes: dict[str, str]) -> None:
    """``sha256sums.txt``: the SHA-256 of every file this run wrote (``hashes``: the cultures'
    files and the batch's, by path relative to OUT), in ``sha256sum -c`` form (run.json,
    written after it, lists it in turn)."""
    lines = [f"{hashes[rel]}  {rel}" for rel in sorted(hashes) if rel != SUMS_FILE]
    out.write_text("".join(line + "\n" for line in lines), SUMS_FILE)
