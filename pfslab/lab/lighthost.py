"""Phones as light hosts: a named network namespace each, and no process at all.

A Mininet host is a namespace held open by a `bash` shell (one process per host, ~5 MB of
RSS each, and a shell round trip for every step of its configuration). The phones need none
of that: the agent opens each phone's sockets with setns(2) into its namespace. So the lab
builds only the infrastructure (HQ, routers, bridges) with Mininet, and each phone as:

- a named network namespace, ``/run/netns/<host name>`` (bind-mounted, as ``ip netns add``
  makes it; the host name starts with the run prefix, so ``pfslab clean`` finds it by
  prefix as well as by the run record);
- a veth pair: ``<host>-0`` inside (the topology's interface name, IP, MAC, and default
  route, as Mininet would set them from the Topo's host parameters), the other end the
  topology's bridge port, enslaved to the bridge;
- IPv6 off (set before any interface exists in the namespace), TX offload off on both ends.

Everything is done in this process, in bulk: ``unshare(CLONE_NEWNET)`` on the calling thread
makes the namespace, netlink (pyroute2) and ethtool ioctls are issued on sockets made inside
it, and the thread goes back to its own namespace (setns) before the next phone. Nothing is
forked. Removing a namespace (unmount, unlink) destroys its veth and so the bridge port.

From a shell: ``ip netns exec <prefix>P1 ping 10.0.0.10`` (``ip netns list`` lists them).
"""
from __future__ import annotations

import ctypes
import dataclasses
import errno
import ipaddress
import os
import threading
import time

from pyroute2 import IPRoute

from pfslab.agent.netns import _setns_raw
from pfslab.errors import UserError

from .offload import tx_offload_off

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
MS_BIND, MS_REC, MS_SHARED = 4096, 16384, 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_void_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_libc.unshare.argtypes = (ctypes.c_int,)

#: the Topo host parameters a light host honours (others would be silently lost)
HOST_PARAMS = {"cls", "ip", "mac", "defaultRoute"}


@dataclasses.dataclass(frozen=True)
class LightHost:
    """One phone's network: namespace ``name``, interface ``intf`` inside, ``port`` on
    ``bridge`` outside; ``ip`` is address/prefix length."""
    name: str
    intf: str
    port: str
    bridge: str
    ip: str
    mac: str | None = None
    gateway: str | None = None

    @property
    def netns(self) -> str:
        return netns_file(self.name)


