"""Command line: click commands only.

Each command parses options, calls one function of the package, prints and sets the exit status.
Heavy modules are imported inside the commands so that ``cytomsc --help`` answers at once.
Exit status: 0 done, 1 some input could not be read or analysed (the rest still done), 2 usage.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from . import __version__
from .errors import CytomscError, one_line

if TYPE_CHECKING:  # pragma: no cover
    from .options import Options
    from .pipeline import CultureDone
    from .results import InputError


def _fail(err: CytomscError, debug: bool) -> None:
    """Print a user error as one line (a traceback only with --debug) and exit 1."""
    if debug:
        raise err
    click.echo(f"error: {one_line(err.message)}", err=True)
    sys.exit(1)


def _debug_flag(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.obj["debug"] = True


class _Commands(click.Group):
    """cytomsc's command group: ``--debug`` is accepted after the subcommand too
    (``cytomsc analyze ... --debug``), as users type it."""

    group_class = type  # subgroups (``panels``) behave the same

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        super().add_command(cmd, name)
        if not any(p.name == "debug" for p in cmd.params):
            cmd.params.append(
                click.Option(
                    ["--debug"],
                    is_flag=True,
                    expose_value=False,
                    callback=_debug_flag,
                    help="Show tracebacks instead of one-line errors.",
                )
            )


def entry() -> None:
    """The installed command: ``main``, and after Ctrl-C an immediate exit.

    Once an interrupted run has stopped its workers and removed its staging folder there is
    nothing left to do, but the interpreter's own tear-down (freeing scipy, FlowKit and the
    rest) takes 1-2 s on a busy machine; Ctrl-C must stop within 2 s, so it is skipped."""
    import os

    try:
        main(prog_name="cytomsc")
    except SystemExit as stop:
        if stop.code == 130:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        raise


def parse_channel_map(text: str | None) -> dict[str, str]:
    """``FL1-A=CD90,FL2-A=CD105`` (commas or semicolons) -> {"FL1-A": "CD90", ...}; the same
    syntax as a manifest's channels column."""
    from .layout import parse_channels

    try:
        return parse_channels(text or "")
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--channel-map") from err


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cytomsc")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Flow cytometry QC of mesenchymal stromal cells (ISCT criteria, heterogeneity, PDF)."""
    ctx.obj = {"debug": debug}


@main.command()
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="FILE_OR_FOLDER..."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--panel", default="isct-2006", show_default=True, help="Panel id or TOML path.")
@click.option(
    "--data-set", default=0, show_default=True, help="Data set of multi-set files, numbered from 0."
)
@click.option("--channel-map", default=None, help="CHANNEL=MARKER,... for files without $PnS.")
@click.pass_context
def inspect(
    ctx: click.Context,
    files: tuple[Path, ...],
    as_json: bool,
    panel: str,
    data_set: int,
    channel_map: str | None,
) -> None:
    """Describe FCS files (a folder: every FCS file under it): version, cytometer, channels,
    markers, spillover, tube role."""
    from .inspection import inspect_files

    try:
        code = inspect_files(
            list(files),
            panel=panel,
            data_set=data_set,
            as_json=as_json,
            channel_map=parse_channel_map(channel_map),
        )
    except CytomscError as err:
        _fail(err, ctx.obj["debug"])
    sys.exit(code)


@main.group(invoke_without_command=True)
@click.pass_context
def panels(ctx: click.Context) -> None:
    """List the panels (criteria as data); `panels show ID` prints one."""
    if ctx.invoked_subcommand is None:
        from .panel import list_panels

        for p in list_panels():
            click.echo(f"{p.id:<20} {p.name}")


@panels.command("show")
@click.argument("panel_id")
@click.pass_context
def panels_show(ctx: click.Context, panel_id: str) -> None:
    """Print a panel's criteria (ID or path to a TOML file)."""
    from .panel import load_panel

    try:
        click.echo(load_panel(panel_id).describe())
    except CytomscError as err:
        _fail(err, ctx.obj["debug"])


