"""The fabric's state in the corruption campaign: the embedded store, ``subnet.env``, the VTEP MAC file.

Part of ``tests/campaigns/corruption.py`` (its ``--only``, ``--rounds``,
``--seed``, ``--json`` and ``--budget`` apply); this module holds the three
fabric targets. Every case runs on a fresh node: a new network namespace with
an ``eth0`` (a veth whose peer stays in the namespace, 198.51.100.10/24), new
directories, ``pycni flanneld`` on the embedded store with the vxlan backend
(``--store-path``, ``--net-config-path``, ``--subnet-file``, ``--state-dir``,
resync 1 s), run like the plugins without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH.
The store is seeded with the network config and a peer's lease (a reservation
of 10.86.99.0/24 at 198.51.100.99, so its route is on the node to be seen).

``store`` (the sqlite file; kinds: empty, truncated, garbage, foreign-schema,
newer-schema, wal-garbage, wal-stale, wal-foreign, journal-garbage, directory,
unreadable, symlink, read-only, locked), in four phases:

1. *start*: damaged before the agent's first start;
2. *running*: damaged under a running agent (the kinds that make sense on a
   live file; not the schema or WAL ones), for 3 s, then put right (a
   consistent copy taken before moved back, the mode restored, the lock let go);
3. *restart*: damaged again with the agent stopped, the node's device, routes
   and ``subnet.env`` still there from its last run;
4. *calicoctl*: damaged again, ``pycni calicoctl --store PATH get ippools``
   and ``apply -f`` an IPPool.

What a start must do, and what is decided (``pycni.datastore.sqlite``,
``sqlite_file``): *heal* where nothing can be lost: an empty file is a new
store (it held nothing), a garbage ``-wal`` or ``-journal`` beside a good file
is ignored by sqlite and nothing is lost, a lock held by another process is
waited for (logged, naming the file); otherwise *refuse*: exit 1 with one
error line naming the file and what to do, the file (and its ``-wal``) left
byte for byte as it was. A garbage, truncated, foreign or newer file is never
replaced by an empty store: that would silently drop every lease, the way an
etcd member never wipes a data directory it cannot read and Flannel and Calico
users restore or reset their etcd by hand. A stale or foreign ``-wal`` (which
sqlite would replay, rolling the store back or swapping its content) is refused
too. After a healed start the store still holds the peer's lease (but for an
empty file). While running, the agent keeps its dataplane (device, MAC, the
peer's route, ``subnet.env``) and reports a problem naming the file, as for an
etcd outage; once the file is put right it follows the store again (a new
peer's lease written then is programmed). calicoctl: exit 0, or exit 1 with
one line naming the file; never a traceback; a read-only file still serves
``get``.

``subnet-env`` (kinds: empty, truncated, garbage, missing-key, bad-value
(``FLANNEL_MTU=abc``, ``FLANNEL_IPMASQ=maybe``, a subnet outside the network,
...), non-utf8, crlf, duplicate (a key twice, other values), directory,
unreadable, symlink), through the flannel plugin (delegating to bridge +
host-local) with the agent stopped: pods B and V added; the file damaged;
ADD N either succeeds with the lease's subnet (CRLF: Go's reader accepts it,
so does pycni's) or fails with code 5 or 7 naming the file, leaving nothing;
DEL V and GC (keeping B, N) exit 0 and clean up; the agent restarted rewrites
the file (its own lease again); ADD M works; the file damaged under the running
agent is rewritten within 3 s of resync (flanneld writes it only at start);
``gc --all`` leaves the node as a fresh one but for the bridge.

``vtep-mac`` (``<state-dir>/flannel.1.<public IP>.net<netns inode>.mac``;
kinds: empty, truncated, garbage, wrong-value (not a unicast MAC), directory,
unreadable, symlink): a restart with the device still there keeps the
device's MAC and rewrites the file; a restart after the device was deleted,
and a running agent whose device is deleted, make a new MAC, log the file's
problem, publish the new MAC in the lease and keep it in a regular file;
nothing is ever read or written through the symlink.

Everywhere: no traceback; nothing outside the case's directories written,
created or removed (symlink and directory targets keep bytes, mode, mtime).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pycni.datastore.sqlite import BUSY_TIMEOUT, SqliteDatastore
from pycni.fabric.flannel import subnetenv
from pycni.fabric.flannel.backends.vxlan import mac_state_path, normalize_mac, unicast
from pycni.fabric.flannel.leases import LeaseStore
from pycni.fabric.flannel.migrate import OLD_TABLES
from pycni.fabric.flannel.model import DEFAULT_PREFIX, Lease, LeaseAttrs
from tests.support.netns import NetnsPool, run

if TYPE_CHECKING:
    from tests.campaigns.corruption import Campaign, CaseReport, Pod

FABRIC_TARGETS = ("store", "subnet-env", "vtep-mac")
STORE_KINDS = (
    "empty", "truncated", "garbage", "foreign-schema", "newer-schema", "wal-garbage", "wal-stale", "wal-foreign",
    "journal-garbage", "directory", "unreadable", "symlink", "read-only", "locked",
)  # fmt: skip
RUNNING_STORE_KINDS = (
    "empty", "truncated", "garbage", "foreign-schema", "directory", "unreadable", "symlink", "read-only", "locked",
)  # fmt: skip
SUBNET_ENV_KINDS = (
    "empty", "truncated", "garbage", "missing-key", "bad-value", "non-utf8", "crlf", "duplicate", "directory",
    "unreadable", "symlink",
)  # fmt: skip
VTEP_KINDS = ("empty", "truncated", "garbage", "wrong-value", "directory", "unreadable", "symlink")
KINDS = {"store": STORE_KINDS, "subnet-env": SUBNET_ENV_KINDS, "vtep-mac": VTEP_KINDS}
EMPTY_SHA = hashlib.sha256(b"").hexdigest()
HEALED = ("healed", "waited", "ok", "rewritten", "kept", "new MAC")  # outcomes that count as healed

NETWORK = "10.86.0.0/16"
NODE_IP = "198.51.100.10"
PEER = ("10.86.99.0/24", "198.51.100.99", "0e:00:00:00:99:01")
LATE_PEER = ("10.86.98.0/24", "198.51.100.98", "0e:00:00:00:98:01")
NODE_SUBNET_MAX = "10.86.90.0"
DEVICE = "flannel.1"
CNI_NETWORK = "fcnet"
IFNAME = "eth0"
DROP_DAC = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")
START_TIMEOUT = 45.0
# The lock is held until the agent has said that it waits (its busy timeout, BUSY_TIMEOUT, ran out), at most
# this long. A fixed hold a little longer than the busy timeout was flaky: on a loaded machine the agent took
# long enough to reach its first write that the wait ended just inside the timeout, rightly unreported.
LOCK_HOLD = BUSY_TIMEOUT + START_TIMEOUT
SUBNET_ENV_WRONG = [
    "FLANNEL_MTU=abc",
    "FLANNEL_IPMASQ=maybe",
    "FLANNEL_MTU=0",
    "FLANNEL_MTU=99999",
    "FLANNEL_SUBNET=10.99.1.1/24",
    "FLANNEL_SUBNET=not-an-address",
    "FLANNEL_NETWORK=10.86.0.0/33",
    "FLANNEL_SUBNET=10.86.1.1/2",
]
VTEP_WRONG = ["01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "zz:zz:zz:zz:zz:zz", "0e:00:00:00:01"]
POOL = (
    "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: corruption-pool\nspec:\n  cidr: 10.85.0.0/16\n"
)
HOLDER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("ROLLBACK")
"""


