"""Traffic control for the bandwidth plugin: TBF shaping and ifb redirection.

Parameters follow the reference exactly (``plugins/meta/bandwidth``): rate
and burst arrive in bits, the TBF gets bytes; latency 25 ms; ``limit`` is
``rate * latency + burst`` and the bucket ``buffer`` is the burst's
transmission time in kernel ticks.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pycni.net import link
from pycni.net.errors import netlink

if TYPE_CHECKING:
    from pyroute2 import IPRoute

LATENCY_SECONDS = 0.025
ROOT_HANDLE = 0x10000  # 1:
INGRESS_HANDLE = 0xFFFF0000  # ffff:
ETH_P_ALL = 0x0003


@dataclass(frozen=True)
class Shape:
    """A TBF in the kernel's units: bytes per second, bytes."""

    rate: int
    burst: int

    @classmethod
    def from_bits(cls, rate_bits: int, burst_bits: int) -> Shape:
        return cls(rate_bits // 8, burst_bits // 8)

    @property
    def limit(self) -> int:
        return int(self.rate * LATENCY_SECONDS) + self.burst


def add_tbf(ipr: IPRoute, index: int, shape: Shape, what: str) -> None:
    with netlink(f"create qdisc on {what}"):
        ipr.tc("add", "tbf", index=index, handle=ROOT_HANDLE, rate=shape.rate, burst=shape.burst, limit=shape.limit)


def tbf_of(ipr: IPRoute, index: int) -> dict[str, int] | None:
    """The root TBF's ``rate``/``limit``/``buffer`` of a link, if it has one."""
    for qdisc in ipr.get_qdiscs(index=index):
        if qdisc.get("kind") == "tbf" and qdisc["parent"] == 0xFFFFFFFF:
            parms: dict[str, Any] = qdisc.get_nested("TCA_OPTIONS", "TCA_TBF_PARMS") or {}
            return {key: int(parms.get(key, 0)) for key in ("rate", "limit", "buffer")}
    return None


def expected_buffer(shape: Shape) -> int:
    """The ``buffer`` the kernel stores for ``shape`` (ticks), to compare in CHECK."""
    from pyroute2.netlink.rtnl.tcmsg.common import calc_xmittime

    return int(calc_xmittime(shape.rate, shape.burst))


def create_ifb(ipr: IPRoute, name: str, mtu: int) -> link.LinkInfo:
    """An ifb device, up, with no queue of its own; an existing one is reused (a retried ADD)."""
    with netlink(f"adding link {name}", ignore=(errno.EEXIST,)):
        ipr.link("add", ifname=name, kind="ifb", mtu=mtu, txqlen=0)
    link.set_up(ipr, name)
    return link.get(ipr, name)


def redirect_ingress(ipr: IPRoute, index: int, target_index: int, what: str) -> None:
    """Send everything arriving on ``index`` out of ``target_index`` (ingress qdisc + u32 + mirred)."""
    with netlink(f"create ingress qdisc on {what}"):
        ipr.tc("add", "ingress", index=index)
    with netlink(f"add redirect filter on {what}"):
        ipr.tc(
            "add-filter",
            "u32",
            index=index,
            parent=INGRESS_HANDLE,
            prio=1,
            protocol=ETH_P_ALL,
            keys=["0x0/0x0+0"],
            target=0x10001,
            action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": target_index},
        )
