"""Corruption campaign: pycni's on-disk state damaged on purpose, then DEL, GC and ADD (issue 9, part 3).

Run as root from the repository (a full round is the whole matrix below)::

    .venv/bin/python -m tests.campaigns.corruption --rounds 3 --seed 1 --json corruption.json
    .venv/bin/python -m tests.campaigns.corruption --only tuning:directory --seed 1   # one case
    .venv/bin/python -m tests.campaigns.corruption --rounds 50 --budget 600           # at most ~10 min

``make test`` runs a sample of it (``tests/integration/test_corruption_campaign.py``).
Every case is reproducible from ``--seed``, its round and its name; a failure
prints the command that reruns it alone.

Targets (the state files; who reads them):

=================  ===========================================================  ======================
target             file                                                         chain
=================  ===========================================================  ======================
cache              ``$PYCNI_CACHE_DIR/results/<net>-<cid>-<ifname>`` (runtime)  bridge+host-local,
                                                                                tuning, sbr, portmap
tuning             ``<tuning dataDir>/<cid>_<ifname>.json``                     bridge+host-local, tuning
reservation        ``<dataDir>/<net>/<ip>`` of the attachment deleted           bridge+host-local
reservation-live   ``<dataDir>/<net>/<ip>`` of an attachment that stays         bridge+host-local
last-reserved      ``<dataDir>/<net>/last_reserved_ip.<0|1>``                   bridge+host-local
lock               ``<dataDir>/<net>/lock``                                     bridge+host-local
=================  ===========================================================  ======================

The fabric's state: ``store`` (the embedded sqlite store of ``pycni flanneld``
and ``pycni calicoctl``), ``subnet-env`` (flanneld's ``subnet.env``, read by the
flannel plugin) and ``vtep-mac`` (the vxlan backend's MAC file), each on a node
running ``pycni flanneld``, with kinds and checks of their own:
``tests/campaigns/corruption_fabric.py`` says which and why.

sbr keeps no file (Go's neither: its state is the rules in the container);
it is in the ``cache`` chain, where a damaged cache makes every plugin's DEL
run without ``prevResult``.

Kinds: ``empty``; ``truncated`` at a random offset; ``garbage`` (random bytes);
``json-shape`` (valid JSON of another shape); ``wrong-types`` (the real
content with one value replaced by one of another type, or for the text
formats a plausible wrong value: another family's address, the gateway,
another attachment's owner line, a line naming nobody); ``directory`` (holding a copy of the file
and a symlink out of the state directory); ``unreadable`` (mode 000, with the
runtime and plugins run without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH, so the
mode means what it says, as in a user namespace); ``symlink`` to a file
outside every state directory (a copy of the file, garbage, or nothing).
The lock's content is never read, so only ``garbage``, ``directory``,
``unreadable`` and ``symlink`` apply to it.

One case, on a fresh node (a new network namespace as the host, new state
directories, new container namespaces; plugins run with PYCNI_NO_DAEMON=1 and
PYCNI_DEBUG=1 through the ``pycni`` command and wrappers that record every
plugin execution):

1. ADD B (the bystander, which stays) and V (the victim);
2. damage the target file (V's, B's for ``reservation-live``); for the
   per-attachment files (cache, tuning) plant the same damage where N's file
   will go;
3. ADD N, with the damage in place; 4. DEL V; 5. GC keeping B and N;
6. ADD M after GC (reservation targets only: GC leaves the other files as it
   found them); 7. check; 8. ``gc --all``, which DELs every cached
   attachment left and then GCs every plugin with nothing valid; check again.

What "clean up" can mean when the state itself is garbage, and so what is checked:

* DEL and GC exit 0, whatever the damage. No Python traceback anywhere
  (runtime or plugin stderr); every failing plugin prints the spec's error
  object on stdout.
* After DEL V: V's container namespace equals a brand-new namespace (links,
  addresses, routes of every table, rules); the host has no V veth and no nft
  element or rule naming V's container or addresses; no cache file and no
  tuning file of V, whatever was at their paths (a directory is removed, a
  symlink is unlinked, its target never touched); no reservation holding V's
  owner line. The container-wide sysctls tuning changed are back at a new
  namespace's values *where the saved state was readable*: for each entry of
  a ``sysctl`` object of string values in a regular file holding a JSON
  object; nothing can say what to restore from garbage.
* A live attachment's reservation rewritten into a well-formed owner line of
  another attachment is a lie no implementation can detect (GC or that other
  DEL frees the address), and so is any well-formed line (JSON's ``true`` is
  the ID-only reservation of container "true"); ``reservation-live`` applies
  only damage that names nobody, ``reservation`` (the deleted attachment's
  file) applies both.
* A reservation file whose content no longer says whose it is (empty,
  garbage, unreadable, a directory, a symlink: host-local never makes those),
  or that begins a valid attachment's owner line (one cut short), may be a
  live attachment's, so its address stays taken ("kept") until a GC
  told that nothing is valid (``gc --all``) removes it; the table counts these.
  Its address is never handed out twice.
* ADD (N, M) either succeeds with a consistent state or fails with an error
  whose message names a damaged path, and then leaves nothing behind (the
  runtime's DEL after a failed ADD). Consistent: every live attachment's
  addresses distinct, each with a reservation at its path, its cache file and
  tuning file present and decodable.
* Nothing outside the state directories is written, created or removed
  (through a symlink or otherwise): the files the symlinks point to keep
  their bytes, mode and mtime, and a dangling target is never created.
* After ``gc --all``: host links only ``lo`` and the bridge,
  no nft element and no rule naming a container, the results and tuning
  directories empty, the host-local directory holding only ``lock`` and the
  cursors as regular files; every container namespace equals a new one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import ipaddress
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pycni.spec.errors import CNIError
from pycni.spec.validate import validate_container_id, validate_interface_name
from tests.campaigns import corruption_fabric as fabric
from tests.support.netns import NetnsPool, run
from tests.support.progress import progress as show_progress

NETWORK = "ccnet"
BRIDGE = "ccbr0"
SUBNET4, RANGE4 = "10.87.0.0/24", ("10.87.0.2", "10.87.0.9")
SUBNET6, RANGE6 = "fd87::/64", ("fd87::2", "fd87::9")
IFNAME = "eth0"
PLUGIN_TYPES = ("bridge", "host-local", "tuning", "sbr", "portmap", "flannel")
DROP_DAC = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")
STEP_TIMEOUT = 120.0
# What tuning changes that outlives the interface: namespace-wide sysctls (dotted -> value).
CONTAINER_SYSCTLS = {"net.ipv4.conf.all.arp_ignore": "2", "net.core.somaxconn": "1024"}

KINDS = ("empty", "truncated", "garbage", "json-shape", "wrong-types", "directory", "unreadable", "symlink")
PLUGIN_TARGETS = ("cache", "tuning", "reservation", "reservation-live", "last-reserved", "lock")
TARGETS = (*PLUGIN_TARGETS, *fabric.FABRIC_TARGETS)
LOCK_KINDS = ("garbage", "directory", "unreadable", "symlink")
PER_ATTACHMENT = ("cache", "tuning")
AFTER_GC = ("reservation", "reservation-live")  # GC changes these files, so ADD M runs after it

JSON_SHAPES = ("[]", "{}", "null", "0", '"cniCacheV1"', "true", '[{"kind": "cniCacheV1"}]', '{"result": []}')
OTHER_TYPES: tuple[Any, ...] = (None, 0, -1, 2**70, 1.5, "", "x", "10.87.0.3/24", [], [1], {}, {"a": 1}, True)

WRAPPER = """#!{python} -IS
# Records one plugin execution for the corruption campaign, then answers exactly as the plugin did.
import json, os, subprocess, sys, time
stdin = sys.stdin.buffer.read()
started = time.monotonic()
proc = subprocess.run([{real!r}], input=stdin, capture_output=True, check=False)
record = {{
    "type": {plugin_type!r}, "command": os.environ.get("CNI_COMMAND", ""),
    "containerId": os.environ.get("CNI_CONTAINERID", ""), "rc": proc.returncode,
    "stdout": proc.stdout.decode(errors="replace"), "stderr": proc.stderr.decode(errors="replace"),
    "ms": round((time.monotonic() - started) * 1000, 1),
}}
with open({log!r}, "a") as log:
    log.write(json.dumps(record) + "\\n")