@main.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--seed", default=0, show_default=True, help="Random seed.")
@click.option(
    "--preset",
    default="example",
    show_default=True,
    help="Which cultures to simulate (see README).",
)
@click.option("--overwrite", is_flag=True, help="Write into OUT even if it is not empty.")
@click.pass_context
def simulate(ctx: click.Context, out: Path, seed: int, preset: str, overwrite: bool) -> None:
    """Write simulated MSC cultures with known truth (FCS files + truth.json)."""
    from .simulate import write_preset

    try:
        if out.is_dir() and any(out.iterdir()) and not overwrite:
            raise CytomscError(
                "is not empty: pass --overwrite to write the simulated cultures into it anyway", out
            )
        written = write_preset(out, preset=preset, seed=seed)
    except CytomscError as err:
        _fail(err, ctx.obj["debug"])
    except OSError as err:
        _fail(
            CytomscError(f"cannot write ({err.strerror or err})", err.filename or out),
            ctx.obj["debug"],
        )
    fcs = [p for p in written if p.suffix.lower() == ".fcs"]
    click.echo(
        f"wrote {len({p.parent for p in fcs})} simulated culture(s), {len(fcs)} FCS "
        f"file(s) and truth.json (the known answers) to {one_line(str(out))}"
    )


@main.command()
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="Output folder (created; nothing is written outside it).",
)
@click.option("--panel", default="isct-2006", show_default=True, help="Panel id or TOML path.")
@click.option(
    "--manifest",
    type=click.Path(path_type=Path),
    default=None,
    help="Sample sheet CSV: file,culture,role[,channels,...].",
)
@click.option(
    "--comp",
    default=None,
    callback=lambda c, p, v: _check_comp(v),
    help="Compensation: the file's spillover (default), 'none', or a CSV matrix path.",
)
@click.option(
    "--control-percentile",
    default=99.5,
    show_default=True,
    type=click.FloatRange(50, 100),
    help="Percentile of the control's gated events that sets the threshold.",
)
@click.option(
    "--cluster",
    type=click.Choice(["pass", "all", "none"]),
    default="pass",
    show_default=True,
    help="Which cultures to cluster.",
)
@click.option("--export-events", is_flag=True, help="Write each tube as FCS with gate channels.")
@click.option("--no-pdf", is_flag=True, help="Skip the PDF reports.")
@click.option(
    "--data-set",
    default=0,
    show_default=True,
    help="Data set of multi-set files, numbered from 0 (as inspect numbers them).",
)
@click.option("--channel-map", default=None, help="CHANNEL=MARKER,... for files without $PnS.")
@click.option("--seed", default=0, show_default=True, help="Random seed (subsampling, clustering).")
@click.option(
    "--jobs",
    default=None,
    type=click.IntRange(1, None),
    help="Processes (default: the number of cores).",
)
@click.option(
    "--overwrite", is_flag=True, help="Remove results in OUT of cultures that are not in this run."
)
@click.option("-v", "--verbose", is_flag=True, help="Print each culture's warnings.")
@click.option(
    "--gates",
    type=click.Path(path_type=Path),
    default=None,
    help="The lab's gates (FlowJo 10 .wsp or GatingML 2.0) instead of automatic ones.",
)
@click.option(
    "--gate-path",
    default=None,
    help="With --gates: the analysed population, e.g. /Lymphocytes/Singlets/Live.",
)
@click.option("--operator", default="", help="Operator named on each report (release record).")
@click.option("--comment", default="", help="Free comment printed on each report.")
@click.option(
    "--db",
    default=None,
    metavar="PATH|URL",
    help="Also record the batch in this results database (an SQLite file, made on "
    "first use, or an SQLAlchemy URL).",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="tcp://HOST:PORT",
    help='Run the cultures on this Dask cluster (pip install "cytomsc[dask]"); '
    "its workers must read the inputs at the same paths.",
)
@click.pass_context
def analyze(
    ctx: click.Context,
    inputs: tuple[Path, ...],
    out: Path,
    panel: str,
    manifest: Path | None,
    comp: str | None,
    control_percentile: float,
    cluster: str,
    export_events: bool,
    no_pdf: bool,
    data_set: int,
    channel_map: str | None,
    seed: int,
    jobs: int | None,
    overwrite: bool,
    verbose: bool,
    gates: Path | None,
    gate_path: str | None,
    operator: str,
    comment: str,
    db: str | None,
    scheduler: str | None,
) -> None:
    """Gate, measure and judge every culture in INPUTS (files and folders) or in --manifest;
    write OUT."""
    import os

    from .options import Cluster, Options

    if not inputs and manifest is None:
        raise click.UsageError("give the FCS files or folders to analyse, or --manifest")
    opts = Options(
        panel=panel,
        comp=comp,
        control_percentile=control_percentile,
        seed=seed,
        jobs=jobs or os.cpu_count() or 1,
        cluster=cast(Cluster, cluster),
        export_events=export_events,
        pdf=not no_pdf,
        data_set=data_set,
        channel_map=parse_channel_map(channel_map),
        manifest=str(manifest) if manifest else None,
        debug=ctx.obj["debug"],
        gates=str(gates) if gates else None,
        gate_path=gate_path,
        operator=operator,
        comment=comment,
    )
    console = _Console(verbose)
    console.status("loading")
    try:
        _analyze(console, list(inputs), out, opts, overwrite, db, scheduler)
    except KeyboardInterrupt:  # outside the batch (while starting or printing)
        console.close()
        click.echo("interrupted", err=True)
        sys.exit(130)


