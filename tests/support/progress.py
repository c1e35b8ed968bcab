"""Progress of the benchmarks and fault campaigns: a bar on a terminal, a few plain lines in a log.

A 25-minute SIGKILL campaign or a ``make bench`` run is silent for minutes otherwise; in CI and in
``make test`` logs a redrawn bar is noise (one carriage-returned line per update), so there the same
progress is a handful of lines (one per ``1/lines`` of the total, then the last one), each with
count/total, elapsed seconds and an ETA. Progress goes to stderr: the scripts' tables and JSON
stay on stdout as they were.

It lives in ``tests/support``, not in ``pycni``: only the benchmarks and campaigns report progress,
they already import ``tests.support``, and the runtime never needs it, so tqdm stays a development
dependency and a node running pycni does not install it. tqdm draws the bar, and its
``format_meter`` does the arithmetic (rate, ETA) of the plain lines too, so both modes agree.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Never, TextIO

from tqdm import tqdm

DEFAULT_LINES = 20  # a plain line every 5 %, and the last one
FALLBACK_SIZE = os.terminal_size((80, 24))
PLAIN_FORMAT = "{desc}: {n}/{total} ({percentage:.0f}%), {elapsed_s:.0f} s elapsed, ETA {remaining_s:.0f} s{postfix}"


class Progress:
    """The counter one loop advances; ``advance`` and ``note`` may be called from several threads."""

    def __init__(
        self,
        label: str,
        total: int,
        stream: TextIO | None,
        *,
        unit: str = "it",
        lines: int = DEFAULT_LINES,
        position: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``stream`` None: report nothing (a caller's ``progress=False``); else a bar if it is a terminal."""
        self.label = label
        self.total = total
        self.count = 0
        self.detail = ""
        self._stream = stream
        self._lines = max(1, lines)
        self._clock = clock
        self._started = clock()
        self._next_line = 1  # the index (of ``lines``) of the next plain line
        self._lock = threading.Lock()
        self._bar: tqdm[Never] | None = None
        if stream is not None and _is_terminal(stream):
            # Follow the window's size. A terminal reporting none (a pty under script(1), some CI
            # runners) would get no bar at all from tqdm (width 0, no rows), so it gets 80x24.
            sized = _has_size(stream)
            self._bar = tqdm(
                total=total,
                desc=label,
                unit=unit,
                file=stream,
                dynamic_ncols=sized,
                ncols=None if sized else FALLBACK_SIZE.columns,
                nrows=None if sized else FALLBACK_SIZE.lines,
                position=position,
                leave=True,
            )

    def advance(self, n: int = 1, detail: str = "") -> None:
        """``n`` more of the total done (0: only a new ``detail``, e.g. an attempt that does not count)."""
        with self._lock:
            self.count += n
            if detail:
                self.detail = detail
            if self._bar is not None:
                if detail:
                    self._bar.set_postfix_str(detail, refresh=False)
                if n:
                    self._bar.update(n)
                else:
                    self._bar.refresh()
            elif self._stream is not None and self.total > 0:
                self._plain_milestone()

    def note(self, text: str, file: TextIO | None = None) -> None:
        """A line of the caller's own (a finding, a sample) printed without breaking the bar.

        ``file`` is where it goes (default: the progress stream); nothing when progress is off.
        """
        if self._stream is None:
            return
        target = file if file is not None else self._stream
        with self._lock:
            if self._bar is not None:
                tqdm.write(text, file=target)
            else:
                print(text, file=target, flush=True)

    def close(self, error: BaseException | None = None) -> None:
        """The last line: done, ended short of the total, or stopped by ``error``."""
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                return
            if self._stream is None:
                return
            elapsed = self._clock() - self._started
            if error is not None:
                outcome = f"stopped at {self.count}/{self.total} after {elapsed:.0f} s ({type(error).__name__})"
            elif self.count >= self.total:
                outcome = f"done, {self.count}/{self.total} in {elapsed:.0f} s"
            else:
                outcome = f"ended at {self.count}/{self.total} after {elapsed:.0f} s"
            print(f"{self.label}: {outcome}", file=self._stream, flush=True)

    def _plain_milestone(self) -> None:
        """One line when the count passes the next ``1/lines`` of the total (the 100 % line is close's)."""
        reached = self.count * self._lines // self.total
        if reached < self._next_line or reached >= self._lines:
            return
        self._next_line = reached + 1
        line = tqdm.format_meter(
            self.count,
            self.total,
            max(self._clock() - self._started, 1e-6),  # tqdm leaves the ETA unknown at 0 s
            prefix=self.label,
            bar_format=PLAIN_FORMAT,
            postfix=self.detail or None,
        )
        assert self._stream is not None
        print(line, file=self._stream, flush=True)


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


def _has_size(stream: TextIO) -> bool:
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError):
        return False
    return size.columns > 0 and size.lines > 0


@contextmanager
def progress(
    label: str,
    total: int,
    *,
    unit: str = "it",
    enabled: bool = True,
    stream: TextIO | None = None,
    lines: int = DEFAULT_LINES,
    position: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Progress]:
    """``with progress("SIGKILL campaign", total=200, unit="kill") as bar: ... bar.advance(detail="kill 17")``.

    ``stream`` defaults to the current ``sys.stderr`` (looked up now, so pytest's capture sees it);
    ``position`` is tqdm's line for a bar beside others (parallel workers on one terminal).
    """
    out = (stream if stream is not None else sys.stderr) if enabled else None
    bar = Progress(label, total, out, unit=unit, lines=lines, position=position, clock=clock)
    try:
        yield bar
    except BaseException as error:
        bar.close(error)
        raise
    bar.close()
