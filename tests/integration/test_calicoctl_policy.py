"""``pycni calicoctl`` for policy: (Global)NetworkPolicy, GlobalNetworkSet, Tier and the Kubernetes stand-ins.

The real command, run as a user runs it, on a real etcd and on the embedded
sqlite store. Calico's kinds are stored where and as libcalico-go stores them
(a policy's name also in its ``projectcalico.org/metadata`` annotation); the
Kubernetes stand-ins (v1 Namespace, v1 Pod, networking.k8s.io/v1 NetworkPolicy),
which Calico never keeps in etcd, under ``/pycni/k8s/registry/``. Read back,
the Kubernetes objects convert as Calico converts them (``knp.default.<name>``,
``kns.<namespace>``) and the evaluator decides with them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pycni.datastore import Datastore
from pycni.datastore.etcd import EtcdDatastore
from pycni.datastore.sqlite import SqliteDatastore
from pycni.fabric.calico.resources import KubernetesObjectClient, ResourceClient
from pycni.policy.cluster import ClusterState
from pycni.policy.match import Packet
from tests.support.etcd import EtcdServer, etcd_server

MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata:
  name: x
  labels: {team: red}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
spec:
  nodeName: node-1
  containers:
  - name: web
    ports: [{name: http, containerPort: 8080}]
status:
  podIPs: [{ip: 10.65.0.2}]
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {app: b}}
spec: {nodeName: node-1, containers: [{name: c}]}
status:
  podIPs: [{ip: 10.65.0.3}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-http, namespace: x}
spec:
  order: 1000.0
  selector: app == 'a'
  ingress: [{action: Allow, protocol: TCP, source: {selector: app == 'b'}, destination: {ports: [http]}}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.guard}
spec:
  tier: security
  order: 10
  selector: all()
  egress: [{action: Deny, protocol: TCP, destination: {nets: [10.99.0.0/24]}}, {action: Pass}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: infra, labels: {role: infra}}
spec: {nets: [10.99.0.0/24, 10.1.0.0/16]}
"""


class Ctl:
    """Runs ``pycni calicoctl`` with the datastore chosen by environment variables, as the existing tests do."""

    def __init__(self, env: dict[str, str], tmp: Path, open_store: Callable[[], Datastore]) -> None:
        self.env, self.tmp, self.open_store = env, tmp, open_store

    def __call__(self, *args: str, stdin: str | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
        pycni = os.path.join(os.path.dirname(sys.executable), "pycni")
        result = subprocess.run(  # noqa: PLW1510 - the exit status is checked below
            [pycni, "calicoctl", *args], input=stdin, capture_output=True, text=True, env=self.env, timeout=60
        )
        if ok:
            assert result.returncode == 0, (args, result.stdout, result.stderr)
        else:
            assert result.returncode == 1, (args, result.stdout, result.stderr)
            assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        return result

    def apply(self, text: str) -> None:
        path = self.tmp / "manifest.yaml"
        path.write_text(text)
        self("apply", "-f", str(path))


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    with etcd_server() as server:
        yield server


@pytest.fixture(params=["etcd", "sqlite"])
def ctl(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ctl]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATASTORE_TYPE", "ETCD_", "CALICO_", "PYCNI_"))}
    if request.param == "etcd":
        server: EtcdServer = request.getfixturevalue("etcd")
        wipe = EtcdDatastore([server.url])
        wipe.delete_prefix("/calico/")
        wipe.delete_prefix("/pycni/")
        wipe.close()
        env.update(DATASTORE_TYPE="etcdv3", ETCD_ENDPOINTS=server.url)
        yield Ctl(env, tmp_path, lambda: EtcdDatastore([server.url], timeout=5))
    else:
        path = str(tmp_path / "store" / "calico.db")
        env["PYCNI_CALICO_STORE"] = path
        yield Ctl(env, tmp_path, lambda: SqliteDatastore(path))


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line.strip()]


