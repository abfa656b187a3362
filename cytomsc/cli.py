"""Command line: click commands only.

Each command parses options, calls one function of the package, prints and sets the exit status.
Heavy modules are imported inside the commands so that ``cytomsc --help`` answers at once.
Exit status: 0 done, 1 some input could not be read or analysed (the rest still done), 2 usage.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__
from .errors import CytomscError


def _fail(err: CytomscError, debug: bool) -> None:
    """Print a user error as one line (a traceback only with --debug) and exit 1."""
    if debug:
        raise err
    click.echo(f"error: {err.message}", err=True)
    sys.exit(1)


def parse_channel_map(text: str | None) -> dict[str, str]:
    """``FL1-A=CD90,FL2-A=CD105`` (commas or semicolons) -> {"FL1-A": "CD90", ...}; the same
    syntax as a manifest's channels column."""
    from .layout import parse_channels

    try:
        return parse_channels(text or "")
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--channel-map") from err


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cytomsc")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Flow cytometry QC of mesenchymal stromal cells (ISCT criteria, heterogeneity, PDF)."""
    ctx.obj = {"debug": debug}


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--panel", default="isct-2006", show_default=True, help="Panel id or TOML path.")
@click.option("--data-set", default=0, show_default=True, help="Data set of multi-set files.")
@click.option("--channel-map", default=None, help="CHANNEL=MARKER,... for files without $PnS.")
@click.pass_context
def inspect(ctx: click.Context, files: tuple[Path, ...], as_json: bool, panel: str,
            data_set: int, channel_map: str | None) -> None:
    """Describe FCS files: version, cytometer, channels, markers, spillover, tube role."""
    from .inspect import inspect_files

    try:
        code = inspect_files(list(files), panel=panel, data_set=data_set, as_json=as_json,
                             channel_map=parse_channel_map(channel_map))
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
@click.option("--preset", default="example", show_default=True,
              help="Which cultures to simulate (see README).")
@click.pass_context
def simulate(ctx: click.Context, out: Path, seed: int, preset: str) -> None:
    """Write simulated MSC cultures with known truth (FCS files + truth.json)."""
    from .simulate import write_preset

    try:
        write_preset(out, preset=preset, seed=seed)
    except CytomscError as err:
        _fail(err, ctx.obj["debug"])


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", "out", required=True, type=click.Path(path_type=Path),
              help="Output folder (created; nothing is written outside it).")
@click.option("--panel", default="isct-2006", show_default=True, help="Panel id or TOML path.")
@click.option("--manifest", type=click.Path(path_type=Path), default=None,
              help="Sample sheet CSV: file,culture,role[,channels,...].")
@click.option("--comp", default=None,
              help="Compensation: the file's spillover (default), 'none', or a CSV matrix path.")
@click.option("--control-percentile", default=99.5, show_default=True,
              type=click.FloatRange(50, 100),
              help="Percentile of the control's gated events that sets the threshold.")
@click.option("--cluster", type=click.Choice(["pass", "all", "none"]), default="pass",
              show_default=True, help="Which cultures to cluster.")
@click.option("--export-events", is_flag=True, help="Write each tube as FCS with gate channels.")
@click.option("--no-pdf", is_flag=True, help="Skip the PDF reports.")
@click.option("--data-set", default=0, show_default=True, help="Data set of multi-set files.")
@click.option("--channel-map", default=None, help="CHANNEL=MARKER,... for files without $PnS.")
@click.option("--seed", default=0, show_default=True, help="Random seed (subsampling, clustering).")
@click.option("--jobs", default=None, type=click.IntRange(1, None),
              help="Processes (default: the number of cores).")
@click.option("--db", default=None, metavar="PATH|URL",
              help="Also record the batch in this results database (an SQLite file, made on "
                   "first use, or an SQLAlchemy URL).")
@click.pass_context
def analyze(ctx: click.Context, inputs: tuple[Path, ...], out: Path, panel: str,
            manifest: Path | None, comp: str | None, control_percentile: float, cluster: str,
            export_events: bool, no_pdf: bool, data_set: int, channel_map: str | None,
            seed: int, jobs: int | None, db: str | None) -> None:
    """Gate, measure and judge every culture in INPUTS (files and folders); write OUT."""
    import os

    from .pipeline import Options, run_batch

    debug = ctx.obj["debug"]
    opts = Options(
        panel=panel, comp=comp, control_percentile=control_percentile, seed=seed,
        jobs=jobs or os.cpu_count() or 1, cluster=cluster, export_events=export_events,
        pdf=not no_pdf, data_set=data_set, channel_map=parse_channel_map(channel_map),
        manifest=str(manifest) if manifest else None, debug=debug,
    )
    _check_panel(panel, debug)
    if db:
        _check_db(db, debug)
    command = "cytomsc " + " ".join(sys.argv[1:]) if sys.argv else "cytomsc analyze"
    try:
        progress = _show_progress if sys.stderr.isatty() else None
        batch = run_batch(list(inputs), out, opts, command, progress=progress)
    except CytomscError as err:
        _fail(err, debug)
    for c in batch.cultures:
        flag = " (borderline)" if c.borderline else ""
        click.echo(f"{c.culture}: {c.verdict.upper()}{flag}")
    for e in batch.errors:
        click.echo(f"error: {e['path']}: {e['message']}", err=True)
    click.echo(f"{len(batch.cultures)} culture(s) analysed, {len(batch.errors)} error(s); "
               f"results in {out}")
    if db:
        _record(db, out, debug)
    sys.exit(1 if batch.errors else 0)


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


