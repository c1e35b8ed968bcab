"""pycni install --manifest: the seed article's manifests as conflists, agent settings and notes; bad input; the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pycni.fabric.calico.installation import parse_installation
from pycni.fabric.calico.nodeconfig import from_environment
from pycni.fabric.flannel.model import NetworkConfig
from pycni.manifests import flannel, plan
from pycni.manifests.documents import ManifestError, load_file, load_text
from pycni.reset import conflists
from pycni.reset.paths import Paths
from pycni.runtime.conf import load_conflist_file
from pycni.shim import executable_plugin_type

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "manifests"
REPO = Path(__file__).resolve().parent.parent.parent
CONF_DIR = "/etc/cni/net.d"

FLANNEL_STOCK = {
    "name": "cbr0",
    "cniVersion": "0.3.1",
    "plugins": [
        {"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}
CALICO_CONFLIST = {
    "name": "k8s-pod-network",
    "cniVersion": "0.3.1",
    "plugins": [
        {
            "type": "calico",
            "log_level": "info",
            "datastore_type": "pycni",
            "nodename": "node-1",
            "mtu": 1440,
            "ipam": {"type": "calico-ipam"},
            "policy": {"type": "k8s"},
            "kubernetes": {"kubeconfig": "/etc/cni/net.d/calico-kubeconfig"},
        },
        {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}},
        {"type": "bandwidth", "capabilities": {"bandwidth": True}},
    ],
}
CALICO_ENV = {
    "NODENAME": "node-1",
    "CALICO_NETWORKING_BACKEND": "bird",
    "CLUSTER_TYPE": "k8s,bgp",
    "IP": "autodetect",
    "CALICO_IPV4POOL_IPIP": "Always",
    "CALICO_IPV4POOL_VXLAN": "Never",
    "FELIX_IPINIPMTU": "1440",
    "FELIX_VXLANMTU": "1440",
}


def build(name: str, text: str | None = None, **kwargs: Any) -> plan.Plan:
    path = str(FIXTURES / name)
    documents = load_text(text, path) if text is not None else load_file(path)
    return plan.build(documents, node="node-1", cni_conf_dir=CONF_DIR, arch="amd64", **kwargs)


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def error_of(name: str, text: str | None = None, **kwargs: Any) -> str:
    with pytest.raises(ManifestError) as caught:
        build(name, text, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


# -- Flannel --------------------------------------------------------------------------------------------------


def test_stock_kube_flannel_yml() -> None:
    result = build("kube-flannel.yml")
    assert result.fabric == "flannel"
    assert result.conflist.path == "/etc/cni/net.d/10-flannel.conflist"
    assert json.loads(result.conflist.content) == FLANNEL_STOCK
    (net_conf,) = result.files
    assert net_conf.path == flannel.NET_CONF_PATH
    assert json.loads(net_conf.content) == {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}
    assert result.agent.argv == ("flanneld", "--net-config-path", flannel.NET_CONF_PATH, "--ip-masq")
    assert result.agent.env == {}
    assert result.agent.command_line() == "pycni flanneld --net-config-path /etc/kube-flannel/net-conf.json --ip-masq"
    # flannel delegates to bridge with host-local by default; portmap is the chain's second plugin.
    assert result.plugin_types == ("flannel", "bridge", "host-local", "portmap")
    notes = set(result.notes)
    assert (
        "ignored: DaemonSet kube-system/kube-flannel-ds flanneld --kube-subnet-mgr (pycni has no Kubernetes subnet "
        "manager: leases are kept in etcd (--etcd-endpoints) or the embedded store)"
    ) in notes
    for label in (
        "PodSecurityPolicy psp.flannel.unprivileged",
        "ClusterRole flannel",
        "ClusterRoleBinding flannel",
        "ServiceAccount kube-system/flannel",
    ):
        assert any(n.startswith(f"ignored: {label} (") for n in notes), label
    assert "ignored: DaemonSet kube-system/kube-flannel-ds env EVENT_QUEUE_DEPTH (not read by pycni flanneld)" in notes
    assert not any("ConfigMap kube-system/kube-flannel-cfg (" in n for n in notes)  # used, so not ignored


SINGLE_PLUGIN = {"name": "cbr0", "cniVersion": "0.3.1", "type": "flannel"}


@pytest.mark.parametrize(
    ("name", "network", "backend", "delegate"),
    [
        (
            "flannel-config-vxlan.yml",
            "10.244.0.0/16",
            {"Type": "vxlan"},
            {"hairpinMode": True, "isDefaultGateway": True},
        ),
        (
            "flannel-config-host-gw.yml",
            "10.244.0.0/16",
            {"Type": "host-gw"},
            {"hairpinMode": True, "isDefaultGateway": True},
        ),
        (
            "flannel-config-udp.yml",
            "10.244.0.0/16",
            {"Type": "udp", "Port": 8285},
            {"hairpinMode": True, "isDefaultGateway": True},
        ),
        (
            "flannel-config-vxlan-directrouting.yml",
            "10.244.0.0/16",
            {"Type": "vxlan", "VNI": 1, "Port": 8472, "DirectRouting": True},
            {"hairpinMode": True, "isDefaultGateway": True},
        ),
        (
            "flannel-config-192.168.yaml",
            "192.168.0.0/16",
            {"Type": "vxlan"},
            {"forceAddress": False, "isDefaultGateway": True},
        ),
    ],
)
def test_flannel_net_conf_variants(name: str, network: str, backend: dict[str, Any], delegate: dict[str, Any]) -> None:
    result = build(name)
    # A single plugin's cni-conf.json is written as a list of that plugin (libcni's ConfListFromConf).
    expected = {"name": "cbr0", "cniVersion": "0.3.1", "plugins": [{**SINGLE_PLUGIN, "delegate": delegate}]}
    assert json.loads(result.conflist.content) == expected
    assert json.loads(result.files[0].content) == {"Network": network, "Backend": backend}
    config = NetworkConfig.from_json(result.files[0].content)
    assert str(config.network) == network
    assert config.backend_type == backend["Type"]
    assert config.subnet_len == 24
    assert result.agent.argv == ("flanneld", "--net-config-path", flannel.NET_CONF_PATH)
    assert result.plugin_types == ("flannel", "bridge", "host-local")
    assert result.notes == (
        "note: ConfigMap kube-system/kube-flannel-cfg cni-conf.json is one plugin's config: "
        "written as a list of one plugin",
    )


def test_flannel_with_etcd_passes_the_endpoints_and_says_where_the_config_goes() -> None:
    result = build("kube-flannel.yml", etcd_endpoints="http://127.0.0.1:2379")
    assert result.agent.argv[-2:] == ("--etcd-endpoints", "http://127.0.0.1:2379")
    assert any("/coreos.com/network/config" in n for n in result.notes)


def test_flannel_daemonset_flags_and_env_are_translated() -> None:
    text = (
        fixture_text("kube-flannel.yml")
        .replace(
            "        - --kube-subnet-mgr\n",
            "        - --kube-subnet-mgr\n        - --iface=eth1\n        - --iptables-resync\n        - '7'\n"
            "        - --healthz-port=8081\n",
        )
        .replace(
            '        - name: EVENT_QUEUE_DEPTH\n          value: "5000"\n',
            '        - name: FLANNELD_PUBLIC_IP\n          value: "198.51.100.7"\n',
        )
    )
    result = build("kube-flannel.yml", text)
    assert result.agent.argv[3:] == (
        "--ip-masq",
        "--iface",
        "eth1",
        "--iptables-resync",
        "7",
        "--public-ip",
        "198.51.100.7",
    )
    assert any("flanneld --healthz-port=8081 (pycni flanneld serves no health endpoint" in n for n in result.notes)


def test_flannel_daemonset_for_another_architecture_is_ignored() -> None:
    text = fixture_text("kube-flannel.yml").replace(
        "      hostNetwork: true\n",
        "      hostNetwork: true\n      nodeSelector:\n        kubernetes.io/arch: arm64\n",
        1,
    )
    result = build("kube-flannel.yml", text)
    assert result.agent.argv == ("flanneld", "--net-config-path", flannel.NET_CONF_PATH)  # no --ip-masq: not read
    assert "ignored: DaemonSet kube-system/kube-flannel-ds (for arm64 nodes; this node is amd64)" in result.notes


# -- Calico ---------------------------------------------------------------------------------------------------


def test_calico_yaml() -> None:
    result = build("calico.yaml")
    assert result.fabric == "calico"
    assert result.conflist.path == "/etc/cni/net.d/10-calico.conflist"
    assert json.loads(result.conflist.content) == CALICO_CONFLIST
    assert result.agent.argv == ("calico-node",)
    assert result.agent.env == CALICO_ENV
    assert result.plugin_types == ("calico", "calico-ipam", "portmap", "bandwidth")
    config = from_environment(result.agent.env)
    assert config.nodename == "node-1" and config.backend == "bird" and config.ip == "autodetect"
    (pool,) = config.default_pools
    assert (pool.spec["cidr"], pool.spec["ipipMode"], pool.spec["vxlanMode"]) == ("192.168.0.0/16", "Always", "Never")
    assert config.felix_env == {"vxlanMTU": 1440, "ipipMTU": 1440}
    notes = set(result.notes)
    assert "ignored: DaemonSet kube-system/calico-node env FELIX_HEALTHENABLED (not read by pycni calico-node)" in notes
    assert (
        "ignored: Deployment kube-system/calico-kube-controllers (pycni calico-node releases leaked IPAM itself "
        "(--ipam-leak-grace-period))"
    ) in notes
    assert sum(n.startswith("ignored: CustomResourceDefinition ") for n in notes) == 2
    assert any(
        n.startswith("note: 10-calico.conflist plugins[0] (calico) datastore_type kubernetes -> pycni") for n in notes
    )


def test_calico_yaml_with_etcd() -> None:
    result = build("calico.yaml", etcd_endpoints="http://127.0.0.1:2379")
    calico_plugin = json.loads(result.conflist.content)["plugins"][0]
    assert calico_plugin["datastore_type"] == "etcdv3"
    assert calico_plugin["etcd_endpoints"] == "http://127.0.0.1:2379"
    assert result.agent.env["DATASTORE_TYPE"] == "etcdv3"
    assert result.agent.env["ETCD_ENDPOINTS"] == "http://127.0.0.1:2379"


def test_calico_etcd_conflist_takes_the_endpoints_given() -> None:
    text = fixture_text("calico.yaml").replace(
        '"datastore_type": "kubernetes",',
        '"datastore_type": "etcdv3",\n          "etcd_endpoints": "__ETCD_ENDPOINTS__",',
    )
    result = build("calico.yaml", text, etcd_endpoints="http://127.0.0.1:2379")
    calico_plugin = json.loads(result.conflist.content)["plugins"][0]
    assert (calico_plugin["datastore_type"], calico_plugin["etcd_endpoints"]) == ("etcdv3", "http://127.0.0.1:2379")
    assert (
        "note: 10-calico.conflist plugins[0] (calico) etcd_endpoints none -> http://127.0.0.1:2379 (given to install)"
        in (result.notes)
    )


def test_calico_yaml_switched_to_vxlan_as_the_article_does() -> None:
    """Section 2.2.6.1.2.3: IPIP Never, VXLAN Always, calico_backend vxlan; and the pod CIDR uncommented."""
    text = (
        fixture_text("calico.yaml")
        .replace(
            'name: CALICO_IPV4POOL_IPIP\n              value: "Always"',
            'name: CALICO_IPV4POOL_IPIP\n              value: "Never"',
        )
        .replace(
            'name: CALICO_IPV4POOL_VXLAN\n              value: "Never"',
            'name: CALICO_IPV4POOL_VXLAN\n              value: "Always"',
        )
        .replace('calico_backend: "bird"', 'calico_backend: "vxlan"')
        .replace(
            '# - name: CALICO_IPV4POOL_CIDR\n            #   value: "192.168.0.0/16"',
            '- name: CALICO_IPV4POOL_CIDR\n              value: "10.244.0.0/16"',
        )
    )
    result = build("calico.yaml", text)
    assert result.agent.env["CALICO_NETWORKING_BACKEND"] == "vxlan"
    config = from_environment(result.agent.env)
    (pool,) = config.default_pools
    assert (pool.spec["cidr"], pool.spec["ipipMode"], pool.spec["vxlanMode"]) == ("10.244.0.0/16", "Never", "Always")
    assert config.backend == "vxlan"


def test_calico_configmap_alone_gives_what_the_stock_daemonset_passes() -> None:
    documents = [d for d in load_file(str(FIXTURES / "calico.yaml")) if d.kind == "ConfigMap"]
    result = plan.build(documents, node="node-1", cni_conf_dir=CONF_DIR)
    assert json.loads(result.conflist.content) == CALICO_CONFLIST
    assert result.agent.env == {
        "NODENAME": "node-1",
        "CALICO_NETWORKING_BACKEND": "bird",
        "FELIX_IPINIPMTU": "1440",
        "FELIX_VXLANMTU": "1440",
    }
    assert any(n.startswith("note: no calico-node DaemonSet in the manifest") for n in result.notes)


def test_custom_resources_installation() -> None:
    result = build("custom-resources.yaml")
    assert json.loads(result.conflist.content) == {
        "name": "k8s-pod-network",
        "cniVersion": "0.3.1",
        "plugins": [
            {
                "type": "calico",
                "datastore_type": "pycni",
                "mtu": 0,
                "nodename_file_optional": False,
                "log_level": "Info",
                "log_file_path": "/var/log/calico/cni/cni.log",
                "ipam": {"type": "calico-ipam", "assign_ipv4": "true", "assign_ipv6": "false"},
                "container_settings": {"allow_ip_forwarding": False},
                "policy": {"type": "k8s"},
                "kubernetes": {"kubeconfig": "/etc/cni/net.d/calico-kubeconfig"},
            },
            {"type": "bandwidth", "capabilities": {"bandwidth": True}},
            {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}},
        ],
    }
    path = str(FIXTURES / "custom-resources.yaml")
    assert result.agent.argv == ("calico-node", "--installation", path)
    assert result.agent.env == {"NODENAME": "node-1"}
    assert (
        "ignored: APIServer default (pycni has no Calico API server: pycni calicoctl reads the datastore)"
        in result.notes
    )
    (pool,) = parse_installation(fixture_text("custom-resources.yaml")).pools
    assert (pool.spec["cidr"], pool.spec["vxlanMode"], pool.spec["natOutgoing"]) == (
        "10.244.0.0/16",
        "CrossSubnet",
        True,
    )


# -- bad input ------------------------------------------------------------------------------------------------


def test_article_192_168_example_is_not_json() -> None:
    message = error_of("flannel-config-192.168-article.yaml")
    assert message == (
        f"{FIXTURES / 'flannel-config-192.168-article.yaml'} document 1 (ConfigMap kube-system/kube-flannel-cfg): "
        "data.net-conf.json: network config is not JSON: Expecting property name enclosed in double quotes: "
        "line 2 column 32 (char 33)"
    )


def test_malformed_yaml_names_the_document_and_line() -> None:
    text = fixture_text("flannel-config-vxlan.yml") + "---\nkind: ConfigMap\nmetadata:\n  name: x\n   bad: indent\n"
    message = error_of("flannel-config-vxlan.yml", text)
    line = fixture_text("flannel-config-vxlan.yml").count("\n") + 5  # the "bad: indent" line
    assert message == (
        f"{FIXTURES / 'flannel-config-vxlan.yml'} is not valid YAML (document 2): line {line} column 7: "
        "mapping values are not allowed here"
    )


def test_unrelated_manifest() -> None:
    text = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: nginx\n  namespace: default\n"
    message = error_of("nginx.yaml", text)
    assert message == (
        f"{FIXTURES / 'nginx.yaml'}: neither Flannel (ConfigMap kube-flannel-cfg) nor Calico (ConfigMap calico-config, "
        "or an operator Installation) is in it (found: Deployment default/nginx)"
    )


def test_a_document_that_is_not_an_object() -> None:
    assert error_of("list.yaml", "- a\n- b\n").endswith(
        "list.yaml document 1: expected a Kubernetes object (a mapping with kind), got list"
    )


def test_bad_cni_conf_json() -> None:
    text = fixture_text("flannel-config-vxlan.yml").replace('"type": "flannel",', "")
    assert error_of("flannel-config-vxlan.yml", text).endswith(
        "(ConfigMap kube-system/kube-flannel-cfg): data.cni-conf.json: "
        "error parsing plugin configuration: missing 'type'"
    )


def test_unknown_flannel_backend() -> None:
    text = fixture_text("flannel-config-vxlan.yml").replace('"Type": "vxlan"', '"Type": "ipsec"')
    assert error_of("flannel-config-vxlan.yml", text).endswith(
        "data.net-conf.json Backend.Type: 'ipsec': pycni has host-gw, udp, vxlan"
    )


def test_bad_network_in_net_conf() -> None:
    text = fixture_text("flannel-config-vxlan.yml").replace("10.244.0.0/16", "10.244.0.1/16")
    assert error_of("flannel-config-vxlan.yml", text).endswith(
        "data.net-conf.json: Network: '10.244.0.1/16' is not a network in CIDR notation (host bits must be zero)"
    )


def test_calico_ipip_and_vxlan_both_on() -> None:
    text = fixture_text("calico.yaml").replace(
        'name: CALICO_IPV4POOL_VXLAN\n              value: "Never"',
        'name: CALICO_IPV4POOL_VXLAN\n              value: "Always"',
    )
    message = error_of("calico.yaml", text)
    assert (
        "calico.yaml document 8 (DaemonSet kube-system/calico-node): calico-node's settings: "
        "Invalid configuration with IPIP and VXLAN both enabled" in message
    )


def test_calico_empty_veth_mtu_breaks_the_template() -> None:
    text = fixture_text("calico.yaml").replace('veth_mtu: "1440"', 'veth_mtu: ""')
    assert (
        "(ConfigMap kube-system/calico-config): data.cni_network_config: not JSON after install-cni's substitutions"
        in error_of("calico.yaml", text)
    )


def test_flannel_and_calico_together() -> None:
    text = fixture_text("flannel-config-vxlan.yml") + "---\n" + fixture_text("calico.yaml")
    assert error_of("both.yaml", text).endswith(
        "ConfigMap kube-system/kube-flannel-cfg and ConfigMap kube-system/calico-config found: "
        "install one network, from one manifest"
    )


# -- the CLI, as a process, into tmp dirs ---------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-m", "pycni.cli.install_manifest", *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_cli_installs_flannel_into_tmp_dirs(tmp_path: Path) -> None:
    conf, bin_dir, record = tmp_path / "net.d", tmp_path / "bin", tmp_path / "installed.json"
    net_conf = tmp_path / "kube-flannel" / "net-conf.json"
    common = ["--manifest", str(FIXTURES / "kube-flannel.yml"), "--node", "node-1", "--cni-conf-dir", str(conf)]
    common += ["--cni-bin-dir", str(bin_dir), "--net-conf-path", str(net_conf), "--record", str(record)]

    dry = run_cli(*common, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would write {conf}/10-flannel.conflist (CNI config)" in dry.stdout
    assert not tmp_path.joinpath("net.d").exists() and not bin_dir.exists() and not record.exists()

    conf.mkdir()
    (conf / "05-user.conflist").write_text('{"name": "mine", "cniVersion": "1.0.0", "plugins": [{"type": "ptp"}]}')
    proc = run_cli(*common)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert (
        f"note: {conf}/05-user.conflist sorts before 10-flannel.conflist: runtimes use the first config file"
    ) in proc.stdout.splitlines()
    conflist_path = conf / "10-flannel.conflist"
    assert json.loads(conflist_path.read_text()) == FLANNEL_STOCK
    loaded = load_conflist_file(str(conflist_path))
    assert (loaded.name, [p.type for p in loaded.plugins]) == ("cbr0", ["flannel", "portmap"])
    assert json.loads(net_conf.read_text()) == {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}
    assert sorted(os.listdir(bin_dir)) == ["bridge", "flannel", "host-local", "portmap"]
    for name in os.listdir(bin_dir):
        path = bin_dir / name
        assert os.access(path, os.X_OK)
        assert executable_plugin_type(path.read_bytes()) == name
        version = subprocess.run(
            [str(path)], env={"CNI_COMMAND": "VERSION"}, check=False, capture_output=True, text=True, timeout=30
        )
        assert version.returncode == 0, version.stderr
        assert "0.3.1" in json.loads(version.stdout)["supportedVersions"]  # the conflist's cniVersion
    lines = proc.stdout.splitlines()
    assert lines[-2:] == ["start the node agent:", f"  pycni flanneld --net-config-path {net_conf} --ip-masq"]
    assert any(line.startswith("ignored: ClusterRole flannel (") for line in lines)
    # pycni reset recognises the conflist by the install record.
    found = conflists.find(Paths(cni_conf_dir=str(conf), cni_bin_dir=str(bin_dir), installed_record=str(record)))
    (network,) = found.networks
    assert network.name == "cbr0" and network.why.startswith("written by pycni install")


def test_cli_writes_a_calico_node_unit(tmp_path: Path) -> None:
    units = tmp_path / "units"
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "portmap").write_bytes(b"\x7fELF a Go plugin")  # someone else's executable
    proc = run_cli(
        "--manifest",
        str(FIXTURES / "calico.yaml"),
        "--node",
        "Node-1",
        "--cni-conf-dir",
        str(tmp_path / "net.d"),
        "--cni-bin-dir",
        str(tmp_path / "bin"),
        "--record",
        str(tmp_path / "installed.json"),
        "--systemd",
        str(units),
    )
    assert proc.returncode == 0, proc.stderr
    plugin = json.loads((tmp_path / "net.d" / "10-calico.conflist").read_text())["plugins"][0]
    assert plugin["nodename"] == "node-1" and plugin["mtu"] == 1440
    assert plugin["kubernetes"]["kubeconfig"] == f"{tmp_path}/net.d/calico-kubeconfig"
    assert f"note: replaced {tmp_path}/bin/portmap, which was not pycni's executable" in proc.stdout.splitlines()
    assert executable_plugin_type((tmp_path / "bin" / "portmap").read_bytes()) == "portmap"
    unit = (units / "pycni-calico-node.service").read_text()
    for key, value in CALICO_ENV.items():
        assert f'Environment="{key}={value}"' in unit
    exec_start = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert len(exec_start) == 1 and exec_start[0].endswith(" calico-node")
    assert proc.stdout.splitlines()[-1] == (
        "start the node agent: systemctl daemon-reload && systemctl enable --now pycni-calico-node.service"
    )


def test_cli_error_is_one_line_and_exit_1(tmp_path: Path) -> None:
    proc = run_cli(
        "--manifest",
        str(FIXTURES / "flannel-config-192.168-article.yaml"),
        "--cni-conf-dir",
        str(tmp_path / "net.d"),
        "--cni-bin-dir",
        str(tmp_path / "bin"),
        "--record",
        str(tmp_path / "r.json"),
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("pycni install: ") and "data.net-conf.json: network config is not JSON" in proc.stderr
    assert not (tmp_path / "net.d").exists()
    missing = run_cli("--manifest", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1
    assert (
        missing.stderr
        == f"pycni install: cannot read the manifest {tmp_path / 'nope.yaml'}: No such file or directory\n"
    )


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*path, index))
    return found


@pytest.mark.parametrize("name", ["kube-flannel.yml", "calico.yaml", "custom-resources.yaml"])
def test_any_value_of_the_wrong_shape_is_one_line_not_a_crash(name: str) -> None:
    """Each fixture with one value replaced by one of another shape: a plan, or one ManifestError line."""
    import random

    import yaml

    rng = random.Random(name)
    documents = [d for d in yaml.safe_load_all(fixture_text(name)) if d]
    for _ in range(25):
        mutated = json.loads(json.dumps(documents))
        target = rng.choice(mutated)
        path = rng.choice(_paths(target)[1:])
        parent = target
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = rng.choice([None, [], "x", 5, {"a": 1}, True, [1, 2], ""])
        try:
            build(name, yaml.safe_dump_all(mutated))
        except ManifestError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(FIXTURES / name)), (path, str(exc))
