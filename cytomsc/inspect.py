"""``cytomsc inspect``: what the reader and the panel make of each FCS file, before any analysis.

A lab runs this first on a new cytometer's exports to see whether cytomsc reads them, which channel
it takes for which marker, whether a spillover matrix came with the file, and which control role
each tube would get. Every file is reported; an unreadable one is one ``error: <path>: <reason>``
line on stderr, and the exit status is 1 once any file failed (after all were reported).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .errors import CytomscError
from .fcs import FcsData, read_fcs


def inspect_files(paths: list[Path], panel: str = "isct-2006", data_set: int = 0,
                  as_json: bool = False, channel_map: dict[str, str] | None = None) -> int:
    """Describe each file on stdout (text or one JSON document); 1 if any file failed, else 0.

    A panel that cannot be loaded raises ``PanelError`` (nothing can be matched without it).
    """
    from .layout import role_of
    from .panel import load_panel

    the_panel = load_panel(panel)
    reports: list[dict[str, Any]] = []
    failed = False
    for path in paths:
        path = Path(path)
        try:
            data = read_fcs(path, data_set=data_set)
        except CytomscError as err:
            failed = True
            _error(err.message)
            reports.append({"path": str(path), "ok": False, "error": err.reason})
            continue
        report = _describe(data)
        report["role"] = role_of(data.keywords, path, the_panel)
        try:
            matching = the_panel.match([(c.pnn, c.pns) for c in data.channels], channel_map,
                                       source=path)
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
        sys.stdout.write(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    sys.stdout.flush()
    return 1 if failed else 0


def _error(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def _describe(data: FcsData) -> dict[str, Any]:
    """The JSON-ready facts of one read file (marker, role and missing filled in by the caller)."""
    spill = None
    if data.spillover is not None:
        names, matrix = data.spillover
        spill = {"keyword": "spillover" if "spillover" in data.keywords else "spill",
                 "channels": names, "matrix": matrix.tolist()}
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
            {"index": c.index, "pnn": c.pnn, "pns": c.pns, "range": c.range, "bits": c.bits,
             "amplification": list(c.amplification), "gain": c.gain, "marker": None}
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
    lines.append(f"  FCS {r['version']}, cytometer: {r['cytometer'] or '-'}, "
                 f"{r['events']} events, data set {r['data_set'] + 1} of {r['data_sets']}")
    lines.append(f"  role: {r['role']}")
    rows = [("#", "$PnN", "$PnS", "range", "amplification", f"marker ({panel_id})")]
    for c in r["channels"]:
        rows.append((str(c["index"]), c["pnn"], c["pns"] or "-", f"{c['range']:g}",
                     _amp(c["amplification"]) + ("" if c["gain"] == 1 else f", gain {c['gain']:g}"),
                     c["marker"] or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        lines.append("    " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True))
                     .rstrip())
    if r["spillover"]:
        names = r["spillover"]["channels"]
        lines.append(f"  spillover: ${r['spillover']['keyword'].upper()} {len(names)}x"
                     f"{len(names)} over {', '.join(names)}")
    else:
        lines.append("  spillover: none")
    if r.get("error"):
        lines.append(f"  markers: error: {r['error']}")
    elif r["missing_markers"]:
        lines.append(f"  markers not found: {', '.join(r['missing_markers'])}")
    for w in r["warnings"]:
        lines.append(f"  warning: {w}")
    return "\n".join(lines) + "\n\n"
