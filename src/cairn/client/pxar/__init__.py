"""Directory trees as pxar archives: backup (walk, chunk, catalog), restore, browsing.

``create`` walks a tree into the pxar encoder, ``chunker`` and ``index_sink`` turn the
stream into stored chunks and a dynamic index, ``tree_backup`` ties both to a snapshot with
its catalog; ``reader`` reads an index by range, ``extract`` writes archive entries to a
file system safely, ``tree_restore`` chooses between a streaming restore and a selective
one through the catalog, ``exclude`` holds PBS's match patterns and ``catalog_shell`` the
interactive catalog browser.
"""
