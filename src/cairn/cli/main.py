"""The ``cairn`` command: argument parsing and error reporting, nothing else.

Every :class:`CairnError` becomes one line on stderr and its exit code; an unexpected
exception becomes one line plus a hint to rerun with ``--debug`` for the traceback.
"""

from __future__ import annotations

import errno
import sys
import traceback

import click

from cairn import __version__
from cairn.cli import backup_cmd, benchmark_cmd, key_cmd, lifecycle_cmd, pxar_cmd, snapshot_cmd, store_cmd
from cairn.errors import CairnError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cairn")
@click.option("--debug", is_flag=True, envvar="CAIRN_DEBUG", help="Show tracebacks of unexpected errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Cairn: backups for Proxmox VE in Proxmox Backup Server's format."""
    ctx.obj = {"debug": debug}


for module in (store_cmd, backup_cmd, snapshot_cmd, key_cmd, benchmark_cmd, lifecycle_cmd, pxar_cmd):
    module.register(cli)


def _os_error_line(err: OSError) -> str:
    where = f": {err.filename}" if err.filename else ""
    if err.errno == errno.ENOSPC:
        return f"no space left on device{where}"
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied{where}"
    return f"{err.strerror or err}{where}"


def main(argv: list[str] | None = None) -> int:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="cairn", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("cairn: aborted", err=True)
        return 130
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.ClickException as err:
        click.echo(f"cairn: error: {err.format_message()}", err=True)
        return err.exit_code
    except CairnError as err:
        click.echo(f"cairn: error: {err}", err=True)
        return err.exit_code
    except KeyboardInterrupt:
        click.echo("cairn: interrupted", err=True)
        return 130
    except BrokenPipeError:
        return 141
    except OSError as err:
        if debug:
            traceback.print_exc()
        click.echo(f"cairn: error: {_os_error_line(err)}", err=True)
        return 1
    except Exception as err:  # a bug: say so in one line, details on request
        if debug:
            traceback.print_exc()
        click.echo(
            f"cairn: internal error: {type(err).__name__}: {err} (rerun with --debug for details)",
            err=True,
        )
        return 70
    return 0


def entry() -> None:
    sys.exit(main())
