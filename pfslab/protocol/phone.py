"""The sans-I/O phone: one phone's whole upgrade, every file's PFS hierarchy included.

No sockets, clocks or threads. A driver (real sockets in ``pfslab.agent``, the in-memory
network in ``pfslab.sim``) feeds it inputs with the current time ``now``:

    start(now)                       the phone resets: it asks for its config file
    on_datagram(now, data, src_ip)   a UDP 4051 datagram arrived
    on_message(now, msg, src_ip)     the same, already decoded (a simulator decodes a
                                     broadcast once for all the phones that hear it)
    on_accept(now, peer_ip) -> sid   a child connected to our TCP 4051
    on_stream_data(now, sid, data)   bytes arrived on a stream
    on_stream_closed(now, sid, why)  the stream ended (peer closed, reset, connect failed)
    on_stream_silent(now, sid)       nothing arrived on a watched stream for its silence
    on_fetched(now, file, data, err) a TFTP fetch ended (data is None on error)
    on_timer(now)                    next_deadline() has come

and drains ``pop_outputs()``: :class:`Send`, :class:`Connect`, :class:`Write`, :class:`Close`,
:class:`Keepalive`, :class:`Watch`, :class:`Fetch`, :class:`Installed`, :class:`Completed` and
:class:`LogRecord`. The rules and timers are those of docs/protocol.md.

A stream's keepalive (the parent's HOLD every ``hold_interval``) and its silence watch (the
child's ``parent_silence``) are the driver's: the phone says what to repeat and what to watch
(:class:`Keepalive`, :class:`Watch`), the driver's clock does the repeating and watching. On
sockets that is a timer per stream; a simulator can then tell exactly when a watched stream
goes silent without running every HOLD (docs/sim.md).
"""
from __future__ import annotations

import functools
import heapq
import ipaddress
import random
import zlib
from dataclasses import dataclass, field

from .. import firmware, phoneconfig
from . import codec, payload
from .codec import (AbortReason, DecodeError, Frame, FrameReader, FrameType, Message, MsgType,
                    ReadySource, RefuseReason)
from .logs import LogRecord, xid as fmt_xid
from .registrar import Registrar
from .states import ROOT_STATES, TRANSITIONS, Event, State, Timer

BROADCAST = "<broadcast>"
NO_IP = "0.0.0.0"
MAX_XIDS = 8          # other roots' XIDs a session accepts REQUESTs under
PHONE_KEY = ""        # the timer key of phone-wide timers (not a session's file)
_EMPTY: frozenset = frozenset()   # a session's sets until their first member (memory: 10^5 phones)

# One generator for every phone, re-seeded per use: each session's draws are exactly those of
# a random.Random of its own seed (runs repeat), without keeping 2.5 KB of state per session.
_RNG = random.Random()


@dataclass(frozen=True)
class Timers:
    """docs/protocol.md, "Timers and rules". Tests may shrink them."""
    listen_min: float = 0.25     # a phone listens 0.25..0.75 s before its offer (the seed
    listen_spread: float = 0.5   # log shows ~0.5 s); a stronger claim heard meanwhile wins
    root_memory: float = 30.0    # a ROOT heard this recently is joined without an election
    ad_interval: float = 0.25
    ads: int = 4
    root_wait: float = 10.0
    announce_fast: float = 1.0
    announce_slow: float = 5.0
    yield_wait: float = 3.0
    join_retry: float = 1.0
    join_tries: int = 3
    hold_interval: float = 4.0   # PARENT_SILENCE / 2: a keepalive, not a progress feed
    parent_silence: float = 8.0
    max_rejoins: int = 2
    config_tries: int = 3
    fetch_tries: int = 3         # whole-file TFTP attempts before a file counts as failed
    child_slack: float = 60.0    # a child's progress budget: CHILD_SLACK + size / MIN_RATE
    min_rate: float = 1024.0     # bytes/s; see budget() and docs/protocol.md (BUDGET)
    max_loads_size: int = 65536  # a .loads (whose size no manifest gives yet) is at most this
    max_attempts: int = 4        # re-listens (new elections, other roots) before a fallback
    yield_limit: float = 10.0    # stronger claims re-arm YIELD_WAIT only this long
    max_distrusted: int = 64     # peers remembered as bad for the run (oldest forgotten)
    max_members: int = 2048      # a root's registrar: members beyond are refused FULL
    max_idle_streams: int = 16   # accepted connections that have not sent REQUEST yet
    request_wait: float = 5.0    # ... and are closed after this long
    max_heard_roots: int = 32    # ROOTs remembered for files not reached yet

    deadline_budgets: float = 2.0  # a file's whole PFS wait: this many budget(size)

    def budget(self, size: int) -> float:
        """How long a child waits on one parent for a file of ``size`` bytes, HOLDs or not."""
        return self.child_slack + size / self.min_rate

    def deadline(self, size: int) -> float:
        """How long a phone (not a root) tries PFS for one file before it falls back."""
        return self.deadline_budgets * self.budget(size)


# ----------------------------------------------------------------------------- outputs

@dataclass(frozen=True)
class Send:
    dst: str          # an IPv4 address, or BROADCAST
    data: bytes
    # what ``data`` decodes to (codec.decode(data) == msg): a simulator hands it to a phone
    # as it is (Phone.on_message), without decoding it again
    msg: Message | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Connect:
    sid: int
    peer: str         # connect to peer:4051; Write may follow at once (the driver queues)


@dataclass(frozen=True)
class Write:
    sid: int
    data: bytes


@dataclass(frozen=True)
class Close:
    sid: int          # flush what was written, then close


@dataclass(frozen=True)
class Keepalive:
    sid: int
    data: bytes       # written now, then every ``every`` s, until the next Write or Close on
    every: float      # sid. On a sid that has one, it replaces the bytes and keeps the beat.


@dataclass(frozen=True)
class Watch:
    sid: int
    silence: float    # on_stream_silent(sid) once nothing has arrived on sid for this long
                      # (from now, or from the last arrival); ends with the stream or a Close


@dataclass(frozen=True)
class Fetch:
    file: str         # TFTP read from the phone's server; answer with on_fetched


@dataclass(frozen=True)
class Installed:
    file: str
    source: str       # "tftp" or the parent's IPv4 address
    sha256_ok: bool
    t: float


@dataclass(frozen=True)
class Completed:
    t: float
    ok: bool          # every component installed and verified


@dataclass(frozen=True)
class PhoneId:
    name: str
    ip: str
    mac: str
    model: str


# ----------------------------------------------------------------------------- states

@functools.lru_cache(maxsize=1 << 20)
def _ipnum(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))


@functools.lru_cache(maxsize=4096)
def _hold_frame(have: int, total: int) -> bytes:
    """A HOLD frame's bytes (the same few go to every waiting child)."""
    return codec.encode_frame(Frame(FrameType.HOLD, have=have, total=total))