sys.stdout.buffer.write(proc.stdout)
sys.stderr.buffer.write(proc.stderr)
sys.exit(proc.returncode)
"""


def chain_for(target: str) -> list[str]:
    if target == "cache":
        return ["bridge", "tuning", "sbr", "portmap"]
    if target == "tuning":
        return ["bridge", "tuning"]
    return ["bridge"]


def kinds_for(target: str) -> tuple[str, ...]:
    if target in fabric.FABRIC_TARGETS:
        return fabric.kinds_for(target)
    return LOCK_KINDS if target == "lock" else KINDS


def matrix(only: list[str] | None = None) -> list[tuple[str, str]]:
    cases = [(target, kind) for target in TARGETS for kind in kinds_for(target)]
    if only:
        wanted = [item.split(":", 1) for item in only]
        cases = [c for c in cases if any(t == c[0] and (not w or w[0] == c[1]) for t, *w in wanted)]
    return cases


# -- observing a node -----------------------------------------------------------------


def _json(ns: str, *cmd: str) -> Any:
    out = run(*cmd, netns=ns).stdout
    return json.loads(out) if out.strip() else []


def namespace_state(ns: str) -> dict[str, list[str]]:
    """What an attachment may leave in a namespace: links, addresses, routes of every table, rules."""
    links = sorted(link["ifname"] for link in _json(ns, "ip", "-j", "link", "show"))
    addrs = sorted(
        f"{entry['ifname']} {a['local']}/{a['prefixlen']}"
        for entry in _json(ns, "ip", "-j", "addr", "show")
        for a in entry.get("addr_info", [])
    )
    routes = sorted(
        json.dumps(r, sort_keys=True)
        for fam in ("-4", "-6")
        for r in _json(ns, "ip", fam, "-j", "route", "show", "table", "all")
    )
    rules = sorted(
        json.dumps(r, sort_keys=True) for fam in ("-4", "-6") for r in _json(ns, "ip", fam, "-j", "rule", "show")
    )
    return {"links": links, "addrs": addrs, "routes": routes, "rules": rules}


def sysctls(ns: str) -> dict[str, str]:
    files = ["/proc/sys/" + key.replace(".", "/") for key in CONTAINER_SYSCTLS]
    values = run("cat", *files, netns=ns).stdout.split("\n")
    return {key: values[i].strip() for i, key in enumerate(CONTAINER_SYSCTLS)}


def nft_objects(ns: str) -> tuple[list[str], list[str]]:
    """Every set/map element (as JSON text) and every rule comment of the namespace's ruleset."""
    out = run("nft", "-j", "list", "ruleset", netns=ns).stdout
    elements: list[str] = []
    comments: list[str] = []
    for obj in json.loads(out).get("nftables", []) if out.strip() else []:
        for kind in ("set", "map"):
            for element in obj.get(kind, {}).get("elem", []):
                elements.append(json.dumps(element, sort_keys=True))
        if "rule" in obj and obj["rule"].get("comment"):
            comments.append(str(obj["rule"]["comment"]))
    return elements, comments


