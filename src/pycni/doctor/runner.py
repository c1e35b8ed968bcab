"""Run the checks that apply to this node, in order, and render their findings as text or JSON.

A check that breaks (a netlink or nft error, etcd away) becomes a ``fail``
finding naming what broke, never a traceback: the run goes on with the others.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence

from pycni.datastore import Unavailable
from pycni.doctor import calico, cniconf, flannel, host, ipam, nft, store
from pycni.doctor.context import Node, Options
from pycni.doctor.model import Check, Finding, Status, fail

log = logging.getLogger("pycni.doctor")

CHECKS: list[Check] = [
    *cniconf.CHECKS,
    *host.CHECKS,
    *ipam.CHECKS,
    *store.CHECKS,
    *flannel.CHECKS,
    *nft.CHECKS,
    *calico.CHECKS,
]


def run_check(check: Check, node: Node) -> list[Finding]:
    try:
        return check.run(node)
    except Unavailable as error:
        return [fail(check.name, f"the datastore did not answer: {error.msg}", "check --etcd-endpoints and etcd")]
    except Exception as exc:  # one broken check is one finding; the others still run
        log.debug("check %s failed", check.name, exc_info=True)
        return [fail(check.name, f"the check could not run: {type(exc).__name__}: {exc}", "report this to pycni")]


def run(options: Options, checks: Sequence[Check] = CHECKS) -> list[Finding]:
    """Every finding of ``checks`` on the node ``options`` describes (this thread's network namespace)."""
    node = Node(options)
    try:
        return [finding for check in checks for finding in run_check(check, node)]
    finally:
        node.close()


def worst(findings: Iterable[Finding]) -> Status:
    return max((f.status for f in findings), default=Status.OK)


def exit_status(findings: Iterable[Finding]) -> int:
    """0 all ok, 1 any warn, 2 any fail."""
    return int(worst(findings))


def render_text(findings: Iterable[Finding]) -> list[str]:
    """``ok|warn|fail  <check>  <message> -- <advice>``, one line each."""
    lines = []
    for f in findings:
        line = f"{f.status.label:<4}  {f.check}  {' '.join(f.message.split())}"
        if f.advice:
            line += f" -- {' '.join(f.advice.split())}"
        lines.append(line)
    return lines


def render_json(findings: Sequence[Finding]) -> str:
    return json.dumps({"status": worst(findings).label, "findings": [f.to_dict() for f in findings]}, indent=2)