def _analyze(
    console: _Console,
    inputs: list[Path],
    out: Path,
    opts: Options,
    overwrite: bool,
    db: str | None,
    scheduler: str | None,
) -> None:
    from .pipeline import Interrupted, run_batch

    debug = opts.debug
    console.close()  # an error below must not land on the status line
    _check_panel(opts.panel, debug)
    _check_gates(Path(opts.gates) if opts.gates else None, opts.gate_path, debug)
    if db:
        _check_db(db, debug)
    client = _connect(scheduler, debug) if scheduler else None
    command = "cytomsc " + " ".join(sys.argv[1:]) if sys.argv else "cytomsc analyze"
    console.status("finding cultures")
    try:
        batch = run_batch(
            inputs, out, opts, command, progress=console, overwrite=overwrite, client=client
        )
    except CytomscError as err:
        console.close()
        _fail(err, debug)
    except Interrupted as stop:
        console.close()
        if stop.committed:
            click.echo(
                f"interrupted; the results were already complete in {one_line(str(out))}", err=True
            )
        else:
            click.echo(f"interrupted: nothing was changed in {one_line(str(out))}", err=True)
        sys.exit(130)
    finally:
        if client is not None:
            client.close()
    console.close()
    for e in batch.errors:
        console.error(e)
    click.echo(
        f"{len(batch.cultures)} culture(s) analysed, {len(batch.errors)} error(s); "
        f"results in {one_line(str(out))}"
    )
    if db:
        _record(db, out, debug)
    sys.exit(1 if batch.errors else 0)


def _connect(address: str, debug: bool) -> Any:
    """--scheduler: a Dask client, or a usage error (exit 2) said once before any work."""
    from .scheduler import connect

    try:
        return connect(address)
    except CytomscError as err:
        if debug:
            raise
        click.echo(f"error: --scheduler: {one_line(err.message)}", err=True)
        sys.exit(2)


def _check_comp(value: str | None) -> str | None:
    """A --comp CSV that is missing or malformed is a usage error (exit 2), said once before
    any work, not once per culture."""
    if value is None or value.lower() in ("none", "file"):
        return value
    from .preprocess import _read_comp_csv

    if not Path(value).is_file():
        raise click.BadParameter(
            f"{one_line(value)}: no such file (give a CSV matrix, or 'none')", param_hint="--comp"
        )
    try:
        _read_comp_csv(Path(value))
    except CytomscError as err:
        raise click.BadParameter(one_line(err.message), param_hint="--comp") from None
    return value


