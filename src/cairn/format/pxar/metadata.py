"""What pxar records about a file besides its contents: stat fields, xattrs, ACLs, fcaps, quota."""

from dataclasses import dataclass, field

from .constants import (
    S_IFBLK,
    S_IFCHR,
    S_IFDIR,
    S_IFIFO,
    S_IFLNK,
    S_IFMT,
    S_IFREG,
    S_IFSOCK,
)


@dataclass(frozen=True, slots=True)
class AclUser:
    """A named-user ACL entry (ACL_USER, or ACL_DEFAULT_USER in a default ACL)."""

    uid: int
    permissions: int


@dataclass(frozen=True, slots=True)
class AclGroup:
    """A named-group ACL entry (ACL_GROUP, or ACL_DEFAULT_GROUP in a default ACL)."""

    gid: int
    permissions: int


@dataclass(frozen=True, slots=True)
class AclDefault:
    """The base entries of a directory's default ACL; ``mask`` may be ``ACL_NO_MASK``."""

    user_obj_permissions: int
    group_obj_permissions: int
    other_permissions: int
    mask_permissions: int


@dataclass(slots=True)
class Acl:
    """POSIX ACL of one file; the owner/other entries live in the mode bits."""

    users: list[AclUser] = field(default_factory=list)
    groups: list[AclGroup] = field(default_factory=list)
    group_obj: int | None = None  # permissions of the owning group when a mask exists
    default: AclDefault | None = None
    default_users: list[AclUser] = field(default_factory=list)
    default_groups: list[AclGroup] = field(default_factory=list)


@dataclass(slots=True)
class Metadata:
    """The metadata items of one pxar entry.

    ``mode`` carries file type and permission bits with the Linux values; ``mtime_ns`` is
    nanoseconds since the epoch (negative before 1970). Xattrs, ACL lists and the order of
    their elements are written exactly as given.
    """

    mode: int
    flags: int = 0
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    xattrs: list[tuple[bytes, bytes]] = field(default_factory=list)
    fcaps: bytes | None = None
    acl: Acl = field(default_factory=Acl)
    quota_project_id: int | None = None

    @property
    def file_type(self) -> int:
        """The ``S_IFMT`` part of the mode."""
        return self.mode & S_IFMT

    def is_dir(self) -> bool:
        return self.file_type == S_IFDIR

    def is_regular_file(self) -> bool:
        return self.file_type == S_IFREG

    def is_symlink(self) -> bool:
        return self.file_type == S_IFLNK

    def is_device(self) -> bool:
        return self.file_type in (S_IFBLK, S_IFCHR)

    def is_fifo(self) -> bool:
        return self.file_type == S_IFIFO

    def is_socket(self) -> bool:
        return self.file_type == S_IFSOCK
