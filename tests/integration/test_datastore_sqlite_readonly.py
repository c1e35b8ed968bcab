"""SqliteDatastore on a file its process can only read, while a process that may write it does so.

The reading process runs as the plugins do in the campaigns: root without
CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (``setpriv``), so a mode-0444 file is
read-only to it; the test process keeps both and writes the same file, as a
root agent writes the store a non-root CLI reads. Needs root.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycni.datastore.sqlite import SqliteDatastore

REPO = str(Path(__file__).resolve().parents[2])
NO_DAC = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (setpriv drops capabilities)")

# One line in, one JSON line out: "get KEY", "put KEY VALUE", "close".
CLIENT = """
import json, sys
from pycni.datastore.errors import DatastoreError
from pycni.datastore.sqlite import SqliteDatastore
store = SqliteDatastore(sys.argv[1])
print(json.dumps({"read_only": store.read_only}), flush=True)
for line in sys.stdin:
    verb, *args = line.split()
    try:
        if verb == "get":
            kv = store.get(args[0])
            out = {"value": kv.value if kv else None}
        elif verb == "put":
            out = {"revision": store.put(args[0], args[1]).mod_revision}
        else:
            break
    except DatastoreError as error:
        out = {"error": error.msg, "code": error.code}
    print(json.dumps(out), flush=True)
store.close()
"""


class Client:
    """A store in a process without the DAC-override capabilities."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [*NO_DAC, sys.executable, "-c", CLIENT, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        self.opened = self._line()

    def _line(self) -> dict[str, object]:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the client exited: {self.proc.stderr.read()}")
        reply: dict[str, object] = json.loads(line)
        return reply

    def ask(self, command: str) -> dict[str, object]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._line()

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


def test_a_read_only_store_follows_its_writer_and_is_writable_after(tmp_path: Path, clients: list[Client]) -> None:
    path = tmp_path / "store.db"
    with SqliteDatastore(str(path)) as store:
        store.put("/k", "1")
    assert not os.path.exists(f"{path}-wal"), "the last connection took its -wal with it"
    path.chmod(0o444)
    reader = Client(path)
    clients.append(reader)
    assert reader.opened == {"read_only": True}
    assert reader.ask("get /k") == {"value": "1"}
    # sqlite made a -wal and -shm beside it for the reader, with the store's mode.
    assert os.stat(f"{path}-wal").st_mode & 0o777 == 0o444
    # Root writes while the file is read here: mode=ro takes sqlite's locks and reads through the WAL
    # (immutable=1 would go on reading the main file alone: "1" for good, or torn pages at a checkpoint).
    with SqliteDatastore(str(path)) as writer:
        assert not writer.read_only
        for value in ("2", "3"):
            writer.put("/k", value)
            assert reader.ask("get /k") == {"value": value}
    refused = reader.ask("put /k 4")
    assert refused["code"] == 5 and "is read-only" in str(refused["error"]) and str(path) in str(refused["error"])
    reader.close()
    # Writable again: the -wal and -shm sqlite left read-only get the store's mode, nothing of them is lost.
    path.chmod(0o644)
    writer_client = Client(path)
    clients.append(writer_client)
    assert writer_client.opened == {"read_only": False}
    assert writer_client.ask("get /k") == {"value": "3"}
    assert writer_client.ask("put /k 5") == {"revision": 4}
    writer_client.close()
    with SqliteDatastore(str(path)) as store:
        kv = store.get("/k")
        assert kv is not None and kv.value == "5"


def test_a_read_only_lease_file_with_old_tables_is_read_not_migrated(tmp_path: Path) -> None:
    """A file an upgrade began to migrate, now read-only: the agent reads what the datastore holds."""
    from pycni.fabric.flannel.model import DEFAULT_PREFIX

    path = tmp_path / "flannel.db"
    with SqliteDatastore(str(path)) as store:
        store.put(f"{DEFAULT_PREFIX}/config", json.dumps({"Network": "10.5.0.0/16"}))
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE config (prefix TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE leases (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL);"
        f"INSERT INTO config VALUES ('{DEFAULT_PREFIX}', '{{\"Network\": \"10.9.0.0/16\"}}');"
    )
    db.close()
    path.chmod(0o444)
    script = (
        "import sys\n"
        "from pycni.fabric.flannel.leases import open_lease_store\n"
        f"store = open_lease_store(None, {DEFAULT_PREFIX!r}, sys.argv[1])\n"
        "print(store.get_network_config())\n"
        "store.close()\n"
    )
    out = subprocess.run(
        [*NO_DAC, sys.executable, "-c", script, str(path)], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"Network": "10.5.0.0/16"}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        db.close()
    assert {"config", "leases"} <= tables, "the old tables are where they were"
