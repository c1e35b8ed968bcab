"""host-local's on-disk reservations, byte-compatible with the Go plugin's ``backend/disk``.

Layout of ``<dataDir>/<network>/`` (so Go's host-local and ours can share it)::

    lock                  flock(2) mutex, opened as go-filemutex opens it
    10.1.2.5              one file per reserved address, "<containerID>\\r\\n<ifname>"
    2001:db8::5           IPv6 names are the compressed form (Go's net.IP.String())
    last_reserved_ip.0    the address last reserved for range set 0 (round-robin cursor)

Every method that reads or changes reservations expects the caller to hold
:meth:`Store.locked`; Go's host-local takes the same flock around each of its
steps, so the two never interleave inside a step.

Damage (issue 9's corruption campaign): a reservation is its *name*, so an
entry named after an address keeps that address taken whatever it holds or
is (garbage, a directory, a symlink, unreadable); it is never handed out
twice. Files are read only as regular files (unlike Go, a symlink is never
followed), so such an entry names no owner (:attr:`Reservation.owner` is
``None``) and DEL cannot claim it; GC decides (``plugins/ipam/host_local``).
The cursor and the lock hold nothing that matters beyond their existence:
an unusable one is replaced (a symlink itself, never its target).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from pycni.fsutil import is_open_at, read_state, remove, sweep, write_atomic
from pycni.ipam.config import parse_ip
from pycni.spec import CNIError, ErrorCode
from pycni.spec.result import IPAddress
from pycni.spec.validate import validate_container_id, validate_interface_name

DEFAULT_DATA_DIR = "/var/lib/cni/networks"
LOCK_NAME = "lock"
LAST_RESERVED_PREFIX = "last_reserved_ip."
LINE_BREAK = "\r\n"
LOCK_MODE = 0o750  # go-filemutex creates its file with 0750 ("mkdirPerm")
LOCK_ATTEMPTS = 10
# What opening the lock meets when something unusable sits at its path: a symlink (O_NOFOLLOW),
# a directory (O_CREAT), a file this process may not open.
UNUSABLE_LOCK = (errno.ELOOP, errno.EISDIR, errno.EACCES, errno.EPERM)


def io_error(action: str, path: str, exc: OSError) -> CNIError:
    return CNIError(ErrorCode.IO_FAILURE, f"host-local: {action} {path}: {exc.strerror or exc}")


def owner_key(container_id: str, ifname: str) -> str:
    """The content of a reservation file (Go trims the ID, not the interface name)."""
    return container_id.strip() + LINE_BREAK + ifname


@dataclass(frozen=True)
class Reservation:
    """One entry named after an address, with its trimmed content (``None``: not a readable regular file)."""

    ip: IPAddress
    path: str
    content: str | None

    @property
    def owner(self) -> tuple[str, str | None] | None:
        """``(container ID, ifname)`` the content names, ifname ``None`` for pre-0.7 ID-only files;
        ``None`` when it names no attachment (garbage, empty, unreadable, not a file)."""
        if self.content is None:
            return None
        container_id, sep, ifname = self.content.partition(LINE_BREAK)
        try:
            validate_container_id(container_id)
            if sep:
                validate_interface_name(ifname)
        except CNIError:
            return None
        return container_id, (ifname if sep else None)


def _content(path: str) -> str | None:
    """A reservation file's trimmed content (Go trims it too); ``None`` unless a readable regular file."""
    try:
        return read_state(path).decode("utf-8", "surrogateescape").strip()
    except OSError:
        return None


def _replace_lock(path: str, why: OSError) -> None:
    try:
        write_atomic(path, b"", mode=LOCK_MODE, replace_directory=True)
    except OSError as exc:
        raise io_error(f"cannot open lock file ({why.strerror}) nor replace", path, exc) from None


def _ip_of_name(name: str) -> IPAddress | None:
    if "%" in name:
        return None
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


