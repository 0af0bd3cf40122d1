"""Options shared by the commands, named as proxmox-backup-client names them."""

from __future__ import annotations

import sys

import click

from cairn.datastore.names import Namespace

repository_option = click.option(
    "--repository", "repository", envvar=["CAIRN_REPOSITORY", "PBS_REPOSITORY"], metavar="REPO",
    help="Datastore path (default: $CAIRN_REPOSITORY, then $PBS_REPOSITORY).",
)

ns_option = click.option(
    "--ns", "ns", default="", metavar="NS", callback=lambda ctx, param, value: Namespace.parse(value),
    help="Namespace (e.g. site-a/cluster1); the root namespace when omitted.",
)


def key_options(command):
    """``--keyfile``, ``--keyfd`` (the key file's content on a descriptor) and ``--passphrase-fd``."""
    command = click.option("--passphrase-fd", type=int, default=None, metavar="FD",
                           help="Read the key's passphrase from this file descriptor.")(command)
    command = click.option("--keyfd", type=int, default=None, metavar="FD",
                           help="Read the key file from this open file descriptor.")(command)
    return click.option("--keyfile", default=None, metavar="PATH",
                        help="Encryption key file (default: the default key, if one exists).")(command)


def read_text_argument(text: str | None) -> str:
    """A text argument, read from stdin when it is ``-`` or left out (notes, comments)."""
    return sys.stdin.read() if text in (None, "-") else text
