"""Names of namespaces, groups and snapshots, as PBS writes and parses them.

These are values, not paths: only :class:`cairn.datastore.datastore.Datastore` turns them
into locations inside a store.
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass

from cairn.errors import UsageError

SAFE_ID = r"[A-Za-z0-9_][A-Za-z0-9._\-]*"
BACKUP_TYPES = ("vm", "ct", "host")
MAX_NAMESPACE_DEPTH = 7
MAX_NAMESPACE_LENGTH = 256
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

_SAFE_ID_RE = re.compile(rf"^{SAFE_ID}$")
_TIME_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")


def is_safe_id(text: str) -> bool:
    return bool(_SAFE_ID_RE.match(text))


def format_backup_time(epoch: int) -> str:
    return time.strftime(TIME_FORMAT, time.gmtime(epoch))


def parse_backup_time(text: str) -> int:
    if not _TIME_RE.match(text):
        raise UsageError(f"invalid backup time {text!r} (expected e.g. 2026-11-22T02:00:00Z)")
    try:
        return calendar.timegm(time.strptime(text, TIME_FORMAT))
    except ValueError:
        raise UsageError(f"invalid backup time {text!r}") from None


@dataclass(frozen=True, order=True)
class Namespace:
    """A namespace path such as ``a/b``; the root namespace has no components."""

    components: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> Namespace:
        text = (text or "").strip("/")
        if not text:
            return cls()
        if len(text) > MAX_NAMESPACE_LENGTH:
            raise UsageError(f"namespace {text!r} is longer than {MAX_NAMESPACE_LENGTH} chars")
        parts = tuple(text.split("/"))
        if len(parts) > MAX_NAMESPACE_DEPTH:
            raise UsageError(f"namespace {text!r} is deeper than {MAX_NAMESPACE_DEPTH} levels")
        for part in parts:
            if not is_safe_id(part):
                raise UsageError(f"invalid namespace component {part!r} in {text!r}")
        return cls(parts)

    @property
    def is_root(self) -> bool:
        return not self.components

    @property
    def depth(self) -> int:
        return len(self.components)

    def child(self, name: str) -> Namespace:
        return Namespace.parse("/".join(self.components + (name,)))

    def parent(self) -> Namespace:
        return Namespace(self.components[:-1])

    def __str__(self) -> str:
        return "/".join(self.components)


@dataclass(frozen=True, order=True)
class GroupName:
    """``<type>/<id>``, e.g. ``vm/100``."""

    backup_type: str
    backup_id: str

    def __post_init__(self) -> None:
        if self.backup_type not in BACKUP_TYPES:
            raise UsageError(
                f"invalid backup type {self.backup_type!r} (expected one of {', '.join(BACKUP_TYPES)})"
            )
        if not is_safe_id(self.backup_id):
            raise UsageError(f"invalid backup id {self.backup_id!r}")

    @classmethod
    def parse(cls, text: str) -> GroupName:
        parts = text.strip("/").split("/")
        if len(parts) != 2:
            raise UsageError(f"invalid backup group {text!r} (expected TYPE/ID, e.g. vm/100)")
        return cls(parts[0], parts[1])

    def __str__(self) -> str:
        return f"{self.backup_type}/{self.backup_id}"


@dataclass(frozen=True, order=True)
class SnapshotName:
    """``<type>/<id>/<RFC3339 UTC time>``, e.g. ``vm/100/2026-11-22T02:00:00Z``."""

    group: GroupName
    backup_time: int

    @classmethod
    def parse(cls, text: str) -> SnapshotName:
        parts = text.strip("/").split("/")
        if len(parts) != 3:
            raise UsageError(
                f"invalid snapshot {text!r} (expected TYPE/ID/TIME, e.g. vm/100/2026-11-22T02:00:00Z)"
            )
        return cls(GroupName(parts[0], parts[1]), parse_backup_time(parts[2]))

    @property
    def time_string(self) -> str:
        return format_backup_time(self.backup_time)

    def __str__(self) -> str:
        return f"{self.group}/{self.time_string}"


def parse_group_or_snapshot(text: str) -> GroupName | SnapshotName:
    return SnapshotName.parse(text) if text.strip("/").count("/") == 2 else GroupName.parse(text)