class Store:
    """The reservation directory of one network."""

    def __init__(self, network: str, data_dir: str = "") -> None:
        self.dir = os.path.join(data_dir or DEFAULT_DATA_DIR, network)
        self._depth = 0

    # -- the directory and its lock ------------------------------------------

    def exists(self) -> bool:
        return os.path.isdir(self.dir)

    def create(self) -> None:
        """``mkdir -p`` the directory with mode 0755, as Go's ``disk.New`` does."""
        try:
            os.makedirs(self.dir, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise io_error("cannot create data directory", self.dir, exc) from None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the exclusive flock on ``<dir>/lock`` (re-entrant within this object)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        fd = self._lock_fd(os.path.join(self.dir, LOCK_NAME))
        try:
            self._depth = 1
            yield
        finally:
            self._depth = 0
            os.close(fd)  # closing the only descriptor drops the flock

    @staticmethod
    def _lock_fd(path: str) -> int:
        """A descriptor holding the flock on the lock file at ``path``.

        Something unusable at the path (a symlink, whose target go-filemutex
        would create, a directory, a FIFO, an unreadable file) is replaced by
        an empty file; after flock the descriptor must still be the file at
        the path, else another process replaced it meanwhile and we lock that.
        """
        for _ in range(LOCK_ATTEMPTS):
            try:
                fd = os.open(path, os.O_CREAT | os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, LOCK_MODE)
            except OSError as exc:
                if exc.errno not in UNUSABLE_LOCK:
                    raise io_error("cannot open lock file", path, exc) from None
                _replace_lock(path, exc)
                continue
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    _replace_lock(path, OSError(errno.EISDIR, "not a regular file"))
                    continue
                fcntl.flock(fd, fcntl.LOCK_EX)
                if is_open_at(fd, path):
                    locked, fd = fd, -1
                    return locked
            finally:
                if fd >= 0:
                    os.close(fd)
        raise CNIError(ErrorCode.IO_FAILURE, f"host-local: cannot lock {path}: it keeps being replaced")

    def _require_lock(self) -> None:
        if not self._depth:
            raise RuntimeError("host-local store used without holding its lock")

    # -- reservations --------------------------------------------------------

    def path_of(self, ip: IPAddress) -> str:
        return os.path.join(self.dir, str(ip))

    def reserve(self, ip: IPAddress, container_id: str, ifname: str, range_id: str) -> bool:
        """Claim ``ip`` (O_CREAT|O_EXCL) and move the set's round-robin cursor; False if already taken."""
        self._require_lock()
        path = self.path_of(ip)
        try:
            if not _create_whole(path, owner_key(container_id, ifname).encode()):
                return False
        except OSError as exc:
            raise io_error("cannot create", path, exc) from None
        try:
            last = os.path.join(self.dir, LAST_RESERVED_PREFIX + range_id)
            try:
                write_atomic(last, str(ip).encode(), mode=0o600, replace_directory=True)
            except OSError as exc:
                raise io_error("cannot write", last, exc) from None
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        return True

    def sweep(self) -> None:
        """Remove the temporaries of writers killed in this directory (under the lock, none is live)."""
        self._require_lock()
        sweep(self.dir)

    def release(self, ip: IPAddress) -> None:
        """Drop one reservation this call made (rolling back a failed ADD)."""
        self._require_lock()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path_of(ip))

    def last_reserved(self, range_id: str) -> IPAddress | None:
        """The set's round-robin cursor; absent or unreadable means "start at the beginning"."""
        self._require_lock()
        try:
            text = read_state(os.path.join(self.dir, LAST_RESERVED_PREFIX + range_id)).decode("ascii")
        except (OSError, UnicodeDecodeError):
            return None
        return parse_ip(text)

    def reserved_ips(self) -> set[IPAddress]:
        """Every address that has a reservation file, by name only (cheap: no file is read)."""
        self._require_lock()
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return set()
        except OSError as exc:
            raise io_error("cannot list", self.dir, exc) from None
        return {ip for ip in map(_ip_of_name, names) if ip is not None}

    def _owned_files(self) -> Iterator[tuple[str, str]]:
        """``(path, trimmed content)`` of every file but the lock and the cursors.

        Go walks the directory tree the same way (``filepath.Walk``) and skips
        what it cannot read; skipping ``lock`` and ``last_reserved_ip.*`` keeps
        a container ID that looks like an address from matching a cursor.
        Unlike Go, a symlink is not read through.
        """
        for root, _dirs, files in os.walk(self.dir):
            for name in sorted(files):
                if name == LOCK_NAME or name.startswith(LAST_RESERVED_PREFIX):
                    continue
                path = os.path.join(root, name)
                content = _content(path)
                if content is not None:
                    yield path, content

    def ips_of(self, container_id: str, ifname: str) -> list[IPAddress]:
        """Addresses held by this attachment, or by this container in the ID-only legacy format."""
        self._require_lock()
        keys = (owner_key(container_id, ifname), container_id.strip())
        found = []
        for path, content in self._owned_files():
            ip = _ip_of_name(os.path.basename(path))
            if content in keys and ip is not None:
                found.append(ip)
        return found

    def find(self, container_id: str, ifname: str) -> bool:
        """Whether this attachment holds anything (CHECK); falls back to the ID-only legacy format."""
        self._require_lock()
        key = owner_key(container_id, ifname)
        contents = [content for _path, content in self._owned_files()]
        return key in contents or container_id.strip() in contents

    def release_by_id(self, container_id: str, ifname: str) -> int:
        """Remove every file of this attachment (DEL); ID-only legacy files only if none matched.

        Errors on single files are skipped so that as much as possible is
        released, as the reference does; returns how many files were removed.
        """
        self._require_lock()
        removed = self._remove_matching(owner_key(container_id, ifname))
        if not removed:
            removed = self._remove_matching(container_id.strip())
        return removed

    def _remove_matching(self, key: str) -> int:
        removed = 0
        for path, content in self._owned_files():
            if content == key:
                try:
                    os.unlink(path)
                except OSError:
                    continue
                removed += 1
        return removed

    def reservations(self) -> list[Reservation]:
        """Every entry named after an address, whatever it is, with its content if readable."""
        self._require_lock()
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise io_error("cannot list", self.dir, exc) from None
        found = []
        for name in names:
            ip = _ip_of_name(name)
            if ip is not None:
                path = os.path.join(self.dir, name)
                found.append(Reservation(ip, path, _content(path)))
        return found

    def discard(self, reservation: Reservation) -> str | None:
        """Remove one reservation, whatever it became (GC); an error message instead of raising, so GC carries on."""
        self._require_lock()
        try:
            remove(reservation.path)
        except OSError as exc:
            return f"cannot remove {reservation.path}: {exc.strerror or exc}"
        return None

    def check_usable(self) -> None:
        """Raise ``OSError`` unless reservations can be written here (STATUS), without creating anything."""
        directory = self.dir
        while not os.path.isdir(directory):
            if os.path.lexists(directory):
                raise OSError(errno.ENOTDIR, "not a directory", directory)
            parent = os.path.dirname(directory)
            if parent == directory:
                break
            directory = parent
        if not os.access(directory, os.W_OK | os.X_OK):  # also false on a read-only file system
            raise OSError(errno.EACCES, "not writable", directory)


def _create_whole(path: str, data: bytes) -> bool:
    """Create ``path`` holding ``data``, or nothing at all (False if it exists): never an empty file.

    A reservation created empty and written after is an address nobody owns
    if the writer is killed in between (DEL finds it by content), so the
    content goes into an unnamed file (``O_TMPFILE``) that is linked into
    place whole; link fails if the name is taken, as O_EXCL does.
    """
    directory, name = os.path.split(path)
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
        return _create_then_write(path, data)  # a filesystem without O_TMPFILE
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _write_all(fd, data)
        try:
            # linkat(AT_SYMLINK_FOLLOW) of the descriptor's /proc link (a dir_fd makes os.link use linkat)
            os.link(f"/proc/self/fd/{fd}", name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except FileExistsError:
            return False
    finally:
        os.close(fd)
        os.close(dir_fd)
    return True


def _create_then_write(path: str, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return False
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)
    return True


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]
    os.fsync(fd)
