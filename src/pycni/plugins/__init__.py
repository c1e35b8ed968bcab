"""pycni's plugins, one module per plugin type.

``PLUGIN_MODULES`` maps each type to the module holding its ``plugin``
object; it is read by the executables that ``pycni plugins install`` writes,
so it must stay importable with the standard library alone.
"""

PLUGIN_MODULES: dict[str, str] = {
    "bridge": "pycni.plugins.main.bridge",
    "host-local": "pycni.plugins.ipam.host_local",
    "loopback": "pycni.plugins.main.loopback",
    "portmap": "pycni.plugins.meta.portmap",
    "ptp": "pycni.plugins.main.ptp",
    "static": "pycni.plugins.ipam.static",
}
