"""Ordered parallel map over a stream, with a bound on work in flight.

Hashing, compressing, encrypting and writing chunks happen in C code that releases the GIL,
so a thread pool keeps both cores busy while Python only orchestrates. At most
``max_inflight`` items (and their buffers) exist at once, so memory stays flat however long
the input is, and results come back in input order so indexes are written in order.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

from cairn.client import allocator

T = TypeVar("T")
R = TypeVar("R")

allocator.tune()


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], workers: int | None = None, max_inflight: int | None = None
) -> Iterator[R]:
    workers = workers or default_workers()
    max_inflight = max_inflight or workers * 2
    pending: deque[Future[R]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cairn-chunk") as pool:
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= max_inflight:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
