"""Old and new code side by side: the same summary.json bytes on the validation preset (issue 13).

The speed work must change no number. This check simulates the validation preset once, runs
``cytomsc analyze`` on it with the code of a reference commit (``--ref``, default ``main``;
taken with ``git archive`` into a temporary folder, never checked out) and with the working
tree's code, each in its own child process, and compares the two summary.json files byte for
byte (and summary.csv). ``--jobs`` and ``--export-events`` are passed to both runs.

The heterogeneity section is rewritten on main by other work: when ``cytomsc/heterogeneity.py``
differs between the reference and the working tree, the two documents are compared with every
culture's ``heterogeneity`` and the batch's ``batch_populations`` left out (and the population
columns of summary.csv), and the script says so. ``--all`` compares everything regardless.

Exit status 0 when they are the same, 1 when not (with the first differences printed).

Run: ``python benchmarks/same_summary.py [--ref REF] [--jobs N] [--all] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HET = ("heterogeneity", "batch_populations")


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True
    ).stdout


def extract(ref: str, into: Path) -> None:
    """The reference commit's files, without touching the repository's work trees."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True
    ).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


def analyze(code: Path, data: Path, out: Path, jobs: int, export: bool) -> float:
    env = {**os.environ, "PYTHONPATH": str(code)}
    cmd = [
        sys.executable,
        "-m",
        "cytomsc",
        "analyze",
        str(data),
        "-o",
        str(out),
        "--no-pdf",
        "--jobs",
        str(jobs),
    ] + (["--export-events"] if export else [])
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=out.parent, env=env, capture_output=True, text=True)
    if done.returncode not in (0, 1):  # 1: some culture failed its criteria
        raise SystemExit(f"analyze with {code} failed ({done.returncode}): {done.stderr[-2000:]}")
    return time.perf_counter() - t0


def without_heterogeneity(doc: dict) -> dict:
    doc = dict(doc)
    doc.pop("batch_populations", None)
    doc["cultures"] = [{k: v for k, v in c.items() if k not in HET} for c in doc["cultures"]]
    return doc


def csv_without_populations(text: str) -> list[list[str]]:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return rows
    keep = [
        i
        for i, h in enumerate(rows[0])
        if "population" not in h.lower() and "heterogeneity" not in h.lower()
    ]
    return [[r[i] for i in keep if i < len(r)] for r in rows]


def first_difference(a: object, b: object, path: str = "") -> str | None:
    if type(a) is not type(b):
        return f"{path}: {a!r} != {b!r}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                return f"{path}/{k}: only in {'new' if k in b else 'old'}"
            d = first_difference(a[k], b[k], f"{path}/{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            d = first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{path}: {a!r} != {b!r}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default="main")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--all", action="store_true", help="compare heterogeneity too")
    ap.add_argument("--export-events", action="store_true")
    ap.add_argument("--keep", type=Path, default=None, help="keep the outputs in this folder")
    args = ap.parse_args()
    commit = git("rev-parse", args.ref).strip()
    het_changed = bool(git("diff", commit, "--", "cytomsc/heterogeneity.py").strip())
    with tempfile.TemporaryDirectory(prefix="cytomsc-same-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        old_code = root / "old-code"
        shutil.rmtree(old_code, ignore_errors=True)
        extract(commit, old_code)
        data = root / "validation"
        if not data.exists():
            subprocess.run(
                [sys.executable, "-m", "cytomsc", "simulate", str(data), "--preset", "validation"],
                check=True,
                capture_output=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        outs = {}
        for label, code in (("old", old_code), ("new", ROOT)):
            out = root / f"out-{label}"
            shutil.rmtree(out, ignore_errors=True)
            took = analyze(code, data, out, args.jobs, args.export_events)
            outs[label] = out
            print(f"{label}: {code} ({took:.0f} s)")
        a = (outs["old"] / "summary.json").read_bytes()
        b = (outs["new"] / "summary.json").read_bytes()
        ca = (outs["old"] / "summary.csv").read_text(encoding="utf-8")
        cb = (outs["new"] / "summary.csv").read_text(encoding="utf-8")
        whole = a == b and ca == cb
        print(
            f"reference {args.ref} = {commit[:12]}; heterogeneity.py "
            f"{'differs' if het_changed else 'is the same'} in the working tree"
        )
        if whole:
            print(f"summary.json: identical bytes ({len(a):,}); summary.csv: identical")
            return 0
        if het_changed and not args.all:
            ja, jb = (without_heterogeneity(json.loads(x)) for x in (a, b))
            same = ja == jb and csv_without_populations(ca) == csv_without_populations(cb)
            print(
                "summary.json / summary.csv without the heterogeneity sections: "
                f"{'identical' if same else 'DIFFERENT'}"
            )
            if not same:
                print("  first difference:", first_difference(ja, jb))
            return 0 if same else 1
        print(
            "summary.json: DIFFERENT; first difference:",
            first_difference(json.loads(a), json.loads(b)),
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
