"""Address management shared by the IPAM plugins: config pieces, ranges, the disk store, the allocator.

The modules here hold no plugin glue, so the allocator and the store can be
tested without root and reused by other plugins (or the daemon) as a library.
"""
