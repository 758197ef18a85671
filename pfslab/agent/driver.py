"""The thin I/O layer: sans-I/O phones on real sockets, many phones in one asyncio loop.

Each phone's sockets (UDP 4051 for broadcasts, TCP 4051 for children, one UDP socket for its
TFTP client) are opened inside the phone's own network namespace (``netns.py``), then all
are served from one event loop in this process. Nothing here scans all phones on a hot path:
every socket and timer belongs to one phone.

Never imports Scapy (a phone agent must stay light: 1000 phones on 2 cores).
"""
from __future__ import annotations

import asyncio
import os
import resource
import socket
import struct
import time
from dataclasses import asdict, dataclass, field

from ..lab.fidelity import LagMeter, probe
from ..firmware import FIXTURE_TRUST, Trust
from ..protocol.codec import PORT
from ..protocol.logs import LogRecord, render
from ..protocol.states import State
from ..protocol.phone import (BROADCAST, Close, Completed, Connect, Fetch, Installed,
                              Keepalive, Phone, PhoneId, Send, Timers, Watch, Write)
from ..site import PhoneSpec
from ..view.status import StatusFilter, phone_status, status_event
from . import netns as ns
from .syslog import SyslogSender
from . import sockfilter
from .tftp import ServerReach, TftpError, tftp_get

#: Datagrams read from one socket per wake-up before the loop serves the others.
RX_BATCH = 64


@dataclass(frozen=True)
class AgentPhone(PhoneSpec):
    """A site's phone (pfslab.site.PhoneSpec) plus the one thing the agent adds: the network
    namespace it runs in (/proc/<pid>/ns/net of its host; None: this namespace)."""
    netns: str | None = None


@dataclass(frozen=True)
class Fault:
    """Fault injection: a phone dies ``after_s`` seconds after the reset.

    ``phone`` names it, or picks the first phone found (checked every 0.25 s from then on)
    that is: "auto", a parent, not a root, with children waiting for a file it does not hold
    yet (a parent that vanishes mid-transfer); "root-fetching", a root fetching its file from
    HQ; "root-serving", a root that holds its file and serves children; "mid-upgrade", a
    phone that has installed something but not finished. ``how``: "crash" (its connections
    are reset), "silent" (it just stops: no FIN, no RST, like a pulled cable) or
    "power-cycle" (a crash, then ``off_s`` seconds later it boots again from scratch).
    """
    after_s: float
    phone: str = "auto"
    how: str = "crash"
    off_s: float = 0.0


@dataclass
class _Stream:
    writer: asyncio.StreamWriter | None = None
    pending: list = field(default_factory=list)
    closing: bool = False
    task: asyncio.Task | None = None
    beat: asyncio.TimerHandle | None = None     # the phone's Keepalive: its next write
    beat_data: bytes = b""
    watch: float = 0.0                          # the phone's Watch: its silence, seconds
    watch_timer: asyncio.TimerHandle | None = None
    last_rx: float = 0.0                        # emulated time of the last bytes read

    def stop_beat(self) -> None:
        if self.beat is not None:
            self.beat.cancel()
            self.beat = None


