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
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path),
                metavar="FILE_OR_FOLDER...")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--panel", default="isct-2006", show_default=True, help="Panel id or TOML path.")
@click.option("--data-set", default=0, show_default=True,
              help="Data set of multi-set files, numbered from 0.")
@click.option("--channel-map", default=None, help="CHANNEL=MARKER,... for files without $PnS.")
@click.pass_context
def inspect(ctx: click.Context, files: tuple[Path, ...], as_json: bool, panel: str,
            data_set: int, channel_map: str | None) -> None:
    """Describe FCS files (a folder: every FCS file under it): version, cytometer, channels,
    markers, spillover, tube role."""
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
@click.option("--data-set", default=0, show_default=True,
              help="Data set of multi-set files, numbered from 0 (as inspect numbers them).")
@click.option("--channel-map", default=None, help="CHANNEL=MARKER,... for files without $PnS.")
@click.option("--seed", default=0, show_default=True, help="Random seed (subsampling, clustering).")
@click.option("--jobs", default=None, type=click.IntRange(1, None),
              help="Processes (default: the number of cores).")
@click.pass_context
def analyze(ctx: click.Context, inputs: tuple[Path, ...], out: Path, panel: str,
            manifest: Path | None, comp: str | None, control_percentile: float, cluster: str,
            export_events: bool, no_pdf: bool, data_set: int, channel_map: str | None,
            seed: int, jobs: int | None) -> None:
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
