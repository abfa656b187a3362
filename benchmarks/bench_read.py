"""How long reading costs: cytomsc.fcs.read_fcs against FlowKit's own reader, 10k-1M events.

Prints seconds and events/s for, per size:
- ``flowkit``: ``flowkit.Sample(path)`` on a well-formed FCS 3.1 float file (the reference);
- ``read_fcs``: our reader on the same file (TEXT checks, then FlowKit's reader);
- ``decode``: our own decoder on the same file (``use_flowkit=False``), handing FlowKit a FlowData;
- ``via create_fcs``: the alternative hand-over we did not choose (decode, then an in-memory FCS
  written by ``flowio.create_fcs`` and read back by FlowKit), to show why;
- ``24-bit``: our reader on a 24-bit integer file of the same size (FlowKit cannot read these).
The target (issue 2): read_fcs on 1M events costs no more than FlowKit's own read.

Run: ``python benchmarks/bench_read.py [--max-events 1000000] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
import warnings
from pathlib import Path

import flowio
import flowkit
import numpy as np

from cytomsc.fcs import read_fcs

CHANNELS = (
    "FSC-A",
    "FSC-H",
    "SSC-A",
    "SSC-H",
    "FITC-A",
    "PE-A",
    "PerCP-Cy5-5-A",
    "PE-Cy7-A",
    "APC-A",
    "APC-Cy7-A",
    "BV421-A",
    "BV510-A",
    "BV605-A",
    "Time",
)


def _write(path: Path, keywords: dict[str, str], data: bytes) -> None:
    """HEADER + TEXT + DATA with consistent offsets (the offsets' digits are iterated)."""
    begin = 0
    for _ in range(5):
        kw = dict(keywords, **{"$BEGINDATA": str(begin), "$ENDDATA": str(begin + len(data) - 1)})
        text = ("/" + "/".join(f"{k}/{v}" for k, v in kw.items()) + "/").encode()
        if 58 + len(text) == begin:
            break
        begin = 58 + len(text)
    end = begin + len(data) - 1
    head = f"FCS3.1    {58:>8}{57 + len(text):>8}{begin:>8}{end:>8}{0:>8}{0:>8}"
    path.write_bytes(head.encode() + text + data)


def _keywords(n: int, datatype: str, bits: int) -> dict[str, str]:
    kw = {
        "$BYTEORD": "1,2,3,4",
        "$DATATYPE": datatype,
        "$MODE": "L",
        "$NEXTDATA": "0",
        "$PAR": str(len(CHANNELS)),
        "$TOT": str(n),
        "$TIMESTEP": "0.01",
    }
    for i, name in enumerate(CHANNELS, 1):
        kw.update({f"$P{i}N": name, f"$P{i}B": str(bits), f"$P{i}E": "0,0", f"$P{i}R": "262144"})
    return kw


def _time(func, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    sizes = [n for n in (10_000, 100_000, 1_000_000) if n <= args.max_events]
    warnings.simplefilter("ignore")
    print(f"{len(CHANNELS)} channels; best of {args.repeat}; seconds (million events/s)")
    print(
        f"{'events':>9} {'flowkit':>16} {'read_fcs':>16} {'decode':>16} {'via create_fcs':>16}"
        f" {'24-bit':>16}  read_fcs/flowkit"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            values = rng.uniform(0, 262143, (n, len(CHANNELS))).astype("<f4")
            f32 = Path(tmp) / f"f32_{n}.fcs"
            _write(f32, _keywords(n, "F", 32), values.tobytes())
            ints = values.astype(np.uint32)
            i24 = Path(tmp) / f"i24_{n}.fcs"
            packed = ints.view(np.uint8).reshape(n, len(CHANNELS), 4)[:, :, :3].tobytes()
            _write(i24, _keywords(n, "I", 24), packed)

            def via_create_fcs(path: Path = f32) -> None:
                data = read_fcs(path, use_flowkit=False)
                buf = io.BytesIO()
                flowio.create_fcs(
                    buf, data.events.ravel().tolist(), channel_names=[c.pnn for c in data.channels]
                )
                buf.seek(0)
                flowkit.Sample(flowio.FlowData(buf), sample_id=path.name)

            times = {
                "flowkit": _time(lambda p=f32: flowkit.Sample(p), args.repeat),
                "read_fcs": _time(lambda p=f32: read_fcs(p), args.repeat),
                "decode": _time(lambda p=f32: read_fcs(p, use_flowkit=False), args.repeat),
                "via create_fcs": _time(via_create_fcs, 1),
                "24-bit": _time(lambda p=i24: read_fcs(p), args.repeat),
            }
            cells = " ".join(f"{t:8.3f} ({n / t / 1e6:5.1f})" for t in times.values())
            print(f"{n:>9} {cells}  {times['read_fcs'] / times['flowkit']:.2f}")


if __name__ == "__main__":
    main()
