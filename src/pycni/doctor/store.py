"""The datastore itself: with ``--etcd-endpoints``, etcd must answer before its contents can be judged.

Checked once, first: an etcd that does not answer is one failure, and the
checks that read it (Flannel's leases, Calico's IPAM) then do not run, rather
than each failing with the same message.
"""

from __future__ import annotations

from pycni.datastore import Unavailable
from pycni.doctor.context import Node
from pycni.doctor.model import Check, Finding, fail, ok


def check_datastore(node: Node) -> list[Finding]:
    endpoints = node.options.etcd_endpoints
    store = node.store
    if store is None or not endpoints:
        return []
    try:
        revision = store.revision()
    except Unavailable as error:
        node.store_down(error.msg)
        return [
            fail(
                "datastore",
                f"{error.msg} (the lease and IPAM checks did not run)",
                "check --etcd-endpoints and that etcd answers there (etcdctl --endpoints URL endpoint health)",
            )
        ]
    return [ok("datastore", f"etcd at {endpoints} answers (revision {revision})")]


CHECKS = [Check("datastore", check_datastore, "etcd answers at --etcd-endpoints (before the checks that read it)")]
