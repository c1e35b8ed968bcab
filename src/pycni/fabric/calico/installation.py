"""The Tigera operator's ``Installation`` (custom-resources.yaml) read as what calico-node is then told (pure).

The operator turns ``spec.calicoNetwork`` into IPPools and calico-node
settings; ``pycni calico-node --installation FILE`` does the same for one node:

* ``ipPools[]``: ``cidr`` (192.168.0.0/16), ``blockSize`` (26), ``encapsulation``
  (``IPIP`` → ipipMode Always, ``IPIPCrossSubnet`` → ipipMode CrossSubnet,
  ``VXLAN`` → vxlanMode Always, ``VXLANCrossSubnet`` → vxlanMode CrossSubnet,
  ``None``), ``natOutgoing`` (``Enabled``/``Disabled``, default Enabled),
  ``nodeSelector`` (``all()``), ``disableBGPExport``, ``name``
  (``default-ipv4-ippool`` for the first IPv4 pool); the pools are created
  when the cluster has no IPv4 pool yet, as the operator creates them at install;
* ``bgp``: ``Enabled`` → backend ``bird``, ``Disabled`` → ``vxlan`` (no BIRD);
  absent: Enabled (the operator's default);
* ``mtu``: the pod MTU (as ``veth_mtu``: FelixConfiguration vxlanMTU/ipipMTU);
* ``nodeAddressAutodetectionV4``: ``firstFound``, ``interface``,
  ``skipInterface``, ``canReach``, ``cidrs`` → ``IP_AUTODETECTION_METHOD``.

The seed's custom-resources.yaml (blockSize 26, 10.244.0.0/16,
VXLANCrossSubnet, natOutgoing Enabled, nodeSelector all()) gives one pool
``default-ipv4-ippool`` with vxlanMode CrossSubnet and natOutgoing true.
Other documents in the file (``APIServer``) are ignored.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import yaml

from pycni.fabric.calico.config import ConfigError
from pycni.fabric.calico.errors import CalicoError
from pycni.fabric.calico.model import Resource, new_resource
from pycni.fabric.calico.nodeconfig import DEFAULT_POOL_CIDR, DEFAULT_POOL_NAME

OPERATOR_API = "operator.tigera.io/v1"
ENCAPSULATIONS = {
    "IPIP": ("Always", "Never"),
    "IPIPCrossSubnet": ("CrossSubnet", "Never"),
    "VXLAN": ("Never", "Always"),
    "VXLANCrossSubnet": ("Never", "CrossSubnet"),
    "None": ("Never", "Never"),
}
_AUTODETECT_KEYS = {"interface": "interface", "skipInterface": "skip-interface", "canReach": "can-reach"}


@dataclass(frozen=True)
class Installation:
    """What an Installation tells calico-node: pools to create, the backend, the MTU, autodetection."""

    pools: tuple[Resource, ...]
    backend: str
    mtu: int | None = None
    autodetection: str | None = None


def _block_size(item: dict[str, Any], index: int, where: str, default: int) -> int:
    value = item.get("blockSize") or default
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
        raise ConfigError(f"{where}: ipPools[{index}].blockSize {value!r} must be a number (e.g. 26)")
    return int(value)


def _pool(item: Any, index: int, where: str) -> Resource:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: calicoNetwork.ipPools[{index}] must be a mapping")
    cidr = str(item.get("cidr") or DEFAULT_POOL_CIDR)
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise ConfigError(f"{where}: ipPools[{index}].cidr {cidr!r} is not a CIDR") from None
    encapsulation = str(item.get("encapsulation") or "IPIP")
    if encapsulation not in ENCAPSULATIONS:
        known = ", ".join(ENCAPSULATIONS)
        raise ConfigError(f"{where}: ipPools[{index}].encapsulation {encapsulation!r}: use one of {known}")
    ipip, vxlan = ENCAPSULATIONS[encapsulation]
    nat = str(item.get("natOutgoing") or "Enabled")
    if nat not in ("Enabled", "Disabled"):
        raise ConfigError(f"{where}: ipPools[{index}].natOutgoing {nat!r}: use Enabled or Disabled")
    default_name = DEFAULT_POOL_NAME if network.version == 4 else "default-ipv6-ippool"
    name = str(item.get("name") or (default_name if index == 0 else f"{default_name}-{index}"))
    spec: dict[str, Any] = {
        "cidr": str(network),
        "vxlanMode": vxlan,
        "ipipMode": ipip,
        "natOutgoing": nat == "Enabled",
        "blockSize": _block_size(item, index, where, 26 if network.version == 4 else 122),
        "nodeSelector": str(item.get("nodeSelector") or "all()"),
    }
    if str(item.get("disableBGPExport", "")).lower() == "true":
        spec["disableBGPExport"] = True
    try:
        return new_resource("IPPool", name, spec)
    except CalicoError as exc:
        raise ConfigError(f"{where}: ipPools[{index}]: {exc.msg}") from None


def _autodetection(spec: Any, where: str) -> str | None:
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: nodeAddressAutodetectionV4 must be a mapping")
    if spec.get("firstFound"):
        return "first-found"
    for key, method in _AUTODETECT_KEYS.items():
        if spec.get(key):
            return f"{method}={spec[key]}"
    if spec.get("cidrs"):
        return "cidr=" + ",".join(str(c) for c in spec["cidrs"])
    if spec.get("kubernetes"):
        return "kubernetes-internal-ip"
    return None


def parse_installation(text: str, where: str = "the Installation") -> Installation:
    """The Installation document in ``text`` (YAML, several documents allowed)."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not YAML: {exc}".replace("\n", " ")) from None
    found = [d for d in documents if isinstance(d, dict) and d.get("kind") == "Installation"]
    if not found:
        raise ConfigError(f"{where} has no 'kind: Installation' ({OPERATOR_API}) document")
    document = found[0]
    if document.get("apiVersion") != OPERATOR_API:
        raise ConfigError(f"{where}: the Installation's apiVersion must be {OPERATOR_API}")
    spec = document.get("spec") or {}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: the Installation's spec must be a mapping")
    network = spec.get("calicoNetwork") or {}
    if not isinstance(network, dict):
        raise ConfigError(f"{where}: spec.calicoNetwork must be a mapping")
    items = network.get("ipPools")
    if items is None:
        items = [{}]  # the operator's default pool
    if not isinstance(items, list):
        raise ConfigError(f"{where}: calicoNetwork.ipPools must be a list")
    pools = tuple(_pool(item, index, where) for index, item in enumerate(items))
    bgp = network.get("bgp")
    if bgp not in (None, "Enabled", "Disabled"):
        raise ConfigError(f"{where}: calicoNetwork.bgp {bgp!r}: use Enabled or Disabled")
    backend = "vxlan" if bgp == "Disabled" else "bird"
    mtu = network.get("mtu")
    if mtu is not None and (not isinstance(mtu, int) or not 0 <= mtu <= 65535):
        raise ConfigError(f"{where}: calicoNetwork.mtu {mtu!r} must be a number 0..65535")
    return Installation(
        pools=pools,
        backend=backend,
        mtu=mtu or None,
        autodetection=_autodetection(network.get("nodeAddressAutodetectionV4"), where),
    )
