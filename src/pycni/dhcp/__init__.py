"""DHCPv4 for the ``dhcp`` IPAM plugin: packets, the client, the lease daemon.

The plugin is a short-lived process, but a DHCP lease must be renewed for as
long as the container lives, so leases are held by ``pycni dhcp-daemon``.

    options    option codes and names, typed option values (routes, DNS)
    packet     the BOOTP/DHCP message: encode and decode
    frame      IPv4/UDP framing for the packet socket
    transport  a packet socket opened inside the container's netns
    client     one exchange at a time: DISCOVER/REQUEST, renew, rebind, release
    lease      what an ACK granted, and the timers derived from it
    manager    the leases held, each kept alive by a background thread
    protocol   the JSON protocol between plugin and daemon (stdlib only)
    server     the daemon: the unix socket and its request dispatch

Only ``options`` and ``protocol`` are imported by the plugin executable; they
use the standard library alone, so a plugin call stays cheap.
"""
