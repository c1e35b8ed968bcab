"""The apply/resync discipline every driver shares.

A driver keeps a :class:`~pycni.dataplane.delta.DeltaTracker`: its managers
set the desired side; a *resync* dumps what the kernel holds of the driver's
own objects into the actual side; an *apply* writes the pending delta and
records each write on the actual side, so the next apply, with nothing new
desired, sends nothing. Between resyncs the actual side is what the driver
last saw or wrote; a periodic :meth:`Reconciler.resync` repairs drift (an
object deleted or changed by hand), and a write that meets an object the
last dump did not show (EEXIST) triggers one inline resync and a retry.

A write the kernel refuses is logged, counted and left pending: the next
apply tries it again. Nothing here raises for one entry; an exception means
the driver could not talk to the kernel at all (the dump failed).

Logging: one DEBUG line per entry written; one INFO line per apply that
changed something or failed; nothing above DEBUG for an apply with nothing to do.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

from pycni.dataplane.delta import DeltaTracker
from pycni.dataplane.stats import ApplyResult, Counters
from pycni.net.errors import NetError

if TYPE_CHECKING:
    from pyroute2 import IPRoute

K = TypeVar("K")
V = TypeVar("V")
_MAX_LOGGED_ERRORS = 5


class Outcome(enum.Enum):
    """What one write did (or why it did nothing)."""

    ADDED = "added"
    UPDATED = "updated"
    REMOVED = "removed"
    GONE = "gone"  # a deletion found nothing left to delete
    CONFLICT = "conflict"  # an object pycni does not own holds the key: not written
    WAITING = "waiting"  # the link is missing or down: retried when it is back
    RACED = "raced"  # the kernel holds something the last dump did not show: resync and retry


class Reconciler(Generic[K, V]):
    """Desired state in, minimal netlink writes out. Subclasses supply the dump and the writes.

    ``ipr`` is a pyroute2 socket bound to the namespace to manage (see
    :func:`pycni.net.netns.iproute`); the driver does not close it. Public
    methods take the driver's lock, so a timer's resync and an event's apply
    may come from different threads; a socket shared between drivers needs
    the caller's own lock, as pyroute2 sockets are not thread-safe.
    """

    kind: ClassVar[str] = "objects"
    deletions_first: ClassVar[bool] = True

    def __init__(self, ipr: IPRoute, target: str, log: logging.Logger) -> None:
        self._ipr = ipr
        self.target = target
        self._log = log
        self._tracker: DeltaTracker[K, V] = DeltaTracker()
        self._lock = threading.RLock()
        self._resync_needed = True
        self._raced = False
        self.totals = Counters()

    # -- public ---------------------------------------------------------------

    def queue_resync(self) -> None:
        """Re-read the kernel on the next apply (after an event that may have changed it behind our back)."""
        with self._lock:
            self._resync_needed = True

    def link_changed(self, name: str, index: int = 0) -> None:
        """Link ``name`` (index ``index``, if known) was added, removed, renamed, or went up or down.

        Drivers whose entries depend on links override this; the rest ignore it.
        """

    def resync(self) -> ApplyResult:
        """Re-read the kernel's objects of this driver, then apply the delta: drift repaired, nothing else written."""
        with self._lock:
            self._resync_needed = True
            return self.apply()

    def apply(self, *, updates: bool = True, deletions: bool = True) -> ApplyResult:
        """Write the pending delta (only creations/updates, or only deletions, if asked).

        The first apply of a driver resyncs first: until it has read the
        kernel it cannot know what is already there.
        """
        with self._lock:
            started = time.monotonic()
            result = ApplyResult(self.kind, self.target)
            failures: dict[K, str] = {}
            if self._resync_needed:
                self._resync(result)
            self._prepare(result)
            self._raced = False
            self._run(result, failures, updates, deletions)
            if self._raced and not result.resynced:
                self._log.debug(
                    "%s %s: the kernel held what the last dump did not show; resyncing", self.kind, self.target
                )
                self._resync(result)
                self._prepare(result)
                self._run(result, failures, updates, deletions)
            result.failed = len(failures)
            result.errors = list(failures.values())
            result.waiting = self._waiting_count()
            result.conflicts = self._conflict_count()
            pending = len(self._tracker.pending_updates)
            result.desired = self._tracker.desired_len()
            result.unchanged = max(0, result.desired - pending - result.added - result.updated)
            result.seconds = time.monotonic() - started
            self.totals.add(result)
            self._report(result)
            return result

    @property
    def in_sync(self) -> bool:
        """Nothing pending as far as the driver knows (conflicts and waiting entries aside)."""
        with self._lock:
            return self._pending_work() == 0

    # -- the template ---------------------------------------------------------

    def _resync(self, result: ApplyResult) -> None:
        self._load()
        self._resync_needed = False
        result.resynced = True

    def _run(self, result: ApplyResult, failures: dict[K, str], updates: bool, deletions: bool) -> None:
        steps = [(deletions, self._delete_pending), (updates, self._write_pending)]
        if not self.deletions_first:
            steps.reverse()
        for wanted, step in steps:
            if wanted:
                step(result, failures)

    def _delete_pending(self, result: ApplyResult, failures: dict[K, str]) -> None:
        for key, value in self._tracker.pending_deletions:
            if not self._may_delete(key, value):
                continue
            result.writes += 1
            try:
                outcome = self._remove(key, value)
            except NetError as exc:
                failures[key] = str(exc)
                continue
            failures.pop(key, None)
            self._tracker.deleted(key)
            if outcome is Outcome.REMOVED:
                result.removed += 1
                self._log.debug("%s %s: removed %s", self.kind, self.target, self._describe(key, value))
            else:
                self._log.debug("%s %s: %s was already gone", self.kind, self.target, self._describe(key, value))

    def _write_pending(self, result: ApplyResult, failures: dict[K, str]) -> None:
        for key, value in self._tracker.pending_updates:
            if not self._may_write(key, value):
                continue
            result.writes += 1
            try:
                outcome = self._write(key, value)
            except NetError as exc:
                failures[key] = str(exc)
                continue
            failures.pop(key, None)
            if outcome is Outcome.RACED:
                self._raced = True
            elif outcome in (Outcome.ADDED, Outcome.UPDATED):
                self._tracker.applied(key)
                if outcome is Outcome.ADDED:
                    result.added += 1
                else:
                    result.updated += 1
                self._log.debug("%s %s: %s %s", self.kind, self.target, outcome.value, self._describe(key, value))

    def _report(self, result: ApplyResult) -> None:
        if result.failed:
            shown = "; ".join(result.errors[:_MAX_LOGGED_ERRORS])
            more = f" (and {result.failed - _MAX_LOGGED_ERRORS} more)" if result.failed > _MAX_LOGGED_ERRORS else ""
            self._log.warning("%s; failed: %s%s; retried on the next apply", result.summary(), shown, more)
        elif result.changed:
            self._log.info("%s", result.summary())
        else:
            self._log.debug("%s", result.summary())

    def _pending_work(self) -> int:
        return sum(1 for key, value in self._tracker.pending_updates if self._may_write(key, value)) + sum(
            1 for key, value in self._tracker.pending_deletions if self._may_delete(key, value)
        )

    # -- hooks ----------------------------------------------------------------

    def _load(self) -> None:
        """Dump the kernel's objects of this driver into the tracker's actual side."""
        raise NotImplementedError

    def _prepare(self, result: ApplyResult) -> None:
        """Before writing: resolve what waits on links (no writes here)."""

    def _may_write(self, key: K, value: V) -> bool:
        """``False`` to hold a pending update back this time (a conflict): it stays pending, unwritten."""
        return True

    def _may_delete(self, key: K, value: V) -> bool:
        return True

    def _write(self, key: K, value: V) -> Outcome:
        """Create or overwrite ``key``; a refusal raises :class:`NetError`."""
        raise NotImplementedError

    def _remove(self, key: K, value: V) -> Outcome:
        """Delete ``key`` (``value`` is what the kernel holds); REMOVED or GONE."""
        raise NotImplementedError

    def _waiting_count(self) -> int:
        return 0

    def _conflict_count(self) -> int:
        return 0

    def _describe(self, key: K, value: V) -> str:
        return f"{key} -> {value}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.target}>"