@functools.lru_cache(maxsize=4096)
def _timer_key(key: str, kind: Timer) -> tuple[str, Timer]:
    """One (key, kind) tuple per file and timer kind, shared by every phone."""
    return (key, kind)


_LOADS: dict[tuple[bytes, bytes], firmware.LoadSet] = {}


def _parse_loads(data, trust: firmware.Trust) -> firmware.LoadSet:
    """firmware.parse_loads, remembered for the same bytes and key: the phones of one process
    (a simulator, an agent running many) verify the same signed .loads once, not 2N times.
    A pure function of its inputs; failures are not remembered (they raise each time)."""
    key = (bytes(data), trust.raw)
    ls = _LOADS.get(key)
    if ls is None:
        ls = firmware.parse_loads(data, trust)
        if len(_LOADS) >= 64:
            _LOADS.clear()
        _LOADS[key] = ls
    return ls


@dataclass(slots=True)
class Session:
    """One file's PFS state on this phone."""
    file: str
    xid: int
    strength: int
    state: State = State.NEW
    ad: int = 0
    root_ip: str = NO_IP
    root_xid: int = 0
    parent_ip: str = NO_IP
    up_sid: int | None = None
    lost: str = NO_IP
    join_tries: int = 0
    rejoins: int = 0
    have: int = 0
    data: bytes | None = None
    source: str = ""
    registrar: Registrar | None = None
    children: dict[int, str] = field(default_factory=dict)   # sid -> child ip (served)
    fetch_fails: int = 0
    draws: int = 0                # random draws taken from the session's timer stream
    attempts: int = 0             # re-listens so far (Timers.max_attempts)
    shunned: set[str] = _EMPTY    # roots not to join again
    no_shows: set[str] = _EMPTY   # claimers that never confirmed
    yielded_to: str = NO_IP
    xids: tuple[int, ...] = ()    # other roots' XIDs heard (a rebuilt tree), at most MAX_XIDS
    yield_since: float = 0.0
    yield_last: float = 0.0       # the last stronger claim heard while yielded (YIELD_WAIT
                                  # runs from it: _t_yield looks, rather than each re-arming)
    placed_by: str = NO_IP        # the root whose OFFER placed this phone (and its children)

    @property
    def is_root(self) -> bool:
        return self.state in ROOT_STATES

    @property
    def hier_xid(self) -> int:
        return self.xid if self.is_root else self.root_xid


@dataclass(slots=True)
class Stream:
    sid: int
    peer: str
    up: bool                      # True: we are the child on this stream
    file: str = ""
    reader: FrameReader = field(default_factory=FrameReader)
    size: int = -1
    digest: bytes = b""
    parts: list = field(default_factory=list)
    got: int = 0
    done: bool = False


