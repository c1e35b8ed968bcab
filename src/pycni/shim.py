"""What a plugin executable runs: standard library only until the plugin loads.

``pycni plugins install`` writes one small executable per plugin type that
starts the interpreter with ``-I -S`` (no site, no user paths), puts pycni and
its dependencies on ``sys.path`` and calls :func:`run`. The warm path (a
running pycni daemon answering on its socket) plugs in here.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import NoReturn

from pycni.plugins import PLUGIN_MODULES


def _fail(message: str) -> NoReturn:
    """Report a broken installation in the spec's error shape (code 999)."""
    sys.stdout.write(json.dumps({"cniVersion": "1.1.0", "code": 999, "msg": message}, indent=4) + "\n")
    sys.exit(1)


def run(plugin_type: str) -> NoReturn:
    module_name = PLUGIN_MODULES.get(plugin_type)
    if module_name is None:
        _fail(f"pycni has no plugin of type {plugin_type!r}; reinstall with `pycni plugins install`")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        detail = f" ({exc})" if os.environ.get("PYCNI_DEBUG") else ""
        _fail(f"pycni {plugin_type} plugin cannot load {exc.name or module_name}: reinstall pycni{detail}")
    module.plugin.main()
    raise AssertionError("Plugin.main() returned")  # main() always exits
