"""``pycni inspect --svg``: a picture of the pod network (pycni issue 12).

:mod:`.model` is what the picture shows (nodes, their subnets or blocks, pods,
links, badges), pure data. :mod:`.collect_flannel` and :mod:`.collect_calico`
fill it from the datastore and this node's kernel (the only I/O besides
:mod:`.png`, which runs an SVG converter). :mod:`.layout` places it (pure
geometry) and :mod:`.svg` draws the layout as SVG with ElementTree.
"""
