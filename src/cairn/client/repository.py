"""Finding the datastore a command works on from ``--repository``.

A repository is a local path (the embedded default: no server needed) or, once the server
exists, ``user@realm@host:store`` as proxmox-backup-client takes it.
"""

from __future__ import annotations

import re
from pathlib import Path

from cairn.datastore.datastore import Datastore
from cairn.errors import UsageError

_REMOTE_RE = re.compile(r"^(?:(?:[^@/]+@[^@/]+)@)?(?:[A-Za-z0-9.\-]+|\[[0-9a-fA-F:]+\])(?::\d+)?:[A-Za-z0-9_][A-Za-z0-9._\-]*$")


def open_repository(repository: str | None, for_write: bool = False) -> Datastore:
    if not repository:
        raise UsageError("no repository given: use --repository PATH or set CAIRN_REPOSITORY")
    path = Path(repository)
    if not path.exists() and _REMOTE_RE.match(repository) and "/" not in repository:
        raise UsageError(
            f"{repository!r} names a remote repository; this build of Cairn works on local "
            "datastores only (give a path)"
        )
    return Datastore.open(path, for_write=for_write)
