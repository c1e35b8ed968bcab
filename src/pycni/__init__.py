"""pycni: the container-networking stack (CNI spec, runtime, plugins) in Python."""

from pycni import lazy_pyroute2 as _lazy_pyroute2

__version__ = "0.1.0"

_lazy_pyroute2.install()  # before anything imports pyroute2: its package import is most of a plugin's start
