"""Opening backup sources: files, block devices and standard input, with clear errors."""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from cairn.errors import SourceError
from cairn.format.blob import MAX_BLOB_SIZE


@dataclass
class ImageSource:
    """A readable image: its file object and size (None when streaming from stdin)."""

    name: str
    file: BinaryIO
    size: int | None

    def blocks(self, block_size: int) -> Iterator[bytes]:
        """Fixed-size blocks (the last may be short) as immutable bytes.

        A buffered file's ``read(n)`` gathers short reads (pipes, stdin) until it has ``n``
        bytes or the input ends, so one call per block suffices. Fresh ``bytes`` rather
        than a reused buffer: they travel to worker threads as they are, need no zero-fill,
        and the blob encoder passes them to the cipher without copying.
        """
        while True:
            try:
                block = self.file.read(block_size)
            except OSError as err:
                raise SourceError(f"cannot read {self.name}: {err.strerror}") from None
            if not block:
                return
            yield block
            if len(block) < block_size:
                return

    def close(self) -> None:
        if self.file is not sys.stdin.buffer:
            self.file.close()


def _open_path(path: str) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise SourceError(f"cannot read {path}: no such file or device") from None
    except PermissionError:
        raise SourceError(f"cannot read {path}: permission denied") from None
    except IsADirectoryError:
        raise SourceError(f"cannot read {path}: is a directory (use NAME.pxar:{path} for directory trees)") from None
    except OSError as err:
        raise SourceError(f"cannot read {path}: {err.strerror}") from None


def open_image(path: str) -> ImageSource:
    if path == "-":
        return ImageSource("standard input", sys.stdin.buffer, None)
    f = _open_path(path)
    mode = os.fstat(f.fileno()).st_mode
    if stat.S_ISREG(mode):
        size = os.fstat(f.fileno()).st_size
    elif stat.S_ISBLK(mode):
        size = f.seek(0, os.SEEK_END)
        f.seek(0)
    else:
        size = None
    return ImageSource(path, f, size)


def read_small_file(path: str) -> bytes:
    """The whole content of a config or log file, refused above the blob size limit."""
    f = sys.stdin.buffer if path == "-" else _open_path(path)
    try:
        data = f.read(MAX_BLOB_SIZE + 1)
    except OSError as err:
        raise SourceError(f"cannot read {path}: {err.strerror}") from None
    finally:
        if f is not sys.stdin.buffer:
            f.close()
    if len(data) > MAX_BLOB_SIZE:
        raise SourceError(f"{path} is larger than {MAX_BLOB_SIZE // (1024 * 1024)} MiB; back it up as an image or pxar archive")
    return data
