#!/bin/sh
# Prepare a fresh Debian 12 machine (as root) for pycni: OS packages, then the
# virtualenv with pycni installed in it. Safe to run again; it only installs
# what is missing.
set -eu
cd "$(dirname "$0")/.."

# OS packages: what pycni drives (iproute2, nftables) and the real peers its
# tests and demo use (the Go reference plugins, busybox httpd, curl, iperf3,
# etcd for the pod network's leases and etcdctl to inspect them, iputils ping for
# DF-bit probes: busybox ping has no -M), BIRD 2 for the Calico-style fabric's BGP, systemd for
# systemd-socket-activate (the daemon's socket-activation test).
PACKAGES="python3 python3-venv iproute2 nftables iptables containernetworking-plugins busybox-static curl iperf3 procps dnsmasq-base podman runc uidmap iputils-ping etcd-server etcd-client bird2 systemd librsvg2-bin"

missing=""
for pkg in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing packages:$missing; run as root to install them" >&2
        exit 1
    fi
    echo "setup: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
fi

# The interpreter is named by absolute path: /usr/bin/python3 starts in ~10 ms,
# a pyenv shim on PATH costs ~100 ms per plugin call.
if [ ! -x .venv/bin/python ]; then
    /usr/bin/python3 -m venv .venv
fi
if ! .venv/bin/python -c "import pycni, pytest, ruff, mypy" 2>/dev/null \
        || [ pyproject.toml -nt .venv/.pycni-installed ]; then
    .venv/bin/pip install -q --disable-pip-version-check -e ".[dev]"
    touch .venv/.pycni-installed
fi

# Bytecode for pycni's own sources, written now: an editable install has none, and where
# PYTHONDONTWRITEBYTECODE is set (as in some CI environments) every cold plugin call and every
# daemon start would otherwise compile ~100 modules from source. Up-to-date files are skipped.
.venv/bin/python -m compileall -q -j 0 src >/dev/null
