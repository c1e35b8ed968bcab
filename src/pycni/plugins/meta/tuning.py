"""tuning: sysctls and link attributes of the container interface (reference ``plugins/meta/tuning``).

Keys, as in Go: ``sysctl`` (dotted key -> value, applied in the container;
the first literal ``IFNAME`` becomes ``CNI_IFNAME``; only ``net.*``),
``mac``, ``mtu``, ``promisc`` (only ``true`` acts), ``allmulti``,
``txQLen``, ``dataDir`` (default ``/run/cni/tuning``); the same under
``args.cni`` override the config. The MAC is the config's, then ``CNI_ARGS``
``MAC``, then ``runtimeConfig.mac``, then ``args.cni.mac``: the last one set
wins. If ``/etc/cni/tuning/allowlist.conf`` exists, every sysctl key must
match one of its regular expressions (one per line); a ``sysctl`` object
with a key twice is refused.

ADD saves the previous values to ``<dataDir>/<containerID>_<ifname>.json``
(Go's file: ``mac``, ``promisc``, ``mtu``, ``allmulti``, ``txQLen``), sets
the new ones, puts the new MAC into ``prevResult``'s entry for the interface
and echoes it. DEL restores what was saved and removes the file; it never
fails. CHECK compares the container with the config.

Beyond Go: the previous *sysctl* values are saved too (key ``sysctl`` of the
same file, which Go ignores) and restored on DEL, so a container that
outlives its attachment gets its settings back; the file also records the
network (key ``network``) so that GC removes the files of this network's
stale attachments and never another network's.

Differences from Go: bad input (a key outside ``net``, not allowed, a
duplicate, a wrong type, a MAC that is not one, a sysctl the container does
not have) is code 7 and is found before anything changes (Go reports 999,
and may have written some sysctls by then); a failed ADD puts back what it
changed; a retried ADD keeps the values saved by the first, so DEL still
restores the originals; the MAC in the result is spelled as the kernel
spells it (lower case, colons); DEL removes the file when the namespace or
the interface is gone (Go keeps it forever) and keeps it only when a restore
failed, for a retry; CHECK compares sysctl values ignoring whitespace
differences (``ip_local_port_range``).

A damaged saved file (issue 9's corruption campaign) is read field by field:
what has the right type is restored, the rest is named in a warning. Only a
regular file is read (a symlink is never followed: its target could be
anyone's values); anything else at the path, or a file that is not a JSON
object, holds nothing to restore. ADD then starts again from the live values
and replaces whatever is there; DEL removes it (a directory whole, a symlink
itself) and does not keep a damaged file for a retry.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pycni.fsutil import read_state, remove, remove_orphans, sweep, write_atomic
from pycni.net import link, netns, sysctl
from pycni.net.link import LinkInfo
from pycni.net.sublink import parse_mac
from pycni.plugins.common import Rollback, prev_result_required
from pycni.skel import CmdArgs, Plugin
from pycni.spec import CNIError, ErrorCode, Fields, Result, jsonutil
from pycni.spec.jsonutil import get_key

if TYPE_CHECKING:
    from pyroute2 import IPRoute

log = logging.getLogger(__name__)
plugin = Plugin("tuning")

DEFAULT_DATA_DIR = "/run/cni/tuning"
ALLOWLIST_FILE = "/etc/cni/tuning/allowlist.conf"
SYSCTL_ROOT = "/proc/sys/"


def _invalid(message: str, details: str = "") -> CNIError:
    return CNIError(ErrorCode.INVALID_NETWORK_CONFIG, message, details)


# -- configuration -------------------------------------------------------------


@dataclass
class TuningConf:
    sysctl: dict[str, str] = field(default_factory=dict)
    mac: str = ""
    promisc: bool = False
    mtu: int = 0
    allmulti: bool | None = None
    txqlen: int | None = None
    data_dir: str = DEFAULT_DATA_DIR

    @property
    def changes_link(self) -> bool:
        return bool(self.mac or self.mtu or self.promisc or self.allmulti is not None or self.txqlen is not None)


class _Object(dict[str, Any]):
    """A decoded JSON object that remembers the keys it had more than once."""

    duplicates: set[str]


def _remember_duplicates(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    obj.duplicates = set()
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            obj.duplicates.add(key)
        seen.add(key)
    return obj


def reject_duplicate_sysctls(stdin: bytes) -> None:
    """Go decodes ``sysctl`` into a map, where a repeated key silently wins; refuse it instead."""
    try:
        config = jsonutil.loads(stdin, object_pairs_hook=_remember_duplicates)
    except ValueError:
        return  # the dispatcher has decoded it already; nothing else to find here
    holders = [config]
    cni_args = _child(_child(config, "args"), "cni")
    if cni_args is not None:
        holders.append(cni_args)
    for holder in holders:
        table = _child(holder, "sysctl")
        if table is not None and table.duplicates:
            raise _invalid(
                "duplicated sysctl keys are not allowed", f"{', '.join(sorted(table.duplicates))} given more than once"
            )


def _child(obj: _Object | None, key: str) -> _Object | None:
    value = get_key(obj, key) if obj is not None else None
    return value if isinstance(value, _Object) else None


def _sysctls(conf: Fields, key: str) -> dict[str, str]:
    table = conf.obj(key)
    for name, value in table.data.items():
        if not isinstance(value, str):
            raise _invalid(f"{table.where}.{name}: expected a string, got {type(value).__name__} {value!r}")
    return dict(table.data)


def _runtime_mac(args: CmdArgs) -> str:
    value = args.runtime_config("mac")
    if value is not None and not isinstance(value, str):
        raise _invalid(f"runtimeConfig.mac: expected a string, got {type(value).__name__} {value!r}")
    return value or ""


def load_conf(args: CmdArgs) -> TuningConf:
    """The config with ``CNI_ARGS``, ``runtimeConfig`` and ``args.cni`` applied in Go's order."""
    reject_duplicate_sysctls(args.stdin)
    conf = args.fields
    parsed = TuningConf(
        sysctl=_sysctls(conf, "sysctl"),
        mac=conf.string("mac"),
        promisc=conf.boolean("promisc"),
        mtu=conf.integer("mtu", minimum=0),
        allmulti=conf.boolean("allmulti") if conf.has("allmulti") else None,
        txqlen=conf.integer("txQLen", minimum=0, maximum=2**32 - 1) if conf.has("txQLen") else None,
        data_dir=conf.os_string("dataDir") or DEFAULT_DATA_DIR,
    )
    parsed.mac = args.cni_args(("MAC",)).get("MAC") or parsed.mac
    parsed.mac = _runtime_mac(args) or parsed.mac
    overrides = conf.obj("args").obj("cni")
    parsed.sysctl.update(_sysctls(overrides, "sysctl"))
    if overrides.has("mac"):
        parsed.mac = overrides.string("mac")
    if overrides.has("promisc"):
        parsed.promisc = overrides.boolean("promisc")
    if overrides.has("mtu"):
        parsed.mtu = overrides.integer("mtu", minimum=0)
    if overrides.has("allmulti"):
        parsed.allmulti = overrides.boolean("allmulti")
    if overrides.has("txQLen"):
        parsed.txqlen = overrides.integer("txQLen", minimum=0, maximum=2**32 - 1)
    if parsed.mac:
        parsed.mac = parse_mac(parsed.mac)
    return parsed


