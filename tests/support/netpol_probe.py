"""Real servers and probes for the conformance matrix: every pod serves, every pair is tried at once.

Upstream's netpol e2e runs an agnhost server per pod and one ``agnhost
connect`` per cell. Here one thread of the test process holds a listening TCP
socket and a bound UDP socket for every port in every pod's namespace (a
socket keeps the namespace it was made in), accepts and echoes; a probe round
makes one socket per (source, target) in the source's namespace, starts every
connect or datagram without blocking, and waits on them together. A round
costs one timeout however many cells are denied (the policy drops, so a
denied cell is a silence, not a refusal).
"""

from __future__ import annotations

import errno
import selectors
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from pycni.net import netns


@dataclass(frozen=True)
class Cell:
    source: str  # a pod string, x/a
    target: str
    address: str  # the target's address
    port: int
    protocol: str  # TCP or UDP


class Servers:
    """TCP and UDP servers on ``ports`` in each namespace, answered by one thread until :meth:`close`."""

    def __init__(self, namespaces: Iterable[str], ports: Iterable[int]) -> None:
        self._selector = selectors.DefaultSelector()
        self._sockets: list[socket.socket] = []
        self._wake_read, self._wake_write = socket.socketpair()
        self._selector.register(self._wake_read, selectors.EVENT_READ, "wake")
        try:
            for path in namespaces:
                for port in ports:
                    self._serve(path, port)
        except BaseException:
            self.close()
            raise
        self._thread = threading.Thread(target=self._loop, name="netpol-servers", daemon=True)
        self._thread.start()

    def _serve(self, path: str, port: int) -> None:
        with netns.entered(path):
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sockets += [tcp, udp]
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind(("0.0.0.0", port))
        tcp.listen(128)
        udp.bind(("0.0.0.0", port))
        for server, kind in ((tcp, "tcp"), (udp, "udp")):
            server.setblocking(False)
            self._selector.register(server, selectors.EVENT_READ, kind)

    def _loop(self) -> None:
        while True:
            for key, _ in self._selector.select():
                server = key.fileobj
                assert isinstance(server, socket.socket)
                if key.data == "wake":
                    return
                try:
                    if key.data == "tcp":
                        server.accept()[0].close()  # the handshake is the answer
                    else:
                        data, peer = server.recvfrom(512)
                        server.sendto(data, peer)
                except (BlockingIOError, ConnectionError):
                    continue

    def close(self) -> None:
        self._wake_write.send(b"x")
        thread = getattr(self, "_thread", None)
        if thread is not None:
            thread.join(5)
        for item in [*self._sockets, self._wake_read, self._wake_write]:
            item.close()
        self._selector.close()


def probe(cells: list[Cell], namespace_of: dict[str, str], timeout: float) -> dict[Cell, bool]:
    """Try every cell at once from its source's namespace; a cell is connected if answered within ``timeout``."""
    selector = selectors.DefaultSelector()
    open_sockets: dict[socket.socket, Cell] = {}
    answers: dict[Cell, bool] = {}
    try:
        by_source: dict[str, list[Cell]] = {}
        for cell in cells:
            by_source.setdefault(cell.source, []).append(cell)
        for source, own in by_source.items():
            with netns.entered(namespace_of[source]):
                made = [(cell, _socket(cell.protocol)) for cell in own]
            for cell, sock in made:
                open_sockets[sock] = cell
                if _start(sock, cell):
                    selector.register(sock, selectors.EVENT_WRITE if cell.protocol == "TCP" else selectors.EVENT_READ)
                else:
                    answers[cell] = False
        deadline = time.monotonic() + timeout
        while len(answers) < len(cells) and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                answers[open_sockets[sock]] = _answered(sock, open_sockets[sock])
                selector.unregister(sock)
        for cell in cells:
            answers.setdefault(cell, False)  # silence: dropped
        return answers
    finally:
        for sock in open_sockets:
            sock.close()
        selector.close()


def _socket(protocol: str) -> socket.socket:
    kind = socket.SOCK_STREAM if protocol == "TCP" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind)
    sock.setblocking(False)
    return sock


def _start(sock: socket.socket, cell: Cell) -> bool:
    """Begin the connect (TCP) or send the datagram (UDP); False if it failed at once."""
    if cell.protocol == "TCP":
        return sock.connect_ex((cell.address, cell.port)) in (0, errno.EINPROGRESS)
    try:
        sock.connect((cell.address, cell.port))
        sock.send(b"probe")
    except OSError:
        return False
    return True


def _answered(sock: socket.socket, cell: Cell) -> bool:
    if cell.protocol == "TCP":
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    try:
        return sock.recv(512) == b"probe"
    except OSError:  # ECONNREFUSED: an ICMP port unreachable came back
        return False
