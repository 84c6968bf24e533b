"""Values worked out once per rule-file object (a condition, a band).

Rule-file models are pydantic objects, hashed by nothing cheap; what the
engine derives from one (its parsed cut points, its compiled decider, its
content as a key) is kept by the object's identity. Each entry holds the
object itself, so its identity cannot be reused by another object while the
entry is kept; a cache that grows past its limit starts afresh.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["ByIdentity"]

K = TypeVar("K")
V = TypeVar("V")


class ByIdentity(Generic[K, V]):
    """A cache of one value per object (and tag).

    Args:
        limit: How many entries to keep before starting afresh.
    """

    def __init__(self, limit: int = 4096) -> None:
        self._entries: dict[int, tuple[K, Hashable, V]] = {}
        self._limit = limit

    def get(self, obj: K, make: Callable[[K], V], tag: Hashable = None) -> V:
        """The value for ``obj``, made with ``make(obj)`` the first time.

        ``tag`` tells apart values of one object made in different settings
        (a condition's cut points in one catalogue's unit or another's).
        """
        hit = self._entries.get(id(obj))
        if hit is None or hit[0] is not obj or hit[1] != tag:
            if len(self._entries) >= self._limit:
                self._entries.clear()
            hit = self._entries[id(obj)] = (obj, tag, make(obj))
        return hit[2]
