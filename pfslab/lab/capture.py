"""Captures: `wan.pcap` and one `subnet-<k>.pcap` per remote subnet.

* wan.pcap: tcpdump on the branch router's WAN interface, inside its namespace. Every frame
  that crosses the WAN passes that interface exactly once (out or in).
* subnet-<k>.pcap: a Linux bridge shows a unicast frame only on the ports it crosses, and a
  broadcast on all of them, so no single port sees each frame exactly once. Every frame does
  *enter* the bridge exactly once, through one port. So each port of bridge k gets an ingress
  qdisc with a u32 match-all filter whose action mirrors the frame to an ifb device <P>M<k>
  (pyroute2 tc), and one tcpdump captures that dummy: broadcasts and phone-to-phone TCP, each
  frame once. One tcpdump per subnet, not per phone.

tcpdump runs with -Z root (Debian's drops to user tcpdump otherwise), -U (packet-buffered) and
is stopped with SIGINT so the pcap is complete.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

from pyroute2 import IPRoute
from pyroute2.protocols import ETH_P_ALL
from pyroute2.netlink.exceptions import NetlinkError

from pfslab.errors import UserError

from .nsutil import die_with_parent, ns_argv, require_binaries


def set_ipv6(ifname: str, enabled: bool) -> None:
    """Root-namespace sysctl for one interface (no output parsing: a /proc write)."""
    path = f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"
    try:
        with open(path, "w") as f:
            f.write("0" if enabled else "1")
    except OSError:
        pass


def add_mirror(ipr: IPRoute, dummy: str, ports: list[str]) -> None:
    """Create the sink `dummy` (root ns) and mirror the ingress of every port in `ports` to it.

    The sink is an ifb device (the `dummy` driver is not in every kernel; it is not here): an
    ifb drops what it is sent unless it was *redirected*, and a mirror is not, so the mirrored
    copies end right there, after tcpdump's tap has seen them, and never reach an IP stack."""
    ipr.link("add", ifname=dummy, kind="ifb")
    set_ipv6(dummy, False)
    didx = ipr.link_lookup(ifname=dummy)[0]
    try:
        ipr.link("set", index=didx, mtu=65535)
    except NetlinkError:
        pass
    ipr.link("set", index=didx, state="up")
    for port in ports:
        pidx = ipr.link_lookup(ifname=port)[0]
        ipr.tc("add", "ingress", index=pidx, handle=0xFFFF0000)
        # u32 matching everything (cls_matchall is missing from some kernels, e.g. here)
        ipr.tc("add-filter", "u32", index=pidx, parent=0xFFFF0000, prio=1,
               protocol=ETH_P_ALL, target=0x10001, keys=["0x0/0x0+0"],
               action={"kind": "mirred", "direction": "egress", "action": "mirror",
                       "ifindex": didx})


class Capture:
    """One tcpdump process writing one pcap."""

    def __init__(self, label: str, ifname: str, pcap: str, netns_pid: int | None = None,
                 record=None):
        self.label, self.ifname, self.pcap = label, ifname, pcap
        self.netns_pid = netns_pid
        self.record = record
        self.proc: subprocess.Popen | None = None
        self.errlog = pcap + ".tcpdump.log"
        self.summary = ""

    def start(self) -> None:
        # --immediate-mode: no 1 s batching in the kernel's ring, so a pcap read while the
        # lab runs (Wireshark, tests) already holds what was sent.
        argv = ["tcpdump", "-i", self.ifname, "-w", self.pcap, "-U", "--immediate-mode",
                "-Z", "root", "-n", "-B", "8192", "-s", "0"]
        if self.netns_pid:
            argv = ns_argv(self.netns_pid, argv)
        with open(self.errlog, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err,
                                         start_new_session=True,
                                         preexec_fn=die_with_parent(signal.SIGTERM))
        if self.record:
            self.record.add_pid(self.proc.pid, f"tcpdump {self.label}")

    def wait_ready(self, deadline: float) -> None:
        """Until tcpdump says it is listening (so no frame is missed)."""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with open(self.errlog, "rb") as f:
                    if b"listening on" in f.read():
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise UserError(f"tcpdump on {self.ifname} did not start; see {self.errlog}")

    def stop(self, timeout: float = 5.0) -> None:
        if not self.proc:
            return
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGINT)  # flushes the pcap and exits
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.record:
            self.record.drop_pid(self.proc.pid)
        try:
            with open(self.errlog, "rb") as f:
                self.summary = " ".join(
                    l.strip() for l in f.read().decode(errors="replace").splitlines()
                    if "packets" in l)
        except OSError:
            pass
        self.proc = None


class Captures:
    """All captures of one run: start them, wait until all listen, stop them (SIGINT)."""

    def __init__(self, out_dir: str, record=None):
        require_binaries("tcpdump", "nsenter")
        self.out_dir = out_dir
        self.record = record
        self.items: list[Capture] = []
        self.files: dict[str, str] = {}

    def add(self, label: str, ifname: str, netns_pid: int | None = None) -> str:
        pcap = os.path.join(self.out_dir, f"{label}.pcap")
        self.items.append(Capture(label, ifname, pcap, netns_pid, self.record))
        self.files[label] = pcap
        return pcap

    def start(self, timeout: float = 10.0) -> None:
        for c in self.items:
            c.start()
        deadline = time.monotonic() + timeout
        for c in self.items:
            c.wait_ready(deadline)

    def stop(self) -> dict:
        for c in self.items:
            if c.proc and c.proc.poll() is None:
                c.proc.send_signal(signal.SIGINT)
        for c in self.items:
            c.stop()
        return {c.label: c.summary for c in self.items}
