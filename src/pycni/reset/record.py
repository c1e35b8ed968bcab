"""The record of what ``pycni install`` wrote, so reset removes exactly those files (and not one the user changed).

Format of :data:`pycni.reset.paths.INSTALLED_RECORD` (``/var/lib/pycni/installed.json``)::

    {"version": 1, "files": [{"path": "/etc/cni/net.d/10-flannel.conflist", "sha256": "<hex>"}, ...]}

Paths are absolute; the digest is of the content as written. An installer
calls :func:`record_installed` after writing its files; reset treats a listed
file whose content still has that digest as pycni's.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable

from pycni.fsutil import write_atomic
from pycni.reset.paths import INSTALLED_RECORD

VERSION = 1


def sha256(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def read_record(path: str = INSTALLED_RECORD) -> dict[str, str]:
    """``{path: sha256}`` of what ``pycni install`` wrote; empty if there is no record or it is unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list):
        return {}
    return {
        str(entry["path"]): str(entry["sha256"])
        for entry in files
        if isinstance(entry, dict) and isinstance(entry.get("path"), str) and isinstance(entry.get("sha256"), str)
    }


def record_installed(written: Iterable[str], path: str = INSTALLED_RECORD) -> None:
    """Add (or refresh) ``written`` files in the record, atomically; earlier entries stay."""
    entries = read_record(path)
    for name in written:
        entries[os.path.abspath(name)] = sha256(name)
    files = [{"path": name, "sha256": digest} for name, digest in sorted(entries.items())]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write_atomic(path, (json.dumps({"version": VERSION, "files": files}, indent=2) + "\n").encode(), mode=0o644)
