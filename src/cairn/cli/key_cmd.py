"""``cairn key ...``: encryption keys in PBS's key file format, paper keys, master keys."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from cairn.cli.common import ns_option, repository_option
from cairn.cli.output import emit_value, output_format_option
from cairn.client.keys import (
    NEW_PASSPHRASE_ENV,
    default_key_path,
    default_master_pubkey_path,
    read_key_config,
    read_passphrase,
    write_key_config,
)
from cairn.client.repository import open_repository
from cairn.datastore.fsutil import replace_file
from cairn.datastore.names import Namespace, SnapshotName
from cairn.errors import NotFoundError, UsageError
from cairn.format.blob import decode_blob
from cairn.format.crypt import format_fingerprint
from cairn.format.keyfile import change_passphrase, create_key_config, paperkey_html, paperkey_text, parse_paperkey
from cairn.format.manifest import ENCRYPTED_KEY_BLOB_NAME
from cairn.format.rsa_key import generate_master_key, load_master_public_key, rsa_decrypt_key_config

KDFS = ("scrypt", "pbkdf2", "none")
MASTER_PASSPHRASE_ENV = ("CAIRN_MASTER_KEY_PASSWORD",)

passphrase_fd_option = click.option("--passphrase-fd", type=int, default=None, metavar="FD",
                                    help="Read the passphrase from this file descriptor.")


def _key_path(path: str | None) -> Path:
    return Path(path) if path else default_key_path()


def _new_passphrase(kdf: str, fd: int | None, env: tuple[str, ...]) -> bytes | None:
    if kdf == "none":
        return None
    return read_passphrase("Encryption key password: ", fd, env, confirm=True)


def _show_time(epoch: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


@click.group()
def key() -> None:
    """Create and manage encryption keys (PBS key file format)."""


@key.command("create")
@click.argument("path", required=False)
@click.option("--kdf", type=click.Choice(KDFS), default="scrypt", show_default=True,
              help="How the passphrase protects the key; none stores it unprotected.")
@click.option("--hint", default=None, help="A passphrase hint stored in the key file.")
@passphrase_fd_option
def key_create(path: str | None, kdf: str, hint: str | None, passphrase_fd: int | None) -> None:
    """Create a new encryption key at PATH (default: the default key location)."""
    target = _key_path(path)
    if target.exists():
        raise UsageError(f"{target} already exists; refusing to overwrite a key")
    passphrase = _new_passphrase(kdf, passphrase_fd, ("CAIRN_ENCRYPTION_PASSWORD", "PBS_ENCRYPTION_PASSWORD"))
    config = create_key_config(os.urandom(32), passphrase, kdf, hint)
    write_key_config(target, config)
    click.echo(f"created key {target} (fingerprint {format_fingerprint(config.fingerprint)})", err=True)


@key.command("change-passphrase")
@click.argument("path", required=False)
@click.option("--kdf", type=click.Choice(KDFS), default="scrypt", show_default=True)
@click.option("--hint", default=None)
@passphrase_fd_option
@click.option("--new-passphrase-fd", type=int, default=None, metavar="FD",
              help="Read the new passphrase from this file descriptor ($CAIRN_NEW_ENCRYPTION_PASSWORD also works).")
def key_change_passphrase(path: str | None, kdf: str, hint: str | None, passphrase_fd: int | None,
                          new_passphrase_fd: int | None) -> None:
    """Protect the key at PATH with a new passphrase (or none with --kdf none)."""
    target = _key_path(path)
    config = read_key_config(target)
    old = read_passphrase("Current passphrase: ", passphrase_fd) if config.needs_passphrase else None
    new = _new_passphrase(kdf, new_passphrase_fd, NEW_PASSPHRASE_ENV)
    write_key_config(target, change_passphrase(config, old, new, kdf, hint), overwrite=True)
    click.echo(f"changed passphrase of {target}", err=True)


@key.command("show")
@click.argument("path", required=False)
@output_format_option
def key_show(path: str | None, output_format: str) -> None:
    """Show a key's fingerprint, KDF and dates (no passphrase needed)."""
    target = _key_path(path)
    config = read_key_config(target)
    fingerprint = format_fingerprint(config.fingerprint) if config.fingerprint else None
    value = {"path": str(target), "kdf": config.kdf_name, "created": config.created,
             "modified": config.modified, "fingerprint": fingerprint, "hint": config.hint}
    emit_value(value, output_format, [
        ("Path", str(target)), ("KDF", config.kdf_name), ("Created", _show_time(config.created)),
        ("Modified", _show_time(config.modified)), ("Fingerprint", fingerprint or "-"), ("Hint", config.hint or "-"),
    ])


