"""cytomsc from Python: ``analyze`` returns a batch's results and writes nothing; ``write`` writes
them as ``cytomsc analyze`` does.

    import cytomsc

    batch = cytomsc.analyze(["example_fcs"], panel="isct-2006")
    batch.cultures_frame()          # one row per culture (pandas)
    batch.markers_frame()           # one row per culture and marker
    cytomsc.write(batch, "reports")

The command line is a thin layer over the same steps (``pipeline.py``): it parses the options
into the same ``Options``, and writes each culture's files as soon as it is analysed.
"""

from __future__ import annotations

from collections.abc import Iterable
from os import PathLike
from pathlib import Path
from typing import Any

from .errors import CytomscError
from .options import Cluster, Options
from .results import BatchResult

__all__ = ["analyze", "write"]

PathLikeStr = str | PathLike[str]


def analyze(
    inputs: PathLikeStr | Iterable[PathLikeStr] = (),
    panel: str = "isct-2006",
    *,
    manifest: PathLikeStr | None = None,
    comp: str | None = None,
    control_percentile: float = 99.5,
    cluster: Cluster = "pass",
    seed: int = 0,
    data_set: int = 0,
    channel_map: dict[str, str] | None = None,
    gates: PathLikeStr | None = None,
    gate_path: str | None = None,
    operator: str = "",
    comment: str = "",
    export_events: bool = False,
    jobs: int = 1,
    client: Any = None,
) -> BatchResult:
    """Analyse the cultures in ``inputs`` (FCS files and folders, as ``cytomsc analyze`` takes
    them; or none, with ``manifest``) and return their results. Nothing is written.

    The keywords are ``cytomsc analyze``'s options: ``panel`` (an id or a TOML path), ``comp``
    (None: each file's spillover; "none"; or a CSV matrix), ``control_percentile``, ``cluster``
    ("pass", "all", "none"), ``seed``, ``data_set``, ``channel_map`` ({"FL1-A": "CD90"}),
    ``gates``/``gate_path`` (the lab's gates), ``operator``, ``comment``. ``export_events=True``
    keeps what ``write`` needs to export each tube's events (the files are read again then).

    Where the cultures run: ``jobs`` processes of this machine, or the workers of ``client``, a
    ``dask.distributed.Client`` (``pip install "cytomsc[dask]"``; the workers must read the input
    files at the same paths). The results are the same bytes either way.

    A bad input file is an entry of ``errors`` and the rest goes on; a bad option (unknown panel,
    malformed ``comp`` CSV, unreadable ``gates``) raises ``CytomscError``.
    """
    from .pipeline import analyze_batch

    if isinstance(inputs, (str, PathLike)):
        inputs = [inputs]
    paths = [Path(p) for p in inputs]
    if not paths and manifest is None:
        raise CytomscError("give the FCS files or folders to analyse, or a manifest")
    if jobs < 1:
        raise CytomscError(f"jobs must be at least 1, not {jobs}")
    if cluster not in ("pass", "all", "none"):
        raise CytomscError(f"cluster must be 'pass', 'all' or 'none', not {cluster!r}")
    opts = Options(
        panel=str(panel),
        comp=comp,
        control_percentile=float(control_percentile),
        seed=int(seed),
        jobs=jobs,
        cluster=cluster,
        export_events=export_events,
        data_set=int(data_set),
        channel_map=dict(channel_map or {}),
        manifest=str(manifest) if manifest is not None else None,
        gates=str(gates) if gates is not None else None,
        gate_path=gate_path,
        operator=operator,
        comment=comment,
    )
    if opts.gates:
        from .workspace import check_gate_path, load_lab_gates

        check_gate_path(load_lab_gates(opts.gates), gate_path)
    return analyze_batch(paths, opts, client=client, command="cytomsc.analyze()")


def write(
    result: BatchResult, out: PathLikeStr, *, overwrite: bool = False, pdf: bool = True
) -> list[str]:
    """Write ``result`` (from ``analyze``) into the folder ``out``, exactly as ``cytomsc
    analyze`` would: summary.json, summary.csv, cultures.csv, sha256sums.txt, run.json, each
    culture's gates.xml and PDF, the overview PDF (``pdf=False``: none), and the exported events
    when ``analyze`` was given ``export_events=True``. ``out`` is locked while it is written and
    the files appear only when all are complete; results in it of cultures that are not in
    ``result`` are removed only with ``overwrite`` (``CytomscError`` otherwise). Returns the
    files written, relative to ``out``."""
    from .pipeline import write_batch

    return write_batch(result, Path(out), overwrite=overwrite, pdf=pdf)
