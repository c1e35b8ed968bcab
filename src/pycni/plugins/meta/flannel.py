"""flannel: attach a pod to this node's Flannel subnet by delegating (``flannel-io/cni-plugin``).

Reads ``subnet.env`` (written by ``pycni flanneld`` or flanneld) and builds the
delegate's config: ``bridge`` by default with ``isGateway`` and
``ipMasq = !FLANNEL_IPMASQ``, ``mtu = FLANNEL_MTU``, and ``host-local`` IPAM over
the node's subnet with a route to the whole cluster network. Keys in
``delegate`` win. The generated config is saved under ``dataDir`` per container
so that DEL (and CHECK) use exactly what ADD used, even if the lease changed.

A damaged ``subnet.env`` (see :mod:`pycni.fabric.flannel.subnetenv` for what is
checked) fails ADD with a CNI error naming the file and the key, before
anything is made. DEL and GC never fail because of it: DEL uses the config ADD
saved; if that is damaged too, the delegate is called with a config rebuilt
from ``subnet.env`` or, when that is damaged as well, with another container's
saved config (the same network on the same node: the delegate's DEL goes by
container ID), and GC takes its delegate config the same way.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from pycni import fsutil
from pycni.fabric.flannel import subnetenv
from pycni.fsutil import write_atomic
from pycni.runtime import delegate
from pycni.skel import CmdArgs, Plugin
from pycni.spec import CNIError, ErrorCode, Result, jsonutil

plugin = Plugin("flannel")

DEFAULT_DATA_DIR = "/var/lib/cni/flannel"


log = logging.getLogger(__name__)


def _settings(args: CmdArgs) -> tuple[str, str, dict[str, Any]]:
    conf = args.fields
    subnet_file = conf.os_string("subnetFile", subnetenv.DEFAULT_PATH) or subnetenv.DEFAULT_PATH
    data_dir = conf.os_string("dataDir", DEFAULT_DATA_DIR) or DEFAULT_DATA_DIR
    return subnet_file, data_dir, dict(conf.obj("delegate").data)


def delegate_config(args: CmdArgs, env: subnetenv.SubnetEnv, user: dict[str, Any]) -> dict[str, Any]:
    """The delegate's config from ``subnet.env`` and the user's ``delegate`` keys."""
    network, subnet_net, mtu, ipmasq = str(env.network), str(env.subnet.network), env.mtu, env.ipmasq
    conf: dict[str, Any] = {"type": "bridge", **user}
    conf["name"] = args.name
    conf["cniVersion"] = args.cni_version
    conf.setdefault("ipMasq", not ipmasq)
    conf.setdefault("mtu", mtu)
    if conf["type"] == "bridge":
        conf.setdefault("isGateway", True)
    ipam = dict(conf.get("ipam") or {})
    ipam.setdefault("type", "host-local")
    ipam.setdefault("ranges", [[{"subnet": subnet_net}]])
    ipam["routes"] = [*ipam.get("routes", []), {"dst": network}]
    conf["ipam"] = ipam
    for key in ("runtimeConfig", "args"):
        if key in args.config:
            conf[key] = args.config[key]
    return conf


def _scratch(data_dir: str, container_id: str) -> str:
    return os.path.join(data_dir, container_id)


@plugin.add
def add(args: CmdArgs) -> Result:
    subnet_file, data_dir, user = _settings(args)
    env = subnetenv.load(subnet_file)
    if env is None:
        raise CNIError(
            ErrorCode.TRY_AGAIN_LATER,
            f"loadFlannelSubnetEnv failed: open {subnet_file}: no such file or directory",
            "the node agent (pycni flanneld) has not written it yet",
        )
    conf = delegate_config(args, env, user)
    stdin = json.dumps(conf).encode()
    try:
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        write_atomic(_scratch(data_dir, args.container_id), stdin)
    except OSError as exc:
        message = f"flannel: cannot save the delegate config in {data_dir}: {exc.strerror}"
        raise CNIError(ErrorCode.IO_FAILURE, message) from None
    try:
        return delegate.delegate_add(conf["type"], stdin, args.env, args.path, args.cni_version)
    except CNIError:
        os.unlink(_scratch(data_dir, args.container_id))
        raise


def _saved(path: str) -> dict[str, Any] | None:
    """A saved delegate config, if it is one (a JSON object with a string ``type``)."""
    try:
        saved = jsonutil.loads(fsutil.read_state(path))
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) and isinstance(saved.get("type"), str) else None


def _rebuilt(args: CmdArgs, subnet_file: str, data_dir: str, user: dict[str, Any], skip: str) -> dict[str, Any] | None:
    """A delegate config for DEL or GC without this container's own: from subnet.env, else the newest saved one."""
    try:
        env = subnetenv.load(subnet_file)
    except CNIError as error:
        log.warning("flannel: %s", error.msg)
        env = None
    if env is not None:
        return delegate_config(args, env, user)
    try:
        names = [name for name in os.listdir(data_dir) if name != skip and not name.startswith(".")]
    except OSError:
        return None
    paths = [os.path.join(data_dir, name) for name in names]
    for path in sorted(paths, key=_mtime, reverse=True):
        saved = _saved(path)
        if saved is not None:
            return saved
    return None


