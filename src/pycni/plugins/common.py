"""What several plugins read the same way: the IPAM section, a requested MAC, DNS overrides.

IPAM is always delegated to the plugin named by ``ipam.type`` with the
caller's own stdin and environment, as the spec requires. The result comes
back converted to 1.1.0 so plugins work on one shape; the SDK prints it at
the config's version.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pycni.ipam.config import parse_dns
from pycni.net import addr, link, netns, sublink
from pycni.nft import masquerade
from pycni.runtime import delegate
from pycni.skel import CmdArgs
from pycni.spec import DNS, CNIError, ErrorCode, Fields, Result

if TYPE_CHECKING:
    from pyroute2 import IPRoute

    from pycni.net.link import LinkInfo
    from pycni.spec import Interface

WORKING_VERSION = "1.1.0"


class Ipam:
    """The delegated IPAM plugin of one call (``ipam.type``); empty type means none."""

    def __init__(self, args: CmdArgs) -> None:
        self.args = args
        self.type = args.fields.obj("ipam").string("type")

    def __bool__(self) -> bool:
        return bool(self.type)

    @classmethod
    def required(cls, args: CmdArgs, plugin: str) -> Ipam:
        """The IPAM plugin of a plugin that cannot work without one."""
        ipam = cls(args)
        if not ipam:
            raise CNIError(
                ErrorCode.INVALID_NETWORK_CONFIG, f"{plugin} requires an IPAM configuration", "set ipam.type"
            )
        return ipam

    def add(self) -> Result:
        args = self.args
        result = delegate.delegate_add(self.type, args.stdin, args.env, args.path, args.cni_version)
        return result.as_version(WORKING_VERSION)

    def allocate(self, rollback: Rollback) -> Result:
        """ADD through IPAM with its release registered for rollback; at least one IP, or an error."""
        result = self.add()
        rollback.push(f"IPAM ({self.type}) address", self.delete)
        if not result.ips:
            raise CNIError(ErrorCode.INTERNAL, "IPAM plugin returned missing IP config")
        return result

    def delete(self) -> None:
        if self.type:
            delegate.delegate_del(self.type, self.args.stdin, self.args.env, self.args.path)

    def check(self) -> None:
        if self.type:
            delegate.delegate_check(self.type, self.args.stdin, self.args.env, self.args.path)

    def gc(self) -> None:
        if self.type:
            delegate.delegate_gc(self.type, self.args.stdin, self.args.env, self.args.path)

    def status(self) -> None:
        if self.type:
            delegate.delegate_status(self.type, self.args.stdin, self.args.env, self.args.path)


# The largest MTU a veth or tap takes (the kernel's ETH_MAX_MTU); above it netlink cannot even carry some values.
MAX_MTU = 65535


def requested_mac(args: CmdArgs, config_key: str = "") -> str:
    """The container MAC: runtimeConfig.mac > args.cni.mac > CNI_ARGS MAC (> the config key).

    Checked here, whichever source it came from, so a bad one is code 7 naming
    its source before anything is made (not a netlink error after the veth is).
    """
    runtime_mac = args.runtime_config("mac")
    if runtime_mac:
        if not isinstance(runtime_mac, str):
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "runtimeConfig.mac must be a string")
        return _checked_mac(runtime_mac, "runtimeConfig.mac")
    conf = args.fields
    args_mac = conf.obj("args").obj("cni").string("mac")
    if args_mac:
        return _checked_mac(args_mac, "args.cni.mac")
    env_mac = args.cni_args(("MAC",)).get("MAC", "")
    if env_mac:
        return _checked_mac(env_mac, "CNI_ARGS MAC")
    return _checked_mac(conf.string(config_key), config_key) if config_key and conf.string(config_key) else ""


def _checked_mac(mac: str, source: str) -> str:
    try:
        sublink.parse_mac(mac)
    except CNIError as error:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, f"{source}: {error.msg}") from None
    return mac


def config_dns(conf: Fields) -> DNS | None:
    """The config's own ``dns``, which overrides IPAM's when any field is set."""
    dns = conf.obj("dns")
    if not any(dns.has(key) for key in ("nameservers", "domain", "search", "options")):
        return None
    return parse_dns(dns)


def prev_result_required(args: CmdArgs) -> Result:
    """``prevResult`` at 1.1.0 for CHECK; an error if the runtime sent none."""
    prev = args.prev_result()
    if prev is None:
        raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "Required prevResult missing")
    return prev.as_version(WORKING_VERSION)


class Rollback:
    """Undo steps of an ADD, run in reverse if it fails, so a failed ADD leaves nothing.

    Use as a context manager; call :meth:`commit` once the ADD has succeeded.
    Undo errors are reported on stderr and never hide the error that caused them.
    """

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], object]]] = []

    def push(self, what: str, undo: Callable[[], object]) -> None:
        self._steps.append((what, undo))

    def commit(self, result: Result | None = None, version: str = "") -> None:
        """The ADD succeeded: keep what it made.

        With ``result``, first make sure it can be printed at ``version`` (a
        result without IPs has no 0.1.0/0.2.0 form); if not, the error rolls
        everything back instead of leaving a link the runtime never hears of.
        """
        if result is not None:
            result.as_version(version)
        self._steps.clear()

    def __enter__(self) -> Rollback:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            return
        for what, undo in reversed(self._steps):
            try:
                undo()
            except Exception as error:  # noqa: BLE001 - keep undoing; the original error wins
                print(f"pycni: rollback of {what} failed: {error}", file=sys.stderr)
        self._steps.clear()


def delete_container_link(args: CmdArgs) -> None:
    """Delete ``CNI_IFNAME`` in the container; a gone namespace or link is already done."""
    if not args.netns and args.netns_fd is None:
        return
    try:
        with netns.iproute(args.netns, args.netns_fd) as container:
            link.delete(container, args.ifname)
    except netns.NetnsNotFound:
        pass  # the container is gone, and its interfaces with it


def check_addresses_and_routes(args: CmdArgs, container: IPRoute, ns_fd: int, result: Result, index: int) -> None:
    """CHECK: the result's addresses are on the interface and its routes are in the container."""
    with netns.entered(args.netns, ns_fd):
        addr.validate_interface_addresses(container, args.ifname, result, index)
        addr.validate_routes(container, result)


