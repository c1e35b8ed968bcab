"""static IPAM: hand out the addresses the config names (reference ``plugins/ipam/static``).

Addresses come from ``ipam.addresses``, replaced by ``args.cni.ips`` and then
by ``runtimeConfig.ips`` when those are given; ``CNI_ARGS`` ``IP=``/``GATEWAY=``
(comma-separated) add to them. Nothing is stored, so DEL has nothing to undo.
"""

from __future__ import annotations

import ipaddress

from pycni.ipam.config import ipam_section, parse_dns, parse_routes
from pycni.skel import CmdArgs, Plugin
from pycni.spec import CNIError, ErrorCode, Fields, IPConfig, Result
from pycni.spec.fields import parse_cidr_field
from pycni.spec.result import IPAddress
from pycni.spec.version import greater_than_or_equal

plugin = Plugin("static")


def load_addresses(args: CmdArgs) -> tuple[list[IPConfig], Fields]:
    """The addresses to hand out, with the ``ipam`` section they came from."""
    conf = args.fields
    ipam = ipam_section(conf)
    addresses: list[IPConfig] = []
    for entry in ipam.objects("addresses"):
        address = parse_cidr_field(entry.string("address"), f"{entry.where}.address")
        addresses.append(IPConfig(address=address, gateway=entry.ip("gateway")))

    env = args.cni_args(("IP", "GATEWAY"))
    for item in filter(None, (s.strip() for s in env.get("IP", "").split(","))):
        addresses.append(IPConfig(address=parse_cidr_field(item, "CNI_ARGS IP")))
    for item in filter(None, (s.strip() for s in env.get("GATEWAY", "").split(","))):
        gateway = _parse_gateway(item)
        for ip in addresses:
            if gateway in ip.address.network:
                ip.gateway = gateway

    cni_ips = conf.obj("args").obj("cni").strings("ips")
    if cni_ips:
        addresses = [IPConfig(address=parse_cidr_field(s, "args.cni.ips")) for s in cni_ips]
    runtime_ips = args.runtime_config("ips")
    if runtime_ips:
        if not isinstance(runtime_ips, list) or not all(isinstance(s, str) for s in runtime_ips):
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "runtimeConfig.ips must be a list of strings")
        addresses = [IPConfig(address=parse_cidr_field(s, "runtimeConfig.ips")) for s in runtime_ips]

    per_family = [sum(1 for ip in addresses if ip.address.version == v) for v in (4, 6)]
    if max(per_family) > 1 and not greater_than_or_equal(args.cni_version, "0.3.0"):
        raise CNIError(
            ErrorCode.INVALID_NETWORK_CONFIG,
            f"CNI version {args.cni_version} does not support more than 1 address per family",
        )
    return addresses, ipam


def _parse_gateway(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise CNIError(ErrorCode.INVALID_ENVIRONMENT_VARIABLES, f"invalid gateway address: {text}") from None


@plugin.add
def add(args: CmdArgs) -> Result:
    addresses, ipam = load_addresses(args)
    return Result(cni_version="1.1.0", ips=addresses, routes=parse_routes(ipam), dns=parse_dns(ipam.obj("dns")))


@plugin.check
def check(args: CmdArgs) -> None:
    addresses, _ = load_addresses(args)
    prev = args.prev_result()
    if prev is None:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "Required prevResult missing")
    for wanted in addresses:
        for got in prev.ips:
            if got.address.ip == wanted.address.ip:
                if wanted.gateway is not None and wanted.gateway != got.gateway:
                    raise CNIError(
                        ErrorCode.INTERNAL,
                        f"static: Failed to match addr {got.address.ip} on interface {args.ifname}",
                    )
                break


@plugin.delete
def delete(args: CmdArgs) -> None:
    """Nothing was stored, so there is nothing to release."""


if __name__ == "__main__":
    plugin.main()
