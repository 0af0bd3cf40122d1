"""``cairn backup`` and ``cairn restore``.

Both start unlocking the key (scrypt, ~0.15 s of C that releases the GIL) before importing
the client code they run, so the two overlap; hence the imports inside the commands.
"""

from __future__ import annotations

import socket

import click

from cairn.cli.common import key_options, ns_option, repository_option
from cairn.cli.output import human_size
from cairn.client.keys import CRYPT_MODES, backup_crypto, backup_key, find_key
from cairn.client.spec import parse_backup_spec
from cairn.datastore.names import BACKUP_TYPES, GroupName, Namespace, SnapshotName

#: proxmox-backup-client's --change-detection-mode values.
CHANGE_DETECTION_MODES = ("legacy", "data", "metadata")


@click.command()
@click.argument("specs", nargs=-1, metavar="SPEC...")
@repository_option
@ns_option
@click.option("--backup-type", type=click.Choice(BACKUP_TYPES), default="host", show_default=True)
@click.option("--backup-id", default=None, help="Backup ID (default: this host's name).")
@click.option("--backup-time", type=int, default=None, help="Snapshot time as epoch (default: now).")
@click.option("--crypt-mode", type=click.Choice(CRYPT_MODES), default=None,
              help="encrypt (default with a key), sign-only, or none.")
@key_options
@click.option("--master-pubkey-file", default=None, metavar="PEM",
              help="Also store the key encrypted with this RSA master public key.")
@click.option("--exclude", "exclude", multiple=True, metavar="PATTERN",
              help="pxar: leave out paths matching PATTERN (repeatable; .pxarexclude syntax).")
@click.option("--include-dev", "include_dev", multiple=True, metavar="PATH",
              help="pxar: also descend into the file system mounted at PATH (repeatable).")
@click.option("--fail-on-unreadable", is_flag=True,
              help="pxar: discard the backup and fail if any file could not be read.")
@click.option("--change-detection-mode", "change_detection_mode", type=click.Choice(CHANGE_DETECTION_MODES),
              default="legacy", show_default=True,
              help="pxar: legacy (one .pxar archive), data (split .mpxar/.ppxar archives) or "
                   "metadata (split, and unchanged files reuse the previous snapshot's data unread).")
def backup(specs: tuple[str, ...], repository: str | None, ns: Namespace, backup_type: str,
           backup_id: str | None, backup_time: int | None, crypt_mode: str | None, keyfile: str | None,
           keyfd: int | None, passphrase_fd: int | None, master_pubkey_file: str | None,
           exclude: tuple[str, ...], include_dev: tuple[str, ...], fail_on_unreadable: bool,
           change_detection_mode: str) -> None:
    """Back up SPECs (disk.img:/dev/sdb, vm.conf:/path, log.log:-) into a new snapshot."""
    parsed = [parse_backup_spec(spec) for spec in specs]
    group = GroupName(backup_type, backup_id or socket.gethostname().split(".")[0])
    if change_detection_mode == "metadata":
        from cairn.client.pxar.util import prepare_metadata_mode

        prepare_metadata_mode()  # while this process has one thread: see its docstring
    key = backup_key(crypt_mode, keyfile, keyfd, master_pubkey_file, passphrase_fd)
    from cairn.client.backup import BackupJob, run_backup
    from cairn.client.pxar.create import TreeOptions
    from cairn.client.repository import open_repository

    store = open_repository(repository, for_write=True)
    crypto = backup_crypto(crypt_mode, key, master_pubkey_file)
    job = BackupJob(ns, group, backup_time, crypto.cipher, crypto.mode, crypto.master_key_payload)
    job.tree_options = TreeOptions(list(exclude), list(include_dev), fail_on_unreadable, change_detection_mode)
    result = run_backup(store, parsed, job)
    rate = result.bytes_read / result.seconds if result.seconds > 0 else 0
    click.echo(
        f"snapshot {result.snapshot}: {human_size(result.bytes_read)} read in "
        f"{result.seconds:.1f}s ({human_size(int(rate))}/s), {result.chunks_new} new chunks "
        f"({human_size(result.bytes_new)}), {result.chunks_reused} reused",
        err=True,
    )
    click.echo(str(result.snapshot))


@click.command()
@click.argument("snapshot")
@click.argument("archive")
@click.argument("target")
@repository_option
@ns_option
@click.option("--overwrite", is_flag=True, help="Replace existing files at the target.")
@click.option("--pattern", "patterns", multiple=True, metavar="GLOB",
              help="pxar: restore only paths matching GLOB (repeatable), e.g. /etc/hosts or '*.conf'.")
@key_options
def restore(snapshot: str, archive: str, target: str, repository: str | None, ns: Namespace, overwrite: bool,
            patterns: tuple[str, ...], keyfile: str | None, keyfd: int | None, passphrase_fd: int | None) -> None:
    """Restore ARCHIVE of SNAPSHOT to TARGET.

    TARGET is a file, a block device or - (stdout) for images and blobs, a directory for
    pxar archives (or - for the raw archive).
    """
    name = SnapshotName.parse(snapshot)
    key = find_key(keyfile, keyfd, passphrase_fd)
    if key is not None:
        key.unlock_in_background()
    from cairn.client.repository import open_repository
    from cairn.client.restore import restore_archive

    store = open_repository(repository)
    result = restore_archive(store, ns, name, archive, target, key=key, overwrite=overwrite, patterns=patterns)
    if target != "-":
        click.echo(f"restored {result.archive} ({human_size(result.size)}) to {target}", err=True)
