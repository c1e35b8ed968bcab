"""The real ``pycni calicoctl`` command against a real etcd and against the embedded sqlite store.

The seed's operator ``Installation`` pool (blockSize 26, cidr 10.244.0.0/16,
encapsulation VXLANCrossSubnet, natOutgoing Enabled, nodeSelector all()) is
applied as the IPPool the operator writes; it is read back in every output
format, addresses are allocated (through the IPAM library, as the CNI plugin
will), ``ipam show`` counts them, ``ipam check`` names a planted leak, and
``ipam release`` frees it. On etcd, ``etcdctl`` must see Calico's keys and
values exactly.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycni.datastore import Datastore
from pycni.datastore.etcd import EtcdDatastore
from pycni.datastore.sqlite import SqliteDatastore
from pycni.fabric.calico.ipam_store import IPAM, AutoAssignArgs
from pycni.fabric.calico.model import new_resource
from pycni.fabric.calico.resources import ResourceClient
from tests.support.etcd import EtcdServer, etcd_server

SEED_POOL = """\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: default-ipv4-ippool
spec:
  blockSize: 26
  cidr: 10.244.0.0/16
  ipipMode: Never
  vxlanMode: CrossSubnet
  natOutgoing: true
  nodeSelector: all()
---
apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: node1
spec:
  bgp:
    ipv4Address: 198.51.100.1/24
