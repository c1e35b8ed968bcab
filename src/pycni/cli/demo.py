"""``pycni demo``: the seed article's Cases 1 and 2, its Flannel and its Calico set-ups, end to end, then cleaned up.

Cases 1 and 2 happen inside two namespaces the demo makes: ``pycni-demo-node``
plays the host (so the machine's own network is never touched) and
``pycni-demo-ctr`` plays the container, running busybox httpd on port 80.

* Case 1 runs the ``bridge`` plugin directly with the article's ``bridge.json``,
  as ``CNI_COMMAND=ADD ... bridge < bridge.json``, then fetches the page.
* Case 2 runs the article's ``portmap.conflist`` (bridge + portmap) with
  ``pycni add``/``pycni del`` (cnitool's verbs) and fetches the page through
  host port 8080.
* Case 3 (``demo_fabric``) runs the article's Flannel ConfigMap on two nodes:
  ``pycni flanneld`` with vxlan and the embedded store, pods through the
  ``flannel`` CNI plugin, pod-to-pod across the overlay.
* Case 4 (``demo_calico``) runs the article's Calico operator Installation
  (custom-resources.yaml) on four nodes in two subnets joined by a router:
  ``pycni calico-node`` with BIRD 2 (BGP full mesh) and the embedded store,
  pods through the ``calico`` CNI plugin with ``calico-ipam``, same-subnet
  routes by BGP, cross-subnet over ``vxlan.calico``, natOutgoing to an outside host.

Every plugin is pycni's own (loopback, bridge, host-local, portmap, flannel, calico, calico-ipam), installed
with ``pycni plugins install`` into the one directory on CNI_PATH.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

NODE = "pycni-demo-node"
CTR = "pycni-demo-ctr"
HOST_LOCAL_DIR = "/var/lib/cni/networks"

BRIDGE_JSON = {
    "cniVersion": "0.4.0",
    "name": "mynet",
    "type": "bridge",
    "bridge": "mynet0",
    "isDefaultGateway": True,
    "forceAddress": False,
    "ipMasq": True,
    "hairpinMode": True,
    "ipam": {"type": "host-local", "subnet": "10.10.0.0/16"},
}

PORTMAP_CONFLIST = {
    "cniVersion": "0.4.0",
    "name": "portmap",
    "plugins": [
        {
            "type": "bridge",
            "bridge": "mynet0",
            "isDefaultGateway": True,
            "forceAddress": False,
            "ipMasq": True,
            "hairpinMode": True,
            "ipam": {"type": "host-local", "subnet": "10.10.0.0/16", "gateway": "10.10.0.1"},
        },
        {
            "type": "portmap",
            "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
        },
    ],
}


class DemoFailed(Exception):
    pass


def say(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def sh(
    argv: Sequence[str],
    *,
    netns: str | None = None,
    env: dict[str, str] | None = None,
    stdin: tuple[str, str] | None = None,
    show: bool = True,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command (inside ``netns``), echoing it like a shell session.

    ``stdin`` is ``(file name shown, content)``: the demo prints ``< bridge.json``
    as the article does while feeding the content directly.
    """
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    if show:
        shown = " ".join(f"{k}={v}" for k, v in (env or {}).items())
        prefix = f"[{netns}] " if netns else ""
        redirect = f" < {stdin[0]}" if stdin else ""
        print(f"{prefix}$ {shown + ' ' if shown else ''}{shlex.join(argv)}{redirect}", flush=True)
    proc = subprocess.run(
        full,
        input=stdin[1] if stdin else None,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    if show and proc.stdout.strip():
        print(proc.stdout.rstrip(), flush=True)
    if check and proc.returncode != 0:
        raise DemoFailed(f"{shlex.join(argv)} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
    return proc


def fetch(url: str) -> str:
    """GET ``url`` from the node namespace (the host's point of view)."""
    for _ in range(20):
        proc = sh(["curl", "-sS", "-m", "2", url], netns=NODE, show=False, check=False)
        if proc.returncode == 0:
            print(f"[{NODE}] $ curl {url}\n{proc.stdout.rstrip()}", flush=True)
            return proc.stdout
        time.sleep(0.1)
    raise DemoFailed(f"could not fetch {url} from the node: {proc.stderr.strip()}")


def remove_namespaces(names: Sequence[str]) -> None:
    """Stop what runs in each namespace the demo made (httpd, agents), then delete it."""
    for ns in names:
        if os.path.exists(f"/run/netns/{ns}"):
            for pid in sh(["ip", "netns", "pids", ns], show=False, check=False).stdout.split():
                sh(["kill", pid], show=False, check=False)
            sh(["ip", "netns", "del", ns], check=False)


class Demo:
    def __init__(self) -> None:
        self.work = tempfile.mkdtemp(prefix="pycni-demo-")
        self.bin = os.path.join(self.work, "bin")
        self.confdir = os.path.join(self.work, "net.d")
        self.cache = os.path.join(self.work, "cache")
        self.host_local_existed = {
            name: os.path.exists(os.path.join(HOST_LOCAL_DIR, name)) for name in ("mynet", "portmap")
        }

    def preflight(self) -> None:
        if os.geteuid() != 0:
            raise DemoFailed("the demo creates network namespaces: run it as root (make demo does)")
        for tool in ("ip", "busybox", "curl", "nft"):
            if shutil.which(tool) is None:
                raise DemoFailed(f"{tool} is missing: run scripts/setup.sh (make demo does)")
        from pycni.cli.demo_fabric import FabricDemo

        for ns in (NODE, CTR, *FabricDemo.namespaces()):
            if os.path.exists(f"/run/netns/{ns}"):
                raise DemoFailed(f"namespace {ns} exists already (a previous demo?): ip netns del {ns}")
        for network in self.host_local_existed:
            self.release_interrupted(network)

    def release_interrupted(self, network: str) -> None:
        """Addresses an interrupted demo left reserved are released; anyone else's stop the demo.

        The seed's configs name no ``dataDir``, so host-local keeps their
        reservations in the machine's default directory, where the demo must
        find none but its own (its container IDs are ``demo-container`` and
        cnitool's ``cnitool-...``).
        """
        directory = os.path.join(HOST_LOCAL_DIR, network)
        if not os.path.isdir(directory):
            return
        for name in sorted(os.listdir(directory)):
            if name == "lock" or name.startswith("last_reserved_ip"):
                continue
            path = os.path.join(directory, name)
            with open(path, errors="replace") as handle:
                owner = handle.readline().strip()
            if owner != "demo-container" and not owner.startswith("cnitool-"):
                raise DemoFailed(
                    f"{path} reserves {name} for container {owner!r}: the demo uses the seed's network name "
                    f"{network!r} and needs its address directory to itself; run the demo where no network is "
                    f"called {network!r}, or remove the file if that container is gone"
                )
            print(f"releasing {name} in {directory}: an interrupted demo left it reserved")
            os.unlink(path)

    def setup(self) -> None:
        from pycni.cli.install import install

        say("Install pycni's plugin executables (the directory a user puts on CNI_PATH)")
        print(f"$ pycni plugins install --dir {self.bin}")
        for path in install(self.bin):
            print(path)
        os.makedirs(self.confdir)
        say(f"Make a 'host' ({NODE}) and a 'container' ({CTR}) namespace")
        sh(["ip", "netns", "add", NODE])
        sh(["ip", "link", "set", "lo", "up"], netns=NODE)
        sh(["ip", "netns", "add", CTR])
        www = os.path.join(self.work, "www")
        os.makedirs(www)
        with open(os.path.join(www, "index.html"), "w") as handle:
            handle.write("<h1>Hello from a container networked by pycni</h1>\n")
        say("The container's network starts with lo, brought up by pycni's own loopback plugin")
        config = json.dumps({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"})
        env = self.plugin_env("ADD", "lo")
        sh([os.path.join(self.bin, "loopback")], netns=NODE, env=env, stdin=("lo.json", config))
        say("Start the container's web server (busybox httpd on port 80)")
        sh(["ip", "netns", "exec", CTR, "busybox", "httpd", "-p", "80", "-h", www])

    def plugin_env(self, command: str, ifname: str = "eth0") -> dict[str, str]:
        return {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": "demo-container",
            "CNI_NETNS": f"/run/netns/{CTR}",
            "CNI_IFNAME": ifname,
            "CNI_PATH": self.bin,
        }

    def case1(self) -> None:
        say("Case 1: call the bridge plugin directly with bridge.json")
        config = json.dumps(BRIDGE_JSON, indent=2)
        print(f"bridge.json:\n{config}")
        bridge = os.path.join(self.bin, "bridge")
        sh([bridge], netns=NODE, env=self.plugin_env("ADD"), stdin=("bridge.json", config))
        sh(["ip", "-4", "addr", "show", "eth0"], netns=CTR)
        say("From the host, fetch the container's page at its own address")
        if "Hello" not in fetch("http://10.10.0.2/"):
            raise DemoFailed("the container did not serve its page")
        say("Case 1: DEL with the same parameters")
        sh([bridge], netns=NODE, env=self.plugin_env("DEL"), stdin=("bridge.json", config))
        self.expect_clean("mynet")

    def case2(self) -> None:
        say("Case 2: a chain (bridge + portmap) run by pycni, cnitool-style")
        path = os.path.join(self.confdir, "portmap.conflist")
        with open(path, "w") as handle:
            json.dump(PORTMAP_CONFLIST, handle, indent=2)
        with open(path) as handle:
            print(f"portmap.conflist:\n{handle.read()}")
        env = {"CNI_PATH": self.bin, "NETCONFPATH": self.confdir, "PYCNI_CACHE_DIR": self.cache}
        pycni = self.pycni()
        sh([*pycni, "add", "portmap", f"/run/netns/{CTR}"], netns=NODE, env=env)
        say("From the host, fetch the page through host port 8080 (like docker run -p 8080:80)")
        for url in ("http://127.0.0.1:8080/", "http://10.10.0.1:8080/"):
            if "Hello" not in fetch(url):
                raise DemoFailed(f"{url} did not reach the container")
        say("Case 2: pycni del")
        sh([*pycni, "del", "portmap", f"/run/netns/{CTR}"], netns=NODE, env=env)
        self.expect_clean("portmap")

    @staticmethod
    def pycni() -> list[str]:
        """The pycni command next to this interpreter (or the module, from a source tree)."""
        installed = os.path.join(os.path.dirname(sys.executable), "pycni")
        return [installed] if os.path.exists(installed) else [sys.executable, "-m", "pycni.cli.main"]

    def expect_clean(self, network: str) -> None:
        """After DEL: no veth, no address file, no rule, no cached result."""
        links = sh(["ip", "-o", "link", "show", "type", "veth"], netns=NODE, show=False).stdout
        ips = [
            n
            for n in os.listdir(os.path.join(HOST_LOCAL_DIR, network))
            if n != "lock" and not n.startswith("last_reserved_ip")
        ]
        ruleset = sh(["nft", "list", "ruleset"], netns=NODE, show=False).stdout
        rules = [line.strip() for line in ruleset.splitlines() if "demo-container" in line or "cnitool-" in line]
        cached = os.listdir(os.path.join(self.cache, "results")) if os.path.isdir(self.cache) else []
        leftovers = {"veths": links.strip(), "addresses": ips, "rules": rules, "cache": cached}
        print(f"left behind: {json.dumps(leftovers)}")
        if any(leftovers.values()):
            raise DemoFailed(f"DEL left state behind: {leftovers}")

    def teardown(self) -> None:
        sh(["ip", "link", "delete", "mynet0"], netns=NODE, check=False, show=os.path.exists(f"/run/netns/{NODE}"))
        remove_namespaces([CTR, NODE])
        for name, existed in self.host_local_existed.items():
            if not existed:
                shutil.rmtree(os.path.join(HOST_LOCAL_DIR, name), ignore_errors=True)
        shutil.rmtree(self.work, ignore_errors=True)


def main() -> int:
    from pycni.cli.demo_calico import CalicoDemo
    from pycni.cli.demo_fabric import FabricDemo
    from pycni.cli.demo_shell import DemoFailed as CaseFailed

    demo = Demo()
    fabric = FabricDemo(demo.work, demo.bin, demo.pycni())
    calico = CalicoDemo(demo.work, demo.bin, demo.pycni())
    try:
        try:
            demo.preflight()
            calico.preflight()
        except (DemoFailed, CaseFailed):
            shutil.rmtree(demo.work, ignore_errors=True)  # nothing else was made yet
            raise
        try:
            demo.setup()
            demo.case1()
            demo.case2()
            fabric.run()
            calico.run()
        finally:
            say("Clean up: the bridge (the article's last step), namespaces, state directories")
            calico.teardown()
            fabric.teardown()
            demo.teardown()
    except (DemoFailed, CaseFailed) as exc:
        print(f"\npycni demo: FAILED: {exc}", file=sys.stderr)
        return 1
    say("Done: all four cases worked and nothing was left behind")
    return 0