def entry_kind(path: Path) -> str:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return "absent"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "directory"
    return "file" if stat.S_ISREG(mode) else "other"


def listing(directory: Path) -> dict[str, str]:
    try:
        return {name: entry_kind(directory / name) for name in sorted(os.listdir(directory))}
    except FileNotFoundError:
        return {}


def fingerprint(directory: Path) -> dict[str, tuple[int, int, int, str]]:
    """(mode, size, mtime, sha256) of every entry under ``directory``, never following links."""
    found: dict[str, tuple[int, int, int, str]] = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = Path(root, name)
            st = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
            found[str(path.relative_to(directory))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return found


def owner_line(container_id: str, ifname: str = IFNAME) -> str:
    return f"{container_id}\r\n{ifname}"


def names_an_attachment(data: bytes) -> bool:
    """Whether a reservation's content is a well-formed owner line (``ID`` or ``ID\\r\\nIFNAME``, by the spec's rules).

    Such a line is a claim nobody can tell from the truth: JSON's ``true`` is
    a valid container ID, and so a pre-0.7 ID-only reservation of container "true".
    """
    container_id, sep, ifname = data.decode("utf-8", "replace").strip().partition("\r\n")
    try:
        validate_container_id(container_id)
        if sep:
            validate_interface_name(ifname)
    except CNIError:
        return False
    return True


# -- damaging a file ------------------------------------------------------------------------


def _rewrite(path: Path, data: bytes) -> None:
    """Change the bytes in place (same inode), as a crash or a disk fault would."""
    with open(path, "r+b") as handle:
        handle.truncate(0)
        handle.write(data)


def _json_paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from _json_paths(child, (*prefix, key))


def wrong_json(original: bytes, rng: random.Random) -> tuple[bytes, str]:
    """The real JSON with one value (anywhere in it) replaced by one of another type."""
    data = json.loads(original)
    path = rng.choice(list(_json_paths(data)))
    holder = data
    for key in path[:-1]:
        holder = holder[key]
    current = holder[path[-1]]
    replacement = rng.choice([v for v in OTHER_TYPES if type(v) is not type(current)])
    holder[path[-1]] = replacement
    where = "".join(f"[{k!r}]" for k in path)
    return json.dumps(data).encode(), f"{where} = {json.dumps(replacement)}"


@dataclasses.dataclass
class Damage:
    """What was done to one path, for the report and the checks."""

    path: Path
    kind: str
    detail: str
    content: bytes | None  # the bytes left at the path if it is still a regular file
    outside: Path | None = None  # a symlink's target


class Damager:
    """Applies one kind of damage; text formats get their own plausible wrong values."""

    def __init__(self, rng: random.Random, outside: Path) -> None:
        self.rng = rng
        self.outside = outside
        self.count = 0

    def damage(self, path: Path, kind: str, fmt: str, wrong_values: list[str]) -> Damage:
        original = path.read_bytes()
        rng = self.rng
        self.count += 1
        tag = f"{self.count}-{path.name.replace(':', '_')}"
        if kind == "empty":
            _rewrite(path, b"")
            return Damage(path, kind, "emptied", b"")
        if kind == "truncated":
            offset = rng.randrange(1, len(original)) if len(original) > 1 else 0
            _rewrite(path, original[:offset])
            return Damage(path, kind, f"cut at byte {offset} of {len(original)}", original[:offset])
        if kind == "garbage":
            data = rng.randbytes(rng.randint(1, 512))
            while fmt == "owner-live" and names_an_attachment(data):
                data = rng.randbytes(rng.randint(1, 512))
            _rewrite(path, data)
            return Damage(path, kind, f"{len(data)} random bytes", data)
        if kind == "json-shape":
            shapes = [t for t in JSON_SHAPES if fmt != "owner-live" or not names_an_attachment(t.encode())]
            text = rng.choice(shapes).encode()
            _rewrite(path, text)
            return Damage(path, kind, text.decode(), text)
        if kind == "wrong-types":
            if fmt == "json":
                data, detail = wrong_json(original, rng)
            else:
                value = rng.choice(wrong_values)
                data, detail = value.encode(), repr(value)
            _rewrite(path, data)
            return Damage(path, kind, detail, data)
        if kind == "directory":
            canary = self._outside_file(f"dir-{tag}", b"canary: must survive\n")
            path.unlink()
            path.mkdir()
            (path / "copy").write_bytes(original)
            (path / "out").symlink_to(canary)
            return Damage(path, kind, "directory holding a copy and a symlink out", None, canary)
        if kind == "unreadable":
            path.chmod(0)
            return Damage(path, kind, "mode 000", None)
        if kind == "symlink":
            variant = rng.choice(("copy", "garbage", "dangling"))
            target = self.outside / f"link-{tag}"
            if variant == "copy":
                self._outside_file(target.name, original)
            elif variant == "garbage":
                self._outside_file(target.name, rng.randbytes(64))
            path.unlink()
            path.symlink_to(target)
            return Damage(path, kind, f"symlink to {variant} outside", None, target)
        raise ValueError(f"unknown kind {kind}")

    def _outside_file(self, name: str, data: bytes) -> Path:
        path = self.outside / name
        path.write_bytes(data)
        return path


# -- one node ----------------------------------------------------------------------------


@dataclasses.dataclass
class Step:
    name: str
    rc: int
    stdout: str
    stderr: str
    calls: list[dict[str, Any]]
    seconds: float


@dataclasses.dataclass
class Pod:
    label: str
    netns: str
    port: int
    result: dict[str, Any] | None = None

    @property
    def path(self) -> str:
        return f"/run/netns/{self.netns}"

    @property
    def container_id(self) -> str:
        # cnitool's derivation (pycni.cli.main.container_id_for), so DEL finds the same ID
        return "cnitool-" + hashlib.sha512(self.path.encode()).digest()[:10].hex()

    @property
    def ips(self) -> list[str]:
        return [ip["address"].split("/")[0] for ip in (self.result or {}).get("ips", [])]

    @property
    def host_veth(self) -> str | None:
        for iface in (self.result or {}).get("interfaces", []):
            if iface.get("name", "").startswith("veth") and not iface.get("sandbox"):
                return str(iface["name"])
        return None


class Node:
    """A fresh host namespace with its own state directories and one network."""

    def __init__(self, campaign: Campaign, pool: NetnsPool, workdir: Path, target: str) -> None:
        self.campaign = campaign
        self.pool = pool
        self.dir = workdir
        self.host = pool.new("host")
        self.cache = workdir / "cache"
        self.data_dir = workdir / "host-local"
        self.tuning_dir = workdir / "tuning"
        self.conf_dir = workdir / "net.d"
        self.outside = workdir / "outside"
        for directory in (self.conf_dir, self.outside):
            directory.mkdir(parents=True)
        self.write_conflist(chain_for(target))

    @property
    def hl_dir(self) -> Path:
        return self.data_dir / NETWORK

    def write_conflist(self, chain: list[str]) -> None:
        ranges = [[{"subnet": SUBNET4, "rangeStart": RANGE4[0], "rangeEnd": RANGE4[1]}]]
        ranges.append([{"subnet": SUBNET6, "rangeStart": RANGE6[0], "rangeEnd": RANGE6[1]}])
        plugins: dict[str, dict[str, Any]] = {
            "bridge": {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "ipam": {"type": "host-local", "ranges": ranges, "dataDir": str(self.data_dir)},
            },
            "tuning": {
                "type": "tuning",
                "mtu": 1400,
                "promisc": True,
                "sysctl": {**CONTAINER_SYSCTLS, "net.ipv4.conf.IFNAME.log_martians": "1"},
                "dataDir": str(self.tuning_dir),
            },
            "sbr": {"type": "sbr"},
            "portmap": {"type": "portmap", "capabilities": {"portMappings": True}},
        }
        conflist = {"cniVersion": "1.1.0", "name": NETWORK, "plugins": [plugins[p] for p in chain]}
        (self.conf_dir / f"{NETWORK}.conflist").write_text(json.dumps(conflist))

    def pod(self, label: str, port: int) -> Pod:
        return Pod(label, self.pool.new(f"ctr{label.lower()}"), port)

    def pycni(self, name: str, *argv: str, pod: Pod | None = None) -> Step:
        """One ``pycni`` command in the host namespace, without DAC override, recording plugin calls."""
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "NETCONFPATH": str(self.conf_dir),
            "CNI_PATH": str(self.campaign.wrappers),
            "PYCNI_CACHE_DIR": str(self.cache),
            "PYCNI_NO_DAEMON": "1",
            "PYCNI_DEBUG": "1",
        }
        if pod is not None:
            mapping = {"hostPort": pod.port, "containerPort": 80, "protocol": "tcp"}
            env["CAP_ARGS"] = json.dumps({"portMappings": [mapping]})
        log = self.campaign.log
        log.write_text("")
        command = ["ip", "netns", "exec", self.host, *DROP_DAC, self.campaign.pycni, *argv]
        started = time.monotonic()
        try:
            proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT, check=False)
            rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            rc, stdout, stderr = -1, str(exc.stdout or ""), f"timed out after {STEP_TIMEOUT} s"
        calls = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        return Step(name, rc, stdout, stderr, calls, time.monotonic() - started)

    def add(self, pod: Pod) -> Step:
        step = self.pycni(f"ADD {pod.label}", "add", NETWORK, pod.path, pod=pod)
        if step.rc == 0:
            pod.result = json.loads(step.stdout)
        return step

    def delete(self, pod: Pod) -> Step:
        return self.pycni(f"DEL {pod.label}", "del", NETWORK, pod.path, pod=pod)

    def gc(self, keep: list[Pod] | None) -> Step:
        if keep is None:
            return self.pycni("GC --all", "gc", NETWORK, "--all")
        flags = [f"--keep={pod.container_id}/{IFNAME}" for pod in keep]
        return self.pycni("GC", "gc", NETWORK, *flags)

    # state paths
    def cache_file(self, pod: Pod) -> Path:
        return self.cache / "results" / f"{NETWORK}-{pod.container_id}-{IFNAME}"

    def tuning_file(self, pod: Pod) -> Path:
        return self.tuning_dir / f"{pod.container_id}_{IFNAME}.json"

    def reservation(self, ip: str) -> Path:
        return self.hl_dir / str(ipaddress.ip_address(ip))


