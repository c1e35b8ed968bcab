"""The pure core of every reconciler: desired and actual keyed maps, and the delta between them.

Felix's ``deltatracker`` in shape: a driver tells the tracker what it wants
(the *desired* side, from its managers) and what the kernel holds (the
*actual* side, from a dump at resync and from each write it makes). The
tracker keeps, at all times,

- ``pending_updates``: keys desired but absent from actual, or present with another value;
- ``pending_deletions``: keys in actual that are not desired;

so an apply writes exactly those, and an apply with nothing pending writes
nothing. Each mutation re-checks only the keys it touches, so keeping the
delta costs O(changed), not O(table). No I/O here: drivers do that.

Values are compared with ``==`` unless an ``equal`` function is given; keys
and values must be immutable (a mutated value in either map would silently
break the delta).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class DeltaTracker(Generic[K, V]):
    """Desired vs actual state of one kind of kernel object, and what it takes to go from one to the other."""

    def __init__(self, equal: Callable[[V, V], bool] = operator.eq) -> None:
        self._equal = equal
        self._desired: dict[K, V] = {}
        self._actual: dict[K, V] = {}
        # dicts used as ordered sets: pending work is done in the order it arose.
        self._updates: dict[K, None] = {}
        self._deletions: dict[K, None] = {}

    # -- the delta --------------------------------------------------------------

    def _recheck(self, key: K) -> None:
        desired = key in self._desired
        actual = key in self._actual
        if desired and (not actual or not self._equal(self._actual[key], self._desired[key])):
            self._updates[key] = None
        else:
            self._updates.pop(key, None)
        if actual and not desired:
            self._deletions[key] = None
        else:
            self._deletions.pop(key, None)

    @property
    def pending_updates(self) -> list[tuple[K, V]]:
        """``(key, desired value)`` for every key to create or overwrite (a snapshot: safe to mutate meanwhile)."""
        return [(key, self._desired[key]) for key in self._updates]

    @property
    def pending_deletions(self) -> list[tuple[K, V]]:
        """``(key, actual value)`` for every key to remove (a snapshot)."""
        return [(key, self._actual[key]) for key in self._deletions]

    def is_pending(self, key: K) -> bool:
        return key in self._updates or key in self._deletions

    @property
    def in_sync(self) -> bool:
        return not self._updates and not self._deletions

    # -- the desired side -------------------------------------------------------

    def desired(self, key: K) -> V | None:
        return self._desired.get(key)

    def desired_items(self) -> Iterator[tuple[K, V]]:
        return iter(self._desired.items())

    def desired_len(self) -> int:
        return len(self._desired)

    def set_desired(self, key: K, value: V) -> None:
        self._desired[key] = value
        self._recheck(key)

    def delete_desired(self, key: K) -> None:
        self._desired.pop(key, None)
        self._recheck(key)

    def replace_desired(self, items: Mapping[K, V]) -> None:
        """Make ``items`` the whole desired state."""
        old = self._desired
        self._desired = dict(items)
        for key in _union(old, self._desired):
            self._recheck(key)

    # -- the actual side --------------------------------------------------------

    def actual(self, key: K) -> V | None:
        return self._actual.get(key)

    def actual_items(self) -> Iterator[tuple[K, V]]:
        return iter(self._actual.items())

    def actual_len(self) -> int:
        return len(self._actual)

    def set_actual(self, key: K, value: V) -> None:
        """The kernel holds ``value`` at ``key`` (seen in a dump or written)."""
        self._actual[key] = value
        self._recheck(key)

    def delete_actual(self, key: K) -> None:
        """The kernel holds nothing at ``key`` (deleted, or seen gone)."""
        self._actual.pop(key, None)
        self._recheck(key)

    def replace_actual(self, items: Mapping[K, V]) -> None:
        """Make ``items`` the whole actual state (a resync's dump)."""
        old = self._actual
        self._actual = dict(items)
        for key in _union(old, self._actual):
            self._recheck(key)

    # -- recording the writes of an apply ---------------------------------------

    def applied(self, key: K) -> None:
        """The pending update of ``key`` was written: the kernel now holds the desired value."""
        self.set_actual(key, self._desired[key])

    def deleted(self, key: K) -> None:
        """The pending deletion of ``key`` was done (or found already done)."""
        self.delete_actual(key)


def _union(first: Mapping[K, object], second: Mapping[K, object]) -> Iterable[K]:
    yield from first
    for key in second:
        if key not in first:
            yield key
