"""calico-node's configuration: the environment its DaemonSet sets, read as calico/node reads it (pure).

Names and defaults are calico/node's (``node/pkg/lifecycle/startup/startup.go``,
``node/pkg/lifecycle/startup/autodetection``, the manifests' ``calico-node``
container):

* ``NODENAME`` (else ``HOSTNAME``, else the host name), lower-cased;
* ``IP``: empty (keep the Node's address, autodetect if it has none),
  ``autodetect``, ``none``, or an address (with or without a prefix length);
  ``IP_AUTODETECTION_METHOD``: ``first-found`` (default), ``interface=REGEX[,REGEX]``,
  ``skip-interface=REGEX[,REGEX]``, ``can-reach=DEST``, ``cidr=CIDR[,CIDR]``;
* ``AS`` (the Node's ``spec.bgp.asNumber``);
* ``CALICO_NETWORKING_BACKEND`` (the manifests fill it from the ConfigMap's
  ``calico_backend``): ``bird``, ``vxlan`` or ``none``;
* the default pool, created only when no IPv4 pool exists: ``CALICO_IPV4POOL_CIDR``
  (192.168.0.0/16), ``_BLOCK_SIZE`` (26), ``_IPIP`` and ``_VXLAN`` (``Always``,
  ``CrossSubnet``, ``Never``; IPIP ``Always`` if neither is set, an error if both
  are on), ``_NAT_OUTGOING`` (true), ``_NODE_SELECTOR`` (``all()``),
  ``_DISABLE_BGP_EXPORT`` (false); ``NO_DEFAULT_POOLS=true`` creates none;
* ``FELIX_*`` overrides of FelixConfiguration fields the agent reads
  (``FELIX_VXLANMTU`` and ``FELIX_IPINIPMTU`` are what the manifests fill from
  ``veth_mtu``; ``FELIX_VXLANVNI``, ``FELIX_VXLANPORT``,
  ``FELIX_ROUTEREFRESHINTERVAL``, ``FELIX_MTUIFACEPATTERN``); as in Felix, the
  environment beats the datastore;
* ``CLUSTER_TYPE`` (ClusterInformation's ``clusterType``); ``CALICO_ROUTER_ID``
  (BIRD's router ID: an IPv4 address, ``hash``, or empty for the node's address).

Bad values raise :class:`~pycni.fabric.calico.config.ConfigError` naming the
variable and what it accepts (calico/node exits on them too).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pycni.fabric.calico import paths
from pycni.fabric.calico.config import ConfigError
from pycni.fabric.calico.model import Resource, new_resource
from pycni.fabric.calico.schema import duration_seconds
from pycni.policy.endpoints import failsafe_ports

BACKENDS = ("bird", "vxlan", "none")
DEFAULT_POOL_NAME = "default-ipv4-ippool"
DEFAULT_POOL_CIDR = "192.168.0.0/16"
DEFAULT_NODENAME_FILE = paths.NODENAME_FILE
DEFAULT_MTU_FILE = paths.MTU_FILE
DEFAULT_RUN_DIR = paths.RUN_DIR
PID_FILE_NAME = "calico-node.pid"
# kube-controllers' default LeakGracePeriod (kube-controllers/pkg/config/runconfig.go): 15 minutes.
DEFAULT_LEAK_GRACE_PERIOD = 900.0
AUTODETECTION_METHODS = ("first-found", "interface", "skip-interface", "can-reach", "cidr")
FELIX_ENV = {
    "FELIX_VXLANMTU": "vxlanMTU",
    "FELIX_IPINIPMTU": "ipipMTU",
    "FELIX_VXLANVNI": "vxlanVNI",
    "FELIX_VXLANPORT": "vxlanPort",
    "FELIX_ROUTEREFRESHINTERVAL": "routeRefreshInterval",
    "FELIX_MTUIFACEPATTERN": "mtuIfacePattern",
    "FELIX_FAILSAFEINBOUNDHOSTPORTS": "failsafeInboundHostPorts",
    "FELIX_FAILSAFEOUTBOUNDHOSTPORTS": "failsafeOutboundHostPorts",
}
_MODES = {
    "": "Never",
    "off": "Never",
    "never": "Never",
    "always": "Always",
    "crosssubnet": "CrossSubnet",
    "cross-subnet": "CrossSubnet",
}
_TRUE = ("1", "t", "true", "yes", "y", "on")
_FALSE = ("0", "f", "false", "no", "n", "off")


@dataclass(frozen=True)
class AutodetectMethod:
    """``IP_AUTODETECTION_METHOD`` parsed: ``kind`` is one of :data:`AUTODETECTION_METHODS`."""

    kind: str = "first-found"
    values: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.kind if not self.values else f"{self.kind}={','.join(self.values)}"


@dataclass(frozen=True)
class NodeConfig:
    """Everything the agent is told at start: who it is, how to find its address, what to create, where to write."""

    nodename: str
    ip: str = ""  # "", "autodetect", "none" or an address
    autodetection: AutodetectMethod = field(default_factory=AutodetectMethod)
    as_number: int | None = None
    backend: str = "bird"
    default_pools: tuple[Resource, ...] = ()
    cluster_type: str = ""
    router_id: str = ""
    felix_env: Mapping[str, Any] = field(default_factory=dict)  # FelixConfiguration field -> value
    nodename_file: str = DEFAULT_NODENAME_FILE
    mtu_file: str = DEFAULT_MTU_FILE
    run_dir: str = DEFAULT_RUN_DIR
    pid_file: str = ""  # "": <run_dir>/calico-node.pid
    resync: float | None = None  # seconds; None: routeRefreshInterval (Felix's 90 s)
    leak_grace_period: float = DEFAULT_LEAK_GRACE_PERIOD  # seconds; 0: no IPAM leak GC

    @property
    def pid_path(self) -> str:
        return self.pid_file or os.path.join(self.run_dir, PID_FILE_NAME)


def parse_bool(name: str, text: str, default: bool) -> bool:
    """strconv.ParseBool as calico/node applies it to its variables (empty: the default)."""
    folded = text.strip().lower()
    if not folded:
        return default
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise ConfigError(f"{name}={text!r} is not a boolean: use true or false")


def parse_duration(name: str, text: str) -> float:
    """A Go duration (``90s``, ``1m30s``, ``500ms``) or plain seconds, as Felix reads its intervals."""
    seconds = duration_seconds(text)
    if seconds is None:
        raise ConfigError(f"{name}={text!r} is not a duration: use e.g. 90s, 1m30s or 500ms")
    return seconds


def encap_mode(name: str, text: str) -> str:
    """``Always``/``CrossSubnet``/``Never`` from calico/node's spellings (any case, ``off``, ``cross-subnet``)."""
    mode = _MODES.get(text.strip().lower())
    if mode is None:
        raise ConfigError(f"{name}={text!r}: use Always, CrossSubnet or Never")
    return mode


