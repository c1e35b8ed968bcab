"""BIRD 2 for one node: its config rendered from a :class:`~pycni.fabric.calico.bgp.BGPPlan`, its process, its socket.

:func:`render` writes what Calico's ``bird.cfg``, ``bird_aggr.cfg`` and
``bird_ipam.cfg`` templates write, translated to stock BIRD 2.0.12 (channels
hold import/export, ``gateway recursive`` and ``add paths``; ``listen bgp`` is
``local ... port``; Calico's ``krt_tunnel`` has no equivalent, so IPIP routes
are the node agent's), in one file. Two decisions differ from Calico on
purpose, both so BIRD and pycni's route driver never fight over a route:

* the kernel protocol exports only routes BIRD *learnt over BGP* (and the
  static routes to ``reachableBy`` peers); block blackholes are in BIRD's
  table to be advertised, but the node agent programs them in the kernel
  (protocol 112). It keeps BIRD 2's kernel metric 32, so a BIRD route never
  has the kernel key (table, destination, metric 0) of a pycni or a user
  route: BIRD deletes only routes of its own protocol (12) and routes of any
  other protocol it only *learns* (``learn``), never changes (BIRD v2.0.12
  ``sysdep/unix/krt.c`` ``krt_got_route``: alien routes go to
  ``krt_learn_scan``; ``sysdep/linux/netlink.c`` ``nl_parse_route``: protocol
  12 is BIRD's, kernel-protocol routes are ignored), and its IPv4 in-place
  replace, which does not check the protocol, is safe "when dedicated
  priority is used" (``nl_allow_replace``), which metric 32 is.
* ``reject_tunnel_routes`` also rejects routes through ``tunl0``, so IPIP
  routes the agent programs are not re-advertised as BIRD's own.

:class:`BirdProcess` runs ``bird`` in a node's network namespace with that
node's config, control socket and pid file (several nodes share a machine in
tests), applies a new config with ``configure`` only when the rendered text
changed (checked with ``bird -p`` first, written atomically; no session
restarts), adopts a BIRD left running by a previous agent (BIRD keeps routing
while the agent restarts), restarts a crashed BIRD in graceful-restart
recovery (``-R``: its kernel routes and its peers' copies of its routes stay
until it is back), and stops it with SIGTERM (BIRD then closes its sessions
with a Cease, so peers withdraw its routes at once). :class:`BirdControl` speaks
BIRD's control-socket protocol (what ``birdc`` speaks) and
:func:`parse_protocols` reads ``show protocols``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pycni.fabric.calico.bgp import BGPPlan, KernelRoutes, Session, SessionKind
from pycni.fabric.calico.errors import CalicoError
from pycni.fsutil import write_atomic

log = logging.getLogger(__name__)

BIRD = "/usr/sbin/bird"
DEFAULT_CONTROL_SOCKET = "/var/run/calico/bird.ctl"  # calicoctl node status looks here first
FALLBACK_CONTROL_SOCKET = "/var/run/bird/bird.ctl"  # ... then here (a non-containerised BIRD)
RTPROT_BIRD = 12  # the kernel route protocol BIRD writes (and the only one it ever deletes)
KERNEL_METRIC = 32  # BIRD 2's default: never the metric of a pycni (0) route
# A BIRD restarted after a crash runs with -R (calico-node always does) so it keeps its kernel routes until
# its sessions are back; BIRD's default wait for that is 240 s, during which it programs nothing new, so a
# node with one peer down would route nothing for 4 minutes. Live peers are Established within a few
# seconds (connect delay 2 s, retry 5 s): wait at most this long.
GRACEFUL_RESTART_WAIT = 10


class BirdError(CalicoError):
    """BIRD refused a configuration, did not start, or answered what pycni cannot read."""


class BirdNotRunning(BirdError):
    """Nothing answers on the control socket."""


# -- rendering --------------------------------------------------------------------------------

_DEBUG = {"debug": "  debug all;", "info": "  debug { states };", "none": ""}


def _lines(*items: str) -> list[str]:
    return [item for item in items if item]


def _static_section(plan: BGPPlan) -> list[str]:
    out = [
        "# ------------- IP blocks of this host (bird_aggr) -------------",
        "protocol static static_blocks {",
        "  ipv4;",
    ]
    routes = [b for b in plan.blocks if b.confirmed and b.cidr.prefixlen < 32]
    if routes:
        out.append("  # IP blocks for this host.")
        out += [f"  route {b.cidr} blackhole;" for b in routes]
    if plan.borrowed:
        out.append(
            "  # Addresses borrowed from other hosts' blocks (advertised only; the pods' routes are in the kernel)."
        )
        out += [f"  route {cidr} blackhole;" for cidr in plan.borrowed]
    if not routes and not plan.borrowed:
        out.append("  # No IP blocks for this host.")
    out.append("}")
    if plan.peer_routes:
        out += ["", "protocol static static_peers {", "  ipv4;", "  # Static routes needed for BGP peers."]
        out += [f"  route {r.peer} via {r.gateway};" for r in plan.peer_routes]
        out.append("}")
    out += [
        "",
        "# Aggregation of routes on this host; export the block, nothing beneath it.",
        "function calico_aggr ()",
        "{",
    ]
    for block in plan.blocks:
        if not block.state:
            out.append(f"  # Block {block.cidr} is implicitly confirmed.")
        else:
            out.append(f"  # Block {block.cidr} is {block.state}")
        if block.confirmed:
            out.append(f"  if ( net = {block.cidr} ) then {{ accept; }}")
            out.append(f"  if ( net ~ {block.cidr} ) then {{ reject; }}")
    out.append("}")
    return out


def _filters(plan: BGPPlan) -> list[str]:
    out = ["", "# ------------- Filters (bird_ipam) -------------", "function reject_disabled_pools ()", "{"]
    out += [f"  if ( net ~ {p.cidr} ) then {{ reject; }}" for p in plan.pools if not p.export]
    out += [
        "}",
        "",
        "function reject_tunnel_routes () {",
        "  # Don't export tunnel routes to other nodes: the node agent programs them.",
        "  if (defined(ifname)) then {",
        '     if ((ifname ~ "*.cali") || (ifname ~ "*.calico") || (ifname = "tunl0")) then {',
        "        reject;",
        "     }",
        "  }",
        "}",
        "",
        "function calico_export_to_bgp_peers(bool internal_peer) {",
        "  # filter code terminates when it calls `accept;` or `reject;`: disabled pools first,",
        "  # then tunnel routes, then this host's blocks (calico_aggr), then the pools.",
        "  reject_disabled_pools();",
        "  if (internal_peer) then {",
        "    reject_tunnel_routes();",
        "  }",
        "  calico_aggr();",
    ]
    for pool in plan.pools:
        if pool.export:
            out.append(f"  if ( net ~ {pool.cidr} ) then {{ accept; }}")
        else:
            out.append(f"  # Skip {pool.cidr} as BGP export is disabled for it")
    out += [
        "}",
        "",
        "filter calico_kernel_programming {",
        "  # Routes to peers through reachableBy go to the kernel; otherwise only what BGP learnt: this",
        "  # host's blackholes and pods' routes are the node agent's (protocol 112), never BIRD's.",
    ]
    if plan.peer_routes:
        out.append('  if ( proto = "static_peers" ) then accept;')
    out.append("  if ( source != RTS_BGP ) then reject;")
    for pool in plan.pools:
        if pool.kernel is KernelRoutes.ALL:
            out.append(f"  if ( net ~ {pool.cidr} ) then {{ accept; }}")
        elif pool.kernel is KernelRoutes.SAME_SUBNET and plan.address is not None:
            out += [
                f"  if ( net ~ {pool.cidr} ) then {{",
                "    # CrossSubnet: routed natively within this host's subnet, through the tunnel beyond it.",
                f"    if defined(bgp_next_hop) && ( bgp_next_hop ~ {plan.address.network} ) then accept;",
                "    reject;",
                "  }",
            ]
        else:
            out += [
                f"  if ( net ~ {pool.cidr} ) then {{",
                "    # Don't program VXLAN/IPIP routes into the kernel - the node agent handles these.",
                "    reject;",
                "  }",
            ]
    out += ["  accept;", "}"]
    return out


def _protocols(plan: BGPPlan) -> list[str]:
    debug = _DEBUG.get(plan.log_level, _DEBUG["info"])
    ignored = "".join(f'-"{name}", ' for name in plan.ignored_interfaces)
    return [
        "",
        "# Configure synchronization between routing tables and kernel.",
        "protocol kernel {",
        "  learn;             # Learn all alien routes from the kernel (they are never changed or removed)",
        "  persist;           # Don't remove routes on bird shutdown",
        "  scan time 2;       # Scan kernel routing table every 2 seconds",
        "  graceful restart;  # Turn on graceful restart to reduce potential flaps in",
        "                     # routes when reloading BIRD configuration.",
        "  merge paths on;    # Allow export multipath routes (ECMP)",
        f"  metric {KERNEL_METRIC};         # BIRD's routes never share a kernel key with pycni's (metric 0)",
        "  ipv4 {",
        "    import all;",
        "    export filter calico_kernel_programming; # Default is export none",
        "  };",
        "}",
        "",
        "# Watch interface up/down events.",
        "protocol device {",
        *_lines(debug),
        "  scan time 2;    # Scan interfaces every 2 seconds",
        "}",
        "",
        "protocol direct {",
        *_lines(debug),
        "  ipv4;",
        f'  interface {ignored}-"cali*", -"kube-ipvs*", "*"; # Exclude cali* and kube-ipvs* but',
        "                                          # include everything else.",
        "}",
    ]


def _template(plan: BGPPlan) -> list[str]:
    local = "  local"
    if plan.listen_address is not None:
        local += f" {plan.listen_address}"
    if plan.listen_port:
        local += f" port {plan.listen_port}"
    local += f" as {plan.local_as};"
    strict = (
        ["  strict bind on;   # listen on the node's address only (bindMode NodeIP)"] if plan.listen_address else []
    )
    return [
        "",
        "# Template for all BGP clients",
        "template bgp bgp_template {",
        *_lines(_DEBUG.get(plan.log_level, _DEBUG["info"])),
        '  description "Connection to BGP peer";',
        local,
        *strict,
        "  graceful restart;  # See comment in kernel section about graceful restart.",
        "  connect delay time 2;",
        "  connect retry time 5;",
        "  error wait time 5,30;",
        "  ipv4 {",
        "    gateway recursive; # This should be the default, but just in case.",
        "    add paths on;",
        "    import all;",
        "  };",
        "}",
    ]


def _session(plan: BGPPlan, session: Session) -> list[str]:
    port = f"port {session.port} " if session.port else ""
    mesh = session.kind is SessionKind.MESH
    out = [
        f"# For peer {session.origin}" if session.origin else "",
        f"protocol bgp {session.name} from bgp_template {{",
    ]
    if not mesh:
        if session.ttl_security:
            out += ["  ttl security on;", f"  multihop {session.ttl_security};"]
        else:
            out += ["  ttl security off;", "  multihop;"]
    out.append(f"  neighbor {session.peer_ip} {port}as {session.peer_as};")
    if session.source_address is not None:
        out.append(f"  source address {session.source_address};  # The local address we use for the TCP connection")
    if session.passive:
        out.append(
            "  passive on; # Mesh is unidirectional, peer will connect to us."
            if mesh
            else "  passive on; # Peering is unidirectional, peer will connect to us."
        )
    if session.restart_time is not None:
        out.append(f"  graceful restart time {session.restart_time};")
    if session.route_reflector_client:
        out += ["  rr client;", f"  rr cluster id {session.route_reflector_cluster_id};"]
    if session.allow_local_as:
        out.append(f"  allow local as {session.allow_local_as};")
    out.append("  ipv4 {")
    if session.keep_next_hop:
        out.append("    next hop keep;")
    out.append("    import all;" if mesh else "    import filter { accept; };")
    out += [
        f"    export filter {{ calico_export_to_bgp_peers({'true' if session.internal else 'false'}); reject; }};"
        "  # Only want to export routes for workloads.",
        "  };",
        "}",
    ]
    return _lines(*out)


def _sessions(plan: BGPPlan) -> list[str]:
    out = ["", "# ------------- Node-to-node mesh -------------"]
    mesh = [s for s in plan.sessions if s.kind is SessionKind.MESH]
    if plan.route_reflector_cluster_id:
        out += [
            f"# This node ({plan.node}) is configured as a route reflector with cluster ID "
            f"{plan.route_reflector_cluster_id};",
            "# ignore node-to-node mesh setting.",
        ]
    elif not plan.mesh:
        out.append("# Node-to-node mesh disabled")
    for session in mesh:
        out += _session(plan, session)
    for kind, title, none in (
        (SessionKind.GLOBAL, "Global peers", "# No global peers configured."),
        (SessionKind.NODE, "Node-specific peers", "# No node-specific peers configured."),
    ):
        out += ["", f"# ------------- {title} -------------"]
        chosen = [s for s in plan.sessions if s.kind is kind]
        if not chosen:
            out.append(none)
        for session in chosen:
            out += _session(plan, session)
    return out


def render(plan: BGPPlan) -> str:
    """The node's whole BIRD 2 configuration (one file), deterministic for a given plan."""
    out = [
        f"# Generated by pycni for node {plan.node} from Calico's resources (confd's templates in BIRD 2 syntax).",
        "# Do not edit: the node agent rewrites this file.",
        "",
    ]
    if plan.router_id is not None:
        out.append(f"router id {plan.router_id};")
    out.append(f"graceful restart wait {GRACEFUL_RESTART_WAIT};  # recovery after a restart (-R) waits at most this")
    out.append("")
    out += _static_section(plan)
    out += _filters(plan)
    out += _protocols(plan)
    if plan.address is None:
        out += ["", "# IPv4 disabled on this node."]
    else:
        out += _template(plan)
        out += _sessions(plan)
    return "\n".join(out) + "\n"


