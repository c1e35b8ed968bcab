"""flanneld's defaults, in a module with no imports, so the ``pycni`` command can show them cheaply."""

from __future__ import annotations

PREFIX = "/coreos.com/network"  # the etcd key prefix (flanneld's --etcd-prefix)
SUBNET_TTL = 24 * 3600  # seconds a lease lives without renewal (Flannel's subnetTTL)
SUBNET_ENV_PATH = "/run/flannel/subnet.env"  # where the agent tells the CNI plugin its subnet (--subnet-file)