# -- one case --------------------------------------------------------------------------------


@dataclasses.dataclass
class CaseReport:
    target: str
    kind: str
    round: int
    seed: int
    damage: list[str] = dataclasses.field(default_factory=list)
    add_n: str = ""  # "ok" | "refused" | "" (not reached)
    add_m: str = ""
    kept: list[str] = dataclasses.field(default_factory=list)  # damaged reservations GC kept (unattributable)
    restored: str = ""  # V's container-wide sysctls back at a new namespace's values: "yes" | "partly" | "no"
    phases: dict[str, str] = dataclasses.field(default_factory=dict)  # fabric targets: phase -> outcome
    failures: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    plugin_calls: int = 0

    @property
    def name(self) -> str:
        return f"{self.target}:{self.kind}"


class Case:
    def __init__(self, campaign: Campaign, target: str, kind: str, round_no: int) -> None:
        self.campaign = campaign
        self.target = target
        self.kind = kind
        self.report = CaseReport(target, kind, round_no, campaign.seed)
        self.rng = random.Random(f"{campaign.seed}:{round_no}:{target}:{kind}")
        self.damaged: list[Damage] = []

    # -- bookkeeping

    def fail(self, message: str) -> None:
        self.report.failures.append(message)

    def expect(self, condition: bool, message: str) -> bool:
        if not condition:
            self.fail(message)
        return condition

    def step(self, step: Step, must_succeed: bool) -> Step:
        """The rules every command and plugin execution obeys, whatever the damage."""
        self.report.plugin_calls += len(step.calls)
        if "Traceback" in step.stderr:
            self.fail(f"{step.name}: traceback from pycni: {step.stderr.strip()[-600:]}")
        if step.rc == -1:
            self.fail(f"{step.name}: {step.stderr}")
        for call in step.calls:
            where = f"{step.name}: {call['type']} {call['command']}"
            if "Traceback" in call["stderr"]:
                self.fail(f"{where}: traceback: {call['stderr'].strip()[-600:]}")
            if call["rc"] != 0:
                try:
                    error = json.loads(call["stdout"])
                    well_formed = isinstance(error, dict) and isinstance(error.get("code"), int) and "msg" in error
                except ValueError:
                    well_formed = False
                if not well_formed:
                    self.fail(f"{where}: exit {call['rc']} without the spec's error object: {call['stdout']!r}")
        if must_succeed and step.rc != 0:
            self.fail(f"{step.name}: exit {step.rc}: {step.stderr.strip()[-600:]}")
        return step

    # -- the sequence

    def run(self) -> CaseReport:
        started = time.monotonic()
        workdir = Path(tempfile.mkdtemp(prefix=f"{self.target}-{self.kind}-", dir=self.campaign.workdir))
        pool = NetnsPool(prefix=f"pcc{uuid.uuid4().hex[:4]}")
        try:
            self._run(Node(self.campaign, pool, workdir, self.target), pool)
        except Exception as exc:  # noqa: BLE001 - a harness fault is reported as the case's failure
            self.fail(f"campaign harness: {type(exc).__name__}: {exc}")
        finally:
            pool.cleanup()
            _force_rmtree(workdir)
            self.report.seconds = round(time.monotonic() - started, 2)
        return self.report

    def _run(self, node: Node, pool: NetnsPool) -> None:
        fresh_ns = pool.new("fresh")
        fresh, fresh_sysctls = namespace_state(fresh_ns), sysctls(fresh_ns)
        b, v, n, m = (node.pod(label, port) for label, port in (("B", 8081), ("V", 8082), ("N", 8083), ("M", 8084)))
        for pod in (b, v):
            if self.step(node.add(pod), must_succeed=True).rc != 0:
                return
        self.damaged = self.apply_damage(node, b, v, n)
        self.report.damage = [f"{d.path.relative_to(node.dir)}: {d.kind} ({d.detail})" for d in self.damaged]
        outside_before = fingerprint(node.outside)

        self.report.add_n = self.add_new(node, n, fresh)
        self.step(node.delete(v), must_succeed=True)
        self.step(node.gc([b, *([n] if n.result else [])]), must_succeed=True)
        if self.target in AFTER_GC:
            self.report.add_m = self.add_new(node, m, fresh)
        live = [pod for pod in (b, n, m) if pod.result]
        self.check_gone(node, v, fresh, fresh_sysctls)
        self.check_live(node, live)
        reservations = [d.path for d in self.damaged if self.target.startswith("reservation")]
        self.report.kept = sorted(path.name for path in reservations if os.path.lexists(path))

        self.step(node.gc(None), must_succeed=True)  # DELs B, N and M through their cache files
        self.check_fresh(node, [b, v, n, m], fresh)
        self.expect(fingerprint(node.outside) == outside_before, "something outside the state directories changed")

    def apply_damage(self, node: Node, b: Pod, v: Pod, n: Pod) -> list[Damage]:
        damager = Damager(self.rng, node.outside)
        target, kind = self.target, self.kind
        if target in PER_ATTACHMENT:
            own = node.cache_file(v) if target == "cache" else node.tuning_file(v)
            planted = node.cache_file(n) if target == "cache" else node.tuning_file(n)
            planted.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(own, planted)
            return [damager.damage(own, kind, "json", []), damager.damage(planted, kind, "json", [])]
        if target in ("reservation", "reservation-live"):
            owner, other = (v, b) if target == "reservation" else (b, v)
            ip = self.rng.choice(owner.ips)
            wrong = [  # owner lines that name no attachment
                f"{IFNAME}\r\n{owner.container_id}",
                f"{owner.container_id}\r\n",
                f"{owner.container_id}\r\n{IFNAME}\r\nextra",
                f"{owner.container_id} \r\n{IFNAME}",
                "\r\n",
            ]
            if target == "reservation":  # well-formed lines naming someone else: a lie about a live one is undetectable
                wrong += [
                    IFNAME,
                    "12345",
                    str(ip),
                    owner_line(other.container_id),
                    owner_line(owner.container_id.upper()),
                ]
            fmt = "owner" if target == "reservation" else "owner-live"
            return [damager.damage(node.reservation(ip), kind, fmt, wrong)]
        if target == "last-reserved":
            index = self.rng.randrange(2)
            wrong = (
                [
                    "fd87::5",
                    "10.87.1.5",
                    "10.87.0.1",
                    "10.87.0.0/24",
                    "10.87.0.999",
                    " 10.87.0.3 \n",
                    "::ffff:10.87.0.3",
                ]
                if index == 0
                else ["10.87.0.5", "fd88::5", "fd87::1", "fd87::/64", "fd87::g", "fd87::ffff:ffff:ffff:ffff", "::"]
            )
            return [damager.damage(node.hl_dir / f"last_reserved_ip.{index}", kind, "ip", wrong)]
        if target == "lock":
            return [damager.damage(node.hl_dir / "lock", kind, "lock", [])]
        raise ValueError(f"unknown target {target}")

    def add_new(self, node: Node, pod: Pod, fresh: dict[str, list[str]]) -> str:
        """ADD a new container: success, or an error naming a damaged path that left nothing behind."""
        step = self.step(node.add(pod), must_succeed=False)
        if step.rc == 0:
            return "ok"
        named = any(str(d.path) in step.stderr for d in self.damaged)
        failing = [c for c in step.calls if c["rc"] != 0]
        if failing:  # a plugin refused: its own message must name the file
            msg = str(_error_of(failing[-1]).get("msg", ""))
            named = any(str(d.path) in msg for d in self.damaged)
        self.expect(named, f"{step.name} failed without naming a damaged file: {step.stderr.strip()[-400:]}")
        self.check_gone(node, pod, fresh, None)
        return "refused"

    # -- checks

    def check_gone(
        self, node: Node, pod: Pod, fresh: dict[str, list[str]], fresh_sysctls: dict[str, str] | None
    ) -> None:
        label = pod.label
        self.compare_namespace(pod, fresh)
        if pod.host_veth:
            self.expect(pod.host_veth not in _links(node.host), f"{label}'s host veth {pod.host_veth} is left")
        elements, comments = nft_objects(node.host)
        marks = [pod.container_id, *pod.ips]
        left = [e for e in elements if any(json.dumps(mark) in e or mark in e for mark in marks)]
        left += [c for c in comments if pod.container_id in c]
        self.expect(not left, f"nft objects of {label} are left: {left}")
        for path in (node.cache_file(pod), node.tuning_file(pod)):
            self.expect(not os.path.lexists(path), f"{label}'s {path.relative_to(node.dir)} is left")
        damaged = {d.path for d in self.damaged}
        for name, kind in listing(node.hl_dir).items():
            path = node.hl_dir / name
            if path in damaged or kind != "file":
                continue  # a damaged reservation may be kept (module docstring); counted as "kept"
            if path.read_bytes().strip() == owner_line(pod.container_id).encode():
                self.fail(f"{label}'s reservation {name} is left")
        if fresh_sysctls is not None and "tuning" in chain_for(self.target):
            self.check_restored(pod, fresh_sysctls)

    def check_restored(self, pod: Pod, fresh_sysctls: dict[str, str]) -> None:
        """Sysctls are back where the saved state could be read (see the module docstring)."""
        current = sysctls(pod.netns)
        expected = set(CONTAINER_SYSCTLS)
        damaged = next((d for d in self.damaged if d.path.name.startswith(pod.container_id)), None)
        if damaged is not None:
            expected = self._readable_sysctls(damaged)
        back = {key for key in CONTAINER_SYSCTLS if current[key] == fresh_sysctls[key]}
        missing = expected - back
        self.expect(not missing, f"{pod.label}'s sysctls {sorted(missing)} not restored from readable state")
        self.report.restored = "yes" if back == set(CONTAINER_SYSCTLS) else "partly" if back else "no"

    @staticmethod
    def _readable_sysctls(damage: Damage) -> set[str]:
        if damage.content is None:
            return set()
        try:
            data = json.loads(damage.content)
        except (ValueError, UnicodeDecodeError):
            return set()
        table = data.get("sysctl") if isinstance(data, dict) else None
        if not isinstance(table, dict):
            return set()
        return {key for key in CONTAINER_SYSCTLS if isinstance(table.get(key.replace(".", "/")), str)}

    def check_live(self, node: Node, live: list[Pod]) -> None:
        """Every live attachment whole and alone on its addresses."""
        owners: dict[str, str] = {}
        damaged = {d.path for d in self.damaged}
        for pod in live:
            for ip in pod.ips:
                other = owners.setdefault(ip, pod.label)
                self.expect(other == pod.label, f"address {ip} handed to both {other} and {pod.label}")
                path = node.reservation(ip)
                if path in damaged:
                    self.expect(os.path.lexists(path), f"{pod.label}'s damaged reservation {ip} was removed while live")
                    continue
                ok = entry_kind(path) == "file" and path.read_bytes() == owner_line(pod.container_id).encode()
                self.expect(ok, f"{pod.label}'s reservation {ip} is missing or not its own")
            if node.cache_file(pod) not in damaged:
                self.expect(_decodes(node.cache_file(pod)), f"{pod.label}'s cache file is missing or undecodable")
            if "tuning" in chain_for(self.target) and node.tuning_file(pod) not in damaged:
                self.expect(_decodes(node.tuning_file(pod)), f"{pod.label}'s tuning file is missing or undecodable")
            if pod.host_veth:
                self.expect(pod.host_veth in _links(node.host), f"{pod.label}'s host veth is gone")

    def check_fresh(self, node: Node, pods: list[Pod], fresh: dict[str, list[str]]) -> None:
        """After every DEL and ``gc --all``: the node as a new one, but for the network's bridge."""
        links = set(_links(node.host))
        self.expect(links <= {"lo", BRIDGE}, f"host links left: {sorted(links - {'lo', BRIDGE})}")
        elements, comments = nft_objects(node.host)
        self.expect(not elements, f"nft elements left: {elements}")
        self.expect(not [c for c in comments if "cnitool-" in c], f"nft rules naming a container left: {comments}")
        self.expect(not listing(node.cache / "results"), f"cache files left: {listing(node.cache / 'results')}")
        self.expect(not listing(node.tuning_dir), f"tuning files left: {listing(node.tuning_dir)}")
        allowed = {"lock", "last_reserved_ip.0", "last_reserved_ip.1"}
        left = {name: kind for name, kind in listing(node.hl_dir).items() if name not in allowed or kind != "file"}
        self.expect(not left, f"host-local entries left: {left}")
        for pod in pods:
            self.compare_namespace(pod, fresh)

    def compare_namespace(self, pod: Pod, fresh: dict[str, list[str]]) -> None:
        state = namespace_state(pod.netns)
        for key, value in state.items():
            extra = sorted(set(value) - set(fresh[key]))
            missing = sorted(set(fresh[key]) - set(value))
            if extra or missing:
                self.fail(f"{pod.label}'s namespace differs from a new one in {key}: extra {extra}, missing {missing}")


