"""A batch of cultures: found, analysed (``culture.py``) wherever they run (``scheduler.py``),
clustered together, and written (``writing.py``).

Two ways through, sharing every step:

- ``analyze_batch`` (``cytomsc.analyze``) writes nothing: it returns the ``BatchResult``, which
  also keeps what writing each culture's files needs, for ``write_batch`` (``cytomsc.write``).
- ``run_batch`` (``cytomsc analyze``) locks OUT first and refuses before any work what it may
  not overwrite, has each culture's files written by the worker that analysed it into a staging
  folder, and moves the results into place only when the batch is complete
  (``output.RunFolder``); Ctrl-C raises ``Interrupted`` once the workers are stopped and the
  staging folder is gone.

The outcomes are gathered in input order, so the result does not depend on the number of
processes or machines. One bad file or culture never stops the batch: it becomes an entry of
``errors`` and the rest goes on.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from . import __version__, record
from .clustering import cluster_batch
from .errors import CytomscError
from .options import CompSource, Options
from .output import BATCH_FILES, RUN_FILE, OutputDir, RunFolder
from .results import BatchResult, CultureResult, InputError, PanelInfo
from .scheduler import CultureJob, CultureOutcome, WriteTo, run_jobs
from .writing import write_batch_files, write_culture_files

if TYPE_CHECKING:  # pragma: no cover
    from .layout import CultureSpec
    from .panel import Panel
    from .spillover import SpilloverResult
    from .writing import CultureFiles

__all__ = [
    "BatchPlan",
    "CultureDone",
    "Interrupted",
    "Listener",
    "Options",
    "analyze_batch",
    "plan_batch",
    "run_batch",
    "write_batch",
]


class Interrupted(Exception):
    """Ctrl-C stopped the batch. ``committed``: the results had already been moved into place
    (the interrupt came during the last milliseconds); otherwise OUT is as it was."""

    def __init__(self, committed: bool) -> None:
        super().__init__("interrupted")
        self.committed = committed


@dataclass
class CultureDone:
    """One culture finished: what the console shows as cultures finish (in any order)."""

    index: int  # position in the batch (input order)
    total: int
    culture: str
    result: CultureResult | None  # None: nothing analysed (see errors)
    errors: list[InputError]


class Listener(Protocol):
    """What a batch tells its caller while it runs (the CLI prints it; nothing here prints)."""

    def started(self, total: int) -> None: ...

    def note(self, message: str) -> None: ...

    def finished(self, done: CultureDone) -> None: ...

    def tick(self) -> None: ...  # about once a second while workers run (elapsed time)


@dataclass
class BatchPlan:
    """A batch found and settled before any culture runs: its cultures and their output names,
    the panel, the compensation every culture gets, and the options as analysed (single-stain
    controls set ``comp_label``)."""

    panel: Panel
    specs: list[CultureSpec]
    folders: list[str]  # each culture's sanitized, unique output name
    options: Options
    comp: CompSource
    compensation: SpilloverResult | None  # the single-stain controls' matrix, when given
    errors: list[InputError]  # inputs found unusable (folders without FCS, bad manifest rows)

    @property
    def header(self) -> BatchResult:
        """The batch without cultures: panel and parameters (what each culture's PDF prints)."""
        p = self.panel
        return BatchResult(
            cytomsc_version=__version__,
            panel=PanelInfo(p.id, p.name, p.reference, p.version, p.sha256),
            parameters=self.options.as_parameters(),
            cultures=[],
        )

    def run_info(self, command: str) -> dict[str, Any]:
        """The run for run.json and the PDFs' audit pages (the only place the time is kept)."""
        return {
            "command": command,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seed": self.options.seed,
            "parameters": self.options.as_parameters(),
            "versions": record.software_versions(),
        }

    def jobs(self, write: WriteTo | None = None) -> list[CultureJob]:
        return [
            CultureJob(spec, self.panel, self.options, self.comp, folder, write)
            for spec, folder in zip(self.specs, self.folders, strict=True)
        ]


def plan_batch(
    inputs: list[Path],
    opts: Options,
    output: Path | None = None,
    output_files: set[Path] | frozenset[Path] = frozenset(),
) -> BatchPlan:
    """Find the cultures in ``inputs`` (or ``opts.manifest``), give each a safe output name, and
    settle the compensation: ``--comp``'s CSV read once, or the matrix of the manifest's
    single-stain controls (spillover.py). ``output``: the output folder, never searched (and the
    files cytomsc wrote there, ``output_files``, left out when it is also an input)."""
    from .layout import discover, safe_name
    from .panel import load_panel

    panel = load_panel(opts.panel)
    manifest = Path(opts.manifest) if opts.manifest else None
    specs, errors = discover(
        inputs, manifest=manifest, panel=panel, output=output, output_files=output_files
    )
    compensation = None
    comp = CompSource.from_option(opts.comp)
    if any(t.role.kind == "single" for s in specs for t in s.tubes):
        from .spillover import COMP_FILE, compensation_from_controls

        specs, compensation, failed = compensation_from_controls(specs, opts.data_set, opts.comp)
        errors += failed
        if compensation is not None and compensation.used:
            opts = dataclasses.replace(
                opts,
                comp_label=f"single-stain controls ({COMP_FILE})",
                comp_notes=tuple(compensation.warnings),
            )
            comp = CompSource(COMP_FILE, compensation.as_tuple())
    taken: set[str] = set(BATCH_FILES)
    folders = []
    for spec in specs:
        folders.append(safe_name(spec.name, taken))
        taken.add(folders[-1])
    return BatchPlan(panel, specs, folders, opts, comp, compensation, list(errors))


def _gathered(
    plan: BatchPlan, outcomes: list[CultureOutcome], run_info: dict[str, Any]
) -> BatchResult:
    """The cultures' outcomes, in input order, made one batch (clustered together)."""
    errors = list(plan.errors)
    cultures: list[CultureResult] = []
    samples: dict[str, np.ndarray] = {}
    files: dict[str, CultureFiles] = {}
    for outcome in outcomes:
        errors.extend(outcome.errors)
        result = outcome.result
        # A culture none of whose files could be read is only its errors, not an analysed culture.
        if result is not None and result.files:
            cultures.append(result)
            if outcome.joint_sample is not None:
                samples[result.culture] = outcome.joint_sample
            if outcome.culture_files is not None:
                files[result.output_name] = outcome.culture_files
    return dataclasses.replace(
        plan.header,
        cultures=cultures,
        errors=errors,
        batch_populations=cluster_batch(cultures, samples, plan.options.seed),
        compensation=plan.compensation,
        run_info=run_info,
        culture_files=files,
    )


# ---- the API's way: analyse, then write --------------------------------------------------------
def analyze_batch(
    inputs: list[Path],
    opts: Options,
    client: Any = None,
    progress: Listener | None = None,
    command: str = "",
) -> BatchResult:
    """Analyse every culture in ``inputs`` and write nothing (``cytomsc.analyze``)."""
    plan = plan_batch(inputs, opts)
    run_info = plan.run_info(command)
    outcomes = _run(plan, plan.jobs(), client, progress)
    return _gathered(plan, outcomes, run_info)


def write_batch(
    batch: BatchResult, out_dir: Path, overwrite: bool = False, pdf: bool = True
) -> list[str]:
    """Write an analysed batch into ``out_dir`` as ``run_batch`` would have (``cytomsc.write``):
    locked, staged and committed (``output.RunFolder``). Returns the files written (relative to
    ``out_dir``)."""
    folder = RunFolder(out_dir)
    with folder:
        names = [c.output_name for c in batch.cultures]
        _check_others(folder, set(names), overwrite, out_dir, None)
        folder.check_free(_planned(names, pdf))
        out = folder.staging()
        hashes: dict[str, str] = {}
        for c in batch.cultures:
            files = batch.culture_files.get(c.output_name)
            if files is not None:
                mine = OutputDir(out.root)  # the culture's own files, for its PDF's audit page
                write_culture_files(mine, c, files, batch, batch.run_info, pdf)
                hashes.update(mine.hashes)
        _, written = _commit(
            folder,
            out,
            batch,
            hashes,
            {name: c.culture for name, c in zip(names, batch.cultures, strict=True)},
            pdf,
        )
    return sorted([*written, RUN_FILE])


# ---- the command's way: write as the cultures finish -------------------------------------------
def run_batch(
    inputs: list[Path],
    out_dir: Path,
    opts: Options,
    command: str = "",
    progress: Listener | None = None,
    overwrite: bool = False,
    client: Any = None,
) -> BatchResult:
    """Analyse every culture found in ``inputs`` and write the batch outputs into ``out_dir``.

    The run locks ``out_dir``, writes into a staging folder inside it and moves the results into
    place only when the batch is complete (``output.RunFolder``). Results of cultures that are
    not in this run are removed only with ``overwrite``; otherwise the run refuses before any
    work. ``client``: a ``dask.distributed.Client`` to run the cultures on. Ctrl-C raises
    ``Interrupted`` once the workers are stopped and the staging folder is gone."""
    folder = RunFolder(out_dir)
    previous_handler = None
    try:
        with folder:
            try:
                return _batch(folder, inputs, out_dir, opts, command, progress, overwrite, client)
            except KeyboardInterrupt:
                previous_handler = _ignore_interrupts()  # a 2nd Ctrl-C must not break clean-up
                raise
    except KeyboardInterrupt:
        raise Interrupted(folder.committed) from None
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)