def netns_file(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def _err(what: str) -> OSError:
    e = ctypes.get_errno()
    return OSError(e, f"{what}: {os.strerror(e)}")


# ---------------------------------------------------------------- from the topology
def hosts_from_topo(topo, names) -> list[LightHost]:
    """The light hosts for the Topo's hosts ``names``: each must have exactly one link, to
    a switch (its bridge), and only the parameters in HOST_PARAMS."""
    names = set(names)
    links: dict[str, list] = {n: [] for n in names}
    for n1, n2, info in topo.links(sort=True, withInfo=True):
        for me, other, mine, theirs in ((n1, n2, "intfName1", "intfName2"),
                                        (n2, n1, "intfName2", "intfName1")):
            if me in names:
                links[me].append((other, info.get(mine), info.get(theirs), info))
    out = []
    for name in topo.hosts(sort=True):
        if name not in names:
            continue
        params = topo.nodeInfo(name)
        extra = set(params) - HOST_PARAMS
        if extra:
            raise UserError(f"topology host {name}: parameters {sorted(extra)} are not "
                            "supported for phones (they are light hosts: ip, mac, defaultRoute)")
        if len(links[name]) != 1 or not topo.isSwitch(links[name][0][0]):
            raise UserError(f"topology host {name}: a phone needs exactly one link, to a "
                            "switch (its subnet's bridge)")
        sw, intf, port, info = links[name][0]
        if set(info) - {"node1", "node2", "port1", "port2", "intfName1", "intfName2"}:
            raise UserError(f"topology link {name}-{sw}: link parameters are not supported "
                            "for phones (light hosts)")
        route = params.get("defaultRoute")
        gateway = None
        if route:
            via = str(route).split()
            if len(via) != 2 or via[0] != "via":
                raise UserError(f"topology host {name}: defaultRoute {route!r}: light hosts "
                                "take 'via <gateway>'")
            gateway = via[1]
        ip = params.get("ip")
        if not ip or "/" not in ip:
            raise UserError(f"topology host {name}: a phone needs ip='<address>/<len>'")
        out.append(LightHost(name, intf or f"{name}-eth0", port or f"{sw}-eth{name}", sw, ip,
                             params.get("mac"), gateway))
    return out


# ---------------------------------------------------------------- build
def _share_run_dir() -> None:
    """/run/netns as ``ip netns add`` leaves it: a shared mount point (so namespaces bound
    there are seen by every mount namespace, e.g. ``ip netns exec``'s)."""
    os.makedirs(NETNS_DIR, exist_ok=True)
    d = NETNS_DIR.encode()
    if _libc.mount(b"none", d, None, MS_SHARED | MS_REC, None) == 0:
        return
    if _libc.mount(d, d, b"none", MS_BIND | MS_REC, None) != 0:
        raise _err(f"bind-mount {NETNS_DIR}")
    if _libc.mount(b"none", d, None, MS_SHARED | MS_REC, None) != 0:
        raise _err(f"make {NETNS_DIR} shared")


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def create(hosts: list[LightHost]) -> dict[str, float]:
    """Make every host (see the module docstring). Returns step -> seconds.

    The work runs on a thread of its own: the thread that unshares is, for a moment, in the
    new namespace, and ``/proc/self/ns/net`` (which other code takes as "the process's
    namespace") is the main thread's. Ctrl-C on the caller stops it after the current host
    (each made host is then complete, and removed by the caller's teardown)."""
    out: dict = {}
    stop = threading.Event()

    def work():
        try:
            out["steps"] = _create(hosts, stop)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            out["error"] = e

    t = threading.Thread(target=work, name="lighthost-create", daemon=True)
    t.start()
    try:
        while t.is_alive():
            t.join(0.2)
    except BaseException:
        stop.set()
        t.join()
        raise
    if "error" in out:
        raise out["error"]
    return out["steps"]


def _create(hosts: list[LightHost], stop: threading.Event) -> dict[str, float]:
    _share_run_dir()
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    t_ns = t_port = 0.0
    try:
        with IPRoute() as root:
            bridges = {}
            for h in hosts:
                if h.bridge not in bridges:
                    idx = root.link_lookup(ifname=h.bridge)
                    if not idx:
                        raise UserError(f"light host {h.name}: no bridge {h.bridge}")
                    bridges[h.bridge] = idx[0]
            for h in hosts:
                if stop.is_set():
                    break
                t = time.monotonic()
                _create_one(h, home)
                t_ns += time.monotonic() - t
                t = time.monotonic()
                _write(f"/proc/sys/net/ipv6/conf/{h.port}/disable_ipv6", "1")
                tx_offload_off([h.port])
                idx = root.link_lookup(ifname=h.port)[0]
                root.link("set", index=idx, master=bridges[h.bridge], state="up")
                t_port += time.monotonic() - t
            t = time.monotonic()
            for h in hosts:         # the default routes, once the links are up
                if h.gateway and not stop.is_set():
                    _in_ns(h, home, lambda ipr, h=h: ipr.route("add", dst="default",
                                                                gateway=h.gateway))
            t_route = time.monotonic() - t
    finally:
        os.close(home)
    return {"namespaces": round(t_ns, 3), "ports": round(t_port, 3),
            "routes": round(t_route, 3)}


def _in_ns(h: LightHost, home: int, fn) -> None:
    fd = os.open(h.netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns_raw(fd)
        try:
            with IPRoute() as ipr:
                fn(ipr)
        finally:
            _setns_raw(home)
    finally:
        os.close(fd)


def _enter_new(name: str) -> None:
    """Make the named namespace ``name`` and leave the calling thread in it."""
    path = netns_file(name)
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except FileExistsError:
        raise UserError(f"network namespace {name} exists already (a killed run? "
                        "`sudo pfslab clean`)") from None
    if _libc.unshare(CLONE_NEWNET) != 0:
        e = _err("unshare(CLONE_NEWNET)")
        os.unlink(path)
        raise e
    if _libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None) != 0:
        e = _err(f"bind-mount {path}")
        os.unlink(path)
        raise e


def create_netns(name: str) -> str:
    """One empty named namespace (no interface but lo); returns its file."""
    _share_run_dir()
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            _enter_new(name)
        finally:
            _setns_raw(home)
    finally:
        os.close(home)
    return netns_file(name)


def _create_one(h: LightHost, home: int) -> None:
    try:
        _enter_new(h.name)
        # IPv6 off before any interface exists here: none ever speaks it
        for conf in ("all", "default"):
            _write(f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6", "1")
        net = ipaddress.ip_interface(h.ip)
        with IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            kw = {"address": h.mac} if h.mac else {}
            ipr.link("add", ifname=h.intf, kind="veth", **kw,
                     peer={"ifname": h.port, "net_ns_fd": home})
            idx = ipr.link_lookup(ifname=h.intf)[0]
            ipr.addr("add", index=idx, address=str(net.ip), prefixlen=net.network.prefixlen,
                     broadcast=str(net.network.broadcast_address))
            ipr.link("set", index=idx, state="up")
        tx_offload_off([h.intf], None)
    finally:
        _setns_raw(home)


# ---------------------------------------------------------------- remove
def remove(names, wait_ports=(), timeout: float = 30.0) -> list[str]:
    """Remove the named namespaces (their veths go with them, and so the bridge ports);
    then wait, up to ``timeout``, until the root-namespace ``wait_ports`` are gone (the
    kernel frees namespaces asynchronously). Returns the names removed."""
    gone = []
    for name in names:
        path = netns_file(name)
        _libc.umount2(path.encode(), MNT_DETACH)
        try:
            os.unlink(path)
            gone.append(name)
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
    wait = set(wait_ports)
    deadline = time.monotonic() + timeout
    while wait and time.monotonic() < deadline:
        with IPRoute() as ipr:
            left = {l.get_attr("IFLA_IFNAME") for l in ipr.link("dump")} & wait
        if not left:
            break
        wait = left
        time.sleep(0.1)
    return gone


def list_named(pattern) -> list[str]:
    """Names in /run/netns that match ``pattern`` (a compiled regex, e.g. a run prefix's)."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if pattern.match(n))
    except FileNotFoundError:
        return []
