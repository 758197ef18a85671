"""The simulator's phones as live-view events, in virtual time: ``SimNet.on_drain`` calls a
:class:`SimFeed` after each input a phone takes, and it turns what changed into the same
events the lab's agent sends (``status``, ``installed``, ``completed``)."""
from __future__ import annotations

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
