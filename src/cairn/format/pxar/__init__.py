"""The pxar archive format of Proxmox Backup Server: encoder, decoder and random access.

Pure codec: bytes in through callables, bytes out through callables; no file system.
``Encoder`` writes an archive while the caller walks a tree, ``Decoder`` reads one in a
single pass, ``Accessor`` looks up single paths through the goodbye tables.
"""

from .accessor import Accessor, Directory, FileContents
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
    "Metadata",
    "hash_filename",
]
