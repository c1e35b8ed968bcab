"""Kernel plumbing: network namespaces and links (the only place that talks netlink)."""

from pycni import lazy_pyroute2

lazy_pyroute2.install()  # before any pycni.net module imports pyroute2: its package import is most of a plugin's start