def nodename_from(env: Mapping[str, str], given: str = "") -> str:
    """``--nodename``, else NODENAME, else HOSTNAME, else the host name; lower-cased and trimmed."""
    name = (given or env.get("NODENAME") or env.get("HOSTNAME") or socket.gethostname()).strip().lower()
    if not name:
        raise ConfigError("no node name: set NODENAME (or --nodename)")
    return name


def parse_autodetection(text: str, source: str = "IP_AUTODETECTION_METHOD") -> AutodetectMethod:
    """One of calico/node's methods; ``kubernetes-internal-ip`` needs Kubernetes and says so."""
    stripped = text.strip()
    if not stripped or stripped == "first-found":
        return AutodetectMethod()
    kind, sep, rest = stripped.partition("=")
    if kind == "kubernetes-internal-ip":
        raise ConfigError(f"{source}={text!r} needs the Kubernetes API, which pycni does not use: use interface=...")
    if not sep or kind not in AUTODETECTION_METHODS or kind == "first-found":
        raise ConfigError(
            f"{source}={text!r}: use first-found, interface=REGEX, skip-interface=REGEX, can-reach=DEST or cidr=CIDR"
        )
    values = tuple(v.strip() for v in rest.split(",") if v.strip())
    if not values:
        raise ConfigError(f"{source}={text!r}: {kind}= needs a value")
    for value in values:
        if kind in ("interface", "skip-interface"):
            try:
                re.compile(value)
            except re.error as exc:
                raise ConfigError(f"{source}: {value!r} is not a regular expression: {exc}") from None
        elif kind == "cidr":
            try:
                ipaddress.IPv4Network(value, strict=False)
            except ValueError:
                raise ConfigError(f"{source}: {value!r} is not an IPv4 CIDR") from None
        elif kind == "can-reach" and len(values) > 1:
            raise ConfigError(f"{source}: can-reach= takes one destination")
    return AutodetectMethod(kind, values)


