"""Helpers for steps that build or walk one object per item, a million at a time."""

from __future__ import annotations

import contextlib
import gc
from array import array
from collections.abc import Iterable, Iterator


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection while a million small objects are built: each full
    collection would walk all of them again (a third of the time of such a step). Objects
    freed meanwhile go by reference counting as usual; cycles wait for the next collection."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class IndexQueue:
    """Item indices waiting to run, first in first out, 8 bytes each in one array (a deque
    of a million ints holds a million int objects: ~36 bytes each)."""

    __slots__ = ("_data", "_head")
    COMPACT = 1 << 16  # drop the taken front once it is this long and half the array

    def __init__(self, indices: Iterable[int] = ()) -> None:
        self._data = array("q", indices)
        self._head = 0

    def __len__(self) -> int:
        return len(self._data) - self._head

    def append(self, index: int) -> None:
        self._data.append(index)

    def take(self, n: int) -> list[int]:
        """The first ``n`` indices (fewer if fewer wait), removed from the queue."""
        end = min(self._head + max(n, 0), len(self._data))
        taken = self._data[self._head : end].tolist()
        self._head = end
        if self._head >= self.COMPACT and 2 * self._head >= len(self._data):
            del self._data[: self._head]
            self._head = 0
        return taken
