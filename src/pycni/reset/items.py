"""What reset finds: one small typed record per object, with what it is and why it is pycni's.

Records are pure data (no kernel handles), so the listing can be printed,
compared in tests and removed later in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from pycni.net.route import RouteMsg

# Groups, in the order they are printed and removed: config first (no new pods
# are wired while the rest goes), then kernel objects, then the files on disk.
CONFIG = "CNI config files"
NFTABLES = "nftables"
ROUTES = "routes"
LINKS = "links"
IPAM = "IPAM reservations"
CACHE = "result caches"
STATE = "agent and plugin state"
GROUPS = (CONFIG, NFTABLES, ROUTES, LINKS, IPAM, CACHE, STATE)


@dataclass(frozen=True)
class Item:
    group: str
    name: str  # what the user sees: a path, a link name, a table, a route
    why: str  # why it is pycni's

    @property
    def kind(self) -> str:
        return type(self).__name__.removesuffix("Item").lower()

    def line(self) -> str:
        return f"{self.kind} {self.name}  ({self.why})"


@dataclass(frozen=True)
class PathItem(Item):
    """A file or directory, removed whole."""

    path: str = ""


@dataclass(frozen=True)
class LinkItem(Item):
    index: int = 0


@dataclass(frozen=True)
class RouteItem(Item):
    route: RouteMsg | None = None


@dataclass(frozen=True)
class TableItem(Item):
    family: str = ""
    table: str = ""


@dataclass(frozen=True)
class RuleItem(Item):
    """One rule in a table pycni shares with others (the reference plugins' tables)."""

    family: str = ""
    table: str = ""
    chain: str = ""
    handle: int = 0


@dataclass(frozen=True)
class ChainItem(Item):
    """A chain of pycni's in a shared table: flushed, then deleted (after the rules that jump to it)."""

    family: str = ""
    table: str = ""
    chain: str = ""


def render(items: list[Item], verb: str) -> list[str]:
    """The listing, grouped: a heading per non-empty group, one indented line per object."""
    lines: list[str] = []
    for group in GROUPS:
        members = [item for item in items if item.group == group]
        if members:
            lines.append(f"{group}:")
            lines += [f"  {verb} {item.line()}" for item in members]
    return lines