"""


class Ctl:
    """Runs ``pycni calicoctl`` as a user would, with the datastore chosen by environment variables."""

    def __init__(self, env: dict[str, str], tmp: Path, open_store: object) -> None:
        self.env = env
        self.tmp = tmp
        self.open_store = open_store

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

    def store(self) -> Datastore:
        return self.open_store()  # type: ignore[operator,no-any-return]


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
        wipe.close()
        env.update(DATASTORE_TYPE="etcdv3", ETCD_ENDPOINTS=server.url)
        yield Ctl(env, tmp_path, lambda: EtcdDatastore([server.url], timeout=5))
    else:
        path = str(tmp_path / "store" / "calico.db")
        env["PYCNI_CALICO_STORE"] = path
        yield Ctl(env, tmp_path, lambda: SqliteDatastore(path))


def test_apply_get_formats_and_crud(ctl: Ctl) -> None:
    manifest = ctl.tmp / "seed.yaml"
    manifest.write_text(SEED_POOL)
    assert ctl("apply", "-f", str(manifest)).stdout == "Successfully applied 2 resource(s)\n"
    assert ctl("get", "ippool").stdout == (
        "NAME                  CIDR            SELECTOR   \ndefault-ipv4-ippool   10.244.0.0/16   all()      \n\n"
    )
    wide = ctl("get", "ipp", "-o", "wide").stdout.splitlines()
    assert wide[0].split() == [
        "NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED", "DISABLEBGPEXPORT", "SELECTOR", "ASSIGNMENTMODE",
    ]  # fmt: skip
    assert wide[1].split() == [
        "default-ipv4-ippool",
        "10.244.0.0/16",
        "true",
        "Never",
        "CrossSubnet",
        "false",
        "false",
        "all()",
        "Automatic",
    ]
    as_yaml = ctl("get", "pool", "default-ipv4-ippool", "-o", "yaml").stdout
    assert as_yaml.startswith("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  creationTimestamp: ")
    assert "\n  vxlanMode: CrossSubnet\n" in as_yaml and "\n  blockSize: 26\n" in as_yaml
    listing = json.loads(ctl("get", "ippools", "-o", "json").stdout)
    assert listing["kind"] == "IPPoolList" and listing["metadata"]["resourceVersion"].isdigit()
    (item,) = listing["items"]
    assert item["spec"] == {
        "cidr": "10.244.0.0/16",
        "vxlanMode": "CrossSubnet",
        "ipipMode": "Never",
        "natOutgoing": True,
        "blockSize": 26,
        "nodeSelector": "all()",
        "allowedUses": ["Workload", "Tunnel"],
        "assignmentMode": "Automatic",
    }
    assert ctl("get", "nodes", "-o", "wide").stdout.splitlines()[1].split() == ["node1", "(64512)", "198.51.100.1/24"]
    assert [line.split()[0] for line in ctl("get", "tiers").stdout.splitlines()[1:4]] == [
        "default",
        "kube-admin",
        "kube-baseline",
    ]

    # What get -o yaml printed applies again (a replace), and create refuses what exists.
    (ctl.tmp / "back.yaml").write_text(as_yaml)
    assert ctl("replace", "-f", str(ctl.tmp / "back.yaml")).stdout == "Successfully replaced 1 'IPPool' resource(s)\n"
    failed = ctl("create", "-f", str(manifest), ok=False)
    assert failed.stderr.startswith(
        "failed to create any resources: [resource already exists: IPPool(default-ipv4-ippool)"
    )
    bad = ctl("apply", "-f", "-", stdin=SEED_POOL.replace("blockSize: 26", "blockSize: 40").split("---")[0], ok=False)
    assert "IPPool.spec.blockSize = '40' (blockSize must be between 20 and 32 for IPv4 pools" in bad.stderr
    assert (
        "unknown field"
        in ctl("apply", "-f", "-", stdin=SEED_POOL.replace("natOutgoing", "natOutgoin"), ok=False).stderr
    )
    assert (
        ctl("get", "ippool", "nope", ok=False).stderr
        == "Failed to get resources: resource does not exist: IPPool(nope)\n"
    )
    assert ctl("get", "gadgets", ok=False).stderr == "resource type 'gadgets' is not supported\n"
    assert "is readonly" in ctl("delete", "clusterinformation", "default", ok=False).stderr
    peer = json.dumps(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "BGPPeer",
            "metadata": {"name": "tor"},
            "spec": {"peerIP": "198.51.100.254", "asNumber": 64513},
        }
    )
    assert ctl("create", "-f", "-", stdin=peer).stdout == "Successfully created 1 'BGPPeer' resource(s)\n"
    assert ctl("get", "bgpp").stdout.splitlines()[1].split() == ["tor", "198.51.100.254", "(global)", "64513"]
    assert ctl("delete", "bgppeer", "tor").stdout == "Successfully deleted 1 'BGPPeer' resource(s)\n"
    assert ctl("delete", "-s", "bgppeer", "tor").stdout == "Successfully deleted 1 'BGPPeer' resource(s)\n"


def test_ipam_show_check_release(ctl: Ctl) -> None:
    ctl("apply", "-f", "-", stdin=SEED_POOL)
    store = ctl.store()
    try:
        ipam = IPAM(store)
        resources = ResourceClient(store)
        got = []
        for index in range(5):
            v4, _ = ipam.auto_assign(
                AutoAssignArgs(
                    hostname="node1",
                    num4=1,
                    handle_id=f"k8s-pod-network.c{index}",
                    attrs={"node": "node1", "namespace": "default", "pod": f"pod{index}"},
                )
            )
            assert v4 is not None
            got.append(v4.ips[0])
        # Four pods have WorkloadEndpoints; pod4's allocation is the planted leak.
        for index, address in enumerate(got[:4]):
            resources.create(
                new_resource(
                    "WorkloadEndpoint",
                    f"node1-cni-c{index}-eth0",
                    {
                        "node": "node1",
                        "orchestrator": "cni",
                        "containerID": f"c{index}",
                        "endpoint": "eth0",
                        "interfaceName": f"cali{index:011d}",
                        "ipNetworks": [f"{address.ip}/32"],
                    },
                    namespace="default",
                )
            )
    finally:
        store.close()
    block = ipaddress.ip_network(f"{got[0].ip}/26", strict=False)
    assert all(a.ip in block for a in got)

    show = ctl("ipam", "show").stdout.splitlines()
    assert show[1].split("|")[1:-1] == [
        " GROUPING ",
        "     CIDR      ",
        " IPS TOTAL ",
        " IPS IN USE ",
        " IPS RESERVED ",
        "   IPS FREE   ",
    ]
    assert [c.strip() for c in show[3].split("|")[1:-1]] == [
        "IP Pool",
        "10.244.0.0/16",
        "65536",
        "5 (0%)",
        "0 (0%)",
        "65531 (100%)",
    ]
    blocks = ctl("ipam", "show", "--show-blocks").stdout.splitlines()
    assert [c.strip() for c in blocks[4].split("|")[1:-1]] == [
        "Block",
        str(block),
        "64",
        "5 (8%)",
        "0 (0%)",
        "59 (92%)",
    ]
    config = ctl("ipam", "show", "--show-configuration").stdout
    assert "| StrictAffinity     | false |" in config and "| AutoAllocateBlocks | true  |" in config
    one = ctl("ipam", "show", f"--ip={got[0].ip}").stdout
    assert one == (
        f"IP {got[0].ip} is in use\nHandle ID: k8s-pod-network.c0\nActive Owner Attributes:\n"
        "  namespace: default\n  node: node1\n  pod: pod0\n"
    )

    report = ctl("ipam", "check").stdout
    leaked = got[4].ip
    assert f"  {leaked} leaked; attrs Main:k8s-pod-network.c4 Extra:namespace=default,node=node1,pod=pod4\n" in report
    assert "Found 1 IPs that are allocated in IPAM but not actually in use." in report
    assert "Found 4 workload IPs.\nWorkloads and nodes are using 4 IPs." in report
    assert "Found 0 handles with no matching IPs (and 5 handles with matches)." in report
    assert report.rstrip().endswith("Check complete; found 1 problems.")

    assert ctl("ipam", "release", f"--ip={leaked}").stdout == f"Successfully released IP address {leaked}\n"
    assert ctl("ipam", "release", f"--ip={leaked}", ok=False).stderr == f"IP address {leaked} is not assigned\n"
    assert ctl("ipam", "show", f"--ip={leaked}").stdout == f"{leaked} is not assigned\n"
    report = ctl("ipam", "check").stdout
    assert report.rstrip().endswith("Check complete; found 0 problems.")
    assert "Found 0 handles with no matching IPs (and 4 handles with matches)." in report  # pod4's handle went too


def test_etcd_keys_and_values_are_calicos(etcd: EtcdServer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATASTORE_TYPE", "ETCD_", "CALICO_", "PYCNI_"))}
    wipe = EtcdDatastore([etcd.url])
    wipe.delete_prefix("/calico/")
    wipe.close()
    config = tmp_path / "calicoctl.cfg"  # the CalicoAPIConfig file form, as calicoctl -c reads it
    config.write_text(
        "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata:\n"
        f"spec:\n  datastoreType: etcdv3\n  etcdEndpoints: {etcd.url}\n"
    )
    ctl = Ctl(env, tmp_path, lambda: EtcdDatastore([etcd.url], timeout=5))
    ctl("apply", "-c", str(config), "-f", "-", stdin=SEED_POOL)
    keys = etcd.etcdctl("get", "--prefix", "/calico/", "--keys-only").stdout.split()
    assert keys == [
        "/calico/resources/v3/projectcalico.org/clusterinformations/default",
        "/calico/resources/v3/projectcalico.org/ippools/default-ipv4-ippool",
        "/calico/resources/v3/projectcalico.org/nodes/node1",
        "/calico/resources/v3/projectcalico.org/tiers/default",
        "/calico/resources/v3/projectcalico.org/tiers/kube-admin",
        "/calico/resources/v3/projectcalico.org/tiers/kube-baseline",
    ]
    raw = etcd.etcdctl(
        "get", "/calico/resources/v3/projectcalico.org/ippools/default-ipv4-ippool", "--print-value-only"
    ).stdout.strip()
    stored = json.loads(raw)
    assert list(stored) == ["kind", "apiVersion", "metadata", "spec"]
    assert list(stored["metadata"]) == ["name", "uid", "creationTimestamp"]  # resourceVersion blanked, as Calico stores
    assert raw.endswith(
        '"spec":{"cidr":"10.244.0.0/16","vxlanMode":"CrossSubnet","ipipMode":"Never","natOutgoing":true,'
        '"blockSize":26,"nodeSelector":"all()","allowedUses":["Workload","Tunnel"],"assignmentMode":"Automatic"}}'
    )
    revision = json.loads(etcd.etcdctl("get", keys[1], "-w", "json").stdout)["kvs"][0]["mod_revision"]
    got = json.loads(ctl("get", "-c", str(config), "ippool", "default-ipv4-ippool", "-o", "json").stdout)
    assert got["metadata"]["resourceVersion"] == str(revision)  # resourceVersion is etcd's mod_revision
    tier = etcd.etcdctl("get", keys[3], "--print-value-only").stdout.strip()
    assert tier.endswith('"spec":{"order":1000000,"defaultAction":"Deny"},"status":{}}')
    ctl(
        "apply",
        "-c",
        str(config),
        "-f",
        "-",
        stdin="apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\n"
        "metadata: {name: default}\nspec: {strictAffinity: true}\n",
    )
    value = etcd.etcdctl("get", "/calico/ipam/v2/config", "--print-value-only").stdout.strip()
    assert value == '{"strict_affinity":true,"auto_allocate_blocks":true}'
    ctl("delete", "-c", str(config), "ippool", "default-ipv4-ippool")
    assert etcd.etcdctl("get", keys[1]).stdout == ""


def test_datastore_choice_errors(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATASTORE_TYPE", "ETCD_", "CALICO_", "PYCNI_"))}
    ctl = Ctl({**env, "DATASTORE_TYPE": "kubernetes"}, tmp_path, None)
    assert "kubernetes" in ctl("get", "ippool", ok=False).stderr
    ctl = Ctl({**env, "CALICO_DATASTORE_TYPE": "etcdv3"}, tmp_path, None)
    assert "needs etcdEndpoints" in ctl("get", "ippool", ok=False).stderr
    ctl = Ctl(env, tmp_path, None)
    assert "cannot read the config file" in ctl("get", "-c", str(tmp_path / "none.cfg"), "ippool", ok=False).stderr
    help_text = ctl("--help").stdout
    assert "/var/lib/pycni/calico.db" in help_text and "ETCD_ENDPOINTS" in help_text
