"""``pycni``: cnitool's verbs and variables, plus pycni's own commands.

    pycni add|check|del NETWORK NETNS     (as cnitool)
    pycni gc NETWORK | pycni status NETWORK
    pycni version [PLUGIN-TYPE]
    pycni dhcp-daemon [--socket-path PATH] [--timeout 10s] [--broadcast]
    pycni plugins install --dir DIR | pycni plugins list

Environment, as cnitool reads it: ``NETCONFPATH`` (default /etc/cni/net.d),
``CNI_PATH``, ``CNI_IFNAME`` (default eth0), ``CNI_ARGS``, ``CAP_ARGS``; and
``PYCNI_CACHE_DIR`` (default /var/lib/cni). The container ID is derived from
the netns path exactly as cnitool derives it, so either tool can undo the other.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from pycni import __version__
from pycni.cli import logs
from pycni.cli.calico_node import add_parsers as add_calico_node_parsers
from pycni.cli.flanneld import add_parsers as add_fabric_parsers
from pycni.daemon import cli as daemon_cli
from pycni.runtime.api import CNIRuntime, RuntimeConf
from pycni.runtime.cache import DEFAULT_CACHE_DIR
from pycni.runtime.conf import DEFAULT_CONF_DIR, load_network
from pycni.spec import jsonutil
from pycni.spec.config import NetworkConfigList
from pycni.spec.errors import CNIError, ErrorCode
from pycni.spec.version import ALL_VERSIONS


class UsageError(Exception):
    """Bad command-line input: one line on stderr, exit status 2."""


def container_id_for(netns: str) -> str:
    """``cnitool-`` + the first 10 bytes of sha512(absolute netns path), in hex."""
    return "cnitool-" + hashlib.sha512(os.path.abspath(netns).encode()).digest()[:10].hex()


def parse_cni_args(text: str) -> list[tuple[str, str]]:
    """cnitool's strict ``CNI_ARGS``: every pair ``K=V`` with both sides non-empty."""
    if not text:
        return []
    pairs = []
    for pair in text.split(";"):
        parts = pair.split("=")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise UsageError(f"invalid CNI_ARGS pair {pair!r}: expected KEY=VALUE;KEY=VALUE")
        pairs.append((parts[0], parts[1]))
    return pairs