def kinds_for(target: str) -> tuple[str, ...]:
    return KINDS[target]


def _sha(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else ""
    except OSError:
        return "unreadable"


def fingerprint(directory: Path) -> dict[str, tuple[int, int, int, str]]:
    """(mode, size, mtime, sha256) of every entry under ``directory``, never following links."""
    found: dict[str, tuple[int, int, int, str]] = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = Path(root, name)
            st = path.lstat()
            found[str(path.relative_to(directory))] = (st.st_mode, st.st_size, st.st_mtime_ns, _sha(path))
    return found


def _rewrite(path: Path, data: bytes) -> None:
    """In place (same inode), as a crash or a disk fault would."""
    with open(path, "r+b") as handle:
        handle.truncate(0)
        handle.write(data)


# -- one node ---------------------------------------------------------------------------------


@dataclass
class Run:
    """One start of the agent."""

    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")


class FabricNode:
    """A fresh node namespace with its own eth0 and directories, and ``pycni flanneld`` on the embedded store."""

    def __init__(self, campaign: Campaign, pool: NetnsPool, workdir: Path) -> None:
        self.campaign = campaign
        self.pool = pool
        self.dir = workdir
        self.ns = pool.new("node")
        run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p", netns=self.ns)
        run("ip", "addr", "add", f"{NODE_IP}/24", "dev", "eth0", netns=self.ns)
        for name in ("eth0", "eth0p"):
            run("ip", "link", "set", name, "up", netns=self.ns)
        self.store = workdir / "db" / "flannel.db"
        self.subnet_file = workdir / "run" / "subnet.env"
        self.state_dir = workdir / "state"
        self.net_conf = workdir / "net-conf.json"
        self.outside = workdir / "outside"
        for directory in (self.store.parent, self.outside, self.subnet_file.parent):
            directory.mkdir(parents=True)
        # The node's own lease is drawn below the peers' subnets: a late peer written over it would be no peer.
        conf = {"Network": NETWORK, "SubnetMax": NODE_SUBNET_MAX, "Backend": {"Type": "vxlan"}}
        self.net_conf.write_text(json.dumps(conf))
        self.runs = 0
        self.inode = os.stat(pool.path(self.ns)).st_ino

    @property
    def mac_file(self) -> Path:
        return Path(mac_state_path(str(self.state_dir), DEVICE, NODE_IP, self.inode))

    # -- the agent

    def start(self) -> Run:
        self.runs += 1
        log = self.dir / f"flanneld-{self.runs}.log"
        argv = [
            "ip", "netns", "exec", self.ns, *DROP_DAC, self.campaign.pycni, "flanneld",
            "--store-path", str(self.store), "--net-config-path", str(self.net_conf), "--iface", "eth0",
            "--subnet-file", str(self.subnet_file), "--state-dir", str(self.state_dir), "--iptables-resync", "1",
        ]  # fmt: skip
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        with log.open("ab") as handle:
            proc = subprocess.Popen(argv, stdout=handle, stderr=handle, env=env, start_new_session=True)
        return Run(proc, log)

    @staticmethod
    def wait(agent: Run, timeout: float = START_TIMEOUT) -> str:
        """``ready``, ``exited`` or ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "flanneld: ready" in agent.text():
                return "ready"
            if agent.proc.poll() is not None:
                return "exited"
            time.sleep(0.05)
        return "timeout"

    @staticmethod
    def stop(agent: Run) -> int:
        if agent.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(agent.proc.pid, signal.SIGTERM)
            try:
                return agent.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(agent.proc.pid, signal.SIGKILL)
                agent.proc.wait()
                return -9
        return agent.proc.returncode

    # -- the store, from the campaign (full capabilities)

    def lease_store(self) -> LeaseStore:
        return LeaseStore(SqliteDatastore(str(self.store), adopt=OLD_TABLES), DEFAULT_PREFIX)

    def seed(self) -> None:
        store = self.lease_store()
        try:
            store.set_network_config(self.net_conf.read_text())
            put_peer(store, PEER)
        finally:
            store.close()

    def leases(self) -> dict[str, dict[str, Any]]:
        store = self.lease_store()
        try:
            listed, _ = store.list_leases()
        finally:
            store.close()
        return {str(lease.subnet): lease.attrs.backend_data for lease in listed}

    # -- the kernel

    def device_mac(self) -> str | None:
        out = run("ip", "-j", "link", "show", DEVICE, netns=self.ns, check=False).stdout
        links = json.loads(out) if out.strip() else []
        return str(links[0]["address"]) if links else None

    def routes(self) -> list[str]:
        out = run("ip", "-j", "-4", "route", "show", netns=self.ns).stdout
        network = ipaddress.ip_network(NETWORK)
        found = []
        for route in json.loads(out) if out.strip() else []:
            dst = route.get("dst", "")
            with contextlib.suppress(ValueError):
                if dst != "default" and ipaddress.ip_network(dst, strict=False).subnet_of(network):  # type: ignore[arg-type]
                    found.append(dst)
        return sorted(found)

    def dataplane(self) -> tuple[str | None, list[str], bytes | None]:
        try:
            env = self.subnet_file.read_bytes()
        except OSError:
            env = None
        return self.device_mac(), self.routes(), env


def put_peer(store: LeaseStore, peer: tuple[str, str, str]) -> None:
    subnet, public_ip, mac = peer
    attrs = LeaseAttrs(public_ip=public_ip, backend_type="vxlan", backend_data={"VNI": 1, "VtepMAC": mac})
    store.update_lease(Lease(ipaddress.IPv4Network(subnet), attrs), None)


# -- damage ---------------------------------------------------------------------------------


@dataclass
class StoreDamage:
    kind: str
    detail: str
    undo: Any = None  # how the running phase puts it right
    holder: subprocess.Popen[str] | None = None
    files: dict[str, str] = field(default_factory=dict)  # sha256 of the store and its -wal, after the damage


class StoreDamager:
    def __init__(self, node: FabricNode, rng: random.Random) -> None:
        self.node = node
        self.rng = rng

    def apply(self, kind: str, running: bool = False) -> StoreDamage:
        node, rng, path = self.node, self.rng, self.node.store
        damage = StoreDamage(kind, "")
        if kind == "empty":
            _rewrite(path, b"")
            damage.detail = "emptied"
        elif kind == "truncated":
            size = path.stat().st_size
            cut = rng.randrange(1, size)
            _rewrite(path, path.read_bytes()[:cut])
            damage.detail = f"cut at byte {cut} of {size}"
        elif kind == "garbage":
            data = rng.randbytes(rng.randint(1, 8192))
            _rewrite(path, data)
            damage.detail = f"{len(data)} random bytes"
        elif kind == "foreign-schema":
            foreign = node.dir / f"foreign-{uuid.uuid4().hex[:6]}.db"
            db = sqlite3.connect(foreign)
            db.execute("CREATE TABLE users (name TEXT, password TEXT)")
            db.execute("INSERT INTO users VALUES ('alice', 'x')")
            db.commit()
            db.close()
            _rewrite(path, foreign.read_bytes())
            damage.detail = "another program's sqlite database (table users)"
        elif kind == "newer-schema":
            db = sqlite3.connect(path)
            db.execute("UPDATE kv_meta SET value = 2 WHERE name = 'schema'")
            db.commit()
            db.close()
            damage.detail = "kv_meta schema 2"
        elif kind == "wal-garbage":
            Path(f"{path}-wal").write_bytes(rng.randbytes(rng.randint(33, 8192)))
            damage.detail = "random bytes as its -wal"
        elif kind == "wal-stale":
            store = SqliteDatastore(str(path))
            store.put("/campaign/marker", "1")
            stale = Path(f"{path}-wal").read_bytes()
            store.put("/campaign/marker", "2")
            store.close()
            Path(f"{path}-wal").write_bytes(stale)
            damage.detail = "a -wal copied before the last write"
        elif kind == "wal-foreign":
            other = node.dir / "other.db"
            store = SqliteDatastore(str(other))
            store.put("/other/key", "x")
            wal = Path(f"{other}-wal").read_bytes()
            store.close()
            Path(f"{path}-wal").write_bytes(wal)
            damage.detail = "another store's -wal"
        elif kind == "journal-garbage":
            Path(f"{path}-journal").write_bytes(rng.randbytes(rng.randint(1, 8192)))
            damage.detail = "random bytes as its -journal"
        elif kind in ("directory", "symlink"):
            moved = node.dir / f"moved-{uuid.uuid4().hex[:6]}.db"
            os.rename(path, moved)
            if kind == "directory":
                canary = node.outside / f"canary-{uuid.uuid4().hex[:6]}"
                canary.write_bytes(b"canary: must survive\n")
                path.mkdir()
                shutil.copyfile(moved, path / "copy")
                (path / "out").symlink_to(canary)
                damage.detail = "a directory holding a copy and a symlink out"
            else:
                variant = rng.choice(("copy", "garbage", "dangling"))
                target = node.outside / f"link-{uuid.uuid4().hex[:6]}.db"
                if variant == "copy":
                    shutil.copyfile(moved, target)
                elif variant == "garbage":
                    target.write_bytes(rng.randbytes(64))
                path.symlink_to(target)
                damage.detail = f"a symlink to {variant} outside"
            damage.undo = ("rename", moved)
        elif kind == "unreadable":
            path.chmod(0)
            damage.detail = "mode 000"
        elif kind == "read-only":
            path.chmod(0o444)
            damage.detail = "mode 0444"
        elif kind == "locked":
            damage.holder = subprocess.Popen(
                [sys.executable, "-c", HOLDER, str(path), str(LOCK_HOLD)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            assert damage.holder.stdout is not None and damage.holder.stderr is not None
            if damage.holder.stdout.readline().strip() != "held":
                damage.holder.wait()
                raise RuntimeError(f"the lock holder did not take the lock: {damage.holder.stderr.read()[-600:]}")
            damage.detail = "a write transaction held by another process"
        else:
            raise ValueError(f"unknown store kind {kind}")
        damage.files = {suffix: _sha(Path(f"{path}{suffix}")) for suffix in ("", "-wal")}
        return damage

    def undo(self, damage: StoreDamage, backup: Path) -> None:
        """Put the file right: the consistent copy ``backup`` back, the mode restored, the lock let go."""
        path = self.node.store
        if damage.holder is not None:
            damage.holder.kill()
            damage.holder.wait()
            return
        if damage.kind in ("unreadable", "read-only"):
            path.chmod(0o644)
            return
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path) and damage.kind == "symlink":
            path.unlink()
        for suffix in ("-wal", "-journal"):
            if damage.kind.startswith(("wal", "journal")):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{path}{suffix}")
        restored = self.node.dir / "restoring.db"
        shutil.copyfile(backup, restored)
        os.replace(restored, path)


def backup(path: Path, into: Path) -> None:
    """A consistent copy of the live store (sqlite's backup API reads through the WAL)."""
    source = sqlite3.connect(path)
    target = sqlite3.connect(into)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


# -- cases ------------------------------------------------------------------------------


class FabricCase:
    """One (target, kind) on a fresh node; fills the campaign's CaseReport (``phases``, ``failures``)."""

    def __init__(self, campaign: Campaign, report: CaseReport, rng: random.Random) -> None:
        self.campaign = campaign
        self.report = report
        self.rng = rng
        self.agents: list[Run] = []
        self.holders: list[subprocess.Popen[str]] = []
        self.outside: dict[str, tuple[int, int, int, str]] | None = None  # its picture since the last damage

    def fail(self, message: str) -> None:
        self.report.failures.append(message)

    def expect(self, condition: bool, message: str) -> bool:
        if not condition:
            self.fail(message)
        return condition

    def run(self) -> None:
        workdir = Path(tempfile.mkdtemp(prefix=f"{self.report.target}-{self.report.kind}-", dir=self.campaign.workdir))
        pool = NetnsPool(prefix=f"pcf{uuid.uuid4().hex[:4]}")
        try:
            node = FabricNode(self.campaign, pool, workdir)
            {"store": self.store_case, "subnet-env": self.subnet_env_case, "vtep-mac": self.vtep_case}[
                self.report.target
            ](node, pool)
        except Exception as exc:  # noqa: BLE001 - a harness fault is reported as the case's failure
            self.fail(f"campaign harness: {type(exc).__name__}: {exc}")
        finally:
            for agent in self.agents:
                FabricNode.stop(agent)
            for holder in self.holders:
                holder.kill()
                holder.wait()
            pool.cleanup()
            shutil.rmtree(workdir, ignore_errors=True)

    # -- the agent's rules

    def start(self, node: FabricNode) -> Run:
        agent = node.start()
        self.agents.append(agent)
        return agent

    def ready(self, node: FabricNode, agent: Run, what: str) -> bool:
        """The agent became ready (expected), or a failure saying how it did not."""
        state = node.wait(agent)
        if state != "ready":
            how = f"exit {agent.proc.returncode}" if state == "exited" else f"no ready in {START_TIMEOUT:.0f} s"
            self.fail(f"{what}: {how}: {agent.text()[-800:]!r}")
        return state == "ready"

    def check_log(self, agent: Run, phase: str, names: list[str], since: int = 0) -> list[str]:
        """No traceback; every warning or error about the store names the file. The store lines (from ``since``)."""
        text = agent.text()[since:]
        self.expect("Traceback" not in text, f"{phase}: traceback from the agent: {text.strip()[-600:]}")
        lines = [line for line in text.splitlines() if ": WARNING: " in line or ": ERROR: " in line]
        about = [line for line in lines if "datastore" in line or "store" in line]
        for line in about:
            self.expect(any(name in line for name in names), f"{phase}: a store problem without the file: {line}")
        return about

    # -- store

    def store_case(self, node: FabricNode, pool: NetnsPool) -> None:
        kind = self.report.kind
        damager = StoreDamager(node, self.rng)
        node.seed()
        good = node.dir / "good.db"
        backup(node.store, good)

        damage = damager.apply(kind)
        self.report.damage.append(f"start: {damage.detail}")
        self.report.phases["start"] = self.store_start(node, damage, "start", fresh=True)
        self.release(damage)
        damager.undo(damage, good)

        agent = self.start(node)
        if not self.ready(node, agent, "agent on a good store"):
            return
        if kind in RUNNING_STORE_KINDS:
            self.report.phases["running"] = self.store_running(node, agent, damager)
        self.expect(FabricNode.stop(agent) == 0, f"agent stop: exit {agent.proc.returncode}")
        backup(node.store, good)

        damage = damager.apply(kind)
        self.report.damage.append(f"restart: {damage.detail}")
        self.report.phases["restart"] = self.store_start(node, damage, "restart", fresh=False)
        self.release(damage)
        damager.undo(damage, good)

        damage = damager.apply(kind)
        self.report.damage.append(f"calicoctl: {damage.detail}")
        self.report.phases["calicoctl"] = self.store_calicoctl(node, damage)
        self.release(damage)

    def release(self, damage: StoreDamage) -> None:
        if damage.holder is not None:
            damage.holder.kill()
            damage.holder.wait()

    def store_names(self, node: FabricNode) -> list[str]:
        return [str(node.store)]

    def store_start(self, node: FabricNode, damage: StoreDamage, phase: str, fresh: bool) -> str:
        """Start the agent on the damaged store: healed (ready, nothing lost) or refused (one line, file kept)."""
        outside = fingerprint(node.outside)
        before = node.dataplane()
        agent = self.start(node)
        if damage.holder is not None:  # the agent must say it waits, while it waits; then the lock goes
            deadline = time.monotonic() + LOCK_HOLD
            while "is locked" not in agent.text() and agent.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            self.release(damage)
        state = node.wait(agent, START_TIMEOUT)
        about = self.check_log(agent, phase, self.store_names(node))
        self.expect(fingerprint(node.outside) == outside, f"{phase}: something outside the node's directories changed")
        if state == "timeout":
            self.fail(f"{phase}: the agent neither became ready nor exited in time: {agent.text()[-800:]}")
            FabricNode.stop(agent)
            return "hung"
        if state == "ready":
            FabricNode.stop(agent)
            if damage.kind == "locked":
                self.expect(any("is locked" in line for line in about), f"{phase}: the lock wait was not reported")
            leases = node.leases()
            if damage.kind != "empty":
                self.expect(PEER[0] in leases, f"{phase}: healed but the peer's lease is gone: {sorted(leases)}")
            elif not fresh:
                self.expect(len(leases) >= 1, f"{phase}: the node's own lease is not in the new store")
            return "healed" if damage.kind != "locked" else "waited"
        errors = [line for line in agent.text().splitlines() if ": ERROR: " in line]
        self.expect(agent.proc.returncode == 1, f"{phase}: the agent exited {agent.proc.returncode}, not 1")
        self.expect(len(errors) == 1, f"{phase}: not one error line: {errors}")
        self.expect(
            any(str(node.store) in line for line in errors), f"{phase}: the error does not name the file: {errors}"
        )
        self.check_kept(node, damage, phase)
        if not fresh:
            after = node.dataplane()
            self.expect(after == before, f"{phase}: a refused start changed the dataplane: {before} -> {after}")
        return "refused"

    def check_kept(self, node: FabricNode, damage: StoreDamage, phase: str) -> None:
        """A refused file keeps its bytes, and so does its -wal if it had one (sqlite may make an empty one)."""
        now = {suffix: _sha(Path(f"{node.store}{suffix}")) for suffix in ("", "-wal")}
        if not damage.files["-wal"] and now["-wal"] == EMPTY_SHA:
            now["-wal"] = ""
        self.expect(now == damage.files, f"{phase}: the refused file was changed ({damage.files} -> {now})")

    def store_running(self, node: FabricNode, agent: Run, damager: StoreDamager) -> str:
        good = node.dir / "live-backup.db"
        backup(node.store, good)
        before = node.dataplane()
        self.expect(PEER[0] in before[1], f"running: the peer's route is missing before the damage: {before}")
        logged = len(agent.text())
        damage = damager.apply(self.report.kind, running=True)
        self.report.damage.append(f"running: {damage.detail}")
        time.sleep(3.0)
        self.expect(agent.proc.poll() is None, f"running: the agent exited: {agent.text()[-800:]}")
        after = node.dataplane()
        self.expect(after == before, f"running: the dataplane changed under a damaged store: {before} -> {after}")
        reported = self.check_log(agent, "running", self.store_names(node), since=logged)
        self.release(damage)
        damager.undo(damage, good)
        time.sleep(1.5)  # the agent notices a replaced file at its next poll, before the campaign opens it
        store = node.lease_store()
        try:
            put_peer(store, LATE_PEER)
        finally:
            store.close()
        deadline = time.monotonic() + 20
        while LATE_PEER[0] not in node.routes() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.expect(
            LATE_PEER[0] in node.routes(),
            f"running: the agent does not follow the store once it is put right: {agent.text()[-800:]}",
        )
        return "reported" if reported else "unnoticed"

    def store_calicoctl(self, node: FabricNode, damage: StoreDamage) -> str:
        pool_file = node.dir / "pool.yaml"
        pool_file.write_text(POOL)
        outcomes = []
        for argv in (["get", "ippools", "-o", "json"], ["apply", "-f", str(pool_file)]):
            command = [*DROP_DAC, self.campaign.pycni, "calicoctl", *argv]
            env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYCNI_CALICO_STORE": str(node.store)}
            proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
            where = f"calicoctl {argv[0]}"
            self.expect("Traceback" not in proc.stderr, f"{where}: traceback: {proc.stderr[-600:]}")
            if proc.returncode == 0:
                outcomes.append("ok")
                continue
            lines = proc.stderr.strip().splitlines()
            self.expect(proc.returncode == 1 and len(lines) == 1, f"{where}: exit {proc.returncode}: {proc.stderr}")
            self.expect(str(node.store) in proc.stderr, f"{where}: the error does not name the file: {proc.stderr}")
            outcomes.append("refused")
        if damage.kind not in ("empty", "locked", "wal-garbage", "journal-garbage") and "ok" not in outcomes[1:]:
            self.check_kept(node, damage, "calicoctl")
        return "/".join(outcomes)

    # -- subnet.env

    def subnet_env_case(self, node: FabricNode, pool: NetnsPool) -> None:
        from tests.campaigns.corruption import Pod, namespace_state

        node.seed()
        agent = self.start(node)
        if not self.ready(node, agent, "agent"):
            return
        lease = subnetenv.load(str(node.subnet_file))
        assert lease is not None
        cni = CniRunner(self.campaign, node, self.report)
        fresh_ns = pool.new("fresh")
        fresh = namespace_state(fresh_ns)
        b, v, n, m = (Pod(label, pool.new(f"ctr{label.lower()}"), 0) for label in "BVNM")
        for pod in (b, v):
            if not self.expect(cni.add(pod) == 0, f"ADD {pod.label}: {cni.last}"):
                return
        self.expect(FabricNode.stop(agent) == 0, "agent stop")

        self.report.damage.append(self.damaged(node.subnet_file, node, SUBNET_ENV_WRONG, "subnet-env"))
        rc = cni.add(n)
        if rc == 0:
            ip = ipaddress.ip_interface(n.result["ips"][0]["address"]) if n.result else None
            self.expect(ip is not None and ip in lease.subnet.network, f"ADD N healed into a wrong subnet: {ip}")
            self.report.phases["add"] = "healed"
        else:
            error = cni.plugin_error("flannel")
            self.expect(error.get("code") in (5, 7), f"ADD N: code {error.get('code')}, not 5 or 7: {error}")
            self.expect(str(node.subnet_file) in str(error.get("msg")), f"ADD N: the error does not name it: {error}")
            self.expect(namespace_state(n.netns) == fresh, "ADD N failed and left something in its namespace")
            self.expect(not cni.reservations_of(n), "ADD N failed and left a reservation")
            self.report.phases["add"] = "refused"
        self.expect(cni.delete(v) == 0, f"DEL V: {cni.last}")
        self.expect(namespace_state(v.netns) == fresh, "DEL V left something in V's namespace")
        self.expect(not cni.reservations_of(v), "DEL V left V's reservation")
        self.expect(not os.path.lexists(cni.saved(v)), "DEL V left V's saved delegate config")
        self.expect(cni.gc([b, *([n] if n.result else [])]) == 0, f"GC: {cni.last}")
        self.expect(bool(cni.reservations_of(b)), "GC released B's address")

        agent = self.start(node)
        if not self.ready(node, agent, "agent restart"):
            return
        self.check_log(agent, "restart", [str(node.subnet_file)])
        self.expect(subnetenv.load(str(node.subnet_file)) == lease, "the restarted agent did not rewrite subnet.env")
        self.report.phases["restart"] = "rewritten"
        self.expect(cni.add(m) == 0, f"ADD M after the restart: {cni.last}")

        damage = self.damaged(node.subnet_file, node, SUBNET_ENV_WRONG, "subnet-env")
        self.report.damage.append(f"running: {damage}")
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if subnetenv.load(str(node.subnet_file)) == lease and node.subnet_file.read_bytes() == (
                    subnetenv.render(lease.network, lease.subnet.network, lease.mtu, lease.ipmasq).encode()
                ):
                    break
            time.sleep(0.1)
        else:
            self.fail("the running agent did not rewrite the damaged subnet.env within 4 s")
        self.report.phases["resync"] = "rewritten"
        self.check_log(agent, "resync", [str(node.subnet_file)])
        self.expect(cni.gc(None) == 0, f"GC --all: {cni.last}")
        self.expect(FabricNode.stop(agent) == 0, "agent stop")
        cni.check_fresh(self, [b, v, n, m], fresh)
        self.check_outside(node, "the end")

    def damaged(self, path: Path, node: FabricNode, wrong: list[str], fmt: str) -> str:
        """:meth:`damage_text`, the outside directory checked unchanged before and pictured after (it adds there)."""
        self.check_outside(node, "before the damage")
        detail = self.damage_text(path, node, wrong, fmt)
        self.outside = fingerprint(node.outside)
        return detail

    def check_outside(self, node: FabricNode, when: str) -> None:
        if self.outside is not None:
            changed = fingerprint(node.outside) != self.outside
            self.expect(not changed, f"{when}: something outside the node's directories changed")

    def damage_text(self, path: Path, node: FabricNode, wrong: list[str], fmt: str) -> str:
        """Damage a small text file (subnet.env, the MAC file) by the case's kind; what was done."""
        kind, rng = self.report.kind, self.rng
        original = path.read_bytes()
        if kind == "empty":
            _rewrite(path, b"")
        elif kind == "truncated":
            cut = rng.randrange(1, len(original))
            _rewrite(path, original[:cut])
            return f"cut at byte {cut} of {len(original)}"
        elif kind == "garbage":
            _rewrite(path, rng.randbytes(rng.randint(1, 512)))
        elif kind == "missing-key":
            key = rng.choice(subnetenv.REQUIRED)
            kept = [line for line in original.decode().splitlines() if not line.startswith(key + "=")]
            _rewrite(path, ("\n".join(kept) + "\n").encode())
            return f"without {key}"
        elif kind in ("bad-value", "wrong-value"):
            value = rng.choice(wrong)
            if fmt == "subnet-env":
                key = value.split("=")[0]
                lines = [value if line.startswith(key + "=") else line for line in original.decode().splitlines()]
                _rewrite(path, ("\n".join(lines) + "\n").encode())
            else:
                _rewrite(path, (value + "\n").encode())
            return value
        elif kind == "non-utf8":
            _rewrite(path, original.replace(b"FLANNEL_MTU=", b"FLANNEL_MTU=\xff\xfe"))
        elif kind == "crlf":
            _rewrite(path, original.replace(b"\n", b"\r\n"))
        elif kind == "duplicate":
            subnet = ipaddress.ip_interface(subnetenv.read(str(path))["FLANNEL_SUBNET"])
            other = ipaddress.ip_interface(f"{subnet.ip + 256}/{subnet.network.prefixlen}")
            _rewrite(path, original + f"FLANNEL_SUBNET={other}\n".encode())
            return f"FLANNEL_SUBNET again as {other}"
        elif kind == "directory":
            canary = node.outside / f"canary-{uuid.uuid4().hex[:6]}"
            canary.write_bytes(b"canary: must survive\n")
            path.unlink()
            path.mkdir()
            (path / "copy").write_bytes(original)
            (path / "out").symlink_to(canary)
        elif kind == "unreadable":
            path.chmod(0)
        elif kind == "symlink":
            variant = rng.choice(("copy", "garbage", "dangling"))
            target = node.outside / f"link-{uuid.uuid4().hex[:6]}"
            if variant == "copy":
                target.write_bytes(original)
            elif variant == "garbage":
                target.write_bytes(rng.randbytes(64))
            path.unlink()
            path.symlink_to(target)
            return f"a symlink to {variant} outside"
        else:
            raise ValueError(f"unknown kind {kind}")
        return kind

    # -- the VTEP MAC file

    def vtep_case(self, node: FabricNode, pool: NetnsPool) -> None:
        node.seed()
        agent = self.start(node)
        if not self.ready(node, agent, "agent"):
            return
        first = node.device_mac()
        self.expect(self.published(node) == first, "the lease does not publish the device's MAC")
        self.expect(FabricNode.stop(agent) == 0, "agent stop")

        self.report.damage.append(self.damaged(node.mac_file, node, VTEP_WRONG, "mac"))
        agent = self.start(node)
        if self.ready(node, agent, "restart, device kept"):
            self.check_log(agent, "restart", [str(node.mac_file)])
            self.expect(node.device_mac() == first, "a restart with the device there changed its MAC")
            self.check_mac_state(node, "restart")
            self.report.phases["restart"] = "kept"
        self.expect(FabricNode.stop(agent) == 0, "agent stop")

        self.report.damage.append(self.damaged(node.mac_file, node, VTEP_WRONG, "mac"))
        run("ip", "link", "del", DEVICE, netns=node.ns)
        agent = self.start(node)
        if self.ready(node, agent, "restart, device gone"):
            self.check_log(agent, "restart-device-gone", [str(node.mac_file)])
            second = node.device_mac()
            self.expect(second is not None and second != first, "a damaged MAC file gave back the old MAC?")
            self.expect(str(node.mac_file) in agent.text(), "the damaged MAC file was not logged")
            self.check_mac_state(node, "restart-device-gone")
            self.report.phases["device-gone"] = "new MAC"

        self.report.damage.append(self.damaged(node.mac_file, node, VTEP_WRONG, "mac"))
        before = node.device_mac()
        run("ip", "link", "del", DEVICE, netns=node.ns)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (node.device_mac() in (None, before) or not self.mac_settled(node)):
            time.sleep(0.2)
        self.expect(agent.proc.poll() is None, f"running: the agent exited: {agent.text()[-800:]}")
        self.check_log(agent, "running", [str(node.mac_file)])
        third = node.device_mac()
        self.expect(
            third is not None and third != before, f"running: the device was not rebuilt with a new MAC: {third}"
        )
        self.check_mac_state(node, "running")
        self.report.phases["running"] = "new MAC"
        self.expect(FabricNode.stop(agent) == 0, "agent stop")
        self.check_outside(node, "the end")

    def published(self, node: FabricNode) -> str | None:
        for subnet, data in node.leases().items():
            if subnet != PEER[0] and subnet != LATE_PEER[0]:
                return normalize_mac(data.get("VtepMAC"))
        return None

    def mac_settled(self, node: FabricNode) -> bool:
        try:
            return self.published(node) == node.device_mac() and node.mac_file.read_text().strip() == node.device_mac()
        except OSError:
            return False

    def check_mac_state(self, node: FabricNode, phase: str) -> None:
        mac = node.device_mac()
        self.expect(mac is not None and unicast(mac), f"{phase}: the device has no unicast MAC: {mac}")
        self.expect(self.published(node) == mac, f"{phase}: the lease publishes {self.published(node)}, not {mac}")
        path = node.mac_file
        ok = path.is_file() and not path.is_symlink() and path.read_text().strip() == mac
        self.expect(ok, f"{phase}: the MAC file is not a regular file holding {mac}")


# -- the CNI side of the subnet-env case ----------------------------------------------------


class CniRunner:
    """``pycni add/del/gc`` of the flannel network in the node namespace, recording plugin executions."""

    def __init__(self, campaign: Campaign, node: FabricNode, report: CaseReport) -> None:
        self.campaign = campaign
        self.node = node
        self.report = report
        self.conf_dir = node.dir / "net.d"
        self.cache = node.dir / "cache"
        self.ipam_dir = node.dir / "host-local"
        self.flannel_dir = node.dir / "flannel"
        self.conf_dir.mkdir()
        conflist = {
            "cniVersion": "1.1.0",
            "name": CNI_NETWORK,
            "plugins": [
                {
                    "type": "flannel",
                    "subnetFile": str(node.subnet_file),
                    "dataDir": str(self.flannel_dir),
                    "delegate": {"bridge": "fcbr0", "ipam": {"dataDir": str(self.ipam_dir)}},
                }
            ],
        }
        (self.conf_dir / f"{CNI_NETWORK}.conflist").write_text(json.dumps(conflist))
        self.last = ""
        self.calls: list[dict[str, Any]] = []

    def pycni(self, *argv: str) -> int:
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "NETCONFPATH": str(self.conf_dir),
            "CNI_PATH": str(self.campaign.wrappers),
            "PYCNI_CACHE_DIR": str(self.cache),
            "PYCNI_NO_DAEMON": "1",
            "PYCNI_DEBUG": "1",
        }
        self.campaign.log.write_text("")
        command = ["ip", "netns", "exec", self.node.ns, *DROP_DAC, self.campaign.pycni, *argv]
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
        self.calls = [json.loads(line) for line in self.campaign.log.read_text().splitlines() if line.strip()]
        self.report.plugin_calls += len(self.calls)
        self.last = proc.stderr.strip()[-600:]
        self.stdout = proc.stdout
        for call in self.calls:
            if "Traceback" in call["stderr"]:
                self.last = f"traceback in {call['type']}: {call['stderr'][-600:]}"
                return -2
            if call["rc"] != 0:
                try:
                    error = json.loads(call["stdout"])
                    if not (isinstance(error, dict) and isinstance(error.get("code"), int) and "msg" in error):
                        raise ValueError
                except ValueError:
                    self.last = f"{call['type']} exit {call['rc']} without the spec's error: {call['stdout']!r}"
                    return -3
        if "Traceback" in proc.stderr:
            return -2
        return proc.returncode

    def add(self, pod: Pod) -> int:
        rc = self.pycni("add", CNI_NETWORK, pod.path)
        if rc == 0:
            pod.result = json.loads(self.stdout)
        return rc

    def delete(self, pod: Pod) -> int:
        return self.pycni("del", CNI_NETWORK, pod.path)

    def gc(self, keep: list[Pod] | None) -> int:
        if keep is None:
            return self.pycni("gc", CNI_NETWORK, "--all")
        return self.pycni("gc", CNI_NETWORK, *(f"--keep={pod.container_id}/{IFNAME}" for pod in keep))

    def plugin_error(self, plugin_type: str) -> dict[str, Any]:
        for call in self.calls:
            if call["type"] == plugin_type and call["rc"] != 0:
                with contextlib.suppress(ValueError):
                    error = json.loads(call["stdout"])
                    return error if isinstance(error, dict) else {}
        return {}

    def saved(self, pod: Pod) -> Path:
        return self.flannel_dir / pod.container_id

    def reservations_of(self, pod: Pod) -> list[str]:
        directory = self.ipam_dir / CNI_NETWORK
        found = []
        for name in os.listdir(directory) if directory.is_dir() else []:
            path = directory / name
            if path.is_file() and not path.is_symlink() and path.read_bytes().startswith(pod.container_id.encode()):
                found.append(name)
        return found

    def check_fresh(self, case: FabricCase, pods: list[Pod], fresh: dict[str, list[str]]) -> None:
        from tests.campaigns.corruption import namespace_state

        out = run("ip", "-j", "link", "show", "type", "veth", netns=self.node.ns).stdout
        veths = [link["ifname"] for link in json.loads(out)] if out.strip() else []
        case.expect(set(veths) <= {"eth0", "eth0p"}, f"veths left on the node: {veths}")
        left = [p for p in os.listdir(self.ipam_dir / CNI_NETWORK) if p != "lock" and not p.startswith("last_")]
        case.expect(not left, f"host-local entries left: {left}")
        case.expect(not os.listdir(self.flannel_dir), f"saved delegate configs left: {os.listdir(self.flannel_dir)}")
        results = self.cache / "results"
        case.expect(not (results.is_dir() and os.listdir(results)), "cache files left")
        for pod in pods:
            case.expect(namespace_state(pod.netns) == fresh, f"{pod.label}'s namespace is not as a new one")