def _batch(
    folder: RunFolder,
    inputs: list[Path],
    out_dir: Path,
    opts: Options,
    command: str,
    progress: Listener | None,
    overwrite: bool,
    client: Any,
) -> BatchResult:
    plan = plan_batch(inputs, opts, output=folder.root, output_files=folder.owned_inputs())
    others = _check_others(folder, set(plan.folders), overwrite, out_dir, progress)
    folder.check_free(_planned(plan.folders, plan.options.pdf))
    out = folder.staging()
    run_info = plan.run_info(command)
    # A worker of this machine writes into the staging folder itself; a Dask worker, which may
    # be another machine, makes the files in memory and this process writes them.
    write = WriteTo(
        str(out.root) if client is None else None, plan.header, run_info, plan.options.pdf
    )
    outcomes = _run(plan, plan.jobs(write), client, progress, out)
    hashes: dict[str, str] = {}
    for outcome in outcomes:
        hashes.update(outcome.written)
    batch = _gathered(plan, outcomes, run_info)
    removed, _ = _commit(
        folder,
        out,
        batch,
        hashes,
        {f: s.name for s, f in zip(plan.specs, plan.folders, strict=True)},
        plan.options.pdf,
    )
    announced = {rel for files in others.values() for rel in files}
    rest = [rel for rel in removed if rel not in announced]
    if rest and progress is not None:
        shown = ", ".join(rest[:5]) + (f" and {len(rest) - 5} more" if len(rest) > 5 else "")
        progress.note(
            f"removed {len(rest)} file(s) of the previous run that this run did not "
            f"write again: {shown}"
        )
    return batch


