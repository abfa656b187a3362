"""Cultures per second where the cultures run: ``--jobs 1``, ``--jobs 2``, and a 2-worker Dask
``LocalCluster`` (``--scheduler``; separate worker processes, as remote machines would be).

The same simulated batch each time (``--cultures`` cultures of 3 tubes x 20,000 events, PDFs
included), one untimed warm-up run first (imports, font cache); every run is a whole
``run_batch`` (staging, commit, batch-wide clustering, overview). Each line gives the wall time,
the cultures per second and the load average before the run (2 shared cores: the load says how
much of the machine the run had). The summary.json bytes of every run are checked equal.

    python benchmarks/bench_scheduler.py [--cultures 8] [--repeats 1]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from cytomsc.options import Options
from cytomsc.pipeline import run_batch
from cytomsc.simulate import CultureDesign, simulate_culture


def write_cultures(root: Path, n: int) -> None:
    for i in range(n):
        d = CultureDesign(
            f"bench{i:03d}",
            style="diva",
            layout="isct-8c",
            viability="DAPI",
            dead=0.03,
            n_events=20_000,
            controls=("isotype", "unstained"),
            seed_offset=i,
        )
        for tube in simulate_culture(d, seed=0):
            tube.write(root / d.name)


def timed(data: Path, out: Path, jobs: int, client: object = None) -> tuple[float, str]:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    batch = run_batch([data], out, Options(jobs=jobs, pdf=True), client=client)
    seconds = time.perf_counter() - t0
    if batch.errors:
        raise SystemExit(f"benchmark batch failed: {batch.errors[0]}")
    return seconds, hashlib.sha256((out / "summary.json").read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cultures", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    from dask.distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "data", Path(tmp) / "out"
        write_cultures(data, args.cultures)
        timed(data, out, 1)  # warm-up: imports, matplotlib's font cache
        digests = set()
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            client.run(lambda: __import__("cytomsc.pipeline"))  # the workers' imports too
            ways = [
                ("--jobs 1", 1, None),
                ("--jobs 2", 2, None),
                ("LocalCluster, 2 workers", 1, client),
            ]
            for _ in range(args.repeats):
                for name, jobs, on in ways:
                    load = os.getloadavg()[0]
                    seconds, digest = timed(data, out, jobs, on)
                    digests.add(digest)
                    print(
                        f"{name:<24} {args.cultures} cultures in {seconds:6.1f} s: "
                        f"{args.cultures / seconds:5.2f} cultures/s (load {load:.1f} on "
                        f"{os.cpu_count()} cores)",
                        flush=True,
                    )
        print(
            "summary.json identical across all runs"
            if len(digests) == 1
            else f"summary.json DIFFERS between runs: {sorted(digests)}"
        )


if __name__ == "__main__":
    main()
