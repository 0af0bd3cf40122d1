"""The goodbye table: the per-directory lookup index at the end of every pxar directory.

A directory ends with one GOODBYE item holding ``(hash, offset, size)`` triples, one per
child, followed by a tail triple. The child triples are sorted by the SipHash-2-4 of the
child's name and then laid out as an implicit binary search tree (children of slot ``i`` at
``2i+1`` and ``2i+2``), the same permutation casync and pxar use; a reader finds a name by
walking down from slot 0 without reading the whole table. Offsets count backwards from the
start of the GOODBYE item to the child's FILENAME header; the tail's offset counts back to
the directory's own start and its size repeats the size of the GOODBYE item.
"""

import struct
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator

from siphash24 import siphash24

from .constants import (
    GOODBYE_ITEM_SIZE,
    HASH_KEY_1,
    HASH_KEY_2,
    HEADER_SIZE,
    PXAR_GOODBYE,
    PXAR_GOODBYE_TAIL_MARKER,
)

_HASH_KEY = struct.pack("<QQ", HASH_KEY_1, HASH_KEY_2)
_ITEM = struct.Struct("<QQQ")
_U64_MASK = (1 << 64) - 1


def hash_filename(name: bytes) -> int:
    """SipHash-2-4 of a file name under pxar's key, as an unsigned 64-bit integer."""
    return siphash24(name, key=_HASH_KEY).intdigest() & _U64_MASK  # intdigest is signed


def bst_permutation(count: int) -> list[int]:
    """Return ``perm`` with ``perm[slot] = rank``: which sorted element goes to which slot.

    This is the layout of pxar's ``binary_tree_array::copy`` (from casync's camakebst.c):
    a complete binary tree in heap order whose in-order walk visits the ranks ascending.
    """
    perm = [0] * count
    if count == 0:
        return perm
    # Each pending subtree: (element count, first rank, height exponent, slot).
    pending = [(count, 0, count.bit_length() - 1, 0)]
    while pending:
        n, first, exp, slot = pending.pop()
        full = 1 << exp
        threshold = full + (full >> 1) - 1
        left = full - 1 if n > threshold else full - 1 - (threshold - n)
        perm[slot] = first + left
        if left > 0:
            pending.append((left, first, exp - 1, 2 * slot + 1))
        if left + 1 < n:
            pending.append((n - left - 1, first + left + 1, exp - 1, 2 * slot + 2))
    return perm


def bst_find(count: int, hash_at: Callable[[int], int], wanted: int) -> Iterator[int]:
    """Yield every slot whose hash equals ``wanted`` in a table laid out by ``bst_permutation``.

    Names may collide on their 64-bit hash, so the caller checks each candidate's real name;
    equal hashes can sit in either subtree of a match, hence both are searched.
    """
    stack = [0]
    while stack:
        slot = stack.pop()
        while slot < count:
            current = hash_at(slot)
            if wanted < current:
                slot = 2 * slot + 1
            elif wanted > current:
                slot = 2 * slot + 2
            else:
                yield slot
                stack.append(2 * slot + 2)
                slot = 2 * slot + 1


def unpack_item(data: bytes | memoryview, at: int = 0) -> tuple[int, int, int]:
    """Decode one ``(hash, offset, size)`` triple."""
    return _ITEM.unpack_from(data, at)


def iter_items(data: bytes) -> Iterator[tuple[int, int, int]]:
    """Decode consecutive triples (``len(data)`` must be a multiple of 24)."""
    return _ITEM.iter_unpack(data)


def hashes_in_table_order(hashes: Iterable[int]) -> list[int]:
    """The hash column a correct goodbye table has for children with these name hashes."""
    ranked = sorted(hashes)
    return [ranked[rank] for rank in bst_permutation(len(ranked))]


def encode_goodbye(
    children: array, goodbye_offset: int, directory_offset: int
) -> bytes:
    """Build a whole GOODBYE item (header, ordered child triples, tail).

    ``children`` is a flat ``array('Q')`` of ``hash, absolute FILENAME offset, size``
    triples in any order; ``goodbye_offset`` is where this item starts in the archive and
    ``directory_offset`` where the directory itself starts (its ENTRY, or 0 for the root).
    Equal hashes are ordered by offset so the output is deterministic.
    """
    count = len(children) // 3
    # Offsets are unique, so sorting the triples orders equal hashes by offset.
    ranked = sorted(zip(children[0::3], children[1::3], children[2::3]))
    full_size = HEADER_SIZE + GOODBYE_ITEM_SIZE * (count + 1)
    table = array("Q", (PXAR_GOODBYE, full_size))
    for rank in bst_permutation(count):
        name_hash, offset, size = ranked[rank]
        table.extend((name_hash, goodbye_offset - offset, size))
    table.extend((PXAR_GOODBYE_TAIL_MARKER, goodbye_offset - directory_offset, full_size))
    if sys.byteorder == "big":
        table.byteswap()
    return table.tobytes()
