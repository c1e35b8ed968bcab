"""The CNI config directory itself: files a runtime cannot load, networks named twice."""

from __future__ import annotations

from pycni.doctor.context import Node
from pycni.doctor.model import Check, Finding, fail, listed, ok, warn


def check_cni_config(node: Node) -> list[Finding]:
    directory = node.options.cni_conf_dir
    findings = [
        fail("cni_config", f"{bad.path} {bad.why}", "fix or remove it: the runtime fails or skips this network")
        for bad in node.bad_configs
    ]
    seen: dict[str, list[str]] = {}
    for network in node.networks:
        seen.setdefault(network.name, []).append(network.path)
    for name, files in sorted(seen.items()):
        if len(files) > 1:
            findings.append(
                warn(
                    "cni_config",
                    f"network {name} is named by {len(files)} files: {listed(files)}",
                    f"keep one: runtimes load the first in lexical order ({files[0]}) and ignore the rest",
                )
            )
    if not findings and node.networks:
        findings.append(ok("cni_config", f"{len(node.networks)} network(s) in {directory}: {listed(sorted(seen))}"))
    elif not findings:
        findings.append(
            warn("cni_config", f"no CNI network config in {directory}", "install one (pycni plugins install ...)")
        )
    return findings


CHECKS = [Check("cni_config", check_cni_config, "every file in the CNI config dir loads; no network named twice")]
