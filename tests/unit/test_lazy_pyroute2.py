"""pyroute2 behind pycni's stand-in package: what pycni uses is there, the rest of the library is not loaded.

Each check runs in a fresh interpreter: the stand-in is installed when pycni.net is
first imported, which in this test process happened long ago.
"""

from __future__ import annotations

import subprocess
import sys


def fresh(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_what_pycni_imports_comes_without_the_rest_of_the_library() -> None:
    code = (
        "import sys, pycni.net\n"
        "from pyroute2 import IPRoute\n"
        "from pyroute2.netlink.exceptions import NetlinkError\n"
        "from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg\n"
        "with IPRoute() as ipr:\n"
        "    assert ipr.link_lookup(ifname='lo')\n"
        "heavy = [m for m in ('pyroute2.ndb.main', 'pyroute2.ipdb', 'pyroute2.netlink.nl80211') if m in sys.modules]\n"
        "print(heavy, issubclass(NetlinkError, Exception))\n"
    )
    assert fresh(code) == "[] True"


def test_any_other_name_loads_the_whole_library_as_its_own_init_would() -> None:
    code = (
        "import importlib.metadata, pycni.net, pyroute2\n"
        "print(pyroute2.NDB.__name__, pyroute2.__version__ == importlib.metadata.version('pyroute2'))\n"
        "print(pyroute2.IPRoute is __import__('pyroute2.iproute', fromlist=['IPRoute']).IPRoute)\n"
    )
    assert fresh(code).splitlines() == ["NDB True", "True"]


def test_a_missing_name_is_an_attribute_error() -> None:
    code = "import pycni.net, pyroute2\ntry:\n    pyroute2.NoSuchThing\nexcept AttributeError as e:\n    print('no', e)"
    assert fresh(code).startswith("no ")


def test_nothing_is_done_when_pyroute2_was_imported_first() -> None:
    code = "import pyroute2, pycni.net, sys\nprint(sys.modules['pyroute2'].__dict__.get('__getattr__') is None)\n"
    assert fresh(code) == "True"


def test_a_plugin_module_does_not_load_the_whole_library() -> None:
    code = "import sys\nimport pycni.plugins.main.bridge\nprint('pyroute2.ndb.main' in sys.modules)\n"
    assert fresh(code) == "False"


def test_the_warm_path_shim_imports_no_netlink_at_all() -> None:
    assert fresh("import sys, pycni.shim\nprint([m for m in sys.modules if m.startswith('pyroute2')])") == "[]"
