"""The multi-node pod network: a Flannel-compatible node agent and what it needs.

model      network config, leases and events (Flannel's JSON and key layout)
leases     the network config and leases on pycni.datastore (etcd v3, or the embedded sqlite file)
migrate    a lease file from before pycni.datastore, moved into its tables once
subnet     lease acquisition, renewal and the lease watch (Flannel's LocalManager)
backends/  vxlan, host-gw, udp: turning peers' leases into routes
agent      ``pycni flanneld``: wires the above together, writes subnet.env
"""
