"""PBS's match patterns: ``--exclude``, ``.pxarexclude`` files and restore ``--pattern``.

The rules follow the ``pathpatterns`` crate PBS uses (git's wildmatch with path semantics):

- ``*`` and ``?`` never match ``/``; ``**`` next to slashes (``**/x``, ``a/**/b``, ``a/**``)
  spans any number of directories, including none; ``[a-z]``, ``[^a]`` and named classes
  such as ``[[:digit:]]`` match one byte; a backslash quotes the next byte.
- A leading ``!`` turns an exclude into an include (and the other way round).
- A trailing ``/`` makes the pattern match directories only.
- Paths are matched as ``/dir/file`` from the archive root. A pattern matches if it matches
  the whole path or any tail of it that starts at a component (``*.o`` and ``build/*.o``
  work at any depth); a pattern starting with ``/`` can only match the whole path.
- In a list the last matching pattern decides; what nothing matches inherits its parent
  directory's decision.

``.pxarexclude`` lines are patterns relative to the directory holding the file: a leading
``/`` anchors them there, ``#`` starts a comment, blank lines are ignored.
"""

from __future__ import annotations

import enum
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cairn.errors import UsageError

_NAMED_CLASSES = {
    b"alnum": b"a-zA-Z0-9",
    b"alpha": b"a-zA-Z",
    b"blank": b" \\t",
    b"cntrl": b"\\x00-\\x1f\\x7f",
    b"digit": b"0-9",
    b"graph": b"!-~",
    b"lower": b"a-z",
    b"print": b" -\\x7f",
    b"punct": b"!-/:-@\\[-`{-~",
    b"space": b" \\t\\n\\r\\x0b\\x0c",
    b"upper": b"A-Z",
    b"xdigit": b"0-9a-fA-F",
}


class MatchType(enum.Enum):
    INCLUDE = "include"
    EXCLUDE = "exclude"


def _byte_class(byte: int) -> bytes:
    return b"\\x%02x" % byte


def compile_glob(pattern: bytes) -> re.Pattern[bytes]:
    """Translate a wildmatch pattern (path semantics) into a byte regex for ``fullmatch``."""
    if not pattern:
        raise UsageError("empty pattern")
    if b"\0" in pattern:
        raise UsageError("pattern contains a NUL byte")
    out: list[bytes] = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == ord("\\"):
            if i + 1 == n:
                raise UsageError(f"trailing backslash in pattern {_show(pattern)}")
            out.append(re.escape(pattern[i + 1 : i + 2]))
            i += 2
        elif c == ord("?"):
            out.append(b"[^/]")
            i += 1
        elif c == ord("*"):
            j = i
            while j < n and pattern[j] == ord("*"):
                j += 1
            double = j - i >= 2
            at_start = i == 0 or pattern[i - 1] == ord("/")
            at_end = j == n or pattern[j] == ord("/")
            if double and at_start and at_end:
                if j < n:  # "**/": any number of whole directories, including none
                    out.append(b"(?:.*/)?")
                    j += 1
                else:
                    out.append(b".*")
            else:
                out.append(b"[^/]*")
            i = j
        elif c == ord("["):
            regex, i = _compile_class(pattern, i)
            out.append(regex)
        else:
            out.append(re.escape(pattern[i : i + 1]))
            i += 1
    return re.compile(b"".join(out), re.DOTALL)


def _compile_class(pattern: bytes, begin: int) -> tuple[bytes, int]:
    i = begin + 1
    negated = i < len(pattern) and pattern[i] == ord("^")
    if negated:
        i += 1
    parts: list[bytes] = []
    previous: int | None = None
    while True:
        if i >= len(pattern):
            raise UsageError(f"unclosed character class in pattern {_show(pattern)}")
        c = pattern[i]
        new_previous: int | None = None
        if c == ord("]"):
            break
        if c == ord("[") and pattern.startswith(b"[:", i):
            close = pattern.find(b":]", i + 2)
            name = pattern[i + 2 : close] if close > 0 else b""
            if name not in _NAMED_CLASSES:
                raise UsageError(f"malformed character class in pattern {_show(pattern)}")
            parts.append(_NAMED_CLASSES[name])
            i = close + 2
            previous = None
            continue
        if c == ord("\\"):
            i += 1
            if i >= len(pattern):
                raise UsageError(f"trailing backslash in pattern {_show(pattern)}")
            c = pattern[i]
            parts.append(_byte_class(c))
            new_previous = c
        elif c == ord("-") and previous is not None and i + 1 < len(pattern) and pattern[i + 1] != ord("]"):
            i += 1
            end = pattern[i]
            if end == ord("\\") and i + 1 < len(pattern):
                i += 1
                end = pattern[i]
            parts.pop()
            low, high = sorted((previous, end))
            parts.append(_byte_class(low) + b"-" + _byte_class(high))
        else:
            parts.append(_byte_class(c))
            new_previous = c
        previous = new_previous
        i += 1
    body = b"".join(parts)
    if negated:
        return b"[^/" + body + b"]", i + 1
    return (b"[" + body + b"]" if body else b"(?!)"), i + 1