def check_config(text: str, bird: str = BIRD) -> None:
    """``bird -p``: raise :class:`BirdError` with BIRD's own message if it would not load ``text``."""
    with tempfile.NamedTemporaryFile("w", prefix="pycni-bird-", suffix=".conf", delete=False) as handle:
        handle.write(text)
        path = handle.name
    try:
        result = subprocess.run([bird, "-p", "-c", path], check=False, capture_output=True, text=True, timeout=30)
    finally:
        os.unlink(path)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().replace(path, "<config>")
        raise BirdError(f"BIRD rejects the rendered configuration: {message}")


# -- the control socket -----------------------------------------------------------------------

_CODE = re.compile(rb"^(\d{4})([ -])(.*)$")


@dataclass(frozen=True)
class Reply:
    """One line of a BIRD reply: its code (continuation lines carry the code they continue)."""

    code: int
    text: str


class BirdControl:
    """A client of BIRD's control socket (the protocol of ``birdc``: 4-digit codes, ``-`` continues)."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout

    def request(self, command: str) -> list[Reply]:
        """Send one command; its reply lines (the banner is read and dropped)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            try:
                sock.connect(self.path)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK):
                    raise BirdNotRunning(f"BIRD is not running: no answer on {self.path} ({exc.strerror})") from None
                raise
            reader = sock.makefile("rb")
            banner = self._read(reader)
            if not banner or banner[-1].code != 1:
                raise BirdError(f"{self.path} did not greet as BIRD does: {banner!r}")
            sock.sendall(command.encode() + b"\n")
            return self._read(reader)
        except TimeoutError:
            raise BirdError(f"BIRD did not answer {command!r} on {self.path} within {self.timeout} s") from None
        except ConnectionError as exc:  # reset or closed: a BIRD exiting right now
            raise BirdNotRunning(f"BIRD is not running: {self.path} dropped the connection ({exc})") from None
        finally:
            sock.close()

    @staticmethod
    def _read(reader: Iterable[bytes]) -> list[Reply]:
        lines: list[Reply] = []
        code = 0
        for raw in reader:
            line = raw.rstrip(b"\n")
            match = _CODE.match(line)
            if match:
                code = int(match.group(1))
                lines.append(Reply(code, match.group(3).decode(errors="replace")))
                if match.group(2) == b" ":
                    return lines
            elif line.startswith(b" "):
                lines.append(Reply(code, line[1:].decode(errors="replace")))
            elif line.startswith(b"+"):
                continue  # a spontaneous message, not part of this reply
            else:
                raise BirdError(f"unexpected line from BIRD: {line!r}")
        raise BirdError("BIRD closed the control connection in the middle of a reply")

    def configure(self) -> str:
        """``configure``: load the config file BIRD was started with; its answer, or :class:`BirdError`."""
        reply = self.request("configure")
        final = reply[-1]
        if final.code in (3, 4, 5, 18, 19, 20):
            return final.text
        raise BirdError(f"BIRD did not take the new configuration: {' '.join(r.text for r in reply)}")


