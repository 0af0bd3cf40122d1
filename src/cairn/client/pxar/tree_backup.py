"""The pxar part of one backup run: archives for ``NAME.pxar:DIR`` specs, and the catalog.

PBS writes one catalog per snapshot, ``catalog.pcat1.didx``, whose root holds a directory
named after each pxar archive (``root.pxar.didx``) with that archive's tree inside. The
catalog is built while the archives are walked and chunked like them.

With ``--change-detection-mode data`` or ``metadata`` an archive is split as PBS 3.3+ does:
``NAME.mpxar.didx`` holds the metadata stream (pxar format version 2, excludes in its
prelude) and ``NAME.ppxar.didx`` the file contents. PBS writes no catalog in these modes (the
metadata archive serves instead), and neither does Cairn. In metadata mode unchanged files
reuse the previous snapshot's payload chunks (see ``reuse``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import ExitStack

from cairn.client.chunks import ChunkCodec
from cairn.client.progress import progress_bar
from cairn.datastore.writer import BackupWriter
from cairn.errors import SourceError
from cairn.format.catalog import CatalogWriter

from .create import Archiver, TreeOptions, TreeStats
from .index_sink import IndexSink
from .previous import find_previous, split_archive_names
from .reuse import PayloadReuser, ReuseStats
from .util import max_held_files, raise_fd_limit, stderr_warning

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
        fingerprint: Callable[[], str | None] = lambda: None,
        info: Callable[[str], None] | None = None,
    ) -> None:
        self._writer = writer
        self._codec = codec
        self._crypt_mode = crypt_mode
        self._options = options
        self._warn = warn
        self._info = info or _stderr_info
        self._fingerprint = fingerprint  # of the key encrypting or signing (None: no key)
        self._split = options.change_detection_mode in ("data", "metadata")
        self._catalog_sink: IndexSink | None = None
        self._catalog: CatalogWriter | None = None
        if not self._split:
            self._catalog_sink = IndexSink(writer, CATALOG_ARCHIVE, codec, workers=1)
            self._catalog = CatalogWriter(self._catalog_sink.write)
        self.stats: list[TreeStats] = []
        self.reuse_stats: list[ReuseStats] = []

    def add(self, archive: str, root: str) -> int:
        """Archive the tree at ``root`` as ``archive`` (``NAME.pxar.didx``); returns its size."""
        if self._split:
            return self._add_split(archive, root)
        assert self._catalog is not None and self._catalog_sink is not None
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

    def _add_split(self, archive: str, root: str) -> int:
        """Archive the tree as a metadata and a payload archive (data and metadata modes)."""
        meta_name, payload_name = split_archive_names(archive)
        reuser = None
        with ExitStack() as locks, progress_bar(f"backup {archive.removesuffix('.didx')}", None) as bar:
            meta_sink = IndexSink(self._writer, meta_name, self._codec, workers=1)
            payload_sink = IndexSink(self._writer, payload_name, self._codec, progress=bar)
            try:
                accessor = None
                if self._options.change_detection_mode == "metadata":
                    writer = self._writer
                    previous = find_previous(
                        writer.store, writer.ns, writer.name.group, writer.name.backup_time, archive,
                        self._codec, self._crypt_mode, self._fingerprint(), locks, self._info,
                    )
                    if previous is not None:
                        raise_fd_limit()
                        reuser = PayloadReuser(previous.payload_index, payload_sink.inject, max_held_files())
                        accessor = previous.accessor
                archiver = Archiver(
                    root, meta_sink.write, None, self._options, self._warn,
                    payload_write=payload_sink.write, reuser=reuser, previous=accessor,
                    suggest_boundary=payload_sink.suggest_boundary,
                )
                self.stats.append(archiver.run())
            except BaseException:
                meta_sink.abort()
                payload_sink.abort()
                raise
            size = payload_sink.close(self._crypt_mode) + meta_sink.close(self._crypt_mode)
        if reuser is not None:
            self.reuse_stats.append(reuser.stats)
            self._info(_summary(archive, reuser.stats))
        return size

    def finish(self) -> None:
        """Write the catalog; refuse the snapshot if asked to fail on unreadable files."""
        unreadable = sum(s.unreadable for s in self.stats)
        if self._options.fail_on_unreadable and unreadable:
            if self._catalog_sink is not None:
                self._catalog_sink.abort()
            raise SourceError(
                f"{unreadable} file(s) could not be read (see the warnings above); "
                "the backup was discarded (--fail-on-unreadable)"
            )
        if self._catalog is not None and self._catalog_sink is not None:
            self._catalog.finish()
            self._catalog_sink.close(self._crypt_mode)


def _summary(archive: str, stats: ReuseStats) -> str:
    return (
        f"{archive.removesuffix('.pxar.didx')}: {stats.files_reused} unchanged files reused "
        f"({stats.reused_payload_bytes} bytes not read), {stats.files_reencoded} held-back files "
        f"read again; {stats.padding_bytes} bytes of padding in {stats.partial_chunks} "
        "partially reused chunks"
    )


def _stderr_info(message: str) -> None:
    print(f"cairn: {message}", file=sys.stderr, flush=True)
