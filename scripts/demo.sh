#!/usr/bin/env bash
# Cairn's main job on an embedded local datastore: back up, list, verify, restore, compare.
set -euo pipefail
work=${1:-demo-work}
rm -rf "$work"
mkdir -p "$work"
export CAIRN_REPOSITORY="$work/store"

echo "== make a sample VM (a 96 MiB disk image and its config) and a container file system"
python scripts/make_sample.py "$work/source"

echo "== create a datastore"
cairn init "$CAIRN_REPOSITORY"

echo "== back up the VM (twice: the second run finds every chunk already stored)"
cairn backup disk.img:"$work/source/vm-100-disk-0.raw" qemu-server.conf:"$work/source/100.conf" \
    --backup-type vm --backup-id 100 --backup-time 1795312800
cairn backup disk.img:"$work/source/vm-100-disk-0.raw" qemu-server.conf:"$work/source/100.conf" \
    --backup-type vm --backup-id 100 --backup-time 1795399200

echo "== back up the container's file system as a pxar archive, with a catalog"
cairn backup root.pxar:"$work/source/ct-101-rootfs" --backup-type ct --backup-id 101 --backup-time 1795312800

echo "== list groups and snapshots"
cairn list
cairn snapshot list

echo "== verify every chunk of every snapshot"
cairn verify

echo "== restore and compare"
snap=vm/100/2026-11-23T02:00:00Z
cairn restore "$snap" disk.img "$work/restored.raw"
cairn restore "$snap" qemu-server.conf "$work/restored.conf"
cmp "$work/source/vm-100-disk-0.raw" "$work/restored.raw"
cmp "$work/source/100.conf" "$work/restored.conf"
cairn restore ct/101/2026-11-22T02:00:00Z root.pxar "$work/restored-ct"
diff -r "$work/source/ct-101-rootfs" "$work/restored-ct"
cairn restore ct/101/2026-11-22T02:00:00Z root.pxar "$work/one-file" --pattern /etc/hostname
cmp "$work/source/ct-101-rootfs/etc/hostname" "$work/one-file/etc/hostname"
echo "restored tree is identical, and a single file restored on its own"
echo "restored image is bit-identical; allocated $(du -k "$work/restored.raw" | cut -f1) KiB of $(( $(stat -c %s "$work/restored.raw") / 1024 )) KiB (sparse)"
echo "== done: datastore at $CAIRN_REPOSITORY"