def _error_of(call: dict[str, Any]) -> dict[str, Any]:
    try:
        error = json.loads(call["stdout"])
    except ValueError:
        return {}
    return error if isinstance(error, dict) else {}


def _links(ns: str) -> list[str]:
    return [link["ifname"] for link in _json(ns, "ip", "-j", "link", "show")]


def _decodes(path: Path) -> bool:
    if entry_kind(path) != "file":
        return False
    try:
        return isinstance(json.loads(path.read_bytes()), dict)
    except ValueError:
        return False


def _force_rmtree(path: Path) -> None:
    """Remove a case's directory even where a case left mode 000 (we run with full capabilities)."""
    shutil.rmtree(path, ignore_errors=True)


# -- the campaign ---------------------------------------------------------------------------


class Campaign:
    def __init__(self, seed: int, pycni: str | None = None) -> None:
        self.seed = seed
        self.pycni = pycni or shutil.which("pycni", path=os.path.dirname(sys.executable)) or "pycni"
        self.workdir = Path(tempfile.mkdtemp(prefix="pycni-corruption-"))
        self.log = self.workdir / "plugin-calls.jsonl"
        self.wrappers = self.workdir / "bin"
        self._install()

    def _install(self) -> None:
        from pycni.cli.install import install

        real = self.workdir / "real-bin"
        install(str(real), list(PLUGIN_TYPES))
        self.wrappers.mkdir()
        for plugin_type in PLUGIN_TYPES:
            path = self.wrappers / plugin_type
            text = WRAPPER.format(
                python=os.path.abspath(sys.executable),
                real=str(real / plugin_type),
                plugin_type=plugin_type,
                log=str(self.log),
            )
            path.write_text(text)
            path.chmod(0o755)

    def close(self) -> None:
        _force_rmtree(self.workdir)


