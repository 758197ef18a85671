"""DLoad-style console log records, as Cisco phones print them (see the tech note's log).

The state machines emit :class:`LogRecord` with a time relative to the phone's start; the
I/O layer renders them with :func:`render` against a wall-clock epoch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class LogRecord:
    t: float      # seconds, on the clock the state machine was given
    level: str    # DBG, NOT, INF, WRN, ERR
    text: str


def clock(t: float) -> str:
    """``HH:MM:SS.ffffff`` (UTC) for an absolute time in seconds."""
    whole = int(t // 1)
    micros = int(round((t - whole) * 1e6))
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    return time.strftime("%H:%M:%S", time.gmtime(whole)) + f".{micros:06d}"


def render(rec: LogRecord, epoch: float = 0.0) -> str:
    """One console line: ``NOT 02:19:22.634945 DLoad: ^.idl_child.c-openUDPPort``."""
    return f"{rec.level} {clock(epoch + rec.t)} DLoad: {rec.text}"


def xid(x: int) -> str:
    return f"XID{x:08X}"
