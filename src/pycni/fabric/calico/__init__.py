"""The Calico-compatible fabric: Calico's resources, block IPAM and datastore layout on pycni.datastore.

Everything is stored where and as libcalico-go stores it in etcd v3 mode, so
``etcdctl get --prefix /calico`` shows the same keys and values as a Calico
cluster (and pycni's embedded sqlite store holds the same keys):

* v3 resources under ``/calico/resources/v3/projectcalico.org/<plural>/[<ns>/]<name>``;
* IPAM under ``/calico/ipam/v2/``: blocks (``assignment/ipv4/block/<cidr>``),
  affinities (``host/<node>/ipv4/block/<cidr>``), handles (``handle/<id>``) and
  the IPAM config (``config``).

Modules, bottom up:

* :mod:`.schema`, :mod:`.resource`, :mod:`.kinds`, :mod:`.model` — the
  projectcalico.org/v3 kinds (IPPool, IPAMConfiguration, BGPConfiguration,
  BGPPeer, Node, FelixConfiguration, WorkloadEndpoint, Profile, Tier,
  ClusterInformation) with Calico's field names, order, rules and defaults,
  YAML/JSON manifests in and out, typed views (pure);
* :mod:`.resources` — the resource client on a datastore (clientv3's create,
  update, apply, delete, get, list, EnsureInitialized);
* :mod:`.ipam` — the allocation block, handle and affinity data and the pure
  block logic (assign, release, FIFO reuse, block candidates);
* :mod:`.ipam_store` — libcalico-go's IPAM client on the datastore: auto-assign
  (affine blocks, claiming with the two-phase affinity, borrowing), assign a
  given IP, release by IP or handle, every write a compare-and-swap retried;
* :mod:`.ipam_check` — ``calicoctl ipam check``'s analysis (leaks, orphans);
* :mod:`.config` — which datastore: CalicoAPIConfig files, ``DATASTORE_TYPE``
  and ``ETCD_ENDPOINTS`` (``CALICO_`` prefixed too), or the embedded store.

The CNI plugin, the node agent (routes, VXLAN, BGP with BIRD 2) and policy
build on these.
"""
