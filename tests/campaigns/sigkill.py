"""SIGKILL campaign: processes killed at random points of ADD and DEL; DEL and GC must leave nothing (issue 9).

Run as root from the repository (the full run: 200 kills, about 25 minutes on this 2-core VM)::

    .venv/bin/python -m tests.campaigns.sigkill --kills 200 --seed 1 --frozen --json sigkill.json
    .venv/bin/python -m tests.campaigns.sigkill --kills 200 --seed 1 --replay 37   # kill 37 of that run again
    .venv/bin/python -m tests.campaigns.sigkill --kills 20 --targets worker,supervisor

``--frozen`` runs a copy of the source taken at the start (others may edit the checkout
meanwhile); ``--time-limit`` (default 1500 s) stops starting kills. ``make test`` runs one kill
per target (``tests/integration/test_sigkill_campaign.py``).

Targets (what receives the SIGKILL), in blocks of one kill each in a shuffled order, the phase
turning from block to block:

==========  ==================================================================================
plugin      one plugin executable the runtime is running (``PYCNI_NO_DAEMON=1``), chosen among
            those alive at a delay drawn uniformly over an uncut call (a delegated host-local
            included); the runtime sees it fail and, for ADD, DELs as ``pycni add`` does
runtime     the runtime ``pycni`` and every plugin it runs (its process group, as when a
            runtime's cgroup is killed), at such a delay; nothing of it cleans up
syscall     the runtime or one plugin, right before one of its state-changing system calls
            (drawn uniformly over all those of the call; strace's fault injection,
            :mod:`tests.campaigns.sigkill_syscalls`): the narrow windows time misses
worker      the ``pycni daemon`` worker serving the call, once the call has spent a time drawn
            uniformly over its time in workers (the shims reach the campaign's own daemon)
supervisor  the daemon's main process at such a moment; its workers must finish the call and
            exit; the daemon is then started again, as systemd would
flanneld    node 1's agent (two nodes, vxlan, etcd) while a pod is added or deleted there
            through the flannel plugin (phases ADD, DEL), or before one of the effects of its
            own start-up (phase ``start``, through strace); then restarted
==========  ==================================================================================

The chain: bridge (host-local, IPv4 and IPv6, ipMasq, isGateway), tuning (sysctls, MTU,
promisc, its own dataDir), portmap (a host port per container), firewall (``same-bridge``
isolation) and bandwidth (ingress and egress: a TBF and an ifb).

Each kill, on a node that is a fresh network namespace with its own state directories (result
cache, host-local, tuning; flannel's), two bystander attachments, and a new container:

* phase ADD: ``pycni add`` with the kill; phase DEL: a whole ADD, then ``pycni del`` with the
  kill. Everything the kill left running finishes (the process group is waited for), then
  ``pycni del`` as a runtime repeats it (up to 3 times, until it exits 0).
* The node is compared with its steady state (the bystanders only: anything they lost counts
  too) and the container with what it was when new. Anything left is run through ``pycni gc``
  keeping the bystanders (also every ``--gc-every`` kills); what GC leaves too is a leak,
  charged to this kill only. For flanneld the comparison waits up to 30 s (the agent's resync)
  and the bystander pods on both nodes must reach each other again.
* At the end, ``pycni gc --all`` and the node against the FRESH one taken before the first
  ADD: only the bridge (and flanneld's vxlan device, which flanneld keeps), their addresses,
  routes and sysctls, host-local's lock and cursors, and the forwarding switches the bridge
  plugin turns on (Go's bridge leaves all of these too) may differ.

Compared (:mod:`tests.campaigns.sigkill_state`): links, addresses, routes and rules of every
table, tc qdiscs, permanent neighbours and FDB entries, the nftables ruleset (handles and
counters left out), every ``net.*`` sysctl, every file under the state directories, pycni's
attachment records; for flanneld also node 2, the subnet leases in etcd and etcd's own leases
(one attached to no key is an orphan). The chain's node is :mod:`tests.campaigns.sigkill_chain`,
flanneld's :mod:`tests.campaigns.sigkill_flannel`, processes and killers
:mod:`tests.campaigns.sigkill_common`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.campaigns import sigkill_syscalls as syscalls
from tests.campaigns.sigkill_chain import ChainCampaign
from tests.campaigns.sigkill_common import Kill, bench
from tests.campaigns.sigkill_flannel import FlannelCampaign
from tests.support.progress import progress as show_progress

TARGETS = ("plugin", "runtime", "syscall", "worker", "supervisor", "flanneld")
CHAIN_TARGETS = TARGETS[:5]
PHASES = ("ADD", "DEL")


def schedule(seed: int, index: int, targets: tuple[str, ...]) -> Kill:
    """Kill ``index`` of the run with ``seed``: each block of kills has every target once, in a shuffled order;
    a target's phase turns from block to block, so targets and phases are evenly covered."""
    block, slot = divmod(index, len(targets))
    order = list(targets)
    random.Random(f"{seed}:block:{block}").shuffle(order)
    target = order[slot]
    phases = phases_of(target)
    phase = phases[(block + random.Random(f"{seed}:{target}").randrange(len(phases))) % len(phases)]
    return Kill(index, target, phase, random.Random(f"{seed}:kill:{index}").random())


