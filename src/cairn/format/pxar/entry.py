"""What the decoder and the accessor report for each file in an archive."""

import enum
from dataclasses import dataclass, field

from .metadata import Metadata


class EntryKind(enum.Enum):
    """The item that ends an entry decides its kind (pxar does not trust the mode for this)."""

    DIRECTORY = "directory"
    FILE = "file"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    DEVICE = "device"
    FIFO = "fifo"
    SOCKET = "socket"


class PathNode:
    """One directory on the way from the root, shared by all entries inside it.

    Entries keep a reference instead of a joined path so that decoding a deep tree stays
    linear in the archive size; the full path is only built when someone asks for it.
    """

    __slots__ = ("_path", "name", "parent")

    def __init__(self, parent: "PathNode | None", name: bytes) -> None:
        self.parent = parent
        self.name = name
        self._path: bytes | None = None

    @classmethod
    def from_path(cls, path: bytes) -> "PathNode":
        """Node for an archive path such as ``b"/usr/bin"`` (leading slash optional)."""
        node = cls(None, b"")
        for component in path.split(b"/"):
            if component:
                node = cls(node, component)
        return node

    @property
    def path(self) -> bytes:
        """The absolute archive path, ``b"/"`` for the root."""
        if self._path is None:
            if self.parent is None:
                self._path = b"/"
            else:
                self._path = self.parent.join(self.name)
        return self._path

    def join(self, name: bytes) -> bytes:
        """Path of a child called ``name``."""
        base = self.path
        return base + name if base == b"/" else base + b"/" + name


@dataclass(frozen=True, slots=True)
class Entry:
    """One file of an archive.

    Offsets are absolute positions in the (metadata) archive unless named otherwise:

    - ``file_offset``: the entry's FILENAME header (``None`` for the root). Pass it as
      ``target_offset`` to ``Encoder.add_hardlink``; HARDLINK items point at it.
    - ``entry_offset``: its ENTRY header (HARDLINK header for hardlinks).
    - ``content_offset``: first content byte of a FILE stored inline (PAYLOAD).
    - ``payload_offset``: for a FILE stored in the split payload stream (PAYLOAD_REF), the
      position of its PAYLOAD header in that stream.
    - ``link_offset``: for a HARDLINK, the ``file_offset`` of the file it links to.
    - ``end_offset``: set by the Accessor only: end of the byte range the parent's goodbye
      table gives this entry (for a directory: the end of its GOODBYE item).
    """

    kind: EntryKind
    name: bytes
    parent: PathNode | None = field(repr=False)
    metadata: Metadata | None  # None for hardlinks: they carry no metadata of their own
    file_offset: int | None
    entry_offset: int
    size: int = 0
    content_offset: int | None = None
    payload_offset: int | None = None
    link_target: bytes | None = None  # symlink target, or the path a hardlink names
    link_offset: int | None = None
    device: tuple[int, int] | None = None  # (major, minor)
    end_offset: int | None = None

    @property
    def path(self) -> bytes:
        """Absolute path inside the archive (``b"/"`` for the root)."""
        if self.parent is None:
            return b"/"
        return self.parent.join(self.name)
