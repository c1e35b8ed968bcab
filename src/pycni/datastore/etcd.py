"""The datastore on etcd v3, written the way libcalico-go and flanneld write it.

Requests go to etcd's JSON gateway (``/v3/...`` on the client port) through
``etcd3gw``'s HTTP helper, so a pycni node shares one etcd with Go peers.
The mapping (libcalico-go ``lib/backend/etcdv3/etcdv3.go``):

* create: ``kv/txn`` ``If(Version(key) == 0) Then(Put) Else(Range)``;
* update: ``If(ModRevision(key) == rev, Version(key) > 0) Then(Put, prev_kv) Else(Range)``
  (the version test keeps a missing key, whose ModRevision is 0, a NotFound);
* delete with a revision: the same guard around a DeleteRange;
* TTL: one etcd lease per write (``lease/grant``), attached to the put; etcd
  deletes the key when it runs out. A lease a write or delete leaves without
  keys is revoked, so leases do not pile up (one still holding another key is left).
  A ``put`` with the TTL the key's own lease was granted for refreshes that lease
  (``lease/keepalive``) and writes under it (``If(Lease(key) == id) Then(Put
  ignore_lease)``) instead: renewals then never grant, so a writer killed between
  two requests leaves no lease attached to nothing (flanneld's renewals, pycni issue 10);
* watch: a ``/v3/watch`` stream from ``since + 1`` with ``prev_kv``, so a DELETE
  (also an expiry) carries the value that went away. While the stream is
  quiet the member is probed every ``probe_every`` seconds, so a hung or
  unreachable etcd ends the watch with Unavailable within a few seconds.

Endpoints are tried in order, the last one that answered first. A read moves
on after any failure; a write moves on only if the connection failed before
the request was sent, since a write that timed out may have been applied
(the error says so: re-read before retrying).
"""

from __future__ import annotations

import builtins
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from contextlib import suppress
from typing import Any
from urllib.parse import urlsplit

import etcd3gw
from etcd3gw import exceptions as etcd_errors

from pycni.datastore.base import ClosingMixin
from pycni.datastore.errors import (
    Compacted,
    DatastoreError,
    InvalidArgument,
    Unavailable,
    already_exists,
    conflict,
    not_found,
)
from pycni.datastore.etcd_wire import (
    API_PATH,
    WatchStream,
    b64,
    decode_kv,
    grpc_code,
    not_sent,
    post,
    reason,
    unb64,
)
from pycni.datastore.keys import (
    check_key,
    check_prefix,
    check_revision,
    check_ttl,
    check_value,
    prefix_end_bytes,
)
from pycni.datastore.model import Event, EventType, KeyValue, Listing, tombstone
from pycni.datastore.watch import Batches, Watch

PROBE_EVERY = 2.0  # seconds of watch silence before checking the member still answers
# Failures that mean "this member cannot serve now": a read tries the next endpoint.
_UNREACHABLE = (
    etcd_errors.ConnectionFailedError,
    etcd_errors.ConnectionTimeoutError,
    etcd_errors.InternalServerError,
)
# expires_at of a key whose etcd lease already ran out (etcd deletes it a moment later; the DELETE follows).
RAN_OUT = 0.0
_GRPC_REFUSED = {3, 9, 11}  # InvalidArgument, FailedPrecondition, OutOfRange: asking again cannot help


class EtcdRefused(InvalidArgument):
    """etcd understood the request and refused it (its gRPC ``code`` and message are kept)."""

    def __init__(self, message: str, grpc_code: int | None, reason: str) -> None:
        super().__init__(message)
        self.grpc_code = grpc_code
        self.reason = reason


def _range(prefix: str) -> dict[str, str]:
    """The key/range_end pair selecting every key under ``prefix`` ("" selects all: key and end NUL)."""
    if not prefix:
        return {"key": b64(b"\0"), "range_end": b64(b"\0")}
    return {"key": b64(prefix), "range_end": b64(prefix_end_bytes(prefix))}


def _exists(key: str) -> dict[str, Any]:
    return {"key": b64(key), "result": "GREATER", "target": "VERSION", "version": "0"}


