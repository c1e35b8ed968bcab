"""``pycni demo`` Case 4 (the seed's Calico Installation on four nodes) shows what it says and leaves nothing behind.

The machine's state is taken before the demo, when nothing of it exists yet,
and compared after: the root namespace's links and nft ruleset, the
namespaces, the bird and calico-node processes, and the files under every
path the demo or Calico's defaults could write (its work directory under the
temporary directory, /var/lib/calico, /var/run/calico, /var/lib/pycni,
/var/log/calico, pycni's per-namespace files under /run/pycni).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

import pytest

from tests.support.netns import run

PATHS = ["/var/lib/calico", "/var/run/calico", "/var/lib/pycni", "/var/log/calico", "/run/pycni"]


def processes() -> set[tuple[int, str]]:
    """(pid, command line) of every BIRD and calico-node process."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = [a.decode(errors="replace") for a in handle.read().split(b"\0") if a]
        except OSError:
            continue
        if argv and (os.path.basename(argv[0]) == "bird" or "calico-node" in argv):
            found.add((int(entry), " ".join(argv)))
    return found


def files() -> set[str]:
    found = set()
    for root in PATHS:
        for directory, dirs, names in os.walk(root):
            found.update(os.path.join(directory, n) for n in dirs + names)
    tmp = tempfile.gettempdir()
    found.update(os.path.join(tmp, n) for n in os.listdir(tmp) if n.startswith("pycni-demo-"))
    return found


def machine_state() -> dict[str, object]:
    return {
        "links": run("ip", "-o", "link").stdout,
        "nft": run("nft", "list", "ruleset").stdout,
        "namespaces": sorted(line.split()[0] for line in run("ip", "netns", "list").stdout.splitlines() if line),
        "processes": processes(),
        "files": files(),
    }


def test_case4_shows_bgp_vxlan_pages_and_nat_then_leaves_the_machine_as_it_was() -> None:
    if not os.access("/usr/sbin/bird", os.X_OK):
        pytest.skip("BIRD 2 is not installed (apt-get install bird2)")
    before = machine_state()
    assert not [ns for ns in before["namespaces"] if ns.startswith("pycni-demo")], "a previous demo's namespaces"  # type: ignore[attr-defined]
    proc = subprocess.run(
        [sys.executable, "-m", "pycni.cli.demo_calico"], capture_output=True, text=True, check=False, timeout=180
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr

    # calicoctl node status on node1: the three other nodes, each an Established mesh session.
    status = out.split("calicoctl node status", 1)[1].split("IPv6 BGP status", 1)[0]
    peers = re.findall(r"\| (\S+) +\| node-to-node mesh \| up +\| \S+ +\| Established \|", status)
    assert sorted(peers) == ["198.51.100.12", "203.0.113.13", "203.0.113.14"]
    # node1's ip route: node2's block by BGP over eth0, node3's and node4's over vxlan.calico.
    routes = out.split("[pycni-demo-cal-node1] $ ip route\n", 1)[1].split("\n-> ", 1)[0]
    assert re.search(r"^10\.244\.\S+/26 via 198\.51\.100\.12 dev eth0 proto bird metric 32 $", routes, re.M)
    assert len(re.findall(r"^10\.244\.\S+/26 via 10\.244\.\S+ dev vxlan\.calico proto 112 onlink $", routes, re.M)) == 2
    assert re.search(r"^blackhole 10\.244\.\S+/26 proto 112 $", routes, re.M), "node1's own block"
    # Pages across the subnet and across the router; only the latter went through vxlan.calico.
    for page in ("pod 2 on pycni-demo-cal-node2", "pod 3 on pycni-demo-cal-node3", "pod 4 on pycni-demo-cal-node4"):
        assert f"Hello from {page} (10.244." in out
    vxlan = r"sent 0 packets for the fetch from pod 2 \(same subnet\) and [1-9]\d* for the fetch from pod 3"
    assert re.search(vxlan, out), "only the cross-subnet fetch went through vxlan.calico"
    assert "all 12 pod-to-pod pairs fetched each other's pages" in out
    # natOutgoing: the outside host saw node1's and node3's addresses.
    assert "whoami\n198.51.100.11\n" in out and "whoami\n203.0.113.13\n" in out
    assert "left behind on the nodes (pod veths, nft rules, BIRD): {}" in out
    assert "Done: Case 4 worked and nothing was left behind" in out

    after = machine_state()
    assert after["links"] == before["links"]
    assert after["nft"] == before["nft"]
    # Other suites' tests may start namespaces and BIRDs of their own meanwhile: the demo's carry its names.
    new_namespaces = set(after["namespaces"]) - set(before["namespaces"])  # type: ignore[call-overload]
    assert not [ns for ns in new_namespaces if ns.startswith("pycni-demo")]
    new_processes = after["processes"] - before["processes"]  # type: ignore[operator]
    assert not [argv for _, argv in new_processes if "pycni-demo" in argv]
    assert after["files"] - before["files"] == set()  # type: ignore[operator]


def test_case4_refuses_without_bird_saying_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from pycni.cli import demo_calico
    from pycni.cli.demo_shell import DemoFailed
    from pycni.fabric.calico import bird

    monkeypatch.setattr(bird, "BIRD", "/nonexistent/sbin/bird")
    with pytest.raises(DemoFailed, match="apt-get install bird2"):
        demo_calico.CalicoDemo.preflight()
