"""``pycni inspect --svg FILE | --png FILE | --calico``: a picture of the pod network.

``pycni inspect`` without these flags is the Flannel text report of
:mod:`pycni.cli.flanneld`, which registers the subcommand and hands these
flags here. The Flannel datastore is read as there (``--etcd-endpoints``,
``--etcd-prefix``, ``--store-path``); with ``--calico`` the Calico one is
chosen as ``pycni calicoctl`` chooses it (``-c CONFIG``, else
``DATASTORE_TYPE``/``ETCD_ENDPOINTS``, else the embedded store at ``--store``
or ``$PYCNI_CALICO_STORE``), except that ``--etcd-endpoints`` given here wins.
The kernel read is the calling thread's network namespace: run it on the node
(or ``ip netns exec NODE pycni inspect ...``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import TYPE_CHECKING

from pycni.runtime.cache import DEFAULT_CACHE_DIR

if (
    TYPE_CHECKING
):  # the picture's modules load only when a picture is asked for (every pycni command parses these flags)
    from pycni.picture.model import Picture


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The picture's flags and the Calico datastore's, on the ``inspect`` parser."""
    picture = parser.add_argument_group("picture of the network")
    picture.add_argument(
        "--svg", metavar="FILE", help="draw the network (nodes, subnets or blocks, links, pods) as SVG"
    )
    picture.add_argument(
        "--png", metavar="FILE", help="the same as PNG (needs rsvg-convert: apt-get install librsvg2-bin)"
    )
    picture.add_argument(
        "--cni-cache-dir",
        action="append",
        metavar="DIR",
        help="Flannel: the CNI result cache the pods are read from (repeatable; default $PYCNI_CACHE_DIR or "
        f"{DEFAULT_CACHE_DIR}); Flannel keeps no registry of pods, so only the caches read are shown",
    )
    calico = parser.add_argument_group("Calico")
    calico.add_argument(
        "--calico",
        action="store_true",
        help="inspect the Calico network instead (Nodes, IPAM blocks, WorkloadEndpoints, BGP); prints a summary "
        "without --svg/--png",
    )
    calico.add_argument("-c", "--config", help="with --calico: a CalicoAPIConfig file, as calicoctl -c")
    calico.add_argument(
        "--store", help="with --calico: the embedded store's sqlite file (default $PYCNI_CALICO_STORE or calicoctl's)"
    )
    calico.add_argument(
        "--bird-socket",
        help="with --calico: this node's BIRD control socket, for the BGP sessions' state (default "
        "$PYCNI_CALICO_BIRD_SOCKET, else calicoctl's paths if they exist)",
    )


def wants_picture(opts: argparse.Namespace) -> bool:
    return bool(opts.svg or opts.png or opts.calico)


def cmd_picture(opts: argparse.Namespace) -> int:
    if opts.png:
        from pycni.picture.png import converter

        converter()  # missing: the error naming the package, before anything is read
    picture = _calico(opts) if opts.calico else _flannel(opts)
    if not (opts.svg or opts.png):
        print(json.dumps(picture.to_dict(), indent=2) if opts.json else summary(picture))
        return 0
    from pycni.picture import svg

    text = svg.render(picture)
    counts = f"{len(picture.nodes)} node(s), {picture.pod_count} pod(s)"
    if opts.svg:
        _write(opts.svg, text.encode())
        print(f"wrote {opts.svg} ({counts})")
    if opts.png:
        from pycni.picture.png import to_png

        _write(opts.png, to_png(text))
        print(f"wrote {opts.png} ({counts})")
    return 0


def _write(path: str, data: bytes) -> None:
    from pycni.fsutil import write_atomic
    from pycni.picture.model import PictureError

    try:
        write_atomic(path, data, mode=0o644)
    except OSError as exc:
        raise PictureError(f"cannot write {path}: {exc.strerror or exc}") from None


def _flannel(opts: argparse.Namespace) -> Picture:
    from pycni.fabric.flannel.leases import open_lease_store
    from pycni.picture import collect_flannel
    from pycni.picture.model import PictureError

    endpoints = opts.etcd_endpoints or None
    path = opts.store_path or None
    if endpoints is None and (path is None or not os.path.exists(path)):
        raise PictureError(
            f"no Flannel store at {path}: give --store-path (the file pycni flanneld --store-path uses) "
            "or --etcd-endpoints (or --calico for a Calico network)"
        )
    where = f"etcd at {endpoints}" if endpoints else f"the embedded store {path}"
    caches = opts.cni_cache_dir or [os.environ.get("PYCNI_CACHE_DIR") or DEFAULT_CACHE_DIR]
    store = open_lease_store(endpoints, opts.etcd_prefix, path)
    try:
        sources = collect_flannel.read(store, where, caches, time.time())
    finally:
        store.close()
    return collect_flannel.build(sources)


def _calico(opts: argparse.Namespace) -> Picture:
    from pycni.fabric.calico.bird import DEFAULT_CONTROL_SOCKET, FALLBACK_CONTROL_SOCKET
    from pycni.fabric.calico.config import StoreConfig, load_config, open_store
    from pycni.picture import collect_calico
    from pycni.picture.model import PictureError

    urls = tuple(url.strip() for url in (opts.etcd_endpoints or "").split(",") if url.strip())
    if urls:
        config = StoreConfig("etcdv3", urls, source="--etcd-endpoints")
    else:
        config = load_config(opts.config, store_path=opts.store)
    if config.datastore_type != "etcdv3" and not os.path.exists(config.path):
        raise PictureError(
            f"no Calico datastore: {config.path} does not exist (give --store FILE, the file pycni calico-node "
            "--store uses, or --etcd-endpoints, or -c CONFIG)"
        )
    bird = opts.bird_socket or os.environ.get("PYCNI_CALICO_BIRD_SOCKET") or ""
    if not bird:
        bird = next((p for p in (DEFAULT_CONTROL_SOCKET, FALLBACK_CONTROL_SOCKET) if os.path.exists(p)), "")
    store = open_store(config)
    try:
        sources = collect_calico.read(store, config.describe(), bird)
    finally:
        store.close()
    return collect_calico.build(sources)


def summary(picture: Picture) -> str:
    """The picture as text: a block per node (``pycni inspect --calico`` without --svg)."""
    lines = [picture.title, picture.overlay, *picture.facts, ""]
    for node in picture.nodes:
        head = f"{node.name}{'  (this node)' if node.local else ''}"
        lines.append(head + (f"  {node.address}" if node.address else ""))
        lines += [f"  {detail}" for detail in node.details]
        lines += [f"  {s.kind} {s.cidr}" + (f"  {s.note}" if s.note else "") for s in node.subnets]
        lines += [f"  pod {p.name}  {', '.join(p.addresses)}" for p in node.pods]
        if node.badges:
            lines.append("  " + "  ".join(f"[{b.state.value}] {b.text}" for b in node.badges))
    return "\n".join(lines)
