"""Captures: `wan.pcap` and one `subnet-<k>.pcap` per remote subnet.

* wan.pcap: tcpdump on the branch router's WAN interface, inside its namespace. Every frame
  that crosses the WAN passes that interface exactly once (out or in).
* subnet-<k>.pcap: a Linux bridge shows a unicast frame only on the ports it crosses, and a
  broadcast on all of them, so no single port sees each frame exactly once. Every frame does
  *enter* the bridge exactly once, through one port. So each port of bridge k gets an ingress
  qdisc with a u32 match-all filter whose action mirrors the frame to an ifb device <P>M<k>
  (pyroute2 tc), and one tcpdump captures that dummy: broadcasts and phone-to-phone TCP, each
  frame once. One tcpdump per subnet, not per phone.

tcpdump runs with -Z root (Debian's drops to user tcpdump otherwise), -U (packet-buffered),
-B (a big kernel ring) and is stopped with SIGINT so the pcap is complete.

**Every frame once** (docs/lab.md, "Captures"). Phone-to-phone TCP moves at memory speed, in
bursts of thousands of frames within milliseconds. tcpdump drained them too slowly with
``--immediate-mode``: that selects libpcap's TPACKET_V2 ring (a fixed slot per frame, several
KB each, one wake-up per frame), and an 8 MB ring lost frames at every lab size. Without it
libpcap uses TPACKET_V3 (variable-size frames packed in blocks, one wake-up per block), and
with ``-B`` 64 MB a subnet capture kept all 120,159 frames of 160 MB sent in 0.64 s
(``python -m pfslab.lab.capture_bench``). The price: a pcap read while the lab runs lags the
wire by up to tcpdump's 1 s block timeout.

Each capture is cross-checked: the frames that entered the bridge ports (their rx counters,
pyroute2) or crossed the WAN interface (rx + tx) while it ran, against what tcpdump captured,
and tcpdump's own drop count (``Capture.check``).
"""
from __future__ import annotations

import os
import signal
import struct
import subprocess
import time

from pyroute2 import IPRoute
from pyroute2.protocols import ETH_P_ALL
from pyroute2.netlink.exceptions import NetlinkError

from pfslab.errors import UserError

from .fidelity import tcpdump_stats
from .nsutil import die_with_parent, iproute_in, ns_argv, require_binaries

#: tcpdump -B (KiB) for a subnet mirror and for the WAN interface (the WAN's rate is shaped)
SUBNET_BUFFER_KIB = 65536
WAN_BUFFER_KIB = 16384


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
    # the ifb's own queue (32 frames by default) must not drop a burst of mirrored copies
    ipr.link("set", index=didx, txqlen=10000)
    # its MTU sizes libpcap's slots: the ports' (65535 made each V2 slot 64 KB)
    mtu = max((ipr.get_links(ipr.link_lookup(ifname=p)[0])[0].get_attr("IFLA_MTU") or 1500
               for p in ports), default=1500)
    try:
        ipr.link("set", index=didx, mtu=mtu)
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


#: libpcap's TPACKET_V3 hands tcpdump a block when it is full or 1 s old (tcpdump's timeout);
#: a SIGINT before then loses the frames of the open block
BLOCK_TIMEOUT_S = 1.0


def pcap_frames(path: str, offset: int = 24, frames: int = 0) -> tuple[int, int]:
    """(frames, offset) of a classic pcap being written: counts whole records from
    ``offset`` on (24: just after the file header), so a caller can poll it cheaply."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            e = "<" if head in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
            size = os.fstat(f.fileno()).st_size
            f.seek(offset)
            while offset + 16 <= size:
                rec = f.read(16)
                if len(rec) < 16:
                    break
                incl = struct.unpack(e + "I", rec[8:12])[0]
                if offset + 16 + incl > size:
                    break
                f.seek(incl, 1)
                offset += 16 + incl
                frames += 1
    except OSError:
        pass
    return frames, offset


def link_packets(ifnames: list[str], netns: str | None = None,
                 direction: tuple[str, ...] = ("rx_packets",)) -> int | None:
    """Sum of the interfaces' packet counters (IFLA_STATS64), in namespace ``netns``."""
    total = 0
    try:
        with iproute_in(netns) as ipr:
            for name in ifnames:
                idx = ipr.link_lookup(ifname=name)
                if not idx:
                    return None
                st = ipr.get_links(idx[0])[0].get_attr("IFLA_STATS64") or {}
                total += sum(int(st.get(k, 0)) for k in direction)
    except (OSError, NetlinkError):
        return None
    return total


