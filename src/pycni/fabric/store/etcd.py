"""Leases in etcd v3, exactly where and how Flannel keeps them (``pkg/subnet/etcd/registry.go``).

We talk to etcd's JSON gateway (``/v3/...`` on the client port) through
``etcd3gw``'s request helper, so a Flannel node and a pycni node can share one
etcd. The mapping:

* config: ``<prefix>/config``; a lease: ``<prefix>/subnets/<key>`` = ``LeaseAttrs`` JSON;
* TTL: an etcd lease (``lease/grant``) attached to the put; etcd deletes the key
  itself when it expires. No TTL (a reservation) is a put without a lease;
* create: ``kv/txn`` ``If(Version(key) == 0) Then(Put)``; renewal: the key's etcd lease
  refreshed (``lease/keepalive``) and the value put under it (``kv/txn``
  ``If(Lease(key) == id) Then(Put ignore_lease)``); a put with a fresh lease
  only when the TTL changed or the key has none (Flannel always grants anew);
* watch: a ``/v3/watch`` stream from ``since + 1`` with ``prev_kv``, so a DELETE
  (also a lease expiry) still carries the attributes of what went away.

etcd3gw's own ``watch()`` hides stream errors, compaction and a dead server
(its iterator would block forever), so the watch stream is read here with
``http.client`` by one thread per watch; while it is quiet, the member is
probed every ``PROBE_EVERY`` seconds, so a hung or unreachable etcd surfaces
as :class:`StoreUnavailable` within a few seconds.
"""

from __future__ import annotations

import base64
import http.client
import json
import queue
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from typing import Any
from urllib.parse import urlsplit

import etcd3gw
from etcd3gw import exceptions as etcd_errors

from pycni.fabric.model import DEFAULT_PREFIX, ConfigError, EventType, Lease, LeaseEvent
from pycni.fabric.store import KeyLayout, StoreUnavailable

API_PATH = "/v3/"  # etcd >= 3.4 (Debian 12 ships 3.4); skips etcd3gw's /version discovery round trip
PROBE_EVERY = 2.0  # seconds of watch silence before checking the member still answers
_EXAMPLE_CONFIG = '{"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}'
# The part of a requests/urllib3 error message a person needs: "[Errno 111] Connection refused".
_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")]+")
# Failures that mean "this member cannot serve now": try the next endpoint.
_UNREACHABLE = (
    etcd_errors.ConnectionFailedError,
    etcd_errors.ConnectionTimeoutError,
    etcd_errors.InternalServerError,
)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode(errors="replace")


def _reason(error: etcd_errors.Etcd3Exception) -> str:
    text = error.detail_text or str(error) or type(error).__name__
    with suppress(ValueError, TypeError, AttributeError):
        return str(json.loads(text)["message"])  # etcd's own error JSON
    if isinstance(error, etcd_errors.ConnectionTimeoutError):
        return "timed out"
    match = _ERRNO.search(text)
    return match.group(0) if match else text.splitlines()[0][:200]