def parse_ip(text: str) -> str:
    """``IP``: "", ``autodetect``, ``none`` or an IPv4 address (a prefix length is kept)."""
    stripped = text.strip()
    if stripped.lower() in ("", "autodetect", "none"):
        return stripped.lower()
    try:
        ipaddress.IPv4Interface(stripped)
    except ValueError:
        raise ConfigError(f"IP={text!r}: use an IPv4 address, autodetect or none") from None
    return stripped


def default_pool(env: Mapping[str, str]) -> Resource:
    """The IPPool calico/node creates from ``CALICO_IPV4POOL_*`` when the cluster has no IPv4 pool."""
    cidr = env.get("CALICO_IPV4POOL_CIDR", "").strip() or DEFAULT_POOL_CIDR
    try:
        network = ipaddress.IPv4Network(cidr, strict=False)
    except ValueError:
        raise ConfigError(f"CALICO_IPV4POOL_CIDR={cidr!r} is not an IPv4 CIDR (e.g. 10.244.0.0/16)") from None
    block_text = env.get("CALICO_IPV4POOL_BLOCK_SIZE", "").strip() or "26"
    try:
        block_size = int(block_text)
    except ValueError:
        raise ConfigError(f"CALICO_IPV4POOL_BLOCK_SIZE={block_text!r} is not a number (20..32)") from None
    ipip_text = env.get("CALICO_IPV4POOL_IPIP", "")
    vxlan_text = env.get("CALICO_IPV4POOL_VXLAN", "")
    if not ipip_text.strip() and not vxlan_text.strip():
        ipip_text = "Always"  # calico/node's default when neither is given
    ipip = encap_mode("CALICO_IPV4POOL_IPIP", ipip_text)
    vxlan = encap_mode("CALICO_IPV4POOL_VXLAN", vxlan_text)
    if ipip != "Never" and vxlan != "Never":
        raise ConfigError(
            f"Invalid configuration with IPIP and VXLAN both enabled (CALICO_IPV4POOL_IPIP={ipip_text!r}, "
            f"CALICO_IPV4POOL_VXLAN={vxlan_text!r}): set one of them to Never"
        )
    spec: dict[str, Any] = {
        "cidr": str(network),
        "vxlanMode": vxlan,
        "ipipMode": ipip,
        "natOutgoing": parse_bool("CALICO_IPV4POOL_NAT_OUTGOING", env.get("CALICO_IPV4POOL_NAT_OUTGOING", ""), True),
        "blockSize": block_size,
        "nodeSelector": env.get("CALICO_IPV4POOL_NODE_SELECTOR", "").strip() or "all()",
    }
    if parse_bool("CALICO_IPV4POOL_DISABLE_BGP_EXPORT", env.get("CALICO_IPV4POOL_DISABLE_BGP_EXPORT", ""), False):
        spec["disableBGPExport"] = True
    return new_resource("IPPool", DEFAULT_POOL_NAME, spec)


