"""Start-up: commands imported only when run, the key unlocked early, errors as before."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from conftest import PASSPHRASE as PASS
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
    # The allocator settings (ctypes only) must be applied before any thread starts.
    light = {"cairn.client", "cairn.client.allocator"}
    assert not {m for m in modules if m.startswith(("cairn.client", "cairn.datastore"))} - light


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
        "cairn.client.backup", "cairn.client.restore",  # imported once the key's unlock runs
        "cairn.datastore.gc", "cairn.datastore.verify", "cairn.datastore.prune",
        "cairn.cli.key_cmd", "cairn.cli.lifecycle_cmd", "cairn.cli.pxar_cmd",
    }
    assert not unneeded & modules


def test_unknown_command_is_one_line():
    assert_one_line_error(run_cairn("no-such-command", check=False), "No such command")


@pytest.fixture(scope="module")
def conf(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("src") / "vm.conf"
    path.write_text("name: startup\n")
    return path


def test_wrong_passphrase_on_a_descriptor_is_one_line_and_writes_nothing(store_path, keyfile, conf, key_env):
    read_end, write_end = os.pipe()
    os.write(write_end, b"not the passphrase\n")
    os.close(write_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "cairn", "backup", f"vm.conf:{conf}", "--keyfile", str(keyfile),
             "--passphrase-fd", str(read_end), "--repository", str(store_path), "--backup-id", "fdpass"],
            pass_fds=(read_end,), capture_output=True, text=True, timeout=120,
            env={**os.environ, "XDG_CONFIG_HOME": key_env["XDG_CONFIG_HOME"]},
        )
    finally:
        os.close(read_end)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "wrong passphrase" in proc.stderr
    assert not (store_path / "host" / "fdpass").exists()


@pytest.mark.parametrize("kind", ["pxar", "img"])
def test_wrong_passphrase_found_by_the_chunk_workers_is_one_line_and_writes_nothing(
    store_path, keyfile, key_env, tmp_path, kind
):
    """A backup walks and cuts while the key is still unlocking; the first chunk digest
    learns the passphrase was wrong, and the snapshot is discarded."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "data.bin").write_bytes(os.urandom(3 << 20))
    spec = f"root.pxar:{tree}" if kind == "pxar" else f"disk.img:{tree / 'data.bin'}"
    r = run_cairn("backup", spec, "--keyfile", str(keyfile), "--repository", str(store_path),
                  "--backup-id", f"late-{kind}", env={**key_env, "CAIRN_ENCRYPTION_PASSWORD": "not it"},
                  check=False)
    assert_one_line_error(r, "wrong passphrase")
    assert not (store_path / "host" / f"late-{kind}").exists()


def test_wrong_key_is_reported_even_when_its_passphrase_is_wrong_too(store_path, keyfile, conf, key_env, tmp_path):
    run_cairn("backup", f"vm.conf:{conf}", "--keyfile", str(keyfile), "--repository", str(store_path),
              "--backup-id", "wrongkey", "--backup-time", "1000", env=key_env)
    other = tmp_path / "other.json"
    run_cairn("key", "create", str(other), "--kdf", "pbkdf2", env=key_env)
    r = run_cairn("restore", "host/wrongkey/1970-01-01T00:16:40Z", "vm.conf", str(tmp_path / "out.conf"), "--keyfile", str(other),
                  "--repository", str(store_path), env={**key_env, "CAIRN_ENCRYPTION_PASSWORD": "wrong as well"},
                  check=False)
    assert_one_line_error(r, "wrong key")
    assert not (tmp_path / "out.conf").exists()