class _Console:
    """What a person sees while a batch runs.

    On a terminal, a progress line on stderr from the first second (cultures done of the total,
    time elapsed and left); each culture's verdict on stdout as it finishes, with its number of
    warnings (the warnings themselves with -v); notes and errors on stderr. When stderr is not a
    terminal (a log file, a pipe), there is no progress line at all. Every name printed has its
    control characters escaped, so one message stays one line."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.tty = sys.stderr.isatty()
        self.bar: Any = None
        self.printed: set[tuple[str, str]] = set()

    def status(self, text: str) -> None:
        if self.tty and self.bar is None:
            click.echo(f"\r{text}...\033[K", err=True, nl=False)

    def started(self, total: int) -> None:
        if not self.tty:
            return
        from tqdm import tqdm

        tqdm.monitor_interval = 0  # no monitor thread: the pool's workers are forked
        click.echo("\r\033[K", err=True, nl=False)
        self.bar = tqdm(
            total=total,
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
            bar_format="analysing {n_fmt}/{total_fmt} culture(s) |{bar:20}| "
            "{elapsed} elapsed, about {remaining} left",
        )

    def note(self, message: str) -> None:
        self._line(f"note: {one_line(message)}", err=True)

    def error(self, e: InputError) -> None:
        key = (e.path, e.message)
        if key not in self.printed:
            self.printed.add(key)
            self._line(f"error: {one_line(e.path)}: {one_line(e.message)}", err=True)

    def finished(self, done: CultureDone) -> None:
        for e in done.errors:
            self.error(e)
        c = done.result
        if c is not None and c.files:
            flag = " (borderline)" if c.borderline else ""
            n = len(c.warnings)
            warned = f", {n} warning{'s' if n != 1 else ''}" if n else ""
            self._line(f"{one_line(c.culture)}: {c.verdict.upper()}{flag}{warned}")
            if self.verbose:
                for w in c.warnings:
                    self._line(f"  warning: {one_line(w)}")
        if self.bar is not None:
            self.bar.update(1)

    def tick(self) -> None:
        if self.bar is not None:
            self.bar.refresh()  # the elapsed time moves while a long culture runs

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.tty:
            click.echo("\r\033[K", err=True, nl=False)

    def _line(self, text: str, err: bool = False) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr if err else sys.stdout)
        else:
            click.echo(text, err=err)


def _check_panel(panel: str, debug: bool) -> None:
    """An unknown or malformed --panel is a usage error (exit 2), found before any work."""
    from .panel import load_panel

    try:
        load_panel(panel)
    except CytomscError as err:
        if debug:
            raise
        click.echo(f"error: --panel: {err.message}", err=True)
        sys.exit(2)


def _check_gates(gates: Path | None, gate_path: str | None, debug: bool) -> None:
    """An unreadable --gates file, or a --gate-path in none of its samples, is a usage error
    (exit 2), found before any work."""
    if gates is None:
        if gate_path:
            click.echo("error: --gate-path needs --gates", err=True)
            sys.exit(2)
        return
    from .workspace import check_gate_path, load_lab_gates

    try:
        check_gate_path(load_lab_gates(gates), gate_path)
    except CytomscError as err:
        if debug:
            raise
        click.echo(f"error: --gates: {err.message}", err=True)
        sys.exit(2)


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--gates",
    required=True,
    type=click.Path(path_type=Path),
    help="The lab's gates: a FlowJo 10 workspace (.wsp) or a GatingML 2.0 file.",
)
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="Output folder: compare.csv, compare.json, compare.pdf.",
)
@click.option(
    "--match",
    "matches",
    multiple=True,
    metavar="QUANTITY=PATH",
    help="Pair a cytomsc gate (cells, singlets, live) or a marker with a workspace "
    "gate, e.g. cells=/Lymphocytes or CD73=/Cells/CD73+ (repeatable).",
)
@click.option("--panel", default="isct-2006", show_default=True, help="Panel id or TOML path.")
@click.option(
    "--manifest",
    type=click.Path(path_type=Path),
    default=None,
    help="Sample sheet CSV: file,culture,role[,channels,...].",
)
@click.option(
    "--comp",
    default=None,
    help="Compensation: the file's spillover (default), 'none', or a CSV matrix path.",
)
@click.option(
    "--control-percentile",
    default=99.5,
    show_default=True,
    type=click.FloatRange(50, 100),
    help="As for analyze.",
)
@click.option("--data-set", default=0, show_default=True, help="Data set of multi-set files.")
@click.option("--channel-map", default=None, help="CHANNEL=MARKER,... for files without $PnS.")
@click.option("--seed", default=0, show_default=True, help="Random seed.")
@click.option("--no-pdf", is_flag=True, help="Skip compare.pdf.")
@click.pass_context
def compare(
    ctx: click.Context,
    inputs: tuple[Path, ...],
    gates: Path,
    out: Path,
    matches: tuple[str, ...],
    panel: str,
    manifest: Path | None,
    comp: str | None,
    control_percentile: float,
    data_set: int,
    channel_map: str | None,
    seed: int,
    no_pdf: bool,
) -> None:
    """Automatic gates beside the lab's manual ones: counts, differences, F1, Bland-Altman."""
    from .compare import parse_matches, run_compare
    from .options import Options

    debug = ctx.obj["debug"]
    _check_panel(panel, debug)
    _check_gates(gates, None, debug)
    try:
        pairs = parse_matches(matches)
    except CytomscError as err:
        click.echo(f"error: {err.message}", err=True)
        sys.exit(2)
    opts = Options(
        panel=panel,
        comp=comp,
        control_percentile=control_percentile,
        seed=seed,
        jobs=1,
        cluster="none",
        pdf=False,
        data_set=data_set,
        channel_map=parse_channel_map(channel_map),
        manifest=str(manifest) if manifest else None,
        debug=debug,
        gates=str(gates),
    )
    try:
        result = run_compare(list(inputs), out, opts, pairs, pdf=not no_pdf)
    except CytomscError as err:
        _fail(err, debug)
    for s in result.summaries:
        click.echo(f"{s.quantity}: n={s.n}, bias {s.bias_pp:+.2f} pp, mean F1 {s.mean_f1:.4f}")
    for e in result.errors:
        click.echo(f"error: {e.path}: {e.message}", err=True)
    click.echo(f"{len(result.rows)} comparison(s), {len(result.errors)} error(s); results in {out}")
    sys.exit(1 if result.errors else 0)


