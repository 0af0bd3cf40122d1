"""Start-up: commands imported only when run."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from conftest import assert_one_line_error, run_cairn
from cairn.cli import main as cli_main


def _modules_after(*args: str) -> tuple[str, set[str]]:
    """Run ``cairn ARGS`` in a fresh interpreter: its stdout and the modules it imported."""
    code = (
        "import json, sys\n"
        "from cairn.cli.main import main\n"
        f"code = main({list(args)!r})\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return proc.stdout, set(json.loads(proc.stderr.splitlines()[-1]))


def test_help_lists_every_command_without_importing_any():
    out, modules = _modules_after("--help")
    for name, (_, _, help_text) in cli_main.COMMANDS.items():
        assert f"  {name} " in out
        assert help_text.split()[0] in out
    assert not {m for m in modules if m.startswith("cairn.cli.") and m.endswith("_cmd")}
    assert not {m for m in modules if m.startswith(("cairn.client", "cairn.datastore"))}


def test_help_listing_is_what_click_would_print_from_the_commands():
    ctx = click.Context(cli_main.cli, info_name="cairn")
    lazy, eager = click.HelpFormatter(width=80), click.HelpFormatter(width=80)
    cli_main.cli.format_commands(ctx, lazy)
    click.Group.format_commands(cli_main.cli, ctx, eager)  # loads every command for its docstring
    assert lazy.getvalue() == eager.getvalue()


def test_table_holds_every_top_level_command_of_the_cli_modules():
    ctx = click.Context(cli_main.cli, info_name="cairn")
    loaded = {name: cli_main.cli.get_command(ctx, name) for name in cli_main.COMMANDS}
    assert all(command.name == name for name, command in loaded.items())
    modules = {sys.modules[f"cairn.cli.{module}"] for module, _, _ in cli_main.COMMANDS.values()}
    defined = {obj for m in modules for obj in vars(m).values() if isinstance(obj, click.Command)}
    nested = {sub for obj in defined if isinstance(obj, click.Group) for sub in obj.commands.values()}
    assert defined - nested == set(loaded.values())


@pytest.mark.parametrize("command", ["backup", "restore"])
def test_backup_and_restore_help_import_only_what_they_need(command):
    out, modules = _modules_after(command, "--help")
    assert "--keyfile" in out
    unneeded = {
        "segno",  # QR codes: key paperkey only
        "ctypes.util",  # find_library runs ldconfig in a subprocess
        "cairn.datastore.gc", "cairn.datastore.verify", "cairn.datastore.prune",
        "cairn.cli.key_cmd", "cairn.cli.lifecycle_cmd", "cairn.cli.pxar_cmd",
    }
    assert not unneeded & modules


def test_unknown_command_is_one_line():
    assert_one_line_error(run_cairn("no-such-command", check=False), "No such command")
