"""Shared fixtures: plugin executables, namespaces, tier markers."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.netns import NetnsPool, netns_pool

REPO = Path(__file__).resolve().parent.parent
GO_PLUGIN_DIR = "/usr/lib/cni"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests under integration/ and e2e/ need root; skip them with the reason otherwise."""
    for item in items:
        path = str(item.fspath)
        if ("/integration/" in path or "/e2e/" in path) and os.geteuid() != 0:
            item.add_marker(pytest.mark.skip(reason="needs root (integration/e2e tier)"))


@pytest.fixture(scope="session")
def pycni_plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A directory holding an executable for every pycni plugin, as a user installs them."""
    from pycni.cli.install import install

    directory = tmp_path_factory.mktemp("pycni-bin")
    install(str(directory))
    return str(directory)


@pytest.fixture(scope="session")
def go_plugin_dir() -> str:
    if not os.path.isfile(os.path.join(GO_PLUGIN_DIR, "bridge")):
        pytest.skip("Go reference plugins are not installed (apt-get install containernetworking-plugins)")
    return GO_PLUGIN_DIR


@pytest.fixture
def netns() -> Iterator[NetnsPool]:
    with netns_pool() as pool:
        yield pool


@pytest.fixture
def python() -> str:
    return sys.executable


@pytest.fixture
def pycni_bin() -> str:
    path = shutil.which("pycni", path=os.path.dirname(sys.executable))
    assert path, "pycni is not installed in this interpreter's environment"
    return path