def _show(pattern: bytes) -> str:
    return repr(pattern.decode("utf-8", "backslashreplace"))


@dataclass(frozen=True)
class MatchEntry:
    """One include or exclude pattern."""

    text: bytes  # the pattern without '!' and trailing slashes
    match_type: MatchType
    directories_only: bool = False
    anchored: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "_regex", compile_glob(self.text))

    def matches(self, path: bytes, mode: int) -> bool:
        """Does this pattern match ``path`` (``/a/b``) of a file with ``mode``?"""
        if self.directories_only and not stat.S_ISDIR(mode):
            return False
        regex: re.Pattern[bytes] = self._regex  # type: ignore[attr-defined]
        if regex.fullmatch(path):
            return True
        if self.anchored:
            return False
        start = path.find(b"/")
        while start >= 0:
            if regex.fullmatch(path, start + 1):
                return True
            start = path.find(b"/", start + 1)
        return False

    def as_line(self) -> bytes:
        """The pattern as a ``.pxarexclude`` line (how PBS records CLI excludes)."""
        prefix = b"!" if self.match_type is MatchType.INCLUDE else b""
        suffix = b"/" if self.directories_only and not self.text.endswith(b"/") else b""
        return prefix + self.text + suffix


def parse_pattern(
    text: bytes | str, default: MatchType, *, anchored: bool = False
) -> MatchEntry:
    """Parse one pattern: a leading ``!`` inverts ``default``, a trailing ``/`` means dirs only."""
    raw = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    match_type = default
    if raw.startswith(b"!"):
        raw = raw[1:]
        match_type = MatchType.INCLUDE if default is MatchType.EXCLUDE else MatchType.EXCLUDE
    if not raw:
        raise UsageError("empty pattern")
    stripped = raw.rstrip(b"/")
    directories_only = stripped != raw
    if not stripped:
        stripped = b"/"
    return MatchEntry(stripped, match_type, directories_only, anchored)


def parse_pxarexclude(content: bytes, directory: bytes, warn: Callable[[str], None]) -> list[MatchEntry]:
    """The patterns of a ``.pxarexclude`` file in ``directory`` (``/a/b``, ``/`` for the root)."""
    base = directory.rstrip(b"/")
    entries = []
    for line in content.split(b"\n"):
        line = line.strip(b" \t\r\n\x0b\x0c")
        if not line or line.startswith(b"#"):
            continue
        anchored = False
        if line.startswith(b"/"):
            line, match_type, anchored = base + line, MatchType.EXCLUDE, True
        elif line.startswith(b"!/"):
            line, match_type, anchored = base + line[1:], MatchType.INCLUDE, True
        elif line.startswith(b"!"):
            line, match_type = line[1:], MatchType.INCLUDE
        else:
            match_type = MatchType.EXCLUDE
        try:
            entries.append(parse_pattern(line, match_type, anchored=anchored) if line else None)
        except UsageError as err:
            warn(f"bad pattern in {(directory or b'/').decode('utf-8', 'backslashreplace')}/.pxarexclude: {err}")
    return [entry for entry in entries if entry is not None]


def match(patterns: Sequence[MatchEntry], path: bytes, mode: int) -> MatchType | None:
    """The decision of the last pattern matching ``path``, or None if none does."""
    for entry in reversed(patterns):
        if entry.matches(path, mode):
            return entry.match_type
    return None
