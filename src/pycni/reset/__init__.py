"""``pycni reset``: take pycni off this node, and nothing else (the seed article's uninstall, §2.1.10 and §2.2.7).

The article deletes ``cni0``, ``flannel.1`` and ``tunl0`` and empties
``/var/lib/cni`` and ``/etc/cni/net.d``: that also takes the user's own CNI
config and every other runtime's state. Reset instead finds the objects pycni
made, each with the reason it is pycni's (:mod:`.inventory`), prints them, and
removes exactly those when asked (:mod:`.remove`). Every path it looks at comes
from pycni's own modules and can be pointed elsewhere (:mod:`.paths`).
"""
