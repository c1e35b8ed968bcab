"""What a kill may leave behind, as lines: a namespace's kernel objects, state files, attachment records."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.netns import NetnsPool, run
from tests.support.node import differences
from tests.support.records import attachment_records, netns_cookie

VOLATILE_SYSCTLS = re.compile(r"nf_conntrack_count$|\.stable_secret$|\.base_reachable_time$|neigh\..*\.ucast_solicit")
RECORDS_ROOT = "/run/pycni/attachments"  # pycni.nft.attachments.ROOT
LOCKS_ROOT = "/run/pycni/locks"  # pycni.nft.LOCK_DIR


def _ns(ns: str, *cmd: str) -> str:
    return run(*cmd, netns=ns, timeout=30).stdout


def _nft_view(ns: str) -> list[str]:
    """The ruleset as sorted lines of JSON: tables, chains, rules (in chain order), sets and each element."""
    out = _ns(ns, "nft", "-j", "list", "ruleset")
    lines: list[str] = []
    position: dict[tuple[str, str, str], int] = {}
    for obj in json.loads(out).get("nftables", []) if out.strip() else []:
        for kind, body in obj.items():
            if kind == "metainfo":
                continue
            fields = {k: v for k, v in body.items() if k not in ("handle", "elem")}
            if kind == "rule":
                key = (fields["family"], fields["table"], fields["chain"])
                position[key] = position.get(key, 0) + 1
                fields["position"] = position[key]
            lines.append(f"{kind} {_drop_counters(json.dumps(fields, sort_keys=True))}")
            for element in body.get("elem", []) if kind in ("set", "map") else []:
                where = f"{fields['family']} {fields['table']} {fields['name']}"
                lines.append(f"element {where} {_drop_counters(json.dumps(element, sort_keys=True))}")
    return sorted(lines)


def _drop_counters(text: str) -> str:
    text = re.sub(r'"counter": \{[^}]*\}', '"counter": {}', text)
    return re.sub(r'"(expires|packets|bytes)": \d+', r'"\1": 0', text)


def sysctls(ns: str) -> dict[str, str]:
    """Every ``net.*`` sysctl of the namespace (those that change by themselves left out)."""
    out = run("sysctl", "-a", netns=ns, check=False, timeout=30).stdout
    values = {}
    for line in out.splitlines():
        key, sep, value = line.partition(" = ")
        if sep and key.startswith("net.") and not VOLATILE_SYSCTLS.search(key):
            values[key] = " ".join(value.split())
    return values


def kernel_state(ns: str) -> dict[str, list[str]]:
    """What an attachment can leave in a namespace's kernel, as lines (interface indexes and counters removed)."""
    links = re.sub(r"^\d+: ", "", _ns(ns, "ip", "-o", "link", "show"), flags=re.M)
    qdiscs = _ns(ns, "tc", "qdisc", "show")
    fdb = [line for line in _ns(ns, "bridge", "fdb", "show").splitlines() if "permanent" in line or " dst " in line]
    return {
        "links": sorted(re.sub(r"@if\d+", "@if", links).splitlines()),
        "addresses": sorted(re.sub(r"^\d+: ", "", _ns(ns, "ip", "-o", "addr", "show"), flags=re.M).splitlines()),
        "routes": sorted(
            (_ns(ns, "ip", "route", "show", "table", "all") + _ns(ns, "ip", "-6", "route", "show", "table", "all"))
            .strip()
            .splitlines()
        ),
        "rules": sorted((_ns(ns, "ip", "rule", "show") + _ns(ns, "ip", "-6", "rule", "show")).strip().splitlines()),
        "qdiscs": sorted(re.sub(r"qdisc (\S+) [0-9a-f]+: ", r"qdisc \1 ", qdiscs).splitlines()),
        "neighbours": sorted(_ns(ns, "ip", "neigh", "show", "nud", "permanent").splitlines()),
        "fdb": sorted(fdb),
        "nftables": _nft_view(ns),
        "sysctls": sorted(f"{k} = {v}" for k, v in sysctls(ns).items()),
    }


def files_state(roots: dict[str, Path], by_name_only: tuple[str, ...] = ()) -> list[str]:
    """Every entry under the state directories: kind and content (a digest), names matching ``by_name_only`` aside."""
    found = []
    for label, root in roots.items():
        for directory, dirs, files in os.walk(root):
            for name in sorted(dirs + files):
                path = Path(directory, name)
                rel = f"{label}/{path.relative_to(root)}"
                if path.is_symlink() or not path.is_file():
                    found.append(f"{rel} ({'directory' if path.is_dir() else 'other'})")
                elif any(re.search(pattern, name) for pattern in by_name_only):
                    found.append(rel)
                else:
                    found.append(f"{rel} {hashlib.sha256(path.read_bytes()).hexdigest()[:12]}")
    return sorted(found)


_cookies: dict[str, str] = {}


def records_state(ns: str) -> list[str]:
    """pycni's attachment records of namespace ``ns`` (a dead namespace's with the same inode left out)."""
    if ns not in _cookies:
        _cookies[ns] = netns_cookie(ns)
    return attachment_records(ns, _cookies[ns])


def diff(before: dict[str, list[str]], after: dict[str, list[str]]) -> list[str]:
    """``+ part: line`` for what is new, ``- part: line`` for what is gone."""
    lines = []
    joined_before = {part: "\n".join(v) for part, v in before.items()}
    joined_after = {part: "\n".join(after.get(part, [])) for part in before}
    for part, (gone, new) in differences(joined_before, joined_after).items():
        lines += [f"+ {part}: {line}" for line in new] + [f"- {part}: {line}" for line in gone]
    return lines


def settled(look: Callable[[], dict[str, list[str]]]) -> dict[str, list[str]]:
    """A state once two looks a second apart agree (new IPv6 addresses leave "tentative", routes follow)."""
    state = look()
    for _ in range(20):
        time.sleep(1.0)
        again = look()
        tentative = any("tentative" in line for part, lines in again.items() if "addresses" in part for line in lines)
        if again == state and not tentative:
            return state
        state = again
    raise RuntimeError(f"the state does not settle: {diff(state, look())[:5]}")


def drop_namespace(pool: NetnsPool, name: str) -> None:
    """Delete one namespace of ``pool`` now (the pool removes the rest at the end)."""
    run("ip", "netns", "del", name, check=False)
    with contextlib.suppress(ValueError):
        pool.names.remove(name)


def remove_namespace_records(inode: int) -> None:
    """Records and lock files pycni keeps under /run for a namespace we made (the node's, now gone)."""
    for path in Path(RECORDS_ROOT).glob(f"*-{inode}"):
        shutil.rmtree(path, ignore_errors=True)
    for path in Path(LOCKS_ROOT).glob(f"*-{inode}.lock"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
