"""``pycni doctor``: check this node's networking and say what to do about each problem found (pycni issue 12).

Runs in the network namespace it is started in (``ip netns exec NODE pycni
doctor`` checks a node namespace). One line per finding,
``ok|warn|fail  <check>  <message> -- <advice>``, or ``--json``; the exit
status is 0 when all is ok, 1 on any warning, 2 on any failure. A bad option
is one line on stderr and exit status 1 (argparse's own would be 2, which
here means a failed check).
"""

from __future__ import annotations

import argparse
import sys

from pycni.doctor.context import Options
from pycni.doctor.runner import CHECKS, exit_status, render_json, render_text, run


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: {message}", file=sys.stderr)
        raise SystemExit(1)


def parser() -> argparse.ArgumentParser:
    d = Options()
    checks = "; ".join(f"{c.name}: {c.summary}" for c in CHECKS)
    p = _Parser(
        prog="pycni doctor",
        description="Check this node (this network namespace and the node's CNI paths) for what breaks pods: "
        f"{checks}. Exit status 0 all ok, 1 a warning, 2 a failure.",
    )
    p.add_argument("--json", action="store_true", help="print the findings as one JSON object")
    p.add_argument("--cni-conf-dir", default=d.cni_conf_dir, metavar="DIR", help=f"default {d.cni_conf_dir}")
    p.add_argument("--cni-cache-dir", default=d.cni_cache_dir, metavar="DIR", help=f"default {d.cni_cache_dir}")
    p.add_argument(
        "--host-local-dir",
        default=d.host_local_dir,
        metavar="DIR",
        help=f"host-local's dataDir when a config names none (default {d.host_local_dir})",
    )
    p.add_argument(
        "--subnet-file",
        default=d.subnet_file,
        metavar="PATH",
        help=f"flanneld's subnet file when a flannel config names none (default {d.subnet_file})",
    )
    p.add_argument(
        "--attachments-dir",
        default=d.attachments_dir,
        metavar="DIR",
        help=f"pycni's attachment records of nftables users (default {d.attachments_dir})",
    )
    p.add_argument(
        "--calico-mtu-file",
        default=d.calico_mtu_file,
        metavar="PATH",
        help=f"calico-node's pod MTU file when a calico config names none (default {d.calico_mtu_file})",
    )
    p.add_argument(
        "--etcd-endpoints",
        default=None,
        metavar="URLS",
        help="etcd (comma-separated URLs): enables the datastore checks (Flannel leases, Calico IPAM)",
    )
    p.add_argument(
        "--flannel-prefix", default=d.flannel_prefix, metavar="KEY", help=f"Flannel's etcd prefix ({d.flannel_prefix})"
    )
    p.add_argument("--bird-socket", default=None, metavar="PATH", help="BIRD's control socket: enables the BGP check")
    p.add_argument(
        "--underlay-interface",
        default=None,
        metavar="NAME",
        help="the interface node-to-node traffic leaves by (default: the overlay device's, else the default route's)",
    )
    p.add_argument(
        "--lease-margin",
        type=float,
        default=d.lease_margin,
        metavar="SECONDS",
        help=f"warn when this node's lease expires sooner (default {d.lease_margin:.0f}: flanneld's renew margin)",
    )
    return p


def options_of(opts: argparse.Namespace) -> Options:
    return Options(
        cni_conf_dir=opts.cni_conf_dir,
        cni_cache_dir=opts.cni_cache_dir,
        host_local_dir=opts.host_local_dir,
        subnet_file=opts.subnet_file,
        attachments_dir=opts.attachments_dir,
        calico_mtu_file=opts.calico_mtu_file,
        etcd_endpoints=opts.etcd_endpoints or None,
        flannel_prefix=opts.flannel_prefix,
        bird_socket=opts.bird_socket or None,
        underlay_interface=opts.underlay_interface or None,
        lease_margin=opts.lease_margin,
    )


def main(argv: list[str]) -> int:
    opts = parser().parse_args(argv)
    if opts.lease_margin < 0:
        print("pycni doctor: --lease-margin must not be negative", file=sys.stderr)
        return 1
    findings = run(options_of(opts))
    if opts.json:
        print(render_json(findings))
    else:
        for line in render_text(findings):
            print(line)
    return exit_status(findings)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
