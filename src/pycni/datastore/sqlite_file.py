"""What is at a datastore path, checked before sqlite touches it: a store, nothing, or something to refuse.

sqlite opens almost anything and then acts on it: it follows a symlink and
makes its ``-wal`` and ``-shm`` files beside the target, creates the target of
a dangling one, and replays whatever ``-wal`` lies next to the file, even one
left from an older copy of the store or from another store (the WAL format
does not say which database it belongs to), which silently rolls the store
back or swaps its content. So before a connection is made:

* a symlink, a directory or another non-regular file is refused (nothing is
  created or written outside the directory given);
* a file that cannot be opened for reading is refused; one that can only be
  read is opened read-only (reads work, a write says the file is read-only);
* an empty file is a new store (nothing in it to lose); a file that does not
  start with sqlite's header, or is shorter than its header says (with no
  WAL that could hold the rest), is refused as damaged, never replaced;
* a non-empty ``-wal`` is compared with the main file: the store's revision
  and identity (``kv_meta`` ``revision`` and ``store_id``) read from the main
  file alone (``immutable=1`` ignores the WAL) and through the WAL
  (``mode=ro``, which never writes or checkpoints). A WAL only ever moves a
  store forward, so one that moves it back (stale) or names another store
  (foreign) is refused, and stays where it is for a person to look at.

Every refusal is :class:`~pycni.datastore.errors.Unusable`, naming the file
and what to do. Nothing here writes, but for one mode: sqlite gives the
``-wal`` and ``-shm`` it makes the store's permissions, so a store opened while
it was read-only leaves read-only ones that would make it read-only for good;
a writable store's own ones (this user's) get the store's mode back.

Descriptors: POSIX record locks belong to a process and a file, and closing
*any* descriptor of the file drops every lock the process holds on it
(fcntl(2)), sqlite's too. A connection whose shared lock is gone lets another
process, closing its last connection, checkpoint and delete the ``-wal`` still
in use here, and this process's later commits go to the deleted file, never
seen by anyone else. sqlite defers its own closes while a lock is held; the
descriptors opened here are deferred the same way (:func:`release`) while a
store of this process has the file open (:func:`opened`, :func:`closed`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import stat
import threading
from dataclasses import dataclass
from urllib.parse import quote

from pycni.datastore.errors import Unusable

log = logging.getLogger("pycni.datastore.sqlite")

MAGIC = b"SQLite format 3\0"
HEADER = 100
WAL_HEADER = 32
MOVE_AWAY = "restore it from a backup (with every process using it stopped), or move it away to start an empty store"


_registry = threading.Lock()
_users: dict[str, int] = {}  # a store's absolute path -> this process's open connections to it
_parked: dict[str, list[int]] = {}  # descriptors of it to close once it has none


def opened(path: str) -> None:
    """A connection of this process now holds sqlite's locks on the store at ``path``."""
    with _registry:
        key = os.path.abspath(path)
        _users[key] = _users.get(key, 0) + 1


def closed(path: str) -> None:
    """One connection to ``path`` was closed; with the last one, the descriptors kept for it are closed."""
    with _registry:
        key = os.path.abspath(path)
        _users[key] -= 1
        if _users[key]:
            return
        del _users[key]
        parked = _parked.pop(key, [])
    for fd in parked:
        os.close(fd)


def release(path: str, fd: int) -> None:
    """Close ``fd`` (a descriptor of the store at ``path``) unless that drops a lock of this process's connections."""
    with _registry:
        key = os.path.abspath(path)
        if _users.get(key):
            _parked.setdefault(key, []).append(fd)
            return
    os.close(fd)


def open_readable(path: str) -> int:
    """A descriptor of the file itself (never a symlink's target), to hand to :func:`release`."""
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)


@dataclass(frozen=True)
class FileState:
    """What :func:`inspect` found: the file's identity (None: nothing there yet) and how it may be opened."""

    identity: tuple[int, int] | None
    read_only: bool = False
    empty: bool = True


def uri(path: str, **params: str) -> str:
    """A sqlite URI for ``path`` (``?`` and ``#`` in a name are quoted), with query ``params``."""
    query = "&".join(f"{key}={value}" for key, value in params.items())
    return f"file:{quote(os.path.abspath(path))}" + (f"?{query}" if query else "")


