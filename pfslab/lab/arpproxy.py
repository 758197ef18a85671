"""The subnet bridges answer ARP themselves, so an ARP request is not flooded to every phone.

Every phone ARPs for the gateway, its roots, its parents and children: at 1000 phones in one
subnet that was 28,000 ARP requests, each flooded to 1000 namespaces, 99 % of the subnet's
broadcasts (PFS's own were 338; `pfslab lab --subnets 1 --phones-per-subnet 1000 ...`,
subnet-1.pcap). The kernel's per-copy work then starved the emulation.

A Linux bridge can answer for its hosts: with ``proxyarp_wifi`` on its ports and a permanent
neighbour entry (IP -> MAC) on the bridge device for each host, a request for a known host
is answered by the bridge out of the asking port, and not flooded to the other
``proxyarp_wifi`` ports. Everything else (the phones' UDP broadcasts, requests for unknown
addresses) is flooded as before. The phones still ARP and still get the right answer; only
who answers changes. The entries go with the bridge when the lab is torn down.
"""
from __future__ import annotations

from pyroute2 import IPRoute

NUD_PERMANENT = 0x80


def proxy_arp(bridge: str, ports: list[str], hosts: list[tuple[str, str]],
              ipr: IPRoute | None = None) -> int:
    """Make ``bridge`` answer ARP for ``hosts`` [(ip, mac)] on ``ports``; returns hosts added."""
    own = ipr is None
    ipr = ipr or IPRoute()
    try:
        br = ipr.link_lookup(ifname=bridge)[0]
        for name in ports:
            idx = ipr.link_lookup(ifname=name)
            if idx:
                ipr.brport("set", index=idx[0], proxyarp_wifi=1)
        for ip, mac in hosts:
            ipr.neigh("replace", dst=ip, lladdr=mac, ifindex=br, state=NUD_PERMANENT)
        return len(hosts)
    finally:
        if own:
            ipr.close()
