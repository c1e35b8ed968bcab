"""sbr: source-based routing for the container interface (reference ``plugins/meta/sbr``).

Traffic *from* each of the interface's addresses (``prevResult.ips``) is
routed by a table of its own, so replies leave by the interface they came in
on even when the container has several. Keys, as in Go:

* ``table``: use this table; only the rules ``from <ip> lookup <table>`` are added;
* otherwise each address gets the first free table from 100 (no rule or route
  uses it): a rule, a default route via the gateway, and the interface's routes
  moved there from the main table;
* ``gateways``: at most one IPv4 and one IPv6 address, preferred over the
  gateways of ``prevResult``;
* ``addSourceHints``: keep the subnet routes in the main table (with the
  address as source hint) and remove only the others from it.

DEL removes the rules whose source is an address of the interface. The whole
of ADD and DEL runs under a lock on the namespace file, as Go does, so
concurrent attachments to one container pick distinct tables.

Differences from Go:

* configuration errors are code 7 and are found before anything changes (Go
  reports 999, and checks ``gateways`` only midway);
* a failed ADD undoes its rules and routes; a retried ADD reuses the table its
  first run picked instead of adding a rule to another one; an interface
  without addresses in ``prevResult`` is left alone (Go still empties its
  main-table routes);
* a default route of the main table does not replace the one via a configured
  ``gateways`` address when it is moved (in Go it does, which defeats the key
  whenever the main table has a default route);
* the free table is one that no rule *and no route in any table* uses (Go
  looks only at the main table's routes);
* DEL without ``table`` also removes the interface's routes from the tables
  (>= 100) of the rules it removed, where Go leaves them until the link goes;
  a missing namespace or interface is success, and DEL never creates the
  namespace file it locks (Go's lock does);
* CHECK verifies that each address has its rule (Go's CHECK does nothing).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pycni.net import addr, link, netns, rule
from pycni.plugins.common import Rollback, prev_result_required
from pycni.skel import CmdArgs, Plugin
from pycni.spec import CNIError, ErrorCode, Result
from pycni.spec.result import IPAddress, IPConfig

if TYPE_CHECKING:
    from pyroute2 import IPRoute

plugin = Plugin("sbr")

FIRST_TABLE = 100


@dataclass
class SbrConf:
    table: int | None = None
    gateways: dict[int, IPAddress] = field(default_factory=dict)  # by IP version
    add_source_hints: bool = False


def _invalid(message: str) -> CNIError:
    return CNIError(ErrorCode.INVALID_NETWORK_CONFIG, message)


def load_conf(args: CmdArgs) -> SbrConf:
    conf = args.fields
    table = conf.integer("table", minimum=0, maximum=2**32 - 1) if conf.has("table") else None
    raw_gateways = conf.strings("gateways")
    if len(raw_gateways) > 2:
        raise _invalid("gateways list cannot contain more than 2 entries (one IPv4, one IPv6)")
    gateways: dict[int, IPAddress] = {}
    for text in raw_gateways:
        try:
            gateway = ipaddress.ip_address(text)
        except ValueError:
            raise _invalid(f"invalid static gateway IP address: {text}") from None
        if isinstance(gateway, ipaddress.IPv6Address) and gateway.ipv4_mapped:
            gateway = gateway.ipv4_mapped  # Go's net.ParseIP treats ::ffff:a.b.c.d as IPv4
        if gateway.version in gateways:
            family = "IPv4" if gateway.version == 4 else "IPv6"
            raise _invalid(
                f"gateways list contains multiple {family} addresses: {gateways[gateway.version]} and {text}"
            )
        gateways[gateway.version] = gateway
    return SbrConf(table, gateways, conf.boolean("addSourceHints"))


def interface_ips(result: Result, ifname: str) -> list[IPConfig]:
    """The IPs of ``ifname``; an IP that names no interface is assumed to be its (as Go does)."""
    if not result.ips:
        raise _invalid(f"No IP addresses supplied on interface: {ifname}")
    chosen = []
    for ip in result.ips:
        index = ip.interface
        if index is not None and 0 <= index < len(result.interfaces) and result.interfaces[index].name != ifname:
            continue
        chosen.append(ip)
    return chosen


@contextmanager
def locked_netns(args: CmdArgs) -> Iterator[int]:
    """An open handle on the container's namespace, flock'ed for the body (Go's ``withLockAndNetNS``)."""
    with netns.handle(args.netns, args.netns_fd) as fd:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield fd
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


# -- ADD ---------------------------------------------------------------------


@plugin.add
def add(args: CmdArgs) -> Result:
    conf = load_conf(args)
    prev = args.prev_result()
    if prev is None:
        raise _invalid("This plugin must be called as chained plugin")
    ips = interface_ips(prev.as_version("1.1.0"), args.ifname)
    with locked_netns(args) as fd, netns.iproute(args.netns, fd) as ipr, Rollback() as rollback:
        if conf.table is not None:
            for ip in ips:
                add_rule(ipr, rollback, ip.address.ip, conf.table)
        else:
            route_through_tables(ipr, rollback, ips, args.ifname, conf)
        rollback.commit()
    return prev


def add_rule(ipr: IPRoute, rollback: Rollback, src: IPAddress, table: int) -> None:
    if rule.add_source_rule(ipr, src, table):
        rollback.push(f"rule from {src} table {table}", lambda: _delete_rules_of(ipr, src, table))


def _delete_rules_of(ipr: IPRoute, src: IPAddress, table: int) -> None:
    for found in rule.rules(ipr, table):
        if found.src is not None and found.src.ip == src:
            rule.delete_rule(ipr, found)


def route_through_tables(ipr: IPRoute, rollback: Rollback, ips: list[IPConfig], ifname: str, conf: SbrConf) -> None:
    """Per address: a table, its rule, a default route there, and the interface's routes moved in."""
    target = link.find(ipr, ifname)
    if target is None:
        raise CNIError(ErrorCode.INTERNAL, f"Cannot find network interface {ifname}")
    if not ips:
        return  # Go would still empty the main table of the interface's routes, for nothing
    used = rule.used_tables(ipr)
    held = {r.src.ip: r.table for r in rule.rules(ipr) if r.src is not None and r.table >= FIRST_TABLE}
    main_routes = rule.link_routes(ipr, target.index)
    next_free = rule.first_free_table(used, FIRST_TABLE)
    for ip in ips:
        table = held.get(ip.address.ip)  # a retried ADD keeps the table it picked
        if table is None:
            table = next_free
            used.add(table)
            next_free = rule.first_free_table(used, table + 1)
        add_rule(ipr, rollback, ip.address.ip, table)
        rollback.push(f"routes in table {table}", functools.partial(_flush, ipr, target.index, table))
        gateway = conf.gateways.get(ip.address.version) or ip.gateway
        if gateway is not None:
            default = ipaddress.ip_interface("0.0.0.0/0" if ip.address.version == 4 else "::/0")
            addr.add_route(ipr, default, gateway, oif=target.index, table=table)
        network = ip.address.network
        for route in main_routes:
            if route.dst.network.prefixlen == 0 and ip.address.version in conf.gateways:
                continue  # the configured gateway wins (Go lets the old default route overwrite it)
            generic = route.prefsrc is None and route.gateway is None
            if generic or _within(route.prefsrc, network) or _within(route.gateway, network):
                rule.replace_route(ipr, route, table)

    if conf.add_source_hints:
        for ip in ips:
            hint = rule.KernelRoute(
                family=addr.family_of(ip.address.version),
                dst=ipaddress.ip_interface(str(ip.address.network)),
                table=rule.RT_TABLE_MAIN,
                oif=target.index,
                prefsrc=ip.address.ip,
                scope=rule.RT_SCOPE_LINK,
            )
            with contextlib.suppress(CNIError):  # as in Go: a missing hint costs only destination routing
                rule.replace_route(ipr, hint)
        doomed = [r for r in main_routes if r.scope != rule.RT_SCOPE_LINK]
    else:
        doomed = main_routes
    for route in doomed:
        rule.delete_route(ipr, route)
        rollback.push(f"route {route}", functools.partial(rule.replace_route, ipr, route))


def _within(address: IPAddress | None, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    return address is not None and address in network


def _flush(ipr: IPRoute, oif: int, table: int) -> None:
    for route in rule.link_routes(ipr, oif, table):
        rule.delete_route(ipr, route)


# -- DEL ---------------------------------------------------------------------


@plugin.delete
def delete(args: CmdArgs) -> None:
    conf = load_conf(args)
    if not args.netns and args.netns_fd is None:
        return
    try:
        with locked_netns(args) as fd, netns.iproute(args.netns, fd) as ipr:
            tidy_rules(ipr, args.ifname, conf.table)
    except netns.NetnsNotFound:
        return  # the container is gone, and its rules with it


def tidy_rules(ipr: IPRoute, ifname: str, table: int | None) -> None:
    """Remove the rules from the interface's addresses (of ``table`` only, if configured)."""
    target = link.find(ipr, ifname)
    if target is None:
        return
    mine = {a.ip for a in addr.addresses(ipr, target.index)}
    emptied: set[int] = set()
    for found in rule.rules(ipr, table):
        if found.src is not None and found.src.ip in mine:
            rule.delete_rule(ipr, found)
            emptied.add(found.table)
    if table is None:
        for number in emptied:
            if number >= FIRST_TABLE and number not in rule.RESERVED_TABLES:
                _flush(ipr, target.index, number)


# -- CHECK -------------------------------------------------------------------


@plugin.check
def check(args: CmdArgs) -> None:
    conf = load_conf(args)
    ips = interface_ips(prev_result_required(args), args.ifname)
    with netns.iproute(args.netns, args.netns_fd) as ipr:
        present = rule.rules(ipr, conf.table)
        for ip in ips:
            source = ip.address.ip
            if not any(r.src is not None and r.src.ip == source and r.src.network.num_addresses == 1 for r in present):
                where = f" table {conf.table}" if conf.table is not None else ""
                raise CNIError(ErrorCode.INTERNAL, f"sbr: no rule from {source}{where} in the container")


if __name__ == "__main__":
    plugin.main()
