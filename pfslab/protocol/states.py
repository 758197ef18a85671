"""The phone's per-file state machine, as data: states, timers, events and the transitions.

:class:`pfslab.protocol.phone.Phone` dispatches on these tables (``{(State, Timer): handler}``
and ``{MsgType: handler}``), and every state change it makes must be one of
:data:`TRANSITIONS`. docs/protocol.md draws the same table, and a test holds the two equal.
"""
from __future__ import annotations

import enum

from .codec import MsgType


class State(str, enum.Enum):
    """One file's PFS state on one phone. Being root is a state (ROOT_*), not a flag."""
    NEW = "NEW"                      # the session exists; nothing decided yet
    LISTENING = "LISTENING"          # listening before its own claim
    TENTATIVE = "TENTATIVE"          # claiming: offer and ads
    YIELDED = "YIELDED"              # heard a stronger claim; waiting for its ROOT
    ROOT_WAITING = "ROOT_WAITING"    # confirmed root: children join before the TFTP fetch
    ROOT_FETCHING = "ROOT_FETCHING"  # root: fetching the file from HQ
    ROOT_COMPLETE = "ROOT_COMPLETE"  # root: holds the verified file, serves and places
    JOINING = "JOINING"              # asked a root for a place
    CHILD = "CHILD"                  # connected to a parent, waiting for the file
    FALLBACK = "FALLBACK"            # fetching the file from HQ itself (TFTP)
    COMPLETE = "COMPLETE"            # holds the verified file (not a root)
    FAILED = "FAILED"                # gave up on the file: the upgrade failed

    def __str__(self) -> str:
        return self.value


ROOT_STATES = frozenset({State.ROOT_WAITING, State.ROOT_FETCHING, State.ROOT_COMPLETE})
DONE_STATES = frozenset({State.COMPLETE, State.ROOT_COMPLETE, State.FAILED})


class Timer(str, enum.Enum):
    """Per-session timer kinds (docs/protocol.md, "Timers and rules")."""
    LISTEN = "LISTEN"        # LISTENING: time to claim
    ELECT = "ELECT"          # TENTATIVE: next ad, or confirm after the last
    YIELD = "YIELD"          # YIELDED: no ROOT came
    ANNOUNCE = "ANNOUNCE"    # root: re-broadcast ROOT
    XFR = "XFR"              # ROOT_WAITING: time to fetch
    JOIN = "JOIN"            # JOINING: JOIN unanswered
    SILENCE = "SILENCE"      # CHILD: nothing from the parent for PARENT_SILENCE (the
                             # driver's Watch on the stream: Phone.on_stream_silent)
    BUDGET = "BUDGET"        # CHILD: the file did not come within the progress budget
    DEADLINE = "DEADLINE"    # not a root: the file's whole PFS wait is over: fall back
    IDLE = "IDLE"            # phone-wide: close accepted connections that sent no REQUEST

    def __str__(self) -> str:
        return self.value


class Event(str, enum.Enum):
    """Inputs other than timers and datagrams that change a session's state."""
    BEGIN = "BEGIN"              # the phone reached this file of its load
    PARENT_LOST = "PARENT_LOST"  # the parent's stream closed, aborted or broke the protocol
    BAD_FILE = "BAD_FILE"        # the bytes from the parent failed verification
    FILE_OK = "FILE_OK"          # the file arrived and verified (from a parent or TFTP)
    TFTP_FAILED = "TFTP_FAILED"  # the TFTP fetch failed its last try

    def __str__(self) -> str:
        return self.value


S, T, E, M = State, Timer, Event, MsgType

#: Every state change a session may make: (from, what happened, to). Self-loops (another ad,
#: another HOLD) are not changes and are not listed.
TRANSITIONS: frozenset[tuple[State, object, State]] = frozenset({
    (S.NEW, E.BEGIN, S.LISTENING),              # PFS on: listen before claiming
    (S.NEW, E.BEGIN, S.JOINING),                # a ROOT for this file was heard recently
    (S.NEW, E.BEGIN, S.FALLBACK),               # PFS off: traditional upgrade
    (S.LISTENING, T.LISTEN, S.TENTATIVE),       # nothing stronger heard: claim
    (S.LISTENING, M.CLAIM, S.YIELDED),          # a stronger claim
    (S.TENTATIVE, M.CLAIM, S.YIELDED),
    (S.LISTENING, M.ROOT, S.JOINING),           # a root exists: join it
    (S.TENTATIVE, M.ROOT, S.JOINING),
    (S.YIELDED, M.ROOT, S.JOINING),
    (S.YIELDED, T.YIELD, S.LISTENING),          # no ROOT came: claim again
    (S.YIELDED, T.YIELD, S.FALLBACK),           # ... MAX_ATTEMPTS times
    (S.TENTATIVE, T.ELECT, S.ROOT_WAITING),     # the 4th ad timed out: confirmed root
    (S.ROOT_WAITING, M.ROOT, S.JOINING),        # a stronger root, and no members: demote
    (S.ROOT_WAITING, T.XFR, S.ROOT_FETCHING),
    (S.ROOT_FETCHING, E.FILE_OK, S.ROOT_COMPLETE),
    (S.ROOT_FETCHING, E.TFTP_FAILED, S.FAILED),
    (S.JOINING, M.OFFER, S.CHILD),
    (S.JOINING, T.JOIN, S.LISTENING),           # JOIN unanswered JOIN_TRIES times: shun it
    (S.JOINING, M.REFUSE, S.LISTENING),         # listen again: find the root that is
    (S.JOINING, T.JOIN, S.FALLBACK),            # ... after MAX_ATTEMPTS re-listens
    (S.JOINING, M.REFUSE, S.FALLBACK),
    (S.CHILD, E.FILE_OK, S.COMPLETE),
    (S.CHILD, E.PARENT_LOST, S.JOINING),        # rejoin, naming the lost parent
    (S.CHILD, T.SILENCE, S.JOINING),
    (S.CHILD, E.PARENT_LOST, S.FALLBACK),       # lost the root, or MAX_REJOINS parents
    (S.CHILD, T.SILENCE, S.FALLBACK),
    (S.CHILD, T.BUDGET, S.JOINING),             # the file did not come within its budget
    (S.CHILD, T.BUDGET, S.FALLBACK),
    (S.CHILD, E.BAD_FILE, S.JOINING),           # distrust that parent, rejoin naming it
    (S.CHILD, E.BAD_FILE, S.FALLBACK),
    (S.CHILD, E.PARENT_LOST, S.LISTENING),      # the root itself is lost: elect a new one
    (S.CHILD, T.SILENCE, S.LISTENING),
    (S.CHILD, T.BUDGET, S.LISTENING),
    (S.CHILD, E.BAD_FILE, S.LISTENING),
    (S.FALLBACK, E.FILE_OK, S.COMPLETE),
    (S.LISTENING, T.DEADLINE, S.FALLBACK),      # DEADLINE: PFS had its time for this file
    (S.TENTATIVE, T.DEADLINE, S.FALLBACK),
    (S.YIELDED, T.DEADLINE, S.FALLBACK),
    (S.JOINING, T.DEADLINE, S.FALLBACK),
    (S.CHILD, T.DEADLINE, S.FALLBACK),
    (S.FALLBACK, E.TFTP_FAILED, S.FAILED),
})


def event_name(ev) -> str:
    """How docs/protocol.md names an event: ``timer LISTEN``, ``rx CLAIM``, ``FILE_OK``."""
    if isinstance(ev, Timer):
        return f"timer {ev.value}"
    if isinstance(ev, MsgType):
        return f"rx {ev.name}"
    return ev.value
