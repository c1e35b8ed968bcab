"""What a datastore call can fail with: one base, a subclass per outcome a caller acts on.

Every error is a :class:`~pycni.spec.errors.CNIError`, so one that escapes to
a plugin or the CLI becomes spec JSON without translation. The codes say what
the runtime should do:

* 5 (I/O failure): the store's file cannot be used as it is (:class:`Unusable`:
  damaged, not a datastore, a newer schema, a symlink, read-only for a write);
  retrying cannot help until a person acts, and the message says how;
* 11 (try again later): the store is away (:class:`Unavailable`), the history
  asked for is gone (:class:`Compacted`, re-list), or a compare-and-set lost to
  another writer (:class:`AlreadyExists`, :class:`Conflict`): a retry re-reads
  and can succeed;
* 7 (invalid config): a key, value or TTL the store can never accept
  (:class:`InvalidArgument`), which usually comes from a configuration;
* 999 (internal): :class:`NotFound` escaping to the edge means the layer above
  forgot a case (a DEL of something already gone is success there, not an error).
"""

from __future__ import annotations

from pycni.datastore.model import KeyValue
from pycni.spec.errors import CNIError, ErrorCode


class DatastoreError(CNIError):
    """Base of every datastore failure; ``code`` is the CNI code it maps to at the edge."""

    code_for_class: int = ErrorCode.INTERNAL

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(self.code_for_class, message, details)


class Unavailable(DatastoreError):
    """The store cannot be reached or cannot serve now; keep the dataplane as it is and retry."""

    code_for_class = ErrorCode.TRY_AGAIN_LATER


class Unusable(Unavailable):
    """The store's file is there but cannot be used as it is; the message names it and says what to do.

    A subclass of :class:`Unavailable` because a running agent treats it as an
    outage (the dataplane stays, it reports and retries: the file may be
    restored under it), while a command or an agent starting up gives up at
    once with the message instead of waiting for something only a person can do.
    """

    code_for_class = ErrorCode.IO_FAILURE


class Compacted(Unavailable):
    """A watch asked for revisions the store no longer keeps: re-list, then watch from that list's revision.

    A subclass of :class:`Unavailable` because a caller that only re-lists on
    Unavailable does the right thing for it too.
    """

    def __init__(self, message: str, since_revision: int, compact_revision: int) -> None:
        super().__init__(message)
        self.since_revision = since_revision
        self.compact_revision = compact_revision


class AlreadyExists(DatastoreError):
    """``create`` found the key taken; ``existing`` is what holds it (None if the store did not say)."""

    code_for_class = ErrorCode.TRY_AGAIN_LATER

    def __init__(self, message: str, existing: KeyValue | None = None) -> None:
        super().__init__(message)
        self.existing = existing


class Conflict(DatastoreError):
    """The key's mod_revision is no longer the one given: another writer was first. Re-read and retry."""

    code_for_class = ErrorCode.TRY_AGAIN_LATER

    def __init__(self, message: str, current: KeyValue | None = None) -> None:
        super().__init__(message)
        self.current = current


class NotFound(DatastoreError):
    """``update`` or ``delete`` of a key that does not exist (or expired)."""

    code_for_class = ErrorCode.INTERNAL


class InvalidArgument(DatastoreError):
    """A key, value, TTL or revision no backend accepts; the message says which and why."""

    code_for_class = ErrorCode.INVALID_NETWORK_CONFIG


# One wording for every backend, so a message reads the same whatever stores the key.


def already_exists(key: str, existing: KeyValue | None) -> AlreadyExists:
    held = f" (revision {existing.mod_revision})" if existing is not None else ""
    return AlreadyExists(
        f"{key} already exists{held}: another writer created it; read it, or update it at its revision", existing
    )


def conflict(key: str, given: int, current: KeyValue) -> Conflict:
    return Conflict(
        f"{key} changed: its revision is {current.mod_revision}, not {given}; another writer was first, "
        "re-read it and retry",
        current,
    )


def not_found(key: str) -> NotFound:
    return NotFound(f"{key} does not exist (never written, deleted, or its TTL ran out)")
