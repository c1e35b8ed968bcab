"""The seed article's configurations, as the demo runs them (one copy, in pycni.cli.demo)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pycni.cli.demo import BRIDGE_JSON


def case1(data_dir: Path | None = None, **overrides: Any) -> dict[str, Any]:
    """The seed's ``bridge.json`` (Case 1); host-local keeps its state in ``data_dir`` when given."""
    config: dict[str, Any] = copy.deepcopy(BRIDGE_JSON)
    if data_dir is not None:
        config["ipam"]["dataDir"] = str(data_dir)
    config.update(overrides)
    return config
