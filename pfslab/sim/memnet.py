"""A deterministic in-memory network with a virtual clock, for the sans-I/O phones.

Subnets are broadcast domains; a broadcast reaches only the phones that listen for its model
and load (an index filled as phones learn their load). Unicast datagrams take the LAN latency.
TCP streams are ordered and share the sending phone's uplink fairly (a processor-sharing
link: a parent's two children each get half). A stream's keepalive (HOLDs) costs no event
while it beats: a watched stream's silence is worked out from its last beat when the beating
stops (the sender wrote something else, closed, or died). TFTP fetches cross the WAN model of
:mod:`pfslab.sim.wan`. No sockets, no threads: events run from one heap of plain tuples in
time order, so a run is a pure function of its inputs. docs/sim.md describes the model.

Used by the unit tests and by ``pfslab sim``. With ``payloads=False`` firmware images travel
as their size and digest (:class:`pfslab.protocol.payload.Content`), not as bytes.
"""
from __future__ import annotations

import gc
import math
from collections import deque

from .. import firmware
from ..protocol import codec
from ..protocol.logs import LogRecord, render
from ..protocol.payload import Content
from ..protocol.codec import MsgType
from ..protocol.phone import (BROADCAST, HEEDING, Close, Completed, Connect, Fetch, Keepalive,
                              Phone, Send, Watch, Write, ignores_root)
from .events import EventHeap
from .pslink import PSLink
from .wan import MODELS as WAN_MODELS

_CLOSE = object()     # in a stream's queue: the close that follows its data
_SMALL = 1500         # bytes: a write this small on an idle stream skips the uplink's sharing


class Node:
    __slots__ = ("phone", "ip", "subnet", "alive", "logs", "armed", "seq", "listening",
                 "uplink", "links", "done", "plain", "gotos", "heeding", "sending")

    def __init__(self, phone: Phone, subnet: int):
        self.phone, self.ip, self.subnet = phone, phone.id.ip, subnet
        self.alive = True
        self.logs: list[LogRecord] = []
        self.armed = math.inf                   # its earliest timer event in the heap
        self.seq = -1                           # the phone's timer count when last armed
        self.plain = False                      # see begin()
        self.listening = False                  # in its (subnet, model, load) broadcast group
        self.uplink: PSLink | None = None
        self.sending = False                    # its uplink carries a file (SimNet.serving)
        self.links: set[int] = set()            # sids of its open streams
        self.done: Completed | None = None
        self.gotos = 0                          # the phone's state changes when last indexed
        self.heeding: dict[str, bool] = {}      # file -> in a HEEDING state (see _regroup)


class _Link:
    """One direction of a stream: what the sender wrote, in order, not yet delivered; the
    sender's keepalive on it, and the receiver's silence watch on it."""
    __slots__ = ("src", "dst", "dsid", "q", "busy", "dead", "last", "beat_t0", "beat_every",
                 "beat_bytes", "watch", "rx_last", "checking")

    def __init__(self, src: Node, dst: Node, dsid: int):
        self.src, self.dst, self.dsid = src, dst, dsid
        self.q: deque | None = None        # created at its first queued write (most go at once)
        self.busy = False
        self.dead = False
        self.last = 0.0                    # when its latest delivery happens
        self.beat_t0 = 0.0                 # the keepalive's first beat
        self.beat_every = 0.0              # 0: no keepalive
        self.beat_bytes = 0
        self.watch = 0.0                   # the receiver's Watch: silence, s (0: none)
        self.rx_last = 0.0                 # when the receiver last got something on it
        self.checking = False              # a _silent event is queued