class Capture:
    """One tcpdump process writing one pcap.

    ``counted`` names the interfaces whose frames this capture must hold: (ifnames, netns,
    counters), e.g. a bridge's ports and ("rx_packets",); their counters are read when
    tcpdump listens and before it stops, for ``check()``."""

    def __init__(self, label: str, ifname: str, pcap: str, netns_pid: int | None = None,
                 record=None, buffer_kib: int = SUBNET_BUFFER_KIB, counted=None):
        self.label, self.ifname, self.pcap = label, ifname, pcap
        self.netns_pid = netns_pid
        self.record = record
        self.buffer_kib = buffer_kib
        self.counted = counted
        self.proc: subprocess.Popen | None = None
        self.errlog = pcap + ".tcpdump.log"
        self.summary = ""
        self.stats: dict = {}
        self.counter_start: int | None = None
        self.counter_stop: int | None = None

    def _count(self) -> int | None:
        if not self.counted:
            return None
        names, netns, fields = self.counted
        return link_packets(names, netns, fields)

    def start(self) -> None:
        argv = ["tcpdump", "-i", self.ifname, "-w", self.pcap, "-U", "-Z", "root", "-n",
                "-B", str(self.buffer_kib), "-s", "0"]
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
                        self.counter_start = self._count()
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise UserError(f"tcpdump on {self.ifname} did not start; see {self.errlog}")

    def stop(self, timeout: float = 5.0) -> None:
        if not self.proc:
            return
        if self.counter_stop is None:
            self.counter_stop = self._count()
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
                text = f.read().decode(errors="replace")
            self.summary = " ".join(l.strip() for l in text.splitlines() if "packets" in l)
            self.stats = tcpdump_stats(text)
        except OSError:
            pass
        self.proc = None

    def check(self) -> dict:
        """This capture's account (after stop): tcpdump's captured / received / dropped,
        the frames the counted interfaces saw meanwhile, and ``missing``: the most of
        tcpdump's kernel drops, frames it received but did not write, and frames the
        interfaces saw that the pcap lacks (None: unknown).
        ``complete`` is True only when both say nothing is missing."""
        st = dict(self.stats)
        seen = None
        if self.counter_start is not None and self.counter_stop is not None:
            seen = self.counter_stop - self.counter_start
        cap, rcv = st.get("captured"), st.get("received")
        gaps = [x for x in (st.get("dropped"),
                            None if rcv is None or cap is None else max(0, rcv - cap),
                            None if seen is None or cap is None else max(0, seen - cap))
                if x is not None]
        missing = max(gaps) if gaps else None
        return {"label": self.label, "pcap": os.path.basename(self.pcap), **st,
                "frames_on_interfaces": seen, "missing": missing,
                "complete": missing == 0 and seen is not None}


class Captures:
    """All captures of one run: start them, wait until all listen, stop them (SIGINT)."""

    def __init__(self, out_dir: str, record=None):
        require_binaries("tcpdump", "nsenter")
        self.out_dir = out_dir
        self.record = record
        self.items: list[Capture] = []
        self.files: dict[str, str] = {}

    def add(self, label: str, ifname: str, netns_pid: int | None = None, **kw) -> str:
        pcap = os.path.join(self.out_dir, f"{label}.pcap")
        self.items.append(Capture(label, ifname, pcap, netns_pid, self.record, **kw))
        self.files[label] = pcap
        return pcap

    def start(self, timeout: float = 10.0) -> None:
        for c in self.items:
            c.start()
        deadline = time.monotonic() + timeout
        for c in self.items:
            c.wait_ready(deadline)

    def stop(self) -> dict:
        for c in self.items:                      # all counters first, then all SIGINTs
            if c.proc and c.counter_stop is None:
                c.counter_stop = c._count()
        self._drain()
        for c in self.items:
            if c.proc and c.proc.poll() is None:
                c.proc.send_signal(signal.SIGINT)
        for c in self.items:
            c.stop()
        return {c.label: c.summary for c in self.items}

    def _drain(self, limit: float = 3 * BLOCK_TIMEOUT_S) -> None:
        """Before the SIGINTs: until every pcap holds the frames its interfaces counted
        (tcpdump gets a ring block at most 1 s after its last frame), or ``limit`` s.
        Captures without counters get one block timeout."""
        live = [c for c in self.items if c.proc and c.proc.poll() is None]
        if not live:
            return
        end = time.monotonic() + limit
        want = {}
        for c in live:
            if c.counter_start is not None and c.counter_stop is not None:
                want[c] = c.counter_stop - c.counter_start
        if len(want) < len(live):
            end = min(end, time.monotonic() + BLOCK_TIMEOUT_S + 0.2)
        pos = {c: (0, 24) for c in want}
        while time.monotonic() < end:
            for c in list(want):
                pos[c] = pcap_frames(c.pcap, pos[c][1], pos[c][0])
                if pos[c][0] >= want[c]:
                    del want[c]
            if not want and len(live) == len(pos):
                return
            time.sleep(0.05)

    def checks(self) -> dict:
        """label -> Capture.check(), after stop()."""
        return {c.label: c.check() for c in self.items}
