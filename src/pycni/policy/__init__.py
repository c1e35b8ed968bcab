"""Network policy for pycni: Kubernetes NetworkPolicy and Calico policy, as Calico and Felix read them.

Pure (no I/O, no kernel): the model, the conversion Calico applies, and an
evaluator that answers "is this packet allowed, and by which tier, policy and
rule?", and the nftables table that enforces the same. The node agent's manager builds on it (issue 11).
Modules, bottom up, each with one job:

Language and input:

* :mod:`.selector` — Calico's selector language: parse, evaluate, canonical text, IDs, label prefixes;
* :mod:`.errors` — :class:`~.errors.PolicyError`: every wrong field of an object with its remedy (code 7);
* :mod:`.names` — Kubernetes and Calico name, label and port-name rules;
* :mod:`.decode` — strict reading of decoded YAML/JSON: types, unknown fields, paths.

The objects:

* :mod:`.k8s` — networking.k8s.io/v1 NetworkPolicy, v1 Namespace and v1 Pod, validated and
  defaulted as the API server does;
* :mod:`.rules` — Calico's Rule: actions, protocols, ports, ICMP, entity matches, calicoctl's checks;
* :mod:`.calico_model` — projectcalico.org/v3 NetworkPolicy, GlobalNetworkPolicy, Tier,
  GlobalNetworkSet and Profile, with Calico's defaults;
* :mod:`.convert` — Kubernetes objects as libcalico-go converts them (``knp.default.<name>``,
  ``kns.<ns>`` and ``ksa.<ns>.<sa>`` profiles);
* :mod:`.endpoints` — workload endpoints (a pod's identity, labels, profiles, named ports) and hosts.

Evaluation:

* :mod:`.compile` — policies and profiles as Felix enforces them: one selector per policy and rule side;
* :mod:`.index` — who holds an address and the labels selectors see there (Felix's IP sets, per address);
* :mod:`.match` — the packet, and whether a compiled rule matches it;
* :mod:`.evaluate` — the oracle: tiers, policies, rules, profiles, hosts, and the explained verdict;
* :mod:`.cluster` — the current set of objects (apply, delete, relabel) and its evaluator;
* :mod:`.k8s_semantics` — Kubernetes semantics read straight from the API reference, to check the above;
* :mod:`.matrix` — the netpol e2e suite's truth tables, reachability expectations and x/y/z model.

Enforcement (pure: desired state in, typed :mod:`pycni.nft.objects` out; the kernel only through a transaction):

* :mod:`.nft_names` — chain, set and log names and the mark bits, after Felix's;
* :mod:`.nft_sets` — selector and named-port sets and their members, from the endpoint index;
* :mod:`.nft_rules` — one Calico rule as nft rules, matching what :mod:`.match` matches;
* :mod:`.nft_render` — a node's policy table (dispatch maps, endpoint, policy and profile chains) from the evaluator.
"""