class Phone:
    """One phone. See the module docstring for the input/output contract."""
    __slots__ = ("id", "trust", "server", "seed", "t", "now", "_out", "_timers", "_heap", "_seq",
                 "_pushes", "_sid", "sessions", "streams", "config", "load", "map", "pfs",
                 "tftp_queue", "tftp_busy", "config_tries", "installed", "heard_roots",
                 "distrusted", "idle", "completed", "logs", "gotos", "moved", "__weakref__")

    def __init__(self, ident: PhoneId, server: str, *, seed: int = 1,
                 timers: Timers | None = None, trust: firmware.Trust = firmware.FIXTURE_TRUST):
        self.id = ident
        self.trust = trust          # HQ's public key: the phone's trust list
        self.server = server
        self.seed = seed
        self.t = timers or Timers()
        self.now = 0.0
        # _out (pending outputs) and _pushes (timers queued so far) are read by
        # pfslab.sim.memnet: an input that left both unchanged needs no draining
        self._out: list = []
        # Timers: the live entry (when, seq, (key, kind)) of each (key, kind), and a heap with
        # at least one entry at or before each live one. A timer set later than it was (a
        # keepalive pushing a silence timer back) is queued again only when its old entry
        # comes up; entries whose time is not their timer's live one are dropped.
        self._timers: dict[tuple[str, Timer], tuple[float, int, tuple]] = {}
        self._heap: list[tuple[float, int, tuple]] = []
        self._seq = 0
        self._pushes = 0
        self._sid = 0
        self.sessions: dict[str, Session] = {}
        self.streams: dict[int, Stream] = {}
        self.config: phoneconfig.PhoneConfig | None = None
        self.load: firmware.LoadSet | None = None
        self.map = 0
        self.pfs = False
        self.tftp_queue: list[str] = []         # a few files at most
        self.tftp_busy: str | None = None
        self.config_tries = 0
        self.installed: dict[str, Installed] = {}
        self.heard_roots: dict[str, tuple[str, int, float]] = {}   # file -> (ip, xid, when)
        self.distrusted: dict[str, str] = {}    # ip -> why: served bad bytes, or went silent
        self.idle: dict[int, float] = {}       # accepted, no REQUEST: sid -> t (oldest first)
        self.completed: Completed | None = None
        self.logs = True            # False: no LogRecord outputs (a simulator that drops them)
        self.gotos = 0              # state changes so far (a simulator's broadcast index)
        self.moved: Session | None = None   # the session that changed state last

    # ------------------------------------------------------------------ driver API

    def pop_outputs(self) -> list:
        out, self._out = self._out, []
        return out

    def next_deadline(self) -> float | None:
        heap, timers = self._heap, self._timers
        if not timers:
            heap.clear()                           # only cancelled timers' entries left
            return None
        while heap:
            when, _, k = heap[0]
            live = timers.get(k)
            if live is not None:
                if live[0] == when:
                    return when
                if live[0] > when:                 # set later since: queue it at its time
                    heapq.heapreplace(heap, live)
                    continue
            heapq.heappop(heap)
        return None

    def start(self, now: float) -> None:
        self.now = now
        if self.logs:
            self.log("NOT", f"Phone {self.id.name} {self.id.model} mac={self.id.mac} "
                            f"ip={self.id.ip} reset: requesting "
                            f"{phoneconfig.sep_filename(self.id.mac)}")
        self._tftp(phoneconfig.sep_filename(self.id.mac))

    def on_timer(self, now: float) -> None:
        self.now = now
        heap, timers = self._heap, self._timers
        while heap and heap[0][0] <= now:
            when, _, k = heapq.heappop(heap)
            live = timers.get(k)
            if live is None:
                continue
            if live[0] != when:
                if live[0] > when:                 # set later since: queue it at its time
                    heapq.heappush(heap, live)
                continue
            del timers[k]
            key, kind = k
            if kind == Timer.IDLE:
                self._t_idle()
                continue
            s = self.sessions.get(key)
            if s is not None:
                handler = _TIMER_HANDLERS.get((s.state, kind))
                if handler is not None:
                    handler(self, s)

    def on_datagram(self, now: float, data: bytes, src: str) -> None:
        self.now = now
        if not self.pfs or src == self.id.ip:
            return
        try:
            m = codec.decode_shared(bytes(data))
        except DecodeError as e:
            if self.logs:
                self.log("WRN", f"RxBdcst from {src} dropped: {e}")
            return
        self.on_message(now, m, src)

    def on_message(self, now: float, m: Message, src: str) -> None:
        """A datagram already decoded (``codec.decode(data)``): what :meth:`on_datagram` does
        after decoding. A simulator decodes a broadcast once for all the phones that hear it."""
        self.now = now
        if not self.pfs or src == self.id.ip:
            return
        if m.model != self.id.model or m.map != self.map:
            return                                   # another model's or load's hierarchy
        s = self.sessions.get(m.file)
        if s is None:
            if m.type == MsgType.ROOT and self._root_ok(m, src):   # for when we get there
                self._remember_root(m, src)
            return
        if m.type == MsgType.ROOT and ignores_root(s, m.xid):
            return          # a root already heard, in a state where a ROOT changes nothing
        handler = _MSG_HANDLERS.get(m.type)
        if handler is not None:
            handler(self, s, m, src)

    def on_accept(self, now: float, peer: str) -> int:
        self.now = now
        sid = self._new_sid()
        self.streams[sid] = Stream(sid, peer, up=False)
        self.idle[sid] = now
        while len(self.idle) > self.t.max_idle_streams:     # the oldest idle one goes
            oldest = next(iter(self.idle))
            old = self.streams.get(oldest)
            del self.idle[oldest]
            if old is not None:
                self._abort(old, AbortReason.FULL, "too many connections")
        if (PHONE_KEY, Timer.IDLE) not in self._timers:
            self._set_timer_at(PHONE_KEY, Timer.IDLE, self.t.request_wait)
        return sid

    def on_stream_data(self, now: float, sid: int, data: bytes) -> None:
        self.now = now
        st = self.streams.get(sid)
        if st is None:
            return
        try:
            frames = payload.feed(st.reader, data)
        except DecodeError as e:
            if self.logs:
                self.log("WRN", f"peer {st.peer} sent a malformed frame: {e}")
            self._abort(st, AbortReason.PROTOCOL, "malformed frame")
            return
        for f in frames:
            if sid not in self.streams:
                return
            (self._up_frame if st.up else self._down_frame)(st, f)

    def on_stream_closed(self, now: float, sid: int, why: str = "closed") -> None:
        self.now = now
        st = self.streams.pop(sid, None)
        self.idle.pop(sid, None)
        if st is None:
            return
        s = self.sessions.get(st.file)
        if st.up:
            if s is not None and s.up_sid == sid and not st.done:
                self._parent_lost(s, f"connection to parent {st.peer} {why}")
        elif s is not None:
            s.children.pop(sid, None)

    def on_stream_silent(self, now: float, sid: int) -> None:
        """The driver's :class:`Watch` on ``sid`` saw nothing arrive for its silence."""
        self.now = now
        st = self.streams.get(sid)
        if st is None or not st.up:
            return
        s = self.sessions.get(st.file)
        if s is not None and s.up_sid == sid and s.state == State.CHILD:
            self._t_silence(s)

    def on_fetched(self, now: float, file: str, data: bytes | None, error: str = "") -> None:
        self.now = now
        if self.tftp_busy == file:
            self.tftp_busy = None
        if data is None:
            if self.logs:
                self.log("ERR", f"TFTP {file} from {self.server} failed: {error}")
        if self.config is None and file == phoneconfig.sep_filename(self.id.mac):
            self._got_config(data)
        else:
            s = self.sessions.get(file)
            if s is not None:
                self._got_tftp_file(s, data, error)
        self._tftp_next()

    def outcome(self) -> dict:
        """What this phone ended with, in the results.json schema (its per-phone fields)."""
        comps = {}
        if self.load is not None:
            for c in self.load.components:
                i = self.installed.get(c.name)
                comps[c.name] = ({"source": i.source, "sha256_ok": i.sha256_ok,
                                  "at_s": round(i.t, 3)} if i else None)
        loads = self.installed.get(self.load.loads_file) if self.load is not None else None
        files = {}
        for f in sorted(set(self.sessions) | set(self.installed)):
            i, s = self.installed.get(f), self.sessions.get(f)
            src = i.source if i else None
            role = ("root" if s is not None and s.registrar is not None else
                    "tftp" if src == "tftp" else "child" if src else None)
            files[f] = {"role": role, "source": src,
                        "parent": src if role == "child" else None}
        return {"pfs_enabled": self.pfs,
                "completed": bool(self.completed and self.completed.ok),
                "completed_at_s": round(self.completed.t, 3) if self.completed else None,
                "load": self.load.name if self.load else None,
                "loads_source": loads.source if loads else None,
                "components": comps,
                "files": files}     # per file: role root/child/tftp, its source and parent

    # ------------------------------------------------------------------ helpers

    def log(self, level: str, text: str) -> None:
        """A log line (callers check ``self.logs`` first: a simulator without logs then
        formats none of them)."""
        if self.logs:
            self._out.append(LogRecord(self.now, level, text))

    def _new_sid(self) -> int:
        self._sid += 1
        return self._sid

    def _goto(self, s: Session, to: State, why) -> None:
        """Change state; every change must be one of states.TRANSITIONS (checked by tests)."""
        if (s.state, why, to) not in TRANSITIONS:
            if self.logs:
                self.log("ERR", f"internal: undeclared transition {s.state} --{why}--> {to}")
        s.state = to
        self.gotos += 1
        self.moved = s

    def _set_timer(self, s: Session, kind: Timer, delay: float) -> None:
        self._set_timer_at(s.file, kind, delay)

    def _set_timer_at(self, key: str, kind: Timer, delay: float) -> None:
        self._set_timer_until(key, kind, self.now + delay)

    def _set_timer_until(self, key: str, kind: Timer, when: float) -> None:
        self._seq += 1
        k = _timer_key(key, kind)
        timers, heap = self._timers, self._heap
        old = timers.get(k)
        entry = timers[k] = (when, self._seq, k)
        if old is None or when < old[0]:   # else its entry at old[0] <= when re-queues it
            self._pushes += 1
            heapq.heappush(heap, entry)
            if len(heap) > 2 * len(timers) + 4:
                # mostly cancelled timers' entries: keep the live ones (a sorted list is a heap)
                heap[:] = sorted(timers.values())

    def _t_idle(self) -> None:
        """Close the accepted connections that sent no REQUEST within REQUEST_WAIT."""
        while self.idle:
            sid, t = next(iter(self.idle.items()))
            if self.now - t < self.t.request_wait:
                self._set_timer_at(PHONE_KEY, Timer.IDLE, t + self.t.request_wait - self.now)
                return
            del self.idle[sid]
            st = self.streams.get(sid)
            if st is not None:
                self._abort(st, AbortReason.PROTOCOL, "no REQUEST")

    def _remember_root(self, m: Message, src: str) -> None:
        """A ROOT for a file not reached yet (bounded; entries expire after ROOT_MEMORY)."""
        roots = self.heard_roots
        roots.pop(m.file, None)
        roots[m.file] = (src, m.xid, self.now)
        while roots and (len(roots) > self.t.max_heard_roots or
                         self.now - next(iter(roots.values()))[2] > self.t.root_memory):
            del roots[next(iter(roots))]

    def _cancel(self, s: Session, *kinds: Timer) -> None:
        timers = self._timers
        for k in kinds:
            timers.pop((s.file, k), None)
        if len(self._heap) > 2 * len(timers) + 4:
            self._heap[:] = sorted(timers.values())     # drop the cancelled ones' entries

    def _msg(self, s: Session, mtype: MsgType, **kw) -> Message:
        return Message(mtype, xid=kw.pop("xid", s.hier_xid), strength=s.strength,
                       map=self.map, model=self.id.model, file=s.file, **kw)

    def _send(self, dst: str, data: bytes) -> None:
        self._out.append(Send(dst, data))

    def _tell(self, dst: str, m: Message) -> None:
        """Send a message of our own (its bytes, and the message itself for a simulator)."""
        self._out.append(Send(dst, codec.encode(m), m))

    def _tftp(self, file: str) -> None:
        self.tftp_queue.append(file)
        self._tftp_next()

    def _tftp_next(self) -> None:
        if self.tftp_busy is None and self.tftp_queue:
            self.tftp_busy = self.tftp_queue.pop(0)
            self._out.append(Fetch(self.tftp_busy))

    # ------------------------------------------------------------------ config and load

    def _got_config(self, data: bytes | None) -> None:
        name = phoneconfig.sep_filename(self.id.mac)
        if data is None:
            self.config_tries += 1
            if self.config_tries < self.t.config_tries:
                self._tftp(name)
            else:
                self._finish(False, f"no configuration ({name})")
            return
        try:
            self.config = phoneconfig.parse_sep(data)
        except phoneconfig.ConfigError as e:
            self._finish(False, f"bad configuration {name}: {e}")
            return
        capable = self.id.model in firmware.PFS_CAPABLE
        self.pfs = bool(self.config.pfs and capable)
        self.map = codec.load_map(self.config.load_name)
        why = ("on" if self.pfs else "off (not PFS-capable model)" if not capable
               else "off (configuration)")
        if self.logs:
            self.log("NOT", f"Config: load={self.config.load_name} peerFirmwareSharing {why}")
        if self.pfs:
            if self.logs:
                self.log("DBG", "+++ fd=7 Listening on peer TCP port 4051")
            if self.logs:
                self.log("NOT", "^.idl_child.c-openUDPPort")
            if self.logs:
                self.log("NOT", "|parent=-1><fd[0]=-1 fd[1]=-1 FULL=0")
        self._begin_file(self.config.load_name + ".loads")

    def _begin_file(self, file: str) -> None:
        x = zlib.crc32(self.id.mac.encode() + file.encode()) & 0xFFFFFFFF
        _RNG.seed(f"{self.seed}|{self.id.mac}|{file}")
        s = Session(file=file, xid=x, strength=_RNG.getrandbits(31))
        self.sessions[file] = s
        heard = self.heard_roots.pop(file, None)
        if self.pfs:
            self._set_timer(s, Timer.DEADLINE, self.t.deadline(self._max_size(file)))
        if (self.pfs and heard and self.now - heard[2] <= self.t.root_memory
                and heard[0] not in self.distrusted):
            s.root_ip, s.root_xid = heard[0], heard[1]
            if self.logs:
                self.log("INF", f"{fmt_xid(s.xid)} ROOT {fmt_xid(heard[1])} at {heard[0]} already "
                                f"known for {file}: joining")
            self._send_join(s, Event.BEGIN)
        elif self.pfs:
            self._listen(s, Event.BEGIN)
        else:
            self._goto(s, State.FALLBACK, Event.BEGIN)
            if self.logs:
                self.log("INF", f"TFTP {file} from {self.server} (traditional upgrade)")
            self._tftp(file)

    def _random(self, s: Session) -> float:
        """The next draw of the session's own random stream (seeded: runs repeat). Draws are
        rare (one per election), so the stream is replayed rather than kept."""
        _RNG.seed(f"{self.seed}|{self.id.mac}|{s.file}|timers")
        for _ in range(s.draws):
            _RNG.random()
        s.draws += 1
        return _RNG.random()

    def _expected_ok(self, file: str, data: bytes) -> bool:
        """The chain of trust: the .loads by its signature, components by its digests."""
        if self.load is None:
            try:
                ls = _parse_loads(data, self.trust)
            except firmware.FirmwareError as e:
                if self.logs:
                    self.log("ERR", f"{file}: bad signature or format: {e}")
                return False
            return ls.loads_file == file
        try:
            comp = self.load.component(file)
        except KeyError:
            return False
        return payload.verify(comp, data)

    def _install(self, s: Session, data: bytes, source: str) -> bool:
        ok = self._expected_ok(s.file, data)
        if not ok:
            if self.logs:
                self.log("ERR", f"{fmt_xid(s.hier_xid)} {s.file}: digest check FAILED"
                                f" (from {source}): discarded")
            return False
        s.data, s.source = data, source
        self._goto(s, State.ROOT_COMPLETE if s.is_root else State.COMPLETE, Event.FILE_OK)
        self._cancel(s, Timer.BUDGET, Timer.JOIN, Timer.YIELD, Timer.ELECT, Timer.LISTEN,
                     Timer.DEADLINE)
        inst = Installed(s.file, source, True, self.now)
        self.installed[s.file] = inst
        self._out.append(inst)
        if self.logs:
            self.log("NOT", f"{fmt_xid(s.hier_xid)} {s.file} complete {len(data)} bytes from "
                            f"{'TFTP ' + self.server if source == 'tftp' else 'peer ' + source}:"
                            f" sha256 ok, installed")
        if self.pfs:
            # READY goes to the hierarchy's root (a broadcast from the root itself, or from a
            # phone that knows no root): N phones broadcasting it would cost N^2 receptions.
            to_root = s.root_ip not in (NO_IP, self.id.ip)
            self._tell(s.root_ip if to_root else BROADCAST, self._msg(
                s, MsgType.READY, source=ReadySource.TFTP if source == "tftp" else ReadySource.PEER,
                size=len(data)))
            for sid in list(s.children):
                self._serve(s, sid)
        if self.load is None:
            self.load = _parse_loads(data, self.trust)
            if self.logs:
                self.log("NOT", f"Load {self.load.name}: {len(self.load.components)} components: "
                                + " ".join(c.name for c in self.load.components))
            for c in self.load.components:
                self._begin_file(c.name)
        elif all(c.name in self.installed for c in self.load.components):
            self._finish(True, "all components installed")
        return True

    def _finish(self, ok: bool, why: str) -> None:
        if self.completed is None:
            self.completed = Completed(self.now, ok)
            self._out.append(self.completed)
            if self.logs:
                self.log("NOT" if ok else "ERR", f"Upgrade {'complete' if ok else 'FAILED'}: {why}")

    # ------------------------------------------------------------------ election

    def _listen(self, s: Session, why) -> None:
        self._goto(s, State.LISTENING, why)
        self._set_timer(s, Timer.LISTEN, self.t.listen_min + self._random(s)
                        * self.t.listen_spread)

    def _t_listen(self, s: Session) -> None:
        self._goto(s, State.TENTATIVE, Timer.LISTEN)
        s.ad = 0
        if self.logs:
            self.log("NOT", "^.idl_protocol.c-sendBroadcastOffer")
        if self.logs:
            self.log("INF", f"{fmt_xid(s.xid)} TxBdcst ClaimRoot(tent): map={self.map:08x} "
                            f"strength={s.strength:08x}")
        self._tell(BROADCAST, self._msg(s, MsgType.CLAIM, xid=s.xid, ad=0))
        self._set_timer(s, Timer.ELECT, self.t.ad_interval)

    def _t_elect(self, s: Session) -> None:
        if self.logs:
            self.log("NOT", "^.idl_timeout.c-doTimeout")
        if self.logs:
            self.log("DBG", f"Timeout {fmt_xid(s.xid)} hier=ClaimRoot(tent)")
        if s.ad < self.t.ads:
            s.ad += 1
            if self.logs:
                self.log("NOT", "^.idl_protocol.c-sendBroadcastOffer")
            if self.logs:
                self.log("INF", f"{fmt_xid(s.xid)} TxBdcst Ad {s.ad}: ClaimRoot(tent)")
            self._tell(BROADCAST, self._msg(s, MsgType.CLAIM, xid=s.xid, ad=s.ad))
            self._set_timer(s, Timer.ELECT, self.t.ad_interval)
        else:
            self._confirm(s)

    def _t_yield(self, s: Session) -> None:
        due = s.yield_last + self.t.yield_wait
        if self.now < due:          # a stronger claim came since it was set: wait on
            self._set_timer_until(s.file, Timer.YIELD, due)
            return
        if s.no_shows is _EMPTY:
            s.no_shows = set()
        s.no_shows.add(s.yielded_to)      # it never confirmed: its claims count no more
        self._relisten(s, f"no ROOT heard after yielding to {s.yielded_to}", Timer.YIELD)

    def _relisten(self, s: Session, why: str, ev, shun: str = NO_IP) -> None:
        """Start this file's election again (bounded by MAX_ATTEMPTS, then fall back). Its
        children stay until it joins another root than the one that placed them."""
        self._cancel(s, Timer.JOIN, Timer.BUDGET, Timer.YIELD, Timer.ELECT, Timer.LISTEN)
        if s.up_sid is not None:
            self.streams.pop(s.up_sid, None)
            self._out.append(Close(s.up_sid))
            s.up_sid = None
        if shun != NO_IP:
            if s.shunned is _EMPTY:
                s.shunned = set()
            s.shunned.add(shun)
        s.attempts += 1
        if s.attempts > self.t.max_attempts:
            self._fallback(s, f"{why}; {s.attempts - 1} elections tried", ev)
            return
        s.root_ip, s.lost, s.join_tries, s.rejoins = NO_IP, NO_IP, 0, 0
        if self.logs:
            self.log("WRN", f"{fmt_xid(s.xid)} {s.file}: {why}: listening again (attempt "
                            f"{s.attempts} of {self.t.max_attempts})")
        self._listen(s, ev)

    def _release_children(self, s: Session, new_root: str) -> None:
        """Going to a root (``new_root``, or itself) other than the one that placed this
        phone's children: let the subtree go (ABORT UPSTREAM), so that each of its phones
        joins the new root itself. That root's registrar then knows the whole tree: a
        subtree it never placed would look to it like free slots (REQUESTs refused FULL)."""
        if not s.children or new_root == s.placed_by:
            return
        if self.logs:
            self.log("INF", f"{fmt_xid(s.xid)} {s.file}: new root {new_root}: releasing "
                            f"{len(s.children)} children to join it")
        for sid in list(s.children):
            st = self.streams.get(sid)
            if st is not None:
                self._abort(st, AbortReason.UPSTREAM, "root lost: elect again")
        s.children.clear()

    def _distrust(self, ip: str, why: str) -> None:
        """Remember a peer as bad for the run (bounded: the oldest is forgotten first)."""
        if ip in (NO_IP, self.id.ip):
            return
        self.distrusted.pop(ip, None)
        self.distrusted[ip] = why
        while len(self.distrusted) > self.t.max_distrusted:
            del self.distrusted[next(iter(self.distrusted))]

    def _root_ok(self, m: Message, src: str, s: Session | None = None) -> bool:
        """A ROOT worth following: confirmed (bumped strength), from a peer not known bad."""
        return bool(m.strength & codec.ROOT_BUMP) and src not in self.distrusted and (
            s is None or src not in s.shunned)

    def _t_announce(self, s: Session) -> None:
        s.registrar.expire(self.now)
        if s.state == State.ROOT_COMPLETE and s.registrar.all_ready():
            # Quiet when done: every member holds the file. A phone that comes later asks
            # (its CLAIM or JOIN gets a unicast answer); a broadcast would only cost every
            # phone of the subnet a reception.
            if self.logs:
                self.log("INF", f"{fmt_xid(s.xid)} {s.file}: all {s.registrar.members} members "
                                f"ready: no more ROOT broadcasts")
            return
        self._tell(BROADCAST, self._msg(s, MsgType.ROOT, server=self.server))
        fast = s.state == State.ROOT_WAITING
        self._set_timer(s, Timer.ANNOUNCE, self.t.announce_fast if fast else self.t.announce_slow)

    def _t_xfr(self, s: Session) -> None:
        if self.logs:
            self.log("INF", f"{fmt_xid(s.xid)} Root sending TFTP XfrCmd on ROOT_WAITING TO")
        self._goto(s, State.ROOT_FETCHING, Timer.XFR)
        self._tftp(s.file)

    def _t_join(self, s: Session) -> None:
        if s.join_tries < self.t.join_tries:
            self._send_join(s, Timer.JOIN)
        else:
            self._relisten(s, f"no answer from root {s.root_ip}", Timer.JOIN, shun=s.root_ip)

    def _t_silence(self, s: Session) -> None:
        self._drop_parent(s, f"parent {s.parent_ip} silent for {self.t.parent_silence:g}s",
                          Timer.SILENCE)

    def _t_deadline(self, s: Session) -> None:
        self._fallback(s, f"no {s.file} through PFS within "
                          f"{self.t.deadline(self._max_size(s.file)):g}s", Timer.DEADLINE)

    def _t_budget(self, s: Session) -> None:
        budget = self.t.budget(self._max_size(s.file))
        self._drop_parent(s, f"no {s.file} from parent {s.parent_ip} within its budget of "
                             f"{budget:g}s", Timer.BUDGET)

    def _drop_parent(self, s: Session, why: str, ev) -> None:
        st = self.streams.pop(s.up_sid, None) if s.up_sid is not None else None
        if st is not None:
            self._out.append(Close(st.sid))
        self._parent_lost(s, why, ev)

    def _max_size(self, file: str) -> int:
        """The size the signed manifest gives ``file``; for the .loads itself, a bound."""
        if self.load is None:
            return self.t.max_loads_size
        try:
            return self.load.component(file).size
        except KeyError:
            return 0

    def _confirm(self, s: Session) -> None:
        s.strength |= codec.ROOT_BUMP
        self._goto(s, State.ROOT_WAITING, Timer.ELECT)
        self._cancel(s, Timer.DEADLINE)          # a root fetches the file itself
        s.root_ip, s.root_xid = self.id.ip, s.xid
        s.registrar = Registrar(self.id.ip, max_members=self.t.max_members,
                                ttl=2 * self.t.budget(self._max_size(s.file)))
        self._release_children(s, self.id.ip)   # they join it like everyone else
        if self.logs:
            self.log("NOT", "UT:Confirmed root bumping strength")
        if self.logs:
            self.log("NOT", f"@@@HROOT:{fmt_xid(s.xid)} H={codec.name_hash(s.file):08x} "
                            f"m={self.id.model} ROOT={self.server} /dnld/{s.file}")
        self._tell(BROADCAST, self._msg(s, MsgType.ROOT, server=self.server))
        self._set_timer(s, Timer.ANNOUNCE, self.t.announce_fast)
        self._set_timer(s, Timer.XFR, self.t.root_wait)

    def _stronger(self, m: Message, src: str, s: Session) -> bool:
        if m.strength != s.strength:               # (the address breaks ties only)
            return m.strength > s.strength
        return _ipnum(src) > _ipnum(self.id.ip)

    def _rx_claim(self, s: Session, m: Message, src: str) -> None:
        if src in s.no_shows:
            pass
        elif s.state == State.YIELDED and self._stronger(m, src, s):
            if self.now - s.yield_since < self.t.yield_limit:   # the election goes on
                s.yield_last = self.now          # YIELD_WAIT from here (see _t_yield)
        elif s.state in (State.LISTENING, State.TENTATIVE) and self._stronger(m, src, s):
            self._cancel(s, Timer.ELECT, Timer.LISTEN)
            self._goto(s, State.YIELDED, MsgType.CLAIM)
            s.yielded_to, s.yield_since, s.yield_last = src, self.now, self.now
            if self.logs:
                self.log("INF", f"{fmt_xid(s.xid)} RxBdcst ClaimRoot(tent) {fmt_xid(m.xid)} from "
                                f"{src} strength={m.strength:08x}: yielding")
            self._set_timer(s, Timer.YIELD, self.t.yield_wait)
        elif s.is_root:
            # Answer a claim at once, and to the claimer alone: a broadcast answer to every
            # offer costs every phone a reception, and under load that feeds on itself.
            self._tell(src, self._msg(s, MsgType.ROOT, server=self.server))

    def _rx_root(self, s: Session, m: Message, src: str) -> None:
        if not self._root_ok(m, src, s):
            return
        if m.xid not in s.xids and len(s.xids) < MAX_XIDS:
            s.xids += (m.xid,)       # children of a new root may come to us under its XID
        if s.state in (State.LISTENING, State.TENTATIVE, State.YIELDED):
            self._cancel(s, Timer.ELECT, Timer.YIELD, Timer.LISTEN)
            if self.logs:
                self.log("INF", f"{fmt_xid(s.xid)} RxBdcst ROOT {fmt_xid(m.xid)} from {src}"
                                f" m={m.model} {s.file}: joining")
            self._release_children(s, src)
            s.root_ip, s.root_xid = src, m.xid
            s.join_tries = 0
            self._send_join(s, MsgType.ROOT)
        elif (s.state == State.ROOT_WAITING and s.registrar.members == 0
              and self._stronger(m, src, s)):
            if self.logs:
                self.log("NOT", f"{fmt_xid(s.xid)} stronger root {fmt_xid(m.xid)} at {src}:"
                                f" demoting, joining it")
            self._cancel(s, Timer.ANNOUNCE, Timer.XFR)
            self._set_timer(s, Timer.DEADLINE, self.t.deadline(self._max_size(s.file)))
            s.registrar = None
            s.strength &= ~codec.ROOT_BUMP
            s.root_ip, s.root_xid = src, m.xid
            s.join_tries = 0
            self._send_join(s, MsgType.ROOT)

    def _send_join(self, s: Session, why) -> None:
        if s.state != State.JOINING:
            self._goto(s, State.JOINING, why)
        s.join_tries += 1
        if self.logs:
            self.log("INF", f"{fmt_xid(s.root_xid)} TxJoin to root {s.root_ip} try {s.join_tries}"
                            + (f" (lost parent {s.lost})" if s.lost != NO_IP else ""))
        self._tell(s.root_ip, self._msg(s, MsgType.JOIN, lost_parent=s.lost))
        self._set_timer(s, Timer.JOIN, self.t.join_retry)

    def _rx_join(self, s: Session, m: Message, src: str) -> None:
        if not s.is_root or m.xid != s.xid:
            self._tell(src, self._msg(s, MsgType.REFUSE, xid=m.xid, reason=RefuseReason.NOT_ROOT))
            return
        placed = s.registrar.place(src, m.lost_parent, self.now)
        if placed is None:
            self._tell(src, self._msg(s, MsgType.REFUSE, reason=RefuseReason.FULL))
            return
        parent, slot, depth = placed
        if self.logs:
            self.log("INF", f"{fmt_xid(s.xid)} RxJoin from {src}: parent={parent} slot={slot}"
                            f" depth={depth}")
        self._tell(src, self._msg(s, MsgType.OFFER, parent=parent, slot=slot, depth=depth))

    def _rx_offer(self, s: Session, m: Message, src: str) -> None:
        if s.state != State.JOINING or src != s.root_ip or m.xid != s.root_xid:
            return
        if m.parent in self.distrusted:
            if self.logs:
                self.log("WRN", f"{fmt_xid(s.root_xid)} RxOffer names parent {m.parent}, which "
                                f"served bad bytes: asking again")
            s.lost = m.parent
            self._cancel(s, Timer.JOIN)
            self._send_join(s, MsgType.OFFER)
            return
        if m.parent in (self.id.ip, NO_IP) or m.parent in s.children.values():
            # A placement that cannot exist: itself, or its own child (a loop). Ignored: the
            # JOIN is retried, and JOIN_TRIES unanswered ones end this root's turn.
            if self.logs:
                self.log("WRN", f"{fmt_xid(s.root_xid)} RxOffer from {src} names parent {m.parent}"
                                f", which is this phone or its child: ignored")
            return
        self._cancel(s, Timer.JOIN)
        s.parent_ip, s.lost, s.placed_by = m.parent, NO_IP, s.root_ip
        sid = self._new_sid()
        st = Stream(sid, m.parent, up=True, file=s.file)
        self.streams[sid] = st
        s.up_sid = sid
        self._goto(s, State.CHILD, MsgType.OFFER)
        self._set_timer(s, Timer.BUDGET, self.t.budget(self._max_size(s.file)))
        if self.logs:
            self.log("INF", f"{fmt_xid(s.root_xid)} RxOffer parent={m.parent} slot={m.slot} "
                            f"depth={m.depth}: |parent={m.parent}")
        self._out.append(Connect(sid, m.parent))
        self._out.append(Write(sid, codec.encode_frame(Frame(
            FrameType.REQUEST, xid=s.root_xid, model=self.id.model, file=s.file))))
        self._out.append(Watch(sid, self.t.parent_silence))

    def _rx_ready(self, s: Session, m: Message, src: str) -> None:
        if s.is_root:
            s.registrar.mark_ready(src)

    def _rx_refuse(self, s: Session, m: Message, src: str) -> None:
        if s.state == State.JOINING and src == s.root_ip:
            # Not a fallback: a REFUSE may be spoofed, or come from a root that just demoted
            # itself. Listening again finds the root that is (it answers claims).
            self._relisten(s, f"root {src} refused: {RefuseReason(m.reason).name}"
                           if m.reason in RefuseReason._value2member_map_ else
                           f"root {src} refused ({m.reason})", MsgType.REFUSE)

    # ------------------------------------------------------------------ child side

    def _up_frame(self, st: Stream, f: Frame) -> None:
        s = self.sessions.get(st.file)
        if s is None or s.up_sid != st.sid:
            return
        if f.type == FrameType.HOLD:
            pass            # the parent is alive, still fetching (the driver's Watch saw it)
        elif f.type == FrameType.HEADER:
            want = self._max_size(s.file)
            if f.size > want or (self.load is not None and f.size != want):
                self._abort(st, AbortReason.PROTOCOL, "size differs from the manifest")
                self._parent_lost(s, f"parent {st.peer} announced {f.size} bytes for {s.file}"
                                     f", the manifest gives {want}: protocol error")
                return
            st.size, st.digest = f.size, f.sha256
            if self.logs:
                self.log("INF", f"{fmt_xid(s.root_xid)} RxHeader {s.file} size={f.size} from "
                                f"{st.peer}")
        elif f.type == FrameType.DATA:
            st.parts.append(f.data)
            st.got += len(f.data)
            s.have = st.got
            for sid in s.children:               # its own children's HOLDs show progress
                self._hold(s, sid)
            if st.size < 0 or st.got > st.size:
                self._abort(st, AbortReason.PROTOCOL, "data beyond size")
                self._parent_lost(s, f"parent {st.peer} sent more than announced")
        elif f.type == FrameType.END:
            st.done = True
            data = payload.join(st.parts)
            st.parts = []
            self.streams.pop(st.sid, None)
            self._out.append(Close(st.sid))
            self._cancel(s, Timer.BUDGET)
            s.up_sid = None
            if len(data) != st.size or payload.sha256(data) != st.digest:
                if self.logs:
                    self.log("ERR", f"{fmt_xid(s.root_xid)} {s.file} from {st.peer}: size/sha256"
                                    f" differ from its header: discarded")
                self._bad_parent(s, st.peer, "its bytes differ from its header")
            elif not self._install(s, data, st.peer):
                self._bad_parent(s, st.peer, "digest check failed")
        elif f.type == FrameType.ABORT:
            why = AbortReason(f.reason).name if f.reason in AbortReason._value2member_map_ \
                else str(f.reason)
            self.streams.pop(st.sid, None)
            self._out.append(Close(st.sid))
            self._parent_lost(s, f"parent {st.peer} aborted: {why} {f.text}".rstrip(),
                              upstream=f.reason == AbortReason.UPSTREAM)
        else:
            self._abort(st, AbortReason.PROTOCOL, f"unexpected {f.type.name}")
            self._parent_lost(s, f"parent {st.peer} sent {f.type.name}")

    def _bad_parent(self, s: Session, parent: str, why: str) -> None:
        """Bad bytes: never trust that peer again this run, and tell the root (JOIN naming
        it as lost: the registrar never offers it again)."""
        self._distrust(parent, why)
        self._parent_lost(s, f"{s.file} from {parent}: {why}: discarded, {parent} distrusted",
                          Event.BAD_FILE)

    def _parent_lost(self, s: Session, why: str, ev=Event.PARENT_LOST,
                     upstream: bool = False) -> None:
        """``upstream``: the parent lost its own source (it left the tree): elect again."""
        if s.state != State.CHILD:
            return
        self._cancel(s, Timer.BUDGET)
        lost, s.up_sid = s.parent_ip, None
        s.rejoins += 1
        if self.logs:
            self.log("WRN", f"{fmt_xid(s.root_xid)} {s.file}: {why}")
        if lost == s.root_ip:
            self._relisten(s, f"lost the root {lost}", ev, shun=lost)   # elect a new root
        elif upstream:
            self._relisten(s, f"parent {lost} left the tree", ev)
        elif s.rejoins > self.t.max_rejoins:
            self._fallback(s, f"lost {s.rejoins} parents", ev)
        else:
            s.lost, s.join_tries = lost, 0
            self._send_join(s, ev)

    def _fallback(self, s: Session, why: str, ev) -> None:
        self._cancel(s, Timer.BUDGET, Timer.JOIN, Timer.YIELD, Timer.ELECT, Timer.LISTEN,
                     Timer.DEADLINE)
        if s.up_sid is not None:
            self.streams.pop(s.up_sid, None)
            self._out.append(Close(s.up_sid))
            s.up_sid = None
        self._goto(s, State.FALLBACK, ev)
        if self.logs:
            self.log("WRN", f"{fmt_xid(s.hier_xid)} PFS failed for {s.file} ({why}): fallback to"
                            f" TFTP {self.server}")
        self._tftp(s.file)

    def _got_tftp_file(self, s: Session, data: bytes | None, error: str) -> None:
        if s.state not in (State.FALLBACK, State.ROOT_FETCHING):
            return
        if data is not None and self._install(s, data, "tftp"):
            return
        s.fetch_fails += 1
        if s.fetch_fails < self.t.fetch_tries:
            if self.logs:
                self.log("WRN", f"{fmt_xid(s.hier_xid)} TFTP {s.file} failed ({s.fetch_fails} of "
                                f"{self.t.fetch_tries}): trying again")
            self._tftp(s.file)
            return
        self._goto(s, State.FAILED, Event.TFTP_FAILED)
        self._cancel(s, Timer.ANNOUNCE, Timer.XFR)
        for sid in list(s.children):
            st = self.streams.get(sid)
            if st is not None:
                self._abort(st, AbortReason.UPSTREAM, "source failed")
        self._finish(False, f"{s.file}: TFTP {error or 'digest check failed'}")

    # ------------------------------------------------------------------ parent side

    def _down_frame(self, st: Stream, f: Frame) -> None:
        self.idle.pop(st.sid, None)
        if f.type != FrameType.REQUEST or st.file:
            if f.type == FrameType.ABORT:
                self.streams.pop(st.sid, None)
                self._out.append(Close(st.sid))
                s = self.sessions.get(st.file)
                if s is not None:
                    s.children.pop(st.sid, None)
                return
            self._abort(st, AbortReason.PROTOCOL, f"unexpected {f.type.name}")
            return
        s = self.sessions.get(f.file) if self.pfs else None
        if (s is None or f.model != self.id.model or s.state == State.FAILED
                or (f.xid != s.hier_xid and f.xid not in s.xids)):
            if self.logs:
                self.log("WRN", f"child {st.peer} asked for unknown {fmt_xid(f.xid)} {f.file}")
            self._abort(st, AbortReason.UNKNOWN, "no such hierarchy")
            return
        if st.peer == s.parent_ip and s.state == State.CHILD:
            if self.logs:
                self.log("WRN", f"{fmt_xid(s.hier_xid)} child {st.peer} is this phone's parent:"
                                f" refused (a loop)")
            self._abort(st, AbortReason.PROTOCOL, "you are my parent")
            return
        if len(s.children) >= 2:
            if self.logs:
                self.log("WRN", f"{fmt_xid(s.hier_xid)} child {st.peer} refused: FULL=1")
            self._abort(st, AbortReason.FULL, "both child slots taken")
            return
        st.file = f.file
        s.children[st.sid] = st.peer
        fds = list(s.children.values()) + ["-1"] * (2 - len(s.children))
        if self.logs:
            self.log("NOT", f"|parent={s.parent_ip if s.parent_ip != NO_IP else -1}><fd[0]={fds[0]}"
                            f" fd[1]={fds[1]} FULL={int(len(s.children) >= 2)} {s.file}")
        if s.data is not None:
            self._serve(s, st.sid)
        else:
            self._hold(s, st.sid)

    def _hold(self, s: Session, sid: int) -> None:
        """HOLD the waiting child on ``sid`` now and every HOLD_INTERVAL (the driver repeats
        it) until the file, an ABORT or a close is written to it."""
        total = 0
        if self.load is not None and s.file != self.load.loads_file:
            total = self.load.component(s.file).size
        self._out.append(Keepalive(sid, _hold_frame(s.have, total), self.t.hold_interval))

    def _serve(self, s: Session, sid: int) -> None:
        st = self.streams.get(sid)
        data = s.data
        if st is None or data is None:
            return
        if self.logs:
            self.log("INF", f"{fmt_xid(s.hier_xid)} TxFile {s.file} {len(data)} bytes to child "
                            f"{st.peer}")
        self._out.append(Write(sid, payload.framed(data)))
        self._out.append(Close(sid))
        st.done = True
        # A stream this phone closed is over for it: no driver reports its end (the agent
        # forgets it on the close, the simulator drops it), so it goes now. The child keeps
        # its slot in s.children.
        del self.streams[sid]
        if s.is_root:                 # it has the file now, whatever root it reports to
            s.registrar.mark_ready(st.peer)

    def _abort(self, st: Stream, reason: AbortReason, text: str) -> None:
        self._out.append(Write(st.sid, codec.encode_frame(Frame(FrameType.ABORT, reason=reason,
                                                                text=text))))
        self._out.append(Close(st.sid))
        self.streams.pop(st.sid, None)
        s = self.sessions.get(st.file)
        if s is not None:
            s.children.pop(st.sid, None)