class EtcdStore(KeyLayout):
    """The :class:`~pycni.fabric.store.Store` contract on etcd v3; opening it contacts nobody."""

    def __init__(self, endpoints: list[str], prefix: str = DEFAULT_PREFIX, timeout: float = 5) -> None:
        if not endpoints:
            raise ConfigError("no etcd endpoints given (e.g. http://127.0.0.1:2379)")
        self.endpoints = [endpoint.strip().rstrip("/") for endpoint in endpoints]
        super().__init__(prefix)
        self.timeout = timeout
        self._clients = [self._client(endpoint) for endpoint in self.endpoints]
        self._preferred = 0  # the endpoint that answered last is tried first
        self._watches: set[_WatchStream] = set()
        self._lock = threading.Lock()
        self._closed = False

    def _client(self, endpoint: str) -> etcd3gw.Etcd3Client:
        url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"etcd endpoint {endpoint!r} is not an http(s)://host:port URL")
        port = url.port or 2379
        return etcd3gw.client(
            host=url.hostname, port=port, protocol=url.scheme, timeout=self.timeout, api_path=API_PATH
        )

    # -- requests ---------------------------------------------------------------

    def _ordered(self) -> list[int]:
        first = self._preferred
        return [first, *(index for index in range(len(self._clients)) if index != first)]

    def _unavailable(self, errors: list[str]) -> StoreUnavailable:
        return StoreUnavailable(f"etcd is unreachable at {', '.join(self.endpoints)} ({'; '.join(errors)})")

    def _call(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST one gateway request, trying the endpoints in order; every failure is StoreUnavailable."""
        if self._closed:
            raise StoreUnavailable("the etcd store is closed")
        errors: list[str] = []
        for index in self._ordered():
            client = self._clients[index]
            try:
                result = client.post(client.get_url(path), json=payload)
            except _UNREACHABLE as error:
                errors.append(f"{self.endpoints[index]}: {_reason(error)}")
                continue
            except etcd_errors.Etcd3Exception as error:
                raise StoreUnavailable(f"etcd at {self.endpoints[index]} refused {path}: {_reason(error)}") from None
            except ValueError as error:  # not JSON: something else listens there
                errors.append(f"{self.endpoints[index]}: not an etcd v3 gateway ({error})")
                continue
            self._preferred = index
            return result if isinstance(result, dict) else {}
        raise self._unavailable(errors)

    def _grant(self, ttl: int) -> str:
        return str(self._call("lease/grant", {"TTL": ttl, "ID": 0})["ID"])

    def _revoke(self, lease_id: str) -> None:
        """Best effort: an orphaned etcd lease only costs memory until it expires."""
        with suppress(StoreUnavailable):
            self._call("lease/revoke", {"ID": lease_id})

    def _revoke_orphan(self, previous: dict[str, Any] | None) -> None:
        """Revoke the etcd lease a renewal or delete left without a key (Flannel leaves it to expire)."""
        lease_id = (previous or {}).get("lease")
        if lease_id and lease_id != "0":
            self._revoke(str(lease_id))

    def _remaining(self, lease_id: str | None) -> int | None:
        """Whole seconds left on an etcd lease (-1: gone), None for no lease (a reservation); Flannel's TimeToLive."""
        if not lease_id or lease_id == "0":
            return None
        return int(self._call("lease/timetolive", {"ID": lease_id}).get("TTL", -1))

    @staticmethod
    def _expiry(remaining: int | None) -> float | None:
        return None if remaining is None else time.time() + max(remaining, 0)

    # -- the Store contract -----------------------------------------------------

    def get_network_config(self) -> str:
        result = self._call("kv/range", {"key": _b64(self.config_key)})
        kvs = result.get("kvs") or []
        if not kvs:
            raise ConfigError(
                f"no network config at {self.config_key} in etcd ({', '.join(self.endpoints)}); "
                f"write one, e.g.: etcdctl put {self.config_key} '{_EXAMPLE_CONFIG}'"
            )
        return _unb64(kvs[0].get("value", ""))

    def list_leases(self) -> tuple[list[Lease], int]:
        result = self._call("kv/range", {"key": _b64(self.subnets_prefix), "range_end": _b64(self.subnets_end)})
        leases: list[Lease] = []
        for kv in result.get("kvs") or []:
            lease = self._decode(kv)
            if lease is None:
                continue
            remaining = self._remaining(kv.get("lease"))
            if remaining is not None and remaining < 0:
                continue  # expired between the range and the TTL query; its DELETE follows
            leases.append(Lease(lease.subnet, lease.attrs, lease.ipv6_subnet, self._expiry(remaining)))
        return leases, int(result.get("header", {}).get("revision", 0))

    def create_lease(self, lease: Lease, ttl: int | None) -> bool:
        key = _b64(self.lease_key(lease))
        put: dict[str, Any] = {"key": key, "value": _b64(lease.attrs.to_json())}
        lease_id = None
        if ttl:
            lease_id = self._grant(ttl)
            put["lease"] = lease_id
        txn = {
            "compare": [{"key": key, "result": "EQUAL", "target": "VERSION", "version": 0}],
            "success": [{"request_put": put}],
            "failure": [],
        }
        try:
            succeeded = bool(self._call("kv/txn", txn).get("succeeded"))
        except StoreUnavailable:
            if lease_id:
                self._revoke(lease_id)
            raise
        if not succeeded and lease_id:
            self._revoke(lease_id)
        return succeeded

    def update_lease(self, lease: Lease, ttl: int | None) -> None:
        """Write the lease again with a fresh TTL, under the key's own etcd lease when it can be kept.

        Granting a new etcd lease, putting the key under it and revoking the
        old one leaves an etcd lease attached to nothing (for a day: the TTL)
        if the agent dies between two of those requests, so a restart or
        renewal refreshes the lease the key already has instead.
        """
        key, value = _b64(self.lease_key(lease)), _b64(lease.attrs.to_json())
        if ttl and self._renew_in_place(key, value, ttl):
            return
        put: dict[str, Any] = {"key": key, "value": value, "prev_kv": True}
        lease_id = None
        if ttl:
            lease_id = self._grant(ttl)
            put["lease"] = lease_id
        try:
            result = self._call("kv/put", put)
        except StoreUnavailable:
            if lease_id:
                self._revoke(lease_id)
            raise
        self._revoke_orphan(result.get("prev_kv"))

    def _renew_in_place(self, key: str, value: str, ttl: int) -> bool:
        """Refresh the etcd lease ``key`` is under and put ``value`` keeping it; False where it cannot be kept.

        It cannot be kept when the key is gone or has no etcd lease (a
        reservation becoming a lease), when its lease was granted for
        another TTL, or when the lease ran out meanwhile (the txn's compare
        then fails and nothing is written).
        """
        kvs = self._call("kv/range", {"key": key}).get("kvs") or []
        lease_id = str(kvs[0].get("lease", "0")) if kvs else "0"
        if lease_id == "0":
            return False
        granted = self._call("lease/timetolive", {"ID": lease_id})
        if int(granted.get("grantedTTL", 0)) != ttl or int(granted.get("TTL", -1)) <= 0:
            return False
        refreshed = self._call("lease/keepalive", {"ID": lease_id})
        if int((refreshed.get("result") or {}).get("TTL", -1)) <= 0:
            return False
        txn = {
            "compare": [{"key": key, "result": "EQUAL", "target": "LEASE", "lease": lease_id}],
            "success": [{"request_put": {"key": key, "value": value, "ignore_lease": True}}],
            "failure": [],
        }
        return bool(self._call("kv/txn", txn).get("succeeded"))

    def delete_lease(self, lease: Lease) -> None:
        result = self._call("kv/deleterange", {"key": _b64(self.lease_key(lease)), "prev_kv": True})
        for previous in result.get("prev_kvs") or []:
            self._revoke_orphan(previous)

    def watch_leases(self, since_revision: int) -> Iterator[list[LeaseEvent]]:
        request = {
            "key": _b64(self.subnets_prefix),
            "range_end": _b64(self.subnets_end),
            "start_revision": since_revision + 1,
            "prev_kv": True,
        }
        stream = self._open_watch(request)
        try:
            while True:
                try:
                    message = stream.next(PROBE_EVERY)
                except queue.Empty:
                    self._probe(stream.endpoint)
                    continue
                events = self._watch_events(message, since_revision, stream.endpoint)
                if events:
                    yield events
        finally:
            stream.close()
            with self._lock:
                self._watches.discard(stream)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            streams = list(self._watches)
        for stream in streams:
            stream.close()
        for client in self._clients:
            client.session.close()

    # -- decoding ---------------------------------------------------------------

    def _decode(self, kv: dict[str, Any], value: str | None = None) -> Lease | None:
        """A Lease from an etcd key-value (``value`` overrides, for DELETEs); None for a foreign key."""
        text = value if value is not None else _unb64(kv.get("value", ""))
        return self.decode_lease(_unb64(kv.get("key", "")), text)

    def _watch_events(self, message: dict[str, Any], since: int, endpoint: str) -> list[LeaseEvent]:
        if "error" in message:
            error = message["error"]
            detail = error.get("message", error) if isinstance(error, dict) else error
            raise StoreUnavailable(f"etcd watch at {endpoint} failed: {detail}")
        result = message.get("result") or {}
        if result.get("canceled"):
            compacted = int(result.get("compact_revision", 0))
            if compacted:
                raise StoreUnavailable(
                    f"etcd compacted its history past revision {since} (now {compacted}); re-list and watch again"
                )
            raise StoreUnavailable(f"etcd at {endpoint} cancelled the watch: {result.get('cancel_reason', '')}")
        events: list[LeaseEvent] = []
        for event in result.get("events") or []:
            kv = event.get("kv") or {}
            if event.get("type") == "DELETE":
                previous = (event.get("prev_kv") or {}).get("value")
                lease = self._decode(kv, _unb64(previous) if previous else '{"PublicIP":""}')
                if lease is not None:
                    events.append(LeaseEvent(EventType.REMOVED, lease))
            else:  # PUT: the gateway omits the enum's zero value
                lease = self._decode(kv)
                if lease is not None:
                    expiration = self._expiry(self._remaining(kv.get("lease")))
                    events.append(
                        LeaseEvent(EventType.ADDED, Lease(lease.subnet, lease.attrs, lease.ipv6_subnet, expiration))
                    )
        return events

    # -- the watch stream -------------------------------------------------------

    def _open_watch(self, request: dict[str, Any]) -> _WatchStream:
        if self._closed:
            raise StoreUnavailable("the etcd store is closed")
        errors: list[str] = []
        for index in self._ordered():
            endpoint = self.endpoints[index]
            try:
                stream = _WatchStream(endpoint, request, self.timeout)
            except (OSError, http.client.HTTPException, ValueError) as error:
                errors.append(f"{endpoint}: {error}")
                continue
            with self._lock:
                self._watches.add(stream)
            self._preferred = index
            return stream
        raise self._unavailable(errors)

    def _probe(self, endpoint: str) -> None:
        """A linearizable count on ``endpoint``: fails fast if the member hangs or lost its quorum."""
        payload = {"key": _b64(self.config_key), "count_only": True}
        try:
            status, body = _post(endpoint, "kv/range", payload, min(self.timeout, PROBE_EVERY))
        except (OSError, http.client.HTTPException) as error:
            raise StoreUnavailable(f"etcd at {endpoint} stopped answering ({error or 'timed out'})") from None
        if status != 200:
            raise StoreUnavailable(f"etcd at {endpoint} cannot serve reads (HTTP {status}: {body[:200]!r})")


def _connection(endpoint: str, timeout: float) -> http.client.HTTPConnection:
    url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    return cls(url.hostname or "localhost", url.port or 2379, timeout=timeout)


def _post(endpoint: str, path: str, payload: dict[str, Any], timeout: float) -> tuple[int, bytes]:
    conn = _connection(endpoint, timeout)
    try:
        conn.request("POST", API_PATH + path, body=json.dumps(payload), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class _WatchStream:
    """One ``/v3/watch`` response stream; a thread turns its JSON lines into queue items.

    The reader blocks without a timeout (a read timeout would corrupt the chunked
    stream); ``close()`` shuts the socket down, which wakes it.
    """

    def __init__(self, endpoint: str, request: dict[str, Any], timeout: float) -> None:
        self.endpoint = endpoint
        self.queue: queue.Queue[dict[str, Any] | BaseException] = queue.Queue()
        self._conn = _connection(endpoint, timeout)
        try:
            body = json.dumps({"create_request": request})
            self._conn.request("POST", API_PATH + "watch", body=body, headers={"Content-Type": "application/json"})
            self._response = self._conn.getresponse()
            if self._response.status != 200:
                detail = self._response.read(300)
                raise ValueError(f"HTTP {self._response.status} {detail!r}")
            assert self._conn.sock is not None
            self._conn.sock.settimeout(None)
        except BaseException:
            self._conn.close()
            raise
        self._closed = False
        self._thread = threading.Thread(target=self._read, name=f"etcd-watch {endpoint}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while True:
                line = self._response.readline()
                if not line:
                    raise ConnectionError("etcd closed the watch stream")
                if line.strip():
                    self.queue.put(json.loads(line))
        except Exception as error:  # noqa: BLE001 - whatever ends the stream is handed to the consumer
            self.queue.put(error)

    def next(self, timeout: float) -> dict[str, Any]:
        """The next message; ``queue.Empty`` after ``timeout`` s of silence; StoreUnavailable if the stream broke."""
        item = self.queue.get(timeout=timeout)
        if isinstance(item, BaseException):
            reason = "the store was closed" if self._closed else str(item) or type(item).__name__
            raise StoreUnavailable(f"etcd watch at {self.endpoint} lost: {reason}")
        return item

    def close(self) -> None:
        self._closed = True
        sock = self._conn.sock
        if sock is not None:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the reader; closing under it would race
        self._thread.join(timeout=2)
        self._conn.close()