@dataclass
class ContainerCheck:
    """What a link plugin's CHECK works with: the prevResult, its interface and netlink in the container."""

    args: CmdArgs
    result: Result
    index: int  # of ``iface`` in ``result.interfaces``
    iface: Interface
    ns_fd: int
    container: IPRoute
    host: IPRoute | None

    def parent_ns(self, link_in_container: bool) -> IPRoute:
        """Where the parent (master) link lives."""
        if link_in_container:
            return self.container
        assert self.host is not None, "open the check with host=True"
        return self.host

    def link(self, kind: str | None) -> LinkInfo:
        """The container link: it exists, is of ``kind`` (if given) and has the reported MAC."""
        return sublink.check_container_link(self.container, self.iface, kind)

    def addresses_and_routes(self) -> None:
        check_addresses_and_routes(self.args, self.container, self.ns_fd, self.result, self.index)


@contextmanager
def container_check(args: CmdArgs, host: bool = False) -> Iterator[ContainerCheck]:
    """CHECK's common start: the required prevResult, its ``CNI_IFNAME`` interface, netlink in the container.

    ``host`` also opens netlink in the caller's namespace (for a parent link there).
    """
    result = prev_result_required(args)
    index, iface = sublink.expected_interface(result, args.ifname, args.netns)
    with ExitStack() as stack:
        ns_fd = stack.enter_context(netns.handle(args.netns, args.netns_fd))
        container = stack.enter_context(netns.iproute(args.netns, ns_fd))
        here = stack.enter_context(netns.iproute_here()) if host else None
        yield ContainerCheck(args, result, index, iface, ns_fd, container, here)


def gc_masquerade_and_ipam(args: CmdArgs, network: str, ip_masq: bool) -> None:
    """GC for the plugins that masquerade: stale masquerade rules, then the IPAM plugin's own GC.

    Without a list of valid attachments, masquerade GC still reaps the subnet rules no record uses.
    """
    errors: list[str] = []
    if ip_masq:
        try:
            masquerade.gc(network, args.valid_attachments())
        except CNIError as error:
            errors.append(str(error))
    try:
        Ipam(args).gc()
    except CNIError as error:
        errors.append(str(error))
    if errors:
        raise CNIError(ErrorCode.INTERNAL, "; ".join(errors))