def phases_of(target: str) -> tuple[str, ...]:
    return (*PHASES, "start") if target == "flanneld" else PHASES


def leak_class(line: str) -> str:
    """A short name for what a leftover line is, for the table of leak classes."""
    _sign, _, rest = line.partition(" ")
    where = "container " if rest.startswith("container ") else ""
    rest = rest.removeprefix("container ")
    _sign, _, rest = rest.partition(" ") if where else ("", "", rest)
    part, _, text = rest.partition(": ")
    part = part.split(" ")[-1]  # "node1 links" -> "links"
    if part == "files":
        if "/.tmp" in text or ".tmp" in text.split(" ")[0]:
            return f"{where}temporary file"
        for name, label in (("host-local/", "reservation"), ("cache/", "cache file"), ("tuning/", "tuning file")):
            if text.startswith(name) or f"/{name}" in text:
                return f"{where}{label}"
        return f"{where}state file"
    if part == "links" and " bwp" in f" {text}":
        return f"{where}ifb"
    if part == "nftables":
        return f"{where}nft {text.split(' ')[0]}"
    return f"{where}{part}"


def summarize(kills: list[Kill]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for kill in kills:
        row = rows.setdefault(
            (kill.target, kill.phase),
            {"target": kill.target, "phase": kill.phase, "attempts": 0, "kills": 0, "left_after_del": 0,
             "cleaned_by_gc": 0, "leaks": 0, "problems": 0, "call_failed": 0, "kill_ms": [], "window_ms": []},
        )  # fmt: skip
        row["attempts"] += 1
        if not kill.counted:
            continue
        row["kills"] += 1
        row["left_after_del"] += bool(kill.left_after_del)
        row["cleaned_by_gc"] += bool(kill.left_after_del) and not kill.leaks
        row["leaks"] += bool(kill.leaks)
        row["problems"] += bool(kill.problems)
        row["call_failed"] += kill.call_rc not in (0, None)
        row["kill_ms"].append(kill.kill_ms)
        row["window_ms"].append(kill.window_ms)
        if kill.effects:
            row.setdefault("effects", []).append(kill.effect)
    for row in rows.values():
        for key in ("kill_ms", "window_ms", "effects"):
            values = row.pop(key, [])
            row[f"{key}_range"] = [min(values), max(values)] if values else []
        row["kill_at"] = where_killed(row)
    return sorted(rows.values(), key=lambda r: (TARGETS.index(r["target"]), ("ADD", "DEL", "start").index(r["phase"])))


def where_killed(row: dict[str, Any]) -> str:
    """The span of kill points of a row: milliseconds into the call (time in workers for the daemon), or effects."""
    if row["effects_range"]:
        first, last = row["effects_range"]
        return f"effect {first}-{last}"
    if row["kill_ms_range"]:
        first, last = row["kill_ms_range"]
        return f"{first:.0f}-{last:.0f} ms of {max(row['window_ms_range']):.0f}"
    return ""


def leak_classes(kills: list[Kill]) -> dict[str, dict[str, Any]]:
    """Per class: how many kills left it after DEL, how many after GC too, and one example each."""
    classes: dict[str, dict[str, Any]] = {}
    for kill in kills:
        for key, lines in (("after_del", kill.left_after_del), ("after_gc", kill.leaks)):
            for name in sorted({leak_class(line) for line in lines}):
                entry = classes.setdefault(name, {"after_del": 0, "after_gc": 0, "example": "", "kills": []})
                entry[key] += 1
                if not entry["example"]:
                    entry["example"] = next(line for line in lines if leak_class(line) == name)[:300]
                if kill.index not in entry["kills"]:
                    entry["kills"].append(kill.index)
    return classes


def run_campaign(
    kills: int,
    seed: int,
    targets: tuple[str, ...] = TARGETS,
    time_limit: float = 1500.0,
    gc_every: int = 10,
    replay: int | None = None,
    progress: bool = False,
    frozen: bool = False,
    aims: Sequence[tuple[str, syscalls.Aim]] = (),
) -> dict[str, Any]:
    """Kill until ``kills`` kills landed (or ``time_limit`` seconds passed); the report as a dict.

    ``aims`` are syscall kills on the chain at exact points, (phase, aim), run after those.
    """
    started = time.monotonic()
    campaigns: dict[str, ChainCampaign | FlannelCampaign] = {}
    done: list[Kill] = []
    final: dict[str, Any] = {}
    stopped = ""
    setup_seconds = 0.0
    with bench(frozen) as env:
        try:
            chain = flannel = None
            if aims or any(t in CHAIN_TARGETS for t in targets):
                chain = ChainCampaign(env.pool, env.dir("chain"), env.pycni, env.plugin_dir, gc_every)
                campaigns["chain"] = chain
                chain.start()
            if "flanneld" in targets:
                flannel = FlannelCampaign(env.pool, env.dir("fabric"), env.pycni, env.plugin_dir, gc_every)
                campaigns["flanneld"] = flannel
                flannel.start()
            setup_seconds = time.monotonic() - started

            total = (1 if replay is not None else kills) + len(aims)
            with show_progress("SIGKILL campaign", total=total, unit="kill", enabled=progress) as bar:

                def one(kill: Kill, aim: syscalls.Aim | None = None) -> None:
                    began = time.monotonic()
                    try:
                        if kill.target == "flanneld":
                            assert flannel is not None
                            flannel.run(kill)
                        else:
                            assert chain is not None
                            chain.run(kill, aim)
                    except Exception as exc:  # noqa: BLE001 - a harness fault is the kill's problem; the campaign goes on
                        kill.problems.append(f"campaign harness: {type(exc).__name__}: {exc}")
                    kill.seconds = round(time.monotonic() - began, 2)
                    done.append(kill)
                    # A kill that missed (the call ended first) does not count towards the total; the replay
                    # and aimed kills count as they are.
                    bar.advance(int(kill.counted or aim is not None or replay is not None), detail=kill_detail(kill))
                    if verdict_of(kill) != "ok":
                        bar.note(progress_line(kill))

                if replay is not None:
                    one(schedule(seed, replay, targets))
                index = 0
                while replay is None and sum(k.counted for k in done) < kills:
                    if index >= 3 * kills:
                        stopped = f"only {sum(k.counted for k in done)} of {index} attempts killed something"
                        break
                    if time.monotonic() - started > time_limit:
                        stopped = f"time limit of {time_limit:.0f} s reached"
                        break
                    one(schedule(seed, index, targets))
                    index += 1
                for number, (phase, aim) in enumerate(aims, start=len(done)):
                    one(Kill(number, "syscall", phase, 0.0), aim)
            for name, campaign in campaigns.items():
                final[name] = campaign.finish()
        finally:
            for campaign in campaigns.values():
                with contextlib.suppress(Exception):
                    campaign.close()
    windows = {name: c.windows.summary() for name, c in campaigns.items()}
    return {
        "campaign": "sigkill",
        "seed": seed,
        "kills_asked": kills,
        "targets": list(targets),
        "kills": sum(k.counted for k in done),
        "attempts": len(done),
        "leaks": sum(bool(k.leaks) for k in done),
        "left_after_del": sum(bool(k.left_after_del) for k in done),
        "problems": sum(bool(k.problems) for k in done),
        "stopped": stopped,
        "seconds": round(time.monotonic() - started, 1),
        "setup_seconds": round(setup_seconds, 1),
        "windows_ms": windows,
        "summary": summarize(done),
        "leak_classes": leak_classes(done),
        "final": final,
        "kill_log": [dataclasses.asdict(k) for k in done],
        "rerun": [rerun_command(seed, targets, k.index) for k in done if k.leaks or k.problems],
    }


def verdict_of(kill: Kill) -> str:
    return "LEAK" if kill.leaks else "gc" if kill.left_after_del else "PROB" if kill.problems else "ok"


def kill_detail(kill: Kill) -> str:
    """The last kill, in a few words, for the progress bar."""
    return f"kill {kill.index}: {kill.target} {kill.phase} {verdict_of(kill) if kill.counted else 'missed'}"


def progress_line(kill: Kill) -> str:
    """A kill's whole line, printed for those with something to say (left after DEL, leaks, problems)."""
    verdict = verdict_of(kill)
    what = kill.killed or "(missed)"
    line = (
        f"#{kill.index:<4} {kill.target:10} {kill.phase:5} {kill.kill_ms:7.1f}/{kill.window_ms:7.1f} ms "
        f"{what[:34]:34} rc={kill.call_rc} del={kill.del_rcs} {verdict:4} {kill.seconds:5.1f} s"
    )
    details = [*kill.leaks[:6], *kill.problems[:3]] or kill.left_after_del[:3]
    return "\n".join([line, *(f"      {d[:240]}" for d in details)])


def rerun_command(seed: int, targets: tuple[str, ...], index: int) -> str:
    return f".venv/bin/python -m tests.campaigns.sigkill --seed {seed} --targets {','.join(targets)} --replay {index}"


def render_table(report: dict[str, Any]) -> str:
    lines = [
        "| kill target | phase | kills | left after DEL | cleaned by GC | leaks after GC | other problems | "
        "call failed | kill points |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in report["summary"]:
        lines.append(
            f"| {row['target']} | {row['phase']} | {row['kills']} | {row['left_after_del']} | {row['cleaned_by_gc']} | "
            f"{row['leaks']} | {row['problems']} | {row['call_failed']} | {row['kill_at']} |"
            if row["kills"]
            else f"| {row['target']} | {row['phase']} | 0 | | | | | | |"
        )
    lines.append("")
    lines.append(
        f"{report['kills']} kills ({report['attempts']} attempts), {report['leaks']} with leaks after GC, "
        f"{report['left_after_del']} with something left after DEL, {report['problems']} with other problems, "
        f"{report['seconds']} s{'; stopped: ' + report['stopped'] if report['stopped'] else ''}"
    )
    for name, entry in report["leak_classes"].items():
        lines.append(
            f"leak class {name}: after DEL {entry['after_del']}, after GC {entry['after_gc']}: {entry['example']}"
        )
    for name, final in report["final"].items():
        left = final["left_after_gc_all"]
        lines.append(
            f"{name} after gc --all vs the fresh node: {len(left)} differences {left[:8]}; {final['problems'][:5]}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.campaigns.sigkill", description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=200, help="kills to land (default 200)")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="random seed (default: the time)")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated subset of {','.join(TARGETS)}")
    parser.add_argument("--time-limit", type=float, default=1500.0, help="seconds; no kill starts after (default 1500)")
    parser.add_argument("--gc-every", type=int, default=10, help="run pycni gc at least every N kills (default 10)")
    parser.add_argument("--replay", type=int, metavar="INDEX", help="run only kill INDEX of this seed's schedule")
    parser.add_argument(
        "--aim",
        action="append",
        metavar="PROCESS:SYSCALL:K:VERB",
        help="only a syscall kill exactly there (repeatable), e.g. host-local:rename:1:ADD: before host-local's "
        "first rename(2) in ADD (process: runtime or a plugin type)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the full report here")
    parser.add_argument("--render", metavar="FILE", help="print the table of a report written with --json, and exit")
    parser.add_argument(
        "--frozen", action="store_true", help="run a copy of the source taken at the start (others edit the checkout)"
    )
    opts = parser.parse_args(argv)
    if opts.render:
        report = json.loads(Path(opts.render).read_text())
        kills = [Kill(**entry) for entry in report["kill_log"]]
        report |= {"summary": summarize(kills), "leak_classes": leak_classes(kills)}
        print(render_table(report))
        return 0
    targets = tuple(t for t in opts.targets.split(",") if t)
    aims = []
    for text in opts.aim or []:
        try:
            process, syscall, occurrence, verb = text.split(":")
            aims.append((verb.upper(), syscalls.Aim(process, 0, 0, syscall, int(occurrence))))
        except ValueError:
            parser.error(f"--aim wants PROCESS:SYSCALL:K:VERB, e.g. host-local:rename:1:ADD, not {text!r}")
    if aims:
        targets, opts.kills = ("syscall",), 0
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        parser.error(f"unknown targets {unknown}; choose from {', '.join(TARGETS)}")
    if os.geteuid() != 0:
        print("the SIGKILL campaign needs root (network namespaces)", file=sys.stderr)
        return 2
    print(f"sigkill campaign: seed {opts.seed}, targets {','.join(targets)}", file=sys.stderr)
    report = run_campaign(
        opts.kills, opts.seed, targets, opts.time_limit, opts.gc_every, opts.replay, True, opts.frozen, aims
    )
    report["command"] = " ".join(["python -m tests.campaigns.sigkill", *(argv if argv is not None else sys.argv[1:])])
    if opts.json:
        Path(opts.json).write_text(json.dumps(report, indent=1) + "\n")
    print(render_table(report))
    for command in report["rerun"][:20]:
        print(f"rerun: {command}")
    failed = (
        report["leaks"]
        or report["problems"]
        or any(f["left_after_gc_all"] or f["problems"] for f in report["final"].values())
    )
    return 1 if failed else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
