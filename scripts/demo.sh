#!/usr/bin/env bash
# Cairn's main job on an embedded local datastore: back up, list, verify, restore, compare.
set -euo pipefail
work=${1:-demo-work}
rm -rf "$work"
mkdir -p "$work"
export CAIRN_REPOSITORY="$work/store"

echo "== make a sample VM: a 96 MiB disk image and its config"
python scripts/make_sample.py "$work/source"

echo "== create a datastore"
cairn init "$CAIRN_REPOSITORY"

echo "== back up the VM (twice: the second run finds every chunk already stored)"
cairn backup disk.img:"$work/source/vm-100-disk-0.raw" qemu-server.conf:"$work/source/100.conf" \
    --backup-type vm --backup-id 100 --backup-time 1795312800
cairn backup disk.img:"$work/source/vm-100-disk-0.raw" qemu-server.conf:"$work/source/100.conf" \
    --backup-type vm --backup-id 100 --backup-time 1795399200

echo "== list groups and snapshots"
cairn list
cairn snapshot list vm/100

if cairn verify --help >/dev/null 2>&1; then
    echo "== verify every chunk of every snapshot"
    cairn verify
fi

echo "== restore and compare"
snap=vm/100/2026-11-23T02:00:00Z
cairn restore "$snap" disk.img "$work/restored.raw"
cairn restore "$snap" qemu-server.conf "$work/restored.conf"
cmp "$work/source/vm-100-disk-0.raw" "$work/restored.raw"
cmp "$work/source/100.conf" "$work/restored.conf"
echo "restored image is bit-identical; allocated $(du -k "$work/restored.raw" | cut -f1) KiB of $(( $(stat -c %s "$work/restored.raw") / 1024 )) KiB (sparse)"
echo "== done: datastore at $CAIRN_REPOSITORY"