def test_unencrypted_restore_never_reports_an_unneeded_key(store_path, conf, key_env, tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg"), "CAIRN_ENCRYPTION_PASSWORD": PASS}
    run_cairn("key", "create", "--kdf", "pbkdf2", env=env)  # a default key, which restore looks up
    run_cairn("backup", f"vm.conf:{conf}", "--crypt-mode", "none", "--repository", str(store_path),
              "--backup-id", "plain", "--backup-time", "1000", env=env)
    out = run_cairn("restore", "host/plain/1970-01-01T00:16:40Z", "vm.conf", "-", "--repository", str(store_path),
                    env={**env, "CAIRN_ENCRYPTION_PASSWORD": "not the passphrase"})
    assert out.stdout == conf.read_bytes()


def _read_until(fd: int, needle: bytes | None, deadline: float) -> bytes:
    """Terminal output up to ``needle`` (or to the end when None)."""
    seen = b""
    while time.monotonic() < deadline and (needle is None or needle not in seen):
        ready, _, _ = select.select([fd], [], [], 1)
        if not ready:
            continue
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        seen += data
    return seen


def test_passphrase_prompt_on_a_terminal_comes_before_any_output(store_path, keyfile, conf, key_env):
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAIRN_", "PBS_"))}
    env["XDG_CONFIG_HOME"] = key_env["XDG_CONFIG_HOME"]
    # A new session has no controlling terminal, so getpass asks on stdin: the pty, not ours.
    proc = subprocess.Popen(
        [sys.executable, "-m", "cairn", "backup", f"vm.conf:{conf}", "--keyfile", str(keyfile),
         "--repository", str(store_path), "--backup-id", "typed", "--backup-time", "1000"],
        stdin=slave, stdout=subprocess.PIPE, stderr=slave, env=env, start_new_session=True,
    )
    os.close(slave)
    deadline = time.monotonic() + 120
    try:
        before = _read_until(master, b"password", deadline)
        assert before.lstrip().startswith(b"Encryption key password"), before
        os.write(master, PASS.encode() + b"\n")
        after = _read_until(master, None, deadline)
        stdout, _ = proc.communicate(timeout=120)
    finally:
        os.close(master)
    assert proc.returncode == 0, after
    assert stdout.decode().strip() == "host/typed/1970-01-01T00:16:40Z"
    assert b"snapshot host/typed" in after


@pytest.fixture(scope="module")
def scrypt_keyfile(tmp_path_factory, key_env) -> Path:
    path = tmp_path_factory.mktemp("skeys") / "scrypt.json"
    run_cairn("key", "create", str(path), env=key_env)  # PBS's default: scrypt, n=65536
    assert "Scrypt" in json.loads(path.read_text())["kdf"]
    return path


def _started(monkeypatch, args: list[str], env: dict) -> list[tuple]:
    """Which derivations ``start_key_derivation(args)`` starts (nothing is computed)."""
    from cairn.cli import launch

    for name in ("CAIRN_ENCRYPTION_PASSWORD", "PBS_ENCRYPTION_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    seen: list[tuple] = []
    monkeypatch.setattr(launch.kdf_memo, "start_scrypt", lambda *inputs: seen.append(inputs))
    assert launch.start_key_derivation(args) == bool(seen)
    return seen


def test_the_key_files_scrypt_is_started_before_the_command_line_loads(monkeypatch, scrypt_keyfile):
    from cairn.cli import launch
    from cairn.client.keys import PASSPHRASE_ENV
    from cairn.format.crypt import KEY_SIZE
    from cairn.format.keyfile import KeyConfig

    # launch keeps its own copies (importing these modules is what it must not do)
    assert launch._PASSPHRASE_ENV == PASSPHRASE_ENV
    kdf = KeyConfig.from_json(scrypt_keyfile.read_bytes()).kdf
    env = {"PBS_ENCRYPTION_PASSWORD": PASS}
    for args in (["backup", "root.pxar:/etc", "--keyfile", str(scrypt_keyfile)],
                 ["--debug", "restore", "host/a/2026-01-01T00:00:00Z", "root.pxar", "/t", f"--keyfile={scrypt_keyfile}"]):
        assert _started(monkeypatch, args, env) == [(PASS.encode(), kdf.salt, kdf.n, kdf.r, kdf.p, KEY_SIZE)]


def test_no_early_scrypt_when_the_command_may_not_use_it(monkeypatch, scrypt_keyfile, keyfile, tmp_path):
    env = {"CAIRN_ENCRYPTION_PASSWORD": PASS}
    bad = tmp_path / "bad.json"
    bad.write_text('{"kdf": {"Scrypt": {"n": "many"}}}')
    for args, env_used in (
        (["key", "show", "--keyfile", str(scrypt_keyfile)], env),  # not a command that unlocks
        (["backup", "x.pxar:/etc", "--keyfile", str(scrypt_keyfile)], {}),  # no passphrase given
        (["backup", "x.pxar:/etc", "--keyfile", str(scrypt_keyfile), "--passphrase-fd", "3"], env),
        (["backup", "x.pxar:/etc", "--keyfd", "3"], env),
        (["backup", "x.pxar:/etc", "--keyfile", str(keyfile)], env),  # PBKDF2: nothing to win
        (["backup", "x.pxar:/etc", "--keyfile", str(tmp_path / "missing.json")], env),
        (["backup", "x.pxar:/etc", "--keyfile", str(bad)], env),
    ):
        assert _started(monkeypatch, args, env_used) == [], args


def test_backup_and_restore_with_an_early_scrypt_key_and_a_wrong_passphrase(store_path, scrypt_keyfile, conf,
                                                                            key_env, tmp_path):
    run_cairn("backup", f"vm.conf:{conf}", "--keyfile", str(scrypt_keyfile), "--repository", str(store_path),
              "--backup-id", "early", "--backup-time", "1000", env=key_env)
    out = run_cairn("restore", "host/early/1970-01-01T00:16:40Z", "vm.conf", "-", "--keyfile", str(scrypt_keyfile),
                    "--repository", str(store_path), env=key_env)
    assert out.stdout == conf.read_bytes()
    r = run_cairn("restore", "host/early/1970-01-01T00:16:40Z", "vm.conf", str(tmp_path / "out.conf"),
                  "--keyfile", str(scrypt_keyfile), "--repository", str(store_path),
                  env={**key_env, "CAIRN_ENCRYPTION_PASSWORD": "not the passphrase"}, check=False)
    assert_one_line_error(r, "wrong passphrase")
    assert not (tmp_path / "out.conf").exists()


def test_the_entry_point_starts_scrypt_before_importing_anything_heavy():
    code = ("import json, sys\nimport cairn.cli.launch\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    modules = set(json.loads(proc.stdout))
    assert not {m for m in modules if m.split(".")[0] in ("click", "cryptography", "zstandard", "rich")}
    assert not {m for m in modules if m.startswith("cairn.")} - {
        "cairn.background", "cairn.cli", "cairn.cli.launch", "cairn.client", "cairn.client.allocator", "cairn.format",
        "cairn.format.kdf_memo"}
