"""``pycni policy explain`` and ``pycni policy show`` through the real CLI on the embedded store.

The store is seeded as a user seeds it, with ``pycni calicoctl apply``: Nodes,
WorkloadEndpoints (as the calico plugin writes them), Pods that label them, a
default-deny Calico NetworkPolicy and a Kubernetes NetworkPolicy allowing
``role=client`` to ``app=web`` on TCP 80. Each verdict the CLI prints is the
evaluator's for the same store (read in-process); the deciding tier, policy
and rule are named; bad input is one line and exit status 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pycni.datastore.sqlite import SqliteDatastore
from pycni.fabric.calico.policy_manager import Counts, render
from pycni.fabric.calico.policy_state import PREFIXES, PolicyInputs, build
from pycni.fabric.calico.resources import ResourceClient
from pycni.policy.match import Packet

PODS = {"web": ("node-1", "10.244.0.2", "app: web"), "client": ("node-1", "10.244.0.3", "role: client"),
        "other": ("node-2", "10.244.1.2", "role: other")}  # fmt: skip


def seed() -> str:
    docs = []
    for index, node in enumerate(("node-1", "node-2"), start=1):
        docs.append(
            f"apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: {node}}}\n"
            f"spec: {{bgp: {{ipv4Address: 198.51.100.{index + 1}/24}}}}\n"
        )
    for pod, (node, ip, label) in PODS.items():
        docs.append(
            "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {namespace: default}\n"
            f"spec: {{orchestrator: k8s, node: {node}, pod: {pod}, endpoint: eth0, interfaceName: cali{pod},"
            f" ipNetworks: [{ip}/32], profiles: [kns.default]}}\n"
        )
        docs.append(
            f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: default, labels: {{{label}}}}}\n"
            f"spec: {{nodeName: {node}, containers: [{{name: c}}]}}\n"
        )
    docs.append(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\n"
        "metadata: {name: default-deny, namespace: default}\nspec: {selector: all(), types: [Ingress]}\n"
    )
    docs.append(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: web-from-clients, namespace: default}\n"
        "spec:\n  podSelector: {matchLabels: {app: web}}\n"
        "  ingress: [{from: [{podSelector: {matchLabels: {role: client}}}], ports: [{port: 80}]}]\n"
    )
    return "---\n".join(docs)


class Cli:
    def __init__(self, db: str) -> None:
        self.db = db
        self.pycni = os.path.join(os.path.dirname(sys.executable), "pycni")

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYCNI_CALICO_STORE": self.db}
        return subprocess.run(
            [self.pycni, *args], input=stdin, env=env, capture_output=True, text=True, timeout=60, check=False
        )

    def inputs(self, node: str = "") -> PolicyInputs:
        store = SqliteDatastore(self.db)
        try:
            return build([kv for p in PREFIXES for kv in store.list(p)[0]], node, ResourceClient(store))
        finally:
            store.close()


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    made = Cli(str(tmp_path / "store" / "calico.db"))
    applied = made("calicoctl", "apply", "-f", "-", stdin=seed())
    assert applied.returncode == 0, applied.stderr
    return made


def test_explain_says_what_the_evaluator_says_and_why(cli: Cli) -> None:
    evaluator = cli.inputs().state.evaluator()
    seen: dict[tuple[str, str], bool] = {}
    for source, (_, source_ip, _) in PODS.items():
        for target, (_, target_ip, _) in PODS.items():
            if source == target:
                continue
            result = cli("policy", "explain", "--from", f"default/{source}", "--to", f"default/{target}",
                         "--port", "80/TCP")  # fmt: skip
            assert result.returncode == 0, result.stderr
            verdict = evaluator.evaluate(Packet.make(source_ip, target_ip, "TCP", 80))
            assert result.stdout.splitlines()[1:] == verdict.describe().splitlines(), (source, target)
            seen[(source, target)] = "ALLOWED" in result.stdout.splitlines()[1]
    assert seen[("client", "web")] and not seen[("other", "web")] and not seen[("web", "client")], seen
    allowed = cli("policy", "explain", "--from", "default/client", "--to", "default/web", "--port", "80/TCP").stdout
    wanted = (
        "ingress of default/web allowed by tier default, policy default/knp.default.web-from-clients, ingress rule 0"
    )
    assert wanted in allowed, allowed
    denied = cli("policy", "explain", "--from", "default/client", "--to", "default/web", "--port", "8080/TCP").stdout
    assert "DENIED" in denied and "end of tier default" in denied and "default/default-deny" in denied, denied


def test_explain_with_addresses_that_are_no_pods(cli: Cli) -> None:
    inbound = cli("policy", "explain", "--from-ip", "198.18.0.7", "--to", "default/web", "--port", "80/TCP")
    assert inbound.returncode == 0 and "DENIED" in inbound.stdout, inbound.stdout
    assert "198.18.0.7 is no workload or host endpoint here" in inbound.stdout
    outbound = cli("policy", "explain", "--from", "default/web", "--to-ip", "198.18.0.7", "--port", "53/UDP")
    assert outbound.returncode == 0 and "ALLOWED" in outbound.stdout, outbound.stdout
    assert "profile kns.default" in outbound.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--from", "default/nope", "--to", "default/web"), "--from default/nope: no such pod"),
        (("--from", "web", "--to", "default/web"), "use NAMESPACE/POD"),
        (("--from", "default/web", "--to", "default/client", "--port", "99999/TCP"), "1-65535"),
        (("--from", "default/web", "--to", "default/client", "--port", "80/XTP"), "unknown protocol"),
        (("--from-ip", "10.0.0.x", "--to", "default/web"), "is not an IP address"),
        (
            (
                "--to",
                "default/web",
            ),
            "give --from",
        ),
    ],
)
def test_bad_input_is_one_line_and_status_1(cli: Cli, args: tuple[str, ...], message: str) -> None:
    result = cli("policy", "explain", *args)
    assert result.returncode == 1 and result.stdout == "", result
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_show_lists_what_applies_per_local_endpoint_and_the_tables_size(cli: Cli) -> None:
    result = cli("policy", "show", "--node", "node-1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "node node-1: 2 local endpoint(s)"
    web = lines.index("default/web (caliweb, 10.244.0.2):")
    assert lines[web + 1] == (
        "  ingress: tier default: default/knp.default.web-from-clients, default/default-deny;"
        " profiles kns.default, ksa.default.default"
    )
    assert lines[web + 2] == "  egress: no policy; profiles kns.default, ksa.default.default"
    client = lines.index("default/client (caliclient, 10.244.0.3):")
    assert lines[client + 1].startswith("  ingress: tier default: default/default-deny; profiles kns.default")
    counts = Counts.of(render(cli.inputs("node-1")))
    assert lines[-1] == (
        f"table inet pycni-policy: {counts.chains} chains, {counts.rules} rules, {counts.sets} sets, "
        f"{counts.elements} set and map elements"
    )
    assert counts.sets >= 1 and counts.rules > 10
    assert "default/other" not in result.stdout, "node-2's endpoint is not node-1's"
    missing = cli("policy", "show", "--node", "node-9")
    assert missing.returncode == 1 and "no such node" in missing.stderr


HOST_ENDPOINT = """\
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node-1-eth0, labels: {host: node-1}}
spec: {node: node-1, interfaceName: eth0, expectedIPs: [198.51.100.2]}
"""


NO_EGRESS = "198.18.0.7 is no workload or host endpoint here: no egress policy applies"


def test_explain_and_show_at_a_host_endpoint(cli: Cli) -> None:
    assert cli("calicoctl", "apply", "-f", "-", stdin=HOST_ENDPOINT).returncode == 0
    ssh = cli("policy", "explain", "--from-ip", "198.18.0.7", "--to-ip", "198.51.100.2", "--port", "22/TCP")
    assert ssh.returncode == 0 and "ALLOWED" in ssh.stdout, ssh.stdout
    assert "ingress of hep:node-1-eth0 allowed: failsafe inbound port tcp:22" in ssh.stdout
    web = cli("policy", "explain", "--from-ip", "198.18.0.7", "--to-ip", "198.51.100.2", "--port", "80/TCP")
    assert "DENIED" in web.stdout and "ingress of hep:node-1-eth0 denied: no policy decided" in web.stdout, web.stdout
    verdict = cli.inputs().evaluator().evaluate(Packet.make("198.18.0.7", "198.51.100.2", "TCP", 80))
    assert web.stdout.splitlines()[1:] == [*verdict.describe().splitlines(), f"  egress: {NO_EGRESS}"]
    shown = cli("policy", "show", "--node", "node-1").stdout
    assert "node node-1: 2 local endpoint(s), 1 host endpoint(s)" in shown, shown
    assert "hep:node-1-eth0 (eth0, 198.51.100.2):" in shown
    assert "failsafe inbound ports (open whatever the policy): tcp:22, udp:68, tcp:179" in shown
    listed = cli("calicoctl", "get", "hostendpoints").stdout.split()
    assert listed == ["NAME", "NODE", "node-1-eth0", "node-1"], listed
    wrong = cli(
        "calicoctl",
        "apply",
        "-f",
        "-",
        stdin=HOST_ENDPOINT.replace("interfaceName: eth0, ", "").replace("expectedIPs: [198.51.100.2]", "profiles: []"),
    )
    assert wrong.returncode == 1 and "no interface or expected IPs" in wrong.stderr, wrong.stderr