def parse_cap_args(text: str) -> dict[str, object]:
    if not text:
        return {}
    try:
        value = jsonutil.loads(text)
    except ValueError as exc:
        raise UsageError(f"CAP_ARGS is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError("CAP_ARGS must be a JSON object of capability names to values")
    return value


def _runtime() -> CNIRuntime:
    path = [p for p in os.environ.get("CNI_PATH", "").split(os.pathsep) if p]
    return CNIRuntime(path, cache_dir=os.environ.get("PYCNI_CACHE_DIR") or DEFAULT_CACHE_DIR)


def _network(name: str) -> NetworkConfigList:
    return load_network(os.environ.get("NETCONFPATH") or DEFAULT_CONF_DIR, name)


def _attachment(netns: str, ifname: str | None) -> RuntimeConf:
    absolute = os.path.abspath(netns)
    return RuntimeConf(
        container_id=container_id_for(absolute),
        netns=absolute,
        ifname=ifname or os.environ.get("CNI_IFNAME") or "eth0",
        args=parse_cni_args(os.environ.get("CNI_ARGS", "")),
        capability_args=parse_cap_args(os.environ.get("CAP_ARGS", "")),
    )


def cmd_add(opts: argparse.Namespace) -> int:
    network = _network(opts.network)
    rt = _attachment(opts.netns, opts.ifname)
    runtime = _runtime()
    try:
        result = runtime.add(network, rt)
    except CNIError:
        # The spec requires a DEL after a failed ADD; doing it here means a
        # failed `pycni add` leaves nothing behind.
        try:
            runtime.delete(network, rt, best_effort=True)
        except CNIError as cleanup_error:
            print(f"pycni: cleanup after failed add also failed: {cleanup_error}", file=sys.stderr)
        raise
    print(result.to_json())
    return 0


def cmd_check(opts: argparse.Namespace) -> int:
    _runtime().check(_network(opts.network), _attachment(opts.netns, opts.ifname))
    return 0


def cmd_del(opts: argparse.Namespace) -> int:
    _runtime().delete(_network(opts.network), _attachment(opts.netns, opts.ifname))
    return 0


def cmd_gc(opts: argparse.Namespace) -> int:
    valid = None
    if opts.keep or opts.all:
        valid = []
        for item in opts.keep or []:
            container_id, sep, ifname = item.partition("/")
            if not sep or not container_id or not ifname:
                raise UsageError(f"--keep expects CONTAINERID/IFNAME, got {item!r}")
            valid.append((container_id, ifname))
    _runtime().gc(_network(opts.network), valid)
    return 0


def cmd_status(opts: argparse.Namespace) -> int:
    _runtime().status(_network(opts.network))
    return 0


def cmd_version(opts: argparse.Namespace) -> int:
    if opts.plugin:
        info = _runtime().version_info(opts.plugin)
        print(json.dumps({"cniVersion": info.cni_version, "supportedVersions": info.supported_versions}))
        return 0
    print(f"pycni {__version__}")
    print(f"CNI spec versions supported: {', '.join(ALL_VERSIONS)}")
    return 0


def cmd_demo(opts: argparse.Namespace) -> int:
    from pycni.cli.demo import main as demo_main

    return demo_main()


def cmd_plugins_install(opts: argparse.Namespace) -> int:
    from pycni.cli.install import install

    for path in install(opts.dir, opts.types or None):
        print(path)
    return 0


def cmd_plugins_list(opts: argparse.Namespace) -> int:
    from pycni.plugins import PLUGIN_MODULES

    for name in sorted(PLUGIN_MODULES):
        print(name)
    return 0


def parse_duration(text: str) -> float:
    """Seconds from ``10``, ``10s``, ``500ms`` or ``2m`` (Go's daemon takes durations like ``10s``)."""
    units = (("ms", 0.001), ("s", 1.0), ("m", 60.0))
    number, scale = text, 1.0
    for suffix, factor in units:
        if text.endswith(suffix):
            number, scale = text[: -len(suffix)], factor
            break
    try:
        seconds = float(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 10s, 500ms, 2m)") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive, got {text!r}")
    return seconds


# Commands that parse their own flags (argparse's REMAINDER drops a leading --help): name -> (module, help).
# Each module has ``main(argv) -> int``; it is imported only when its command runs.
SELF_PARSING = {
    "calicoctl": ("pycni.cli.calicoctl", "calicoctl's resource and IPAM commands (etcd or embedded store)"),
    "policy": ("pycni.cli.policy", "explain a flow's verdict, show a node's policy (datastore as calicoctl)"),
    "doctor": ("pycni.cli.doctor", "check this node for the failures users report most, with advice"),
    "install": ("pycni.cli.install_manifest", "install from a Flannel or Calico manifest (conflist, plugins, agent)"),
    "reset": ("pycni.cli.reset", "remove everything pycni made on this node (dry run unless --yes)"),
}


def run_self_parsing(name: str, argv: Sequence[str]) -> int:
    module = importlib.import_module(SELF_PARSING[name][0])
    result: int = module.main(list(argv))
    return result


def _add_self_parsing(sub: Any) -> None:
    for name, (_, help_text) in SELF_PARSING.items():
        parser = sub.add_parser(name, help=help_text, add_help=False)
        parser.add_argument("args", nargs=argparse.REMAINDER)
        parser.set_defaults(func=lambda opts, name=name: run_self_parsing(name, opts.args))


