"""``pycni plugins install``: write one executable per plugin type into a directory.

The executable names its interpreter by absolute path and runs it with
``-I -S``, so start-up costs neither a pyenv shim nor ``site`` processing;
it adds exactly the directories holding pycni and pyroute2 to ``sys.path``.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from pycni.fsutil import write_atomic
from pycni.plugins import PLUGIN_MODULES
from pycni.shim import EXECUTABLE_TEMPLATE


def import_paths() -> list[str]:
    """The sys.path entries that hold pycni and the packages its plugins import."""
    paths: list[str] = []
    for package in ("pycni", "pyroute2"):
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        root = os.path.dirname(os.path.dirname(os.path.abspath(spec.origin)))
        if root not in paths:
            paths.append(root)
    return paths


def interpreter() -> str:
    """This interpreter, by absolute path (a virtualenv's python keeps its venv)."""
    return os.path.abspath(sys.executable)


def render(plugin_type: str) -> str:
    return EXECUTABLE_TEMPLATE.format(python=interpreter(), plugin_type=plugin_type, paths=import_paths())


def install(directory: str, types: list[str] | None = None) -> list[str]:
    """Write the executables; returns their paths. Replacing is atomic."""
    os.makedirs(directory, exist_ok=True)
    written = []
    for plugin_type in types or sorted(PLUGIN_MODULES):
        if plugin_type not in PLUGIN_MODULES:
            raise ValueError(f"pycni has no plugin of type {plugin_type!r}")
        path = os.path.join(directory, plugin_type)
        write_atomic(path, render(plugin_type).encode(), mode=0o755)
        written.append(path)
    return written
