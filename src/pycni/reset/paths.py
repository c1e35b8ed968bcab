"""Every place reset looks, taken from the modules that write there, each overridable.

Several nodes share one machine in tests, so every path is a field; ``rerooted``
moves every one of them under a directory at once (a node's files in a tmp dir).

``INSTALLED_RECORD`` is the record of what ``pycni install`` wrote (format and
writer in :mod:`pycni.reset.record`): a CNI config file listed there whose
content still has the recorded digest is pycni's.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from pycni import nft
from pycni.fabric.calico import config as calico_config
from pycni.fabric.calico import paths as calico_paths
from pycni.fabric.flannel import defaults as flannel_defaults
from pycni.fabric.flannel.backends import common as flannel_common
from pycni.ipam import store as ipam_store
from pycni.nft import attachments
from pycni.plugins.meta import flannel as flannel_plugin
from pycni.runtime import cache, conf

PYCNI_LIB_DIR = os.path.dirname(calico_config.DEFAULT_STORE_PATH)  # /var/lib/pycni, beside the embedded stores
INSTALLED_RECORD = os.path.join(PYCNI_LIB_DIR, "installed.json")
CNI_BIN_DIR = "/opt/cni/bin"  # where installers put plugin executables (the CNI convention)
NETNS_DIR = "/run/netns"  # where ``ip netns`` and runtimes name pod namespaces


@dataclass(frozen=True)
class Paths:
    """One node's paths (defaults: the machine's, as pycni writes them)."""

    cni_conf_dir: str = conf.DEFAULT_CONF_DIR
    cni_bin_dir: str = CNI_BIN_DIR
    cni_cache_dir: str = cache.DEFAULT_CACHE_DIR  # results/ under it
    ipam_data_dir: str = ipam_store.DEFAULT_DATA_DIR  # host-local's default dataDir
    flannel_data_dir: str = flannel_plugin.DEFAULT_DATA_DIR  # the flannel plugin's saved delegate configs
    flannel_run_dir: str = flannel_common.DEFAULT_STATE_DIR  # flanneld's --state-dir (VTEP MAC)
    flannel_subnet_file: str = flannel_defaults.SUBNET_ENV_PATH  # flanneld's --subnet-file
    calico_lib_dir: str = os.path.dirname(calico_paths.NODENAME_FILE)  # nodename, mtu
    calico_run_dir: str = calico_paths.RUN_DIR  # BIRD's files, the agent's pid file, calico-ipam's lock
    nft_lock_dir: str = nft.LOCK_DIR  # per-namespace lock files
    attachments_dir: str = attachments.ROOT  # per-namespace attachment records
    netns_dir: str = NETNS_DIR
    installed_record: str = INSTALLED_RECORD

    @property
    def results_dir(self) -> str:
        return os.path.join(self.cni_cache_dir, "results")

    @property
    def calico_pid_file(self) -> str:
        return os.path.join(self.calico_run_dir, "calico-node.pid")  # calico-node's default --pid-file

    def rerooted(self, root: str) -> Paths:
        """Every path under ``root`` (``/etc/cni/net.d`` becomes ``<root>/etc/cni/net.d``), except the netns dir."""
        changes = {
            field.name: os.path.join(root, getattr(self, field.name).lstrip("/"))
            for field in dataclasses.fields(self)
            if field.name != "netns_dir"
        }
        return dataclasses.replace(self, **changes)
