"""pfslab topologies: an HQ with the TFTP server, a WAN, and a branch of remote phone subnets.

Loadable by Mininet itself (it imports only pfslab.site, pure Python, from this checkout, so
the Debian `mn`, which runs on /usr/bin/python3, can load it)::

    sudo mn --custom topologies/pfs_branch.py --topo branch,subnets=2,phones_per_subnet=4 \\
            --switch lxbr --controller none

(`--controller none` and `--switch lxbr`: Linux bridges, no OpenFlow, no Open vSwitch.)
Parameters that are lists take `+` separated values on the mn command line, because mn splits
on commas: `--topo branch,models=CP-7961G+CP-7960G`.

Naming. Every node, interface and bridge name starts with the run prefix (`prefix=`, 1-6
characters, lower-case letters and digits, starting with a letter) followed by an upper-case
role letter, so one run's prefix can never match another run's names (`pf1` vs `pf1a...`):

    {P}HQ      the TFTP host (10.0.0.10/24)       {P}RH   HQ router
    {P}S0      HQ LAN bridge                      {P}RB   branch router
    {P}S<k>    remote subnet k's bridge           {P}P<i> phone i (numbered across subnets)

Interface names stay within Linux's 15 characters for up to 9999 phones and 99 subnets.
Addresses and MACs are deterministic (they depend on subnet and position, not on the prefix).
No NAT, no route out: the bridges have no address, the lab is not connected to anything in the
root namespace, and no router has a default route.
"""

import ipaddress
import os
import random
import re
import string
import sys

from mininet.node import Node
from mininet.nodelib import LinuxBridge
from mininet.topo import Topo

# pfslab's site (phones, address plan) is pure Python: importable from the checkout even under
# Debian's /usr/bin/python3 that `mn` runs on
# (`mn --custom` exec()s this file without __file__; the code object still knows its file)
_HERE = globals().get("__file__") or sys._getframe().f_code.co_filename
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(_HERE))))
from pfslab.site import Site  # noqa: E402

PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,5}$")

HQ_NET = "10.0.0.0/24"
HQ_ROUTER_IP = "10.0.0.1"
TFTP_IP = "10.0.0.10"
WAN_HQ_IP = "10.254.0.1"
WAN_BRANCH_IP = "10.254.0.2"

#: a Linux bridge takes at most 1024 ports; one is the router's
MAX_PHONES_PER_SUBNET = 1000


def random_prefix():
    """A fresh run prefix: 'p' + 5 random lower-case letters/digits."""
    alphabet = string.ascii_lowercase + string.digits
    return "p" + "".join(random.SystemRandom().choice(alphabet) for _ in range(5))


def check_prefix(prefix):
    if not isinstance(prefix, str) or not PREFIX_RE.match(prefix):
        raise ValueError(
            "prefix %r: use 1-6 lower-case letters or digits, starting with a letter" % (prefix,))
    return prefix


class LabBridge(LinuxBridge):
    """A Linux bridge that turns bridge netfilter off (bridge-nf-call-{arp,ip,ip6}tables = 0,
    which exist once br_netfilter is loaded) before Mininet checks it, so bridged frames are
    not filtered and Mininet has nothing to warn about."""

    @classmethod
    def setup(cls):
        for table in ("arp", "ip", "ip6"):
            path = "/proc/sys/net/bridge/bridge-nf-call-%stables" % table
            if os.path.exists(path):
                with open(path, "w") as f:
                    f.write("0")
        LinuxBridge.setup()


class LabHost(Node):
    """A host in its own network namespace with IPv6 off (no DAD/MLD/RS noise in captures),
    set before Mininet moves the interface in, so it never speaks IPv6 at all."""

    def __init__(self, name, inNamespace=True, **params):
        super().__init__(name, inNamespace=inNamespace, **params)
        self.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 "
                 "net.ipv6.conf.default.disable_ipv6=1")


class LabRouter(LabHost):
    """A Linux router (as in mininet examples/linuxrouter.py): forwarding on in its own
    namespace, IPv6 off, static routes from `routes`: [(destination/len, gateway), ...]."""

    def config(self, routes=(), **params):
        r = super().config(**params)
        self.cmd("sysctl -qw net.ipv4.ip_forward=1")
        for dest, via in routes:
            self.cmd("ip route replace %s via %s" % (dest, via))
        return r


