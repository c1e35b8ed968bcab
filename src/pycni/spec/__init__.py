"""The CNI specification as a pure data model: versions, configs, results, errors.

Nothing here performs I/O or imports anything outside the standard library,
so plugins and the runtime can both import it cheaply.
"""

from pycni.spec.args import load_args, split_pairs
from pycni.spec.config import NetworkConfigList, PluginConfig
from pycni.spec.errors import CNIError, ErrorCode
from pycni.spec.fields import Fields
from pycni.spec.result import DNS, Interface, IPConfig, Result, Route
from pycni.spec.validate import validate_container_id, validate_interface_name, validate_network_name
from pycni.spec.version import ALL_VERSIONS, CURRENT_VERSION, LEGACY_VERSIONS, versions_from

__all__ = [
    "ALL_VERSIONS",
    "CURRENT_VERSION",
    "DNS",
    "LEGACY_VERSIONS",
    "CNIError",
    "ErrorCode",
    "Fields",
    "IPConfig",
    "Interface",
    "NetworkConfigList",
    "PluginConfig",
    "Result",
    "Route",
    "load_args",
    "split_pairs",
    "validate_container_id",
    "validate_interface_name",
    "validate_network_name",
    "versions_from",
]