#: What a timer does in each state (a timer that fires in a state not listed does nothing).
_TIMER_HANDLERS = {
    (State.LISTENING, Timer.LISTEN): Phone._t_listen,
    (State.TENTATIVE, Timer.ELECT): Phone._t_elect,
    (State.YIELDED, Timer.YIELD): Phone._t_yield,
    **{(st, Timer.ANNOUNCE): Phone._t_announce for st in ROOT_STATES},
    (State.ROOT_WAITING, Timer.XFR): Phone._t_xfr,
    (State.JOINING, Timer.JOIN): Phone._t_join,
    (State.CHILD, Timer.BUDGET): Phone._t_budget,
    **{(st, Timer.DEADLINE): Phone._t_deadline for st in (
        State.LISTENING, State.TENTATIVE, State.YIELDED, State.JOINING, State.CHILD)},
}

#: The states in which _rx_root does more than note the root's XID.
_ROOT_HEEDED = frozenset({State.LISTENING, State.TENTATIVE, State.YIELDED, State.ROOT_WAITING})

#: The states in which a session acts on its file's CLAIMs and READYs (an election, or a
#: root: see _rx_claim, _rx_ready); in any other it drops them, and the ROOTs it has heard
#: (ignores_root). pfslab.sim.memnet hands a phone only the broadcasts it may act on.
HEEDING = _ROOT_HEEDED | ROOT_STATES


def ignores_root(s: Session, xid: int) -> bool:
    """A ROOT with this XID changes nothing for ``s``: a state that only notes XIDs, and the
    XID noted already (or no room for another). It stays so until ``s`` changes state."""
    return s.state not in _ROOT_HEEDED and (xid in s.xids or len(s.xids) >= MAX_XIDS)

#: Which method handles each datagram kind.
_MSG_HANDLERS = {MsgType.CLAIM: Phone._rx_claim, MsgType.ROOT: Phone._rx_root,
                 MsgType.JOIN: Phone._rx_join, MsgType.OFFER: Phone._rx_offer,
                 MsgType.REFUSE: Phone._rx_refuse, MsgType.READY: Phone._rx_ready}
