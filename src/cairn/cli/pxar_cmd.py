"""``cairn catalog dump|shell``, ``cairn mount`` and ``cairn unmount``."""

from __future__ import annotations

import sys

import click

from cairn.cli.common import key_options, ns_option, repository_option
from cairn.client.keys import find_key
from cairn.client.pxar.catalog_shell import CatalogShell, format_mtime
from cairn.client.pxar.tree_restore import (
    open_catalog,
    open_index_reader,
    open_payload_reader,
)
from cairn.client.repository import open_repository
from cairn.client.restore import open_snapshot, read_blob, resolve_archive
from cairn.datastore.names import Namespace, SnapshotName
from cairn.errors import NotFoundError, UsageError
from cairn.format.catalog import EntryType


def quote_path(path: bytes) -> str:
    """A path in double quotes as PBS prints it: escapes for quotes, controls and non-UTF-8."""
    out = ['"']
    for chunk in _utf8_chunks(path):
        if isinstance(chunk, int):
            out.append(f"\\x{chunk:02X}")
            continue
        for char in chunk:
            if char in '"\\':
                out.append("\\" + char)
            elif char == "\n":
                out.append("\\n")
            elif char == "\t":
                out.append("\\t")
            elif char == "\r":
                out.append("\\r")
            elif ord(char) < 0x20 or ord(char) == 0x7F:
                out.append(f"\\u{{{ord(char):x}}}")
            else:
                out.append(char)
    out.append('"')
    return "".join(out)


def _utf8_chunks(data: bytes):
    """Valid UTF-8 runs as str, invalid bytes one by one as int."""
    while data:
        try:
            yield data.decode()
            return
        except UnicodeDecodeError as err:
            if err.start:
                yield data[: err.start].decode()
            yield from data[err.start : err.end]
            data = data[err.end :]


def _open(repository, ns, snapshot, keyfile, keyfd, passphrase_fd):
    name = SnapshotName.parse(snapshot)
    store = open_repository(repository)
    info, cipher = open_snapshot(store, ns, name, find_key(keyfile, keyfd, passphrase_fd))
    return store, name, info, cipher


def _catalog(store, ns, name, info, cipher):
    found = open_catalog(store, ns, name, info.manifest, cipher)
    if found is None:
        raise NotFoundError(
            f"snapshot {name} has no catalog (it holds no pxar archive, or only split archives "
            "made with --change-detection-mode data/metadata; use 'cairn mount' or restore --pattern)"
        )
    return found


@click.group()
def catalog() -> None:
    """Browse the catalog of a snapshot's pxar archives."""


@catalog.command("dump")
@click.argument("snapshot")
@repository_option
@ns_option
@key_options
def catalog_dump(snapshot: str, repository: str | None, ns: Namespace, keyfile: str | None,
                 keyfd: int | None, passphrase_fd: int | None) -> None:
    """Print every path of SNAPSHOT's catalog: type, path, and size and mtime for files."""
    store, name, info, cipher = _open(repository, ns, snapshot, keyfile, keyfd, passphrase_fd)
    with store.lock_snapshot(ns, name, exclusive=False, timeout=10):
        reader, _ = _catalog(store, ns, name, info, cipher)
        out = sys.stdout
        for item in reader.walk():
            line = f"{item.kind.value} {quote_path(b'.' + item.path)}"
            if item.kind is EntryType.FILE:
                line += f" {item.size} {format_mtime(item.mtime or 0)}"
            out.write(line + "\n")
        out.flush()


@catalog.command("shell")
@click.argument("snapshot")
@click.argument("archive", default="root.pxar")
@repository_option
@ns_option
@key_options
def catalog_shell(snapshot: str, archive: str, repository: str | None, ns: Namespace, keyfile: str | None,
                  keyfd: int | None, passphrase_fd: int | None) -> None:
    """Browse ARCHIVE (default root.pxar) of SNAPSHOT: ls, cd, find, select, restore-selected."""
    store, name, info, cipher = _open(repository, ns, snapshot, keyfile, keyfd, passphrase_fd)
    file_info = resolve_archive(info.manifest, archive)
    if not file_info.filename.endswith(".pxar.didx"):
        raise UsageError(f"{file_info.filename} is not a pxar archive")
    with store.lock_snapshot(ns, name, exclusive=False, timeout=10):
        reader, catalog_reader = _catalog(store, ns, name, info, cipher)
        archive_reader = open_index_reader(store, ns, name, file_info, cipher)
        CatalogShell(reader, catalog_reader, archive_reader, file_info.filename).run(sys.stdin)


@click.command()
@click.argument("snapshot")
@click.argument("archive")
@click.argument("mountpoint", type=click.Path(file_okay=False))
@repository_option
@ns_option
@key_options
def mount(snapshot: str, archive: str, mountpoint: str, repository: str | None, ns: Namespace,
          keyfile: str | None, keyfd: int | None, passphrase_fd: int | None) -> None:
    """Mount ARCHIVE of SNAPSHOT read-only at MOUNTPOINT until Ctrl-C or 'cairn unmount'.

    A pxar archive shows its tree; an image or blob shows as a single file (an image can be
    loop-mounted from there).
    """
    from cairn.client import mount as fuse

    fuse.require_fuse()
    store, name, info, cipher = _open(repository, ns, snapshot, keyfile, keyfd, passphrase_fd)
    file_info = resolve_archive(info.manifest, archive)
    fsname = f"cairn:{name}/{file_info.filename}"
    mtime_ns = name.backup_time * 1_000_000_000
    with store.lock_snapshot(ns, name, exclusive=False, timeout=10):
        if file_info.filename.endswith((".pxar.didx", ".mpxar.didx")):
            from cairn.format.pxar import Accessor

            reader = open_index_reader(store, ns, name, file_info, cipher)
            if file_info.filename.endswith(".mpxar.didx"):  # split archive: contents in .ppxar
                payload = open_payload_reader(store, ns, name, info.manifest, file_info, cipher)
                accessor = Accessor(reader.read_at, reader.size, payload_read_at=payload.read_at,
                                    payload_size=payload.size)
            else:
                accessor = Accessor(reader.read_at, reader.size)
            operations = fuse.PxarFileSystem(accessor)
        elif file_info.filename.endswith((".fidx", ".didx")):
            reader = open_index_reader(store, ns, name, file_info, cipher)
            base = file_info.filename.rsplit(".", 1)[0]
            operations = fuse.SingleFileSystem(base.encode(), reader.size, reader.read_at, mtime_ns)
        else:
            data = read_blob(store, ns, name, file_info, cipher)
            base = file_info.filename.removesuffix(".blob")
            operations = fuse.SingleFileSystem(base.encode(), len(data), lambda o, s: data[o : o + s], mtime_ns)
        fuse.serve(operations, mountpoint, fsname, lambda message: click.echo(message, err=True))


@click.command()
@click.argument("mountpoint")
def unmount(mountpoint: str) -> None:
    """Unmount a file system that 'cairn mount' made."""
    from cairn.client import mount as fuse

    fuse.unmount(mountpoint)
