"""A phone's DLoad lines as UDP syslog (RFC 3164) to the ``<logServer>`` of its config, the
"Peer Firmware Sharing Log Server" of Cisco's guides. The message is
``<PRI>Mmm dd hh:mm:ss <phone name> <the DLoad line as in the phone's own log>``.
"""
from __future__ import annotations

import socket
import time

from ..protocol.logs import LogRecord

FACILITY = 23                                   # local7
SEVERITY = {"ERR": 3, "WRN": 4, "NOT": 5, "INF": 6, "DBG": 7}


def syslog_message(rec: LogRecord, line: str, host: str, epoch: float) -> bytes:
    tm = time.gmtime(epoch + rec.t)
    stamp = time.strftime("%b ", tm) + f"{tm.tm_mday:2d}" + time.strftime(" %H:%M:%S", tm)
    pri = FACILITY * 8 + SEVERITY.get(rec.level, 6)
    return f"<{pri}>{stamp} {host} {line}".encode("utf-8", "replace")[:8000]


class SyslogSender:
    """One phone's sender: a UDP socket (made by ``open_socket``) used for every line."""

    def __init__(self, target: str, host: str, open_socket):
        addr, _, port = target.partition(":")
        self.dest = (addr, int(port or 514))
        self.host = host
        self.sock: socket.socket | None = open_socket()

    def send(self, rec: LogRecord, line: str, epoch: float) -> None:
        if self.sock is None:
            return
        try:
            self.sock.sendto(syslog_message(rec, line, self.host, epoch), self.dest)
        except OSError:
            pass                      # syslog is best effort, as on a real phone

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
