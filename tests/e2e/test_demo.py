"""``make demo`` (``pycni demo``) runs both seed cases end to end and leaves nothing behind."""

from __future__ import annotations

import subprocess

from tests.support.netns import run


def test_demo_runs_and_cleans_up(pycni_bin: str) -> None:
    before_links = run("ip", "-o", "link").stdout
    proc = subprocess.run([pycni_bin, "demo"], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert proc.stdout.count("Hello from a container networked by pycni") == 3
    assert "Done: both cases worked and nothing was left behind" in proc.stdout
    assert "pycni-demo" not in run("ip", "netns", "list").stdout
    assert run("ip", "-o", "link").stdout == before_links
