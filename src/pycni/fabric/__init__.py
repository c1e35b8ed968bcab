"""The multi-node pod network: a Flannel-compatible node agent and what it needs.

model      network config, leases and events (Flannel's JSON and key layout)
store/     where leases live: etcd v3 (multi-node) or an embedded sqlite file
subnet     lease acquisition, renewal and the lease watch (Flannel's LocalManager)
backends/  vxlan, host-gw, udp: turning peers' leases into routes
agent      ``pycni flanneld``: wires the above together, writes subnet.env
"""
