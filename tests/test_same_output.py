"""The restructuring of issue 15 changed no result: summary.json of the validation preset has the
bytes it had before, asserted against a stored digest of the old output.

``tests/data/validation-summary.json`` holds the SHA-256 of summary.json of
``cytomsc simulate val --preset validation`` analysed with ``cytomsc analyze val -o out --no-pdf``
(seed 0; inputs named ``val/...`` relative to the working folder, as summary.json records them),
and of each culture's entry, so that a failure names the cultures that changed. It was made with
the code of main before issue 15 (commit 44f2222), and written again when issue 10 replaced the
clustering: then the 20 clustered cultures changed in ``heterogeneity`` alone (every other key of
every culture compared equal to 44f2222's output, and the number of populations of each is the
same). ``--jobs 2`` here also asserts that the number of processes changes no byte.

When a change of results is intended (a new clustering, a Logicle fix that moves a gate), check
the new numbers, then write the digests again:

    python tests/test_same_output.py --write
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

DIGESTS = Path(__file__).resolve().parent / "data" / "validation-summary.json"


def validation_summary(work: Path, jobs: int = 2) -> bytes:
    """summary.json of the validation preset, simulated and analysed inside ``work``."""
    from cytomsc.options import Options
    from cytomsc.pipeline import run_batch
    from cytomsc.simulate import write_preset

    cwd = Path.cwd()
    os.chdir(work)
    try:
        write_preset(Path("val"), preset="validation", seed=0)
        run_batch([Path("val")], Path("out"), Options(jobs=jobs, pdf=False, seed=0))
        return (work / "out" / "summary.json").read_bytes()
    finally:
        os.chdir(cwd)


def digests(summary: bytes) -> dict:
    doc = json.loads(summary)
    return {
        "sha256": hashlib.sha256(summary).hexdigest(),
        "cultures": {
            c["culture"]: hashlib.sha256(
                json.dumps(c, indent=1, ensure_ascii=False).encode()
            ).hexdigest()
            for c in doc["cultures"]
        },
    }


@pytest.mark.slow
def test_validation_summary_has_the_old_bytes(tmp_path: Path) -> None:
    stored = json.loads(DIGESTS.read_text())
    got = digests(validation_summary(tmp_path))
    changed = sorted(
        name
        for name in {*stored["cultures"], *got["cultures"]}
        if stored["cultures"].get(name) != got["cultures"].get(name)
    )
    assert changed == [], f"cultures whose results changed: {changed}"
    assert got["sha256"] == stored["sha256"]  # and the batch's own fields


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        result = digests(validation_summary(Path(tmp)))
    DIGESTS.parent.mkdir(exist_ok=True)
    DIGESTS.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {DIGESTS} ({len(result['cultures'])} cultures)")
