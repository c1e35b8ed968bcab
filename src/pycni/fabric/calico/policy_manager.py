"""The node agent's policy manager: the datastore's policy as this node's nftables table, one transaction per change.

Felix's policy side, for one node (issue 11). Each datastore change the
:class:`~.policy_syncer.PolicyFollower` reports is turned into
:class:`~.policy_state.PolicyInputs` (every policy, tier, profile, network set,
Kubernetes object and WorkloadEndpoint of the cluster), the evaluator of
:mod:`pycni.policy`, and the table :func:`pycni.policy.nft_render.render` makes
for this node's own workload interfaces. The kernel is moved from the last
table to the new one by :func:`pycni.nft.objects.diff`, one atomic transaction
of only what changed (a relabelled pod on another node changes set elements
here, nothing else); a change that renders the same table writes nothing.

Start: when no table of that name exists, one transaction creates the
fail-closed skeleton (base chains, dispatch chains with empty maps), so from
the first write an unknown ``cali*`` interface is dropped. When an earlier
agent left its table (a restart), it stays as it is until the first complete
listing, which replaces it in one transaction: its pods keep the policy they
had, unknown interfaces stay dropped, and nothing opens while the agent
starts. Established connections keep flowing throughout (conntrack is
accepted before dispatch). A refused transaction (the kernel is unchanged:
all or nothing) is logged and retried with a full recreate after
:attr:`PolicyManager.retry` seconds.

Exit: the table stays (the issue's fail closed "while the agent is down",
as Felix leaves its rules): a new pod whose interface the table does not
know gets no traffic until an agent runs again. :meth:`PolicyManager.remove`
deletes it, for a node that left the cluster and for ``pycni reset``.

Everything is in one thread of the agent (the agent is in the node's network
namespace, so the transactions are too); :meth:`PolicyManager.sync` is the
step, callable directly with an in-memory ruleset (:mod:`pycni.nft.fake`).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pycni.datastore import Datastore, KeyValue
from pycni.fabric.calico.policy_state import PREFIXES, DecodeCache, PolicyInputs, build, wanted
from pycni.fabric.calico.policy_syncer import PolicyFollower
from pycni.fabric.calico.resources import ResourceClient
from pycni.metrics.policy import PolicyMetrics
from pycni.nft import NftError, engine, list_objects
from pycni.nft.objects import Table, Transaction, create, diff
from pycni.policy import nft_names, nft_render
from pycni.policy.cluster import ClusterState
from pycni.spec.errors import CNIError

log = logging.getLogger("pycni.fabric.calico.policy")
Apply = Callable[[Transaction], None]
Holds = Callable[[str, str], bool]  # (family, table name): whether the kernel has that table
Listing = Callable[[str, str], str | None]  # (family, table name): its listing, "" if none, None if unreadable


def _kernel_apply(tx: Transaction) -> None:
    tx.apply("apply the policy table")


def _kernel_holds(family: str, name: str) -> bool:
    return bool(list_objects("table", family, name))


def _kernel_listing(family: str, name: str) -> str | None:
    """The table as the kernel lists it ("" if there is none, None if it could not be listed): what drift is."""
    status, output, errors = engine.execute(f"list table {family} {name}")
    if status == 0:
        return output
    return "" if "No such file or directory" in errors else None


def skeleton(options: nft_render.Options | None = None) -> Table:
    """The table with no endpoints: every ``cali*`` interface dropped both ways."""
    return nft_render.render(ClusterState().evaluator(), {}, options)


def recreate(table: Table) -> Transaction:
    """One transaction replacing whatever table of that name exists with ``table`` (add first: delete needs it)."""
    tx = Transaction(table.family, table.name)
    tx.add_table()
    tx.delete_table()
    tx.ops += create(table).ops
    return tx


@dataclass(frozen=True)
class Counts:
    """What a rendered table holds: for ``pycni policy show`` and the log."""

    chains: int
    rules: int
    sets: int
    elements: int

    @classmethod
    def of(cls, table: Table) -> Counts:
        rules = sum(len(c.rules) for c in table.chains.values())
        elements = sum(len(s.elements) for s in table.sets.values()) + sum(len(m.elements) for m in table.maps.values())
        return cls(len(table.chains), rules, len(table.sets), elements)


def render(inputs: PolicyInputs, options: nft_render.Options | None = None) -> Table:
    """This node's table for ``inputs``."""
    return nft_render.render(inputs.evaluator(), inputs.interfaces, options, inputs.host_interfaces)


