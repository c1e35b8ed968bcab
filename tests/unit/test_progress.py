"""The benchmarks' and campaigns' progress: a few plain lines in a log, a bar on a real terminal."""

from __future__ import annotations

import fcntl
import io
import os
import re
import struct
import subprocess
import sys
import termios
import threading
import tty
from pathlib import Path

import pytest

from tests.support.progress import progress

REPO = Path(__file__).resolve().parents[2]


class FakeClock:
    """Seconds that pass only when the test says so: the ETA is then exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_are_bounded_and_show_count_elapsed_and_eta() -> None:
    out, clock = io.StringIO(), FakeClock()
    with progress("SIGKILL campaign", total=200, stream=out, clock=clock) as bar:
        for kill in range(200):
            clock.now += 2.0  # every kill takes 2 s
            bar.advance(detail=f"kill {kill}: worker")
    lines = out.getvalue().splitlines()
    assert len(lines) == 20, lines  # every 5 % (19) and the last one
    assert lines[0] == "SIGKILL campaign: 10/200 (5%), 20 s elapsed, ETA 380 s, kill 9: worker"
    assert lines[9] == "SIGKILL campaign: 100/200 (50%), 200 s elapsed, ETA 200 s, kill 99: worker"
    assert lines[-1] == "SIGKILL campaign: done, 200/200 in 400 s"
    counts = [int(m.group(1)) for line in lines[:-1] if (m := re.search(r": (\d+)/200 ", line))]
    assert counts == list(range(10, 200, 10))


def test_plain_lines_for_few_steps_and_big_jumps() -> None:
    out = io.StringIO()
    with progress("fabric throughput", total=3, stream=out) as bar:
        for _ in range(3):
            bar.advance()
    lines = out.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines[:-1]] == ["fabric throughput: 1/3", "fabric throughput: 2/3"]
    assert lines[-1].startswith("fabric throughput: done, 3/3 in ")

    out = io.StringIO()
    with progress("jump", total=1000, stream=out, lines=10) as bar:
        bar.advance(550)  # past five milestones at once: one line, not five
        bar.advance(0, detail="a detail alone prints nothing")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("jump: 550/1000 (55%)"), lines
    assert lines[1].startswith("jump: ended at 550/1000 after ")


def test_the_last_line_says_why_it_stopped() -> None:
    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt), progress("soak", total=10, stream=out) as bar:
        bar.advance(3)
        raise KeyboardInterrupt
    assert out.getvalue().splitlines()[-1].startswith("soak: stopped at 3/10 after ")
    assert out.getvalue().rstrip().endswith("(KeyboardInterrupt)")


def test_advance_from_threads_counts_every_step() -> None:
    out = io.StringIO()
    with progress("concurrency", total=400, stream=out) as bar:

        def client() -> None:
            for _ in range(100):
                bar.advance()

        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    lines = out.getvalue().splitlines()
    assert bar.count == 400
    assert len(lines) == 20 and lines[-1].startswith("concurrency: done, 400/400"), lines


def test_notes_go_where_asked_and_nothing_at_all_when_disabled() -> None:
    out, other = io.StringIO(), io.StringIO()
    with progress("corruption", total=2, stream=out) as bar:
        bar.note("round 1 cache:empty FAIL", file=other)
        bar.note("a finding")
        bar.advance(2)
    assert other.getvalue() == "round 1 cache:empty FAIL\n"
    assert out.getvalue().splitlines()[0] == "a finding"

    quiet = io.StringIO()
    with progress("off", total=5, stream=quiet, enabled=False) as bar:
        bar.advance(5, detail="x")
        bar.note("not printed")
    assert quiet.getvalue() == ""
    assert bar.count == 5


# A campaign's loop in a process of its own, whose stderr is the terminal: the bar goes there, the
# note to stdout (where a campaign prints its findings), and stdout stays free of the bar.
CAMPAIGN_LOOP = """
import sys
from tests.support.progress import progress
with progress("SIGKILL campaign", total=50, unit="kill") as bar:
    for kill in range(50):
        bar.advance(detail=f"kill {kill}: plugin")
    bar.note("#3 LEAK found", file=sys.stdout)
print("the final table")
"""


@pytest.mark.parametrize("columns", [100, 0], ids=["100 columns", "no window size"])
def test_a_terminal_gets_a_bar(columns: int) -> None:
    """A real pseudo-terminal as the process's stderr, so the terminal detection is the kernel's answer.

    A pty that reports no window size (``script``, some CI runners) still gets a bar (80 columns):
    tqdm alone would draw one of width 0.
    """
    leader, follower = os.openpty()
    tty.setraw(follower)  # no "\n" -> "\r\n" on output: every carriage return is the bar's own
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40 if columns else 0, columns, 0, 0))
    received: list[bytes] = []
    reader = threading.Thread(target=_drain, args=(leader, received))  # a full pty buffer would block the bar
    reader.start()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CAMPAIGN_LOOP],
            cwd=REPO, stdout=subprocess.PIPE, stderr=follower, text=True, timeout=60, check=True,
        )  # fmt: skip
    finally:
        os.close(follower)
        reader.join(timeout=10)
        os.close(leader)
    terminal = b"".join(received).decode()
    assert proc.stdout == "#3 LEAK found\nthe final table\n"
    assert "\r" in terminal  # redrawn in place
    last = terminal.rstrip("\n").split("\r")[-1]
    assert last.startswith("SIGKILL campaign: 100%|"), terminal
    assert "50/50" in last and "kill/s" in last and "kill 49: plugin" in last
    width = columns or 80
    assert width - 2 <= len(last) <= width, last  # the width of the window (tqdm keeps the last column free)
    assert "done," not in terminal  # the plain lines are for logs only


def _drain(fd: int, into: list[bytes]) -> None:
    """Everything the terminal receives, until the other side is closed (EIO on Linux)."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        into.append(chunk)
