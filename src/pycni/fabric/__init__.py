"""The multi-node pod networks: two fabrics, side by side on shared parts.

Neither fabric builds on the other. Both keep their state in
:mod:`pycni.datastore` (etcd v3, or the embedded sqlite file: one key-value
store with revisions, compare-and-set, TTLs and watch) and program the kernel
through :mod:`pycni.dataplane` (reconciling drivers: routes owned by pycni's
protocol number, neighbours, FDB entries; only the delta is written, so a
resync of a node in order writes nothing).

flannel/   the Flannel-compatible agent ``pycni flanneld``: Flannel's config and
           subnet leases on the datastore, subnet.env for the flannel CNI plugin,
           backends vxlan, host-gw and udp
calico/    the Calico-compatible fabric: Calico's resources and block IPAM on the
           datastore, ``pycni calico-node`` (routes, VXLAN, BGP with BIRD 2), calicoctl

Nothing in this package's ``__init__`` is imported eagerly, so the flannel
CNI plugin can read ``subnet.env`` through :mod:`pycni.fabric.flannel.subnetenv`
without loading either agent.
"""
