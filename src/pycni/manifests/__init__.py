"""Kubernetes manifests of Flannel and Calico read as what ``pycni install --manifest`` puts on one node.

documents  the YAML stream: each document located by file, position, kind and name (for errors)
flannel    ConfigMap kube-flannel-cfg (cni-conf.json, net-conf.json) and the flanneld container's flags
calico     ConfigMap calico-config (cni_network_config, veth_mtu, calico_backend) and calico-node's env,
           or the Tigera operator's Installation
plan       what install writes and prints: files, the agent's command line, one note per unused part

Pure: nothing here writes a file (the CLI, :mod:`pycni.cli.install_manifest`, does).
"""
