"""``pycni install --manifest FILE``: put a Flannel or Calico manifest's network on this node, without Kubernetes.

What the manifest's DaemonSet would do on the node, done here: the conflist
written atomically into the CNI config dir (``10-flannel.conflist`` /
``10-calico.conflist``), pycni's executables for every plugin type it names
written into the CNI bin dir (:func:`pycni.cli.install.install`), flanneld's
``net-conf.json`` written where the agent reads it, and the node agent's
command line (``pycni flanneld ...`` / ``pycni calico-node ...`` with the
manifest's settings) printed, or written as a systemd unit with
``--systemd DIR``. Every part of the manifest pycni does not use is one line
``ignored: <kind> <name> (<why>)``. The files written are recorded (with
their sha256) in pycni's install record, so ``pycni reset`` knows them.

``--dry-run`` prints the same and writes nothing. A manifest pycni cannot
use is one line naming the file, the document and the key, and exit 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import socket
import sys
from collections.abc import Sequence

from pycni.fsutil import write_atomic
from pycni.manifests import flannel
from pycni.manifests.documents import ManifestError, load_files
from pycni.manifests.plan import Agent, FileToWrite, Plan, build
from pycni.reset.paths import INSTALLED_RECORD
from pycni.runtime.conf import DEFAULT_CONF_DIR
from pycni.spec.errors import CNIError

DEFAULT_BIN_DIR = "/opt/cni/bin"
DEFAULT_RECORD = INSTALLED_RECORD  # what pycni reset reads
UNIT_NAMES = {"flanneld": "pycni-flanneld.service", "calico-node": "pycni-calico-node.service"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pycni install",
        description="Install the pod network a Flannel or Calico manifest (kube-flannel.yml, calico.yaml, "
        "custom-resources.yaml) describes on this node: the CNI config, pycni's plugin executables, "
        "and the node agent's command line.",
    )
    p.add_argument(
        "--manifest",
        action="append",
        required=True,
        metavar="FILE",
        help="a manifest (YAML, several documents); repeatable, the files are read as one stream",
    )
    p.add_argument("--node", default="", help="this node's name (default: the host name)")
    p.add_argument("--cni-conf-dir", default=DEFAULT_CONF_DIR, help="where the conflist goes (%(default)s)")
    p.add_argument("--cni-bin-dir", default=DEFAULT_BIN_DIR, help="where plugin executables go (%(default)s)")
    p.add_argument(
        "--net-conf-path",
        default=flannel.NET_CONF_PATH,
        help="Flannel: where net-conf.json goes, for flanneld's --net-config-path (%(default)s)",
    )
    p.add_argument(
        "--etcd-endpoints",
        default="",
        help="the agents' and plugins' etcd (comma-separated http:// URLs); default: the embedded store",
    )
    p.add_argument("--systemd", default="", metavar="DIR", help="write a unit for the node agent into DIR")
    p.add_argument("--record", default=DEFAULT_RECORD, help="pycni's record of installed files (%(default)s)")
    p.add_argument("--dry-run", action="store_true", help="print what would be done, write nothing")
    return p


def pycni_program() -> str:
    """The ``pycni`` command for a unit: beside this interpreter, on PATH, or ``python -m pycni.cli.entry``."""
    beside = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "pycni")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("pycni")
    if found:
        return os.path.abspath(found)
    return shlex.join([os.path.abspath(sys.executable), "-m", "pycni.cli.entry"])


def _unit_escape(text: str) -> str:
    """systemd expands ``%`` specifiers and ``$`` variables in ExecStart/Environment: keep them literal."""
    return text.replace("%", "%%").replace("$", "$$")


def render_unit(agent: Agent, program: str, sources: Sequence[str]) -> str:
    lines = [
        "# Written by pycni install --manifest " + " --manifest ".join(sources),
        "[Unit]",
        f"Description=pycni {agent.name} (the pod network's node agent)",
        "Wants=network-online.target",
        "After=network-online.target",
        "Before=kubelet.service containerd.service crio.service",
        "",
        "[Service]",
        "Type=simple",
    ]
    for key, value in agent.env.items():
        quoted = value.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(_unit_escape(f'Environment="{key}={quoted}"'))
    lines += [
        _unit_escape(f"ExecStart={program} {shlex.join(agent.argv)}"),
        "Restart=on-failure",
        "RestartSec=2s",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def _record(path: str, written: Sequence[str]) -> None:
    """Add the files to the install record (``{"version": 1, "files": [{"path", "sha256"}]}``), keeping others."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        data = {}
    entries = data.get("files") if isinstance(data, dict) else None
    keep = [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    absolute = [os.path.abspath(p) for p in written]
    keep = [e for e in keep if e.get("path") not in absolute]
    for file_path in absolute:
        with open(file_path, "rb") as handle:
            keep.append({"path": file_path, "sha256": hashlib.sha256(handle.read()).hexdigest()})
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write_atomic(path, (json.dumps({"version": 1, "files": keep}, indent=2) + "\n").encode(), mode=0o644)


def _shadowing(conflist: FileToWrite) -> list[str]:
    """Config files the runtime would pick before ours (the first file by name wins)."""
    directory, name = os.path.split(conflist.path)
    try:
        others = sorted(os.listdir(directory))
    except OSError:
        return []
    return [
        f"note: {os.path.join(directory, other)} sorts before {name}: runtimes use the first config file"
        for other in others
        if other < name and other.endswith((".conf", ".conflist", ".json"))
    ]


def _replaced(executables: Sequence[str], dry_run: bool) -> list[str]:
    """Executables in the bin dir that are not pycni's (e.g. the Go reference plugins) and will be replaced."""
    from pycni.shim import executable_plugin_type

    notes = []
    for path in executables:
        try:
            with open(path, "rb") as handle:
                head = handle.read(4096)
        except OSError:
            continue  # absent: nothing replaced
        if executable_plugin_type(head) != os.path.basename(path):
            verb = "would replace" if dry_run else "replaced"
            notes.append(f"note: {verb} {path}, which was not pycni's executable")
    return notes


def _write(file: FileToWrite) -> None:
    os.makedirs(os.path.dirname(file.path) or ".", exist_ok=True)
    write_atomic(file.path, file.content.encode(), mode=file.mode)


def apply(plan: Plan, opts: argparse.Namespace, out: list[str]) -> None:
    """Write the plan's files (unless dry run) and say what was and would be done into ``out``."""
    from pycni.cli.install import install

    verb = "would write" if opts.dry_run else "wrote"
    files = [plan.conflist, *plan.files]
    out += _shadowing(plan.conflist)
    unit: FileToWrite | None = None
    if opts.systemd:
        unit = FileToWrite(
            os.path.join(opts.systemd, UNIT_NAMES[plan.agent.name]),
            render_unit(plan.agent, pycni_program(), opts.manifest),
            what="the node agent's systemd unit",
        )
        files.append(unit)
    for file in files:
        if not opts.dry_run:
            _write(file)
        out.append(f"{verb} {file.path} ({file.what})")
    executables = [os.path.join(opts.cni_bin_dir, t) for t in plan.plugin_types]
    out += _replaced(executables, opts.dry_run)
    if not opts.dry_run:
        install(opts.cni_bin_dir, list(plan.plugin_types))
        _record(opts.record, [f.path for f in files])
    out.append(f"{verb} {len(executables)} plugin executables into {opts.cni_bin_dir}: {', '.join(plan.plugin_types)}")
    out += list(plan.notes)
    if unit is not None:
        name = os.path.basename(unit.path)
        out.append(f"start the node agent: systemctl daemon-reload && systemctl enable --now {name}")
    else:
        out.append("start the node agent:")
        out.append("  " + plan.agent.command_line())


def main(argv: list[str]) -> int:
    opts = parser().parse_args(argv)
    for name in ("cni_conf_dir", "cni_bin_dir", "net_conf_path", "record"):
        setattr(opts, name, os.path.abspath(getattr(opts, name)))
    if opts.systemd:
        opts.systemd = os.path.abspath(opts.systemd)
    node = (opts.node or socket.gethostname()).strip().lower()
    out: list[str] = []
    try:
        documents = load_files(opts.manifest)
        plan = build(
            documents,
            node=node,
            cni_conf_dir=opts.cni_conf_dir,
            net_conf_path=opts.net_conf_path,
            etcd_endpoints=opts.etcd_endpoints,
        )
        apply(plan, opts, out)
    except ManifestError as exc:
        print(f"pycni install: {exc}", file=sys.stderr)
        return 1
    except CNIError as exc:
        print(f"pycni install: {exc.msg}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"pycni install: cannot write{where}: {exc.strerror}", file=sys.stderr)
        return 1
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
