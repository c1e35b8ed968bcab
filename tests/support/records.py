"""pycni's attachment records (:mod:`pycni.nft.attachments`) that belong to one test namespace."""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

from pycni.nft import attachments
from tests.support.netns import run


def netns_cookie(netns: str) -> str:
    """The namespace's cookie, as pycni reads it from inside."""
    probe = "from pycni.nft import attachments; print(attachments.netns_cookie())"
    return run(sys.executable, "-c", probe, netns=netns).stdout.strip()


def attachment_records(netns: str, cookie: str) -> list[str]:
    """Every record directory and file of ``netns`` (its inode names them; a dead namespace's has another cookie)."""
    inode = os.stat(f"/run/netns/{netns}").st_ino
    found: list[str] = []
    for directory in glob.glob(os.path.join(attachments.ROOT, f"*-{inode}")):
        stored = Path(directory, attachments.COOKIE)
        if stored.exists() and stored.read_text() != cookie:
            continue
        found += [directory, *glob.glob(os.path.join(directory, "**"), recursive=True)]
    return sorted(os.path.relpath(path, attachments.ROOT) for path in found)
