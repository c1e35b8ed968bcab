"""``pycni policy``: what the datastore's policy decides, and what a node enforces, read as the node agent reads it.

    pycni policy explain (--from NS/POD | --from-ip IP) (--to NS/POD | --to-ip IP) [--port 80/TCP]
    pycni policy show --node NODE

``explain`` prints ALLOWED or DENIED for the first packet of a flow and the
deciding tier, policy and rule (or failsafe port) of the source's egress and
of the destination's ingress, at a pod or at a host endpoint (give the host's
address with --from-ip/--to-ip) (:meth:`pycni.policy.evaluate.Verdict.describe`);
it exits 0 either way. ``show`` lists, per workload and host endpoint of the node, the
tiers' policies and the profiles in effect in each direction, then the
chains, rules, sets and elements of the table the node's agent renders.

The datastore is chosen as ``pycni calicoctl`` chooses it (``-c CONFIG``,
``DATASTORE_TYPE``/``ETCD_ENDPOINTS``, else the embedded store at ``--store`` or
``$PYCNI_CALICO_STORE``); objects are combined as the agent combines them
(:mod:`pycni.fabric.calico.policy_state`). Bad input (an unknown pod or node,
a bad port) is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from pycni.datastore import DatastoreError
from pycni.fabric.calico.config import load_config, open_store
from pycni.fabric.calico.errors import CalicoError
from pycni.fabric.calico.policy_manager import Counts, render
from pycni.fabric.calico.policy_state import PREFIXES, PolicyInputs, build
from pycni.fabric.calico.resources import ResourceClient
from pycni.policy.endpoints import IPAddress, WorkloadEndpoint
from pycni.policy.evaluate import EGRESS, INGRESS, Evaluator
from pycni.policy.index import Endpoint
from pycni.policy.match import Packet

PROG = "pycni policy"


class PolicyCliError(Exception):
    """Bad input or an unknown object: one line on stderr, exit status 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise PolicyCliError(f"{message} (see `{self.prog} --help`)")


def read(opts: argparse.Namespace, nodename: str) -> PolicyInputs:
    """The policy inputs from the configured datastore, for ``nodename``'s interfaces."""
    store = open_store(load_config(opts.config, store_path=opts.store))
    try:
        kvs = [kv for prefix in PREFIXES for kv in store.list(prefix)[0]]
        return build(kvs, nodename, ResourceClient(store))
    finally:
        store.close()


def parse_port(text: str) -> tuple[str, int | None]:
    """``80/TCP``, ``53/udp``, ``80`` (TCP) or a protocol alone (``ICMP``): (protocol, port)."""
    port_text, _, protocol = text.partition("/")
    if not port_text.isdigit():
        if not protocol and port_text:
            return port_text.upper(), None
        raise PolicyCliError(f"--port {text!r}: use PORT/PROTOCOL, e.g. 80/TCP or 53/UDP")
    port = int(port_text)
    if not 0 < port < 65536:
        raise PolicyCliError(f"--port {text!r}: the port must be 1-65535")
    return (protocol or "TCP").upper(), port


def _pod(inputs: PolicyInputs, text: str, flag: str) -> WorkloadEndpoint:
    namespace, slash, name = text.partition("/")
    if not slash or not namespace or not name:
        raise PolicyCliError(f"{flag} {text!r}: use NAMESPACE/POD")
    endpoint = inputs.state.endpoints.get(text)
    if endpoint is None:
        raise PolicyCliError(f"{flag} {text}: no such pod (no WorkloadEndpoint {text} in the datastore)")
    if not endpoint.ips:
        raise PolicyCliError(f"{flag} {text}: the pod has no address yet")
    return endpoint


