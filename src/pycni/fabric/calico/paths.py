"""Where calico/node and the calico CNI plugins meet on a node's disk (calico/node's defaults).

A module of constants with no imports, so the ``pycni`` command and the
plugins can name these paths without loading the Calico library.
"""

from __future__ import annotations

NODENAME_FILE = "/var/lib/calico/nodename"  # the node name calico/node wrote, read by calico and calico-ipam
MTU_FILE = "/var/lib/calico/mtu"  # the pod MTU calico/node computed, read by the calico plugin
RUN_DIR = "/var/run/calico"  # BIRD's config, control socket and logs, and the agent's pid file
