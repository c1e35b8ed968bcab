"""The routing backend behind the agent: nothing (``vxlan``, ``none``) or BIRD 2 with BGP (``bird``).

``calico_backend`` (``CALICO_NETWORKING_BACKEND``) picks it, as in calico/node:
with ``bird`` confd renders BIRD's config and BIRD runs beside Felix; with
``vxlan`` or ``none`` there is no BIRD and Felix alone programs routes.

:class:`BirdRouting` is the agent's side of that: on every calculation it
builds :class:`~pycni.fabric.calico.bgp.BGPInputs` from the syncer's state,
asks :func:`~pycni.fabric.calico.bgp.plan` for this node's plan, renders it
with :func:`~pycni.fabric.calico.bird.render` and hands the text to
:class:`~pycni.fabric.calico.bird.BirdProcess`, which starts BIRD, or
reconfigures it only when the text changed (no session flaps otherwise).
BIRD's config, control socket, pid and log file live in the node's run
directory. BIRD inherits the agent's network namespace.

At the agent's exit BIRD is left running unless asked otherwise (``stop``):
a restarted agent adopts it, so BGP sessions and the routes BIRD programs
outlive an agent restart; stopping it sends its peers a Cease and they
withdraw this node's routes at once. A node that leaves for good (its Node
deleted) stops BIRD and removes the kernel routes BIRD left (``flush``), so
no ``proto bird`` route outlives it.
"""

from __future__ import annotations

import logging
import os
from typing import Protocol

from pycni.fabric.calico import bgp, bird
from pycni.fabric.calico.ipam import Network
from pycni.fabric.calico.syncer import ClusterState
from pycni.spec.errors import CNIError

log = logging.getLogger("pycni.fabric.calico.routing")


class Routing(Protocol):
    """What the agent needs of a routing backend."""

    name: str

    def update(self, state: ClusterState) -> None:
        """Bring the routing daemon in line with ``state`` (cheap when nothing it uses changed)."""
        ...

    def close(self, stop: bool, *, leaving: bool = False) -> None:
        """The agent is exiting; ``stop`` the daemon too, or leave it for the next agent.

        ``leaving``: the node left the cluster for good (its Node was
        deleted): stop the daemon and remove every route it programmed.
        """
        ...


class NoRouting:
    """``vxlan`` / ``none``: no BGP; the agent's own routes are all there is."""

    name = "none"

    def update(self, state: ClusterState) -> None:
        return None

    def close(self, stop: bool, *, leaving: bool = False) -> None:
        return None


def bgp_inputs(state: ClusterState, nodename: str, router_id: str = "") -> bgp.BGPInputs:
    """What :func:`bgp.plan` reads, from the syncer's state."""
    blocks: dict[Network, str] = {
        block: affinity
        for (host, block), affinity in state.affinities.items()
        if host == nodename and block.version == 4
    }
    borrowed = sorted(
        {address for info in state.blocks.values() for address, owner in info.borrowed if owner == nodename},
        key=lambda a: (a.version, int(a)),
    )
    return bgp.BGPInputs(
        node=nodename,
        nodes=[state.nodes[name] for name in sorted(state.nodes)],
        configs=[state.bgp_configs[name] for name in sorted(state.bgp_configs)],
        peers=[state.bgp_peers[name] for name in sorted(state.bgp_peers)],
        pools=[state.pools[name] for name in sorted(state.pools)],
        blocks=blocks,
        borrowed=borrowed,
        router_id=router_id,
    )


class BirdRouting:
    """``bird``: one BIRD 2 for this node, its config rendered from the datastore as confd renders it."""

    name = "bird"

    def __init__(self, nodename: str, run_dir: str, router_id: str = "") -> None:
        self.nodename = nodename
        self.router_id = router_id
        self.process = bird.BirdProcess(
            nodename,
            config_path=os.path.join(run_dir, "bird.cfg"),
            socket_path=os.path.join(run_dir, "bird.ctl"),
        )
        self._failure = ""

    def update(self, state: ClusterState) -> None:
        if self.nodename not in state.nodes:
            return  # not registered (yet, or any more): nothing to peer as
        try:
            plan = bgp.plan(bgp_inputs(state, self.nodename, self.router_id))
            self.process.apply(bird.render(plan))
        except CNIError as exc:
            if str(exc) != self._failure:
                log.error("BGP: BIRD could not be configured: %s; retrying at the next change or resync", exc)
                self._failure = str(exc)
            return
        if self._failure:
            log.info("BGP: BIRD is configured again")
            self._failure = ""

    def close(self, stop: bool, *, leaving: bool = False) -> None:
        if leaving:
            self.process.stop(flush=True)  # no proto bird route stays behind a node that is gone
        elif stop:
            self.process.stop()
            log.info("BIRD stopped")
        elif self.process.running():
            log.info("BIRD keeps running (pid %s) for the next agent", self.process.pid)


def routing_for(backend: str, nodename: str, run_dir: str, router_id: str = "") -> Routing:
    if backend == "bird":
        return BirdRouting(nodename, run_dir, router_id)
    return NoRouting()