def _address(text: str, flag: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise PolicyCliError(f"{flag} {text!r} is not an IP address") from None


def _side(
    inputs: PolicyInputs, pod: str | None, ip: str | None, flag: str
) -> tuple[WorkloadEndpoint | None, list[IPAddress]]:
    if pod is not None:
        endpoint = _pod(inputs, pod, f"--{flag}")
        return endpoint, list(endpoint.ips)
    if ip is None:
        raise PolicyCliError(f"give --{flag} NAMESPACE/POD or --{flag}-ip IP")
    return None, [_address(ip, f"--{flag}-ip")]


def cmd_explain(opts: argparse.Namespace) -> int:
    inputs = read(opts, "")
    protocol, port = parse_port(opts.port)
    source, source_ips = _side(inputs, opts.source, opts.source_ip, "from")
    target, target_ips = _side(inputs, opts.target, opts.target_ip, "to")
    pairs = [(s, t) for s in source_ips for t in target_ips if s.version == t.version]
    if not pairs:
        raise PolicyCliError("the source and the destination have no address of one IP family")
    try:
        packet = Packet.make(pairs[0][0], pairs[0][1], protocol, port)
    except ValueError as exc:
        raise PolicyCliError(f"--port {opts.port!r}: {exc}") from None
    verdict = inputs.evaluator().evaluate(packet)
    names = [f"from {source.key if source else packet.src}", f"to {target.key if target else packet.dst}"]
    print(" ".join(names))
    print(verdict.describe())
    if source is None and verdict.egress is None:
        print(f"  egress: {packet.src} is no workload or host endpoint here: no egress policy applies")
    if target is None and verdict.ingress is None:
        print(f"  ingress: {packet.dst} is no workload or host endpoint here: no ingress policy applies")
    return 0


def _in_effect(evaluator: Evaluator, endpoint: Endpoint, direction: str) -> str:
    tiers = [
        f"tier {tier.name}: {', '.join(p.name for p in chosen)}"
        for tier, chosen in evaluator.applicable(endpoint, direction)
    ]
    profiles = [p if p in evaluator.profiles else f"{p} (not defined)" for p in endpoint.profiles]
    parts = [*tiers, f"profiles {', '.join(profiles) or 'none'}"]
    return "; ".join(parts) if tiers else f"no policy; {parts[-1]}"


def cmd_show(opts: argparse.Namespace) -> int:
    inputs = read(opts, opts.node)
    if opts.node not in inputs.state.hosts and not inputs.interfaces:
        raise PolicyCliError(f"--node {opts.node}: no such node (no Node and no workload endpoints of it)")
    evaluator = inputs.evaluator()
    heps = f", {len(inputs.host_interfaces)} host endpoint(s)" if inputs.host_interfaces else ""
    print(f"node {opts.node}: {len(inputs.interfaces)} local endpoint(s){heps}")
    shown: list[tuple[str, Endpoint]] = [
        (interface, inputs.state.endpoints[key])
        for interface, key in sorted(inputs.interfaces.items(), key=lambda item: item[1])
    ]
    shown += [
        (interface, evaluator.index.host_endpoints[key])
        for interface, key in sorted(inputs.host_interfaces.items(), key=lambda item: item[1])
    ]
    for interface, endpoint in shown:
        print(f"{endpoint.key} ({interface}, {', '.join(str(ip) for ip in endpoint.ips) or 'no address'}):")
        print(f"  ingress: {_in_effect(evaluator, endpoint, INGRESS)}")
        print(f"  egress: {_in_effect(evaluator, endpoint, EGRESS)}")
    if inputs.host_interfaces:
        for direction, name in ((INGRESS, "inbound"), (EGRESS, "outbound")):
            ports = ", ".join(map(str, evaluator.failsafe[direction])) or "none"
            print(f"failsafe {name} ports (open whatever the policy): {ports}")
    table = render(inputs)
    counts = Counts.of(table)
    print(
        f"table {table.family} {table.name}: {counts.chains} chains, {counts.rules} rules, "
        f"{counts.sets} sets, {counts.elements} set and map elements"
    )
    for key, problem in sorted(inputs.problems.items()):
        print(f"ignored {key}: {problem}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="What the datastore's network policy decides and enforces.")
    parser.add_argument("-c", "--config", help="calicoctl's config file (as pycni calicoctl)")
    parser.add_argument("--store", help="the embedded store's sqlite file (default $PYCNI_CALICO_STORE)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    explain = sub.add_parser("explain", help="allowed or denied, and by which tier, policy and rule")
    explain.add_argument("--from", dest="source", metavar="NS/POD", help="the source pod")
    explain.add_argument("--from-ip", dest="source_ip", metavar="IP", help="a source that is no pod")
    explain.add_argument("--to", dest="target", metavar="NS/POD", help="the destination pod")
    explain.add_argument("--to-ip", dest="target_ip", metavar="IP", help="a destination that is no pod")
    explain.add_argument("--port", default="80/TCP", help="PORT/PROTOCOL (default 80/TCP), or a protocol: ICMP")
    explain.set_defaults(func=cmd_explain)
    show = sub.add_parser("show", help="the policies and profiles in effect on a node, and its table's size")
    show.add_argument("--node", required=True, help="the node's name")
    show.set_defaults(func=cmd_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts = build_parser().parse_args(argv)
        result: int = opts.func(opts)
        return result
    except PolicyCliError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except (CalicoError, DatastoreError, OSError) as exc:
        print(f"{PROG}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except Exception as exc:  # one line, never a traceback (unless PYCNI_DEBUG asks for it)
        if os.environ.get("PYCNI_DEBUG"):
            raise
        print(f"{PROG}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