@key.command("paperkey")
@click.argument("path", required=False)
@click.option("--subject", default=None, help="A line printed above the key.")
@click.option("--output-format", type=click.Choice(("text", "html")), default="text", show_default=True)
def key_paperkey(path: str | None, subject: str | None, output_format: str) -> None:
    """Print the key for paper (text with a QR code, or an HTML page)."""
    text = _read_text(str(_key_path(path)))
    render = paperkey_html if output_format == "html" else paperkey_text
    click.echo(render(text, subject))


@key.command("import")
@click.argument("paperkey_file", metavar="PAPERKEY")
@click.argument("path", required=False)
def key_import(paperkey_file: str, path: str | None) -> None:
    """Recreate a key file at PATH from a paper key (a file, or - for stdin)."""
    text = sys.stdin.read() if paperkey_file == "-" else _read_text(paperkey_file)
    config = parse_paperkey(text)
    target = _key_path(path)
    write_key_config(target, config)
    click.echo(f"imported key to {target}", err=True)


@key.command("create-master-key")
@click.option("--output-dir", default=".", show_default=True, help="Where master-public.pem and master-private.pem go.")
@passphrase_fd_option
def key_create_master(output_dir: str, passphrase_fd: int | None) -> None:
    """Create an RSA master key pair to recover backup keys (keep the private half offline)."""
    directory = Path(output_dir)
    public, private = directory / "master-public.pem", directory / "master-private.pem"
    for path in (public, private):
        if path.exists():
            raise UsageError(f"{path} already exists; refusing to overwrite a master key")
    passphrase = read_passphrase("Master key password: ", passphrase_fd, MASTER_PASSPHRASE_ENV, confirm=True)
    pair = generate_master_key(passphrase)
    replace_file(private, pair.private_pem, mode=0o600)
    replace_file(public, pair.public_pem)
    click.echo(f"created {public} and {private}", err=True)


@key.command("import-master-pubkey")
@click.argument("path")
def key_import_master_pubkey(path: str) -> None:
    """Make PATH the default master public key: every encrypted backup then carries a recoverable copy of its key."""
    pem = Path(path).read_bytes()
    load_master_public_key(pem)
    target = default_master_pubkey_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    replace_file(target, pem)
    click.echo(f"imported master public key to {target}", err=True)


@key.command("restore-from-master")
@click.argument("snapshot")
@click.argument("path")
@repository_option
@ns_option
@click.option("--master-keyfile", required=True, metavar="PEM", help="The RSA master private key.")
@click.option("--kdf", type=click.Choice(KDFS), default="scrypt", show_default=True,
              help="How to protect the recovered key file.")
@passphrase_fd_option
@click.option("--new-passphrase-fd", type=int, default=None, metavar="FD")
def key_restore_from_master(snapshot: str, path: str, repository: str | None, ns: Namespace, master_keyfile: str,
                            kdf: str, passphrase_fd: int | None, new_passphrase_fd: int | None) -> None:
    """Recover the key of SNAPSHOT from its rsa-encrypted.key.blob into a key file at PATH."""
    store = open_repository(repository)
    name = SnapshotName.parse(snapshot)
    store.complete_snapshot(ns, name)
    try:
        raw = store.read_archive_bytes(ns, name, ENCRYPTED_KEY_BLOB_NAME)
    except NotFoundError:
        raise NotFoundError(f"snapshot {name} holds no master-key copy of its key ({ENCRYPTED_KEY_BLOB_NAME})") from None
    master_pem = Path(master_keyfile).read_bytes()
    master_passphrase = read_passphrase("Master key password: ", passphrase_fd, MASTER_PASSPHRASE_ENV)
    recovered = rsa_decrypt_key_config(master_pem, master_passphrase, decode_blob(raw))
    key_bytes, created, fingerprint = recovered.decrypt(None)
    new = _new_passphrase(kdf, new_passphrase_fd, NEW_PASSPHRASE_ENV)
    write_key_config(Path(path), create_key_config(key_bytes, new, kdf, created=created))
    click.echo(f"recovered key {format_fingerprint(fingerprint)} to {path}", err=True)


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist") from None
