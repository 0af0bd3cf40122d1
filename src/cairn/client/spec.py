"""Backup specs as proxmox-backup-client takes them: ``NAME.EXT:PATH``.

``.img`` becomes a fixed index (``NAME.img.fidx``), ``.pxar`` a dynamic index
(``NAME.pxar.didx``), ``.conf`` and ``.log`` a blob (``NAME.conf.blob``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cairn.errors import UsageError

_SPEC_RE = re.compile(r"^([a-zA-Z0-9_-]+\.(pxar|img|conf|log)):(.+)$")
_KINDS = {"img": ("image", ".fidx"), "pxar": ("pxar", ".didx"), "conf": ("blob", ".blob"), "log": ("blob", ".blob")}


@dataclass(frozen=True)
class BackupSpec:
    name: str  # e.g. "disk.img"
    kind: str  # "image", "pxar" or "blob"
    source: str  # a path, or "-" for standard input

    @property
    def archive(self) -> str:
        return self.name + _KINDS[self.name.rsplit(".", 1)[1]][1]


def parse_backup_spec(text: str) -> BackupSpec:
    match = _SPEC_RE.match(text)
    if not match:
        raise UsageError(
            f"invalid backup spec {text!r} (expected NAME.img:PATH, NAME.pxar:DIR, "
            "NAME.conf:FILE or NAME.log:FILE; NAME may use letters, digits, '_' and '-')"
        )
    name, ext, source = match.groups()
    return BackupSpec(name, _KINDS[ext][0], source)


def archive_candidates(name: str) -> list[str]:
    """Archive file names a user may mean by ``name`` (the extension may be left out).

    ``NAME.pxar`` also means the split form PBS's data and metadata change-detection modes
    write: the metadata archive ``NAME.mpxar.didx`` (its payload archive goes with it).
    """
    if name.endswith(".pxar.didx"):
        return [name, name.removesuffix(".pxar.didx") + ".mpxar.didx"]
    if name.endswith((".fidx", ".didx", ".blob")):
        return [name]
    candidates = [name + ".fidx", name + ".didx", name + ".blob", name]
    if name.endswith(".pxar"):
        candidates.append(name.removesuffix(".pxar") + ".mpxar.didx")
    return candidates
