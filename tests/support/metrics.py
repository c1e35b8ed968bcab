"""Scrape a pycni metrics endpoint and read it with prometheus_client's own text parser, as Prometheus would."""

from __future__ import annotations

import http.client
import socket
import subprocess

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by its name and sorted labels."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def series(found: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample called ``name``, by its labels."""
    return {labels: v for (sample, labels), v in found.items() if sample == name}


def get_unix(path: str, timeout: float = 10) -> tuple[int, str]:
    """``GET /metrics`` over a unix socket: the status and the body."""

    class Connection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(path)

    connection = Connection("localhost", timeout=timeout)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def scrape_unix(path: str) -> Samples:
    status, text = get_unix(path)
    assert status == 200, text
    return parse(text)


def scrape_tcp(netns: str, host: str, port: int) -> Samples:
    """Scrape ``host:port`` from inside ``netns`` (curl in the namespace: its loopback is its own)."""
    url = f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"
    proc = subprocess.run(
        ["ip", "netns", "exec", netns, "curl", "-sS", "-m", "10", "-f", url],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return parse(proc.stdout)
