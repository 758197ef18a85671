"""A small asyncio TFTP client: read requests only (what a phone does).

- RFC 1350 lock-step transfers, with the server's transfer ID (TID) port change;
- RFC 2347 option negotiation with ``blksize`` (RFC 2348), ``tsize`` and ``timeout``
  (RFC 2349). With no OACK (the server ignored the options) the transfer goes on in plain
  RFC 1350 512-byte blocks; an ERROR 0/4/8 in answer to the options makes the client ask again
  without options;
- block numbers wrap past 65535 (to 0, as tftpd-hpa and atftpd do; a server that wraps to 1 is
  followed too).

Three layers, so that each can be tested on its own (the simulator models TFTP itself):

1. packet codec: small pure functions (:func:`encode_rrq`, :func:`decode`, ...). Decoding
   untrusted bytes raises :class:`TftpPacketError` and nothing else;
2. :class:`ReadTransfer`: a sans-I/O state machine. Datagrams and timer expiries in (with the
   time ``now``), datagrams to send out, plus ``deadline``, ``done``, ``error``;
3. :func:`tftp_get`: the asyncio driver. It uses ``loop.add_reader`` on the caller's socket and
   one lazily re-armed timer, so no task and no future per packet: hundreds of transfers share
   one event loop cheaply.

Plain ``struct`` only: the phone agent must stay light (no Scapy).
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from dataclasses import dataclass, field
from typing import Callable, Union

__all__ = [
    "TftpError", "TftpPacketError", "Opcode", "ErrorCode",
    "Rrq", "Wrq", "Data", "Ack", "Error", "Oack", "Packet",
    "encode_rrq", "encode_wrq", "encode_data", "encode_ack", "encode_error", "encode_oack",
    "decode", "ReadTransfer", "ServerReach", "tftp_get",
    "DEFAULT_BLKSIZE", "MIN_BLKSIZE", "MAX_BLKSIZE",
]

DEFAULT_BLKSIZE = 512      # RFC 1350
MIN_BLKSIZE = 8            # RFC 2348
MAX_BLKSIZE = 65464        # RFC 2348
MAX_PACKET = 65536         # receive buffer: 4 + 65464 fits


#: A retransmission timeout grows, without progress, up to this many times the base timeout.
#: 4 x 1 s: a server that comes back is heard from within about 4 s.
MAX_BACKOFF = 4
#: Mid-transfer, after this many unanswered retransmissions the client also sends its RRQ
#: again (a probe): a server that restarted has forgotten the transfer, and answers the RRQ
#: with a new one, which the client takes (it restarts from block 1).
PROBE_AFTER = 3
#: Retransmissions of a transfer that starts while the server has been silent to the last
#: one (:class:`ServerReach`): the phone learns faster that HQ is unreachable.
QUICK_RETRIES = 3


class Opcode:
    RRQ = 1
    WRQ = 2
    DATA = 3
    ACK = 4
    ERROR = 5
    OACK = 6


class ErrorCode:
    NOT_DEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TID = 5
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_REFUSED = 8    # RFC 2347


class TftpError(Exception):
    """A transfer failed: timeout, an ERROR from the server, or a bad packet.

    ``code`` and ``server_message`` are set when the server sent an ERROR packet.
    """

    def __init__(self, message: str, *, code: int | None = None,
                 server_message: str | None = None):
        super().__init__(message)
        self.code = code
        self.server_message = server_message


class TftpPacketError(TftpError):
    """Bytes that are not a valid TFTP packet."""


# ---------------------------------------------------------------------------------------------
# Packets

@dataclass(frozen=True)
class Rrq:
    filename: str
    mode: str = "octet"
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Wrq:
    filename: str
    mode: str = "octet"
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Data:
    block: int
    payload: bytes


@dataclass(frozen=True)
class Ack:
    block: int


@dataclass(frozen=True)
class Error:
    code: int
    message: str


@dataclass(frozen=True)
class Oack:
    options: dict[str, str]


Packet = Union[Rrq, Wrq, Data, Ack, Error, Oack]

_H = struct.Struct("!H")
_HH = struct.Struct("!HH")


def _cstr(s: str, what: str) -> bytes:
    b = s.encode("utf-8")
    if b"\0" in b:
        raise ValueError(f"TFTP {what} must not contain NUL: {s!r}")
    return b + b"\0"


def _request(opcode: int, filename: str, mode: str, options: dict[str, object] | None) -> bytes:
    if not filename:
        raise ValueError("TFTP filename is empty")
    parts = [_H.pack(opcode), _cstr(filename, "filename"), _cstr(mode, "mode")]
    for k, v in (options or {}).items():
        parts.append(_cstr(str(k), "option name"))
        parts.append(_cstr(str(v), "option value"))
    return b"".join(parts)


def encode_rrq(filename: str, mode: str = "octet", options: dict[str, object] | None = None) -> bytes:
    """RRQ: ``01 filename\\0 mode\\0 [opt\\0 value\\0]...`` (options per RFC 2347)."""
    return _request(Opcode.RRQ, filename, mode, options)


def encode_wrq(filename: str, mode: str = "octet", options: dict[str, object] | None = None) -> bytes:
    return _request(Opcode.WRQ, filename, mode, options)


def _check_block(block: int) -> None:
    if not 0 <= block <= 0xFFFF:
        raise ValueError(f"TFTP block number out of range: {block}")


def encode_data(block: int, payload: bytes) -> bytes:
    _check_block(block)
    return _HH.pack(Opcode.DATA, block) + bytes(payload)


def encode_ack(block: int) -> bytes:
    _check_block(block)
    return _HH.pack(Opcode.ACK, block)


def encode_error(code: int, message: str = "") -> bytes:
    if not 0 <= code <= 0xFFFF:
        raise ValueError(f"TFTP error code out of range: {code}")
    return _HH.pack(Opcode.ERROR, code) + message.replace("\0", " ").encode("utf-8", "replace") + b"\0"


def encode_oack(options: dict[str, object]) -> bytes:
    parts = [_H.pack(Opcode.OACK)]
    for k, v in options.items():
        parts.append(_cstr(str(k), "option name"))
        parts.append(_cstr(str(v), "option value"))
    return b"".join(parts)


def _ascii_fields(raw: bytes, what: str) -> list[str]:
    """NUL-terminated ASCII strings; the last one must be terminated."""
    if not raw.endswith(b"\0"):
        raise TftpPacketError(f"{what}: missing NUL terminator")
    try:
        return raw[:-1].decode("ascii").split("\0")
    except UnicodeDecodeError:
        raise TftpPacketError(f"{what}: non-ASCII bytes") from None


def _options(fields: list[str], what: str) -> dict[str, str]:
    if len(fields) % 2:
        raise TftpPacketError(f"{what}: option {fields[-1]!r} has no value")
    opts: dict[str, str] = {}
    for i in range(0, len(fields), 2):
        name = fields[i].lower()   # option names are case-insensitive (RFC 2347)
        if not name:
            raise TftpPacketError(f"{what}: empty option name")
        opts[name] = fields[i + 1]
    return opts


def decode(packet: bytes) -> Packet:
    """Decode one TFTP datagram. Raises :class:`TftpPacketError` (only) on malformed bytes."""
    if len(packet) < 2:
        raise TftpPacketError(f"packet too short ({len(packet)} bytes)")
    op = (packet[0] << 8) | packet[1]
    if op == Opcode.DATA:
        if len(packet) < 4:
            raise TftpPacketError("DATA shorter than 4 bytes")
        return Data((packet[2] << 8) | packet[3], bytes(packet[4:]))
    if op == Opcode.ACK:
        if len(packet) != 4:
            raise TftpPacketError(f"ACK of {len(packet)} bytes (must be 4)")
        return Ack((packet[2] << 8) | packet[3])
    if op == Opcode.ERROR:
        if len(packet) < 4:
            raise TftpPacketError("ERROR shorter than 4 bytes")
        # Be lenient with the text (some servers omit the NUL or send Latin-1): it is shown to
        # a human, never parsed.
        raw = bytes(packet[4:]).split(b"\0", 1)[0]
        return Error((packet[2] << 8) | packet[3], raw.decode("utf-8", "replace"))
    if op == Opcode.OACK:
        if len(packet) == 2:
            return Oack({})   # no option accepted: odd, but harmless (RFC 1350 defaults)
        return Oack(_options(_ascii_fields(bytes(packet[2:]), "OACK"), "OACK"))
    if op in (Opcode.RRQ, Opcode.WRQ):
        what = "RRQ" if op == Opcode.RRQ else "WRQ"
        fields = _ascii_fields(bytes(packet[2:]), what)
        if len(fields) < 2:
            raise TftpPacketError(f"{what}: no mode")
        if not fields[0]:
            raise TftpPacketError(f"{what}: empty filename")
        cls = Rrq if op == Opcode.RRQ else Wrq
        return cls(fields[0], fields[1].lower(), _options(fields[2:], what))
    raise TftpPacketError(f"unknown opcode {op}")


# ---------------------------------------------------------------------------------------------
# The read transfer, sans I/O

Addr = tuple  # (host, port) or an IPv6 4-tuple, as socket.recvfrom gives
Out = list[tuple[bytes, Addr]]

_RETRY_WITHOUT_OPTIONS = {ErrorCode.NOT_DEFINED, ErrorCode.ILLEGAL_OPERATION,
                          ErrorCode.OPTION_REFUSED}


def _same_host(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return ipaddress.ip_address(a.split("%", 1)[0]) == ipaddress.ip_address(b.split("%", 1)[0])
    except ValueError:
        return False


class ReadTransfer:
    """One RRQ transfer as a state machine: no sockets, no clock.

    Call :meth:`start`, then :meth:`datagram_received` for every datagram that arrives on the
    socket and :meth:`timer_expired` once ``now >= deadline``. Each returns the datagrams to
    send as ``[(bytes, addr)]``. Stop when ``done`` (``data`` holds the file) or ``error``
    (a :class:`TftpError`) is set. Never raises on what the network sends.

    Recovery: a server that goes away mid-transfer and comes back. After ``PROBE_AFTER``
    unanswered retransmissions each retransmission also re-sends the RRQ; the old transfer
    resumes if its server answers, else the first answer to the RRQ restarts the transfer
    (``restarts`` counts them; the old TID then gets ERROR 5). Without progress the transfer
    fails after ``retries`` retransmissions (1 s backing off to 4 s: 31 s for 8).
    """

    def __init__(self, server: Addr, filename: str, *, blksize: int = 1428, tsize: bool = True,
                 timeout: float = 1.0, retries: int = 5):
        if not MIN_BLKSIZE <= blksize <= MAX_BLKSIZE:
            raise ValueError(f"blksize must be {MIN_BLKSIZE}..{MAX_BLKSIZE}, not {blksize}")
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.server = tuple(server)
        self.filename = filename
        self.timeout = float(timeout)
        self.retries = retries
        self.options: dict[str, str] = {}
        if blksize != DEFAULT_BLKSIZE:
            self.options["blksize"] = str(blksize)
        if tsize:
            self.options["tsize"] = "0"
        if self.timeout == int(self.timeout) and 1 <= self.timeout <= 255:
            # RFC 2349: whole seconds. Asks the server to retransmit on the same clock as we do.
            self.options["timeout"] = str(int(self.timeout))
        self._rrq = encode_rrq(filename, "octet", self.options)  # ValueError on a bad name
        self.blksize = DEFAULT_BLKSIZE
        self.tsize: int | None = None           # from the OACK, if any
        self.negotiated: dict[str, str] | None = None   # the OACK's options; None: no OACK
        self.used_options = bool(self.options)   # False once we fell back to plain RRQ
        self._refused_by: set = set()
        self.tid: Addr | None = None            # the server's transfer ID (its address)
        self.next_block = 1                     # the next block number, unwrapped
        self._last_wire: int | None = None      # wire number of the last accepted block
        self._chunks: list[bytes] = []
        self.received = 0
        self.data: bytes | None = None
        self.done = False
        self.error: TftpError | None = None
        self.deadline = float("inf")
        self._last: tuple[bytes, Addr] | None = None
        self._tries_left = retries
        self._rto = self.timeout
        self.ignored = 0                        # datagrams dropped as malformed or stale
        self.retransmits = 0
        self.restarts = 0                       # transfers begun again (a server restart)
        self.heard = False                      # any datagram from the server host
        self._silent = 0                        # retransmissions since the last progress

    # -- helpers --
    def _send_new(self, pkt: bytes, addr: Addr, now: float) -> Out:
        self._last = (pkt, addr)
        self._silent = 0
        self._tries_left = self.retries
        self._rto = self.timeout
        self.deadline = now + self.timeout
        return [(pkt, addr)]

    def _fail(self, err: TftpError, reply: bytes | None = None,
              addr: Addr | None = None) -> Out:
        self.error = err
        self.deadline = float("inf")
        return [(reply, addr)] if reply is not None and addr is not None else []

    @property
    def finished(self) -> bool:
        return self.done or self.error is not None

    def _where(self) -> str:
        return f"tftp://{self.server[0]}:{self.server[1]}/{self.filename}"

    # -- inputs --
    def start(self, now: float) -> Out:
        """The first RRQ (with options when any are asked for)."""
        return self._send_new(self._rrq, self.server, now)

    def timer_expired(self, now: float) -> Out:
        if self.finished or now < self.deadline or self._last is None:
            return []
        if self._tries_left <= 0:
            phase = "no answer to the request" if self.tid is None else \
                f"no DATA block {self.next_block} after {self.received} bytes"
            return self._fail(TftpError(
                f"{self._where()}: timeout: {phase} "
                f"({self.retries + 1} tries, from {self.timeout:g} s backing off to "
                f"{self._rto:g} s)"))
        self._tries_left -= 1
        self.retransmits += 1
        # Exponential backoff (up to MAX_BACKOFF x the timeout), reset by any progress: on
        # a congested WAN a lock-step transfer may get less than a block per timeout, and
        # retransmitting at a fixed pace only adds to the congestion.
        self._rto = min(self._rto * 2, self.timeout * MAX_BACKOFF)
        self.deadline = now + self._rto
        self._silent += 1
        if self.tid is not None and self._silent >= PROBE_AFTER:
            return [self._last, (self._rrq, self.server)]       # resume, or restart
        return [self._last]

    @property
    def probing(self) -> bool:
        return self.tid is not None and self._silent >= PROBE_AFTER

    def _restart(self) -> None:
        """Forget the current transfer (its server is gone); the next answer to the RRQ
        starts it again from block 1."""
        self.restarts += 1
        self.tid, self.negotiated, self.tsize = None, None, None
        self.blksize = DEFAULT_BLKSIZE
        self.next_block, self._last_wire = 1, None
        self._chunks, self.received = [], 0

    def datagram_received(self, raw: bytes, addr: Addr, now: float) -> Out:
        if self.finished:
            return []
        try:
            return self._receive(raw, tuple(addr), now)
        except TftpError as e:  # pragma: no cover - _receive reports through _fail
            return self._fail(e)

    def _receive(self, raw: bytes, addr: Addr, now: float) -> Out:
        host, port = addr[0], addr[1]
        from_server = _same_host(host, self.server[0])
        self.heard = self.heard or from_server
        if self.tid is None:
            ok = from_server
        else:
            ok = port == self.tid[1] and _same_host(host, self.tid[0])
        try:
            pkt = decode(raw)
        except TftpPacketError:
            pkt = None
        if not ok and from_server and self.probing and self._answers_rrq(pkt):
            # the server came back without our transfer: take its new one from block 1
            self._restart()
            return self._receive(raw, addr, now)
        if not ok:
            # RFC 1350: a packet from an unknown TID gets ERROR 5, and the transfer goes on.
            # Never answer an ERROR (no error ping-pong).
            self.ignored += 1
            if isinstance(pkt, Error) or (pkt is None and raw[:2] == b"\0\5"):
                return []
            return [(encode_error(ErrorCode.UNKNOWN_TID, "Unknown transfer ID"), addr)]
        if pkt is None:
            # Garbled bytes from the server: drop them; a retransmission will follow.
            self.ignored += 1
            return []
        if isinstance(pkt, Error):
            if self.tid is None and self.used_options and pkt.code in _RETRY_WITHOUT_OPTIONS:
                # The server refused our options: ask again in plain RFC 1350.
                self.used_options = False
                self._refused_by.add(addr)
                self._rrq = encode_rrq(self.filename, "octet")
                return self._send_new(self._rrq, self.server, now)
            if self.tid is None and self.options and not self.used_options and (
                    addr in self._refused_by or pkt.code == ErrorCode.OPTION_REFUSED):
                # A late answer to the request with options (e.g. to its retransmission):
                # a request without options cannot be refused for its options.
                self.ignored += 1
                return []
            return self._fail(TftpError(
                f"{self._where()}: server error {pkt.code}: {pkt.message or '(no message)'}",
                code=pkt.code, server_message=pkt.message))
        if self.tid is None:
            if isinstance(pkt, Oack):
                if not self.used_options:
                    if self.options:          # late answer to the request with options
                        self.ignored += 1
                        return []
                    return self._illegal(addr, "OACK to a request without options")
                return self._oack(pkt, addr, now)
            if isinstance(pkt, Data):
                # No OACK: the server ignored the options. Plain RFC 1350, 512-byte blocks.
                self.tid = addr
                self.blksize = DEFAULT_BLKSIZE
                return self._data(pkt, addr, now)
            return self._illegal(addr, f"unexpected {type(pkt).__name__} in answer to RRQ")
        if isinstance(pkt, Data):
            return self._data(pkt, addr, now)
        if isinstance(pkt, Oack):
            if self.negotiated is not None and self._last_wire is None:
                # A retransmitted OACK: our ACK 0 was lost.
                self.retransmits += 1
                return [(encode_ack(0), addr)]
            self.ignored += 1
            return []
        return self._illegal(addr, f"unexpected {type(pkt).__name__} during a read")

    def _answers_rrq(self, pkt: Packet | None) -> bool:
        """Could ``pkt`` open a transfer in answer to our RRQ?"""
        if isinstance(pkt, Oack):
            return self.used_options
        if isinstance(pkt, Data):
            return pkt.block == 1
        return isinstance(pkt, Error) and pkt.code != ErrorCode.UNKNOWN_TID

    def _illegal(self, addr: Addr, why: str) -> Out:
        return self._fail(TftpError(f"{self._where()}: bad packet: {why}"),
                          encode_error(ErrorCode.ILLEGAL_OPERATION, why), addr)

    def _refuse(self, addr: Addr, why: str) -> Out:
        return self._fail(TftpError(f"{self._where()}: bad OACK: {why}"),
                          encode_error(ErrorCode.OPTION_REFUSED, why), addr)

    def _oack(self, pkt: Oack, addr: Addr, now: float) -> Out:
        opts = pkt.options
        for name in opts:
            if name not in self.options:
                return self._refuse(addr, f"option {name!r} was not requested")
        blksize = DEFAULT_BLKSIZE
        if "blksize" in opts:
            try:
                blksize = int(opts["blksize"])
            except ValueError:
                return self._refuse(addr, f"blksize {opts['blksize']!r} is not a number")
            if not MIN_BLKSIZE <= blksize <= int(self.options["blksize"]):
                return self._refuse(addr, f"blksize {blksize} is outside "
                                          f"{MIN_BLKSIZE}..{self.options['blksize']}")
        if "tsize" in opts:
            try:
                tsize = int(opts["tsize"])
            except ValueError:
                return self._refuse(addr, f"tsize {opts['tsize']!r} is not a number")
            if tsize < 0:
                return self._refuse(addr, f"negative tsize {tsize}")
            self.tsize = tsize
        if "timeout" in opts and opts["timeout"] != self.options["timeout"]:
            return self._refuse(addr, f"timeout {opts['timeout']!r} differs from the "
                                      f"{self.options['timeout']} asked for")
        self.tid = addr
        self.blksize = blksize
        self.negotiated = dict(opts)
        return self._send_new(encode_ack(0), addr, now)

    def _data(self, pkt: Data, addr: Addr, now: float) -> Out:
        expect_wire = self.next_block & 0xFFFF
        wire = pkt.block
        if wire != expect_wire and self.next_block > 0xFFFF and expect_wire == 0 and wire == 1:
            # This server wraps 65535 -> 1 instead of 0.
            self.next_block += 1
            expect_wire = 1
        if wire != expect_wire:
            if self._last_wire is not None and wire == self._last_wire:
                # A duplicate: our ACK was lost, or the server retransmitted early. Re-ACK it
                # (without re-arming our own retransmission: that would make duplicates breed).
                self.retransmits += 1
                return [(encode_ack(wire), addr)]
            self.ignored += 1                      # stale or from the future: drop
            return []
        n = len(pkt.payload)
        if n > self.blksize:
            return self._illegal(addr, f"DATA block {wire} has {n} bytes, "
                                       f"more than the block size {self.blksize}")
        if self.tsize is not None and self.received + n > self.tsize:
            return self._fail(TftpError(
                f"{self._where()}: more data than the announced tsize {self.tsize}"),
                encode_error(ErrorCode.ILLEGAL_OPERATION, "more data than tsize"), addr)
        if n:
            self._chunks.append(pkt.payload)
            self.received += n
        self._last_wire = wire
        self.next_block += 1
        out = self._send_new(encode_ack(wire), addr, now)
        if n < self.blksize:
            if self.tsize is not None and self.received != self.tsize:
                self.error = TftpError(
                    f"{self._where()}: got {self.received} bytes, but tsize said {self.tsize}")
                self.deadline = float("inf")
                return out
            self.data = b"".join(self._chunks)
            self._chunks = []
            self.done = True
            self.deadline = float("inf")
        return out


# ---------------------------------------------------------------------------------------------
# The asyncio driver

async def _resolve(loop: asyncio.AbstractEventLoop, sock: socket.socket, server: str,
                   port: int) -> Addr:
    try:
        ipaddress.ip_address(server.split("%", 1)[0])
        if sock.family == socket.AF_INET6 and ":" not in server:
            return ("::ffff:" + server, port, 0, 0)
        return (server, port) if sock.family == socket.AF_INET else (server, port, 0, 0)
    except ValueError:
        pass
    try:
        infos = await loop.getaddrinfo(server, port, family=sock.family, type=socket.SOCK_DGRAM)
    except OSError as e:
        raise TftpError(f"tftp://{server}:{port}: cannot resolve the server: {e}") from None
    return infos[0][4]


class ServerReach:
    """What one client remembers of its server between transfers: was it silent to the last
    one? Then the next transfer gives up after ``QUICK_RETRIES`` retransmissions (11 s, not
    31 s), so a phone cut off from HQ fails its files in bounded time (docs/protocol.md)."""

    __slots__ = ("silent",)

    def __init__(self):
        self.silent = False

    def retries(self, retries: int) -> int:
        return min(retries, QUICK_RETRIES) if self.silent else retries


async def tftp_get(sock: socket.socket, server: str, filename: str, *, blksize: int = 1428,
                   tsize: bool = True, timeout: float = 1.0, retries: int = 5, port: int = 69,
                   progress: Callable[[int, int | None], None] | None = None,
                   reach: ServerReach | None = None) -> bytes:
    """Download ``filename`` from ``server:port`` over the UDP socket ``sock``; return its bytes.

    ``sock`` is an unconnected UDP socket (e.g. from :func:`pfslab.agent.netns.udp_socket`,
    made in the phone's namespace); it is set non-blocking, used only for the duration of the
    call and never closed. Only one transfer at a time may use a socket.

    ``timeout`` is the retransmission timeout in seconds, ``retries`` the retransmissions of
    one packet before giving up. ``progress(received_bytes, tsize_or_None)`` is called after
    every new block. ``reach``: the caller's memory of this server (:class:`ServerReach`),
    updated here. Raises :class:`TftpError` on failure.
    """
    loop = asyncio.get_running_loop()
    addr = await _resolve(loop, sock, server, port)
    xfer = ReadTransfer(addr, filename, blksize=blksize, tsize=tsize, timeout=timeout,
                        retries=reach.retries(retries) if reach else retries)
    sock.setblocking(False)
    fd = sock.fileno()
    fut: asyncio.Future[bytes] = loop.create_future()
    timer: asyncio.TimerHandle | None = None
    armed_for = float("inf")

    def finish() -> None:
        if fut.done():
            return
        if xfer.error is not None:
            fut.set_exception(xfer.error)
        elif xfer.done:
            fut.set_result(xfer.data)  # type: ignore[arg-type]

    def fail(exc: BaseException) -> None:
        if not fut.done():
            fut.set_exception(exc)

    def send(out: Out) -> bool:
        for pkt, dst in out:
            try:
                sock.sendto(pkt, dst)
            except (BlockingIOError, InterruptedError):
                pass          # a full send buffer is a lost packet: the timer will resend it
            except OSError as e:
                fail(TftpError(f"{xfer._where()}: cannot send: {e}"))
                return False
        return True

    def arm() -> None:
        # One timer per transfer, moved only when it fires: deadlines only ever move later,
        # so a timer that fires early just re-arms itself for the current deadline.
        nonlocal timer, armed_for
        if fut.done() or xfer.finished:
            return
        if timer is None or xfer.deadline < armed_for:
            if timer is not None:
                timer.cancel()
            armed_for = xfer.deadline
            timer = loop.call_at(armed_for, on_timer)

    def on_timer() -> None:
        nonlocal timer, armed_for
        timer, armed_for = None, float("inf")
        if fut.done():
            return
        now = loop.time()
        if now >= xfer.deadline:
            if not send(xfer.timer_expired(now)):
                return
        finish()
        arm()

    def on_readable() -> None:
        if fut.done():
            return
        before = xfer.received
        try:
            for _ in range(64):   # a bounded batch, to stay fair to the other transfers
                try:
                    raw, src = sock.recvfrom(MAX_PACKET)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as e:
                    fail(TftpError(f"{xfer._where()}: receive failed: {e}"))
                    return
                if not send(xfer.datagram_received(raw, src, loop.time())):
                    return
                if xfer.finished:
                    break
            if progress is not None and xfer.received != before:
                progress(xfer.received, xfer.tsize)
        except Exception as e:  # a progress callback that raised: the caller sees it
            fail(e)
            return
        finish()
        arm()

    loop.add_reader(fd, on_readable)
    try:
        if send(xfer.start(loop.time())):
            arm()
        return await fut
    finally:
        if reach is not None and not fut.cancelled():
            reach.silent = not xfer.heard
        loop.remove_reader(fd)
        if timer is not None:
            timer.cancel()
