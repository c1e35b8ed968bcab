"""dhcp IPAM: addresses from a DHCP server, leased by ``pycni dhcp-daemon`` (reference ``plugins/ipam/dhcp``).

A lease must be renewed for as long as the container lives, which a plugin
process cannot do, so every verb asks the daemon (protocol:
:mod:`pycni.dhcp.protocol`). The daemon runs DHCP inside the container's
namespace on ``CNI_IFNAME``, so the main plugin must have created it.

Keys under ``ipam``, as in Go:

* ``daemonSocketPath``: the daemon's socket (default ``/run/cni/pycni-dhcp.sock``;
  Go's is ``/run/cni/dhcp.sock``, which a pycni daemon must not take over);
* ``request``: ``[{"skipDefault": bool, "option": name-or-number}]``, options
  to ask the server for; any ``skipDefault`` drops pycni's default list;
* ``provide``: ``[{"option": name-or-number, "value": str, "fromArg": KEY}]``,
  options to send; ``fromArg`` takes the value from ``CNI_ARGS`` (e.g.
  ``host-name`` from ``K8S_POD_NAME``) and wins over ``value``;
* ``priority``: the metric of every route in the result.

Verbs: ADD returns ``ips`` (address, gateway), ``routes`` and ``dns``; DEL
releases the lease, and succeeds when the daemon holds none or is not
running (its leases died with it); CHECK fails unless the daemon holds a
bound lease whose address is in ``prevResult``; GC releases this network's
leases of attachments not in ``cni.dev/valid-attachments``; STATUS, and ADD,
fail with code 50 when the daemon does not answer.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from pycni.dhcp import protocol
from pycni.dhcp.options import DEFAULT_REQUEST, parse_option_name
from pycni.ipam.config import ipam_section
from pycni.skel import CmdArgs, Plugin
from pycni.spec import DNS, CNIError, ErrorCode, Fields, IPConfig, Result, Route

plugin = Plugin("dhcp")


@dataclass
class DhcpConf:
    socket_path: str = protocol.DEFAULT_SOCKET_PATH
    request: list[int] = field(default_factory=lambda: [int(code) for code in DEFAULT_REQUEST])
    provide: list[dict[str, Any]] = field(default_factory=list)
    priority: int = 0


def load_conf(args: CmdArgs) -> DhcpConf:
    ipam = ipam_section(args.fields)
    return DhcpConf(
        socket_path=ipam.string("daemonSocketPath") or protocol.DEFAULT_SOCKET_PATH,
        request=_request_list(ipam),
        provide=_provide(ipam, cni_args_map(args.args)),
        priority=ipam.integer("priority"),
    )


def _option(entry: Fields) -> int | None:
    raw = entry.raw("option")
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{entry.where}.option: expected a name or a number")
    try:
        return parse_option_name(raw)
    except ValueError as exc:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{entry.where}.option: {exc}") from None


def _request_list(ipam: Fields) -> list[int]:
    """The parameter request list: the config's options first, then the defaults unless skipped."""
    codes: list[int] = []
    skip_default = False
    for entry in ipam.objects("request"):
        skip_default = skip_default or entry.boolean("skipDefault")
        code = _option(entry)
        if code is not None and code not in codes:
            codes.append(code)
    if not skip_default:
        codes += [int(code) for code in DEFAULT_REQUEST if code not in codes]
    return codes


def _provide(ipam: Fields, cni_args: dict[str, str]) -> list[dict[str, Any]]:
    provided: dict[int, str] = {}
    for entry in ipam.objects("provide"):
        code = _option(entry)
        if code is None:
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{entry.where}.option: an option is required")
        value = entry.string("value")
        from_arg = entry.string("fromArg")
        if from_arg and from_arg in cni_args:
            value = cni_args[from_arg]
        if not value:
            continue
        if len(value.encode()) > 255:
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{entry.where}: value too long for option {code}")
        provided[code] = value
    return [{"code": code, "value": value} for code, value in provided.items()]


def cni_args_map(text: str) -> dict[str, str]:
    """``CNI_ARGS`` read leniently, as Go's dhcp plugin reads it for ``fromArg``."""
    pairs = (item.split("=", 1) for item in text.split(";"))
    return {pair[0]: pair[1] for pair in pairs if len(pair) == 2}


def _attachment(args: CmdArgs) -> dict[str, Any]:
    return {"containerID": args.container_id, "network": args.name, "ifname": args.ifname}


def to_result(lease: dict[str, Any], priority: int) -> Result:
    """The daemon's LEASE as a CNI result (1.1.0; the SDK prints it at the config's version)."""
    try:
        address = ipaddress.IPv4Interface(lease["address"])
        gateway = ipaddress.IPv4Address(lease["gateway"]) if lease.get("gateway") else None
        routes = [
            Route(
                dst=ipaddress.IPv4Interface(route["dst"]),
                gw=ipaddress.IPv4Address(route["gw"]) if route.get("gw") else None,
                priority=priority,
                scope=route.get("scope"),
            )
            for route in lease.get("routes", [])
        ]
        dns_data = lease.get("dns") or {}
        dns = DNS(
            nameservers=list(dns_data.get("nameservers", [])),
            domain=str(dns_data.get("domain", "")),
            search=list(dns_data.get("search", [])),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CNIError(ErrorCode.IO_FAILURE, f"dhcp: the daemon sent an unusable lease: {exc!r}") from None
    return Result(cni_version="1.1.0", ips=[IPConfig(address=address, gateway=gateway)], routes=routes, dns=dns)


@plugin.add
def add(args: CmdArgs) -> Result:
    conf = load_conf(args)
    fields = {**_attachment(args), "netns": os.path.abspath(args.netns), "request": conf.request}
    reply = protocol.call(conf.socket_path, "allocate", {**fields, "provide": conf.provide})
    return to_result(reply["lease"], conf.priority)


@plugin.delete
def delete(args: CmdArgs) -> None:
    conf = load_conf(args)
    try:
        protocol.call(conf.socket_path, "release", _attachment(args))
    except protocol.DaemonUnavailable as exc:
        # A daemon that is not running holds no lease: there is nothing to release.
        print(f"dhcp: DEL: {exc.msg}; nothing to release", file=sys.stderr)


@plugin.check
def check(args: CmdArgs) -> None:
    conf = load_conf(args)
    lease = protocol.call(conf.socket_path, "check", _attachment(args))["lease"]
    prev = args.prev_result()
    if prev is None:
        return
    held = ipaddress.IPv4Interface(lease["address"]).ip
    if not any(ip.address.ip == held for ip in prev.ips):
        raise CNIError(
            ErrorCode.INTERNAL,
            f"dhcp: the daemon's lease for {args.ifname} is {held}, which prevResult does not list",
        )


@plugin.gc
def gc(args: CmdArgs) -> None:
    conf = load_conf(args)
    attachments = args.valid_attachments()
    if attachments is None:
        return  # no list: nothing is known to be stale (see CmdArgs.valid_attachments)
    valid = [{"containerID": cid, "ifname": ifname} for cid, ifname in attachments]
    protocol.call(conf.socket_path, "gc", {"network": args.name, "valid": valid})


@plugin.status
def status(args: CmdArgs) -> None:
    protocol.call(load_conf(args).socket_path, "ping", timeout=5.0)


if __name__ == "__main__":
    plugin.main()
