"""The Calico-compatible fabric: Calico's resources, block IPAM and datastore layout on pycni.datastore.

Everything is stored where and as libcalico-go stores it in etcd v3 mode, so
``etcdctl get --prefix /calico`` shows the same keys and values as a Calico
cluster (and pycni's embedded sqlite store holds the same keys):

* v3 resources under ``/calico/resources/v3/projectcalico.org/<plural>/[<ns>/]<name>``;
* IPAM under ``/calico/ipam/v2/``: blocks (``assignment/ipv4/block/<cidr>``),
  affinities (``host/<node>/ipv4/block/<cidr>``), handles (``handle/<id>``) and
  the IPAM config (``config``).

Modules, bottom up, each with one job:

Data and datastore layout (pure unless noted):

* :mod:`.errors` — the Calico layer's errors, worded as libcalico-go words them;
* :mod:`.gojson` — JSON bytes exactly as Go's ``encoding/json`` writes them;
* :mod:`.schema` — field types: strict decoding in Go's field order, omitempty;
* :mod:`.resource` — one v3 resource (kind, metadata, spec) and a kind's description;
* :mod:`.kinds` — the projectcalico.org/v3 kinds (IPPool, IPAMConfiguration,
  BGPConfiguration, BGPPeer, Node, FelixConfiguration, WorkloadEndpoint,
  Profile, Tier, ClusterInformation): fields, rules, defaults;
* :mod:`.model` — decode, validate, default, manifests, YAML/JSON out, typed views;
* :mod:`.names` — WorkloadEndpoint names from their identifiers;
* :mod:`.resources` — the resource client on a datastore (clientv3's create,
  update, apply, delete with its clean-ups, get, list, EnsureInitialized);
* :mod:`.config` — which datastore: CalicoAPIConfig files, ``DATASTORE_TYPE``
  and ``ETCD_ENDPOINTS`` (``CALICO_`` prefixed too), or the embedded store.

IPAM:

* :mod:`.ipam` — blocks, handles, affinities and the pure block logic (assign,
  release, FIFO reuse, block candidates);
* :mod:`.ipam_store` — libcalico-go's IPAM client: auto-assign (affine blocks,
  the two-phase claim, borrowing), given and tunnel addresses, release, every
  write a compare-and-swap retried;
* :mod:`.ipam_check` — ``calicoctl ipam check``'s analysis (leaks, orphans);
* :mod:`.leaks` — the leak GC's decisions: grace period, all-or-none per
  handle, empty blocks, orphaned handles (pure);
* :mod:`.leak_gc` — the agent's periodic GC pass for its own node.

The node agent (``pycni calico-node``):

* :mod:`.nodeconfig` — calico/node's environment read as calico/node reads it;
* :mod:`.installation` — the operator's Installation read as node settings;
* :mod:`.autodetect` — IPv4 autodetection (first-found, interface=, can-reach=, cidr=);
* :mod:`.startup` — calico-node's datastore writes: the Node, default pools,
  FelixConfiguration, tunnel addresses;
* :mod:`.nodefiles` — the files it leaves for the CNI plugin (node name, MTU) and its pid file;
* :mod:`.syncer` — list + watch of ``/calico/`` into cluster snapshots;
* :mod:`.calculation` — snapshot in, this node's desired dataplane out (pure);
* :mod:`.managers` — desired state handed to the dataplane drivers (routes, VXLAN, NAT);
* :mod:`.tunnels` — the ``vxlan.calico`` and ``tunl0`` devices;
* :mod:`.bgp` — one node's BGP plan as confd computes it (pure);
* :mod:`.bird` — BIRD 2: config rendering, process, control socket;
* :mod:`.routing` — the routing backend behind the agent (none, or BIRD);
* :mod:`.agent` — the agent's loop tying these together.

The CNI plugins (``pycni.plugins.main.calico``, ``pycni.plugins.ipam.calico_ipam``)
and ``pycni calicoctl`` (``pycni.cli.calicoctl``) build on these.
"""
