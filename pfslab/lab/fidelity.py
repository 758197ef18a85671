"""Is the emulation faithful? Timer lag, UDP receive drops, capture drops, and a verdict.

A lab run is a protocol result only if the emulation kept up: the phones' timers fired on
time, their sockets dropped nothing for a full buffer, and the captures hold every frame.
This module measures those three things and says whether a run was **overloaded**, against
bounds derived from the protocol's own timers (``Bounds.from_timers``; docs/lab.md,
"Fidelity").

The agent (``pfslab.agent``) feeds a ``LagMeter`` (no Scapy, no I/O here but /proc reads)::

    meter = LagMeter()
    meter.record(scheduled, fired)      # one timer: when it was due, when it ran (seconds)
    stop = probe(loop, meter)           # or: a 50 ms heartbeat on the loop measures its lag
    result["lag"] = meter.to_dict()     # mergeable across agent processes: LagMeter.merge

The lab reads the drop counters::

    before = udp_counters_many({name: pid, ...})      # /proc/<pid>/net/snmp, per namespace
    ...                                                # the run
    drops = udp_drops(before, udp_counters_many(pids)) # RcvbufErrors etc., deltas
    cap = tcpdump_stats(stderr_text)                   # captured / received / dropped

and judges::

    v = verdict(lag=meter.summary(), rcvbuf_drops=drops["rcvbuf_errors"],
                capture_drops=sum(...), bounds=Bounds.from_timers(Timers()))
    v["overloaded"], v["reasons"]

Times given to ``LagMeter`` are in the clock the protocol runs on: with time dilation k, pass
emulated seconds (real lag / k), so the bounds stay the protocol's.
"""
from __future__ import annotations

import math
import re
import socket
import struct
from dataclasses import asdict, dataclass

OVERLOADED = "EMULATION OVERLOADED"