def run_campaign(
    rounds: int,
    seed: int,
    only: list[str] | None = None,
    sample: int = 0,
    progress: bool = False,
    first_round: int = 1,
    budget: float = 0.0,
) -> dict[str, Any]:
    """Run rounds ``first_round`` to ``rounds`` of the matrix (or ``sample`` random cases of each).

    Each case's randomness depends only on the seed, its round and its name,
    so one case of a later round reruns alone with ``--first-round``. With a
    ``budget`` (seconds), no case starts once it is spent.
    """
    started = time.monotonic()
    campaign = Campaign(seed)
    reports: list[CaseReport] = []
    skipped = 0
    per_round = min(sample, len(matrix(only))) if sample else len(matrix(only))
    total = per_round * max(0, rounds - first_round + 1)
    try:
        # Cases skipped over the budget do not count: the last line then says where the campaign ended.
        with show_progress("corruption campaign", total=total, unit="case", enabled=progress) as bar:
            for round_no in range(first_round, rounds + 1):
                cases = matrix(only)
                if sample:
                    cases = random.Random(f"{seed}:{round_no}:sample").sample(cases, min(sample, len(cases)))
                for target, kind in cases:
                    if budget and time.monotonic() - started > budget:
                        skipped += 1
                        continue
                    report = run_case(campaign, target, kind, round_no)
                    reports.append(report)
                    verdict = "FAIL" if report.failures else "ok"
                    bar.advance(detail=f"round {round_no} {report.name} {verdict}")
                    if report.failures:  # the whole line and the failures: what a log is read for
                        bar.note(f"round {round_no} {report.name:28} {verdict:4} {report.seconds:6.1f} s")
                        for failure in report.failures:
                            bar.note(f"    {failure}")
    finally:
        campaign.close()
    return {
        "campaign": "corruption",
        "seed": seed,
        "rounds": rounds,
        "sample": sample,
        "only": only or [],
        "seconds": round(time.monotonic() - started, 1),
        "skipped_over_budget": skipped,
        "summary": summarize(reports),
        "cases": [dataclasses.asdict(r) | {"name": r.name} for r in reports],
        "failed": [f"{r.name} (round {r.round})" for r in reports if r.failures],
        "rerun": [rerun_command(r) for r in reports if r.failures],
    }


