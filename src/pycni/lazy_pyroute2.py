"""pyroute2 without its package import: about 150 ms less for every plugin process that touches netlink.

pyroute2's ``__init__`` imports every module the library has (IPDB, NDB,
conntrack, nl80211, plan9, ...) to offer them as ``pyroute2.<Name>``; here
that is ~150 ms of a plugin's ~280 ms start, paid on every cold call, while
pycni needs ``IPRoute``, ``NetlinkError`` and a few message classes. Before
anything imports pyroute2, :func:`install` puts a stand-in for the package in
``sys.modules``: the real package directory as its ``__path__``, so
``pyroute2.iproute``, ``pyroute2.netlink.exceptions`` and every other
submodule import exactly as they do normally, and names are resolved on first
use: ``IPRoute`` and ``NetlinkError`` from their modules, a submodule by
importing it, and anything else by running the real ``__init__`` into the
stand-in once (code that wants the whole library still gets all of it).
pyroute2's logger gets its NullHandler as the real ``__init__`` gives it.

Installed by ``pycni/net/__init__.py`` (every netlink user goes through
pycni.net; the warm-path shim never imports it, so it pays nothing); nothing
is done if pyroute2 is already imported or not installed. The daemon calls
:func:`load_everything` before it forks its workers.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any

PACKAGE = "pyroute2"
_FULL_IMPORT = threading.RLock()
DIRECT = {"IPRoute": "pyroute2.iproute", "NetlinkError": "pyroute2.netlink.exceptions"}


def install() -> None:
    if PACKAGE in sys.modules:
        return
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None or not spec.submodule_search_locations:
        return
    package = types.ModuleType(PACKAGE)
    package.__file__ = spec.origin
    package.__path__ = list(spec.submodule_search_locations)
    package.__package__ = PACKAGE
    package.__spec__ = spec
    package.__getattr__ = _resolver(package, spec.origin)  # type: ignore[method-assign]
    sys.modules[PACKAGE] = package
    importlib.import_module("pyroute2.config.log")  # the library's logger and its NullHandler


def load_everything() -> None:
    """The whole library now, as ``import pyroute2`` does without the stand-in.

    For long-lived processes that fork a worker per call (the daemon): what the
    parent has imported, every worker has for free; what it has not, every
    worker imports again.
    """
    importlib.import_module("pyroute2.iproute")
    package = sys.modules.get(PACKAGE)
    stand_in = package is not None and "__getattr__" in package.__dict__  # else the real package: all there
    if stand_in and package is not None and package.__spec__ is not None and package.__spec__.origin:
        _run_real_init(package, package.__spec__.origin)


def _resolver(package: types.ModuleType, init_path: str) -> Any:
    def resolve(name: str) -> Any:
        if name.startswith("__") and name not in ("__version__", "__all__"):
            raise AttributeError(name)
        if name in DIRECT:
            value = getattr(importlib.import_module(DIRECT[name]), name)
        elif importlib.util.find_spec(f"{PACKAGE}.{name}") is not None:
            value = importlib.import_module(f"{PACKAGE}.{name}")
        else:
            _run_real_init(package, init_path)
            if name not in package.__dict__:
                raise AttributeError(f"module 'pyroute2' has no attribute {name!r}")
            return package.__dict__[name]
        setattr(package, name, value)
        return value

    return resolve


def _run_real_init(package: types.ModuleType, init_path: str) -> None:
    """The library's own ``__init__``, once, into the stand-in: every public name."""
    with _FULL_IMPORT:  # one thread runs it; another asking meanwhile waits for every name
        if package.__dict__.get("_pycni_full_import") or package.__dict__.get("_pycni_full_import_running"):
            return  # done, or this thread is inside it (a name asked for while it runs)
        package.__dict__["_pycni_full_import_running"] = True
        try:
            with open(init_path, encoding="utf-8") as source:
                exec(compile(source.read(), init_path, "exec"), package.__dict__)
            package.__dict__["_pycni_full_import"] = True  # only once it ran to the end
        finally:
            del package.__dict__["_pycni_full_import_running"]