class PolicyManager:
    """This node's policy table, kept in line with the datastore.

    ``apply`` runs a transaction and ``holds`` says whether a table exists (default: the kernel's).
    """

    retry = 2.0

    def __init__(
        self,
        store: Datastore,
        nodename: str,
        *,
        felix_env: Mapping[str, Any] | None = None,
        apply: Apply = _kernel_apply,
        holds: Holds = _kernel_holds,
        listing: Listing = _kernel_listing,
        options: nft_render.Options | None = None,
        on_ready: Callable[[], None] = lambda: None,
        metrics: PolicyMetrics | None = None,
        refresh: float = 90.0,
    ) -> None:
        self.store = store
        self.nodename = nodename
        self.felix_env = dict(felix_env or {})
        self.options = options or nft_render.Options()
        self._apply = apply
        self._holds = holds
        self._listing = listing
        self.refresh = refresh  # seconds between drift checks (Felix re-reads its tables every 90 s)
        self._written: str | None = None  # the kernel's listing right after this manager's last write
        self._on_ready = on_ready
        self.metrics = metrics if metrics is not None else PolicyMetrics()
        self._decoder = ResourceClient(store)
        self._cache = DecodeCache()  # unchanged keys are not decoded again
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.follower = PolicyFollower(store, PREFIXES, self._wake.set, keep=wanted)
        self.table: Table | None = None  # what the kernel holds, as far as this manager knows
        self.generation = -1
        self.writes = 0  # transactions applied
        self.in_sync = threading.Event()  # the first complete listing is in the kernel
        self._problems: dict[str, str] = {}

    # -- the step --------------------------------------------------------------------------

    def take_over(self) -> None:
        """Start-up: keep a table an earlier agent left until the first sync replaces it; else the skeleton."""
        if self._holds(nft_names.FAMILY, self.options.table):
            self.table = None  # not known here: the first sync recreates it in one transaction
            log.info("policy table %s of an earlier agent kept until the first sync replaces it", self.options.table)
            return
        table = skeleton(self.options)
        self._write(create(table))
        self.table = table
        log.info("policy table %s installed: unknown workload interfaces are dropped", table.name)

    def sync(self, kvs: Iterable[KeyValue]) -> bool:
        """Bring the table in line with the keys given; whether a transaction was written."""
        started = time.monotonic()
        inputs = build(kvs, self.nodename, self._decoder, self.felix_env, self._cache)
        self._report(inputs.problems)
        table = render(inputs, self.options)
        if table == self.table:
            return False
        tx = recreate(table) if self.table is None else diff(self.table, table)
        self._write(tx)
        before, self.table = self.table, table
        counts = Counts.of(table)
        self.metrics.update_duration.observe(time.monotonic() - started)
        self.metrics.holds(len(inputs.interfaces), counts.chains, counts.rules, counts.sets, counts.elements)
        if before is None or before.maps != table.maps:
            heps = f", {len(inputs.host_interfaces)} host endpoint(s)" if inputs.host_interfaces else ""
            log.info(
                "policy: %d local endpoint(s)%s, %d chain(s), %d rule(s), %d set(s) (%d operation(s))",
                len(inputs.interfaces),
                heps,
                counts.chains,
                counts.rules,
                counts.sets,
                len(tx),
            )
        else:
            log.debug("policy: %d operation(s) applied", len(tx))
        return True

    def remove(self) -> bool:
        """Delete the table (in the caller's namespace), whoever wrote it; whether there was one."""
        if self.table is None and not self._holds(nft_names.FAMILY, self.options.table):
            return False
        tx = Transaction(nft_names.FAMILY, self.options.table)
        tx.add_table()
        tx.delete_table()
        self._write(tx)
        self.table = None
        return True

    def _write(self, tx: Transaction) -> None:
        self._apply(tx)
        self.writes += 1
        self.metrics.written(len(tx))
        self._written = self._listing(tx.family, tx.table)

    def check_drift(self) -> bool:
        """Repair the table if something else changed it since the last write; whether it had drifted.

        Someone's ``nft flush ruleset``, a deleted chain or an added rule would
        otherwise stand until the next policy change: the table is listed
        and, if it is not what this manager left, recreated in one transaction.
        """
        if self.table is None or self._written is None:
            return False
        now = self._listing(self.table.family, self.table.name)
        if now is None or now == self._written:  # unreadable now: nothing known, look again next time
            return False
        log.warning("policy table %s was changed outside calico-node: rewriting it", self.table.name)
        self.metrics.drift_repairs.inc()
        self._write(recreate(self.table))
        return True

    def _report(self, problems: dict[str, str]) -> None:
        for key, problem in sorted(problems.items()):
            if self._problems.get(key) != problem:
                log.warning("policy: ignoring %s: %s", key, problem)
        self._problems = problems

    # -- the thread ------------------------------------------------------------------------

    def start(self) -> None:
        """Take the table over here (the caller's namespace), then follow the datastore in a thread."""
        self.take_over()
        self.follower.start()
        self._thread = threading.Thread(target=self._loop, name="policy-manager", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self.follower.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        failed = False
        next_check = time.monotonic() + self.refresh
        while not self._stopping.is_set():
            until_check = max(0.0, next_check - time.monotonic())
            self._wake.wait(min(self.retry, until_check) if failed else until_check)
            self._wake.clear()
            if self._stopping.is_set():
                return
            if not failed and time.monotonic() >= next_check:  # every refresh interval, busy or not
                next_check = time.monotonic() + self.refresh
                failed = not self._guarded(self.check_drift)  # then any change that woke us, as always
            snapshot = self.follower.snapshot()
            if snapshot is None or (snapshot[0] == self.generation and not failed):
                continue
            generation, kvs = snapshot
            if not self._guarded(functools.partial(self.sync, kvs)):
                failed = True  # a failed drift repair or sync: the whole table is written again on the retry
                continue
            failed = False
            self.generation = generation
            if not self.in_sync.is_set():
                log.info("policy in sync at generation %d: %d write(s)", generation, self.writes)
                self.in_sync.set()
                self._on_ready()

    def _guarded(self, step: Callable[[], object]) -> bool:
        """Run a step of the thread; on failure log, count, forget the table (rewritten on retry) and say so."""
        try:
            step()
        except (NftError, CNIError, OSError, ValueError) as exc:
            log.error("policy: could not apply the policy table: %s; retrying in %g s", exc, self.retry)
        except Exception:  # a bug must not silently freeze policy: say so, and keep retrying
            log.exception("policy: internal error while rendering or applying; retrying in %g s", self.retry)
        else:
            return True
        self.metrics.errors.inc()
        self.table = None  # the kernel's table is unknown now: the next write recreates it
        return False
