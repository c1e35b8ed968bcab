"""``pycni flanneld`` and ``pycni inspect``: the node agent's command line.

Flags are flanneld's where they apply, and like flanneld each one can also be
set through the environment as ``FLANNELD_<FLAG>`` (upper case, dashes as
underscores), e.g. ``FLANNELD_ETCD_ENDPOINTS``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import subprocess
import time
from typing import Any

from pycni.cli import inspect as inspect_picture
from pycni.cli import logs
from pycni.fabric.flannel import defaults
from pycni.metrics.address import METRICS_ADDR_HELP, metrics_address
from pycni.spec.jsonutil import get_key


def _env(flag: str) -> str | None:
    """``FLANNELD_<FLAG>``: every flag can come from the environment, as flanneld's flagsFromEnv does."""
    return os.environ.get("FLANNELD_" + flag.lstrip("-").upper().replace("-", "_"))


def _flag(parser: argparse.ArgumentParser, flag: str, default: Any, **kwargs: Any) -> None:
    """Add ``flag`` with its environment value, if set, as the default.

    argparse runs ``type`` over a string default, so a bad value in the
    environment is reported like a bad value on the command line.
    """
    env = _env(flag)
    parser.add_argument(flag, default=default if env is None else env, **kwargs)


def _bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _store_args(parser: argparse.ArgumentParser) -> None:
    _flag(
        parser,
        "--etcd-endpoints",
        "",
        help="comma-separated etcd v3 endpoints (e.g. http://127.0.0.1:2379); none: the embedded store",
    )
    _flag(parser, "--etcd-prefix", defaults.PREFIX, help="etcd key prefix")
    _flag(
        parser,
        "--store-path",
        "/var/lib/pycni/flannel.db",
        help="the embedded store's file (used without --etcd-endpoints)",
    )


def add_parsers(sub: Any) -> None:
    agent = sub.add_parser(
        "flanneld",
        help="run this node's pod-network agent (Flannel-compatible)",
        description="Lease a subnet for this node from etcd (or the embedded store), program routes to every "
        "other node's subnet with the configured backend (vxlan, host-gw, udp) and write subnet.env for the "
        "flannel CNI plugin.",
    )
    _store_args(agent)
    _flag(
        agent,
        "--net-config-path",
        "",
        help="network config (net-conf.json) to load into the embedded store",
    )
    agent.add_argument(
        "--iface",
        action="append",
        default=[v for v in [_env("iface")] if v],
        help="external interface (repeatable, tried in order); default: the default route's",
    )
    _flag(agent, "--public-ip", "", help="IP other nodes reach this node at")
    _flag(
        agent,
        "--ip-masq",
        False,
        type=_bool,
        nargs="?",
        const=True,
        help="masquerade traffic from pods to outside the cluster network",
    )
    _flag(
        agent,
        "--iptables-forward-rules",
        True,
        type=_bool,
        nargs="?",
        const=True,
        help="accept forwarded traffic to and from the cluster network (default true)",
    )
    _flag(
        agent,
        "--iptables-resync",
        5.0,
        type=float,
        help="seconds between reconciling rules and peers with the store",
    )
    _flag(agent, "--subnet-file", defaults.SUBNET_ENV_PATH, help="where to write subnet.env")
    _flag(
        agent,
        "--subnet-lease-renew-margin",
        60,
        type=int,
        help="minutes before expiry to renew the lease",
    )
    _flag(
        agent,
        "--subnet-lease-ttl",
        defaults.SUBNET_TTL,
        type=int,
        help="lease TTL in seconds (flanneld: 24 h)",
    )
    _flag(
        agent,
        "--state-dir",
        "/run/flannel",
        help="where the backend keeps state across restarts: the VTEP MAC, in a file keyed to this node "
        "(public IP and network namespace), so nodes sharing a machine may share the directory",
    )
    _flag(agent, "--metrics-addr", "", type=metrics_address, metavar="ADDR", help=METRICS_ADDR_HELP)
    logs.add_arguments(agent)
    agent.add_argument(
        "--release-on-exit",
        action="store_true",
        help="give the lease back on SIGTERM, so other nodes drop this one at once",
    )
    agent.set_defaults(func=cmd_flanneld)

    inspect = sub.add_parser(
        "inspect",
        help="show the network config, every node's lease and this node's routes; --svg/--png: draw the network",
    )
    _store_args(inspect)
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect_picture.add_arguments(inspect)
    inspect.set_defaults(func=cmd_inspect)


