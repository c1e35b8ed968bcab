"""``pycni calico-node``: the Calico-compatible node agent's command line.

The environment is calico/node's (``NODENAME``, ``IP``,
``IP_AUTODETECTION_METHOD``, ``AS``, ``CALICO_NETWORKING_BACKEND``,
``CALICO_IPV4POOL_*``, ``NO_DEFAULT_POOLS``, ``FELIX_*``, ``DATASTORE_TYPE``,
``ETCD_ENDPOINTS``; see :mod:`pycni.fabric.calico.nodeconfig`); a flag, when
given, wins over its variable. ``--installation`` reads the Tigera operator's
Installation (custom-resources.yaml) for the pools, the backend, the MTU and
the autodetection method. Per-node paths (node-name file, MTU file, BIRD's
run directory, pid file) are flags, so several nodes can share one machine.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from typing import Any

from pycni.cli import logs
from pycni.fabric.calico import paths
from pycni.metrics.address import METRICS_ADDR_HELP, metrics_address


def add_parsers(sub: Any) -> None:
    node = sub.add_parser(
        "calico-node",
        help="run this node's Calico-compatible agent (calico/node: start-up, Felix, BIRD)",
        description="Register this node in the Calico datastore (etcd or the embedded store), create the default "
        "IP pool when there is none, then program blackholes for this node's blocks, vxlan.calico and routes to "
        "every other node's blocks (VXLAN Always/CrossSubnet, IPIP, direct), natOutgoing in nftables, and BIRD "
        "for the bird backend. Environment as calico/node's (NODENAME, IP, IP_AUTODETECTION_METHOD, "
        "CALICO_NETWORKING_BACKEND, CALICO_IPV4POOL_*, FELIX_*, DATASTORE_TYPE, ETCD_ENDPOINTS).",
    )
    node.add_argument("--nodename", default="", help="this node's name (default: $NODENAME, $HOSTNAME, host name)")
    node.add_argument("--ip", default="", help="IPv4 address (CIDR), 'autodetect' or 'none' (default: $IP)")
    node.add_argument(
        "--ip-autodetection-method",
        default="",
        help="first-found, interface=REGEX, skip-interface=REGEX, can-reach=DEST, cidr=CIDR "
        "(default: $IP_AUTODETECTION_METHOD)",
    )
    node.add_argument("--iface", default="", help="take the address of this interface (interface=^IFACE$)")
    node.add_argument("--as", dest="as_number", default="", help="this node's AS number (default: $AS)")
    node.add_argument(
        "--backend",
        default="",
        choices=["", "bird", "vxlan", "none"],
        help="calico_backend: bird (BGP with BIRD 2), vxlan or none (default: $CALICO_NETWORKING_BACKEND, bird)",
    )
    node.add_argument("--installation", default="", help="the Tigera operator's Installation (custom-resources.yaml)")
    node.add_argument("--veth-mtu", type=int, default=0, help="pod MTU (the ConfigMap's veth_mtu; 0: computed)")
    node.add_argument("-c", "--config", default=None, help="a CalicoAPIConfig file naming the datastore")
    node.add_argument("--store", default=None, help="the embedded store's file (no etcd configured)")
    node.add_argument("--nodename-file", default=paths.NODENAME_FILE, help="where to write the node name")
    node.add_argument("--mtu-file", default=paths.MTU_FILE, help="where to write the pod MTU for the CNI plugin")
    node.add_argument("--run-dir", default=paths.RUN_DIR, help="BIRD's config, control socket and logs")
    node.add_argument(
        "--pid-file",
        default="",
        help="the agent's pid while it runs, for calicoctl node status (default: RUN_DIR/calico-node.pid)",
    )
    node.add_argument(
        "--resync", type=float, default=None, help="seconds between resyncs (default: routeRefreshInterval, 90)"
    )
    node.add_argument(
        "--ipam-leak-grace-period",
        default="",
        help="release this node's IPAM allocations no workload uses after this long (a Go duration; 0: never; "
        "default 15m, kube-controllers' leakGracePeriod)",
    )
    node.add_argument("--metrics-addr", type=metrics_address, default=None, metavar="ADDR", help=METRICS_ADDR_HELP)
    logs.add_arguments(node)
    node.add_argument(
        "--stop-bird-on-exit",
        action="store_true",
        help="stop BIRD when the agent exits (default: leave it routing for the next agent)",
    )
    node.set_defaults(func=cmd_calico_node)


def node_config(opts: argparse.Namespace, env: dict[str, str]) -> Any:
    """The agent's NodeConfig from the flags, the Installation and the environment (flags win)."""
    from pycni.fabric.calico.installation import parse_installation
    from pycni.fabric.calico.nodeconfig import from_environment

    flags: dict[str, Any] = {
        "nodename": opts.nodename,
        "ip": opts.ip,
        "autodetection": opts.ip_autodetection_method,
        "as_number": opts.as_number,
        "backend": opts.backend,
        "nodename_file": opts.nodename_file,
        "mtu_file": opts.mtu_file,
        "run_dir": opts.run_dir,
        "pid_file": opts.pid_file,
        "resync": opts.resync,
        "leak_grace_period": opts.ipam_leak_grace_period,
    }
    felix: dict[str, Any] = {}
    if opts.installation:
        try:
            with open(opts.installation, encoding="utf-8") as handle:
                installation = parse_installation(handle.read(), opts.installation)
        except OSError as exc:
            from pycni.fabric.calico.config import ConfigError

            raise ConfigError(f"cannot read the Installation {opts.installation}: {exc.strerror}") from None
        flags["pools"] = installation.pools
        flags["backend"] = opts.backend or installation.backend
        flags["autodetection"] = opts.ip_autodetection_method or installation.autodetection or ""
        if installation.mtu:
            felix.update(vxlanMTU=installation.mtu, ipipMTU=installation.mtu)
    if opts.iface:
        flags["autodetection"] = f"interface=^{re.escape(opts.iface)}$"
    if opts.veth_mtu:
        felix.update(vxlanMTU=opts.veth_mtu, ipipMTU=opts.veth_mtu)
    flags["felix"] = felix
    return from_environment(env, **flags)


def cmd_calico_node(opts: argparse.Namespace) -> int:
    from pycni.fabric.calico.agent import CalicoNode
    from pycni.fabric.calico.config import load_config, open_store
    from pycni.spec.errors import CNIError

    logs.configure("calico-node", opts.log_level, opts.log_format)
    log = logging.getLogger("pycni.fabric.calico.agent")
    env = dict(os.environ)
    try:
        config = node_config(opts, env)
        store_config = load_config(opts.config, env, opts.store)
        log.info("datastore: %s", store_config.describe())
        store = open_store(store_config)
    except CNIError as exc:
        log.error("cannot start: %s", exc)
        return 1
    return CalicoNode(config, store, stop_bird=opts.stop_bird_on_exit, metrics_addr=opts.metrics_addr).run()