def identity(path: str) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of what is at ``path`` itself (a symlink is not followed); None if nothing."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def inspect(path: str) -> FileState:
    """Refuse what must not be opened as the store at ``path`` (see the module docstring)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return FileState(None)
    except OSError as error:  # a parent that is not a directory, or cannot be searched: sqlite says it better
        if error.errno in (errno.ENOTDIR, errno.EACCES):
            return FileState(None)
        raise Unusable(f"cannot look at the datastore file {path}: {error.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path)
        raise Unusable(
            f"the datastore file {path} is a symlink (to {target}); the datastore does not follow symlinks, "
            f"because sqlite would make its -wal and -shm files beside the target: give the real path "
            f"({os.path.realpath(path)})"
        )
    if stat.S_ISDIR(st.st_mode):
        raise Unusable(f"the datastore file {path} is a directory: give the path of a file, or move the directory away")
    if not stat.S_ISREG(st.st_mode):
        raise Unusable(f"the datastore file {path} is not a regular file (mode {stat.filemode(st.st_mode)})")
    read_only = False
    flags = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, os.O_RDWR | flags)
    except OSError as error:
        if error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise Unusable(f"cannot open the datastore file {path}: {error.strerror}") from None
        try:
            fd = os.open(path, os.O_RDONLY | flags)
        except OSError as again:
            raise Unusable(
                f"cannot read the datastore file {path}: {again.strerror} (mode {stat.filemode(st.st_mode)}, "
                f"owner {st.st_uid}): give this user read and write access to it"
            ) from None
        read_only = True
    try:
        header = os.pread(fd, HEADER, 0)
        size = os.fstat(fd).st_size
    finally:
        release(path, fd)
    found = FileState((st.st_dev, st.st_ino), read_only, size == 0)
    if not read_only:
        check_companions(path, stat.S_IMODE(st.st_mode))
    if size == 0:
        return found
    check_header(path, header, size, wal_size(path))
    return found


def check_header(path: str, header: bytes, size: int, wal: int) -> None:
    """The main file starts as sqlite's do and is as long as its header says (unless a WAL may hold the rest)."""
    if not header.startswith(MAGIC):
        raise Unusable(
            f"the datastore file {path} is not a sqlite database (it starts with {header[:16]!r}): it is damaged "
            f"or not a pycni store; {MOVE_AWAY} (every key in it is then lost)"
        )
    if len(header) < HEADER:
        raise Unusable(f"the datastore file {path} is truncated ({size} bytes, less than a sqlite header); {MOVE_AWAY}")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    valid_count = header[24:28] == header[92:96]  # the in-header size is trusted only then (sqlite's rule)
    if valid_count and pages and size < pages * page_size and wal <= WAL_HEADER:
        raise Unusable(
            f"the datastore file {path} is truncated: its header says {pages * page_size} bytes, the file has "
            f"{size}; {MOVE_AWAY}"
        )


def check_companions(path: str, mode: int) -> None:
    """The ``-wal`` and ``-shm`` beside a writable store can be written too, or it is refused, saying so.

    sqlite makes them with the store's permissions (``mode``), so a store
    opened while it was read-only leaves read-only ones: this user's get
    ``mode`` back (their content is untouched). Checked with access(2), never
    a descriptor (see the module docstring).
    """
    for suffix in ("-wal", "-shm"):
        companion = path + suffix
        try:
            st = os.lstat(companion)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            raise Unusable(
                f"{companion} is not a regular file (mode {stat.filemode(st.st_mode)}): sqlite keeps the store's log "
                f"there; move it away with every process using {path} stopped"
            )
        if os.access(companion, os.W_OK):
            continue
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != mode:
            with contextlib.suppress(OSError):
                os.chmod(companion, mode)
            if os.access(companion, os.W_OK):
                log.warning("%s was read-only (made while %s was): given the store's mode %o", companion, path, mode)
                continue
        raise Unusable(
            f"{companion} cannot be written (mode {stat.filemode(st.st_mode)}, owner {st.st_uid}): sqlite keeps the "
            f"store's log there; make it writable like {path}, or remove it with every process using the store stopped"
        )


def wal_size(path: str) -> int:
    try:
        st = os.lstat(path + "-wal")
    except OSError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def _meta(connect_uri: str) -> tuple[int, int] | None:
    """``(revision, store_id)`` as this URI sees the store; None if it cannot tell (no tables yet, unreadable)."""
    try:
        db = sqlite3.connect(connect_uri, uri=True, timeout=1.0)
    except sqlite3.Error:
        return None
    try:
        rows = dict(db.execute("SELECT name, value FROM kv_meta WHERE name IN ('revision', 'store_id')").fetchall())
    except sqlite3.Error:
        return None
    finally:
        db.close()
    if "revision" not in rows:
        return None
    return int(rows["revision"]), int(rows.get("store_id", 0))


def check_wal(path: str) -> None:
    """Refuse a ``-wal`` that would move the store back, or that belongs to another store."""
    if wal_size(path) <= WAL_HEADER:
        return
    main = _meta(uri(path, immutable="1"))
    if main is None:
        return  # a new store whose tables are still only in its WAL: nothing to compare
    through_wal = _meta(uri(path, mode="ro"))
    if through_wal is None:
        return  # sqlite reports what is wrong when the store is opened
    (main_revision, main_id), (wal_revision, wal_id) = main, through_wal
    if main_id and wal_id and main_id != wal_id:
        raise Unusable(
            f"{path}-wal belongs to another store (store id {wal_id}, not {main_id}); sqlite would replay it over "
            f"{path} and replace its content: move {path}-wal away (the store then opens as {path} holds it)"
        )
    if wal_revision < main_revision:
        raise Unusable(
            f"{path}-wal is older than {path} (it would take the store back from revision {main_revision} to "
            f"{wal_revision}): a stale write-ahead log, e.g. left beside a restored copy; move {path}-wal away "
            f"(the store then opens at revision {main_revision})"
        )
