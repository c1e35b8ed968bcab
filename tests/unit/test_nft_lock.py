"""``nft.locked``: one holder at a time, and no lock file left once the holders are gone.

The lock files are keyed by namespace inode; a namespace that is deleted never
comes back for its file, so the holder removes the file when it is done.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from pycni import nft


@pytest.fixture
def lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(nft, "LOCK_DIR", str(tmp_path / "locks"))
    return tmp_path / "locks"


def test_the_lock_file_exists_while_held_and_is_gone_after(lock_dir: Path) -> None:
    with nft.locked("inet-demo"):
        held = list(lock_dir.iterdir())
        assert [p.name for p in held] == [f"nft-inet-demo-{nft.netns_inode()}.lock"]
    assert list(lock_dir.iterdir()) == []


def test_an_error_inside_still_releases_and_removes(lock_dir: Path) -> None:
    with pytest.raises(RuntimeError), nft.locked("inet-demo"):
        raise RuntimeError("boom")
    assert list(lock_dir.iterdir()) == []
    with nft.locked("inet-demo"):  # and the next holder is not blocked
        pass


def _contend(lock_dir: str, log: str, rounds: int) -> None:
    nft.LOCK_DIR = lock_dir
    for _ in range(rounds):
        with nft.locked("inet-contended"):
            with open(log, "a") as out:
                out.write(f"enter {os.getpid()}\n")
            time.sleep(0.001)
            with open(log, "a") as out:
                out.write(f"leave {os.getpid()}\n")


def test_holders_never_overlap_although_each_removes_the_file(lock_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "log"
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_contend, args=(str(lock_dir), str(log), 40)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    lines = log.read_text().splitlines()
    assert len(lines) == 4 * 40 * 2
    for enter, leave in zip(lines[::2], lines[1::2], strict=True):  # strictly alternating, same process
        assert enter.startswith("enter ") and leave == "leave " + enter.removeprefix("enter ")
    assert list(lock_dir.iterdir()) == []


def test_a_lock_file_removed_under_its_holder_is_not_an_error_and_a_newer_one_stays(lock_dir: Path) -> None:
    path = lock_dir / f"nft-inet-demo-{nft.netns_inode()}.lock"
    with nft.locked("inet-demo"):
        path.unlink()  # someone's clean-up (pycni reset, by hand) while it is held
    assert list(lock_dir.iterdir()) == []
    with nft.locked("inet-demo"):
        path.unlink()
        path.touch()  # and a newer process's file appears at the path
    assert path.exists(), "the holder removes only its own file"
