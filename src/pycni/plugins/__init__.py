"""pycni's plugins, one module per plugin type.

``PLUGIN_MODULES`` maps each type to the module holding its ``plugin``
object; it is read by the executables that ``pycni plugins install`` writes,
so it must stay importable with the standard library alone.
"""

PLUGIN_MODULES: dict[str, str] = {
    "bandwidth": "pycni.plugins.meta.bandwidth",
    "bridge": "pycni.plugins.main.bridge",
    "calico": "pycni.plugins.main.calico",
    "calico-ipam": "pycni.plugins.ipam.calico_ipam",
    "dhcp": "pycni.plugins.ipam.dhcp",
    "dummy": "pycni.plugins.main.dummy",
    "firewall": "pycni.plugins.meta.firewall",
    "flannel": "pycni.plugins.meta.flannel",
    "host-device": "pycni.plugins.main.host_device",
    "host-local": "pycni.plugins.ipam.host_local",
    "ipvlan": "pycni.plugins.main.ipvlan",
    "loopback": "pycni.plugins.main.loopback",
    "macvlan": "pycni.plugins.main.macvlan",
    "portmap": "pycni.plugins.meta.portmap",
    "ptp": "pycni.plugins.main.ptp",
    "sbr": "pycni.plugins.meta.sbr",
    "static": "pycni.plugins.ipam.static",
    "tap": "pycni.plugins.main.tap",
    "tuning": "pycni.plugins.meta.tuning",
    "vlan": "pycni.plugins.main.vlan",
    "vrf": "pycni.plugins.meta.vrf",
}
