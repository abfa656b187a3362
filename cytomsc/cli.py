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
    """``FL1-A=CD90,FL2-A=CD105`` (commas or semicolons) -> {"FL1-A": "CD90", ...}."""
    if not text:
        return {}
    mapping: dict[str, str] = {}
    for item in text.replace(";", ",").split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise click.BadParameter(f"'{item}' is not CHANNEL=MARKER", param_hint="--channel-map")
        channel, marker = item.split("=", 1)
        mapping[channel.strip()] = marker.strip()
    return mapping


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
