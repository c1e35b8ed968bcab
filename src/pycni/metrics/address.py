"""``--metrics-addr``: where a pycni process serves its metrics, parsed and checked before anything starts.

Accepted forms::

    127.0.0.1:9100      an IPv4 address and a port
    [::1]:9100          an IPv6 address in brackets and a port
    localhost:9100      127.0.0.1
    9100, :9100         no host: 127.0.0.1 (never every interface, unlike most exporters' default)
    unix:/run/x.sock    a unix socket (absolute path), owner-only like the daemon's own socket

The decision on exposure: metrics name networks, ranges and plugin activity,
and a node's interfaces include the pod-facing bridges, so what is served by
default stays on the node. A loopback address (127.0.0.0/8, ::1) or a unix
socket is always accepted. A wildcard (``0.0.0.0``, ``::``) is refused: it
would serve pods as well as the cluster's Prometheus. A specific non-loopback
unicast address of the node is accepted because the user typed that host
(the usual way to let a Prometheus server elsewhere scrape the node); the
process logs a warning that the endpoint is reachable from the network.
Host names other than ``localhost`` are refused: a name may resolve to
anything, including a wildcard.

This module imports only the standard library: the CLI builds its parser
with it, and that must not cost the start-up of every ``pycni`` command.
"""

from __future__ import annotations

import argparse
import ipaddress
from dataclasses import dataclass

UNIX_PREFIX = "unix:"
METRICS_ADDR_HELP = "serve Prometheus metrics on 127.0.0.1:PORT, [::1]:PORT or unix:/PATH (default: off)"


class AddressError(ValueError):
    """A ``--metrics-addr`` value that is malformed or not allowed; the message says what to write instead."""


@dataclass(frozen=True)
class ListenAddress:
    """A checked listen address: TCP ``host``:``port``, or a unix socket ``path``."""

    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def is_unix(self) -> bool:
        return bool(self.path)

    @property
    def loopback(self) -> bool:
        """Reachable from this node only (a unix socket or a loopback address)."""
        return self.is_unix or ipaddress.ip_address(self.host).is_loopback

    def __str__(self) -> str:
        if self.is_unix:
            return UNIX_PREFIX + self.path
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse(text: str) -> ListenAddress | None:
    """``text`` as a listen address; ``""`` is ``None`` (metrics off). Raises :class:`AddressError`."""
    text = text.strip()
    if not text:
        return None
    if text.startswith(UNIX_PREFIX):
        return _unix(text[len(UNIX_PREFIX) :])
    host, port = _split(text)
    return ListenAddress(host=_host(host, text), port=_port(port, text))


def metrics_address(text: str) -> ListenAddress | None:
    """:func:`parse` as an argparse ``type``: a bad value is a usage error saying what to write."""
    try:
        return parse(text)
    except AddressError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _unix(path: str) -> ListenAddress:
    if not path.startswith("/"):
        raise AddressError(f"unix:{path}: give an absolute path, e.g. unix:/run/pycni/metrics.sock")
    if "\0" in path:
        raise AddressError("unix: the path must not contain NUL")
    return ListenAddress(path=path)


def _split(text: str) -> tuple[str, str]:
    """``(host, port)`` of ``HOST:PORT``, ``[V6]:PORT``, ``:PORT`` or ``PORT``."""
    if text.isdigit():
        return "", text
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise AddressError(f"{text!r}: write an IPv6 address as [ADDRESS]:PORT, e.g. [::1]:9100")
        return host, rest[1:]
    host, sep, port = text.rpartition(":")
    if not sep:
        raise AddressError(f"{text!r}: expected HOST:PORT (e.g. 127.0.0.1:9100), [::1]:PORT or unix:/PATH")
    if ":" in host:
        raise AddressError(f"{text!r}: put an IPv6 address in brackets, e.g. [::1]:9100")
    return host, port


def _host(host: str, text: str) -> str:
    if host in ("", "localhost"):
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise AddressError(
            f"{text!r}: {host!r} is not an IP address; give one (127.0.0.1, [::1], or this node's address)"
        ) from None
    if address.is_unspecified:
        raise AddressError(
            f"{text!r}: {host} would serve metrics on every interface, the pods' bridges included; "
            "give 127.0.0.1, [::1], unix:/PATH, or one address of this node"
        )
    if address.is_multicast or (address.version == 4 and host == "255.255.255.255"):
        raise AddressError(f"{text!r}: {host} is not a unicast address this node can listen on")
    return address.compressed


def _port(port: str, text: str) -> int:
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise AddressError(f"{text!r}: the port must be a number from 1 to 65535")
    return int(port)