@dataclass(frozen=True)
class ProtocolStatus:
    """A row of ``show protocols``: ``state`` up/down/start/stop/flush, ``info`` e.g. ``Established``."""

    name: str
    proto: str
    table: str
    state: str
    since: str
    info: str

    @property
    def bgp_state(self) -> str:
        """The BGP state word of ``info`` (Idle, Connect, Active, OpenSent, Established, Passive, ...)."""
        return self.info.split(" ", 1)[0] if self.info else ""


PROTOCOL_HEADINGS = ["name", "proto", "table", "state", "since", "info"]


def parse_protocols(reply: Sequence[Reply]) -> list[ProtocolStatus]:
    """``show protocols`` rows; BIRD 2's capitalised header is accepted, as BIRD 1.x's lower-case one."""
    rows: list[ProtocolStatus] = []
    for line in reply:
        if line.code == 2002:
            if [h.lower() for h in line.text.split()] != PROTOCOL_HEADINGS:
                raise BirdError(f"unknown BIRD table output format: {line.text!r}")
        elif line.code == 1002:
            fields = line.text.split()
            if len(fields) >= 5:
                name, proto, table, state, since = fields[:5]
                rows.append(ProtocolStatus(name, proto, table, state, since, " ".join(fields[5:])))
        elif line.code >= 8000:
            raise BirdError(f"BIRD: {line.text}")
    return rows


