"""etcd v3's JSON gateway on the wire: base64 fields, error bodies, and the watch stream.

Kept apart from :mod:`pycni.datastore.etcd` so that module reads as the
contract's mapping onto etcd requests, and this one as HTTP plumbing.

etcd3gw's own ``watch()`` hides stream errors, compaction and a dead server
(its iterator would block forever), so the watch stream is read here with
``http.client`` by one thread per watch.
"""

from __future__ import annotations

import base64
import http.client
import json
import queue
import re
import socket
import threading
from contextlib import suppress
from typing import Any
from urllib.parse import urlsplit

from etcd3gw import exceptions as etcd_errors

from pycni.datastore.errors import Unavailable
from pycni.datastore.model import KeyValue

API_PATH = "/v3/"  # etcd >= 3.4 (Debian 12 ships 3.4); skips etcd3gw's /version discovery round trip
# The part of a requests/urllib3 error message a person needs: "[Errno 111] Connection refused".
_ERRNO = re.compile(r"\[Errno (-?\d+)\] [^'\")]+")
# Connect failures: the request never reached etcd, so even a write may go to the next endpoint.
# ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, and getaddrinfo's EAI_NONAME / EAI_AGAIN.
_NOT_SENT_ERRNOS = {111, 113, 101, -2, -3}


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def unb64(text: str) -> str:
    """etcd holds bytes; a value another client wrote that is not UTF-8 reads with U+FFFD in place."""
    return base64.b64decode(text).decode(errors="replace")


def decode_kv(kv: dict[str, Any], expires_at: float | None = None) -> KeyValue:
    """A gateway ``mvccpb.KeyValue`` (int64s as strings, zero values omitted) as a :class:`KeyValue`."""
    return KeyValue(
        key=unb64(kv.get("key", "")),
        value=unb64(kv.get("value", "")),
        create_revision=int(kv.get("create_revision", 0)),
        mod_revision=int(kv.get("mod_revision", 0)),
        version=int(kv.get("version", 0)),
        lease=int(kv.get("lease", 0)),
        expires_at=expires_at,
    )


def reason(error: etcd_errors.Etcd3Exception) -> str:
    """What went wrong, in a line: etcd's own message, or the socket error."""
    text = error.detail_text or str(error) or type(error).__name__
    with suppress(ValueError, TypeError, AttributeError, KeyError):
        return str(json.loads(text)["message"])  # etcd's error JSON
    if isinstance(error, etcd_errors.ConnectionTimeoutError):
        return "timed out"
    match = _ERRNO.search(text)
    return match.group(0) if match else text.splitlines()[0][:200]


def grpc_code(error: etcd_errors.Etcd3Exception) -> int | None:
    """The gRPC status code of etcd's error JSON (3: invalid argument, 11: out of range, ...), None if none."""
    with suppress(ValueError, TypeError, AttributeError, KeyError):
        return int(json.loads(error.detail_text or "")["code"])
    return None


def not_sent(error: etcd_errors.Etcd3Exception) -> bool:
    """True when the connection failed before the request left: retrying elsewhere cannot apply a write twice."""
    text = error.detail_text or str(error)
    if isinstance(error, etcd_errors.ConnectionTimeoutError):
        return "ConnectTimeout" in text
    match = _ERRNO.search(text)
    if match is None or not isinstance(error, etcd_errors.ConnectionFailedError):
        return False
    return int(match.group(1)) in _NOT_SENT_ERRNOS


def connection(endpoint: str, timeout: float) -> http.client.HTTPConnection:
    url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    return cls(url.hostname or "localhost", url.port or 2379, timeout=timeout)


def post(endpoint: str, path: str, payload: dict[str, Any], timeout: float) -> tuple[int, bytes]:
    """One request on a fresh connection with its own timeout (the watch's probe)."""
    conn = connection(endpoint, timeout)
    try:
        conn.request("POST", API_PATH + path, body=json.dumps(payload), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class WatchStream:
    """One ``/v3/watch`` response stream; a thread turns its JSON lines into queue items.

    The reader blocks without a timeout (a read timeout would corrupt the chunked
    stream); ``close()`` shuts the socket down, which wakes it. ``wake()`` puts
    a None in the queue, so a consumer blocked on it looks at its watch again.
    """

    def __init__(self, endpoint: str, request: dict[str, Any], timeout: float) -> None:
        self.endpoint = endpoint
        self.queue: queue.Queue[dict[str, Any] | BaseException | None] = queue.Queue()
        self._conn = connection(endpoint, timeout)
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

    def next(self, timeout: float) -> dict[str, Any] | None:
        """The next message, None if woken; ``queue.Empty`` after ``timeout`` s of silence; Unavailable if it broke."""
        item = self.queue.get(timeout=timeout)
        if isinstance(item, BaseException):
            why = "the datastore was closed" if self._closed else str(item) or type(item).__name__
            raise Unavailable(f"etcd watch at {self.endpoint} lost: {why}; watch again from the last revision")
        return item

    def wake(self) -> None:
        self.queue.put(None)

    def close(self) -> None:
        self._closed = True
        sock = self._conn.sock
        if sock is not None:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the reader; closing under it would race
        self._thread.join(timeout=2)
        self._conn.close()
