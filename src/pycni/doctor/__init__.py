"""``pycni doctor``: checks of this node's networking, each a finding with what to do about it (pycni issue 12).

One module per group of checks (:mod:`.host` kernel and sysctls, :mod:`.ipam`
reservations and result caches, :mod:`.flannel`, :mod:`.calico`, :mod:`.nft`);
:mod:`.runner` runs those that apply to the node and renders the findings.
Nothing here changes the node: every check only reads.
"""
