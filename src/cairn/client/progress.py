"""Progress bars with rate and ETA on a terminal; silence in pipes and scripts."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator, Protocol


class Progress(Protocol):
    def advance(self, amount: int) -> None: ...


class _Silent:
    def advance(self, amount: int) -> None:
        pass


class _RichBar:
    def __init__(self, progress, task) -> None:
        self._progress = progress
        self._task = task

    def advance(self, amount: int) -> None:
        self._progress.advance(self._task, amount)


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Progress]:
    """A bar on stderr when it is a terminal; otherwise an object that does nothing."""
    if not sys.stderr.isatty():
        yield _Silent()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress as RichProgress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = [
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    ]
    with RichProgress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield _RichBar(progress, task)