def cmd_dhcp_daemon(opts: argparse.Namespace) -> int:
    from pycni.dhcp.server import run

    logs.configure("pycni-dhcp", opts.log_level, opts.log_format, timestamps=False)
    return run(opts.socket_path, opts.timeout, opts.broadcast)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pycni", description="pycni: CNI runtime (cnitool-compatible) and plugins.")
    parser.add_argument("-i", "--ifname", help="interface name (default: $CNI_IFNAME or eth0)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for verb, func, help_text in (
        ("add", cmd_add, "attach NETNS to NETWORK and print the result"),
        ("check", cmd_check, "check an attachment made by add"),
        ("del", cmd_del, "detach NETNS from NETWORK"),
    ):
        p = sub.add_parser(verb, help=help_text)
        p.add_argument("network", metavar="NETWORK")
        p.add_argument("netns", metavar="NETNS", help="path of the network namespace, e.g. /run/netns/NAME")
        p.add_argument("-i", "--ifname", default=argparse.SUPPRESS)
        p.set_defaults(func=func)
    gc = sub.add_parser("gc", help="remove cached attachments of NETWORK and GC its plugins")
    gc.add_argument("network", metavar="NETWORK")
    gc.add_argument("--keep", action="append", metavar="CONTAINERID/IFNAME", help="an attachment that stays valid")
    gc.add_argument(
        "--all",
        action="store_true",
        help="no attachment stays valid: plugins also drop network-wide state (e.g. ipMasq rules)",
    )
    gc.set_defaults(func=cmd_gc)
    status = sub.add_parser("status", help="ask every plugin of NETWORK whether it can serve ADD")
    status.add_argument("network", metavar="NETWORK")
    status.set_defaults(func=cmd_status)
    version = sub.add_parser("version", help="print pycni's version, or a plugin's VERSION reply")
    version.add_argument("plugin", nargs="?", metavar="PLUGIN-TYPE")
    version.set_defaults(func=cmd_version)
    daemon = sub.add_parser("daemon", help=daemon_cli.HELP)  # pycni.cli.entry runs it without this parser
    daemon_cli.add_arguments(daemon)
    daemon.set_defaults(func=daemon_cli.run)
    add_fabric_parsers(sub)
    add_calico_node_parsers(sub)
    demo = sub.add_parser("demo", help="run the seed article's Cases 1 and 2 and its Flannel set-up end to end (root)")
    demo.set_defaults(func=cmd_demo)
    dhcp = sub.add_parser("dhcp-daemon", help="run the DHCP lease daemon of the dhcp IPAM plugin (foreground)")
    dhcp.add_argument("--socket-path", default="/run/cni/pycni-dhcp.sock", help="unix socket for the dhcp plugin")
    dhcp.add_argument("--timeout", type=parse_duration, default=10.0, help="per DHCP exchange (default 10s)")
    dhcp.add_argument("--broadcast", action="store_true", help="ask DHCP servers to broadcast their replies")
    logs.add_arguments(dhcp)
    dhcp.set_defaults(func=cmd_dhcp_daemon)
    _add_self_parsing(sub)
    plugins = sub.add_parser("plugins", help="manage pycni's plugin executables")
    plugins_sub = plugins.add_subparsers(dest="plugins_command", metavar="ACTION", parser_class=_Parser)
    plugins_sub.required = True
    install = plugins_sub.add_parser("install", help="write an executable for every pycni plugin into DIR")
    install.add_argument("--dir", required=True, help="directory to put on CNI_PATH (e.g. /opt/cni/bin)")
    install.add_argument("types", nargs="*", metavar="TYPE", help="only these plugin types")
    install.set_defaults(func=cmd_plugins_install)
    listing = plugins_sub.add_parser("list", help="list pycni's plugin types")
    listing.set_defaults(func=cmd_plugins_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] and args[0] in SELF_PARSING:
        return run_self_parsing(args[0], args[1:])
    try:
        opts = build_parser().parse_args(args)
        result: int = opts.func(opts)
        return result
    except UsageError as exc:
        print(f"pycni: {exc}", file=sys.stderr)
        return 2
    except CNIError as exc:
        code = f" (CNI error code {exc.code})" if exc.code != ErrorCode.INTERNAL else ""
        print(f"pycni: {exc}{code}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"pycni: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line, never a traceback (unless PYCNI_DEBUG asks for it)
        if os.environ.get("PYCNI_DEBUG"):
            raise
        print(f"pycni: internal error: {type(exc).__name__}: {exc} (PYCNI_DEBUG=1 shows more)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
