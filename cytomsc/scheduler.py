"""Where a batch's cultures run: in this process, in a process pool (``jobs > 1``), or on a Dask
cluster (``--scheduler tcp://HOST:PORT``, ``cytomsc.analyze(client=...)``).

A culture is one ``CultureJob``, a typed value that crosses process and machine boundaries
(pickled), and ``run_culture`` turns it into a ``CultureOutcome`` without ever raising: a culture
that fails becomes error entries and the batch goes on. Each culture's seed is derived from the
run seed and its name, and the outcomes are put back in input order, so where and in what order
the cultures ran changes no result byte.

A job may also write its culture's files as soon as it is analysed (``WriteTo``): into the
staging folder of the run when the worker shares this machine's file system (this process, the
pool), or into memory (``output.MemoryDir``) on a Dask worker, which may be another machine; the
batch then writes those bytes into its staging folder. Either way the PDFs are drawn by the
workers, not one after the other by the batch.

Dask workers must be able to read the input files at the same paths (a shared file system) and
run the same cytomsc; ``--comp``'s matrix travels in the job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import traceback
import warnings as pywarnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import CytomscError
from .options import CompSource, Options
from .output import MemoryDir, OutputDir, interrupts_held
from .results import BatchResult, CultureResult, InputError

if TYPE_CHECKING:  # pragma: no cover
    from .layout import CultureSpec
    from .panel import Panel
    from .writing import CultureFiles

__all__ = ["CultureJob", "CultureOutcome", "WriteTo", "run_culture", "run_jobs"]


@dataclass(frozen=True)
class WriteTo:
    """Write the culture's files once analysed: into ``root`` (a staging folder the worker can
    reach), or into memory when ``root`` is None (the outcome then carries the bytes)."""

    root: str | None
    header: BatchResult  # the batch's panel and parameters, for the PDF
    run_info: dict[str, Any]
    pdf: bool


@dataclass(frozen=True)
class CultureJob:
    """One culture to analyse: everything a worker needs, nothing it must look up."""

    spec: CultureSpec
    panel: Panel
    options: Options
    comp: CompSource
    folder: str  # the culture's sanitized, unique output name
    write: WriteTo | None = None  # None: keep what writing needs (``cytomsc.write`` later)


@dataclass
class CultureOutcome:
    """What came of one culture; ``result`` is None when nothing was analysed."""

    result: CultureResult | None = None
    errors: list[InputError] = field(default_factory=list)
    written: dict[str, str] = field(default_factory=dict)  # in the staging folder: rel -> SHA-256
    files: dict[str, bytes] = field(default_factory=dict)  # made in memory, for the batch to write
    joint_sample: np.ndarray | None = None  # clustered events, for the batch-wide clustering
    culture_files: CultureFiles | None = None  # not written yet: what writing them needs


def run_culture(job: CultureJob) -> CultureOutcome:
    """Analyse one culture (and write its files when asked), never raising: a failure becomes an
    error entry. With ``options.debug`` the exception is raised instead."""
    from .culture import analyze_culture
    from .writing import write_culture_files

    debug = job.options.debug
    name = job.spec.name
    try:
        # Library warnings (numpy on degenerate bins, scikit-learn convergence) are noise to a lab
        # scientist; what matters is reported in words in the culture's own warnings.
        with pywarnings.catch_warnings(), np.errstate(all="ignore"):
            if not debug:
                pywarnings.simplefilter("ignore")
            analysis = analyze_culture(job.spec, job.panel, job.options, job.comp, job.folder)
            outcome = CultureOutcome(
                analysis.result, analysis.errors, joint_sample=analysis.joint_sample
            )
            if job.write is None:
                outcome.culture_files = analysis.files
            elif analysis.files is not None:
                to = job.write
                sink = OutputDir(Path(to.root)) if to.root is not None else MemoryDir()
                write_culture_files(
                    sink, analysis.result, analysis.files, to.header, to.run_info, to.pdf
                )
                if isinstance(sink, MemoryDir):
                    outcome.files = sink.files
                else:
                    outcome.written = sink.hashes
            return outcome
    except CytomscError as err:
        if debug:
            raise
        return CultureOutcome(errors=[InputError(err.path or name, err.reason)])
    except OSError as err:  # the output folder filled up or became unwritable during the run
        if debug:
            raise
        msg = f"cannot write the results of culture {name} ({err.strerror or err})"
        return CultureOutcome(errors=[InputError(name, " ".join(msg.split()))])
    except Exception as err:  # noqa: BLE001 - one culture's bug must not stop the batch
        if debug:
            raise
        where = traceback.extract_tb(err.__traceback__)[-1]
        msg = (
            f"internal error analysing culture {name}: {type(err).__name__}: {err} "
            f"({Path(where.filename).name}:{where.lineno})"
        )
        return CultureOutcome(errors=[InputError(name, " ".join(msg.split()))])


Finished = Callable[[int, CultureOutcome], None]


def run_jobs(
    jobs: list[CultureJob],
    finished: Finished,
    processes: int = 1,
    client: Any = None,
    tick: Callable[[], None] | None = None,
) -> None:
    """Run every job; ``finished(i, outcome)`` is called in this process as each one ends (in
    any order), ``tick`` about once a second while workers run. ``client``: a
    ``dask.distributed.Client``; else ``processes`` > 1 forks a pool."""
    if client is not None:
        _on_dask(jobs, client, finished, tick)
    elif processes > 1 and len(jobs) > 1:
        _preload_stages(any(j.write is not None and j.write.pdf for j in jobs))
        _in_pool(jobs, processes, finished, tick)
    else:
        for i, job in enumerate(jobs):
            finished(i, run_culture(job))


# ---- a Dask cluster ---------------------------------------------------------------------------
def connect(address: str) -> Any:
    """A ``dask.distributed.Client`` on the scheduler at ``address`` (``tcp://HOST:PORT``), or a
    one-line ``CytomscError`` naming it: Dask not installed, or no scheduler there."""
    import re

    if not re.fullmatch(r"[a-z][a-z0-9+.-]*://\S+:\d+", address):
        raise CytomscError("not a scheduler address (tcp://HOST:PORT)", address)
    try:
        from dask.distributed import Client
    except ImportError:
        raise CytomscError('--scheduler needs Dask: pip install "cytomsc[dask]"') from None
    try:
        return Client(address, timeout="10s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as err:
        raise CytomscError(
            f"no Dask scheduler answers there ({type(err).__name__}: "
            f"{' '.join(str(err).split())[:200]})",
            address,
        ) from None


def _on_dask(
    jobs: list[CultureJob], client: Any, finished: Finished, tick: Callable[[], None] | None
) -> None:
    """One task per culture on the cluster; on Ctrl-C (or any failure) they are cancelled."""
    import uuid

    run = uuid.uuid4().hex[:12]
    futures = {
        client.submit(run_culture, job, key=f"cytomsc-{run}-{i}", pure=False): i
        for i, job in enumerate(jobs)
    }
    pending = set(futures)
    last_tick = time.monotonic()
    try:
        while pending:
            # polled, not dask's ``wait``: that needs the client to be the process's default
            done = {f for f in pending if f.done()}
            pending -= done
            if not done:
                time.sleep(0.05)
            for future in sorted(done, key=futures.__getitem__):
                i = futures[future]
                if future.status == "error":
                    error = future.exception()
                    if jobs[i].options.debug:
                        raise error
                    outcome = CultureOutcome(
                        errors=[
                            InputError(
                                jobs[i].spec.name,
                                " ".join(
                                    f"the Dask worker failed on this culture "
                                    f"({type(error).__name__}: {error})".split()
                                ),
                            )
                        ]
                    )
                else:
                    outcome = future.result()
                finished(i, outcome)
            if tick is not None and time.monotonic() - last_tick >= 1.0:
                tick()
                last_tick = time.monotonic()
    except BaseException:
        with contextlib.suppress(Exception):
            client.cancel(list(pending))
        raise


# ---- a process pool ---------------------------------------------------------------------------
def _in_pool(
    jobs: list[CultureJob], processes: int, finished: Finished, tick: Callable[[], None] | None
) -> None:
    """The cultures in a process pool, each reported as it finishes.

    On Ctrl-C (or any failure) the workers are killed at once rather than left to finish their
    culture (which took 3-11 s): their files are only in the staging folder, which goes."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures.process import BrokenProcessPool

    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    pool = ProcessPoolExecutor(
        max_workers=processes,
        mp_context=context,
        initializer=_worker_start,
        initargs=(os.getpid(),),
    )
    try:
        # The workers are forked by the first submit: Ctrl-C is held back meanwhile, so that no
        # worker is born before it ignores Ctrl-C (it would print a traceback of its own).
        with interrupts_held():
            futures = {pool.submit(run_culture, job): i for i, job in enumerate(jobs)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=futures.__getitem__):
                i = futures[future]
                try:
                    outcome = future.result()
                except BrokenProcessPool:
                    raise CytomscError(
                        f"a worker process died while analysing culture "
                        f"{jobs[i].spec.name} (killed by the system: out of "
                        "memory?); nothing was written"
                    ) from None
                finished(i, outcome)
            if tick is not None:
                tick()
    except BaseException:
        _stop_workers(pool)
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _worker_start(parent: int) -> None:
    """Every pool worker, first thing: Ctrl-C is the parent's to handle (a terminal sends it to
    every process of the group, and each worker printed its own KeyboardInterrupt traceback),
    and a worker dies with its parent, even when the parent is killed with SIGKILL (else it
    would go on writing into OUT)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # held back by the parent while it forked
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        import ctypes

        if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL) != 0:  # PR_SET_PDEATHSIG
            raise OSError("prctl")
    except (OSError, AttributeError):  # not Linux: watch the parent instead
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.2)
        if os.getppid() != parent:
            os._exit(1)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    kill = getattr(pool, "kill_workers", None)  # Python >= 3.14
    if kill is not None:
        kill()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            process.kill()


def _preload_stages(pdf: bool) -> None:
    """Import every stage's libraries once, before the pool forks its workers.

    The batch itself needs them afterwards (batch-wide clustering, overview PDF), and forked
    workers inherit them instead of each importing FlowKit, matplotlib and the rest again
    (~2-3 s of CPU per worker on this machine). Where processes are spawned, nothing changes.
    """
    import contourpy  # noqa: F401
    import flowkit  # noqa: F401  (GatingML export: every culture writes gates.xml)

    from . import fcs, gating, heterogeneity, positivity, preprocess  # noqa: F401

    if pdf:
        from .report import overview, plots  # noqa: F401
        from .report import pdf as pdf_report  # noqa: F401
