"""What an apply did, and running totals of it (for log lines now, Prometheus counters later)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

# An apply's outcome counters, in the order a summary names them.
COUNTERS = ("added", "updated", "removed", "unchanged", "conflicts", "waiting", "failed", "writes")


@dataclass
class ApplyResult:
    """One apply (or resync) of one driver.

    ``added``/``updated``/``removed`` are kernel changes made; ``unchanged``
    desired entries found already right; ``conflicts`` desired entries not
    written because an object pycni does not own holds the key; ``waiting``
    desired entries whose link is missing or down; ``failed`` writes the
    kernel refused (retried on the next apply); ``writes`` netlink requests
    that could change the kernel, sent (a no-change apply sends none);
    ``desired`` entries the driver holds after the apply (what the node should
    have of this kind: the ``pycni_dataplane_objects`` gauge).
    """

    kind: str
    target: str
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    conflicts: int = 0
    waiting: int = 0
    failed: int = 0
    writes: int = 0
    desired: int = 0
    resynced: bool = False
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)

    @property
    def ok(self) -> bool:
        """Nothing failed (conflicts and waiting entries are states, not failures)."""
        return not self.failed

    def summary(self) -> str:
        counts = ", ".join(f"{name} {getattr(self, name)}" for name in COUNTERS if getattr(self, name))
        how = "resync" if self.resynced else "apply"
        return f"{self.kind} {self.target}: {how} in {self.seconds * 1000:.1f} ms: {counts or 'nothing to do'}"


@dataclass
class Counters:
    """Running totals over every apply of a driver (monotonic: fit for Prometheus counters)."""

    applies: int = 0
    resyncs: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    conflicts: int = 0
    waiting: int = 0
    failed: int = 0
    writes: int = 0
    seconds: float = 0.0

    def add(self, result: ApplyResult) -> None:
        self.applies += 1
        self.resyncs += int(result.resynced)
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(result, name))
        self.seconds += result.seconds

    def as_dict(self) -> dict[str, float]:
        return {item.name: getattr(self, item.name) for item in fields(self)}