# ---------------------------------------------------------------- bounds
@dataclass(frozen=True)
class Bounds:
    """What a faithful run stays within. All derived from the protocol's timers:

    * ``lag_p99_s`` = ad interval / 5 (50 ms): 99 % of timers fire within a fifth of the
      spacing of a root's ads, so ads, claims and offers keep their order on the wire.
    * ``lag_max_s`` = the offer-to-confirmation delay, (ads + 1) x ad interval (1.25 s): a
      timer later than that can make a phone confirm itself root before it could have heard
      a stronger claim.
    * ``rcvbuf_drops`` = 0: a claim or ROOT dropped by a full socket buffer changes the
      election; a real phone's LAN does not drop them wholesale.
    * ``capture_drops`` = 0: the wire-derived results rest on every frame being in the pcaps.
    """
    lag_p99_s: float = 0.05
    lag_max_s: float = 1.25
    rcvbuf_drops: int = 0
    capture_drops: int = 0

    @classmethod
    def from_timers(cls, timers=None) -> "Bounds":
        if timers is None:
            from pfslab.protocol.phone import Timers
            timers = Timers()
        return cls(lag_p99_s=timers.ad_interval / 5,
                   lag_max_s=(timers.ads + 1) * timers.ad_interval)

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- timer lag
class LagMeter:
    """How late timers fire: a log-bucket histogram (2 % resolution, O(1) per sample, memory
    bounded whatever the run's length), its count and exact maximum."""

    BASE = 1.02          # bucket i holds lags in (MIN * BASE**(i-1), MIN * BASE**i]
    MIN = 1e-6           # lags at or under 1 us go to bucket 0

    def __init__(self):
        self.buckets: dict[int, int] = {}
        self.n = 0
        self.max = 0.0
        self.total = 0.0

    def record(self, scheduled: float, fired: float) -> float:
        """One timer, due at ``scheduled``, ran at ``fired`` (same clock). Returns the lag."""
        lag = fired - scheduled
        self.add(lag)
        return lag

    def add(self, lag: float) -> None:
        lag = max(0.0, lag)            # asyncio may run a timer a clock tick early
        i = 0 if lag <= self.MIN else math.ceil(math.log(lag / self.MIN, self.BASE))
        self.buckets[i] = self.buckets.get(i, 0) + 1
        self.n += 1
        self.total += lag
        if lag > self.max:
            self.max = lag

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0..1), as its bucket's upper edge (never under the true value,
        never over the maximum)."""
        if not self.n:
            return None
        rank = max(1, math.ceil(q * self.n))
        seen = 0
        for i in sorted(self.buckets):
            seen += self.buckets[i]
            if seen >= rank:
                return 0.0 if i == 0 else min(self.MIN * self.BASE ** i, self.max)
        return self.max

    def summary(self) -> dict:
        """{n, p50_ms, p99_ms, max_ms, mean_ms} (None values when nothing was recorded)."""
        ms = (lambda v: None if v is None else round(v * 1e3, 3))
        return {"n": self.n, "p50_ms": ms(self.quantile(0.5)), "p99_ms": ms(self.quantile(0.99)),
                "max_ms": ms(self.max if self.n else None),
                "mean_ms": ms(self.total / self.n if self.n else None)}

    def to_dict(self) -> dict:
        """JSON-able: the summary and the histogram, so the lab can merge agent processes."""
        return {**self.summary(), "hist": {str(k): v for k, v in sorted(self.buckets.items())},
                "sum_s": self.total, "max_s": self.max}

    @classmethod
    def from_dict(cls, d: dict) -> "LagMeter":
        m = cls()
        for k, v in (d.get("hist") or {}).items():
            m.buckets[int(k)] = m.buckets.get(int(k), 0) + int(v)
        m.n = sum(m.buckets.values())
        m.total = float(d.get("sum_s") or 0.0)
        m.max = float(d.get("max_s") or 0.0)
        return m

    @classmethod
    def merge(cls, meters) -> "LagMeter":
        out = cls()
        for m in meters:
            for k, v in m.buckets.items():
                out.buckets[k] = out.buckets.get(k, 0) + v
            out.n += m.n
            out.total += m.total
            out.max = max(out.max, m.max)
        return out


def probe(loop, meter: LagMeter, interval: float = 0.05, scale: float = 1.0):
    """A heartbeat on an asyncio loop: every ``interval`` loop seconds it records how late it
    ran, so the meter sees the loop's lag even when no phone timer is due. ``scale`` divides
    the lag (time dilation k: pass k to record emulated seconds). Returns a stop function."""
    state = {"handle": None}

    def beat(due: float) -> None:
        now = loop.time()
        meter.add((now - due) / scale)
        nxt = max(due + interval, now)
        state["handle"] = loop.call_at(nxt, beat, nxt)

    first = loop.time() + interval
    state["handle"] = loop.call_at(first, beat, first)
    return lambda: state["handle"].cancel()


# ---------------------------------------------------------------- UDP receive drops
def parse_snmp_udp(text: str) -> dict[str, int]:
    """The ``Udp:`` counters of a /proc/net/snmp text (header line + value line)."""
    rows = [l.split() for l in text.splitlines() if l.startswith("Udp:")]
    if len(rows) < 2:
        return {}
    names, values = rows[0][1:], rows[1][1:]
    out = {}
    for n, v in zip(names, values):
        try:
            out[n] = int(v)
        except ValueError:
            pass
    return out


def udp_counters(where: int | str) -> dict[str, int] | None:
    """UDP counters of a network namespace: the one process ``where`` (a PID) is in
    (/proc/<pid>/net/snmp is that namespace's view), or the namespace file ``where`` (a path,
    e.g. a phone's /run/netns/<host>: read from this thread, set into it). None if gone."""
    try:
        if isinstance(where, str):
            from .nsutil import in_netns
            with in_netns(where):
                with open("/proc/thread-self/net/snmp") as f:
                    return parse_snmp_udp(f.read())
        with open(f"/proc/{where}/net/snmp") as f:
            return parse_snmp_udp(f.read())
    except OSError:
        return None


def udp_counters_many(where: dict[str, int | str]) -> dict[str, dict[str, int] | None]:
    """name -> counters, for many namespaces (PIDs or namespace files; call before and
    after)."""
    return {name: udp_counters(w) for name, w in where.items()}


UDP_DROP_FIELDS = ("RcvbufErrors", "InErrors", "MemErrors")


def udp_drops(before: dict, after: dict, top: int = 5) -> dict:
    """Receive drops per namespace between two ``udp_counters_many`` snapshots:
    {rcvbuf_errors, in_errors, mem_errors, in_datagrams, namespaces, namespaces_dropping,
     worst: [[name, rcvbuf_errors], ...] (the ``top`` worst), unread: [names]}."""
    tot = {f: 0 for f in UDP_DROP_FIELDS + ("InDatagrams",)}
    per = []
    unread = []
    for name, a in after.items():
        b = before.get(name)
        if not a or b is None:
            unread.append(name)
            continue
        d = {f: a.get(f, 0) - (b or {}).get(f, 0) for f in tot}
        for f in tot:
            tot[f] += d[f]
        if d["RcvbufErrors"] or d["InErrors"]:
            per.append((name, d["RcvbufErrors"]))
    per.sort(key=lambda x: -x[1])
    return {"rcvbuf_errors": tot["RcvbufErrors"], "in_errors": tot["InErrors"],
            "mem_errors": tot["MemErrors"], "in_datagrams": tot["InDatagrams"],
            "namespaces": len(after), "namespaces_dropping": len(per),
            "worst": [list(x) for x in per[:top]], "unread": unread}


SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)   # Linux >= 4.12; Python 3.11 lacks the name
_SK_MEMINFO_DROPS = 8