def _mtime(path: str) -> float:
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return 0.0


@plugin.delete
def delete(args: CmdArgs) -> None:
    subnet_file, data_dir, user = _settings(args)
    path = _scratch(data_dir, args.container_id)
    try:
        stdin = fsutil.read_state(path)
        plugin_type = str(jsonutil.loads(stdin)["type"])
    except FileNotFoundError:
        return  # never added, or already deleted
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # Damaged: DEL with what ADD would have saved (Go fails every DEL after this); with nothing
        # to rebuild it from, the delegate's GC releases the address later.
        log.warning("flannel: saved delegate config %s is unusable (%s); deleting with a rebuilt one", path, exc)
        conf = _rebuilt(args, subnet_file, data_dir, user, args.container_id)
        if conf is not None:
            delegate.delegate_del(str(conf["type"]), json.dumps(conf).encode(), args.env, args.path)
        fsutil.remove(path)
        return
    delegate.delegate_del(plugin_type, stdin, args.env, args.path)
    fsutil.remove(path)


@plugin.check
def check(args: CmdArgs) -> None:
    _subnet_file, data_dir, _user = _settings(args)
    path = _scratch(data_dir, args.container_id)
    try:
        saved = jsonutil.loads(fsutil.read_state(path))
    except FileNotFoundError:
        raise CNIError(ErrorCode.INTERNAL, f"flannel: no saved delegate config for {args.container_id}") from None
    except (OSError, ValueError) as exc:
        raise CNIError(ErrorCode.IO_FAILURE, f"flannel: saved delegate config {path} is unusable: {exc}") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("type"), str):
        raise CNIError(ErrorCode.DECODING_FAILURE, f"flannel: saved delegate config {path} has no plugin type")
    if "prevResult" in args.config:
        saved["prevResult"] = args.config["prevResult"]
    delegate.delegate_check(str(saved["type"]), json.dumps(saved).encode(), args.env, args.path)


@plugin.gc
def gc(args: CmdArgs) -> None:
    """Forget stale containers' saved configs, then let the delegate (and its IPAM) collect theirs."""
    listed = args.valid_attachments()
    if listed is None:
        return
    subnet_file, data_dir, user = _settings(args)
    valid = {cid for cid, _ifname in listed}
    conf = _rebuilt(args, subnet_file, data_dir, user, "")  # before the stale ones go: one may be all there is
    try:
        names = os.listdir(data_dir)
    except OSError:  # none yet, or not a directory: nothing saved to forget
        names = []
    for name in names:
        if name not in valid and not name.startswith("."):
            fsutil.remove(os.path.join(data_dir, name))
    if conf is None:
        log.warning("flannel: no usable subnet.env or saved config: the delegate's GC is skipped")
        return
    conf["cni.dev/valid-attachments"] = args.config.get("cni.dev/valid-attachments", [])
    delegate.delegate_gc(str(conf["type"]), json.dumps(conf).encode(), args.env, args.path)


@plugin.status
def status(args: CmdArgs) -> None:
    subnet_file, _data_dir, _user = _settings(args)
    try:
        env = subnetenv.load(subnet_file)
    except CNIError as error:
        raise CNIError(ErrorCode.PLUGIN_NOT_AVAILABLE, error.msg) from None
    if env is None:
        raise CNIError(ErrorCode.PLUGIN_NOT_AVAILABLE, f"{subnet_file} is missing: is the node agent running?")


if __name__ == "__main__":
    plugin.main()
