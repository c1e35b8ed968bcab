"""pycni's long-running commands log in one shape, chosen by flag or environment (pycni.cli.logs)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import pytest

from pycni.cli import logs


def record(level: int, message: str, name: str = "pycni.fabric.calico.agent") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def test_text_lines_name_the_program_and_mark_warnings() -> None:
    text = logs.TextFormatter("calico-node")
    assert re.fullmatch(r"\d\d:\d\d:\d\d calico-node: ready", text.format(record(logging.INFO, "ready")))
    assert text.format(record(logging.ERROR, "cannot start")).endswith("calico-node: ERROR: cannot start")
    daemon = logs.TextFormatter("pycni daemon[%(process)d]", timestamps=False)
    assert re.fullmatch(r"pycni daemon\[\d+\]: WARNING: took over", daemon.format(record(logging.WARNING, "took over")))


def test_json_lines_are_one_object_each_with_the_exception() -> None:
    formatter = logs.JsonFormatter("pycni daemon[%(process)d]")
    try:
        raise ValueError("boom")
    except ValueError:
        failing = logging.LogRecord(
            "pycni.daemon", logging.ERROR, __file__, 1, "worker %s failed", ("3",), sys.exc_info()
        )
    entry = json.loads(formatter.format(failing))
    assert entry["level"] == "error" and entry["program"] == "pycni daemon" and entry["logger"] == "pycni.daemon"
    assert entry["message"] == "worker 3 failed" and "ValueError: boom" in entry["exception"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])


def test_flag_beats_environment_and_a_bad_environment_value_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(logs.LEVEL_ENV, "debug")
    assert logs.resolve(None, logs.LEVEL_ENV, logs.LEVELS, "info") == "debug"
    assert logs.resolve("error", logs.LEVEL_ENV, logs.LEVELS, "info") == "error"
    monkeypatch.setenv(logs.LEVEL_ENV, "loud")
    assert logs.resolve(None, logs.LEVEL_ENV, logs.LEVELS, "info") == "info"
    assert "ignoring PYCNI_LOG_LEVEL='loud'" in capsys.readouterr().err


def test_configure_twice_replaces_the_handler() -> None:
    pycni = logging.getLogger("pycni")
    saved = (list(pycni.handlers), pycni.level, pycni.propagate)
    try:
        logs.configure("flanneld", "warning", "text")
        handler = logs.configure("flanneld", "debug", "json")
        assert pycni.handlers == [handler] and pycni.level == logging.DEBUG
        assert isinstance(handler.formatter, logs.JsonFormatter)
    finally:
        pycni.handlers[:] = saved[0]
        pycni.setLevel(saved[1])
        pycni.propagate = saved[2]


def test_a_command_logs_json_from_the_environment(tmp_path: object) -> None:
    """A real process: pycni daemon with PYCNI_LOG_FORMAT=json and a socket it cannot bind reports in JSON."""
    proc = subprocess.run(
        [sys.executable, "-m", "pycni.cli.main", "daemon", "--socket", "/proc/pycni-test/none.sock", "--workers", "1"],
        env={"PATH": "/usr/bin:/bin", "PYCNI_LOG_FORMAT": "json", "PYTHONPATH": ":".join(sys.path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert lines and lines[-1]["level"] == "error" and "/proc/pycni-test/none.sock" in lines[-1]["message"]