def test_apply_and_get_every_policy_kind(ctl: Ctl) -> None:
    path = ctl.tmp / "policy.yaml"
    path.write_text(MANIFEST)
    assert ctl("apply", "-f", str(path)).stdout == "Successfully applied 8 resource(s)\n"
    assert ctl("get", "networkpolicy", "-n", "x").stdout == (
        "NAMESPACE   NAME         TIER      \nx           allow-http   default   \n\n"
    )
    assert rows(ctl("get", "np", "-A", "-o", "wide").stdout) == [
        ["NAMESPACE", "NAME", "TIER", "ORDER", "SELECTOR"],
        ["x", "allow-http", "default", "1000", "app", "==", "'a'"],
    ]
    assert rows(ctl("get", "gnp", "-o", "wide").stdout) == [
        ["NAME", "ORDER", "SELECTOR"],
        ["security.guard", "10", "all()"],
    ]
    assert rows(ctl("get", "gnetsets", "-o", "wide").stdout) == [
        ["NAME", "NETS"],
        ["infra", "10.99.0.0/24,10.1.0.0/16"],
    ]
    assert rows(ctl("get", "tiers", "-o", "wide").stdout) == [
        ["NAME", "ORDER"],
        ["default", "1e+06"],
        ["kube-admin", "1000"],
        ["kube-baseline", "1e+07"],
        ["security", "100"],
    ]
    assert rows(ctl("get", "pods", "-n", "x", "-o", "wide").stdout) == [
        ["NAMESPACE", "NAME", "NODE", "IPS", "PORTS", "LABELS"],
        ["x", "a", "node-1", "10.65.0.2", "http:8080/TCP", "app=a"],
        ["x", "b", "node-1", "10.65.0.3", "app=b"],
    ]
    assert rows(ctl("get", "ns", "-o", "wide").stdout) == [
        ["NAME", "LABELS"],
        ["x", "kubernetes.io/metadata.name=x,team=red"],
    ]
    ctl("apply", "-f", "-", stdin='{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "lone"}}')
    assert [r[0] for r in rows(ctl("get", "ns").stdout)] == ["NAME", "default", "x"], "default always exists"
    assert rows(ctl("get", "networkpolicies.networking.k8s.io", "-A").stdout) == [["NAMESPACE", "NAME"], ["x", "deny"]]

    policy = json.loads(ctl("get", "np", "allow-http", "-n", "x", "-o", "json").stdout)
    assert policy["metadata"]["labels"] == {"projectcalico.org/tier": "default"}
    assert "annotations" not in policy["metadata"], "the stored name annotation is not shown"
    assert policy["spec"] == {
        "tier": "default",
        "order": 1000,
        "ingress": [
            {
                "action": "Allow",
                "protocol": "TCP",
                "source": {"selector": "app == 'b'"},
                "destination": {"ports": ["http"]},
            }
        ],
        "selector": "app == 'a'",
        "types": ["Ingress"],
    }
    guard = ctl("get", "gnp", "security.guard", "-o", "yaml").stdout
    assert "  labels:\n    projectcalico.org/tier: security\n" in guard and "  - Egress\n" in guard
    tier = json.loads(ctl("get", "tier", "security", "-o", "json").stdout)
    assert tier["spec"] == {"order": 100, "defaultAction": "Deny"}, "clientv3's DefaultTierFields"
    pod = json.loads(ctl("get", "pod", "a", "-n", "x", "-o", "json").stdout)
    assert pod["metadata"]["uid"] and pod["metadata"]["resourceVersion"].isdigit()
    listing = json.loads(ctl("get", "pods", "-A", "-o", "json").stdout)
    assert listing["kind"] == "PodList" and [p["metadata"]["name"] for p in listing["items"]] == ["lone", "a", "b"]


def test_stored_where_calico_and_kube_apiserver_keep_them(ctl: Ctl) -> None:
    ctl.apply(MANIFEST)
    store = ctl.open_store()
    try:
        stored = {kv.key: kv.value for kv in store.list("/")[0]}
    finally:
        store.close()
    policy = json.loads(stored["/calico/resources/v3/projectcalico.org/networkpolicies/x/allow-http"])
    assert policy["metadata"]["annotations"] == {"projectcalico.org/metadata": '{"name":"allow-http"}'}
    assert (
        '"spec":{"order":1000,"ingress":'
        in stored["/calico/resources/v3/projectcalico.org/networkpolicies/x/allow-http"]
    )
    guard = json.loads(stored["/calico/resources/v3/projectcalico.org/globalnetworkpolicies/security.guard"])
    assert guard["metadata"]["labels"] == {"projectcalico.org/tier": "security"}
    assert "/calico/resources/v3/projectcalico.org/globalnetworksets/infra" in stored
    assert "/calico/resources/v3/projectcalico.org/tiers/security" in stored
    k8s = sorted(key for key in stored if key.startswith("/pycni/k8s/"))
    assert k8s == [
        "/pycni/k8s/registry/namespaces/x",
        "/pycni/k8s/registry/networkpolicies/x/deny",
        "/pycni/k8s/registry/pods/x/a",
        "/pycni/k8s/registry/pods/x/b",
    ]
    assert not any("resourceVersion" in json.loads(stored[key])["metadata"] for key in k8s)


