"""Applying the retention engine (:mod:`cairn.datastore.prune`) to the groups of a store.

The engine decides; this module lists the snapshots it decides about and removes the ones
it marks, oldest first, as PBS does. A snapshot is removed under its exclusive lock, so one
being read, restored or verified stays (and is reported). Incomplete snapshots are removed
only while no backup runs in their group (its lock is free): one may be the running backup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import tzinfo

from cairn.datastore.datastore import Datastore
from cairn.datastore.names import GroupName, Namespace, SnapshotName
from cairn.datastore.prune import (
    KeepOptions,
    PruneCandidate,
    PruneDecision,
    compute_prune_info,
)
from cairn.errors import CairnError, LockError


@dataclass(frozen=True)
class SnapshotRef:
    """What ``prune_json_rows`` reads from a decision's ``ref``; ``ns`` is '' for the root."""

    backup_type: str
    backup_id: str
    ns: str
    name: SnapshotName
    complete: bool


@dataclass
class GroupPrune:
    ns: Namespace
    group: GroupName
    decisions: list[PruneDecision]
    removed: list[SnapshotName] = field(default_factory=list)
    failed: dict[SnapshotName, str] = field(default_factory=dict)  # snapshot -> why it stayed


def group_candidates(store: Datastore, ns: Namespace, group: GroupName) -> list[PruneCandidate]:
    candidates = []
    for info in store.list_snapshots(ns, group):
        ref = SnapshotRef(group.backup_type, group.backup_id, str(ns), info.name, info.finished)
        candidates.append(PruneCandidate(info.name.backup_time, info.protected, info.finished, ref))
    return candidates


def prune_group(
    store: Datastore, ns: Namespace, group: GroupName, options: KeepOptions, dry_run: bool = False,
    tz: tzinfo | None = None,
) -> GroupPrune:
    """Decide for every snapshot of ``group``; unless ``dry_run``, remove those marked."""
    result = GroupPrune(ns, group, compute_prune_info(group_candidates(store, ns, group), options, tz))
    doomed = [d for d in result.decisions if not d.keep]
    if dry_run or not doomed:
        return result
    group_lock = None
    if any(not d.ref.complete for d in doomed):
        try:
            group_lock = store.lock_group(ns, group)
        except LockError:
            group_lock = None
    try:
        for decision in doomed:  # oldest first
            name = decision.ref.name
            if not decision.ref.complete and group_lock is None:
                result.failed[name] = "incomplete, and a backup is running in its group"
                continue
            try:
                store.forget_snapshot(ns, name)
            except LockError:
                result.failed[name] = "in use by another operation"
            except CairnError as err:
                result.failed[name] = str(err)
            else:
                result.removed.append(name)
    finally:
        if group_lock is not None:
            group_lock.release()
    return result


def prune_namespace(
    store: Datastore, ns: Namespace, options: KeepOptions, dry_run: bool = False,
    max_depth: int | None = None, tz: tzinfo | None = None,
) -> list[GroupPrune]:
    """Prune every group in ``ns`` and the namespaces below it, down to ``max_depth``."""
    return [
        prune_group(store, child, group, options, dry_run, tz)
        for child in store.list_namespaces(ns, max_depth)
        for group in store.list_groups(child)
    ]