class BranchTopo(Topo):
    """HQ, a WAN, a branch router and K remote subnets of phones.

    ::

        HQ LAN 10.0.0.0/24                 WAN 10.254.0.0/30               remote subnets
                                                                     +-- {P}S1 10.1.1.0/24
      {P}HQ  ----- {P}S0 ----- {P}RH ======================= {P}RB --+     phones .10 .11 ...
      10.0.0.10  (bridge)    .1    .1 ({P}RH-w)   ({P}RB-w) .2      .1   +-- {P}S2 10.1.2.0/24
      in.tftpd                  HQ router               branch router     ...
                                                                     +-- {P}S<K> 10.1.K.0/24

    The WAN (`=`) is where pfslab.lab.wan shapes bandwidth and adds delay and loss.
    Each remote subnet is one Linux bridge: one broadcast domain, as PFS discovery needs.

    Parameters:
      subnets            K remote subnets (default 2)
      phones_per_subnet  phones on each (default 4)
      models             model list, cycled over each subnet's phones (default
                         CP-7961G, CP-7941G, CP-7960G); a string may use + , or : between models
      layout             explicit models instead: one list of models per subnet
                         (phones_per_subnet and subnets are then taken from it)
      site               a pfslab.site.Site instead of all the above (what `pfslab lab` passes)
      prefix             run-unique name prefix (default: a fresh random one)

    After construction, `self.site` is the Site (its phones are pfslab.site.PhoneSpec),
    `self.hosts_of` maps a phone's name to its Mininet host name, and `self.info` holds the
    rest of the plan.
    """

    def build(self, subnets=2, phones_per_subnet=4, models=None, layout=None, site=None,
              prefix=None):
        P = check_prefix(prefix if prefix is not None else random_prefix())
        if site is None:
            site = Site.branch(subnets, phones_per_subnet, models, layout=layout)
        per_subnet = {}
        for ph in site.phones:
            per_subnet.setdefault(ph.subnet, []).append(ph)
        if max(len(v) for v in per_subnet.values()) > MAX_PHONES_PER_SUBNET:
            raise ValueError("phones_per_subnet: at most %d (a Linux bridge takes 1024 ports)"
                             % MAX_PHONES_PER_SUBNET)
        if len(site.phones) > 9999:
            raise ValueError("at most 9999 phones in one lab")

        self.prefix = P
        self.site = site
        self.hosts_of = {}
        rh, rb, hq = P + "RH", P + "RB", P + "HQ"

        # HQ side
        s0 = self.addSwitch(P + "S0", cls=LabBridge)
        self.addNode(rh, cls=LabRouter, ip=None,
                     routes=[(n, WAN_BRANCH_IP) for n in site.networks])
        self.addNode(rb, cls=LabRouter, ip=None, routes=[(HQ_NET, WAN_HQ_IP)])
        self.addHost(hq, cls=LabHost, ip="%s/24" % TFTP_IP, mac="02:50:46:00:00:0a",
                     defaultRoute="via " + HQ_ROUTER_IP)
        self.addLink(hq, s0, intfName1=hq + "-0", intfName2=s0 + "-hq")
        self.addLink(rh, s0, intfName1=rh + "-l", intfName2=s0 + "-r",
                     params1={"ip": "%s/24" % HQ_ROUTER_IP}, addr1="02:50:46:00:00:01")
        # the WAN
        self.addLink(rh, rb, intfName1=rh + "-w", intfName2=rb + "-w",
                     params1={"ip": "%s/30" % WAN_HQ_IP}, params2={"ip": "%s/30" % WAN_BRANCH_IP},
                     addr1="02:50:46:00:fe:01", addr2="02:50:46:00:fe:02")

        # remote subnets
        self.info = {"prefix": P, "hq": hq, "hq_ip": TFTP_IP, "hq_router": rh,
                     "branch_router": rb, "hq_wan_intf": rh + "-w", "branch_wan_intf": rb + "-w",
                     "hq_switch": s0, "subnets": []}
        index = 0
        for k, net in enumerate(site.networks, start=1):
            sw = self.addSwitch("%sS%d" % (P, k), cls=LabBridge)
            plen = ipaddress.ip_network(net).prefixlen
            gw = str(ipaddress.ip_network(net).network_address + 1)
            self.addLink(rb, sw, intfName1="%s-%d" % (rb, k), intfName2="%s-r" % sw,
                         params1={"ip": "%s/%d" % (gw, plen)},
                         addr1="02:50:46:%02x:ff:01" % k)
            self.info["subnets"].append({
                "index": k, "switch": sw, "network": net, "gateway": gw,
                "broadcast": per_subnet[k][0].broadcast, "router_intf": "%s-%d" % (rb, k)})
            for j, ph in enumerate(per_subnet[k]):
                index += 1
                name = "%sP%d" % (P, index)
                self.hosts_of[ph.name] = name
                self.addHost(name, cls=LabHost, ip="%s/%d" % (ph.ip, plen), mac=ph.mac,
                             defaultRoute="via " + gw)
                self.addLink(name, sw, intfName1=name + "-0", intfName2="%s-%d" % (sw, j))


class SmallTopo(BranchTopo):
    """2 subnets x 2 phones (CP-7961G, CP-7960G) for `mn` (drawing: BranchTopo); given a
    `site` (as `pfslab lab --topo small` gives it), the site's phones."""

    def build(self, prefix=None, **kw):
        kw.setdefault("subnets", 2)
        kw.setdefault("phones_per_subnet", 2)
        kw.setdefault("models", ("CP-7961G", "CP-7960G"))
        super().build(prefix=prefix, **kw)


topos = {"branch": BranchTopo, "small": SmallTopo}
