"""The simulator's phones as live-view events, in virtual time: ``SimNet.on_drain`` calls a
:class:`SimFeed` after each input that changed what a phone shows, and it turns that into the
same events the lab's agent sends (``status``, ``installed``, ``completed``). Without a
terminal, :class:`PlainProgress` prints plain lines from the simulator's counters instead."""
from __future__ import annotations

import sys
import time

from .status import StatusFilter, phone_status, status_event


class SimFeed:
    """``every``: the least virtual time between two looks at one phone (a phone takes many
    inputs per second of virtual time; the screen need not follow each)."""

    def __init__(self, sink, every: float = 0.25):
        self.sink = sink                  # e.g. LiveView.event
        self.every = every
        self.looked: dict[str, float] = {}
        self.filters: dict[str, StatusFilter] = {}
        self.seen: dict[str, int] = {}    # phone -> files installed already reported
        self.done: set[str] = set()
        self.fetching: dict[str, tuple[str, float]] = {}   # phone -> (file, since)

    def __call__(self, phone, now: float) -> None:
        name = phone.id.name
        busy = phone.tftp_busy
        if busy is not None and self.fetching.get(name, ("",))[0] != busy:
            self.fetching[name] = (busy, now)
        changed = len(phone.installed) != self.seen.get(name, 0)
        if not changed and phone.completed is None and \
                now - self.looked.get(name, -1e9) < self.every:
            return
        self.looked[name] = now
        if changed:
            for inst in list(phone.installed.values())[self.seen.get(name, 0):]:
                s = phone.sessions.get(inst.file)
                size = len(s.data) if s is not None and s.data is not None else None
                since = self.fetching.get(name, ("", now))
                self.sink({"event": "installed", "phone": name, "file": inst.file,
                           "source": inst.source, "t": round(now, 3),
                           "bytes": size if inst.source == "tftp" else None,
                           "since": since[1] if since[0] == inst.file else now})
            self.seen[name] = len(phone.installed)
        f = self.filters.setdefault(name, StatusFilter())
        st = f.update(phone_status(phone), now)
        if st is not None:
            self.sink(status_event(name, st, now))
        if phone.completed is not None and name not in self.done:
            self.done.add(name)
            self.sink({"event": "completed", "phone": name, "ok": phone.completed.ok,
                       "t": round(phone.completed.t, 3)})


class PlainProgress:
    """Without a terminal (or with ``--no-live``): a plain progress line every ``every``
    seconds of wall time, read from the simulator's own counters (``SimNet.ok``, ``failed``,
    ``serving``, its WAN's bytes), not from a feed per phone: at 10^5 phones the feed cost a
    tenth of the run. ``SimNet.run(tick=...)`` calls it every 16,384 events."""

    def __init__(self, mode: str, phones: int, bw_bps: float | None = None,
                 every: float = 5.0, out=None):
        self.mode, self.phones, self.bw_bps, self.every = mode, phones, bw_bps, every
        self.out = out or sys.stdout
        self.last = time.monotonic()
        self.t = 0.0
        self.wire = 0

    def __call__(self, net, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < self.every:
            return
        self.last = now
        wire = net.wan.delivered()[1]
        dt = net.now - self.t
        rate = (wire - self.wire) * 8 / dt if dt > 0 else 0.0
        self.t, self.wire = net.now, wire
        bw = f" of {self.bw_bps / 1000:g}" if self.bw_bps else ""
        print(f"  {self.mode}: t={net.now:.1f} s: {net.ok}/{self.phones} done, {net.failed} "
              f"failed, {self.phones - net.ok - net.failed} waiting, {net.serving} sharing; "
              f"WAN TFTP {rate / 1000:.0f}{bw} kbit/s; {net.events:,} events",
              file=self.out, flush=True)
