"""Fuzzing: mutated FCS files through the reader, and through ``inspect`` and ``analyze``.

The reader fuzz: mutations of valid files (FlowIO-written float data, 24-bit and 16-bit integer
data, several data sets): HEADER offsets, TEXT keyword values (re-packed with consistent offsets
and patched in place), TEXT delimiters, truncation, byte flips and inserted/deleted bytes. Each
mutant must either read or raise FcsReadError, within 2 s.

The hostile campaign (issue 12): 2,000 seeded mutants of the real corpus and of simulated
cultures (``_hostile.py`` has the mutators and the runner) through ``cytomsc inspect`` and
through ``analyze`` batches, in two child processes limited in address space. No traceback, no
"internal error", one error line naming each bad file, every culture whose file reads analysed,
peak memory under 10x the file size plus 500 MB, and no file slower than 10 s.

One seeded numpy Generator drives each, so a failure names a case that reproduces.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _hostile import READER_FAMILIES
from conftest import corpus_path
from test_fcs import assemble, int_fcs, split_fcs, valid_fcs

from cytomsc.errors import FcsReadError
from cytomsc.fcs import read_fcs, read_text

HERE = Path(__file__).resolve().parent

SEED = 20240611
CASES_PER_FAMILY = 200  # 6 families -> 1,200 cases

FAMILIES = READER_FAMILIES


def _bases() -> list[bytes]:
    rng = np.random.default_rng(SEED)
    float_file, _ = valid_fcs(
        n_events=20,
        names=("FSC-A", "SSC-A", "FITC-A", "Time"),
        metadata={"$SPILLOVER": "2,SSC-A,FITC-A,1,0.1,0.02,1", "$TIMESTEP": "0.01"},
    )
    int24 = int_fcs(rng.integers(0, 2**20, (15, 3)), [24, 24, 24], [1024, 262144, 2**24])
    mixed = int_fcs(rng.integers(0, 255, (15, 3)), [8, 16, 32], [256, 1024, 2**20], order=">")
    # two data sets: the second starts right after the first ($NEXTDATA is relative)
    second = int_fcs(rng.integers(0, 1000, (5, 3)), [16, 16, 16], [1024] * 3)
    keywords, data = split_fcs(int_fcs(rng.integers(0, 1000, (5, 3)), [16] * 3, [1024] * 3))
    keywords = [(k, "00000000" if k == "$NEXTDATA" else v) for k, v in keywords]
    first = assemble(keywords, data, version="3.0")  # same length once the offset is filled in
    first = assemble(
        [(k, v) if k != "$NEXTDATA" else (k, f"{len(first):08d}") for k, v in keywords],
        data,
        version="3.0",
    )
    return [float_file, int24, mixed, first + second]


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.slow
def test_mutated_files_read_or_fail_cleanly(tmp_path, family):
    rng = np.random.default_rng([SEED, list(FAMILIES).index(family)])
    bases = _bases()
    mutate = FAMILIES[family]
    problems, outcomes = [], {"read": 0, "error": 0}
    path = tmp_path / "case.fcs"
    for case in range(CASES_PER_FAMILY):
        raw = mutate(bases[case % len(bases)], rng)
        path.write_bytes(raw)
        for func in (read_fcs, read_text):
            start = time.perf_counter()
            try:
                func(path)
                outcomes["read"] += func is read_fcs
            except FcsReadError as err:
                outcomes["error"] += func is read_fcs
                if "\n" in err.message or not err.message.startswith(str(path)):
                    problems.append(f"case {case} {func.__name__}: message {err.message!r}")
            except Exception as err:  # noqa: BLE001 - exactly what the test looks for
                problems.append(f"case {case} {func.__name__}: {type(err).__name__}: {err}")
            elapsed = time.perf_counter() - start
            if elapsed > 2.0:
                problems.append(f"case {case} {func.__name__}: {elapsed:.1f} s")
    assert not problems, f"{len(problems)} bad outcomes, first: {problems[:5]}"
    assert sum(outcomes.values()) == CASES_PER_FAMILY


def test_base_files_are_valid(tmp_path):
    expected_events = [20, 15, 15, 5]
    for i, raw in enumerate(_bases()):
        path = tmp_path / f"base{i}.fcs"
        path.write_bytes(raw)
        assert read_fcs(path).n_events == expected_events[i]
    assert read_fcs(path).n_data_sets == 2
    assert read_fcs(path, data_set=1).n_events == 5


HOSTILE_MUTANTS = 2_000
HOSTILE_PARTS = 2  # child processes, half the mutants each (their seeds differ)


@pytest.mark.slow
def test_hostile_files_through_inspect_and_analyze(tmp_path):
    import resource

    corpus = corpus_path()

    def limit() -> None:  # a file asking for gigabytes fails in the child, not the machine
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    children = []
    for part in range(HOSTILE_PARTS):
        cmd = [
            sys.executable,
            str(HERE / "_hostile.py"),
            "--mutants",
            str(HOSTILE_MUTANTS // HOSTILE_PARTS),
            "--seed",
            str(SEED + part),
            "--corpus",
            str(corpus or ""),
            "--work",
            str(tmp_path / f"work{part}"),
            "--report",
            str(tmp_path / f"report{part}.json"),
            "--pdf",
            "6",
            "--cluster",
            "30",
        ]
        children.append(
            subprocess.Popen(
                cmd,
                cwd=HERE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                preexec_fn=limit,
            )
        )
    reports = []
    for part, child in enumerate(children):
        out, err = child.communicate(timeout=1800)
        path = tmp_path / f"report{part}.json"
        assert path.is_file(), f"campaign {part} died (exit {child.returncode}): {err[-3000:]}"
        reports.append(json.loads(path.read_text()))
    problems = [p for r in reports for p in r["problems"]]
    assert not problems, f"{len(problems)} problems, first: {problems[:10]}"
    total = sum(r["mutants"] for r in reports)
    assert total >= 2_000
    assert sum(r["inspected"] for r in reports) == total
    assert sum(r["analysed_mutants"] for r in reports) == total
    # both outcomes exercised: files that still read (and were analysed) and files refused
    assert sum(r["analysed"] for r in reports) > 0.4 * total
    assert sum(r["refused"] for r in reports) > 0.15 * total
    for family in reports[0]["families"]:
        assert sum(r["families"][family] for r in reports) >= 30, family
    assert all(r["bases"]["corpus"] == (47 if corpus else 0) for r in reports)
    assert max(r["max_seconds"] for r in reports) <= 10.0
    assert max(r["max_peak_ratio"] for r in reports) <= 1.0
