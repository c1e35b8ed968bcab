"""Acquiring, renewing and releasing this node's subnet lease (Flannel's etcd ``LocalManager``).

Acquisition, as Flannel does it (``tryAcquireLease``):

1. a lease that already carries this node's public IP and still fits the
   config is reused (written again with a fresh TTL; a reservation stays one);
   one that no longer fits is deleted;
2. otherwise the subnet this node had before (from the old ``subnet.env``) is
   taken if it is free and fits;
3. otherwise up to 100 free subnets are collected from SubnetMin upwards and one
   is picked at random, so that nodes starting together rarely collide.

Creating is compare-and-set in the datastore; losing a race retries (10 times).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from pycni.fabric.flannel.leases import LeaseStore
from pycni.fabric.flannel.model import IPv4Net, Lease, LeaseAttrs, NetworkConfig
from pycni.spec.errors import CNIError, ErrorCode

RACE_RETRIES = 10
CANDIDATES = 100


class OutOfSubnets(CNIError):
    def __init__(self, config: NetworkConfig) -> None:
        super().__init__(
            ErrorCode.TRY_AGAIN_LATER,
            f"out of subnets: every /{config.subnet_len} of {config.network} "
            f"between {config.subnet_min} and {config.subnet_max} is leased",
        )


class SubnetManager:
    def __init__(
        self,
        store: LeaseStore,
        config: NetworkConfig,
        ttl: int | None,
        choose: Callable[[list[IPv4Net]], IPv4Net] = random.choice,
    ) -> None:
        self.store = store
        self.config = config
        self.ttl = ttl  # None: leases are written as reservations (never expire)
        self.choose = choose

    def fits(self, subnet: IPv4Net) -> bool:
        config = self.config
        assert config.subnet_min is not None and config.subnet_max is not None
        return subnet.prefixlen == config.subnet_len and int(config.subnet_min.network_address) <= int(
            subnet.network_address
        ) <= int(config.subnet_max.network_address)

    def acquire(self, attrs: LeaseAttrs, previous: IPv4Net | None = None) -> Lease:
        for _ in range(RACE_RETRIES):
            lease = self._try_acquire(attrs, previous)
            if lease is not None:
                return lease
        raise CNIError(ErrorCode.TRY_AGAIN_LATER, f"failed to acquire a subnet lease after {RACE_RETRIES} races")

    def _try_acquire(self, attrs: LeaseAttrs, previous: IPv4Net | None) -> Lease | None:
        leases, _ = self.store.list_leases()
        for lease in leases:
            if lease.attrs.public_ip != attrs.public_ip:
                continue
            if self.fits(lease.subnet):
                renewed = Lease(lease.subnet, attrs, lease.ipv6_subnet)
                ttl = None if lease.expiration is None else self.ttl
                self.store.update_lease(renewed, ttl)
                return renewed
            self.store.delete_lease(lease)  # left over from another config
        taken = [lease.subnet for lease in leases if lease.attrs.public_ip != attrs.public_ip]
        if previous is not None and self.fits(previous) and not any(previous.overlaps(t) for t in taken):
            candidate = Lease(previous, attrs)
            if self.store.create_lease(candidate, self.ttl):
                return candidate
            return None
        free = self._free_subnets(taken)
        if not free:
            raise OutOfSubnets(self.config)
        candidate = Lease(self.choose(free), attrs)
        return candidate if self.store.create_lease(candidate, self.ttl) else None

    def _free_subnets(self, taken: list[IPv4Net]) -> list[IPv4Net]:
        free: list[IPv4Net] = []
        for subnet in self.config.subnets():
            if not any(subnet.overlaps(t) for t in taken):
                free.append(subnet)
                if len(free) == CANDIDATES:
                    break
        return free

    def renew(self, lease: Lease) -> Lease:
        renewed = Lease(lease.subnet, lease.attrs, lease.ipv6_subnet)
        self.store.update_lease(renewed, self.ttl)
        return renewed

    def release(self, lease: Lease) -> None:
        self.store.delete_lease(lease)
