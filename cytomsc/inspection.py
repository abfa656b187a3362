"""``cytomsc inspect``: what the reader and the panel make of each FCS file, before any analysis.

A lab runs this first on a new cytometer's exports to see whether cytomsc reads them, which channel
it takes for which marker, whether a spillover matrix came with the file, and which control role
each tube would get. Every file is reported; an unreadable one is one ``error: <path>: <reason>``
line on stderr, and the exit status is 1 once any file failed (after all were reported).

A folder stands for the FCS files under it (recursively, in name order): files named ``.fcs`` or
``.lmd``, and files of any name that start with an FCS HEADER (``FCS2.0``, ``FCS3.1`` ...), as
FACSCalibur's ``060909.001`` do. Data sets are numbered from 0, as ``--data-set`` takes them.
The ``--json`` document is strict JSON: a value that is not a finite number (a NaN in a file's
``$SPILLOVER``) is written as null.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CytomscError, FcsReadError
from .fcs import FcsData, read_fcs

FCS_SUFFIXES = (".fcs", ".lmd")
_FCS_HEADER = re.compile(rb"^FCS[0-9]\.[0-9]")


def expand(paths: list[Path]) -> list[Path | FcsReadError]:
    """Files as given; a folder replaced by the FCS files under it, or by an error when it holds
    none (so that it is reported like an unreadable file, in its place)."""
    out: list[Path | FcsReadError] = []
    for path in paths:
        path = Path(path)
        if not path.is_dir():
            out.append(path)
            continue
        found = []
        for root, dirs, files in os.walk(path):
            dirs.sort()
            found += [Path(root) / f for f in sorted(files) if _looks_like_fcs(Path(root) / f)]
        if found:
            out.extend(found)
        else:
            out.append(
                FcsReadError(
                    "folder holds no FCS files (.fcs, .lmd, or a file starting with an FCS HEADER)",
                    path,
                )
            )
    return out


def _looks_like_fcs(path: Path) -> bool:
    if path.name.startswith("._"):  # macOS resource forks beside the real files
        return False
    if path.suffix.lower() in FCS_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            return bool(_FCS_HEADER.match(fh.read(6)))
    except OSError:
        return False


def inspect_files(
    paths: list[Path],
    panel: str = "isct-2006",
    data_set: int = 0,
    as_json: bool = False,
    channel_map: dict[str, str] | None = None,
) -> int:
    """Describe each file on stdout (text or one JSON document); 1 if any file failed, else 0.

    A panel that cannot be loaded raises ``PanelError`` (nothing can be matched without it).
    """
    from .layout import role_of
    from .panel import load_panel

    the_panel = load_panel(panel)
    reports: list[dict[str, Any]] = []
    failed = False
    for item in expand(paths):
        if isinstance(item, CytomscError):
            failed = True
            _error(item.message)
            reports.append({"path": item.path, "ok": False, "error": item.reason})
            continue
        path = item
        try:
            # numpy and FlowKit warnings about odd values are noise here: what matters is in
            # the report's own warnings
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                data = read_fcs(path, data_set=data_set)
        except CytomscError as err:
            failed = True
            _error(err.message)
            reports.append({"path": str(path), "ok": False, "error": err.reason})
            continue
        report = _describe(data)
        report["role"] = role_of(data.keywords, path, the_panel)
        try:
            matching = the_panel.match(
                [(c.pnn, c.pns) for c in data.channels], channel_map, source=path
            )
        except CytomscError as err:
            failed = True
            _error(err.message)
            report["ok"] = False
            report["error"] = err.reason
        else:
            for ch in report["channels"]:
                assignment = matching.by_channel.get(ch["pnn"])
                ch["marker"] = assignment.label if assignment else None
            report["missing_markers"] = list(matching.missing)
            report["warnings"] += list(matching.warnings)
        reports.append(report)
        if not as_json:
            sys.stdout.write(_text(report, the_panel.id))
    if as_json:
        doc = {"panel": the_panel.id, "files": reports}
        sys.stdout.write(
            json.dumps(_strict(doc), indent=1, ensure_ascii=False, allow_nan=False) + "\n"
        )
    sys.stdout.flush()
    return 1 if failed else 0


def _strict(value: Any) -> Any:
    """The document with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def _error(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def _describe(data: FcsData) -> dict[str, Any]:
    """The JSON-ready facts of one read file (marker, role and missing filled in by the caller)."""
    spill = None
    if data.spillover is not None:
        names, matrix = data.spillover
        spill = {
            "keyword": "spillover" if "spillover" in data.keywords else "spill",
            "channels": names,
            "matrix": matrix.tolist(),
        }
    return {
        "path": str(data.path),
        "ok": True,
        "version": data.version,
        "cytometer": data.keywords.get("cyt"),
        "events": data.n_events,
        "data_sets": data.n_data_sets,
        "data_set": data.data_set,
        "reader": data.reader,
        "channels": [
            {
                "index": c.index,
                "pnn": c.pnn,
                "pns": c.pns,
                "range": c.range,
                "bits": c.bits,
                "amplification": list(c.amplification),
                "gain": c.gain,
                "marker": None,
            }
            for c in data.channels
        ],
        "spillover": spill,
        "nonfinite": data.nonfinite,
        "role": None,
        "missing_markers": [],
        "warnings": list(data.warnings),
    }


def _amp(amplification: list[float]) -> str:
    decades, offset = amplification
    return "lin" if decades == 0 else f"log {decades:g} dec, {offset:g}"


def _text(r: dict[str, Any], panel_id: str) -> str:
    lines = [str(r["path"])]
    lines.append(
        f"  FCS {r['version']}, cytometer: {r['cytometer'] or '-'}, "
        f"{r['events']} events, "
        + (
            "1 data set"
            if r["data_sets"] == 1
            else f"data set {r['data_set']} of {r['data_sets']} (numbered 0 to "
            f"{r['data_sets'] - 1}, as --data-set takes them)"
        )
    )
    lines.append(f"  role: {r['role']}")
    rows = [("#", "$PnN", "$PnS", "range", "amplification", f"marker ({panel_id})")]
    for c in r["channels"]:
        rows.append(
            (
                str(c["index"]),
                c["pnn"],
                c["pns"] or "-",
                f"{c['range']:g}",
                _amp(c["amplification"]) + ("" if c["gain"] == 1 else f", gain {c['gain']:g}"),
                c["marker"] or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        lines.append(
            "    " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
        )
    if r["spillover"]:
        names = r["spillover"]["channels"]
        lines.append(
            f"  spillover: ${r['spillover']['keyword'].upper()} {len(names)}x"
            f"{len(names)} over {', '.join(names)}"
        )
    else:
        lines.append("  spillover: none")
    if r.get("error"):
        lines.append(f"  markers: error: {r['error']}")
    elif r["missing_markers"]:
        lines.append(f"  markers not found: {', '.join(r['missing_markers'])}")
    for w in r["warnings"]:
        lines.append(f"  warning: {w}")
    return "\n".join(lines) + "\n\n"