def _show_progress(done: int, total: int) -> None:
    """A one-line progress counter on a terminal (never in logs or pipes)."""
    end = "\n" if done == total else ""
    click.echo(f"\ranalysed {done}/{total} culture(s)", err=True, nl=False)
    if end:
        click.echo("", err=True)


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
        click.echo(f"recorded in {where}: batch {rec.batch_id}, {rec.cultures_added} new "
                   f"culture(s), {rec.cultures_known} already stored")
    else:
        click.echo(f"already recorded in {where} (batch {rec.batch_id}): nothing added")


_ISO_DATE = click.DateTime(formats=["%Y-%m-%d"])


def _lot_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


@main.command()
@click.option("--db", required=True, metavar="PATH|URL", help="The results database.")
@click.option("-o", "--out", "out", required=True, type=click.Path(path_type=Path),
              help="Output folder (trend.pdf, PNGs, CSVs).")
@click.option("--marker", "markers", multiple=True, help="Chart only this marker (repeatable).")
@click.option("--by", type=click.Choice(["lot", "donor", "passage"]), default="lot",
              show_default=True, help="The x axis: lots in time order, by donor, or by passage.")
@click.option("--since", type=_ISO_DATE, default=None, help="Only lots acquired on or after "
              "this date (YYYY-MM-DD).")
@click.option("--reference", default=10, show_default=True, type=click.IntRange(3, None),
              help="Reference window: the first N lots in time order.")
@click.option("--reference-lots", default=None, help="Reference window: these lots (L1,L2,...).")
@click.option("--panel", default=None, help="Only lots analysed with this panel id.")
@click.pass_context
def trend(ctx: click.Context, db: str, out: Path, markers: tuple[str, ...], by: str,
          since: object, reference: int, reference_lots: str | None, panel: str | None) -> None:
    """Control charts of every judged marker across lots, and populations across passages."""
    from .trend import run_trend

    try:
        result, written = run_trend(db, out, markers=list(markers) or None, by=by,
                                    since=since.date() if since else None, reference=reference,
                                    reference_lots=_lot_list(reference_lots or "") or None,
                                    panel=panel)
    except CytomscError as err:
        _fail(err, ctx.obj["debug"])
    for chart, point in result.flags():
        click.echo(f"{point.lot}: {chart.marker} {point.value:.2f} % flagged "
                   f"({', '.join(point.rules)})")
    click.echo(f"{len(result.lots)} lot(s), {len(result.charts)} chart(s), "
               f"{len({p.lot for _, p in result.flags()})} lot(s) flagged; {len(written)} "
               f"file(s) in {out}")


@main.command("compare-lots")
@click.argument("groups", nargs=-1)
@click.option("--db", required=True, metavar="PATH|URL", help="The results database.")
@click.option("-o", "--out", "out", required=True, type=click.Path(path_type=Path),
              help="Output folder (compare.pdf, CSVs).")
@click.option("--margin", "margins", multiple=True, required=True,
              help="Equivalence margin in points: X for every marker, MARKER=X for one.")
@click.option("--split", type=_ISO_DATE, default=None,
              help="Compare lots acquired before this date with those on or after it.")
@click.option("--marker", "markers", multiple=True, help="Compare only this marker.")
@click.option("--panel", default=None, help="Only lots analysed with this panel id.")
@click.pass_context
def compare_lots(ctx: click.Context, groups: tuple[str, ...], db: str, out: Path,
                 margins: tuple[str, ...], split: object, markers: tuple[str, ...],
                 panel: str | None) -> None:
    """Compare lot A with lot B (or groups A1,A2 B1,B2, or --split DATE): differences in %
    positive with 95 % intervals, TOST equivalence against --margin, population fractions."""
    from .lots import run_compare

    debug = ctx.obj["debug"]
    if (split is None and len(groups) != 2) or (split is not None and groups):
        click.echo("error: give two lots or groups (A B), or --split DATE", err=True)
        sys.exit(2)
    try:
        result, written = run_compare(
            db, out, a=_lot_list(groups[0]) if groups else None,
            b=_lot_list(groups[1]) if groups else None, split=split.date() if split else None,
            margins=margins, markers=list(markers) or None, panel=panel)
    except CytomscError as err:
        _fail(err, debug)
    for m in result.markers:
        d = m.difference
        word = {True: "equivalent", False: "not shown equivalent", None: "no margin"}[
            d.equivalent]
        ci = f"{d.ci95[0]:+.2f} to {d.ci95[1]:+.2f}" if d.ci95 else "-"
        click.echo(f"{m.marker}: {d.diff:+.2f} points (95 % {ci}), {word}")
    click.echo(f"{len(written)} file(s) in {out}")