class PhoneRunner:
    """One phone: its sockets, its streams, its timer, its log."""

    def __init__(self, agent: "Agent", spec: AgentPhone, phone: Phone):
        self.agent = agent
        self.spec = spec
        self.phone = phone
        self.loop = agent.loop
        self.streams: dict[int, _Stream] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at: float | None = None
        self.log_lines: list[str] = []
        self.tasks: set[asyncio.Task] = set()
        self.udp: socket.socket | None = None
        self.filter_key: object = "unset"
        self.server = None
        self.dead = False
        self.fault: str | None = None
        self.tftp_reach = ServerReach()      # was HQ silent to its last TFTP transfer?
        self.screen = StatusFilter()                  # the live view's status events
        self.tftp_progress: tuple | None = None
        self.syslog: SyslogSender | None = None       # to its config's <logServer>

    async def open(self) -> None:
        s = self.spec
        self.udp = ns.udp_broadcast_socket(s.netns, PORT)
        _big_rcvbuf(self.udp)
        self._refilter()
        self.loop.add_reader(self.udp.fileno(), self._readable)
        lsock = ns.listen_tcp(s.netns, s.ip, PORT)
        self.server = await asyncio.start_server(self._accepted, sock=lsock)

    def _readable(self) -> None:
        """Read what is queued (up to RX_BATCH datagrams): one wake-up, many datagrams."""
        recv = self.udp.recvfrom
        for _ in range(RX_BATCH):
            try:
                data, addr = recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return                 # e.g. ICMP unreachable for a unicast: the protocol retries
            self.input("on_datagram", data, addr[0])
            if self.udp is None:
                return

    def _refilter(self) -> None:
        """Keep the kernel filter in step with what the protocol listens to (sockfilter)."""
        ph = self.phone
        key = (ph.map, ph.id.model) if ph.pfs and not self.dead else None
        if key == self.filter_key and self.udp is not None:
            return
        self.filter_key = key
        try:
            sockfilter.attach(self.udp, sockfilter.drop_all() if key is None else
                              sockfilter.pfs_filter(self.spec.ip, ph.id.model, ph.map))
        except OSError:
            pass                       # no filter: the protocol drops them itself

    def kill(self, how: str) -> None:
        """Fault injection: the phone dies. Its engine gets no more input."""
        self.dead, self.fault = True, how
        if how == "silent":
            if self.timer:
                self.timer.cancel()
            for t in list(self.tasks):
                t.cancel()
            return
        for st in self.streams.values():
            if st.writer:
                sock = st.writer.get_extra_info("socket")
                if sock is not None:             # close with RST, as a crashed phone does
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
        self.close()

    def serving_mid_transfer(self) -> bool:
        """A parent (not a root) with children waiting for a file it does not hold yet."""
        return any(s.children and s.registrar is None and s.data is None
                   for s in self.phone.sessions.values())

    def root_fetching(self) -> bool:
        return any(s.state == State.ROOT_FETCHING for s in self.phone.sessions.values())

    def root_serving(self) -> bool:
        return any(s.is_root and s.data is not None and s.children
                   for s in self.phone.sessions.values())

    def mid_upgrade(self) -> bool:
        return self.phone.completed is None and any(
            s.data is not None for s in self.phone.sessions.values())

    async def power_cycle(self, off_s: float) -> None:
        """Fault injection: the phone crashes, stays off ``off_s`` s, then boots again as a
        new phone (nothing kept: its sockets, sessions and downloads are gone)."""
        self.kill("crash")
        await asyncio.sleep(off_s)
        old = self.phone
        self.phone = Phone(old.id, old.server, seed=self.agent.seed + 1,
                           timers=self.agent.timers, trust=self.agent.trust)
        self.streams, self.timer, self.timer_at = {}, None, None
        self.syslog, self.tftp_progress, self.screen = None, None, StatusFilter()
        self.dead, self.fault = False, "power-cycle"
        await self.open()
        self.input("start")

    def close(self) -> None:
        if self.timer:
            self.timer.cancel()
        for t in list(self.tasks):
            t.cancel()
        for st in self.streams.values():
            st.stop_beat()
            if st.watch_timer is not None:
                st.watch_timer.cancel()
            if st.writer:
                st.writer.transport.abort()
        if self.udp:
            self.loop.remove_reader(self.udp.fileno())
            self.udp.close()
            self.udp = None
        if self.server:
            self.server.close()
        if self.syslog:
            self.syslog.close()

    # ------------------------------------------------------------- inputs

    def now(self) -> float:
        return self.agent.now()

    def input(self, method: str, *args):
        if self.dead:
            return None
        result = getattr(self.phone, method)(self.now(), *args)
        self._drain()
        return result

    def _spawn(self, coro) -> None:
        t = self.loop.create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    def _on_timer(self) -> None:
        due = self.timer_at
        self.timer, self.timer_at = None, None
        if not self.dead:
            self.agent.timer_fired(due, self.now())
        self.input("on_timer")

    async def _accepted(self, reader, writer) -> None:
        peer = writer.get_extra_info("peername")[0]
        sid = self.input("on_accept", peer)
        st = self.streams[sid] = _Stream(writer=writer)
        st.task = asyncio.current_task()
        self._flush(sid, st)
        await self._read_loop(sid, reader)

    async def _read_loop(self, sid: int, reader: asyncio.StreamReader) -> None:
        why = "closed by peer"
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                st = self.streams.get(sid)
                if st is None:
                    return
                st.last_rx = self.now()
                self.input("on_stream_data", sid, data)
        except (ConnectionError, OSError) as e:
            why = f"reset ({e.__class__.__name__})"
        st = self.streams.pop(sid, None)
        if st is not None and not st.closing:
            if st.writer:
                st.writer.close()
            self.input("on_stream_closed", sid, why)

    async def _connect(self, sid: int, peer: str) -> None:
        try:
            sock = await ns.connect_tcp(self.spec.netns, peer, PORT, timeout=5.0 * self.agent.k,
                                        source=(self.spec.ip, 0))
            reader, writer = await asyncio.open_connection(sock=sock)
        except (OSError, asyncio.TimeoutError) as e:
            if self.streams.pop(sid, None) is not None:
                self.input("on_stream_closed", sid, f"connect failed: {e.__class__.__name__}")
            return
        st = self.streams.get(sid)
        if st is None:
            writer.transport.abort()
            return
        st.writer = writer
        self._flush(sid, st)
        await self._read_loop(sid, reader)

    async def _fetch(self, file: str) -> None:
        """One TFTP read on a socket of its own: a new transfer ID (source port) per
        transfer, as RFC 1350 asks, so a late packet of the last transfer cannot be taken
        for this one's."""
        a = self.agent
        sock = ns.udp_socket(self.spec.netns, self.spec.ip, 0)
        try:
            data = await tftp_get(sock, a.server, file, blksize=a.blksize,
                                  timeout=a.tftp_timeout * a.k, retries=a.tftp_retries,
                                  reach=self.tftp_reach,
                                  progress=lambda got, size: self._show(file, got, size))
            err = ""
        except TftpError as e:
            data, err = None, str(e)
        finally:
            sock.close()
        self.input("on_fetched", file, data, err)

    # ------------------------------------------------------------- outputs

    def _flush(self, sid: int, st: _Stream) -> None:
        if st.writer is None:
            return
        for chunk in st.pending:
            st.writer.write(chunk)
        st.pending.clear()
        if st.closing:
            st.writer.close()                  # flushes what was written, then FIN
            self.streams.pop(sid, None)

    def _drain(self) -> None:
        a = self.agent
        outs = self.phone.pop_outputs()
        for o in outs:
            if isinstance(o, LogRecord):
                self.log_lines.append(render(o, a.epoch))
                self._syslog(o, self.log_lines[-1])
            elif isinstance(o, Send):
                dst = self.spec.broadcast if o.dst == BROADCAST else o.dst
                try:
                    self.udp.sendto(o.data, (dst, PORT))
                except (OSError, AttributeError):
                    pass                       # like a lost datagram: the protocol retries
            elif isinstance(o, Connect):
                self.streams[o.sid] = _Stream()
                self._spawn(self._connect(o.sid, o.peer))
            elif isinstance(o, Write):
                st = self.streams.get(o.sid)
                if st is not None:
                    st.stop_beat()
                    st.pending.append(o.data)
                    self._flush(o.sid, st)
            elif isinstance(o, Close):
                st = self.streams.get(o.sid)
                if st is not None:
                    st.stop_beat()
                    st.closing = True
                    self._flush(o.sid, st)
            elif isinstance(o, Keepalive):
                st = self.streams.get(o.sid)
                if st is not None and not st.closing:
                    st.beat_data = o.data              # a running beat keeps its time
                    if st.beat is None:
                        self._beat(o.sid, st, o.every)
            elif isinstance(o, Watch):
                st = self.streams.get(o.sid)
                if st is not None:
                    if st.watch_timer is not None:
                        st.watch_timer.cancel()
                    st.watch, st.last_rx = o.silence, self.now()
                    self._watch_due(o.sid, st)
            elif isinstance(o, Fetch):
                self._spawn(self._fetch(o.file))
            elif isinstance(o, Installed):
                a.emit({"event": "installed", "phone": self.spec.name, "file": o.file,
                        "source": o.source, "sha256_ok": o.sha256_ok, "t": round(o.t, 3)})
            elif isinstance(o, Completed):
                a.phone_completed(self, o)
        if outs or self.now() - self.screen.last_t >= self.screen.every:
            self._show()           # an input that changed nothing is not worth a status
        if self.filter_key is None and self.phone.pfs:
            self._refilter()
        dl = self.phone.next_deadline()
        if dl != self.timer_at:
            if self.timer:
                self.timer.cancel()
            self.timer_at = dl
            self.timer = None if dl is None else self.loop.call_at(a.wall(dl), self._on_timer)

    def _beat(self, sid: int, st: _Stream, every: float) -> None:
        """Write the stream's keepalive bytes now, and again in ``every`` emulated seconds."""
        st.beat = None
        if self.dead or self.streams.get(sid) is not st or st.closing:
            return
        st.pending.append(st.beat_data)
        self._flush(sid, st)
        st.beat = self.loop.call_at(self.agent.wall(self.now() + every), self._beat, sid, st,
                                    every)

    def _watch_due(self, sid: int, st: _Stream) -> None:
        """The stream's silence watch: tell the phone once nothing was read for ``watch`` s,
        else look again when that would be."""
        st.watch_timer = None
        if self.dead or self.streams.get(sid) is not st or not st.watch:
            return
        due = st.last_rx + st.watch
        if self.now() >= due - 1e-6:
            st.watch = 0.0
            self.input("on_stream_silent", sid)
        else:
            st.watch_timer = self.loop.call_at(self.agent.wall(due), self._watch_due, sid, st)

    def _syslog(self, rec: LogRecord, line: str) -> None:
        cfg = self.phone.config
        if self.syslog is None and cfg is not None and cfg.log_server:
            self.syslog = SyslogSender(cfg.log_server, self.spec.name, lambda: ns.udp_socket(
                self.spec.netns, self.spec.ip, 0))
        if self.syslog is not None:
            self.syslog.send(rec, line, self.agent.epoch)

    def _show(self, *tftp) -> None:
        """A status event when what the phone's screen shows changed (throttled)."""
        if self.agent._emit is None or self.dead:
            return
        self.tftp_progress = tftp or self.tftp_progress
        st = self.screen.update(phone_status(self.phone, self.tftp_progress), self.now())
        if st is not None:
            self.agent.emit(status_event(self.spec.name, st, self.now()))

    def flush_log(self, log_dir: str | None) -> None:
        if not self.log_lines or not log_dir:
            return
        with open(os.path.join(log_dir, f"{self.spec.name}.log"), "a") as f:
            f.write("\n".join(self.log_lines) + "\n")
        self.log_lines.clear()

    def result(self) -> dict:
        return {**asdict(self.spec), "fault": self.fault, **self.phone.outcome()}