def test_read_back_the_policy_engine_converts_as_calico(ctl: Ctl) -> None:
    ctl.apply(MANIFEST)
    store = ctl.open_store()
    try:
        state = ClusterState()
        for document in KubernetesObjectClient(store).documents():
            state.apply(document)
        resources = ResourceClient(store)
        for kind in ("Tier", "NetworkPolicy", "GlobalNetworkPolicy", "GlobalNetworkSet"):
            for resource in resources.list(kind)[0]:
                # pycni.policy reads no status (a stored Tier has "status": {}): what it is given is the object.
                state.apply({k: v for k, v in resource.to_dict().items() if k != "status"})
    finally:
        store.close()
    names = sorted(p.name for p in state.all_policies())
    assert names == ["allow-http", "knp.default.deny", "security.guard"]
    evaluator = state.evaluator()
    assert evaluator.evaluate(Packet.make("10.65.0.3", "10.65.0.2", "TCP", 8080)).allowed, "b -> a:http"
    assert not evaluator.evaluate(Packet.make("10.65.0.3", "10.65.0.2", "TCP", 80)).allowed, "the converted deny"
    blocked = evaluator.evaluate(Packet.make("10.65.0.2", "10.99.0.5", "TCP", 443))
    assert not blocked.allowed and blocked.egress is not None and blocked.egress.tier == "security"


def test_refusals_are_calicos(ctl: Ctl) -> None:
    ctl.apply(MANIFEST)
    meta = {"name": "knp.default.x", "namespace": "x"}
    knp = json.dumps({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy", "metadata": meta})
    assert "kubernetes network policies must be managed through the kubernetes API" in (
        ctl("apply", "-f", "-", stdin=knp, ok=False).stderr
    )
    tierless = (
        '{"apiVersion":"projectcalico.org/v3","kind":"NetworkPolicy","metadata":{"name":"p"},"spec":{"tier":"t9"}}'
    )
    assert "resource does not exist: Tier(t9)" in ctl("create", "-f", "-", stdin=tierless, ok=False).stderr
    hosty = json.dumps(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "GlobalNetworkPolicy",
            "metadata": {"name": "hosty"},
            "spec": {"ingress": [{"action": "Allow", "source": {"nets": ["10.0.0.1/8"]}}]},
        }
    )
    assert "'10.0.0.1/8' has host bits set: write 10.0.0.0/8" in ctl("create", "-f", "-", stdin=hosty, ok=False).stderr
    stray = '{"apiVersion":"v1","kind":"Pod","metadata":{"name":"q","namespace":"nowhere"}}'
    assert "resource does not exist: Namespace(nowhere)" in ctl("create", "-f", "-", stdin=stray, ok=False).stderr
    bad_pod = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "r", "namespace": "x"},
            "spec": {"containers": [{"name": "c", "ports": [{"name": "HTTP!", "containerPort": 80}]}]},
        }
    )
    assert "Pod.spec.containers[0].ports[0].name" in ctl("create", "-f", "-", stdin=bad_pod, ok=False).stderr
    assert "Cannot delete a non-empty tier" in ctl("delete", "tier", "security", ok=False).stderr
    assert "Cannot delete default tier" in ctl("delete", "tier", "default", ok=False).stderr
    assert (
        "already exists: NetworkPolicy(x/allow-http)"
        in ctl("create", "-f", str(ctl.tmp / "manifest.yaml"), ok=False).stderr
    )


def test_replace_and_delete(ctl: Ctl) -> None:
    ctl.apply(MANIFEST)
    current = json.loads(ctl("get", "pod", "b", "-n", "x", "-o", "json").stdout)
    current["metadata"]["labels"] = {"app": "b", "role": "db"}
    assert ctl("replace", "-f", "-", stdin=json.dumps(current)).stdout == "Successfully replaced 1 'Pod' resource(s)\n"
    stale = ctl("replace", "-f", "-", stdin=json.dumps(current), ok=False).stderr
    assert "is out of date" in stale
    again = json.loads(ctl("get", "pod", "b", "-n", "x", "-o", "json").stdout)
    assert (
        again["metadata"]["labels"] == {"app": "b", "role": "db"}
        and again["metadata"]["uid"] == current["metadata"]["uid"]
    )
    assert ctl("delete", "gnp", "security.guard").stdout == "Successfully deleted 1 'GlobalNetworkPolicy' resource(s)\n"
    assert ctl("delete", "tier", "security").stdout == "Successfully deleted 1 'Tier' resource(s)\n"
    assert ctl("delete", "pod", "a", "-n", "x").stdout == "Successfully deleted 1 'Pod' resource(s)\n"
    assert ctl("delete", "ns", "x").stdout == "Successfully deleted 1 'Namespace' resource(s)\n"
    assert rows(ctl("get", "pods", "-A").stdout) == [["NAMESPACE", "NAME", "NODE"]], "the namespace took its pods"
    assert rows(ctl("get", "k8snp", "-A").stdout) == [["NAMESPACE", "NAME"]]
    assert "resource does not exist: Pod(x/a)" in ctl("delete", "pod", "a", "-n", "x", ok=False).stderr
    ctl("delete", "-s", "pod", "a", "-n", "x")
