"""Building a directory tree with every kind of file pxar keeps, and comparing two trees."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import stat
import struct
import subprocess
from pathlib import Path

MIB = 1024 * 1024
MTIME_NS = 1_600_000_000_123_456_789

# A version 2 file capability: cap_net_bind_service (10) permitted and effective.
FCAPS = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)

UNICODE_NAME = "café ☕ ñ".encode()
NON_UTF8_NAME = b"latin1-\xe9t\xe9-\xff"
LONG_NAME = b"L" * 255
DEPTH = 60


def have_setfacl() -> bool:
    return shutil.which("setfacl") is not None


def make_tree(root: Path) -> None:
    """Every kind of entry the issue lists; mtimes in nanoseconds set last, bottom up."""
    r = os.fsencode(root)
    os.makedirs(r)

    def p(*parts: bytes) -> bytes:
        return os.path.join(r, *parts)

    with open(p(b"plain.txt"), "wb") as f:
        f.write(b"hello pxar\n" * 100)
    open(p(b"empty"), "wb").close()
    os.mkdir(p(b"empty-dir"))
    # Hardlink group of three names in two directories.
    os.mkdir(p(b"links"))
    with open(p(b"links", b"first"), "wb") as f:
        f.write(os.urandom(10000))
    os.link(p(b"links", b"first"), p(b"links", b"second"))
    os.link(p(b"links", b"first"), p(b"hardlink-outside-links"))
    # Devices and a fifo.
    os.mknod(p(b"char-dev"), stat.S_IFCHR | 0o620, os.makedev(1, 3))
    os.mknod(p(b"block-dev"), stat.S_IFBLK | 0o640, os.makedev(7, 200))
    os.mkfifo(p(b"fifo"), 0o604)
    # Special permission bits.
    with open(p(b"setuid"), "wb") as f:
        f.write(b"#!/bin/sh\n")
    os.chmod(p(b"setuid"), 0o4755)
    with open(p(b"setgid"), "wb") as f:
        f.write(b"x")
    os.chmod(p(b"setgid"), 0o2711)
    os.mkdir(p(b"sticky"))
    os.chmod(p(b"sticky"), 0o1777)
    # Ownership.
    with open(p(b"owned"), "wb") as f:
        f.write(b"owned by someone else")
    os.chown(p(b"owned"), 1234, 5678)
    os.symlink(b"plain.txt", p(b"owned-link"))
    os.chown(p(b"owned-link"), 4321, 8765, follow_symlinks=False)
    # Xattrs and capabilities.
    with open(p(b"xattrs"), "wb") as f:
        f.write(b"with attributes")
    os.setxattr(p(b"xattrs"), "user.comment", b"a comment")
    os.setxattr(p(b"xattrs"), "user.binary", bytes(range(256)))
    os.setxattr(p(b"xattrs"), "trusted.cairn", b"trusted value")
    os.mkdir(p(b"xattr-dir"))
    os.setxattr(p(b"xattr-dir"), "user.dir", b"on a directory")
    with open(p(b"capable"), "wb") as f:
        f.write(b"\x7fELF")
    os.chmod(p(b"capable"), 0o755)
    os.setxattr(p(b"capable"), "security.capability", FCAPS)
    # ACLs (access on a file, access and default on a directory).
    os.mkdir(p(b"acl-dir"))
    with open(p(b"acl-file"), "wb") as f:
        f.write(b"acl")
    if have_setfacl():
        subprocess.run(["setfacl", "-m", "u:1001:rw,g:1002:r", p(b"acl-file")], check=True)
        subprocess.run(["setfacl", "-m", "u:1003:rwx", "-d", "-m", "u:1004:rx,g:1005:rwx", p(b"acl-dir")], check=True)
    # Sparse 64 MiB file with data at the start, the middle and the end.
    with open(p(b"sparse.img"), "wb") as f:
        f.write(b"start" * 1000)
        f.seek(32 * MIB)
        f.write(os.urandom(100000))
        f.truncate(64 * MIB)
        f.seek(64 * MIB - 5)
        f.write(b"!end!")
    # Names.
    os.mkdir(p(UNICODE_NAME))
    with open(p(UNICODE_NAME, b"inner"), "wb") as f:
        f.write(UNICODE_NAME)
    with open(p(NON_UTF8_NAME), "wb") as f:
        f.write(b"non utf-8 name")
    with open(p(LONG_NAME), "wb") as f:
        f.write(b"255 bytes of name")
    with open(p(b"odd \n\t\\ name*?[]"), "wb") as f:
        f.write(b"odd")
    # Deep nesting.
    deep = p(b"deep")
    for level in range(DEPTH):
        deep = os.path.join(deep, b"level-%02d" % level)
    os.makedirs(deep)
    with open(os.path.join(deep, b"bottom"), "wb") as f:
        f.write(b"the bottom")
    # Symlinks: relative, dangling, absolute, to a directory.
    os.symlink(b"does/not/exist", p(b"dangling"))
    os.symlink(b"/etc/hostname", p(b"absolute"))
    os.symlink(b"links", p(b"dir-link"))
    # A socket, which is not archived.
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(p(b"socket"))
    sock.close()
    set_mtimes(r)


def set_mtimes(root: bytes) -> None:
    """Give every entry a distinct nanosecond mtime, children before their directory."""
    counter = 0
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            counter += 1
            os.utime(os.path.join(dirpath, name), ns=(MTIME_NS, MTIME_NS + counter * 1_000_001), follow_symlinks=False)
        counter += 1
        os.utime(dirpath, ns=(MTIME_NS, MTIME_NS + counter * 1_000_001))


def _xattrs(path: bytes, is_link: bool) -> dict:
    if is_link:
        return {}
    return {name: os.getxattr(path, name) for name in sorted(os.listxattr(path))}


def snapshot_tree(root: Path, skip_sockets: bool = True) -> dict:
    """Everything pxar keeps about each path below (and including) ``root``."""
    r = os.fsencode(root)
    result = {}
    inodes: dict[int, list[bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(r):
        names = dirnames + filenames
        for full in ([r] if dirpath == r else []) + [os.path.join(dirpath, n) for n in names]:
            rel = os.path.relpath(full, r)
            st = os.lstat(full)
            if skip_sockets and stat.S_ISSOCK(st.st_mode):
                continue
            info = {
                "mode": st.st_mode,
                "uid": st.st_uid,
                "gid": st.st_gid,
                "mtime_ns": st.st_mtime_ns,
                "xattrs": _xattrs(full, stat.S_ISLNK(st.st_mode)),
            }
            if stat.S_ISREG(st.st_mode):
                info["size"] = st.st_size
                with open(full, "rb") as f:
                    info["sha256"] = hashlib.file_digest(f, "sha256").hexdigest()
                info["nlink"] = st.st_nlink
                inodes.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                info["target"] = os.readlink(full)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                info["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            result[rel] = info
    groups = sorted(sorted(paths) for paths in inodes.values() if len(paths) > 1)
    result[b"<hardlink groups>"] = groups
    return result
