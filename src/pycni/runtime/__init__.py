"""The runtime side of CNI (Go's libcni): load, invoke, chain, cache, GC."""

from pycni.runtime.api import CNIRuntime, PluginFailed, RuntimeConf, build_plugin_config
from pycni.runtime.cache import Attachment, ResultCache
from pycni.runtime.conf import load_network
from pycni.runtime.invoke import Executor, SubprocessExecutor, find_in_path

__all__ = [
    "Attachment",
    "CNIRuntime",
    "Executor",
    "PluginFailed",
    "ResultCache",
    "RuntimeConf",
    "SubprocessExecutor",
    "build_plugin_config",
    "find_in_path",
    "load_network",
]
