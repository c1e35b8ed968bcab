"""Kernel plumbing: network namespaces and links (the only place that talks netlink)."""