def _run(
    plan: BatchPlan,
    jobs: list[CultureJob],
    client: Any,
    progress: Listener | None,
    out: OutputDir | None = None,
) -> list[CultureOutcome]:
    """Every job run; each outcome's in-memory files written into ``out`` as it arrives."""
    outcomes = [CultureOutcome() for _ in jobs]

    def finished(i: int, outcome: CultureOutcome) -> None:
        if out is not None and outcome.files:
            mine = OutputDir(out.root)
            for rel, data in sorted(outcome.files.items()):
                mine.write_bytes(data, *rel.split("/"))
            outcome = dataclasses.replace(
                outcome, files={}, written={**outcome.written, **mine.hashes}
            )
        outcomes[i] = outcome
        if progress is not None:
            progress.finished(
                CultureDone(i, len(jobs), plan.specs[i].name, outcome.result, outcome.errors)
            )

    if progress is not None:
        progress.started(len(jobs))
    run_jobs(
        jobs,
        finished,
        processes=plan.options.jobs,
        client=client,
        tick=progress.tick if progress is not None else None,
    )
    return outcomes


def _planned(folders: list[str], pdf: bool) -> list[str]:
    planned = ["summary.json", "summary.csv", *(f"{f}/gates.xml" for f in folders)]
    if pdf:
        planned += ["overview.pdf", *(f"{f}.pdf" for f in folders)]
    return planned


def _check_others(
    folder: RunFolder, names: set[str], overwrite: bool, out_dir: Path, progress: Listener | None
) -> dict[str, list[str]]:
    """Results in OUT of cultures not in this run: refused without ``overwrite``."""
    others = folder.other_cultures(names)
    if others and not overwrite:
        raise CytomscError(
            f"holds the results of {len(others)} culture(s) not in this run "
            f"({_names(others)}): pass --overwrite to remove them, or choose "
            "another output folder",
            out_dir,
        )
    if others and progress is not None:
        n = sum(len(v) for v in others.values())
        progress.note(
            f"removing {n} file(s) of {len(others)} culture(s) not in this run: {_names(others)}"
        )
    return others


def _commit(
    folder: RunFolder,
    out: OutputDir,
    batch: BatchResult,
    hashes: dict[str, str],
    cultures: dict[str, str],
    pdf: bool,
) -> tuple[list[str], dict[str, str]]:
    """The batch's own files, sha256sums.txt, then the move into place with run.json; returns
    the previous run's files removed, and every file written with its SHA-256."""
    write_batch_files(out, batch, pdf)
    hashes = {**hashes, **out.hashes}
    record.write_sums(out, hashes)
    hashes.update(out.hashes)
    run = {"cytomsc_version": __version__, **batch.run_info, "cultures": cultures}
    return folder.commit(hashes, run), hashes


def _names(groups: dict[str, list[str]]) -> str:
    names = sorted(groups)
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _ignore_interrupts() -> Any:
    """Ignore Ctrl-C from now on; returns the handler to restore (None: not the main thread,
    where handlers cannot be changed)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, signal.SIG_IGN)
