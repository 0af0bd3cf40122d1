"""An interactive browser over a snapshot's catalog, with PBS's catalog shell commands.

Browsing reads only the catalog; ``restore-selected`` and ``restore`` then fetch just the
selected files through the archive's goodbye tables. Commands come one per line (from a
terminal with a prompt and line editing, or from a pipe for scripts); a bad command prints
one error line and the shell goes on.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from typing import TextIO

from cairn.errors import CairnError, UsageError
from cairn.format.catalog import CatalogReader, DirEntry, EntryType

from .exclude import MatchEntry, MatchType, match, parse_pattern
from .reader import ChunkReader
from .tree_restore import CATALOG_MODES, extract_archive
from .util import show

HELP = """\
commands:
  pwd                        print the current directory
  cd [PATH]                  change directory (/ is the archive root)
  ls [PATH]                  list a directory
  stat PATH                  type, size and mtime of an entry
  find [PATH] PATTERN [--select]
                             list entries below PATH (default: .) matching PATTERN
  select PATH                add PATH (and everything below it) to the restore selection
  deselect PATH              remove PATH from the selection
  clear-selected             empty the selection
  list-selected              show the selection
  restore-selected TARGET    restore the selection into the directory TARGET
  restore TARGET [PATTERN]   restore everything (or what PATTERN matches) into TARGET
  help                       this text
  exit                       leave the shell"""

_GLOB_SPECIALS = b"\\*?["


def literal_pattern(path: bytes) -> bytes:
    """A pattern that matches exactly ``path`` (glob characters quoted)."""
    out = bytearray()
    for byte in path:
        if byte in _GLOB_SPECIALS:
            out.append(ord("\\"))
        out.append(byte)
    return bytes(out)


class CatalogShell:
    """The shell's state: the current directory and the selection."""

    def __init__(
        self,
        catalog: CatalogReader,
        catalog_reader: ChunkReader,
        archive_reader: ChunkReader,
        archive_name: str,
        out: TextIO = sys.stdout,
        err: Callable[[str], None] | None = None,
    ) -> None:
        self._catalog = catalog
        self._catalog_reader = catalog_reader
        self._archive = archive_reader
        self._archive_name = archive_name
        root = catalog.lookup(catalog.root(), archive_name.encode())
        if root is None or not root.is_directory:
            raise UsageError(f"the catalog does not list {archive_name}")
        self._root = root
        self._cwd: list[DirEntry] = [root]
        self._names: list[bytes] = []
        self._selected: list[bytes] = []
        self._out = out
        self._err = err or (lambda message: print(f"cairn: error: {message}", file=sys.stderr, flush=True))

    # --- running ------------------------------------------------------------------------

    def run(self, lines: TextIO) -> None:
        interactive = lines.isatty()
        if interactive:
            try:
                import readline  # noqa: F401  (line editing for input())
            except ImportError:
                pass
        while True:
            try:
                line = input(f"pxar:{self._pwd()} > ") if interactive else lines.readline()
            except EOFError:
                break
            if not interactive and not line:
                break
            if not self.execute(line):
                break

    def execute(self, line: str) -> bool:
        """Run one command line; False when the shell should end."""
        try:
            words = shlex.split(line)
        except ValueError as err:
            self._err(str(err))
            return True
        if not words:
            return True
        command, args = words[0], words[1:]
        if command in ("exit", "quit"):
            return False
        handler = self._commands().get(command)
        if handler is None:
            self._err(f"unknown command {command!r} (try 'help')")
            return True
        try:
            handler(args)
        except CairnError as err:
            self._err(str(err))
        return True

    def _commands(self) -> dict[str, Callable[[list[str]], None]]:
        return {
            "help": lambda args: self._print(HELP),
            "pwd": lambda args: self._print(self._pwd()),
            "cd": self._cd,
            "ls": self._ls,
            "stat": self._stat,
            "find": self._find,
            "select": self._select,
            "deselect": self._deselect,
            "clear-selected": lambda args: self._selected.clear(),
            "list-selected": lambda args: [self._print(show(p)) for p in self._selected],
            "restore-selected": self._restore_selected,
            "restore": self._restore,
        }

    def _print(self, text: str) -> None:
        print(text, file=self._out, flush=True)

    # --- paths --------------------------------------------------------------------------

    def _pwd(self) -> str:
        return "/" + "/".join(show(n) for n in self._names)

    def _resolve(self, path: str) -> tuple[list[DirEntry], list[bytes]]:
        """The entries and names from the archive root to ``path``."""
        raw = path.encode("utf-8", "surrogateescape")
        if raw.startswith(b"/"):
            stack, names = [self._root], []
        else:
            stack, names = list(self._cwd), list(self._names)
        for part in raw.split(b"/"):
            if part in (b"", b"."):
                continue
            if part == b"..":
                if names:
                    stack.pop()
                    names.pop()
                continue
            parent = stack[-1]
            found = self._catalog.lookup(parent, part) if parent.is_directory else None
            if found is None:
                raise UsageError(f"no such file or directory: {path}")
            stack.append(found)
            names.append(part)
        return stack, names

    @staticmethod
    def _one_arg(args: list[str], usage: str, optional: bool = False) -> str | None:
        if len(args) > 1 or (not args and not optional):
            raise UsageError(f"usage: {usage}")
        return args[0] if args else None

    # --- commands -----------------------------------------------------------------------

    def _cd(self, args: list[str]) -> None:
        path = self._one_arg(args, "cd [PATH]", optional=True) or "/"
        stack, names = self._resolve(path)
        if not stack[-1].is_directory:
            raise UsageError(f"not a directory: {path}")
        self._cwd, self._names = stack, names

    def _ls(self, args: list[str]) -> None:
        path = self._one_arg(args, "ls [PATH]", optional=True) or "."
        entry = self._resolve(path)[0][-1]
        if not entry.is_directory:
            self._print(show(entry.name))
            return
        for child in sorted(self._catalog.read_dir(entry), key=lambda e: e.name):
            self._print(show(child.name) + ("/" if child.is_directory else ""))

    def _stat(self, args: list[str]) -> None:
        path = self._one_arg(args, "stat PATH")
        assert path is not None
        stack, names = self._resolve(path)
        entry = stack[-1]
        line = f"{entry.kind.value} /{show(b'/'.join(names))}"
        if entry.kind is EntryType.FILE:
            line += f" {entry.size} {format_mtime(entry.mtime or 0)}"
        self._print(line)

    def _find(self, args: list[str]) -> None:
        select = "--select" in args
        args = [a for a in args if a != "--select"]
        if len(args) == 1:
            start, pattern = ".", args[0]
        elif len(args) == 2:
            start, pattern = args
        else:
            raise UsageError("usage: find [PATH] PATTERN [--select]")
        stack, names = self._resolve(start)
        base = b"/" + b"/".join(names) if names else b""
        matcher = parse_pattern(pattern, MatchType.INCLUDE)
        if not stack[-1].is_directory:
            raise UsageError(f"not a directory: {start}")
        for item in self._catalog.walk(stack[-1]):
            path = base + item.path
            if match([matcher], path, CATALOG_MODES[item.kind]) is MatchType.INCLUDE:
                self._print(show(path))
        if select:
            self._selected.append(pattern.encode("utf-8", "surrogateescape"))

    def _select(self, args: list[str]) -> None:
        path = self._one_arg(args, "select PATH")
        assert path is not None
        names = self._resolve(path)[1]
        pattern = literal_pattern(b"/" + b"/".join(names))
        if pattern not in self._selected:
            self._selected.append(pattern)

    def _deselect(self, args: list[str]) -> None:
        path = self._one_arg(args, "deselect PATH")
        assert path is not None
        raw = path.encode("utf-8", "surrogateescape")
        candidates = [raw]
        try:
            candidates.append(literal_pattern(b"/" + b"/".join(self._resolve(path)[1])))
        except UsageError:
            pass
        before = len(self._selected)
        self._selected = [p for p in self._selected if p not in candidates]
        if len(self._selected) == before:
            raise UsageError(f"{path} is not selected")

    def _restore_selected(self, args: list[str]) -> None:
        target = self._one_arg(args, "restore-selected TARGET")
        if not self._selected:
            raise UsageError("nothing is selected (use select or find --select)")
        self._extract(target, [parse_pattern(p, MatchType.INCLUDE) for p in self._selected])

    def _restore(self, args: list[str]) -> None:
        if not 1 <= len(args) <= 2:
            raise UsageError("usage: restore TARGET [PATTERN]")
        matchers = [parse_pattern(args[1], MatchType.INCLUDE)] if len(args) == 2 else []
        self._extract(args[0], matchers)

    def _extract(self, target: str | None, matchers: list[MatchEntry]) -> None:
        assert target is not None
        result = extract_archive(
            self._archive, target, False, matchers, (self._catalog, self._catalog_reader), self._archive_name
        )
        self._print(f"restored {result.files} entries ({result.bytes} bytes) to {target}")


def format_mtime(seconds: int) -> str:
    """PBS's catalog time format (in UTC)."""
    import time

    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
    except (OverflowError, OSError, ValueError):
        return str(seconds)