def _mod_is(key: str, revision: int) -> dict[str, Any]:
    return {"key": b64(key), "result": "EQUAL", "target": "MOD", "mod_revision": str(revision)}


def _revision_of(result: dict[str, Any]) -> int:
    return int(result.get("header", {}).get("revision", 0))


def _first(result: dict[str, Any], response: str, field: str) -> dict[str, Any] | None:
    """``responses[0].<response>.<field>`` of a txn answer (a kv dict, or the first of a list)."""
    responses = result.get("responses") or [{}]
    value = (responses[0].get(response) or {}).get(field)
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, dict) else None


class EtcdDatastore(ClosingMixin):
    """The :class:`~pycni.datastore.Datastore` contract on etcd v3; opening it contacts nobody."""

    def __init__(self, endpoints: Sequence[str], *, timeout: float = 5.0, probe_every: float = PROBE_EVERY) -> None:
        self.endpoints = [endpoint.strip().rstrip("/") for endpoint in endpoints if endpoint.strip()]
        if not self.endpoints:
            raise InvalidArgument("no etcd endpoints given (e.g. http://127.0.0.1:2379)")
        self.timeout = timeout
        self.probe_every = probe_every
        self._clients = [self._client(endpoint) for endpoint in self.endpoints]
        self._preferred = 0  # the endpoint that answered last is tried first
        self._streams: set[WatchStream] = set()
        self._lock = threading.Lock()
        self._closed = False

    def _client(self, endpoint: str) -> etcd3gw.Etcd3Client:
        url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        if url.scheme not in ("http", "https") or not url.hostname:
            raise InvalidArgument(f"etcd endpoint {endpoint!r} is not an http(s)://host:port URL")
        return etcd3gw.client(
            host=url.hostname, port=url.port or 2379, protocol=url.scheme, timeout=self.timeout, api_path=API_PATH
        )

    # -- requests ---------------------------------------------------------------

    def _ordered(self) -> list[int]:
        first = self._preferred
        return [first, *(index for index in range(len(self._clients)) if index != first)]

    def _unreachable(self, errors: list[str]) -> Unavailable:
        return Unavailable(
            f"etcd is unreachable at {', '.join(self.endpoints)} ({'; '.join(errors)}); "
            "check that etcd runs there and answers on its client URL"
        )

    def _call(self, path: str, payload: dict[str, Any], write: bool = False) -> dict[str, Any]:
        """POST one gateway request, trying the endpoints in order (a write only while nothing was sent)."""
        if self._closed:
            raise Unavailable("the etcd datastore is closed")
        errors: list[str] = []
        for index in self._ordered():
            endpoint, client = self.endpoints[index], self._clients[index]
            try:
                result = client.post(client.get_url(path), json=payload)
            except _UNREACHABLE as error:
                if write and not not_sent(error):
                    raise Unavailable(
                        f"etcd at {endpoint} failed during {path} ({reason(error)}); the write may or may not "
                        "have been applied: re-read before retrying"
                    ) from None
                errors.append(f"{endpoint}: {reason(error)}")
                continue
            except etcd_errors.Etcd3Exception as error:
                code, why = grpc_code(error), reason(error)
                if code in _GRPC_REFUSED:
                    raise EtcdRefused(f"etcd at {endpoint} refused {path}: {why}", code, why) from None
                if write:
                    raise Unavailable(f"etcd at {endpoint} could not serve {path}: {why}") from None
                errors.append(f"{endpoint}: {why}")
                continue
            except ValueError as error:  # not JSON: something else listens there
                errors.append(f"{endpoint}: not an etcd v3 gateway ({error})")
                continue
            self._preferred = index
            return result if isinstance(result, dict) else {}
        raise self._unreachable(errors)

    # -- leases -----------------------------------------------------------------

    def _grant(self, ttl: int | None) -> tuple[int, float | None]:
        """A new etcd lease for one write (ID, expiry); (0, None) for no TTL. etcd may round a short TTL up."""
        if ttl is None:
            return 0, None
        result = self._call("lease/grant", {"TTL": ttl, "ID": 0}, write=True)
        return int(result["ID"]), time.time() + int(result.get("TTL", ttl))

    def _revoke(self, lease: int) -> None:
        """Best effort: an orphaned etcd lease only costs memory in etcd until it runs out."""
        if lease:
            with suppress(DatastoreError):
                self._call("lease/revoke", {"ID": str(lease)}, write=True)

    def _release(self, leases: Iterable[int], keep: int = 0) -> None:
        """Revoke the leases the last write or delete left without keys (not ``keep``, nor one still in use)."""
        for lease in set(leases) - {0, keep}:
            with suppress(DatastoreError):
                result = self._call("lease/timetolive", {"ID": str(lease), "keys": True})
                if not result.get("keys") and int(result.get("TTL", 0)) >= 0:
                    self._revoke(lease)

    def _expiries(self, kvs: Iterable[dict[str, Any]]) -> dict[int, float]:
        """Wall-clock expiry of each lease the keys hold (RAN_OUT for one that already did).

        etcd answers TTL -1 for a lease that is gone; the gateway leaves out a TTL of 0 (under a second left).
        """
        expiries: dict[int, float] = {}
        for kv in kvs:
            lease = int(kv.get("lease", 0))
            if lease and lease not in expiries:
                remaining = int(self._call("lease/timetolive", {"ID": str(lease)}).get("TTL", 0))
                expiries[lease] = time.time() + remaining if remaining >= 0 else RAN_OUT
        return expiries

    def _decode_live(self, kvs: list[dict[str, Any]]) -> list[KeyValue]:
        """The keys with their expiries, leaving out any whose lease ran out (etcd deletes it a moment later)."""
        expiries = self._expiries(kvs)
        decoded = []
        for kv in kvs:
            lease = int(kv.get("lease", 0))
            expires_at = expiries.get(lease) if lease else None
            if expires_at == RAN_OUT:
                continue
            decoded.append(decode_kv(kv, expires_at))
        return decoded

    # -- reads ------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        result = self._call("kv/range", {"key": b64(check_key(key))})
        found = self._decode_live(result.get("kvs") or [])
        return found[0] if found else None

    def list(self, prefix: str) -> Listing:
        result = self._call("kv/range", _range(check_prefix(prefix)))
        return self._decode_live(result.get("kvs") or []), _revision_of(result)

    def revision(self) -> int:
        return _revision_of(self._call("kv/range", {"key": b64("/"), "count_only": True}))

    # -- writes -----------------------------------------------------------------

    def create(self, key: str, value: str, ttl: int | None = None) -> KeyValue:
        check_value(check_key(key), value)
        lease, expires_at = self._grant(check_ttl(ttl))
        put: dict[str, Any] = {"key": b64(key), "value": b64(value), "lease": str(lease)}
        txn = {
            "compare": [{"key": b64(key), "result": "EQUAL", "target": "VERSION", "version": "0"}],
            "success": [{"request_put": put}],
            "failure": [{"request_range": {"key": b64(key)}}],
        }
        result = self._txn(txn, lease)
        if not result.get("succeeded"):
            self._revoke(lease)
            existing = _first(result, "response_range", "kvs")
            raise already_exists(key, decode_kv(existing) if existing else None)
        revision = _revision_of(result)
        return KeyValue(key, value, revision, revision, 1, lease, expires_at)

    def update(self, key: str, value: str, revision: int, ttl: int | None = None) -> KeyValue:
        check_value(check_key(key), value)
        check_revision(revision)
        lease, expires_at = self._grant(check_ttl(ttl))
        put: dict[str, Any] = {"key": b64(key), "value": b64(value), "lease": str(lease), "prev_kv": True}
        txn = {
            "compare": [_mod_is(key, revision), _exists(key)],
            "success": [{"request_put": put}],
            "failure": [{"request_range": {"key": b64(key)}}],
        }
        result = self._txn(txn, lease)
        if not result.get("succeeded"):
            self._revoke(lease)
            current = _first(result, "response_range", "kvs")
            if current is None:
                raise not_found(key)
            raise conflict(key, revision, decode_kv(current))
        prev = decode_kv(_first(result, "response_put", "prev_kv") or {})
        self._release([prev.lease], keep=lease)
        new_revision = _revision_of(result)
        return KeyValue(key, value, prev.create_revision, new_revision, prev.version + 1, lease, expires_at)

    def put(self, key: str, value: str, ttl: int | None = None) -> KeyValue:
        check_value(check_key(key), value)
        ttl = check_ttl(ttl)
        if ttl is not None:
            kept = self._put_keeping_lease(key, value, ttl)
            if kept is not None:
                return kept
        lease, expires_at = self._grant(ttl)
        request = {"key": b64(key), "value": b64(value), "lease": str(lease), "prev_kv": True}
        try:
            result = self._call("kv/put", request, write=True)
        except DatastoreError:
            self._revoke(lease)
            raise
        revision = _revision_of(result)
        previous = result.get("prev_kv")
        if not previous:
            return KeyValue(key, value, revision, revision, 1, lease, expires_at)
        prev = decode_kv(previous)
        self._release([prev.lease], keep=lease)
        return KeyValue(key, value, prev.create_revision, revision, prev.version + 1, lease, expires_at)

    def _put_keeping_lease(self, key: str, value: str, ttl: int) -> KeyValue | None:
        """Write ``key`` under the etcd lease it already has, refreshed; None where that lease cannot be kept.

        Granting a lease, putting the key under it and revoking the old one
        leaves a lease attached to nothing (for the whole TTL: a day, for
        Flannel's leases) if the writer dies between two of those requests.
        Each step here leaves the key whole under a live lease instead. The
        lease is kept only if it holds this key alone, was granted for this
        TTL and has not run out; the txn's compare (the key is still under
        it) makes the write fail, never land elsewhere, if that changed since.
        """
        kvs = self._call("kv/range", {"key": b64(key)}).get("kvs") or []
        lease = int(kvs[0].get("lease", 0)) if kvs else 0
        if not lease:
            return None
        granted = self._call("lease/timetolive", {"ID": str(lease), "keys": True})
        holds = [unb64(held) for held in granted.get("keys") or []]
        if int(granted.get("grantedTTL", 0)) != ttl or int(granted.get("TTL", -1)) <= 0 or holds != [key]:
            return None
        refreshed = self._call("lease/keepalive", {"ID": str(lease)})  # idempotent: any endpoint may serve it
        remaining = int((refreshed.get("result") or {}).get("TTL", -1))
        if remaining <= 0:
            return None
        put = {"key": b64(key), "value": b64(value), "ignore_lease": True, "prev_kv": True}
        txn = {
            "compare": [{"key": b64(key), "result": "EQUAL", "target": "LEASE", "lease": str(lease)}],
            "success": [{"request_put": put}],
            "failure": [],
        }
        result = self._call("kv/txn", txn, write=True)
        if not result.get("succeeded"):
            return None
        prev = decode_kv(_first(result, "response_put", "prev_kv") or {})
        return KeyValue(
            key, value, prev.create_revision, _revision_of(result), prev.version + 1, lease, time.time() + remaining
        )

    def _txn(self, txn: dict[str, Any], lease: int) -> dict[str, Any]:
        try:
            return self._call("kv/txn", txn, write=True)
        except DatastoreError:
            self._revoke(lease)
            raise

    def delete(self, key: str, revision: int | None = None) -> KeyValue:
        check_key(key)
        request = {"key": b64(key), "prev_kv": True}
        if revision is None:
            result = self._call("kv/deleterange", request, write=True)
            previous = (result.get("prev_kvs") or [None])[0]
            if not previous:
                raise not_found(key)
        else:
            txn = {
                "compare": [_mod_is(key, check_revision(revision)), _exists(key)],
                "success": [{"request_delete_range": request}],
                "failure": [{"request_range": {"key": b64(key)}}],
            }
            result = self._call("kv/txn", txn, write=True)
            if not result.get("succeeded"):
                current = _first(result, "response_range", "kvs")
                if current is None:
                    raise not_found(key)
                raise conflict(key, revision, decode_kv(current))
            previous = _first(result, "response_delete_range", "prev_kvs")
        prev = decode_kv(previous or {})
        self._release([prev.lease])
        return prev

    def delete_prefix(self, prefix: str) -> int:
        request = {**_range(check_prefix(prefix)), "prev_kv": True}
        result = self._call("kv/deleterange", request, write=True)
        self._release(int(kv.get("lease", 0)) for kv in result.get("prev_kvs") or [])
        return int(result.get("deleted", 0))

    # -- history ----------------------------------------------------------------

    def compact(self, revision: int) -> None:
        check_revision(revision, "compaction revision")
        try:
            self._call("kv/compaction", {"revision": str(revision)}, write=True)
        except EtcdRefused as error:
            if "has been compacted" in error.reason:
                return  # already compacted at least that far: nothing to do, as in the other backends
            raise

    def watch(self, prefix: str, since_revision: int) -> Watch:
        check_prefix(prefix)
        check_revision(since_revision, "watch revision")
        request = {**_range(prefix), "start_revision": str(since_revision + 1), "prev_kv": True}
        return Watch(prefix, since_revision, lambda watch: self._batches(watch, request, since_revision))

    def _batches(self, watch: Watch, request: dict[str, Any], since: int) -> Batches:
        if watch.closed:
            return
        stream = self._open_watch(request)
        watch.on_close(stream.wake)
        try:
            while not watch.closed:
                try:
                    message = stream.next(self.probe_every)
                except queue.Empty:
                    self._probe(stream.endpoint)
                    continue
                if message is None:
                    continue  # woken: look at watch.closed again
                events = self._watch_events(message, since, stream.endpoint)
                if events:
                    yield events
        finally:
            stream.close()
            with self._lock:
                self._streams.discard(stream)

    def _open_watch(self, request: dict[str, Any]) -> WatchStream:
        if self._closed:
            raise Unavailable("the etcd datastore is closed")
        errors: list[str] = []
        for index in self._ordered():
            endpoint = self.endpoints[index]
            try:
                stream = WatchStream(endpoint, request, self.timeout)
            except (OSError, ValueError) as error:
                errors.append(f"{endpoint}: {error or type(error).__name__}")
                continue
            with self._lock:
                self._streams.add(stream)
            self._preferred = index
            return stream
        raise self._unreachable(errors)

    def _probe(self, endpoint: str) -> None:
        """A linearizable count on ``endpoint``: fails fast if the member hangs or lost its quorum."""
        payload = {"key": b64("/"), "count_only": True}
        try:
            status, body = post(endpoint, "kv/range", payload, min(self.timeout, self.probe_every))
        except OSError as error:
            raise Unavailable(f"etcd at {endpoint} stopped answering ({error or 'timed out'})") from None
        if status != 200:
            raise Unavailable(f"etcd at {endpoint} cannot serve reads (HTTP {status}: {body[:200]!r})")

    def _watch_events(self, message: dict[str, Any], since: int, endpoint: str) -> builtins.list[Event]:
        if "error" in message:
            error = message["error"]
            detail = error.get("message", error) if isinstance(error, dict) else error
            raise Unavailable(f"etcd watch at {endpoint} failed: {detail}")
        result = message.get("result") or {}
        if result.get("canceled"):
            compacted = int(result.get("compact_revision", 0))
            if compacted:
                raise Compacted(
                    f"etcd at {endpoint} compacted its history to revision {compacted}; cannot watch from "
                    f"{since}: re-list and watch from the list's revision",
                    since,
                    compacted,
                )
            raise Unavailable(f"etcd at {endpoint} cancelled the watch: {result.get('cancel_reason', '')}")
        raw = result.get("events") or []
        expiries = self._expiries(event.get("kv") or {} for event in raw if event.get("type") != "DELETE")
        events: builtins.list[Event] = []
        for event in raw:
            kv, previous = event.get("kv") or {}, event.get("prev_kv")
            prev = decode_kv(previous) if previous else None
            if event.get("type") == "DELETE":
                events.append(
                    Event(EventType.DELETE, tombstone(decode_kv(kv).key, int(kv.get("mod_revision", 0))), prev)
                )
            else:  # PUT: the gateway omits the enum's zero value
                lease = int(kv.get("lease", 0))
                events.append(Event(EventType.PUT, decode_kv(kv, expiries.get(lease) if lease else None), prev))
        return events

    def close(self) -> None:
        self._closed = True
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            stream.close()
        for client in self._clients:
            client.session.close()
