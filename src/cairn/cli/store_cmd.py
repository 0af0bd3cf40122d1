"""Commands about the datastore as a whole: init, list (groups), namespaces."""

from __future__ import annotations

import click

from cairn.cli.common import ns_option, repository_option
from cairn.cli.output import emit, output_format_option
from cairn.client.repository import open_repository
from cairn.datastore.datastore import Datastore
from cairn.datastore.names import Namespace, format_backup_time


@click.command()
@click.argument("path")
def init(path: str) -> None:
    """Create a new, empty datastore at PATH (PBS layout, 65536 chunk directories)."""
    store = Datastore.create(path)
    click.echo(f"created datastore at {store.base}")


@click.command("list")
@repository_option
@ns_option
@output_format_option
def list_groups(repository: str | None, ns: Namespace, output_format: str) -> None:
    """List the backup groups of a namespace."""
    store = open_repository(repository)
    rows = []
    for group in store.list_groups(ns):
        snapshots = store.list_snapshots(ns, group)
        complete = [s for s in snapshots if s.complete]
        last = complete[-1] if complete else None
        rows.append({
            "backup-type": group.backup_type,
            "backup-id": group.backup_id,
            "last-backup": last.name.backup_time if last else None,
            "backup-count": len(complete),
            "files": [f.filename for f in last.manifest.files] if last else [],
            "owner": store.owner(ns, group),
        })
    emit(rows, output_format, [
        ("group", "group", lambda r: f"{r['backup-type']}/{r['backup-id']}"),
        ("last-backup", "last snapshot", lambda r: format_backup_time(r["last-backup"]) if r["last-backup"] else "-"),
        ("backup-count", "count", lambda r: str(r["backup-count"])),
        ("files", "files", lambda r: " ".join(r["files"])),
    ])


@click.group()
def namespace() -> None:
    """Create, list and remove namespaces."""


@namespace.command("create")
@repository_option
@click.argument("name")
def namespace_create(repository: str | None, name: str) -> None:
    """Create namespace NAME (its parent must exist)."""
    ns = Namespace.parse(name)
    open_repository(repository, for_write=True).create_namespace(ns)
    click.echo(f"created namespace {ns}")


@namespace.command("list")
@repository_option
@ns_option
@click.option("--max-depth", type=click.IntRange(0, 7), default=None, help="Levels below NS to show.")
@output_format_option
def namespace_list(repository: str | None, ns: Namespace, max_depth: int | None, output_format: str) -> None:
    """List namespaces below NS."""
    store = open_repository(repository)
    rows = [{"ns": str(child)} for child in store.list_namespaces(ns, max_depth) if not child.is_root]
    emit(rows, output_format, [("ns", "namespace", lambda r: r["ns"])])


@namespace.command("remove")
@repository_option
@click.argument("name")
def namespace_remove(repository: str | None, name: str) -> None:
    """Remove an empty namespace NAME."""
    ns = Namespace.parse(name)
    open_repository(repository, for_write=True).remove_namespace(ns)
    click.echo(f"removed namespace {ns}")
