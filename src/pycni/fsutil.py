"""pycni's state files: written atomically, read only as regular files, removed whatever they became.

One rule for every state path (result cache, tuning's saved values,
host-local's cursors and lock): what is at the path is pycni's, so something
pycni cannot read as its state there (a directory, a symlink, a FIFO, an
unreadable file) is garbage that the next writer replaces and DEL removes.
A symlink is never followed: it is replaced or unlinked itself, so nothing
outside the state directory is read, written or deleted through it.

A writer killed (SIGKILL) between creating its temporary file and renaming
it cannot clean up; the temporary names its target and its writer's pid
(``.<name>.tmp-<pid>-<random>``), so the next write or removal of the same
target, and :func:`sweep` of the directory, remove those whose writer is gone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile


def write_atomic(path: str, data: bytes, mode: int = 0o600, replace_directory: bool = False) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never half.

    Writes a temporary file in the same directory, fsyncs it and renames it
    over ``path``; renaming also never disturbs a process executing the old
    file, and replaces a symlink rather than writing through it. A directory
    in the way is an error unless ``replace_directory`` (state paths) says
    it is garbage to remove.
    """
    directory = os.path.dirname(path) or "."
    remove_orphans(path)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path) + f"{os.getpid()}-", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.replace(tmp, path)
        except IsADirectoryError:
            if not replace_directory:
                raise
            remove(path)
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _temporary_prefix(path: str) -> str:
    return f".{os.path.basename(path)}.tmp-"


def _writer_gone(pid_text: str) -> bool:
    if not pid_text.isdigit():
        return False  # not one of ours (write_atomic always names its pid)
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _remove_orphans_in(directory: str, prefix: str) -> int:
    """Remove the temporaries starting with ``prefix`` ("" for any target) whose writer is gone."""
    removed = 0
    try:
        names = os.listdir(directory or ".")
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for name in names:
        if not name.startswith(prefix or ".") or ".tmp-" not in name:
            continue
        pid_text = name.rsplit(".tmp-", 1)[1].split("-", 1)[0]
        if _writer_gone(pid_text):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))
                removed += 1
    return removed


def remove_orphans(path: str) -> int:
    """Remove what killed writers of ``path`` left (their temporaries); a live writer's stays."""
    return _remove_orphans_in(os.path.dirname(path), _temporary_prefix(path))


def sweep(directory: str) -> int:
    """Remove every temporary in ``directory`` whose writer is gone (GC, and host-local under its lock)."""
    return _remove_orphans_in(directory, "")


def is_open_at(fd: int, path: str) -> bool:
    """Whether the open file ``fd`` is still the one at ``path`` (not removed or replaced since it was opened).

    How a lock taken on an open file is checked to still be the lock at that path.
    """
    try:
        there = os.lstat(path)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def read_state(path: str) -> bytes:
    """The bytes of the regular file at ``path``, never following a symlink.

    ``FileNotFoundError`` when nothing is there; another ``OSError`` when
    something is there that is not a readable regular file (``ELOOP`` for a
    symlink, ``EISDIR`` for a directory or anything else, ``EACCES``).
    """
    # O_NONBLOCK: a FIFO planted at the path must not hang the reader.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EISDIR, "not a regular file", path)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def remove(path: str) -> bool:
    """Remove whatever is at ``path``: a file or symlink (never its target), or a whole directory.

    A directory is removed without following the symlinks inside it. Returns
    whether something was there; other errors (``EACCES``, ``EROFS``) raise.
    """
    remove_orphans(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(mode):
        with contextlib.suppress(FileNotFoundError):  # removed meanwhile: as good
            shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    return True
