"""pycni reset: which CNI config files are pycni's, and what its networks' plugins leave on the node."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pycni.cli.install import install
from pycni.reset import conflists, record
from pycni.reset.paths import Paths

FLANNEL: dict[str, Any] = {
    "cniVersion": "0.3.1",
    "name": "cbr0",
    "plugins": [
        {"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}
CALICO: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "k8s-pod-network",
    "plugins": [
        {
            "type": "calico",
            "nodename_file": "/n/nodename",
            "ipam_lock_file": "/n/ipam.lock",
            "ipam": {"type": "calico-ipam"},
        },
        {"type": "bandwidth", "capabilities": {"bandwidth": True}},
    ],
}
USER: dict[str, Any] = {"cniVersion": "1.0.0", "name": "mine", "plugins": [{"type": "bridge", "bridge": "br-user"}]}


def node(tmp_path: Path, pycni_bin: bool = True) -> Paths:
    paths = Paths().rerooted(str(tmp_path))
    Path(paths.cni_conf_dir).mkdir(parents=True)
    if pycni_bin:
        install(paths.cni_bin_dir, ["flannel", "portmap", "calico", "calico-ipam", "bandwidth", "bridge"])
    return paths


def write(paths: Paths, name: str, config: dict[str, Any]) -> Path:
    path = Path(paths.cni_conf_dir) / name
    path.write_text(json.dumps(config))
    return path


def test_installer_names_with_pycni_executables_are_pycni_and_the_users_file_is_not(tmp_path: Path) -> None:
    paths = node(tmp_path)
    write(paths, "10-flannel.conflist", FLANNEL)
    write(paths, "10-calico.conflist", CALICO)
    write(paths, "99-user.conflist", USER)
    write(paths, "20-bridge.conflist", {**USER, "name": "other"})  # pycni plugin types, but not an installer's file
    found = conflists.find(paths)
    assert sorted(n.name for n in found.networks) == ["cbr0", "k8s-pod-network"]
    assert found.kept == []


def test_installer_name_is_not_enough_without_pycni_executables(tmp_path: Path) -> None:
    paths = node(tmp_path, pycni_bin=False)
    Path(paths.cni_bin_dir).mkdir(parents=True)
    (Path(paths.cni_bin_dir) / "flannel").write_bytes(b"\x7fELF the Go flannel plugin")
    write(paths, "10-flannel.conflist", FLANNEL)
    assert conflists.find(paths).networks == []


def test_installer_name_with_a_foreign_first_plugin_is_not_pycni(tmp_path: Path) -> None:
    paths = node(tmp_path)
    write(paths, "10-flannel.conflist", {**FLANNEL, "plugins": FLANNEL["plugins"][::-1]})
    assert conflists.find(paths).networks == []


def test_recorded_file_is_pycni_until_it_changes(tmp_path: Path) -> None:
    paths = node(tmp_path, pycni_bin=False)
    path = write(paths, "05-any-name.conflist", USER)
    record = {"version": 1, "files": [{"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}]}
    Path(paths.installed_record).parent.mkdir(parents=True)
    Path(paths.installed_record).write_text(json.dumps(record))
    found = conflists.find(paths)
    assert [n.name for n in found.networks] == ["mine"]
    assert "recorded in" in found.networks[0].why
    path.write_text(json.dumps({**USER, "plugins": [{"type": "bridge", "bridge": "br-edited"}]}))
    found = conflists.find(paths)
    assert found.networks == []
    assert found.kept == [f"{path}: changed since pycni install wrote it (not removed)"]


def test_unreadable_record_counts_as_none(tmp_path: Path) -> None:
    paths = node(tmp_path, pycni_bin=False)
    Path(paths.installed_record).parent.mkdir(parents=True)
    Path(paths.installed_record).write_text("{not json")
    assert record.read_record(paths.installed_record) == {}


def test_flannel_network_names_its_bridge_ipam_dir_and_files(tmp_path: Path) -> None:
    paths = Paths().rerooted(str(tmp_path))
    net = conflists.describe("cbr0", "/c", "why", FLANNEL["plugins"], paths)
    assert net.bridges == {"cni0"}
    assert net.ipam_dirs == (f"{paths.ipam_data_dir}/cbr0",)
    assert net.state_files == (paths.flannel_subnet_file,)
    assert net.state_dirs == (paths.flannel_data_dir,)
    custom = [
        {
            "type": "flannel",
            "subnetFile": "/s",
            "dataDir": "/d",
            "delegate": {"bridge": "cbr9", "ipam": {"dataDir": "/i"}},
        }
    ]
    net = conflists.describe("x", "/c", "why", custom, paths)
    assert (net.bridges, net.ipam_dirs, net.state_files, net.state_dirs) == (
        frozenset({"cbr9"}),
        ("/i/x",),
        ("/s",),
        ("/d",),
    )


def test_bridge_and_calico_networks(tmp_path: Path) -> None:
    paths = Paths().rerooted(str(tmp_path))
    bridge = [{"type": "bridge", "ipam": {"type": "host-local", "dataDir": "/ipam"}}]
    net = conflists.describe("n", "/c", "why", bridge, paths)
    assert (net.bridges, net.ipam_dirs) == (frozenset({"cni0"}), ("/ipam/n",))
    net = conflists.describe("k8s-pod-network", "/c", "why", CALICO["plugins"], paths)
    assert net.bridges == frozenset() and net.ipam_dirs == ()
    assert net.state_files == ("/n/nodename", f"{paths.calico_lib_dir}/mtu", "/n/ipam.lock")


def test_a_recorded_file_without_a_valid_name_is_only_the_file(tmp_path: Path) -> None:
    paths = node(tmp_path, pycni_bin=False)
    Path(paths.installed_record).parent.mkdir(parents=True)
    entries = []
    for index, name in enumerate(("", "../..", None)):
        path = write(paths, f"0{index}-bad.conflist", {**USER, "name": name})
        entries.append({"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    Path(paths.installed_record).write_text(json.dumps({"version": 1, "files": entries}))
    found = conflists.find(paths)
    assert [(n.name, n.bridges, n.ipam_dirs) for n in found.networks] == [("", frozenset(), ())] * 3
    assert len(found.kept) == 3 and all("no valid network name" in k for k in found.kept)


def test_record_installed_adds_and_refreshes_entries(tmp_path: Path) -> None:
    paths = node(tmp_path, pycni_bin=False)
    first = write(paths, "10-flannel.conflist", FLANNEL)
    second = write(paths, "10-calico.conflist", CALICO)
    record.record_installed([str(first)], paths.installed_record)
    record.record_installed([str(second)], paths.installed_record)
    first.write_text(json.dumps(USER))
    record.record_installed([str(first)], paths.installed_record)  # written again: the new content is pycni's
    data = json.loads(Path(paths.installed_record).read_text())
    assert data["version"] == 1
    assert data["files"] == [
        {"path": str(second), "sha256": hashlib.sha256(second.read_bytes()).hexdigest()},
        {"path": str(first), "sha256": hashlib.sha256(first.read_bytes()).hexdigest()},
    ]
    assert sorted(n.name for n in conflists.find(paths).networks) == ["k8s-pod-network", "mine"]


def test_recorded_files_outside_the_config_dir_go_unless_changed(tmp_path: Path) -> None:
    """net-conf.json and a unit pycni install wrote elsewhere are reset's too; one the user edited stays."""
    paths = node(tmp_path)
    net_conf, unit = tmp_path / "etc" / "kube-flannel" / "net-conf.json", tmp_path / "units" / "pycni-flanneld.service"
    for path in (net_conf, unit):
        path.parent.mkdir(parents=True)
        path.write_text("pycni wrote this\n")
    record.record_installed([str(net_conf), str(unit)], path=paths.installed_record)
    assert conflists.recorded_elsewhere(paths) == (sorted([str(net_conf), str(unit)]), [])
    unit.write_text("the user's now\n")
    assert conflists.recorded_elsewhere(paths) == (
        [str(net_conf)],
        [f"{unit}: changed since pycni install wrote it (not removed)"],
    )
