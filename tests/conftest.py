"""Shared fixtures: plugin executables, namespaces, tier markers."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.netns import NetnsPool, netns_pool

REPO = Path(__file__).resolve().parent.parent
GO_PLUGIN_DIR = "/usr/lib/cni"


# Fixtures that lend a test a machine-wide path (host-local's default directory, tuning's fixed
# allowlist): such a test must not run beside another one.
MACHINE_WIDE_FIXTURES = {"seed_data_dir", "allowlist"}
FILE_DURATIONS = Path(__file__).resolve().parent / "file_durations.json"  # scripts/file_durations.py writes it


def slowest_files_first(items: list[pytest.Item]) -> None:
    """Order whole files by their recorded seconds, slowest first, keeping each file's own order.

    ``make test`` hands files to its workers in collection order (``--no-loadscope-reorder``):
    started first, the long cluster files run beside the short ones instead of on their own at
    the end (longest-processing-time-first scheduling). A file the table lacks counts as the median.
    """
    try:
        table: dict[str, float] = json.loads(FILE_DURATIONS.read_text())
    except (OSError, ValueError):
        return
    default = statistics.median(table.values()) if table else 0.0
    position = {id(item): index for index, item in enumerate(items)}

    def cost(item: pytest.Item) -> float:
        return table.get(os.path.relpath(str(item.fspath), REPO), default)

    items.sort(key=lambda item: (-cost(item), os.path.relpath(str(item.fspath), REPO), position[id(item)]))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests under integration/ and e2e/ need root; skip them with the reason otherwise.

    Tests that change or compare machine-wide state (the e2e tier: the root namespace, podman,
    /run/pycni, /var/lib/cni) or that use a machine-wide path get the ``serial`` mark: ``make
    test`` runs them alone, after the rest has run in parallel.
    """
    for item in items:
        path = str(item.fspath)
        if ("/integration/" in path or "/e2e/" in path) and os.geteuid() != 0:
            item.add_marker(pytest.mark.skip(reason="needs root (integration/e2e tier)"))
        if "/e2e/" in path or MACHINE_WIDE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.serial)
    slowest_files_first(items)


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


@pytest.fixture(scope="session")
def pycni_bin() -> str:
    path = shutil.which("pycni", path=os.path.dirname(sys.executable))
    assert path, "pycni is not installed in this interpreter's environment"
    return path


CPU_REPORT_ENV = "PYCNI_TEST_CPU"  # a directory: each test's CPU seconds (its own and its children's) go there


ROOT_FORWARDING = ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")
# Machine-wide directories the root-namespace tier makes (host-local's default store, pycni's run dir):
# removed again when a test made them and left them empty, so the machine is as it was.
MACHINE_DIRS = (Path("/run/pycni"), Path("/var/lib/cni"))


def _only_empty_dirs(path: Path) -> bool:
    return path.is_dir() and all(_only_empty_dirs(child) for child in path.iterdir())


@pytest.fixture(scope="session", autouse=True)
def _machine_dirs_removed_when_empty(worker_id: str) -> Iterator[None]:
    """At the end of a run outside the xdist workers (make test's serial phase, the last), the machine-wide
    directories are removed if they hold nothing but empty directories: the parallel phase's plugins
    make /run/pycni/{locks,attachments} and leave them empty, and a fresh node has neither."""
    yield
    if worker_id != "master" or os.geteuid() != 0:
        return
    for directory in MACHINE_DIRS:
        if _only_empty_dirs(directory):
            shutil.rmtree(directory)


@pytest.fixture(autouse=True)
def _root_forwarding_restored(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that runs plugins in the root namespace gives back its forwarding sysctls and empty directories.

    The bridge plugin turns IPv4 forwarding on for a gateway and, as Go's does, never turns it off;
    new namespaces copy the root's value, so a root left at 1 changes every later node of the suite
    (and the machine is not as it was). Only the serial tier runs in the root namespace.
    """
    if request.node.get_closest_marker("serial") is None or os.geteuid() != 0:
        yield
        return
    before = {path: Path(path).read_text() for path in ROOT_FORWARDING if os.path.exists(path)}
    absent = [path for path in MACHINE_DIRS if not path.exists()]
    yield
    for path, value in before.items():
        if Path(path).read_text() != value:
            Path(path).write_text(value)
    for directory in absent:
        if _only_empty_dirs(directory):
            shutil.rmtree(directory)


@pytest.fixture(autouse=True)
def _cpu_report(request: pytest.FixtureRequest) -> Iterator[None]:
    """With ``PYCNI_TEST_CPU=DIR``, append ``seconds<TAB>test`` per test to a file in DIR (one per worker).

    The suite is CPU-bound on two cores, so the time budget of ``make test`` is spent
    in CPU seconds: this says which tests spend them (children counted once reaped).
    """
    directory = os.environ.get(CPU_REPORT_ENV)
    if not directory:
        yield
        return
    import resource

    def used() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    start = used()
    yield
    with open(os.path.join(directory, f"cpu-{os.getpid()}.tsv"), "a") as report:
        report.write(f"{used() - start:.2f}\t{request.node.nodeid}\n")
