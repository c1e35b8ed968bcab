"""Kernel limits that config values of any length must respect (found by the fuzz campaign)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pycni.plugins.meta.bandwidth import MAX_ALIAS_BYTES, alias_prefix, ifb_alias
from tests.support import strategies  # noqa: F401 - the hypothesis profiles

# What the SDK lets through: network names and container IDs of the reference's characters, any length.
names = st.one_of(
    st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]{0,40}", fullmatch=True),
    st.builds(lambda head, n: head * n, st.sampled_from(["x", "ab9", "c-d."]), st.integers(30, 5000)),
)
ifnames = st.from_regex(r"[a-z0-9]{1,15}", fullmatch=True)


@given(names, names, ifnames, names, ifnames)
def test_bandwidth_ifb_alias_fits_the_kernel_and_names_its_attachment(
    network: str, container_id: str, ifname: str, other_id: str, other_ifname: str
) -> None:
    """An alias over 255 bytes is ERANGE (over 64 KiB a struct.error): long parts become digests,
    GC still finds the network's ifbs by prefix and tells attachments apart."""
    alias = ifb_alias(network, container_id, ifname)
    assert len(alias.encode()) <= MAX_ALIAS_BYTES
    assert alias.startswith(alias_prefix(network))
    if (container_id, ifname) != (other_id, other_ifname):
        assert ifb_alias(network, other_id, other_ifname) != alias
    full = f"pycni-bandwidth:{network}:{container_id}:{ifname}"
    if len(full) <= MAX_ALIAS_BYTES and len(network) <= 100:
        assert alias == full, "an alias that fits stays readable"
