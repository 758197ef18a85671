"""A deterministic in-memory network with a virtual clock, for the sans-I/O phones.

Broadcast domains (subnets), unicast datagrams, ordered TCP-like streams, and a TFTP server
model whose fetch time is lock-step (one block per WAN round trip). No sockets, no threads:
events run from one heap in time order, so a run is a pure function of its inputs.

Used by the unit tests, and the seed of the discrete-event simulator for large runs.
"""
from __future__ import annotations

import heapq
import math
from collections import defaultdict
from dataclasses import dataclass, field

from ..protocol.logs import LogRecord, render
from ..protocol.phone import (BROADCAST, Close, Completed, Connect, Fetch, Installed, Phone,
                              Send, Write)


@dataclass
class Node:
    phone: Phone
    subnet: int
    alive: bool = True
    logs: list[LogRecord] = field(default_factory=list)


class SimNet:
    def __init__(self, files: dict[str, bytes], *, server: str = "10.0.0.10",
                 lan_latency: float = 0.0002, lan_bps: float = 100e6, wan_rtt: float = 0.1,
                 blksize: int = 1428, wan_bps: float | None = None):
        self.files = files
        self.server = server
        self.lan_latency = lan_latency
        self.lan_bps = lan_bps
        self.wan_rtt = wan_rtt
        self.blksize = blksize
        self.wan_bps = wan_bps
        self._wan: dict[int, list] = {}     # transfer id -> [remaining bits, ip, file, data]
        self._wan_t = 0.0
        self._wan_gen = 0
        self._wan_id = 0
        self.now = 0.0
        self._heap: list = []
        self._seq = 0
        self.nodes: dict[str, Node] = {}                   # by ip
        self.subnets: dict[int, list[Node]] = defaultdict(list)
        self._links: dict[tuple[str, int], tuple[str, int]] = {}
        self._chan: dict[tuple[str, int], float] = {}      # per direction: last delivery
        self._timer_at: dict[str, set[float]] = defaultdict(set)
        self.tftp_requests: list[tuple[float, str, str]] = []   # (t, client ip, file)
        self.connections: list[tuple[float, str, str]] = []     # (t, child ip, parent ip)
        self.datagrams = 0
        self.pending = 0                                   # phones started, not completed
        self.on_drain = None      # called with (phone, now) after each input: the live view

    # ---------------------------------------------------------------- set-up

    def add(self, phone: Phone, subnet: int = 1) -> Phone:
        node = Node(phone, subnet)
        self.nodes[phone.id.ip] = node
        self.subnets[subnet].append(node)
        return phone

    def reset(self, phone: Phone, at: float = 0.0) -> None:
        """Power-cycle the phone at time ``at``: it starts its upgrade."""
        self.pending += 1
        self._at(at, self._call, phone.id.ip, "start")

    def kill(self, phone: Phone, at: float, silent: bool = False) -> None:
        """The phone vanishes at ``at``: its streams reset, or (silent) just go quiet."""
        self._at(at, self._kill, phone.id.ip, silent)

    # ---------------------------------------------------------------- running

    def run(self, until: float = 3600.0) -> float:
        """Run until every reset phone completed (or ``until``); returns the time."""
        while self._heap and self.pending > 0:
            t, _, fn, args = heapq.heappop(self._heap)
            if t > until:
                heapq.heappush(self._heap, (t, 0, fn, args))
                break
            self.now = t
            fn(*args)
        return self.now

    def _at(self, t: float, fn, *args) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, fn, args))

    def _call(self, ip: str, method: str, *args):
        node = self.nodes[ip]
        if not node.alive:
            return None
        result = getattr(node.phone, method)(self.now, *args)
        self._drain(node)
        return result

    def _timer(self, ip: str, t: float) -> None:
        self._timer_at[ip].discard(t)
        node = self.nodes[ip]
        dl = node.phone.next_deadline()
        if node.alive and dl is not None and dl <= self.now:
            self._call(ip, "on_timer")

    def _kill(self, ip: str, silent: bool) -> None:
        node = self.nodes[ip]
        node.alive = False
        if not node.phone.completed:
            self.pending -= 1
        if silent:
            return
        for (a, sid), (b, bsid) in list(self._links.items()):
            if a == ip:
                self._drop_link(a, sid)
                self._at(self.now + self.lan_latency, self._call, b, "on_stream_closed", bsid,
                         "reset by peer")

    # ---------------------------------------------------------------- outputs

    def _drain(self, node: Node) -> None:
        ph = node.phone
        ip = ph.id.ip
        for o in ph.pop_outputs():
            if isinstance(o, LogRecord):
                node.logs.append(o)
            elif isinstance(o, Send):
                self._send(node, o)
            elif isinstance(o, Connect):
                self._connect(ip, o)
            elif isinstance(o, Write):
                self._write(ip, o)
            elif isinstance(o, Close):
                self._close(ip, o.sid)
            elif isinstance(o, Fetch):
                self._fetch(ip, o.file)
            elif isinstance(o, Completed):
                self.pending -= 1
            elif isinstance(o, Installed):
                pass
        if self.on_drain is not None:
            self.on_drain(ph, self.now)
        dl = ph.next_deadline()
        if dl is not None and dl not in self._timer_at[ip]:
            self._timer_at[ip].add(dl)
            self._at(dl, self._timer, ip, dl)

    def _send(self, node: Node, o: Send) -> None:
        src = node.phone.id.ip
        t = self.now + self.lan_latency
        if o.dst == BROADCAST:
            targets = [n for n in self.subnets[node.subnet] if n is not node]
        else:
            n = self.nodes.get(o.dst)
            targets = [n] if n is not None else []
        for n in targets:
            self.datagrams += 1
            self._at(t, self._call, n.phone.id.ip, "on_datagram", o.data, src)

    def _connect(self, ip: str, o: Connect) -> None:
        peer = self.nodes.get(o.peer)
        if peer is None or not peer.alive:
            self._at(self.now + self.lan_latency, self._call, ip, "on_stream_closed", o.sid,
                     "connection refused")
            return
        psid = peer.phone.on_accept(self.now, ip)
        self._links[(ip, o.sid)] = (o.peer, psid)
        self._links[(o.peer, psid)] = (ip, o.sid)
        self.connections.append((self.now, ip, o.peer))

    def _deliver_time(self, key, nbytes: int) -> float:
        t = max(self.now + self.lan_latency, self._chan.get(key, 0.0)) + nbytes * 8 / self.lan_bps
        self._chan[key] = t
        return t

    def _write(self, ip: str, o: Write) -> None:
        dst = self._links.get((ip, o.sid))
        if dst is None:
            return
        t = self._deliver_time((ip, o.sid), len(o.data))
        self._at(t, self._call, dst[0], "on_stream_data", dst[1], o.data)

    def _close(self, ip: str, sid: int) -> None:
        dst = self._links.get((ip, sid))
        if dst is None:
            return
        t = self._deliver_time((ip, sid), 0)
        self._drop_link(ip, sid)
        self._at(t, self._call, dst[0], "on_stream_closed", dst[1], "closed by peer")

    def _drop_link(self, ip: str, sid: int) -> None:
        dst = self._links.pop((ip, sid), None)
        if dst is not None:
            self._links.pop(dst, None)

    def _fetch(self, ip: str, file: str) -> None:
        self.tftp_requests.append((self.now, ip, file))
        data = self.files.get(file)
        if data is None:
            self._at(self.now + self.wan_rtt, self._call, ip, "on_fetched", file, None,
                     "File not found")
            return
        self._wan_advance()
        self._wan_id += 1
        # the request's round trip plus the data, with TFTP/UDP/IP overhead per block
        blocks = math.ceil((len(data) + 1) / self.blksize)
        bits = (len(data) + blocks * 32) * 8 + self._cap() * self.wan_rtt
        self._wan[self._wan_id] = [bits, ip, file, data]
        self._wan_schedule()

    def _cap(self) -> float:
        """One lock-step transfer's rate limit, bits/s: a block per round trip."""
        return self.blksize * 8 / self.wan_rtt

    def _rate(self) -> float:
        n = len(self._wan)
        if not n:
            return 0.0
        share = self.wan_bps / n if self.wan_bps else float("inf")
        return min(self._cap(), share)

    def _wan_advance(self) -> None:
        rate, dt = self._rate(), self.now - self._wan_t
        for tr in self._wan.values():
            tr[0] -= rate * dt
        self._wan_t = self.now

    def _wan_schedule(self) -> None:
        self._wan_gen += 1
        if self._wan:
            left = min(tr[0] for tr in self._wan.values())
            self._at(self.now + max(left, 0.0) / self._rate(), self._wan_done, self._wan_gen)

    def _wan_done(self, gen: int) -> None:
        if gen != self._wan_gen:
            return
        self._wan_advance()
        for k, (bits, ip, file, data) in list(self._wan.items()):
            if bits <= 1e-6:
                del self._wan[k]
                self._at(self.now, self._call, ip, "on_fetched", file, data, "")
        self._wan_schedule()

    # ---------------------------------------------------------------- results

    def log_text(self, phone: Phone, epoch: float = 0.0) -> list[str]:
        return [render(r, epoch) for r in self.nodes[phone.id.ip].logs]