def socket_drops(sock: socket.socket) -> int | None:
    """Datagrams this one socket dropped (full buffer, ...): SO_MEMINFO's drops field. Read
    it before closing the socket. None where the kernel does not say."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 9 * 4)
    except OSError:
        return None
    if len(raw) < (_SK_MEMINFO_DROPS + 1) * 4:
        return None
    return struct.unpack(f"{len(raw) // 4}I", raw[:len(raw) // 4 * 4])[_SK_MEMINFO_DROPS]


# ---------------------------------------------------------------- capture drops
_TCPDUMP_LINES = {"captured": re.compile(r"(\d+) packets? captured"),
                  "received": re.compile(r"(\d+) packets? received by filter"),
                  "dropped": re.compile(r"(\d+) packets? dropped by kernel"),
                  "dropped_by_interface": re.compile(r"(\d+) packets? dropped by interface")}


def tcpdump_stats(text: str) -> dict[str, int | None]:
    """tcpdump's closing statistics (its stderr after SIGINT): captured, received by filter,
    dropped by kernel, dropped by interface. None for a line it did not print (killed)."""
    out = {}
    for key, rx in _TCPDUMP_LINES.items():
        m = rx.search(text)
        out[key] = int(m.group(1)) if m else None
    return out


# ---------------------------------------------------------------- verdict
def verdict(lag: dict | None, rcvbuf_drops: int | None, capture_drops: int | None,
            bounds: Bounds | None = None) -> dict:
    """{"overloaded": bool, "reasons": [one line each], "bounds": {...}, "unmeasured": [...]}.

    ``lag`` is a ``LagMeter.summary()`` (ms); a figure that was not measured (None) is listed
    in ``unmeasured``, never taken as fine or as a breach."""
    b = bounds or Bounds.from_timers()
    reasons, unmeasured = [], []
    if not lag or lag.get("p99_ms") is None:
        unmeasured.append("timer lag")
    else:
        if lag["p99_ms"] > b.lag_p99_s * 1e3:
            reasons.append(f"timer lag p99 {lag['p99_ms']:.1f} ms > {b.lag_p99_s * 1e3:.0f} ms "
                           "(a fifth of the ad interval)")
        if lag["max_ms"] is not None and lag["max_ms"] > b.lag_max_s * 1e3:
            reasons.append(f"timer lag max {lag['max_ms']:.0f} ms > {b.lag_max_s * 1e3:.0f} ms "
                           "(the offer-to-confirmation delay)")
    if rcvbuf_drops is None:
        unmeasured.append("UDP receive drops")
    elif rcvbuf_drops > b.rcvbuf_drops:
        reasons.append(f"{rcvbuf_drops:,} UDP datagrams dropped for a full receive buffer in "
                       f"the lab's namespaces (bound {b.rcvbuf_drops})")
    if capture_drops is None:
        unmeasured.append("capture drops")
    elif capture_drops > b.capture_drops:
        reasons.append(f"{capture_drops:,} frames missing from the captures "
                       f"(bound {b.capture_drops})")
    return {"overloaded": bool(reasons), "reasons": reasons, "bounds": b.as_dict(),
            "unmeasured": unmeasured}


def headline(v: dict) -> str:
    """One line for a summary: 'EMULATION OVERLOADED: ...' or 'emulation kept up ...'."""
    if v.get("overloaded"):
        return f"{OVERLOADED}: " + "; ".join(v["reasons"]) + \
            " -- these figures describe the emulator, not the protocol"
    if v.get("unmeasured"):
        return "emulation within bounds (not measured: " + ", ".join(v["unmeasured"]) + ")"
    return "emulation within bounds (timer lag, UDP receive drops, capture drops)"


# ---------------------------------------------------------------- a run's account
def run_fidelity(agent_stats: dict | None, udp: dict | None, captures: dict | None,
                 bounds: Bounds | None = None) -> dict:
    """results.json's ``fidelity`` for one mode.

    ``agent_stats``: the agent's ``agent_stats`` event ({lag: LagMeter.to_dict(), processes:
    [{pid, phones, lag, ...}], time_dilation}); ``udp``: ``udp_drops(before, after)`` over
    the lab's namespaces; ``captures``: label -> ``Capture.check()``. Missing parts are
    reported as not measured."""
    b = bounds or Bounds.from_timers()
    lag = per_proc = None
    k = 1.0
    if agent_stats:
        lag = LagMeter.from_dict(agent_stats.get("lag") or {}).summary()
        per_proc = [{"pid": p.get("pid"), "phones": p.get("phones"),
                     **LagMeter.from_dict(p.get("lag") or {}).summary()}
                    for p in agent_stats.get("processes") or []]
        k = agent_stats.get("time_dilation") or 1.0
        if not lag["n"]:
            lag = None
    cap_drops = None
    if captures:
        miss = [c.get("missing") for c in captures.values()]
        cap_drops = None if any(m is None for m in miss) else sum(miss)
    v = verdict(lag, None if udp is None else udp.get("rcvbuf_errors"), cap_drops, b)
    return {"lag": lag, "lag_source": (agent_stats or {}).get("lag_source", "timers"),
            "lag_per_process": per_proc, "time_dilation": k,
            "udp_drops": udp, "captures": captures, "capture_drops": cap_drops,
            "captures_complete": bool(captures) and all(c.get("complete")
                                                        for c in captures.values()),
            "verdict": v, "headline": headline(v)}


def incomplete_subnets(captures: dict | None) -> set:
    """Subnet numbers whose capture may lack frames ('subnet-<k>' labels)."""
    out = set()
    for label, c in (captures or {}).items():
        if label.startswith("subnet-") and not c.get("complete"):
            try:
                out.add(int(label.split("-", 1)[1]))
            except ValueError:
                pass
    return out


def mark_missing_frames(wire: list[dict], agent: list[dict], captures: dict | None) -> int:
    """Say, in each wire-derived hierarchy of a subnet whose capture is incomplete, which
    edges rest on missing frames: ``capture_complete`` False and ``edges_not_on_wire`` =
    the agents' edges of that (subnet, model, file) that the pcap does not show. Hierarchies
    of complete captures get ``capture_complete`` True. Returns how many edges it listed."""
    bad = incomplete_subnets(captures)
    known = set() if captures is None else {int(l.split("-", 1)[1]) for l in captures
                                             if l.startswith("subnet-")
                                             and l.split("-", 1)[1].isdigit()}
    agent_edges: dict = {}
    for h in agent:
        agent_edges.setdefault((h["subnet"], h["model"], h["file"]), set()).update(
            tuple(e) for e in h.get("edges", []))
    wire_edges: dict = {}
    for h in wire:
        wire_edges.setdefault((h["subnet"], h["model"], h["file"]), set()).update(
            tuple(e) for e in h.get("edges", []))
    listed = 0
    for h in wire:
        key = (h["subnet"], h["model"], h["file"])
        if h["subnet"] in bad or h["subnet"] not in known:
            h["capture_complete"] = False
            miss = sorted(agent_edges.get(key, set()) - wire_edges.get(key, set()))
            nodes = {h.get("root")} | {n for e in h.get("edges", []) for n in e}
            mine, grew = [], True
            while grew:                        # the missing edges that hang off this tree
                grew = False
                for e in miss:
                    if e[0] in nodes and list(e) not in mine:
                        mine.append(list(e))
                        nodes.add(e[1])
                        grew = True
            h["edges_not_on_wire"] = sorted(mine)
            listed += len(h["edges_not_on_wire"])
        else:
            h["capture_complete"] = True
    return listed


class RunWatch:
    """The lab's side of one mode's fidelity account::

        watch = RunWatch({"p1-1": "/run/netns/..", ...}, others={"HQ": pid})  # file or PID
        watch.start()              # before the reset
        ... watch.event(ev) for each agent event (keeps the ``agent_stats`` one) ...
        watch.stop()               # after the agent, before teardown (namespaces still up)
        fid = watch.result(captures)                        # after teardown

    The phones' receive drops are judged; the ``others`` (HQ: in.tftpd's socket) are
    reported beside them (``udp_drops_others``), since a real server can drop too.
    """

    def __init__(self, phones: dict[str, int | str], others: dict[str, int | str] | None = None):
        self.phones = dict(phones)
        self.others = dict(others or {})
        self.before: dict | None = None
        self.after: dict | None = None
        self.agent_stats: dict | None = None

    def _read(self) -> dict:
        return udp_counters_many({**self.phones, **self.others})

    def start(self) -> None:
        self.before = self._read()

    def event(self, ev: dict) -> None:
        if ev.get("event") == "agent_stats":
            self.agent_stats = ev

    def stop(self) -> None:
        if self.before is not None:
            self.after = self._read()

    def result(self, captures: dict | None, bounds: Bounds | None = None) -> dict:
        udp = others = None
        if self.before is not None and self.after is not None:
            pick = (lambda d, names: {n: d.get(n) for n in names})
            udp = udp_drops(pick(self.before, self.phones), pick(self.after, self.phones))
            if self.others:
                others = udp_drops(pick(self.before, self.others),
                                   pick(self.after, self.others))
        return {**run_fidelity(self.agent_stats, udp, captures, bounds),
                "udp_drops_others": others}