class Agent:
    """Runs many phones in one asyncio loop until all have completed or time runs out.

    ``time_dilation`` k: the protocol's clock runs k times slower than the wall clock (every
    timer, TFTP timeout and fault time is k times longer in real time), and every time the
    agent reports (logs, events, results, timer lag) is emulated time: wall seconds / k.
    ``lag``: how late the phones' timers fired, in emulated seconds (pfslab.lab.fidelity).
    """

    def __init__(self, phones: list[AgentPhone], server: str, *, seed: int = 1,
                 log_dir: str | None = None, timers: Timers | None = None,
                 blksize: int = 1428, tftp_timeout: float = 1.0, tftp_retries: int = 8,
                 stagger: float = 0.0, faults: list[Fault] = (), emit=None,
                 time_dilation: float = 1.0, reset_slot: tuple[int, int] = (0, 1),
                 trust: Trust = FIXTURE_TRUST):
        self.specs = phones
        self.server = server
        self.seed = seed
        self.log_dir = log_dir
        self.timers = timers
        self.blksize = blksize
        self.tftp_timeout = tftp_timeout
        self.tftp_retries = tftp_retries
        self.stagger = stagger
        self.reset_slot = reset_slot      # (i, k): these are phones i, i+k, i+2k... of the site
        self.faults = list(faults)
        self.trust = trust             # HQ's public key: every phone's trust list
        self._emit = emit
        self.k = float(time_dilation)
        if not self.k >= 1.0:
            raise ValueError(f"time dilation must be >= 1, not {time_dilation!r}")
        self.lag = LagMeter()
        self.beat = LagMeter()      # a 50 ms heartbeat's lag: the measure when no timer runs
        self.late_by_second: dict[int, float] = {}      # emulated second -> worst lag > 50 ms
        self.runners: list[PhoneRunner] = []
        self.remaining = 0
        self.done = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.t0 = 0.0
        self.epoch = time.time()
        self.timings: dict[str, float] = {}

    def now(self) -> float:
        """Emulated seconds since the reset."""
        return (self.loop.time() - self.t0) / self.k

    def wall(self, t: float) -> float:
        """The loop time at which emulated time ``t`` comes."""
        return self.t0 + t * self.k

    def timer_fired(self, due: float, now: float) -> None:
        lag = self.lag.record(due, now)
        if lag > 0.05:                                  # when the loop was late, for people
            sec = int(due)
            self.late_by_second[sec] = max(self.late_by_second.get(sec, 0.0), lag)

    def emit(self, event: dict) -> None:
        if self._emit:
            self._emit(event)

    def phone_completed(self, runner: PhoneRunner, c: Completed) -> None:
        self.remaining -= 1
        self.emit({"event": "completed", "phone": runner.spec.name, "ok": c.ok,
                   "t": round(c.t, 3), "remaining": self.remaining})
        if self.remaining == 0:
            self.done.set()

    async def open(self) -> None:
        """Make every phone and open its sockets (the lab's bring-up)."""
        _raise_fd_limit(len(self.specs) * 6 + 64)
        self.loop = asyncio.get_running_loop()
        t = time.monotonic()
        for spec in self.specs:
            ph = Phone(PhoneId(spec.name, spec.ip, spec.mac, spec.model), self.server,
                       seed=self.seed, timers=self.timers, trust=self.trust)
            r = PhoneRunner(self, spec, ph)
            self.runners.append(r)
            await r.open()
        self.timings["open_s"] = round(time.monotonic() - t, 3)

    async def run(self, timeout: float, linger: float = 1.0, *, start=None,
                  hold=None) -> list[dict]:
        """Open, reset every phone, run until all completed (then ``linger``) or ``timeout``
        (emulated seconds). Several agent processes (pfslab.agent.shards) pass ``start``, an
        awaitable giving the common reset time (a ``loop.time()`` value), and ``hold``, one
        that returns when every process's phones are done (their roots must serve on)."""
        try:
            await self.open()
            self.emit({"event": "started", "phones": len(self.runners)})
            self.t0 = await start() if start else self.loop.time()
            self.epoch = time.time() - (self.loop.time() - self.t0)
            self.emit({"event": "reset", "epoch": self.epoch, "time_dilation": self.k})
            self.remaining = len(self.runners)
            first, step = self.reset_slot
            for i, r in enumerate(self.runners):       # the reset: all at once, or staggered
                self.loop.call_at(self.wall((first + i * step) * self.stagger), r.input,
                                  "start")
            flusher = self.loop.create_task(self._flush_logs())
            stop_beat = probe(self.loop, self.beat, 0.05 * self.k, scale=self.k)
            for f in self.faults:
                self.loop.call_at(self.wall(f.after_s), self._inject, f, 0)
            try:
                await asyncio.wait_for(self._finished(hold, linger), timeout * self.k)
            except asyncio.TimeoutError:
                self.emit({"event": "timeout", "remaining": self.remaining})
            flusher.cancel()
            stop_beat()
        finally:
            t = time.monotonic()
            for r in self.runners:
                r.flush_log(self.log_dir)
                r.close()
            self.timings["close_s"] = round(time.monotonic() - t, 3)
            st = self.stats()
            self.emit({"event": "agent_stats", **st, "processes": [st]})
        return [r.result() for r in self.runners]

    async def _finished(self, hold, linger: float) -> None:
        await self.done.wait()
        if hold:
            self.emit({"event": "shard_done"})
            await hold()
        await asyncio.sleep(linger * self.k)          # let the last END/FIN frames go out

    def stats(self) -> dict:
        """This process's figures: timer lag (emulated ms), dilation, RSS, phase times."""
        ru = resource.getrusage(resource.RUSAGE_SELF)
        # the phones' timers (PFS mode); traditional phones run none: the heartbeat then
        timers = self.lag.n > 0
        return {"pid": os.getpid(), "phones": len(self.specs), "time_dilation": self.k,
                "lag": (self.lag if timers else self.beat).to_dict(),
                "lag_source": "timers" if timers else "heartbeat",
                "late_s": {str(k): round(v, 3) for k, v in sorted(self.late_by_second.items())},
                "maxrss_kb": ru.ru_maxrss,
                "cpu_s": round(ru.ru_utime + ru.ru_stime, 3), **self.timings}

    def _inject(self, f: Fault, tries: int) -> None:
        pick = {"auto": PhoneRunner.serving_mid_transfer,
                "root-fetching": PhoneRunner.root_fetching,
                "root-serving": PhoneRunner.root_serving,
                "mid-upgrade": PhoneRunner.mid_upgrade}.get(f.phone)
        if pick is not None:
            victim = next((r for r in self.runners if not r.dead and pick(r)), None)
        else:
            victim = next((r for r in self.runners if r.spec.name == f.phone), None)
        if victim is None:
            if pick is not None and tries < 400 and self.remaining:
                self.loop.call_later(0.25 * self.k, self._inject, f, tries + 1)
            else:
                self.emit({"event": "fault", "phone": None, "how": f.how,
                           "error": "no phone to fail"})
            return
        victim.log_lines.append(render(LogRecord(victim.now(), "ERR", f"FAULT INJECTED: the "
                                                 f"phone dies ({f.how})"), self.epoch))
        self.emit({"event": "fault", "phone": victim.spec.name, "ip": victim.spec.ip,
                   "how": f.how, "t": round(victim.now(), 3), "select": f.phone})
        if f.how == "power-cycle":
            self.loop.create_task(victim.power_cycle(f.off_s))
            return
        victim.kill(f.how)
        if victim.phone.completed is None:
            self.remaining -= 1
            if self.remaining == 0:
                self.done.set()

    async def _flush_logs(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            for r in self.runners:
                r.flush_log(self.log_dir)


SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)   # Linux; Python 3.11 lacks the name


def _big_rcvbuf(sock: socket.socket, size: int = 1 << 20) -> None:
    """Room for a burst of broadcasts while the one event loop serves other phones."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)   # root: past rmem_max
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def _raise_fd_limit(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(want, soft), hard), hard))
