"""veth pairs whose container end is created directly inside the container's namespace."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from pyroute2.netlink.exceptions import NetlinkError

from pycni.net import link
from pycni.net.errors import NetError
from pycni.net.link import LinkInfo
from pycni.spec.errors import CNIError, ErrorCode

if TYPE_CHECKING:
    from pyroute2 import IPRoute

NAME_ATTEMPTS = 10


class InterfaceExists(CNIError):
    def __init__(self, ifname: str) -> None:
        super().__init__(
            ErrorCode.INTERNAL,
            f"container veth name provided ({ifname}) already exists",
            "an interface of that name is already in the container: choose another CNI_IFNAME or DEL first",
        )


def create_pair(
    host: IPRoute,
    container: IPRoute,
    container_fd: int,
    ifname: str,
    mtu: int = 0,
    container_mac: str = "",
) -> tuple[LinkInfo, LinkInfo]:
    """Make ``vethXXXXXXXX`` (host, up) paired with ``ifname`` (container, down).

    Retries on a host-name collision, as the reference does; an existing
    ``ifname`` in the container is an error (the spec requires one).
    """
    if link.find(container, ifname) is not None:
        raise InterfaceExists(ifname)
    peer: dict[str, Any] = {"ifname": ifname, "net_ns_fd": container_fd}
    extra: dict[str, Any] = {}
    if mtu:
        peer["mtu"] = extra["mtu"] = mtu
    if container_mac:
        peer["address"] = container_mac
    for _ in range(NAME_ATTEMPTS):
        host_name = link.random_name()
        try:
            host.link("add", ifname=host_name, kind="veth", peer=peer, **extra)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                if link.find(container, ifname) is not None:
                    raise InterfaceExists(ifname) from None
                continue
            raise NetError(f"failed to make veth pair for {ifname}", int(exc.code)) from None
        try:
            host_link = link.get(host, host_name)
            link.set_attrs(host, host_link, state="up")
            host_link.flags |= link.IFF_UP
            return host_link, link.get(container, ifname)
        except BaseException:
            # Made but not handed back: the caller cannot roll back what it never got.
            link.delete(host, host_name)
            raise
    raise CNIError(ErrorCode.INTERNAL, f"failed to find a free host veth name after {NAME_ATTEMPTS} attempts")
