"""What a phone's screen shows right now, as a small dict: the file it is on, its bytes, its
role for that file, and whether it shares (the PFS icon). Drivers (the agent, the simulator)
turn changes into ``status`` events for the live view; :class:`StatusFilter` keeps those few.

Reads a sans-I/O :class:`~pfslab.protocol.phone.Phone`; imports nothing heavy (the agent
loads it for 1000 phones).
"""
from __future__ import annotations

from ..protocol import phone as ph
from ..protocol.states import DONE_STATES, State

#: a session's state -> the role the screen shows for that file
ROLE_OF_STATE = {State.NEW: "listen", State.LISTENING: "listen", State.TENTATIVE: "claim",
                 State.YIELDED: "claim", State.ROOT_WAITING: "root",
                 State.ROOT_FETCHING: "root", State.ROOT_COMPLETE: "root",
                 State.JOINING: "child", State.CHILD: "child", State.FALLBACK: "fallback",
                 State.COMPLETE: "done", State.FAILED: "failed"}


def _role(p: "ph.Phone", s: "ph.Session") -> str:
    if not p.pfs:
        return "tftp"
    if s.is_root:
        return "root"
    if s.children and s.state not in DONE_STATES:
        return "parent"
    return ROLE_OF_STATE.get(s.state, "listen")


def phone_status(p: "ph.Phone", tftp: tuple[str, int, int | None] | None = None) -> dict:
    """The screen of one phone (``via``: "tftp" or "peer" while bytes come in).
    ``tftp``: (file, bytes so far, size or None) of the TFTP transfer under way, which only
    the driver sees."""
    sharing = any(sid in p.streams and not p.streams[sid].done
                  for s in p.sessions.values() for sid in s.children)
    files = len(p.installed)
    of = len(p.load.components) + 1 if p.load is not None else None
    st = {"file": None, "role": "config", "got": 0, "size": None, "via": None,
          "pfs": sharing, "files": files, "of": of}
    if p.completed is not None:
        st["role"] = "done" if p.completed.ok else "failed"
        return st
    if p.tftp_busy is not None:
        s = p.sessions.get(p.tftp_busy)
        st["file"] = p.tftp_busy
        st["role"] = "config" if s is None else _role(p, s)
        st["via"] = "tftp"
        if tftp and tftp[0] == p.tftp_busy:
            st["got"], st["size"] = tftp[1], tftp[2]
        return st
    for stream in p.streams.values():
        if stream.up and not stream.done and stream.file in p.sessions:
            st.update(file=stream.file, role=_role(p, p.sessions[stream.file]), via="peer",
                      got=stream.got, size=stream.size if stream.size >= 0 else None)
            return st
    for s in p.sessions.values():
        if s.state not in DONE_STATES:
            st.update(file=s.file, role=_role(p, s))
            return st
    return st


class StatusFilter:
    """Passes a phone's status on when its file, role or sharing changes, or its bytes moved
    and ``every`` seconds went by since the last one passed."""

    def __init__(self, every: float = 0.5):
        self.every = every
        self.last: dict | None = None
        self.last_t = -1e9

    def update(self, st: dict, now: float) -> dict | None:
        last = self.last
        if last is not None:
            same = all(st[k] == last[k] for k in ("file", "role", "pfs", "files"))
            if same and (st["got"] == last["got"] or now - self.last_t < self.every):
                return None
        self.last, self.last_t = st, now
        return st


def status_event(name: str, st: dict, now: float) -> dict:
    return {"event": "status", "phone": name, "t": round(now, 3), **st}
