"""pycni.fsutil: state is read only from regular files and removed whatever it became, never through a symlink."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pycni.fsutil import read_state, remove, write_atomic


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.write_text("canary")
    return path


def test_read_state_reads_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"state")
    assert read_state(str(tmp_path / "f")) == b"state"


def test_read_state_refuses_what_is_not_a_regular_file(tmp_path: Path, outside: Path) -> None:
    (tmp_path / "link").symlink_to(outside)
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")  # must not block
    with pytest.raises(OSError) as link:
        read_state(str(tmp_path / "link"))
    assert link.value.errno == errno.ELOOP
    for name in ("dir", "fifo"):
        with pytest.raises(OSError) as other:
            read_state(str(tmp_path / name))
        assert other.value.errno == errno.EISDIR
    with pytest.raises(FileNotFoundError):
        read_state(str(tmp_path / "absent"))


def test_remove_unlinks_a_symlink_and_a_directory_without_following(tmp_path: Path, outside: Path) -> None:
    (tmp_path / "link").symlink_to(outside)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "out").symlink_to(outside)
    (tmp_path / "dir" / "sub").mkdir()
    assert remove(str(tmp_path / "link")) and remove(str(tmp_path / "dir"))
    assert not remove(str(tmp_path / "absent"))
    assert sorted(os.listdir(tmp_path)) == ["outside"]
    assert outside.read_text() == "canary"


def test_write_atomic_replaces_a_symlink_itself(tmp_path: Path, outside: Path) -> None:
    (tmp_path / "f").symlink_to(outside)
    write_atomic(str(tmp_path / "f"), b"new")
    assert not (tmp_path / "f").is_symlink() and (tmp_path / "f").read_bytes() == b"new"
    assert outside.read_text() == "canary"


def test_write_atomic_replaces_a_directory_only_when_told(tmp_path: Path) -> None:
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "inside").write_text("x")
    with pytest.raises(IsADirectoryError):
        write_atomic(str(tmp_path / "f"), b"new")
    write_atomic(str(tmp_path / "f"), b"new", replace_directory=True)
    assert (tmp_path / "f").read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["f"]  # no temporary file left