def cmd_flanneld(opts: argparse.Namespace) -> int:
    from pycni.fabric.flannel.agent import AgentOptions, main

    logs.configure("flanneld", opts.log_level, opts.log_format)
    options = AgentOptions(
        etcd_endpoints=opts.etcd_endpoints,
        etcd_prefix=opts.etcd_prefix,
        store_path=opts.store_path,
        net_config_path=opts.net_config_path,
        ifaces=opts.iface,
        public_ip=opts.public_ip,
        ip_masq=opts.ip_masq,
        forward_rules=opts.iptables_forward_rules,
        subnet_file=opts.subnet_file,
        state_dir=opts.state_dir,
        lease_ttl=opts.subnet_lease_ttl,
        renew_margin=opts.subnet_lease_renew_margin * 60,
        resync=opts.iptables_resync,
        release_on_exit=opts.release_on_exit,
        metrics_addr=opts.metrics_addr,
    )
    return main(options)


def cmd_inspect(opts: argparse.Namespace) -> int:
    if inspect_picture.wants_picture(opts):
        return inspect_picture.cmd_picture(opts)
    from pycni.fabric.flannel.agent import lease_summary
    from pycni.fabric.flannel.leases import open_lease_store
    from pycni.fabric.flannel.model import NetworkConfig

    store = open_lease_store(opts.etcd_endpoints or None, opts.etcd_prefix, opts.store_path or None)
    try:
        config = NetworkConfig.from_json(store.get_network_config())
        leases, revision = store.list_leases()
    finally:
        store.close()
    now = time.time()
    rows = [lease_summary(lease, now) for lease in sorted(leases, key=lambda lease: int(lease.subnet.network_address))]
    local = _local_state(config)
    if opts.json:
        print(
            json.dumps(
                {
                    "network": str(config.network),
                    "backend": config.backend,
                    "revision": revision,
                    "leases": rows,
                    "local": local,
                },
                indent=2,
            )
        )
        return 0
    print(f"network {config.network}  subnets /{config.subnet_len}  backend {json.dumps(config.backend)}")
    print(f"\n{len(rows)} node(s) (store revision {revision}):")
    print(f"  {'SUBNET':<18} {'PUBLIC IP':<16} {'BACKEND':<8} {'EXPIRES':<22} DATA")
    for row in rows:
        print(f"  {row['subnet']:<18} {row['public_ip']:<16} {row['backend']:<8} {row['expires']:<22} {row['data']}")
    print("\nthis node:")
    for title, lines in local.items():
        print(f"  {title}:")
        for line in lines or ["(none)"]:
            print(f"    {line}")
    return 0


def _local_state(config: Any) -> dict[str, list[str]]:
    """This node's routes into the cluster network, and the flannel device's neighbours and FDB."""
    network = ipaddress.ip_network(str(config.network))

    def ip(*argv: str) -> list[str]:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        return [line.strip() for line in proc.stdout.splitlines() if line.strip()]

    routes = [line for line in ip("ip", "-4", "route", "show") if _in(line.split()[0], network)]
    # Backend keys are case-insensitive, as Go decodes them (and as the vxlan backend reads VNI).
    device = f"flannel.{get_key(config.backend, 'VNI') or 1}" if config.backend_type == "vxlan" else ""
    return {
        "routes": routes,
        "neighbours": ip("ip", "neigh", "show", "dev", device) if device else [],
        "fdb": ip("bridge", "fdb", "show", "dev", device) if device else [],
    }


def _in(text: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    try:
        return ipaddress.ip_network(text, strict=False).subnet_of(network)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return False