def sysctl_path(key: str, ifname: str) -> str:
    """The sysctl's path under /proc/sys for a dotted key; only ``net/...`` is accepted."""
    relative = key.replace(".", "/").replace("IFNAME", ifname, 1)
    path = os.path.normpath(SYSCTL_ROOT + relative)
    if not path.startswith(SYSCTL_ROOT + "net/"):
        raise _invalid(f"invalid net sysctl key: {json.dumps(relative)}", "tuning only sets sysctls under net.")
    return path[len(SYSCTL_ROOT) :]


def read_allowlist(path: str = ALLOWLIST_FILE) -> list[str] | None:
    """The allowlist's regular expressions; ``None`` when the file is absent (everything allowed)."""
    try:
        with open(path) as handle:
            lines = handle.read().split("\n")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CNIError(ErrorCode.IO_FAILURE, f"cannot read the sysctl allowlist {path}: {exc.strerror}") from None
    return [line.strip() for line in lines if line.strip()]


def check_allowlist(keys: list[str], path: str = ALLOWLIST_FILE) -> None:
    allowlist = read_allowlist(path)
    if allowlist is None:
        return
    patterns = []
    for expression in allowlist:
        try:
            patterns.append(re.compile(expression))
        except re.error as exc:
            raise CNIError(ErrorCode.INTERNAL, f"{path}: invalid regular expression {expression!r}: {exc}") from None
    for key in keys:
        if not any(pattern.search(key) for pattern in patterns):
            raise _invalid(
                f"Sysctl {key} is not allowed. Only the following sysctls are allowed: [{' '.join(allowlist)}]",
                f"the allowlist is {path}",
            )