def felix_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """The ``FELIX_*`` variables the agent honours, as FelixConfiguration fields (typed, checked)."""
    out: dict[str, Any] = {}
    for variable, key in FELIX_ENV.items():
        text = env.get(variable, "").strip()
        if not text:
            continue
        if key == "routeRefreshInterval":
            out[key] = parse_duration(variable, text)
        elif key == "mtuIfacePattern":
            try:
                re.compile(text)
            except re.error as exc:
                raise ConfigError(f"{variable}: {text!r} is not a regular expression: {exc}") from None
            out[key] = text
        elif key.startswith("failsafe"):
            try:
                failsafe_ports(text, (), variable)  # the policy engine reads the text; refuse a wrong one at start
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            out[key] = text
        else:
            try:
                value = int(text)
            except ValueError:
                raise ConfigError(f"{variable}={text!r} is not a number") from None
            if value < 0:
                raise ConfigError(f"{variable}={text!r} must not be negative")
            out[key] = value
    return out


def backend_from(text: str) -> str:
    backend = text.strip().lower() or "bird"
    if backend not in BACKENDS:
        raise ConfigError(f"CALICO_NETWORKING_BACKEND={text!r}: use bird, vxlan or none")
    return backend


def as_number_from(text: str) -> int | None:
    stripped = text.strip()
    if not stripped:
        return None
    try:
        if "." in stripped:  # AS-dot notation: high.low
            high, low = (int(part) for part in stripped.split(".", 1))
            value = (high << 16) + low
        else:
            value = int(stripped)
    except ValueError:
        raise ConfigError(f"AS={text!r} is not an AS number") from None
    if not 0 < value < 1 << 32:
        raise ConfigError(f"AS={text!r} is out of range (1..4294967295)")
    return value


def router_id_from(text: str) -> str:
    stripped = text.strip()
    if stripped and stripped != "hash":
        try:
            ipaddress.IPv4Address(stripped)
        except ValueError:
            raise ConfigError(f"CALICO_ROUTER_ID={text!r}: use an IPv4 address or hash") from None
    return stripped


def from_environment(env: Mapping[str, str], **flags: Any) -> NodeConfig:
    """The NodeConfig calico/node would run with under ``env``; non-empty ``flags`` (the CLI's) win."""

    def pick(flag: str, variable: str) -> str:
        value = flags.get(flag)
        return str(value) if value not in (None, "") else env.get(variable, "")

    pools: tuple[Resource, ...] = ()
    if not parse_bool("NO_DEFAULT_POOLS", env.get("NO_DEFAULT_POOLS", ""), False):
        pools = (default_pool(env),)
    if flags.get("pools") is not None:
        pools = tuple(flags["pools"])
    method = pick("autodetection", "IP_AUTODETECTION_METHOD")
    return NodeConfig(
        nodename=nodename_from(env, str(flags.get("nodename") or "")),
        ip=parse_ip(pick("ip", "IP")),
        autodetection=parse_autodetection(method),
        as_number=as_number_from(pick("as_number", "AS")),
        backend=backend_from(pick("backend", "CALICO_NETWORKING_BACKEND")),
        default_pools=pools,
        cluster_type=env.get("CLUSTER_TYPE", ""),
        router_id=router_id_from(env.get("CALICO_ROUTER_ID", "")),
        felix_env={**felix_overrides(env), **(flags.get("felix") or {})},
        nodename_file=str(flags.get("nodename_file") or DEFAULT_NODENAME_FILE),
        mtu_file=str(flags.get("mtu_file") or DEFAULT_MTU_FILE),
        run_dir=str(flags.get("run_dir") or DEFAULT_RUN_DIR),
        pid_file=str(flags.get("pid_file") or ""),
        resync=flags.get("resync"),
        leak_grace_period=leak_grace_period_from(str(flags.get("leak_grace_period") or "")),
    )


def leak_grace_period_from(text: str) -> float:
    """``--ipam-leak-grace-period``: a Go duration (``15m``, ``3s``); ``0`` turns the leak GC off."""
    if not text:
        return DEFAULT_LEAK_GRACE_PERIOD
    seconds = parse_duration("--ipam-leak-grace-period", text)
    if seconds < 0:
        raise ConfigError(f"--ipam-leak-grace-period={text!r} is negative: use 0 (off) or a duration such as 15m")
    return seconds
