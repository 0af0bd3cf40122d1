"""Pure codecs for PBS on-disk formats: bytes in, bytes out; no file system, no network."""
