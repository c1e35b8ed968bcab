"""Logging for pycni's long-running processes, set up once, by the command that starts them.

Library code only logs (``logging.getLogger("pycni....")``); ``pycni daemon``,
``pycni flanneld``, ``pycni calico-node`` and ``pycni dhcp-daemon`` call
:func:`configure` once, so every module's lines reach stderr in one shape:

* ``--log-level`` (or ``PYCNI_LOG_LEVEL``): debug, info (default), warning, error;
* ``--log-format text`` (default): ``12:00:01 flanneld: message``, with
  ``WARNING:`` / ``ERROR:`` before the message when it is one, as flanneld's
  glog lines say ``W``/``E``;
* ``--log-format json``: one JSON object per line (``time``, ``level``,
  ``program``, ``pid``, ``logger``, ``message``, and ``exception`` when there
  is one) for log shippers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any

LEVEL_ENV = "PYCNI_LOG_LEVEL"
FORMAT_ENV = "PYCNI_LOG_FORMAT"
LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")


class TextFormatter(logging.Formatter):
    """``12:00:01 PROGRAM: message``; warnings and errors say so (``... PROGRAM: WARNING: ...``).

    ``program`` may hold ``%(process)d`` (the daemon's workers name their own pid).
    """

    def __init__(self, program: str, timestamps: bool = True) -> None:
        stamp = "%(asctime)s " if timestamps else ""
        super().__init__(f"{stamp}{program}: %(severity)s%(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        record.severity = f"{record.levelname}: " if record.levelno >= logging.WARNING else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for machines."""

    def __init__(self, program: str) -> None:
        super().__init__()
        self.program = program

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "program": self.program.replace("[%(process)d]", ""),
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--log-level`` and ``--log-format``, defaulting to the environment (then info, text)."""
    parser.add_argument(
        "--log-level",
        choices=LEVELS,
        type=str.lower,
        default=None,
        help=f"what to log (default: ${LEVEL_ENV}, else info)",
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default=None,
        help=f"text lines for people, or one JSON object per line (default: ${FORMAT_ENV}, else text)",
    )


def resolve(value: str | None, env: str, allowed: tuple[str, ...], default: str) -> str:
    """The flag's value, else the environment's if it is one of ``allowed``, else ``default``."""
    if value:
        return value
    from_env = os.environ.get(env, "").strip().lower()
    if from_env in allowed:
        return from_env
    if from_env:
        print(f"pycni: ignoring {env}={from_env!r}: expected one of {', '.join(allowed)}", file=sys.stderr)
    return default


def configure(
    program: str, level: str | None = None, fmt: str | None = None, timestamps: bool = True
) -> logging.Handler:
    """Send every ``pycni.*`` logger's records to stderr in ``program``'s shape; returns the handler."""
    level = resolve(level, LEVEL_ENV, LEVELS, "info")
    fmt = resolve(fmt, FORMAT_ENV, FORMATS, "text")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(program) if fmt == "json" else TextFormatter(program, timestamps))
    root = logging.getLogger("pycni")
    for old in list(root.handlers):  # configured once: a second call replaces, never doubles, the lines
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
    return handler