# -- the saved previous values -------------------------------------------------


@dataclass
class Saved:
    """The previous values ADD replaced (Go's ``configToRestore`` plus ``sysctl`` and ``network``)."""

    mac: str = ""
    promisc: bool | None = None
    mtu: int = 0
    allmulti: bool | None = None
    txqlen: int | None = None
    sysctl: dict[str, str] = field(default_factory=dict)  # sysctl path under /proc/sys -> value
    network: str = ""
    problems: list[str] = field(default_factory=list, compare=False)  # what a damaged file held that was dropped

    def to_json(self) -> bytes:
        data: dict[str, Any] = {}
        if self.mac:
            data["mac"] = self.mac
        if self.promisc is not None:
            data["promisc"] = self.promisc
        if self.mtu:
            data["mtu"] = self.mtu
        if self.allmulti is not None:
            data["allmulti"] = self.allmulti
        if self.txqlen is not None:
            data["txQLen"] = self.txqlen
        if self.sysctl:
            data["sysctl"] = self.sysctl
        if self.network:
            data["network"] = self.network
        return json.dumps(data, indent=1).encode()

    @classmethod
    def from_json(cls, text: bytes) -> Saved:
        """Decode a saved file, Go's or ours, one field at a time.

        A field of the wrong type is dropped and named in ``problems``, so the
        rest can still be put back; ``ValueError`` if it is no JSON object.
        """
        data = jsonutil.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        fields = Fields(data, "saved values")
        saved = cls()

        def read(key: str, decode: Callable[[], Any], default: Any) -> Any:
            try:
                return decode() if fields.has(key) else default
            except CNIError as exc:
                saved.problems.append(exc.msg)
                return default

        saved.mac = read("mac", lambda: parse_mac(fields.string("mac")), "")
        saved.promisc = read("promisc", lambda: fields.boolean("promisc"), None)
        saved.mtu = read("mtu", lambda: fields.integer("mtu", minimum=0), 0)
        saved.allmulti = read("allmulti", lambda: fields.boolean("allmulti"), None)
        saved.txqlen = read("txQLen", lambda: fields.integer("txQLen", minimum=0, maximum=2**32 - 1), None)
        saved.network = read("network", lambda: fields.string("network"), "")
        table = read("sysctl", lambda: fields.obj("sysctl").data, {})
        for key, value in table.items():
            if isinstance(value, str):
                saved.sysctl[key] = value
            else:
                saved.problems.append(f"saved values.sysctl.{key}: expected a string, got {value!r}")
        return saved


def saved_path(data_dir: str, container_id: str, ifname: str) -> str:
    return os.path.join(data_dir, f"{container_id}_{ifname}.json")


