"""The pxar part of one backup run: archives for ``NAME.pxar:DIR`` specs, and the catalog.

PBS writes one catalog per snapshot, ``catalog.pcat1.didx``, whose root holds a directory
named after each pxar archive (``root.pxar.didx``) with that archive's tree inside. The
catalog is built while the archives are walked and chunked like them.
"""

from __future__ import annotations

from collections.abc import Callable

from cairn.client.chunks import ChunkCodec
from cairn.client.progress import progress_bar
from cairn.datastore.writer import BackupWriter
from cairn.errors import SourceError
from cairn.format.catalog import CatalogWriter

from .create import Archiver, TreeOptions, TreeStats
from .index_sink import IndexSink
from .util import stderr_warning

CATALOG_ARCHIVE = "catalog.pcat1.didx"


class TreeBackup:
    """Adds pxar archives to the snapshot ``writer`` is building; ``finish`` adds the catalog."""

    def __init__(
        self,
        writer: BackupWriter,
        codec: ChunkCodec,
        crypt_mode: str,
        options: TreeOptions,
        warn: Callable[[str], None] = stderr_warning,
    ) -> None:
        self._writer = writer
        self._codec = codec
        self._crypt_mode = crypt_mode
        self._options = options
        self._warn = warn
        self._catalog_sink = IndexSink(writer, CATALOG_ARCHIVE, codec, workers=1)
        self._catalog = CatalogWriter(self._catalog_sink.write)
        self.stats: list[TreeStats] = []

    def add(self, archive: str, root: str) -> int:
        """Archive the tree at ``root`` as ``archive`` (``NAME.pxar.didx``); returns its size."""
        self._catalog.start_directory(archive.encode())
        with progress_bar(f"backup {archive.removesuffix('.didx')}", None) as bar:
            sink = IndexSink(self._writer, archive, self._codec, progress=bar)
            try:
                archiver = Archiver(root, sink.write, self._catalog, self._options, self._warn)
                self.stats.append(archiver.run())
            except BaseException:
                sink.abort()
                self._catalog_sink.abort()
                raise
            size = sink.close(self._crypt_mode)
        self._catalog.end_directory()
        return size

    def finish(self) -> None:
        """Write the catalog; refuse the snapshot if asked to fail on unreadable files."""
        unreadable = sum(s.unreadable for s in self.stats)
        if self._options.fail_on_unreadable and unreadable:
            self._catalog_sink.abort()
            raise SourceError(
                f"{unreadable} file(s) could not be read (see the warnings above); "
                "the backup was discarded (--fail-on-unreadable)"
            )
        self._catalog.finish()
        self._catalog_sink.close(self._crypt_mode)
