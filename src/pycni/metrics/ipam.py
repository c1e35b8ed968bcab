"""``pycni_ipam_addresses{network,range,state}``: addresses used and free, computed when scraped.

    pycni_ipam_addresses{network="cbr0",range="10.244.1.0/24",state="used"} 3
    pycni_ipam_addresses{network="cbr0",range="10.244.1.0/24",state="free"} 250

``network`` is the CNI network name (host-local) or the IP pool's name
(Calico blocks, ``range`` the block's CIDR). The numbers come from a
*source* the process supplies (host-local's data directories for the
daemon, this node's blocks for calico-node), read at scrape time: IPAM
state changes with every call in other processes, and reading it on demand
costs a directory listing or a few datastore reads per scrape instead of
a hook in every allocator. A source that fails is logged once per problem
and reports nothing for that scrape (a gap, not a wrong number).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily

from pycni.spec.errors import CNIError

log = logging.getLogger("pycni.metrics")


@dataclass(frozen=True)
class AddressUsage:
    """One range's count: ``used`` addresses reserved, ``free`` still assignable."""

    network: str
    range: str
    used: int
    free: int


Source = Callable[[], Iterable[AddressUsage]]


def _family() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "pycni_ipam_addresses",
        "IPAM addresses per network and range (host-local) or pool and block (Calico), used or free.",
        labels=("network", "range", "state"),
    )


class IpamCollector:
    """Turns a source's rows into the gauge family at each scrape."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self._problem = ""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = _family()
        try:
            rows = list(self._source())
        except (CNIError, OSError) as exc:
            if str(exc) != self._problem:
                log.warning("IPAM metrics unavailable: %s", exc)
                self._problem = str(exc)
            rows = []
        else:
            self._problem = ""
        for row in rows:
            family.add_metric((row.network, row.range, "used"), row.used)
            family.add_metric((row.network, row.range, "free"), row.free)
        yield family

    def describe(self) -> list[GaugeMetricFamily]:
        return [_family()]  # the name only: registering must not read the source