class SimNet(EventHeap):
    def __init__(self, files: dict[str, bytes], *, server: str = "10.0.0.10",
                 lan_latency: float = 0.0002, lan_bps: float = 100e6, wan_rtt: float = 0.1,
                 blksize: int = 1428, wan_bps: float | None = None, wan_model: str = "packet",
                 wan_queue_bytes: float | None = None, wan_loss: float = 0.0,
                 tftp_timeout: float = 1.0, tftp_retries: int = 8, seed: int = 1,
                 payloads: bool = True, logs: bool = True):
        self.files = files
        self.server = server
        self.lan_latency = lan_latency
        self.lan_bps = lan_bps
        self.wan_rtt = wan_rtt
        self.blksize = blksize
        self.wan_bps = wan_bps
        self.wan_model = wan_model
        self.keep_logs = logs
        # what the server hands out: firmware images by size and digest unless payloads
        self.store = {f: d if payloads or not _is_image(d) else Content.of(d)
                      for f, d in files.items()}
        super().__init__()
        self.wan = WAN_MODELS[wan_model](
            self, self._fetched, bps=wan_bps, rtt=wan_rtt, blksize=blksize,
            queue_bytes=wan_queue_bytes, loss=wan_loss, seed=seed, timeout=tftp_timeout,
            retries=tftp_retries)
        self.nodes: dict[str, Node] = {}                   # by ip
        self.subnets: dict[int, list[Node]] = {}
        self._groups: dict[tuple, list[Node]] = {}         # (subnet, model, map) -> listeners
        # per (group, file): its listeners in a HEEDING state (the only ones a CLAIM or READY
        # can change); per (group, file, xid): listeners that ignore a ROOT with that XID
        # until they change state (ignores_root). docs/sim.md, "Broadcasts".
        self._heed: dict[tuple, set[Node]] = {}
        self._deaf: dict[tuple, set[Node]] = {}
        self._links: dict[tuple[str, int], _Link] = {}     # (sender ip, sid) -> its direction
        self.tftp_requests: list[tuple[float, str, str]] = []   # (t, client ip, file)
        self.connections: list[tuple[float, str, str]] = []     # (t, child ip, parent ip)
        self.datagrams = 0
        self.pending = 0                                   # phones started, not completed
        self.ok = self.failed = 0                          # phones completed, by outcome
        self.serving = 0                                   # phones sending a file now
        self._started: list[Node] = []
        # called with (phone, now) after each input that changed a state, a stream, a fetch
        # or an install: the live view
        self.on_drain = None

    # ---------------------------------------------------------------- set-up

    def add(self, phone: Phone, subnet: int = 1) -> Phone:
        node = Node(phone, subnet)
        self.nodes[node.ip] = node
        self.subnets.setdefault(subnet, []).append(node)
        return phone

    def reset(self, phone: Phone, at: float = 0.0) -> None:
        """Power-cycle the phone at time ``at``: it starts its upgrade."""
        node = self.nodes[phone.id.ip]
        self.pending += 1
        self._started.append(node)
        self.at(at, self._start, node, None, None)

    def kill(self, phone: Phone, at: float, silent: bool = False) -> None:
        """The phone vanishes at ``at``: its streams reset, or (silent) just go quiet."""
        self.at(at, self._kill, self.nodes[phone.id.ip], silent, None)

    # ---------------------------------------------------------------- running

    def busy(self) -> bool:
        return self.pending > 0        # run() ends when every reset phone has ended

    def run(self, until: float | None = None, tick=None, before: float | None = None) -> float:
        """Run until every reset phone has ended (or virtual time ``until``); returns the
        time reached. :meth:`summary` says whether the run was cut short.

        Python's cyclic garbage collector is paused meanwhile: a run makes next to no cyclic
        garbage, and each collection walks every phone's objects (a third of the CPU time
        at 10^4 phones). Collections resume when it returns."""
        paused = gc.isenabled()
        gc.disable()
        try:
            return super().run(until, tick, before)
        finally:
            if paused:
                gc.enable()

    # ---------------------------------------------------------------- inputs to phones

    def _start(self, node: Node, _a=None, _b=None) -> None:
        ph = node.phone
        ph.logs = self.keep_logs           # no log records to build and drop
        # Phone's own datagram input and timers (not a test's rogue that overrides them):
        # it takes broadcasts decoded (Phone.on_message), and its timers are known by _pushes
        node.plain = (type(ph).on_datagram is Phone.on_datagram
                      and type(ph).next_deadline is Phone.next_deadline)
        if node.alive:
            node.phone.start(self.now)
            self._drain(node)

    def _timer(self, node: Node, t: float, _=None) -> None:
        # One timer event per phone at a time, at its earliest deadline: a deadline that
        # moves later (a keepalive pushing a silence timer back) costs no new event; this
        # one finds it not due yet and re-arms for it.
        if t != node.armed:
            return                                  # superseded by an earlier one
        node.armed = math.inf
        node.seq = -1                               # re-arm for its next deadline, whatever
        if node.alive:
            dl = node.phone.next_deadline()
            if dl is not None and dl <= self.now:
                node.phone.on_timer(self.now)
            self._drain(node)

    def _datagram(self, node: Node, data: bytes, src: str) -> None:
        if node.alive:
            node.phone.on_datagram(self.now, data, src)
            self._drain(node)

    def _message(self, node: Node, m: codec.Message, src: str) -> None:
        if node.alive:
            node.phone.on_message(self.now, m, src)
            self._drain(node)

    def _broadcast(self, group: list[Node], m: codec.Message, src: Node) -> None:
        # Decoded once for the whole group (Phone.on_message). A phone that cannot act on it
        # is not handed it (a CLAIM or READY outside an election or a root, a ROOT it
        # ignores: _heed, _deaf), though it still counts as received (datagrams). Of the
        # others, one that produced no output, set no timer and kept its states is not
        # drained.
        now, ip, drain = self.now, src.ip, self._drain
        self.datagrams += len(group) - 1
        data = None
        key = (src.subnet, m.model, m.map, m.file)
        root = m.type is MsgType.ROOT
        skip, only, deaf = (), None, None
        if root:
            skip = self._deaf.get(key + (m.xid,)) or ()
            if len(skip) >= len(group) - 1 and src not in skip:
                return            # a repeat all the others ignore (the deaf are all in group)
        elif m.type is MsgType.CLAIM or m.type is MsgType.READY:
            only = self._heed.get(key) or ()
        for node in group:
            if node is src or not node.alive:
                continue
            ph = node.phone
            if not node.plain:                      # a test's own phone: it hears everything
                data = data or codec.encode(m)
                ph.on_datagram(now, data, ip)
                drain(node)
                continue
            if node in skip or (only is not None and node not in only):
                continue
            seq, gotos = ph._pushes, ph.gotos
            ph.on_message(now, m, ip)
            if ph._out or ph._pushes != seq or ph.gotos != gotos:
                drain(node)
            elif root and node.heeding.get(m.file) is False and \
                    ignores_root(ph.sessions[m.file], m.xid):
                if deaf is None:                    # so it stays until it changes state
                    deaf = self._deaf.setdefault(key + (m.xid,), set())
                deaf.add(node)

    def _broadcast_raw(self, group: list[Node], data: bytes, src: Node) -> None:
        now = self.now
        self.datagrams += len(group) - 1
        for node in group:
            if node is not src and node.alive:
                node.phone.on_datagram(now, data, src.ip)
                self._drain(node)

    def _stream_data(self, link: _Link, data, close=None) -> None:
        node = link.dst
        link.rx_last = self.now
        if node.alive:
            ph = node.phone
            pushes = ph._pushes
            ph.on_stream_data(self.now, link.dsid, data)
            if ph._out or ph._pushes != pushes or not node.plain:   # a HOLD changes nothing
                self._drain(node)
        # the watches on this stream, now that it has carried this (a REQUEST's answer is
        # a beat, or the file, or nothing: the child's watch then counts)
        self._rewatch(link)
        back = self._links.get((node.ip, link.dsid))
        if back is not None:
            self._rewatch(back)
        if close:
            self._stream_closed(node, link.dsid, "closed by peer")

    def _stream_closed(self, node: Node, sid: int, why: str) -> None:
        node.links.discard(sid)
        if node.alive:
            node.phone.on_stream_closed(self.now, sid, why)
            self._drain(node)

    def _fetched(self, token: tuple[Node, str], ok: bool, error: str) -> None:
        node, file = token
        if node.alive:
            node.phone.on_fetched(self.now, file, self.store[file] if ok else None, error)
            self._drain(node)

    def _kill(self, node: Node, silent: bool, _=None) -> None:
        node.alive = False
        if node.done is None:
            self.pending -= 1
        for sid in list(node.links):
            link = self._links.get((node.ip, sid))
            if link is None:
                continue
            self._beat_stop(link, False)           # no more HOLDs, nor anything else
            link.dead = True                       # what it had not sent yet never leaves
            if not silent:
                self._drop(node.ip, sid)
                self.at(self.now + self.lan_latency, self._stream_closed, link.dst, link.dsid,
                        "reset by peer")

    # ---------------------------------------------------------------- outputs of phones

    def _drain(self, node: Node) -> None:
        ph = node.phone
        out = ph._out                     # Phone.pop_outputs(), without a call per input
        if out:
            ph._out = []
        shown = False                     # what the phone's screen shows may have changed
        for o in out:
            k = type(o)
            if k is LogRecord:
                if self.keep_logs:
                    node.logs.append(o)
            elif k is Send:
                self._send(node, o)
            else:
                shown = True
                if k is Write:
                    self._write(node, o.sid, o.data)
                elif k is Connect:
                    self._connect(node, o)
                elif k is Close:
                    self._write(node, o.sid, _CLOSE)
                elif k is Keepalive:
                    self._keepalive(node, o)
                elif k is Watch:
                    self._watch(node, o)
                elif k is Fetch:
                    self._fetch(node, o.file)
                elif k is Completed:
                    if node.done is None and node.alive:
                        self.pending -= 1
                    if node.done is None:
                        if o.ok:
                            self.ok += 1
                        else:
                            self.failed += 1
                    node.done = o
                # Installed: the phone's own record (phone.installed) is what results read
        if not node.listening and ph.pfs:
            node.listening = True
            self._groups.setdefault((node.subnet, ph.id.model, ph.map), []).append(node)
        if ph.gotos != node.gotos:
            shown = True
            if node.listening:
                self._regroup(node)
            else:
                node.gotos = ph.gotos
        if shown and self.on_drain is not None:
            # the live view's feed: after an input that changed a state, a stream, a fetch
            # or an install (not after each datagram a phone sent)
            self.on_drain(ph, self.now)
        if ph._pushes != node.seq or not node.plain:
            # a timer was set since it was last armed (only a new timer can bring its next
            # deadline earlier; a cancelled one is found not due when its event runs)
            node.seq = ph._pushes
            dl = ph.next_deadline()
            if dl is not None and dl < node.armed:
                node.armed = dl
                self.at(dl, self._timer, node, dl, None)

    def _regroup(self, node: Node) -> None:
        """The phone changed state: move it in the broadcast index (_heed, _deaf)."""
        ph = node.phone
        one = ph.gotos - node.gotos == 1            # then the change is that of ph.moved
        node.gotos = ph.gotos
        g = (node.subnet, ph.id.model, ph.map)
        for f, s in ((ph.moved.file, ph.moved),) if one else ph.sessions.items():
            h = s.state in HEEDING
            if node.heeding.get(f) is h:
                continue
            node.heeding[f] = h
            heed = self._heed.setdefault(g + (f,), set())
            if h:
                heed.add(node)
                for x in s.xids:                   # it heeds every ROOT again
                    deaf = self._deaf.get(g + (f, x))
                    if deaf:
                        deaf.discard(node)
            else:
                heed.discard(node)

    def _send(self, node: Node, o: Send) -> None:
        t = self.now + self.lan_latency
        if o.dst == BROADCAST:
            try:
                m = o.msg if o.msg is not None else codec.decode_shared(o.data)
            except codec.DecodeError:
                self.at(t, self._broadcast_raw, self.subnets[node.subnet], o.data, node)
                return                                # not ours: everyone hears it
            group = self._groups.get((node.subnet, m.model, m.map))
            if group:
                self.at(t, self._broadcast, group, m, node)
            return
        dst = self.nodes.get(o.dst)
        if dst is not None:
            self.datagrams += 1
            if o.msg is not None and dst.plain:         # as decoded, for a phone's own input
                self.at(t, self._message, dst, o.msg, node.ip)
            else:
                self.at(t, self._datagram, dst, o.data, node.ip)

    def _connect(self, node: Node, o: Connect) -> None:
        peer = self.nodes.get(o.peer)
        if peer is None or not peer.alive:
            self.at(self.now + self.lan_latency, self._stream_closed, node, o.sid,
                    "connection refused")
            return
        psid = peer.phone.on_accept(self.now, node.ip)
        self._links[(node.ip, o.sid)] = _Link(node, peer, psid)
        self._links[(peer.ip, psid)] = _Link(peer, node, o.sid)
        node.links.add(o.sid)
        peer.links.add(psid)
        self.connections.append((self.now, node.ip, peer.ip))

    def _drop(self, ip: str, sid: int) -> None:
        link = self._links.pop((ip, sid), None)
        if link is not None:
            link.src.links.discard(sid)
            if self._links.pop((link.dst.ip, link.dsid), None) is not None:
                link.dst.links.discard(link.dsid)

    def _write(self, node: Node, sid: int, data) -> None:
        link = self._links.get((node.ip, sid))
        if link is None:
            return
        if link.beat_every:
            self._beat_stop(link, True)
        if data is _CLOSE:
            self._drop(node.ip, sid)     # nothing more either way; what was written still goes
        if not link.busy and not link.dead and (data is _CLOSE or len(data) <= _SMALL):
            # a frame on an idle stream (HOLD, REQUEST, END): on its way at once, without
            # taking a share of the uplink (its bits are negligible)
            self._deliver(link, self.now + (0 if data is _CLOSE else len(data) * 8
                                            / self.lan_bps) + self.lan_latency, data)
            return
        if link.q is None:
            link.q = deque()
        link.q.append(data)
        if not link.busy:
            self._lan_next(link)

    def _deliver(self, link: _Link, t: float, item) -> None:
        t = link.last = max(t, link.last)
        if item is _CLOSE:
            self.at(t, self._stream_closed, link.dst, link.dsid, "closed by peer")
        else:
            self.at(t, self._stream_data, link, item)

    # ---------------------------------------------------------------- keepalives, watches

    def _keepalive(self, node: Node, o: Keepalive) -> None:
        """A beat costs no event: the receiver's last arrival is worked out when the beating
        stops (:meth:`_beat_stop`). A test's own phone (not ``plain``) gets the first one
        as a frame."""
        link = self._links.get((node.ip, o.sid))
        if link is None or link.dead:
            return
        if link.beat_every:
            link.beat_bytes = len(o.data)          # new bytes, same beat
            return
        if not link.dst.plain:
            self._write(node, o.sid, o.data)
        link.beat_t0, link.beat_every, link.beat_bytes = self.now, o.every, len(o.data)

    def _beat_stop(self, link: _Link, more: bool) -> None:
        """The sender wrote something else (``more``: a delivery follows, and the watch is
        looked at after it), or died."""
        every = link.beat_every
        if every:
            link.beat_every = 0.0
            if not link.dead:
                n = int((self.now - link.beat_t0) / every + 1e-9)
                # the last beat arrives as a small frame on an idle stream would (_write)
                t = (link.beat_t0 + n * every + link.beat_bytes * 8 / self.lan_bps
                     + self.lan_latency)
                link.rx_last = max(link.rx_last, t)
        if not more and link.watch:
            self._watch_check(link)

    def _watch(self, node: Node, o: Watch) -> None:
        out = self._links.get((node.ip, o.sid))
        if out is None:
            return                                 # refused, or gone: closed events follow
        link = self._links.get((out.dst.ip, out.dsid))    # the direction towards this phone
        if link is None:
            return
        link.watch, link.rx_last = o.silence, max(link.rx_last, self.now)
        if out.last <= self.now:                   # else: looked at when that arrives
            self._rewatch(link)

    def _rewatch(self, link: _Link) -> None:
        """After a delivery on the stream: a watched direction that is quiet (no beat, no
        write on its way) gets its silence looked at."""
        if (link.watch and not link.checking and not link.beat_every and not link.busy
                and link.dsid in link.dst.links):
            self._watch_check(link)

    def _watch_check(self, link: _Link) -> None:
        if not link.checking:
            link.checking = True
            self.at(link.rx_last + link.watch, self._silent, link)

    def _silent(self, link: _Link, _a=None, _b=None) -> None:
        link.checking = False
        if not link.watch or (link.beat_every and not link.dead) or (
                link.busy and not link.dead):
            return                                 # beating, or bytes on the way: later
        if link.dsid not in link.dst.links:
            return                                 # closed: the close is on its way
        due = link.rx_last + link.watch
        if due > self.now + 1e-9:
            self._watch_check(link)
            return
        link.watch = 0.0
        node = link.dst
        if node.alive:
            node.phone.on_stream_silent(self.now, link.dsid)
            self._drain(node)

    # ---------------------------------------------------------------- the LAN

    def _lan_next(self, link: _Link) -> None:
        """Put the stream's next write on its sender's uplink (a close has no bits: it
        follows at once, one LAN hop behind what went before it)."""
        q = link.q
        while q and q[0] is _CLOSE and not link.dead:
            q.popleft()
            self._deliver(link, self.now + self.lan_latency, _CLOSE)
        if not q or link.dead:
            link.busy = False
            if q is not None and not q:
                link.q = None                       # most streams are done with it
            return
        link.busy = True
        item = q[0]
        src = link.src
        if src.uplink is None:
            src.uplink = PSLink(self.lan_bps)
        if not src.sending:
            src.sending = True
            self.serving += 1
        src.uplink.add(self.now, len(item) * 8, link)
        self._uplink_schedule(src)

    def _uplink_schedule(self, node: Node) -> None:
        t = node.uplink.next_finish()
        if t is not None:
            self.at(t, self._uplink_done, node, node.uplink.gen, None)

    def _uplink_done(self, node: Node, gen: int, _=None) -> None:
        up = node.uplink
        if gen != up.gen:
            return
        t = self.now + self.lan_latency
        for link in up.pop_done(self.now):
            item = link.q.popleft()
            if link.dead:
                link.q.clear()
            elif link.q and link.q[0] is _CLOSE:
                # the close right behind it (a file, then the parent's close): both in one
                # event, as two would run back to back
                link.q.popleft()
                link.last = max(t, link.last)
                self.at(link.last, self._stream_data, link, item, True)
            else:
                self._deliver(link, t, item)
            self._lan_next(link)
        if not up.n and node.sending:
            node.sending = False
            self.serving -= 1
        self._uplink_schedule(node)

    # ---------------------------------------------------------------- the WAN

    def _fetch(self, node: Node, file: str) -> None:
        self.tftp_requests.append((self.now, node.ip, file))
        data = self.store.get(file)
        if data is None:
            self.at(self.now + self.wan_rtt, self._fetched, (node, file), False,
                    "File not found")
            return
        self.wan.fetch(self.now, (node, file), len(data), file)

    # ---------------------------------------------------------------- results

    def summary(self) -> dict:
        """How the run ended: complete or cut short, who finished, what crossed the WAN."""
        ok = [n for n in self._started if n.done is not None and n.done.ok]
        failed = [n for n in self._started if n.done is not None and not n.done.ok]
        left = [n for n in self._started if n.done is None and n.alive]
        killed = [n for n in self._started if n.done is None and not n.alive]
        payload, wire = self.wan.delivered()
        truncated = bool(left)
        return {"truncated": truncated, "t_s": round(self.now, 3),
                "phones": len(self._started), "completed": len(ok), "failed": len(failed), "killed": len(killed),
                "not_completed": [n.phone.id.name for n in left],
                "makespan_s": None if truncated or not self._started else
                round(max((n.done.t for n in ok + failed), default=0.0), 3),
                "wan_payload_bytes": payload, "wan_wire_bytes": wire,
                "wan_up_bytes": self.wan.up_bytes,
                "tftp_retransmits": self.wan.retransmits, "wan_drops": self.wan.tail_drops,
                "wan_losses": self.wan.losses, "tftp_failures": self.wan.failures,
                "events": self.events, "datagrams": self.datagrams}

    def log_text(self, phone: Phone, epoch: float = 0.0) -> list[str]:
        return [render(r, epoch) for r in self.nodes[phone.id.ip].logs]


def _is_image(data: bytes) -> bool:
    """A firmware image (its bytes are never parsed, only verified), not a manifest/config."""
    return data[:len(firmware.IMAGE_MAGIC)] == firmware.IMAGE_MAGIC
