"""``cairn snapshot ...``: list, forget, protected, notes."""

from __future__ import annotations


import click

from cairn.cli.common import ns_option, read_text_argument, repository_option
from cairn.cli.output import emit, human_size, output_format_option
from cairn.client.repository import open_repository
from cairn.datastore.datastore import SnapshotInfo
from cairn.datastore.names import GroupName, Namespace, SnapshotName


def snapshot_row(info: SnapshotInfo) -> dict:
    """One snapshot as PBS's SnapshotListItem JSON."""
    row = {
        "backup-type": info.name.group.backup_type,
        "backup-id": info.name.group.backup_id,
        "backup-time": info.name.backup_time,
        "files": [],
        "protected": info.protected,
    }
    if info.manifest is not None:
        row["files"] = [
            {"filename": f.filename, "crypt-mode": f.crypt_mode, "size": f.size} for f in info.manifest.files
        ]
        row["size"] = info.size
        unprotected = info.manifest.unprotected
        if "verify_state" in unprotected:
            row["verification"] = unprotected["verify_state"]
        if unprotected.get("notes"):
            row["comment"] = unprotected["notes"].splitlines()[0]
        if info.manifest.key_fingerprint:
            row["fingerprint"] = info.manifest.key_fingerprint
    return row


@click.group()
def snapshot() -> None:
    """List and manage snapshots."""


@snapshot.command("list")
@click.argument("group", required=False)
@repository_option
@ns_option
@output_format_option
def snapshot_list(group: str | None, repository: str | None, ns: Namespace, output_format: str) -> None:
    """List snapshots (of GROUP, e.g. vm/100, or of every group)."""
    store = open_repository(repository)
    groups = [GroupName.parse(group)] if group else store.list_groups(ns)
    rows = [snapshot_row(info) for g in groups for info in store.list_snapshots(ns, g)]

    def state(row: dict) -> str:
        if "size" not in row:
            return "incomplete"
        verification = row.get("verification")
        return verification["state"] if verification else "-"

    emit(rows, output_format, [
        ("snapshot", "snapshot", lambda r: str(SnapshotName(GroupName(r["backup-type"], r["backup-id"]), r["backup-time"]))),
        ("size", "size", lambda r: human_size(r["size"]) if "size" in r else "-"),
        ("files", "files", lambda r: " ".join(f["filename"] for f in r["files"])),
        ("verification", "verify", state),
        ("protected", "protected", lambda r: "yes" if r["protected"] else ""),
    ])


@snapshot.command("forget")
@click.argument("snapshot_name", metavar="SNAPSHOT")
@repository_option
@ns_option
def snapshot_forget(snapshot_name: str, repository: str | None, ns: Namespace) -> None:
    """Remove SNAPSHOT (its chunks are freed by the next garbage collection)."""
    name = SnapshotName.parse(snapshot_name)
    open_repository(repository, for_write=True).forget_snapshot(ns, name)
    click.echo(f"removed snapshot {name}", err=True)


@snapshot.group("protected")
def snapshot_protected() -> None:
    """Show or change whether a snapshot is protected from prune and forget."""


@snapshot_protected.command("show")
@click.argument("snapshot_name", metavar="SNAPSHOT")
@repository_option
@ns_option
def snapshot_protected_show(snapshot_name: str, repository: str | None, ns: Namespace) -> None:
    """Print true or false."""
    protected = open_repository(repository).is_protected(ns, SnapshotName.parse(snapshot_name))
    click.echo("true" if protected else "false")


@snapshot_protected.command("update")
@click.argument("snapshot_name", metavar="SNAPSHOT")
@click.argument("protected", type=click.BOOL, metavar="true|false")
@repository_option
@ns_option
def snapshot_protected_update(snapshot_name: str, protected: bool, repository: str | None, ns: Namespace) -> None:
    """Protect SNAPSHOT (true) or remove the protection (false)."""
    name = SnapshotName.parse(snapshot_name)
    open_repository(repository, for_write=True).set_protected(ns, name, protected)
    click.echo(f"snapshot {name} is {'now' if protected else 'no longer'} protected", err=True)


@snapshot.group("notes")
def snapshot_notes() -> None:
    """Show or change a snapshot's notes (kept in its manifest, as PBS does)."""


@snapshot_notes.command("show")
@click.argument("snapshot_name", metavar="SNAPSHOT")
@repository_option
@ns_option
def snapshot_notes_show(snapshot_name: str, repository: str | None, ns: Namespace) -> None:
    """Print the notes of SNAPSHOT."""
    click.echo(open_repository(repository).snapshot_notes(ns, SnapshotName.parse(snapshot_name)), nl=False)


@snapshot_notes.command("update")
@click.argument("snapshot_name", metavar="SNAPSHOT")
@click.argument("text", required=False)
@repository_option
@ns_option
def snapshot_notes_update(snapshot_name: str, text: str | None, repository: str | None, ns: Namespace) -> None:
    """Replace the notes of SNAPSHOT with TEXT (read from stdin when TEXT is - or omitted)."""
    store = open_repository(repository, for_write=True)
    store.write_snapshot_notes(ns, SnapshotName.parse(snapshot_name), read_text_argument(text))
