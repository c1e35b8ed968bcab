"""A short run of the malformed-input campaign (``tests/campaigns/fuzz_plugins.py``) in make test.

The full campaign (>= 1000 inputs) is the same script with a larger ``--count``; this run
keeps make test fast with 48 inputs (two workers, a 45 s bound), over every plugin executable.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pycni.plugins import PLUGIN_MODULES

CAMPAIGN = Path(__file__).resolve().parent.parent / "campaigns" / "fuzz_plugins.py"
COUNT = int(os.environ.get("PYCNI_FUZZ_COUNT", "48"))  # two per plugin type; make campaign-fuzz: 1500
SEED = os.environ.get("PYCNI_FUZZ_SEED", "make-test")

# Crash classes in code this campaign's owner does not own, reported and awaiting a fix there:
# (class, message pattern, file of the raising frame). Remove an entry once it is fixed.
# Crash classes reported to the owner of the file that raised and not fixed yet:
# (class, detail pattern, raising file). Empty: every class the campaign found is fixed.
KNOWN: list[tuple[str, str, str]] = []
PLUGIN_TYPES = len(PLUGIN_MODULES)


def known(entry: dict[str, Any]) -> bool:
    """Whether every plugin's occurrence of this crash class raised where a KNOWN entry says."""
    frames = entry.get("frames") or {"?": ""}
    return all(
        any(
            entry["class"] == kind and re.match(pattern, str(entry["detail"])) and where in frame
            for kind, pattern, where in KNOWN
        )
        for frame in frames.values()
    )


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_malformed_inputs_get_cni_errors_and_leave_the_host_unchanged(tmp_path: Path) -> None:
    report_path = tmp_path / "fuzz.json"
    command = [sys.executable, str(CAMPAIGN), "--count", str(COUNT), "--seed", SEED, "--time-limit", "45"]
    command += ["--jobs", "2"]  # two workers, each with its own host namespace (plugin start-up dominates)
    proc = subprocess.run(
        [*command, "--json", str(report_path)], capture_output=True, text=True, timeout=600, check=False
    )
    assert report_path.exists(), f"campaign did not finish: {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
    report = json.loads(report_path.read_text())
    assert report["inputs"] >= min(COUNT, PLUGIN_TYPES), proc.stdout[-2000:]
    assert len(report["per_plugin"]) == min(report["inputs"], PLUGIN_TYPES), "every plugin executable gets inputs"
    assert report["outcomes"].get("ADD succeeded", 0) > 0, "some inputs are valid, and those must work"
    unexpected = [entry for entry in report["crash_classes"] if not known(entry)]
    assert not unexpected, json.dumps(unexpected, indent=2, ensure_ascii=False)[:6000]