def load_saved(path: str) -> Saved | None:
    """The saved values at ``path``; ``None`` if nothing is there; ``ValueError`` if nothing can be read.

    Only a regular file is read: a symlink is not followed, a directory or an
    unreadable file holds nothing to restore.
    """
    try:
        raw = read_state(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return Saved.from_json(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a tuning state file: {exc}") from None


def capture(ipr: IPRoute, target: LinkInfo | None, conf: TuningConf, paths: dict[str, str], saved: Saved) -> None:
    """Add to ``saved`` the current value of everything ``conf`` changes that it does not hold yet."""
    for path in paths.values():
        if path not in saved.sysctl:
            with contextlib.suppress(OSError):  # write-only (route/flush): no value to put back
                saved.sysctl[path] = sysctl.read(path)
    if target is None:
        return  # only sysctls to change
    if conf.mac and not saved.mac:
        saved.mac = target.mac
    if conf.promisc and saved.promisc is None:
        saved.promisc = target.promisc
    if conf.mtu and not saved.mtu:
        saved.mtu = target.mtu
    if conf.allmulti is not None and saved.allmulti is None:
        saved.allmulti = bool(target.flags & link.IFF_ALLMULTI)
    if conf.txqlen is not None and saved.txqlen is None:
        saved.txqlen = link.txqlen(ipr, target)


def restore(ipr: IPRoute, ifname: str, saved: Saved) -> list[str]:
    """Put the saved values back (Go's order, sysctls last); returns what failed.

    A link or sysctl that no longer exists has nothing to restore and is not a failure.
    """
    failures: list[str] = []

    def attempt(what: str, action: Callable[[], object]) -> None:
        try:
            action()
        except CNIError as exc:
            failures.append(f"failed to restore {what}: {exc}")

    target = link.find(ipr, ifname)
    if target is not None:
        mtu, mac, promisc, allmulti, txqlen = saved.mtu, saved.mac, saved.promisc, saved.allmulti, saved.txqlen
        if mtu:
            attempt("MTU", lambda: link.set_attrs(ipr, target, mtu=mtu))
        if mac:
            attempt("MAC address", lambda: link.set_attrs(ipr, target, address=mac))
        if promisc is not None:
            attempt("promiscuous mode", lambda: link.set_promisc(ipr, target, promisc))
        if allmulti is not None:
            attempt("all-multicast mode", lambda: link.set_allmulti(ipr, target, allmulti))
        if txqlen is not None:
            attempt("transmit queue length", lambda: link.set_attrs(ipr, target, txqlen=txqlen))
    for path, value in saved.sysctl.items():
        if not os.path.normpath(SYSCTL_ROOT + path).startswith(SYSCTL_ROOT + "net/"):
            failures.append(f"refusing to restore sysctl {path}: not under {SYSCTL_ROOT}net")
            continue
        attempt(f"sysctl {path}", functools.partial(sysctl.write, path, value, missing_ok=True))
    return failures


# -- ADD ---------------------------------------------------------------------


@plugin.add
def add(args: CmdArgs) -> Result:
    conf = load_conf(args)
    check_allowlist(list(conf.sysctl))
    paths = {key: sysctl_path(key, args.ifname) for key in conf.sysctl}
    prev = args.prev_result()
    if prev is None:
        raise _invalid("Required prevResult missing")

    with (
        netns.handle(args.netns, args.netns_fd) as ns_fd,
        netns.iproute(args.netns, ns_fd) as ipr,
        netns.entered(args.netns, ns_fd),
        Rollback() as rollback,
    ):
        missing = [key for key, path in paths.items() if not os.path.exists(SYSCTL_ROOT + path)]
        if missing:
            raise _invalid(f"sysctl {missing[0]} does not exist in the container ({SYSCTL_ROOT}{paths[missing[0]]})")
        target = link.find(ipr, args.ifname)
        if target is None and conf.changes_link:
            raise CNIError(ErrorCode.INTERNAL, f'failed to get "{args.ifname}": Link not found')
        if conf.changes_link or paths:
            save_and_apply(ipr, target, conf, paths, args, rollback)
        rollback.commit()

    if conf.mac:
        for iface in prev.interfaces:
            if iface.name == args.ifname:
                iface.mac = conf.mac
    return prev


def save_and_apply(
    ipr: IPRoute, target: LinkInfo | None, conf: TuningConf, paths: dict[str, str], args: CmdArgs, rollback: Rollback
) -> None:
    """Write the previous values to disk first, then change the container (undone if a change fails)."""
    path = saved_path(conf.data_dir, args.container_id, args.ifname)
    try:
        saved = load_saved(path)
    except ValueError as exc:
        log.warning("tuning: %s; starting again from the live values", exc)
        saved = None  # unreadable leftovers
    existed = saved is not None
    saved = saved or Saved()
    saved.network = args.name
    capture(ipr, target, conf, paths, saved)
    try:
        os.makedirs(conf.data_dir, mode=0o700, exist_ok=True)
        write_atomic(path, saved.to_json(), replace_directory=True)
    except OSError as exc:
        raise CNIError(
            ErrorCode.IO_FAILURE, f"tuning: cannot save the previous values to {path}: {exc.strerror}"
        ) from None
    rollback.push("tuning changes", lambda: _undo(ipr, args.ifname, saved, path, existed))

    for key, sysctl_name in paths.items():
        sysctl.write(sysctl_name, conf.sysctl[key])
    if target is None:
        return
    if conf.mac:
        link.set_attrs(ipr, target, address=conf.mac)
    if conf.promisc:
        link.set_promisc(ipr, target, True)
    if conf.mtu:
        link.set_attrs(ipr, target, mtu=conf.mtu)
    if conf.allmulti is not None:
        link.set_allmulti(ipr, target, conf.allmulti)
    if conf.txqlen is not None:
        link.set_attrs(ipr, target, txqlen=conf.txqlen)


def _undo(ipr: IPRoute, ifname: str, saved: Saved, path: str, existed: bool) -> None:
    failures = restore(ipr, ifname, saved)
    if failures:
        raise CNIError(ErrorCode.INTERNAL, "; ".join(failures))
    if not existed:
        _remove(path)


# -- DEL ---------------------------------------------------------------------


@plugin.delete
def delete(args: CmdArgs) -> None:
    data_dir = args.fields.os_string("dataDir") or DEFAULT_DATA_DIR
    path = saved_path(data_dir, args.container_id, args.ifname)
    remove_orphans(path)  # an ADD killed while saving leaves its temporary, and maybe no file at all
    try:
        saved = load_saved(path)
    except ValueError as exc:
        log.warning("tuning: %s: nothing to restore", exc)
        _remove(path)  # not something we can act on; Go ignores it too
        return
    if saved is None:
        return  # nothing was saved, nothing to put back
    failures = [f"dropped {problem}" for problem in saved.problems]
    if args.netns or args.netns_fd is not None:
        try:
            with (
                netns.handle(args.netns, args.netns_fd) as ns_fd,
                netns.iproute(args.netns, ns_fd) as ipr,
                netns.entered(args.netns, ns_fd),
            ):
                failures += restore(ipr, args.ifname, saved)
        except netns.NetnsNotFound:
            pass  # the container is gone: nothing left to restore
    if failures:
        log.warning("tuning: %s: %s", path, "; ".join(failures))
    if failures and not saved.problems:
        return  # DEL never fails; keep an intact file so that a retried DEL can try again
    _remove(path)


def _remove(path: str) -> None:
    """Remove the saved file, whatever is at its path; DEL never fails over it."""
    try:
        remove(path)
    except OSError as exc:
        log.warning("tuning: cannot remove %s: %s", path, exc.strerror or exc)


# -- CHECK -------------------------------------------------------------------


@plugin.check
def check(args: CmdArgs) -> None:
    conf = load_conf(args)
    prev_result_required(args)
    paths = {key: sysctl_path(key, args.ifname) for key in conf.sysctl}
    with (
        netns.handle(args.netns, args.netns_fd) as ns_fd,
        netns.iproute(args.netns, ns_fd) as ipr,
        netns.entered(args.netns, ns_fd),
    ):
        for key, path in paths.items():
            try:
                current = sysctl.read(path)
            except OSError as exc:
                raise CNIError(ErrorCode.INTERNAL, f"cannot read sysctl {key}: {exc.strerror}") from None
            if current.split() != conf.sysctl[key].split():
                raise CNIError(
                    ErrorCode.INTERNAL,
                    f"Error: Tuning configured value of {SYSCTL_ROOT}{path} is {conf.sysctl[key]}, "
                    f"current value is {current}",
                )
        target = link.find(ipr, args.ifname)
        if target is None:
            raise CNIError(ErrorCode.INTERNAL, f"Cannot find container link {args.ifname}")
        check_link(ipr, target, conf)


def check_link(ipr: IPRoute, target: LinkInfo, conf: TuningConf) -> None:
    name = target.name
    if conf.mac and conf.mac != target.mac:
        raise CNIError(
            ErrorCode.INTERNAL,
            f"Error: Tuning configured Ethernet of {name} is {conf.mac}, current value is {target.mac}",
        )
    if conf.promisc != target.promisc:
        raise CNIError(
            ErrorCode.INTERNAL,
            f"Error: Tuning link {name} configured promisc is {str(conf.promisc).lower()}, "
            f"current value is {int(target.promisc)}",
        )
    if conf.mtu and conf.mtu != target.mtu:
        raise CNIError(
            ErrorCode.INTERNAL, f"Error: Tuning configured MTU of {name} is {conf.mtu}, current value is {target.mtu}"
        )
    allmulti = bool(target.flags & link.IFF_ALLMULTI)
    if conf.allmulti is not None and conf.allmulti != allmulti:
        raise CNIError(
            ErrorCode.INTERNAL,
            f"Error: Tuning configured all-multicast mode of {name} is {str(conf.allmulti).lower()}, "
            f"current value is {str(allmulti).lower()}",
        )
    if conf.txqlen is not None:
        current = link.txqlen(ipr, target)
        if conf.txqlen != current:
            raise CNIError(
                ErrorCode.INTERNAL,
                f"Error: Tuning configured Transmit Queue Length of {name} is {conf.txqlen}, "
                f"current value is {current}",
            )


# -- GC ----------------------------------------------------------------------


@plugin.gc
def gc(args: CmdArgs) -> None:
    """Remove this network's saved-value files of attachments that are no longer valid.

    Only files that name this network are touched: the directory is shared by
    every network using tuning, and Go's files name none, so they are left alone.
    """
    listed = args.valid_attachments()
    if listed is None:
        return  # no list: nothing is known to be stale
    data_dir = args.fields.os_string("dataDir") or DEFAULT_DATA_DIR
    valid = {os.path.basename(saved_path(data_dir, cid, ifname)) for cid, ifname in listed}
    sweep(data_dir)  # temporaries of killed writers (of any network: none is anyone's state)
    try:
        names = os.listdir(data_dir)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CNIError(ErrorCode.IO_FAILURE, f"tuning GC: cannot list {data_dir}: {exc.strerror}") from None
    for name in names:
        if not name.endswith(".json") or name.startswith(".") or name in valid:
            continue
        path = os.path.join(data_dir, name)
        try:
            saved = load_saved(path)
        except ValueError:
            continue  # names no network: it may be another network's; its DEL removes it
        if saved is not None and saved.network == args.name:
            _remove(path)


if __name__ == "__main__":
    plugin.main()
