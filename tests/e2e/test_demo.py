"""``make demo`` (``pycni demo``) runs the seed's four cases end to end and leaves nothing behind.

Case 4 alone, with the machine's state compared in full, is tests/e2e/test_demo_calico.py.
"""

from __future__ import annotations

import subprocess

from tests.support.netns import run


def test_demo_runs_and_cleans_up(pycni_bin: str) -> None:
    before_links = run("ip", "-o", "link").stdout
    proc = subprocess.run([pycni_bin, "demo"], capture_output=True, text=True, check=False, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert proc.stdout.count("Hello from a container networked by pycni") == 3
    # Case 3: each pod fetched the other's page across vxlan, node 1 fetched pod 2's through its host port.
    assert proc.stdout.count("Hello from pod 2 on pycni-demo-node2") == 2
    assert proc.stdout.count("Hello from pod 1 on pycni-demo-node1") == 1
    assert "flannel.1" in proc.stdout and "FLANNEL_SUBNET=10.244." in proc.stdout
    # Case 4: the seed's Calico Installation, BGP within a subnet, VXLAN across, pages, natOutgoing.
    assert "| 198.51.100.12 | node-to-node mesh | up" in proc.stdout
    assert "via 198.51.100.12 dev eth0 proto bird metric 32" in proc.stdout
    assert proc.stdout.count("dev vxlan.calico proto 112 onlink") >= 2
    assert "Hello from pod 3 on pycni-demo-cal-node3" in proc.stdout
    assert "whoami\n198.51.100.11\n" in proc.stdout
    assert "left behind on the nodes (pod veths, nft rules, BIRD): {}" in proc.stdout
    assert "Done: all four cases worked and nothing was left behind" in proc.stdout
    assert "pycni-demo" not in run("ip", "netns", "list").stdout
    assert run("ip", "-o", "link").stdout == before_links