# -- the process --------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


class BirdProcess:
    """One node's ``bird``: started in ``netns`` (a name under /run/netns or a path) with its own files.

    ``name`` labels logs; ``config_path``, ``socket_path`` and the pid and log
    files (next to the socket and the config by default) must be per node.
    """

    def __init__(
        self,
        name: str,
        config_path: str,
        socket_path: str,
        netns: str | None = None,
        *,
        pid_path: str | None = None,
        log_path: str | None = None,
        bird: str = BIRD,
    ) -> None:
        self.name = name
        self.config_path = os.path.abspath(config_path)
        self.socket_path = os.path.abspath(socket_path)
        self.netns = netns
        self.pid_path = os.path.abspath(pid_path or os.path.splitext(self.socket_path)[0] + ".pid")
        self.log_path = os.path.abspath(log_path or os.path.splitext(self.config_path)[0] + ".log")
        self.bird = bird
        self.control = BirdControl(self.socket_path)
        self._child: subprocess.Popen[bytes] | None = None

    # -- state ----------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        if self._child is not None and self._child.poll() is None:
            return self._child.pid
        try:
            with open(self.pid_path) as handle:
                pid = int(handle.read().strip() or 0)
        except (OSError, ValueError):
            return None
        return pid if pid > 0 and _alive(pid) else None

    def running(self) -> bool:
        """True when this node's BIRD answers on its control socket."""
        try:
            self.control.request("show status")
        except BirdError:
            return False
        return True

    def protocols(self) -> list[ProtocolStatus]:
        return parse_protocols(self.control.request("show protocols"))

    def sessions(self) -> dict[str, ProtocolStatus]:
        """The BGP protocols by name."""
        return {p.name: p for p in self.protocols() if p.proto == "BGP"}

    # -- config -----------------------------------------------------------------------------

    def current_config(self) -> str | None:
        try:
            with open(self.config_path) as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def write_config(self, text: str) -> bool:
        """Check ``text`` with ``bird -p`` and write it atomically; False (nothing written) when unchanged."""
        if self.current_config() == text:
            return False
        check_config(text, self.bird)
        os.makedirs(os.path.dirname(self.config_path), exist_ok=True)
        write_atomic(self.config_path, text.encode(), mode=0o644)
        return True

    def apply(self, text: str) -> bool:
        """Make BIRD run ``text``: start it, or reconfigure it if the text changed; True if anything was done."""
        changed = self.write_config(text)
        if not self.running():
            self.start()
            return True
        if changed:
            answer = self.control.configure()
            log.info("BIRD %s reconfigured: %s", self.name, answer)
        return changed

    # -- lifecycle -----------------------------------------------------------------------------

    def _argv(self, recover: bool) -> list[str]:
        argv = [self.bird, *(["-R"] if recover else []), "-d", "-c", self.config_path, "-s", self.socket_path]
        argv += ["-P", self.pid_path]
        if self.netns is None:
            return argv
        if "/" in self.netns:
            return ["nsenter", f"--net={self.netns}", "--", *argv]
        return ["ip", "netns", "exec", self.netns, *argv]

    def start(self, timeout: float = 10.0, recover: bool | None = None) -> None:
        """Start BIRD with the written config (or adopt the one already answering on the socket).

        ``recover`` runs BIRD with ``-R`` (graceful restart recovery: the
        routes a previous BIRD left in the kernel stay until the sessions are
        back, at most :data:`GRACEFUL_RESTART_WAIT` s). By default it is used
        when a previous BIRD of this node died without cleaning up (its pid
        file is still there); a fresh start programs routes as soon as each
        session is up, whatever the other peers do.
        """
        if self.running():
            log.info("BIRD %s already runs (pid %s): adopted", self.name, self.pid)
            return
        if self.current_config() is None:
            raise BirdError(f"no BIRD configuration at {self.config_path}: write one before starting BIRD")
        if recover is None:
            recover = os.path.exists(self.pid_path)
        for stale in (self.socket_path, self.pid_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)
        os.makedirs(os.path.dirname(self.socket_path), exist_ok=True)
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        with open(self.log_path, "ab") as output:
            self._child = subprocess.Popen(
                self._argv(recover), stdin=subprocess.DEVNULL, stdout=output, stderr=output, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while not self.running():
            if self._child.poll() is not None:
                code, self._child = self._child.returncode, None
                raise BirdError(f"BIRD {self.name} exited with status {code} while starting: {self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise BirdError(f"BIRD {self.name} did not answer on {self.socket_path} within {timeout} s")
            time.sleep(0.02)
        log.info("BIRD %s started (pid %s%s)", self.name, self.pid, ", recovering" if recover else "")

    def stop(self, timeout: float = 10.0, *, flush: bool = False) -> None:
        """SIGTERM (BIRD sends its peers a Cease), SIGKILL after ``timeout``; idempotent.

        BIRD leaves its kernel routes behind (``persist``, so a BIRD restart
        loses no traffic); ``flush`` deletes them once it is gone, for a node
        that leaves the fabric.
        """
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self._exited(pid) is False:
                if time.monotonic() > deadline:
                    log.warning("BIRD %s (pid %d) ignored SIGTERM for %s s: killed", self.name, pid, timeout)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    deadline = time.monotonic() + timeout
                time.sleep(0.02)
        if self._child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._child.wait(timeout=timeout)
            self._child = None
        for leftover in (self.socket_path, self.pid_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        if flush:
            removed = self.flush_routes()
            log.info("BIRD %s stopped; its %d kernel route(s) removed", self.name, removed)

    def flush_routes(self) -> int:
        """Delete the kernel routes of protocol 12 (``bird``) in BIRD's namespace: BIRD's own by its rule."""
        from pycni.net import netns as net_netns
        from pycni.net import route as net_route

        if self.netns is None:
            ipr = net_netns.iproute_here()
        else:
            ipr = net_netns.iproute(self.netns if "/" in self.netns else f"/run/netns/{self.netns}")
        try:
            removed = 0
            for family in (socket.AF_INET, socket.AF_INET6):
                for route in list(net_route.dump(ipr, family)):
                    if route.proto == RTPROT_BIRD and net_route.delete(ipr, route):
                        removed += 1
            return removed
        finally:
            ipr.close()

    def _exited(self, pid: int) -> bool:
        if self._child is not None and self._child.pid == pid:
            return self._child.poll() is not None
        return not _alive(pid)

    def _log_tail(self, lines: int = 5) -> str:
        try:
            with open(self.log_path, errors="replace") as handle:
                return " | ".join(line.strip() for line in handle.readlines()[-lines:])
        except OSError:
            return "(no log)"
