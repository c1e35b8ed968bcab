"""Links: lookup and state, with netlink errors translated to CNI errors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pycni.spec.errors import CNIError, ErrorCode

if TYPE_CHECKING:
    from pyroute2 import IPRoute

IFF_UP = 0x1


class LinkNotFound(CNIError):
    def __init__(self, name: str) -> None:
        super().__init__(ErrorCode.INTERNAL, f"link {name!r} not found")
        self.name = name


def index_of(ipr: IPRoute, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise LinkNotFound(name)
    return int(found[0])


def set_up(ipr: IPRoute, name: str, up: bool = True) -> int:
    """Bring ``name`` up (or down); returns its index."""
    index = index_of(ipr, name)
    ipr.link("set", index=index, state="up" if up else "down")
    return index


def is_up(ipr: IPRoute, name: str) -> bool:
    link = ipr.get_links(index_of(ipr, name))[0]
    return bool(int(link["flags"]) & IFF_UP)


def addresses(ipr: IPRoute, index: int, family: int | None = None) -> list[tuple[str, int]]:
    """``(address, prefixlen)`` of a link, in kernel order."""
    kwargs: dict[str, Any] = {"index": index}
    if family is not None:
        kwargs["family"] = family
    return [(str(msg.get("address")), int(msg["prefixlen"])) for msg in ipr.get_addr(**kwargs)]
