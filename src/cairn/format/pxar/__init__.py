"""The pxar archive format of Proxmox Backup Server: encoder, decoder and random access.

Pure codec: bytes come in through callables and go out through callables; no file system.
``Encoder`` writes an archive while the caller walks a tree, ``Decoder`` reads one in a
single pass (and verifies its goodbye tables), ``Accessor`` looks up single paths through
the goodbye tables and reads file contents by range.

Encoding (names in each directory strictly increasing, as bytes)::

    enc = Encoder(out.write, Metadata(mode=S_IFDIR | 0o755))
    offset = enc.add_file(b"bunzip2", Metadata(mode=S_IFREG | 0o755), size, chunks)
    with enc.directory(b"usr", Metadata(mode=S_IFDIR | 0o755)):
        enc.add_hardlink(b"bzip2", b"/bunzip2", offset)
    enc.finish()

Random access::

    acc = Accessor(read_at, size)
    entry = acc.lookup(b"/usr/bzip2")
    data = acc.open_file(acc.follow_hardlink(entry)).read_at(0, 4096)
"""

from .accessor import Accessor, Directory, FileContents, Listing, StoredFile
from .constants import (
    ACL_EXECUTE,
    ACL_NO_MASK,
    ACL_READ,
    ACL_WRITE,
    S_IFBLK,
    S_IFCHR,
    S_IFDIR,
    S_IFIFO,
    S_IFLNK,
    S_IFMT,
    S_IFREG,
    S_IFSOCK,
)
from .decoder import Decoder
from .encoder import Encoder
from .entry import Entry, EntryKind
from .goodbye import hash_filename
from .metadata import Acl, AclDefault, AclGroup, AclUser, Metadata

__all__ = [
    "ACL_EXECUTE",
    "ACL_NO_MASK",
    "ACL_READ",
    "ACL_WRITE",
    "S_IFBLK",
    "S_IFCHR",
    "S_IFDIR",
    "S_IFIFO",
    "S_IFLNK",
    "S_IFMT",
    "S_IFREG",
    "S_IFSOCK",
    "Accessor",
    "Acl",
    "AclDefault",
    "AclGroup",
    "AclUser",
    "Decoder",
    "Directory",
    "Encoder",
    "Entry",
    "EntryKind",
    "FileContents",
    "Listing",
    "Metadata",
    "StoredFile",
    "hash_filename",
]
