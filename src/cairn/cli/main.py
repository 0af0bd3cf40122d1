"""The ``cairn`` command: argument parsing and error reporting, nothing else.

Every :class:`CairnError` becomes one line on stderr and its exit code; an unexpected
exception becomes one line plus a hint to rerun with ``--debug`` for the traceback.

Subcommands are imported only when run: ``cairn backup`` loads the backup code and not GC,
verify, FUSE or QR codes, which keeps the start-up cost of every command small.
"""

from __future__ import annotations

import errno
import gc
import importlib
import sys

import click

from cairn import __version__
from cairn.client import allocator
from cairn.errors import CairnError

#: name -> (module in cairn.cli, attribute, first paragraph of its help). ``cairn --help``
#: lists the commands from this table without importing them; a test keeps the help in step
#: with each command's docstring.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "backup": ("backup_cmd", "backup",
               "Back up SPECs (disk.img:/dev/sdb, vm.conf:/path, log.log:-) into a new snapshot."),
    "benchmark": ("benchmark_cmd", "benchmark",
                  "Measure SHA-256, zstd, AES-256-GCM and chunk verification speed on this machine."),
    "catalog": ("pxar_cmd", "catalog", "Browse the catalog of a snapshot's pxar archives."),
    "garbage-collect": ("lifecycle_cmd", "garbage_collect_cmd",
                        "Remove chunks no index references (PBS's mark and sweep, 24 h 5 min grace)."),
    "group": ("lifecycle_cmd", "group", "Backup group commands."),
    "init": ("store_cmd", "init", "Create a new, empty datastore at PATH (PBS layout, 65536 chunk directories)."),
    "key": ("key_cmd", "key", "Create and manage encryption keys (PBS key file format)."),
    "list": ("store_cmd", "list_groups", "List the backup groups of a namespace."),
    "maintenance": ("lifecycle_cmd", "maintenance",
                    "Put the store in read-only or offline maintenance mode, or take it out."),
    "mount": ("pxar_cmd", "mount",
              "Mount ARCHIVE of SNAPSHOT read-only at MOUNTPOINT until Ctrl-C or 'cairn unmount'."),
    "namespace": ("store_cmd", "namespace", "Create, list and remove namespaces."),
    "prune": ("lifecycle_cmd", "prune",
              "Remove the snapshots of GROUP that the --keep-* options do not keep (PBS's rules)."),
    "restore": ("backup_cmd", "restore", "Restore ARCHIVE of SNAPSHOT to TARGET."),
    "snapshot": ("snapshot_cmd", "snapshot", "List and manage snapshots."),
    "status": ("lifecycle_cmd", "status_cmd", "Space, contents, last garbage collection and last verify of the store."),
    "unmount": ("pxar_cmd", "unmount", "Unmount a file system that 'cairn mount' made."),
    "verify": ("lifecycle_cmd", "verify_cmd",
               "Read and check every chunk of TARGET: a snapshot, a group, or (omitted) NS and below."),
}


class LazyGroup(click.Group):
    """click's lazy-loading group: a subcommand's module is imported when it is looked up."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[cmd_name]
        return getattr(importlib.import_module(f"cairn.cli.{module}"), attribute)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        found = super().resolve_command(ctx, args)
        # The command's module is imported: what the imports so far built lives until exit,
        # so the cyclic GC need not scan it again (see main()).
        gc.freeze()
        return found

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The "Commands" section, shortened as click shortens it, from the table alone."""
        stubs = [click.Command(name, help=COMMANDS[name][2]) for name in self.list_commands(ctx)]
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        with formatter.section("Commands"):
            formatter.write_dl([(stub.name, stub.get_short_help_str(limit)) for stub in stubs])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cairn")
@click.option("--debug", is_flag=True, envvar="CAIRN_DEBUG", help="Show tracebacks of unexpected errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Cairn: backups for Proxmox VE in Proxmox Backup Server's format."""
    ctx.obj = {"debug": debug}


def _os_error_line(err: OSError) -> str:
    where = f": {err.filename}" if err.filename else ""
    if err.errno == errno.ENOSPC:
        return f"no space left on device{where}"
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied{where}"
    return f"{err.strerror or err}{where}"


def main(argv: list[str] | None = None) -> int:
    # A command is one short process whose objects mostly live until it exits. With Python's
    # default thresholds the cyclic GC runs hundreds of collections per backup, and its full
    # collections scan every object the imports made (~0.08 s of a metadata-mode re-backup).
    # Rarer collections, plus gc.freeze() once the command is imported, give nearly the gain
    # of switching the GC off while still collecting cycles.
    gc.set_threshold(10_000, 50, 100)
    allocator.tune()  # before any thread exists (a backup starts unlocking its key on one)
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
            _print_traceback()
        click.echo(f"cairn: error: {_os_error_line(err)}", err=True)
        return 1
    except Exception as err:  # a bug: say so in one line, details on request
        if debug:
            _print_traceback()
        click.echo(
            f"cairn: internal error: {type(err).__name__}: {err} (rerun with --debug for details)",
            err=True,
        )
        return 70
    return 0


def _print_traceback() -> None:
    import traceback  # only on errors with --debug: it costs 6 ms to import

    traceback.print_exc()
