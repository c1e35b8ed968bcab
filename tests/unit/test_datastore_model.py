"""Model-based tests (hypothesis): the memory and sqlite backends against a plain dict, step by step.

Random sequences of create/update/put/delete/delete_prefix and clock jumps
(so TTLs run out between steps) on a small key set chosen to hit prefix
edges. After every step the store's keys, counters and revision must equal
the model's; a watch from any revision must replay exactly the model's log
after it. Key ranges: the prefix bound must agree with ``str.startswith``
for any text, and sqlite must sort keys as Python does.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile

import pytest

from pycni.datastore import AlreadyExists, Conflict, Datastore, KeyValue, NotFound
from pycni.datastore.keys import prefix_end, prefix_end_bytes
from pycni.datastore.memory import MemoryDatastore
from pycni.datastore.sqlite import SqliteDatastore
from tests.support.datastore import Clock, summary

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule  # noqa: E402

from tests.support import strategies  # noqa: E402, F401 - loads pycni's profile (fast and fixed, or a campaign)

KEYS = st.sampled_from(["/a", "/a/", "/a/x", "/a/x/y", "/ab", "/b", "/\u00e9", "/a/\U0001f680"])
PREFIXES = st.sampled_from(["", "/", "/a", "/a/", "/a/x", "/b", "/z", "/\u00e9"])
VALUES = st.text(max_size=12)
TTLS = st.one_of(st.none(), st.integers(min_value=1, max_value=20))

Row = tuple[str, str, int, str | None]


class StoreMachine(RuleBasedStateMachine):
    """One backend against the model; subclasses say which backend."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.store = self.make_store()
        self.model: dict[str, KeyValue] = {}
        self.revision = 0
        self.log: list[Row] = []

    def make_store(self) -> Datastore:
        raise NotImplementedError

    # -- the model ----------------------------------------------------------------

    def sweep(self) -> None:
        """What every store call does first: keys past their expiry become DELETEs, soonest first."""
        due = [kv for kv in self.model.values() if kv.expires_at is not None and kv.expires_at <= self.clock.now]
        for kv in sorted(due, key=lambda kv: (kv.expires_at or 0.0, kv.key)):
            del self.model[kv.key]
            self.revision += 1
            self.log.append(("DELETE", kv.key, self.revision, kv.value))

    def written(self, key: str, value: str, ttl: int | None) -> KeyValue:
        prev = self.model.get(key)
        self.revision += 1
        kv = KeyValue(
            key,
            value,
            prev.create_revision if prev else self.revision,
            self.revision,
            prev.version + 1 if prev else 1,
            expires_at=self.clock.now + ttl if ttl else None,
        )
        self.model[key] = kv
        self.log.append(("PUT", key, self.revision, value))
        return kv

    # -- steps --------------------------------------------------------------------

    @rule(key=KEYS, value=VALUES, ttl=TTLS)
    def create(self, key: str, value: str, ttl: int | None) -> None:
        self.sweep()
        if key in self.model:
            with pytest.raises(AlreadyExists):
                self.store.create(key, value, ttl)
        else:
            assert self.store.create(key, value, ttl) == self.written(key, value, ttl)

    @rule(key=KEYS, value=VALUES, ttl=TTLS, stale=st.booleans())
    def update(self, key: str, value: str, ttl: int | None, stale: bool) -> None:
        self.sweep()
        current = self.model.get(key)
        revision = (current.mod_revision if current else self.revision) - (1 if stale else 0)
        if current is None:
            with pytest.raises(NotFound):
                self.store.update(key, value, max(revision, 0), ttl)
        elif stale:
            with pytest.raises(Conflict):
                self.store.update(key, value, revision, ttl)
        else:
            assert self.store.update(key, value, revision, ttl) == self.written(key, value, ttl)

    @rule(key=KEYS, value=VALUES, ttl=TTLS)
    def put(self, key: str, value: str, ttl: int | None) -> None:
        self.sweep()
        assert self.store.put(key, value, ttl) == self.written(key, value, ttl)

    @rule(key=KEYS, conditional=st.sampled_from([None, "right", "stale"]))
    def delete(self, key: str, conditional: str | None) -> None:
        self.sweep()
        current = self.model.get(key)
        revision = None
        if conditional is not None:
            revision = (current.mod_revision if current else 1) - (1 if conditional == "stale" else 0)
        if current is None:
            with pytest.raises(NotFound):
                self.store.delete(key, revision)
        elif conditional == "stale":
            with pytest.raises(Conflict):
                self.store.delete(key, revision)
        else:
            assert self.store.delete(key, revision) == current
            del self.model[key]
            self.revision += 1
            self.log.append(("DELETE", key, self.revision, current.value))

    @rule(prefix=PREFIXES)
    def delete_prefix(self, prefix: str) -> None:
        self.sweep()
        doomed = sorted(key for key in self.model if key.startswith(prefix))
        assert self.store.delete_prefix(prefix) == len(doomed)
        if doomed:
            self.revision += 1
            for key in doomed:
                self.log.append(("DELETE", key, self.revision, self.model.pop(key).value))

    @rule(seconds=st.sampled_from([0.5, 1, 3, 10, 19.5, 20]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(prefix=PREFIXES)
    def listing(self, prefix: str) -> None:
        self.sweep()
        listed, at = self.store.list(prefix)
        assert listed == [self.model[key] for key in sorted(self.model) if key.startswith(prefix)]
        assert at == self.revision

    @rule(data=st.data())
    def watch_from_anywhere(self, data: st.DataObject) -> None:
        self.sweep()
        if self.revision == 0:
            return
        since = data.draw(st.integers(min_value=0, max_value=self.revision - 1))
        self.store.revision()  # sweeps the store too, so the log holds every expiry up to now
        with self.store.watch("", since) as watch:
            seen: list[Row] = []
            while not seen or seen[-1][2] < self.revision:
                seen.extend(summary(next(watch)))
        assert seen == [row for row in self.log if row[2] > since]

    @invariant()
    def same_state(self) -> None:
        self.sweep()
        assert self.store.revision() == self.revision
        assert self.store.list("")[0] == [self.model[key] for key in sorted(self.model)]

    def teardown(self) -> None:
        self.store.close()


class MemoryMachine(StoreMachine):
    def make_store(self) -> Datastore:
        return MemoryDatastore(self.clock)


class SqliteMachine(StoreMachine):
    def make_store(self) -> Datastore:
        self.directory = tempfile.mkdtemp(prefix="pycni-datastore-model-")
        return SqliteDatastore(f"{self.directory}/store.db", clock=self.clock)

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


TestMemoryAgainstModel = MemoryMachine.TestCase
TestMemoryAgainstModel.settings = settings(max_examples=max(settings.default.max_examples, 60), stateful_step_count=40)
TestSqliteAgainstModel = SqliteMachine.TestCase
TestSqliteAgainstModel.settings = settings(stateful_step_count=30)


# -- key ranges ------------------------------------------------------------------

TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=6)
EDGE_TEXT = st.text(alphabet=st.sampled_from("a/\x7f\x80\ud7ff\ue000\uffff\U0010ffff"), max_size=5)


@given(key=st.one_of(TEXT, EDGE_TEXT), prefix=st.one_of(TEXT, EDGE_TEXT))
def test_the_prefix_bound_is_exactly_startswith(key: str, prefix: str) -> None:
    end = prefix_end(prefix)
    assert (prefix <= key and (end is None or key < end)) == key.startswith(prefix)
    raw, raw_prefix, raw_end = key.encode(), prefix.encode(), prefix_end_bytes(prefix)
    in_range = raw_prefix <= raw and (not raw_prefix or raw < raw_end)
    assert in_range == key.startswith(prefix)


@given(keys=st.lists(st.one_of(TEXT, EDGE_TEXT), unique=True, max_size=12))
def test_sqlite_sorts_keys_as_python_does(keys: list[str]) -> None:
    db = sqlite3.connect(":memory:")
    try:
        db.execute("CREATE TABLE t (key TEXT PRIMARY KEY)")
        db.executemany("INSERT INTO t VALUES (?)", [(key,) for key in keys])
        assert [row[0] for row in db.execute("SELECT key FROM t ORDER BY key")] == sorted(keys)
    finally:
        db.close()