def run_case(campaign: Campaign, target: str, kind: str, round_no: int) -> CaseReport:
    if target not in fabric.FABRIC_TARGETS:
        return Case(campaign, target, kind, round_no).run()
    report = CaseReport(target, kind, round_no, campaign.seed)
    rng = random.Random(f"{campaign.seed}:{round_no}:{target}:{kind}")
    started = time.monotonic()
    fabric.FabricCase(campaign, report, rng).run()
    report.seconds = round(time.monotonic() - started, 2)
    return report


def rerun_command(report: CaseReport) -> str:
    return (
        f".venv/bin/python -m tests.campaigns.corruption --only {report.name} "
        f"--seed {report.seed} --rounds {report.round} --first-round {report.round}"
    )


def summarize(reports: list[CaseReport]) -> dict[str, dict[str, dict[str, int]]]:
    table: dict[str, dict[str, dict[str, int]]] = {}
    for r in reports:
        row = table.setdefault(r.target, {}).setdefault(
            r.kind, {"cases": 0, "failed": 0, "add_ok": 0, "add_refused": 0, "kept": 0, "plugin_calls": 0}
        )
        for phase, outcome in r.phases.items():
            for word in outcome.split("/"):
                key = f"{phase}:{word}"
                row[key] = row.get(key, 0) + 1
        row["cases"] += 1
        row["failed"] += bool(r.failures)
        row["add_ok"] += (r.add_n == "ok") + (r.add_m == "ok")
        row["add_refused"] += (r.add_n == "refused") + (r.add_m == "refused")
        row["kept"] += bool(r.kept)
        row["plugin_calls"] += r.plugin_calls
    return table


