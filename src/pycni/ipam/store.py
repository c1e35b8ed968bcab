"""host-local's on-disk reservations, byte-compatible with the Go plugin's ``backend/disk``.

Layout of ``<dataDir>/<network>/`` (so Go's host-local and ours can share it)::

    lock                  flock(2) mutex, opened as go-filemutex opens it
    10.1.2.5              one file per reserved address, "<containerID>\\r\\n<ifname>"
    2001:db8::5           IPv6 names are the compressed form (Go's net.IP.String())
    last_reserved_ip.0    the address last reserved for range set 0 (round-robin cursor)

Every method that reads or changes reservations expects the caller to hold
:meth:`Store.locked`; Go's host-local takes the same flock around each of its
steps, so the two never interleave inside a step.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import os
from collections.abc import Iterator
from dataclasses import dataclass

from pycni.fsutil import write_atomic
from pycni.ipam.config import parse_ip
from pycni.spec import CNIError, ErrorCode
from pycni.spec.result import IPAddress

DEFAULT_DATA_DIR = "/var/lib/cni/networks"
LOCK_NAME = "lock"
LAST_RESERVED_PREFIX = "last_reserved_ip."
LINE_BREAK = "\r\n"
LOCK_MODE = 0o750  # go-filemutex creates its file with 0750 ("mkdirPerm")


def io_error(action: str, path: str, exc: OSError) -> CNIError:
    return CNIError(ErrorCode.IO_FAILURE, f"host-local: {action} {path}: {exc.strerror or exc}")


def owner_key(container_id: str, ifname: str) -> str:
    """The content of a reservation file (Go trims the ID, not the interface name)."""
    return container_id.strip() + LINE_BREAK + ifname


@dataclass(frozen=True)
class Reservation:
    """One reserved address as found on disk; ``ifname`` is ``None`` for pre-0.7 files holding only the ID."""

    ip: IPAddress
    path: str
    container_id: str
    ifname: str | None


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
        path = os.path.join(self.dir, LOCK_NAME)
        try:
            fd = os.open(path, os.O_CREAT | os.O_RDONLY | os.O_CLOEXEC, LOCK_MODE)
        except OSError as exc:
            raise io_error("cannot open lock file", path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._depth = 1
            yield
        finally:
            self._depth = 0
            os.close(fd)  # closing the only descriptor drops the flock

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
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            return False
        except OSError as exc:
            raise io_error("cannot create", path, exc) from None
        try:
            try:
                data = owner_key(container_id, ifname).encode()
                while data:
                    data = data[os.write(fd, data) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            last = os.path.join(self.dir, LAST_RESERVED_PREFIX + range_id)
            try:
                write_atomic(last, str(ip).encode(), mode=0o600)
            except OSError as exc:
                raise io_error("cannot write", last, exc) from None
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        return True

    def release(self, ip: IPAddress) -> None:
        """Drop one reservation this call made (rolling back a failed ADD)."""
        self._require_lock()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path_of(ip))

    def last_reserved(self, range_id: str) -> IPAddress | None:
        """The set's round-robin cursor; absent or unreadable means "start at the beginning"."""
        self._require_lock()
        try:
            with open(os.path.join(self.dir, LAST_RESERVED_PREFIX + range_id), "rb") as handle:
                text = handle.read().decode("ascii")
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
        """
        for root, _dirs, files in os.walk(self.dir):
            for name in sorted(files):
                if name == LOCK_NAME or name.startswith(LAST_RESERVED_PREFIX):
                    continue
                path = os.path.join(root, name)
                try:
                    with open(path, "rb") as handle:
                        content = handle.read().decode("utf-8", "surrogateescape")
                except OSError:
                    continue
                yield path, content.strip()

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

    def reservations(self) -> tuple[list[Reservation], list[str]]:
        """Every reservation file (named after an address) with its owner, and read errors."""
        self._require_lock()
        found: list[Reservation] = []
        errors: list[str] = []
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return found, errors
        except OSError as exc:
            raise io_error("cannot list", self.dir, exc) from None
        for name in names:
            ip = _ip_of_name(name)
            path = os.path.join(self.dir, name)
            if ip is None or not os.path.isfile(path):
                continue
            try:
                with open(path, "rb") as handle:
                    content = handle.read().decode("utf-8", "surrogateescape").strip()
            except OSError as exc:
                errors.append(f"cannot read {path}: {exc.strerror or exc}")
                continue
            container_id, sep, ifname = content.partition(LINE_BREAK)
            found.append(Reservation(ip, path, container_id, ifname if sep else None))
        return found, errors

    def discard(self, reservation: Reservation) -> str | None:
        """Remove one reservation file (GC); an error message instead of raising, so GC carries on."""
        self._require_lock()
        try:
            os.unlink(reservation.path)
        except FileNotFoundError:
            return None
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
