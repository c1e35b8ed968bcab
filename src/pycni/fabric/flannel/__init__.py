"""The Flannel-compatible fabric: ``pycni flanneld`` and what it needs, in Flannel's own terms.

model      network config, leases and events (Flannel's JSON and key layout)
leases     the network config and leases on pycni.datastore (etcd v3, or the embedded sqlite file)
migrate    a lease file from before pycni.datastore, moved into the datastore's tables once
subnet     lease acquisition, renewal and release (Flannel's LocalManager)
subnetenv  ``/run/flannel/subnet.env``, the handoff to the flannel CNI plugin
backends/  vxlan, host-gw, udp: peers' leases as a desired state for pycni.dataplane's drivers
agent      ``pycni flanneld``: wires the above together

Imports nothing itself: the flannel CNI plugin loads only :mod:`.subnetenv`.
"""
