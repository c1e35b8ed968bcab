"""``calicoctl`` without an interpreter start per call: a helper process in etcd's namespace.

Tests and benchmarks that change the datastore many times (the conformance
matrix applies a policy per step, the policy benchmark hundreds) would spend
most of their CPU starting ``pycni calicoctl`` (~0.4 s of imports each). The
helper runs calicoctl's own ``main`` for each request, in-process, against the
cluster's etcd: the same parsing, validation and writes a user's command does.
``put`` writes straight to the store as ``calicoctl apply`` stores objects
(bulk data for a benchmark).
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from tests.support.calico_cluster import ETCD_URL, CalicoCluster

APPLIER = """
import contextlib, json, sys, tempfile, time
from pycni.cli.calicoctl import main
from pycni.datastore import open_datastore
from pycni.fabric.calico.model import decode_resource
from pycni.fabric.calico.resources import KubernetesObjectClient, ResourceClient, kubernetes_object
store = open_datastore(sys.argv[1])
resources, kubernetes = ResourceClient(store), KubernetesObjectClient(store)
for line in sys.stdin:
    command = json.loads(line)
    started = time.monotonic()
    if command["op"] == "put":  # bulk, straight to the store as calicoctl apply stores it
        for document in command["documents"]:
            obj = kubernetes_object(document)
            if obj is not None:
                kubernetes.apply(obj)
            else:
                resources.apply(decode_resource(document))
        code = 0
    else:  # apply or delete through calicoctl's own code
        with tempfile.NamedTemporaryFile("w", suffix=".json") as manifest:
            manifest.write("\\n---\\n".join(json.dumps(d) for d in command["documents"]))
            manifest.flush()
            with contextlib.redirect_stdout(sys.stderr):
                code = main([command["op"], "-f", manifest.name])
    print(json.dumps({"code": code, "seconds": time.monotonic() - started}), flush=True)
"""


class Applier:
    """A Python process in etcd's namespace that runs calicoctl commands on request."""

    def __init__(self, cluster: CalicoCluster) -> None:
        python = os.path.join(os.path.dirname(cluster.pycni_bin), "python")
        argv = ["ip", "netns", "exec", cluster.underlay, python, "-c", APPLIER, ETCD_URL]
        self.log = cluster.tmp / "applier.log"
        with self.log.open("w") as errors:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True, env=self.environment()
            )

    @staticmethod
    def environment() -> dict[str, str]:
        """calicoctl's datastore: this etcd (never the machine's default embedded store)."""
        return {**os.environ, "DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": ETCD_URL}

    def send(self, op: str, documents: list[dict[str, Any]]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, "documents": documents}) + "\n")
        self.process.stdin.flush()

    def wait(self) -> float:
        assert self.process.stdout is not None
        reply = json.loads(self.process.stdout.readline() or '{"code": -1}')
        assert reply["code"] == 0, f"the applier failed: {reply}\n{self.log.read_text()[-3000:]}"
        return float(reply["seconds"])

    def __call__(self, op: str, documents: list[dict[str, Any]]) -> float:
        self.send(op, documents)
        return self.wait()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)
