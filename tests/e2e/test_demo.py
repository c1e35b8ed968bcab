"""``make demo`` (``pycni demo``) runs the seed's three cases end to end and leaves nothing behind."""

from __future__ import annotations

import subprocess

from tests.support.netns import run


def test_demo_runs_and_cleans_up(pycni_bin: str) -> None:
    before_links = run("ip", "-o", "link").stdout
    proc = subprocess.run([pycni_bin, "demo"], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert proc.stdout.count("Hello from a container networked by pycni") == 3
    # Case 3: each pod fetched the other's page across vxlan, node 1 fetched pod 2's through its host port.
    assert proc.stdout.count("Hello from pod 2 on pycni-demo-node2") == 2
    assert proc.stdout.count("Hello from pod 1 on pycni-demo-node1") == 1
    assert "flannel.1" in proc.stdout and "FLANNEL_SUBNET=10.244." in proc.stdout
    assert "Done: all three cases worked and nothing was left behind" in proc.stdout
    assert "pycni-demo" not in run("ip", "netns", "list").stdout
    assert run("ip", "-o", "link").stdout == before_links