def _check_db(db: str, debug: bool) -> None:
    """A results database that cannot be opened is a usage error (exit 2), found before any
    analysis (the tables are made here on first use)."""
    from .store import connect

    try:
        connect(db, write=True).dispose()
    except CytomscError as err:
        if debug:
            raise
        click.echo(f"error: --db: {err.message}", err=True)
        sys.exit(2)


def _record(db: str, out: Path, debug: bool) -> None:
    """Append the batch just written to the results database (after its files are complete)."""
    from .store import database_url, record_results, shown

    try:
        rec = record_results(db, out)
        where = shown(database_url(db))
    except CytomscError as err:
        _fail(err, debug)
    if rec.new_batch:
        click.echo(
            f"recorded in {where}: batch {rec.batch_id}, {rec.cultures_added} new "
            f"culture(s), {rec.cultures_known} already stored"
        )
    else:
        click.echo(f"already recorded in {where} (batch {rec.batch_id}): nothing added")


_ISO_DATE = click.DateTime(formats=["%Y-%m-%d"])


def _lot_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


@main.command()
@click.option("--db", required=True, metavar="PATH|URL", help="The results database.")
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="Output folder (trend.pdf, PNGs, CSVs).",
)
@click.option("--marker", "markers", multiple=True, help="Chart only this marker (repeatable).")
@click.option(
    "--by",
    type=click.Choice(["lot", "donor", "passage"]),
    default="lot",
    show_default=True,
    help="The x axis: lots in time order, by donor, or by passage.",
)
@click.option(
    "--since",
    type=_ISO_DATE,
    default=None,
    help="Only lots acquired on or after this date (YYYY-MM-DD).",
)
@click.option(
    "--reference",
    default=10,
    show_default=True,
    type=click.IntRange(3, None),
    help="Reference window: the first N lots in time order.",
)
@click.option("--reference-lots", default=None, help="Reference window: these lots (L1,L2,...).")
@click.option("--panel", default=None, help="Only lots analysed with this panel id.")
@click.pass_context
def trend(
    ctx: click.Context,
    db: str,
    out: Path,
    markers: tuple[str, ...],
    by: str,
    since: datetime | None,
    reference: int,
    reference_lots: str | None,
    panel: str | None,
) -> None:
    """Control charts of every judged marker across lots, and populations across passages."""
    from .trend import run_trend

    try:
        result, written = run_trend(
            db,
            out,
            markers=list(markers) or None,
            by=by,
            since=since.date() if since else None,
            reference=reference,
            reference_lots=_lot_list(reference_lots or "") or None,
            panel=panel,
        )
    except CytomscError as err:
        _fail(err, ctx.obj["debug"])
    for chart, point in result.flags():
        click.echo(
            f"{point.lot}: {chart.marker} {point.value:.2f} % flagged ({', '.join(point.rules)})"
        )
    click.echo(
        f"{len(result.lots)} lot(s), {len(result.charts)} chart(s), "
        f"{len({p.lot for _, p in result.flags()})} lot(s) flagged; {len(written)} "
        f"file(s) in {out}"
    )


