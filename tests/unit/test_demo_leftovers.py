"""The demo releases what an interrupted demo left reserved in host-local's default directory, and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycni.cli import demo


def reserve(directory: Path, address: str, owner: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / address
    path.write_text(f"{owner}\neth0")
    return path


def test_its_own_reservations_are_released_others_stop_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "HOST_LOCAL_DIR", str(tmp_path))
    runner = object.__new__(demo.Demo)
    mine = [
        reserve(tmp_path / "mynet", "10.10.0.3", "demo-container"),
        reserve(tmp_path / "portmap", "10.10.0.2", "cnitool-1f2e"),
    ]
    (tmp_path / "mynet" / "last_reserved_ip.0").write_text("10.10.0.3")
    runner.release_interrupted("mynet")
    runner.release_interrupted("portmap")
    runner.release_interrupted("absent")
    assert not any(path.exists() for path in mine)
    assert (tmp_path / "mynet" / "last_reserved_ip.0").exists()

    theirs = reserve(tmp_path / "mynet", "10.10.0.9", "a-real-container")
    with pytest.raises(demo.DemoFailed, match=r"reserves 10\.10\.0\.9 for container 'a-real-container'"):
        runner.release_interrupted("mynet")
    assert theirs.exists()