def render_table(report: dict[str, Any]) -> str:
    lines = [
        "| target | kind | cases | failed | ADD ok | ADD refused (names file) | damaged reservation kept |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    fabric_rows = []
    for target, kinds in report["summary"].items():
        for kind, row in kinds.items():
            if target in fabric.FABRIC_TARGETS:
                fabric_rows.append((target, kind, row))
                continue
            lines.append(
                f"| {target} | {kind} | {row['cases']} | {row['failed']} | {row['add_ok']} | "
                f"{row['add_refused']} | {row['kept']} |"
            )
    if fabric_rows:
        lines = lines if len(lines) > 2 else []
        lines += [
            *([""] if lines else []),
            "| target | kind | cases | failed | phases healed | phases refused (exit 1, one line naming the file) "
            "| outcomes by phase |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for target, kind, row in fabric_rows:
            phases = {key: count for key, count in row.items() if ":" in key}
            healed = sum(c for k, c in phases.items() if k.split(":")[1] in fabric.HEALED)
            refused = sum(c for k, c in phases.items() if k.split(":")[1] == "refused")
            detail = ", ".join(f"{key} {count}" for key, count in sorted(phases.items()))
            lines.append(f"| {target} | {kind} | {row['cases']} | {row['failed']} | {healed} | {refused} | {detail} |")
    cases = len(report["cases"])
    calls = sum(c["plugin_calls"] for c in report["cases"])
    lines.append(f"\n{cases} cases, {calls} plugin executions, {len(report['failed'])} failed, {report['seconds']} s")
    if report["skipped_over_budget"]:
        lines.append(f"{report['skipped_over_budget']} cases not started: over the --budget")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.campaigns.corruption", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="times the whole matrix runs (default 1)")
    parser.add_argument("--first-round", type=int, default=1, help="start at this round (to rerun one case)")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="random seed (default: the time)")
    parser.add_argument("--only", action="append", metavar="TARGET[:KIND]", help="only these cases (repeatable)")
    parser.add_argument("--sample", type=int, default=0, help="this many random cases per round instead of all")
    parser.add_argument("--budget", type=float, default=0, help="start no case after this many seconds (0: no limit)")
    parser.add_argument("--json", metavar="FILE", help="write the full report here")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    opts = parser.parse_args(argv)
    if opts.list:
        print("\n".join(f"{t}:{k}" for t, k in matrix(opts.only)))
        return 0
    if os.geteuid() != 0:
        print("the corruption campaign needs root (network namespaces)", file=sys.stderr)
        return 2
    print(f"corruption campaign: seed {opts.seed}", file=sys.stderr)
    report = run_campaign(
        opts.rounds, opts.seed, opts.only, opts.sample, progress=True, first_round=opts.first_round, budget=opts.budget
    )
    report["command"] = " ".join(
        ["python -m tests.campaigns.corruption", *(argv if argv is not None else sys.argv[1:])]
    )
    if opts.json:
        Path(opts.json).write_text(json.dumps(report, indent=1) + "\n")
    print(render_table(report))
    for command in report["rerun"]:
        print(f"rerun: {command}")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