@main.command("compare-lots")
@click.argument("groups", nargs=-1)
@click.option("--db", required=True, metavar="PATH|URL", help="The results database.")
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="Output folder (compare.pdf, CSVs).",
)
@click.option(
    "--margin",
    "margins",
    multiple=True,
    required=True,
    help="Equivalence margin in points: X for every marker, MARKER=X for one.",
)
@click.option(
    "--split",
    type=_ISO_DATE,
    default=None,
    help="Compare lots acquired before this date with those on or after it.",
)
@click.option("--marker", "markers", multiple=True, help="Compare only this marker.")
@click.option("--panel", default=None, help="Only lots analysed with this panel id.")
@click.pass_context
def compare_lots(
    ctx: click.Context,
    groups: tuple[str, ...],
    db: str,
    out: Path,
    margins: tuple[str, ...],
    split: datetime | None,
    markers: tuple[str, ...],
    panel: str | None,
) -> None:
    """Compare lot A with lot B (or groups A1,A2 B1,B2, or --split DATE): differences in %
    positive with 95 % intervals, TOST equivalence against --margin, population fractions."""
    from .lots import run_compare

    debug = ctx.obj["debug"]
    if (split is None and len(groups) != 2) or (split is not None and groups):
        click.echo("error: give two lots or groups (A B), or --split DATE", err=True)
        sys.exit(2)
    try:
        result, written = run_compare(
            db,
            out,
            a=_lot_list(groups[0]) if groups else None,
            b=_lot_list(groups[1]) if groups else None,
            split=split.date() if split else None,
            margins=margins,
            markers=list(markers) or None,
            panel=panel,
        )
    except CytomscError as err:
        _fail(err, debug)
    for m in result.markers:
        d = m.difference
        word = {True: "equivalent", False: "not shown equivalent", None: "no margin"}[d.equivalent]
        ci = f"{d.ci95[0]:+.2f} to {d.ci95[1]:+.2f}" if d.ci95 else "-"
        click.echo(f"{m.marker}: {d.diff:+.2f} points (95 % {ci}), {word}")
    click.echo(f"{len(written)} file(s) in {out}")
