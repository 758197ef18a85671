"""CPPDP and TFTP straight from a capture's bytes, without Scapy: what ``pfslab decode``
reads most frames with (pfslab.dissect.decode), and the format rules every reader shares.

- :func:`udp_problem`, :func:`frame_problem`: why the bytes of one datagram / one TCP frame
  break the wire format of docs/protocol.md, or None. Written apart from the agent codec on
  purpose (a second reading of the spec); tests check that both agree on what is malformed.
- :class:`Stream`: one direction of a TCP 4051 connection, cut into frames by their length.
- :func:`ether_l4`: an Ethernet frame's IPv4 UDP or TCP header and payload, read at fixed
  offsets, or :data:`FALLBACK` when the frame is anything but plain (a VLAN tag, a fragment,
  IPv6, lengths that disagree, ...): those few go to Scapy, so that both readers give the
  same answer (tests/test_decode_fast.py checks it frame by frame).

Nothing here raises on hostile bytes.
"""
from __future__ import annotations

import socket
import struct
from typing import Iterator, NamedTuple, Optional

PORT = 4051
MAGIC = b"CPDP"
VERSION = 1
HEADER_LEN = 24          # UDP datagram header
FRAME_HEADER_LEN = 10    # TCP frame header
MAX_NAME = 64
MAX_FRAME = 65536

MSG_TYPES = {1: "CLAIM", 2: "ROOT", 3: "JOIN", 4: "OFFER", 5: "REFUSE", 6: "READY"}
FRAME_TYPES = {0x11: "REQUEST", 0x12: "HOLD", 0x13: "HEADER", 0x14: "DATA", 0x15: "END",
               0x16: "ABORT"}
REFUSE_REASONS = {1: "FULL", 2: "NOT_ROOT", 3: "UNKNOWN", 4: "MAP_MISMATCH"}
ABORT_REASONS = {1: "FULL", 2: "UNKNOWN", 3: "UPSTREAM", 4: "BAD_DIGEST", 5: "SHUTDOWN",
                 6: "PROTOCOL"}
READY_SOURCES = {0: "TFTP", 1: "peer"}
#: UDP body length by message type.
BODY_LEN = {1: 1, 2: 4, 3: 4, 4: 6, 5: 1, 6: 5}
#: TCP payload length by frame type, for the fixed-size kinds.
FRAME_FIXED = {0x12: 8, 0x13: 36, 0x15: 0}

_H = struct.Struct("!H").unpack_from
_I = struct.Struct("!I").unpack_from


def _printable(b: bytes) -> bool:
    return all(0x20 < c < 0x7F for c in b)


# ----------------------------------------------------------------------------- validation

def _head_problem(b: bytes, size: int, kinds: dict, unknown: str) -> Optional[str]:
    """What is wrong with the part both headers share: size, magic, version and kind."""
    if len(b) < size:
        return f"truncated: {len(b)} bytes < {size}-byte header"
    if b[:4] != MAGIC:
        return "bad magic"
    if b[4] != VERSION:
        return f"unsupported version {b[4]}"
    if b[5] not in kinds:
        return unknown.format(b[5])
    return None


def udp_problem(b: bytes) -> Optional[str]:
    """Why the datagram ``b`` is malformed, or None if it is a valid CPPDP datagram."""
    bad = _head_problem(b, HEADER_LEN, MSG_TYPES, "unknown message type {}")
    if bad:
        return bad
    length = _H(b, 6)[0]
    if length != len(b):
        return f"length field {length} != datagram size {len(b)}"
    off = HEADER_LEN
    for what in ("model", "file"):
        if off >= len(b):
            return f"truncated in {what}"
        n = b[off]
        raw = b[off + 1:off + 1 + n]
        if n > MAX_NAME or len(raw) != n:
            return f"bad {what} length {n}"
        if not _printable(raw):
            return f"{what} is not printable ASCII"
        off += 1 + n
    want = BODY_LEN[b[5]]
    if len(b) - off != want:
        return f"{MSG_TYPES[b[5]]} body is {len(b) - off} bytes, expected {want}"
    return None


def frame_problem(b: bytes) -> Optional[str]:
    """Why the TCP frame ``b`` (exactly one frame) is malformed, or None."""
    bad = _head_problem(b, FRAME_HEADER_LEN, FRAME_TYPES, "unknown frame type {:#x}")
    if bad:
        return bad
    t = b[5]
    n = _I(b, 6)[0]
    if n > MAX_FRAME:
        return f"frame payload {n} > {MAX_FRAME}"
    p = b[FRAME_HEADER_LEN:]
    if len(p) < n:
        return f"truncated: payload {len(p)} of {n} bytes"
    if len(p) > n:
        return f"{len(p) - n} bytes beyond the frame length"
    if t in FRAME_FIXED and n != FRAME_FIXED[t]:
        return f"{FRAME_TYPES[t]} payload is {n} bytes, expected {FRAME_FIXED[t]}"
    if t == 0x11:  # REQUEST
        off = 4
        for what in ("model", "file"):
            if off >= len(p):
                return f"REQUEST truncated in {what}"
            k = p[off]
            raw = p[off + 1:off + 1 + k]
            if k > MAX_NAME or len(raw) != k or not _printable(raw):
                return f"REQUEST has a bad {what}"
            off += 1 + k
        if off != len(p):
            return "REQUEST has trailing bytes"
    elif t == 0x16:  # ABORT
        if len(p) < 2 or p[1] != len(p) - 2 or p[1] > MAX_NAME:
            return "ABORT has a bad length"
    return None


# ----------------------------------------------------------------------------- fields

_HDR = struct.Struct("!IIII").unpack_from
_i = struct.Struct("!i").unpack_from


def udp_fields(b: bytes) -> dict:
    """The fields of a valid datagram (:func:`udp_problem` None), named and typed as the
    Scapy layer's (pfslab.dissect.scapy_cppdp.CPPDP): names as bytes, addresses as text."""
    xid, strength, lmap, h = _HDR(b, 8)
    o = 25 + b[24]
    e = o + 1 + b[o]
    d = {"type": b[5], "version": b[4], "length": _H(b, 6)[0], "xid": xid,
         "strength": strength, "map": lmap, "hash": h, "model": b[25:o], "file": b[o + 1:e]}
    t = b[5]
    if t == 1:
        d["ad"] = b[e]
    elif t == 2:
        d["server"] = ip_str(b[e:e + 4])
    elif t == 3:
        d["lost_parent"] = ip_str(b[e:e + 4])
    elif t == 4:
        d.update(parent=ip_str(b[e:e + 4]), slot=b[e + 4], depth=b[e + 5])
    elif t == 5:
        d["reason"] = b[e]
    elif t == 6:
        d.update(source=b[e], size=_i(b, e + 1)[0])
    return d


def frame_fields(b: bytes) -> dict:
    """The fields of a valid frame (:func:`frame_problem` None), as the Scapy layer's
    (pfslab.dissect.scapy_cppdp.CPPDPFrame)."""
    t = b[5]
    d = {"type": t, "version": b[4], "length": _I(b, 6)[0]}
    if t == 0x11:
        o = 15 + b[14]
        d.update(xid=_I(b, 10)[0], model=b[15:o], file=b[o + 1:o + 1 + b[o]])
    elif t == 0x12:
        d.update(have=_i(b, 10)[0], total=_i(b, 14)[0])
    elif t == 0x13:
        d.update(size=_i(b, 10)[0], sha256=b[14:46])
    elif t == 0x14:
        d["data"] = b[10:]
    elif t == 0x16:
        d.update(reason=b[10], text=b[12:12 + b[11]])
    return d


class WireRecord(NamedTuple):
    """One message as :func:`pfslab.dissect.decode.iter_messages` gives it."""
    time: float
    src: str          # "ip:port"
    dst: str
    proto: str        # "udp" or "tcp"
    decoded: "Message"


class Message:
    """One port-4051 datagram or frame as read from the wire, with the attributes of the
    Scapy layers (``type``, ``model``, ``parent``, ...; ``getfieldval``) and
    :meth:`malformed`; reading a field of a malformed message raises AttributeError."""
    __slots__ = ("proto", "raw", "foreign", "_fields")

    def __init__(self, proto: str, raw: bytes, foreign: bool = False):
        self.proto, self.raw, self.foreign, self._fields = proto, raw, foreign, None

    def malformed(self) -> Optional[str]:
        if self.foreign or self.raw[:4] != MAGIC:
            return "foreign bytes (no CPDP magic)"
        return (udp_problem if self.proto == "udp" else frame_problem)(self.raw)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if self._fields is None:
            if self.malformed():
                raise AttributeError(f"{name}: a malformed message")
            self._fields = (udp_fields if self.proto == "udp" else frame_fields)(self.raw)
        try:
            return self._fields[name]
        except KeyError:
            raise AttributeError(name) from None

    def getfieldval(self, name):
        return getattr(self, name)

    def _fields_now(self) -> dict:
        """All its fields ({} for a malformed message)."""
        if self.malformed():
            return {}
        return (udp_fields if self.proto == "udp" else frame_fields)(self.raw)


# ----------------------------------------------------------------------------- TCP streams

#: what :meth:`Stream.frames` yields: a whole frame (check it with :func:`frame_problem`),
#: or bytes that are not CPPDP at all (the stream is given up from there)
FRAME, FOREIGN = "frame", "foreign"


class Stream:
    """One direction of one TCP connection: in-order bytes, cut into frames by length."""
    __slots__ = ("next_seq", "buf", "pending", "dead")

    def __init__(self):
        self.next_seq = None
        self.buf = bytearray()
        self.pending = {}   # seq -> bytes, segments that arrived ahead of a gap
        self.dead = False

    def add(self, seq: int, data: bytes) -> None:
        if self.next_seq is None:
            self.next_seq = seq
        if not self.pending and seq == self.next_seq:      # in order: the usual case
            self.buf += data
            self.next_seq = (seq + len(data)) & 0xFFFFFFFF
            return
        self.pending.setdefault(seq, data)
        progressed = True
        while progressed and self.pending:
            progressed = False
            for s in list(self.pending):
                d = self.pending[s]
                off = (self.next_seq - s) & 0xFFFFFFFF
                if off < 0x80000000:          # starts at or before the next byte we need
                    del self.pending[s]
                    if off < len(d):
                        self.buf += d[off:]
                        self.next_seq = (self.next_seq + len(d) - off) & 0xFFFFFFFF
                    progressed = True
        if len(self.pending) > 1024:          # a hole that never fills: give up on it
            self.pending.clear()

    def frames(self) -> Iterator[tuple[str, bytes]]:
        """(FRAME, bytes) for each complete frame at the head of the stream; (FOREIGN, bytes)
        once for bytes without the magic, and (FRAME, header) for a frame that claims more
        than :data:`MAX_FRAME`, after which the stream is dead."""
        while not self.dead and self.buf:
            b = self.buf
            if b[:4] != MAGIC[:len(b[:4])]:
                self.dead = True
                yield FOREIGN, bytes(b)
                b.clear()
                return
            if len(b) < FRAME_HEADER_LEN:
                return
            n = _I(b, 6)[0]
            if n > MAX_FRAME:
                self.dead = True
                yield FRAME, bytes(b[:FRAME_HEADER_LEN])
                b.clear()
                return
            if len(b) < FRAME_HEADER_LEN + n:
                return
            yield FRAME, bytes(b[:FRAME_HEADER_LEN + n])
            del b[:FRAME_HEADER_LEN + n]

    def rest(self) -> Optional[tuple[str, bytes]]:
        """What the stream ends inside of (at FIN or RST), or None: an unfinished frame, or
        (FOREIGN, bytes) when even its magic is cut short."""
        if not self.buf or self.dead:
            return None
        b = bytes(self.buf)
        return (FRAME if b[:4] == MAGIC else FOREIGN), b


class Reassembler:
    """The TCP 4051 streams of one capture, keyed by (src, sport, dst, dport)."""

    def __init__(self):
        self.streams: dict = {}

    def tcp(self, key: tuple, seq: int, flags: int, payload: bytes) -> list[tuple[str, bytes]]:
        """One segment: the frames it completes (:meth:`Stream.frames`), then, at FIN or
        RST, what the stream ended inside of (:meth:`Stream.rest`). A SYN starts afresh."""
        st = self.streams.get(key)
        if flags & SYN:
            st = self.streams[key] = Stream()
            st.next_seq = (seq + 1) & 0xFFFFFFFF
        elif st is None:
            st = self.streams[key] = Stream()
        out = []
        if payload and not st.dead:
            st.add(seq, payload)
            out.extend(st.frames())
        if flags & (FIN | RST):
            r = st.rest()
            if r is not None:
                out.append(r)
            self.streams.pop(key, None)
        return out


# ----------------------------------------------------------------------------- frames

#: :func:`ether_l4`: leave this frame to Scapy
FALLBACK = "fallback"
UDP, TCP = 17, 6
#: TCP flags read from byte 13 of its header
FIN, SYN, RST = 0x01, 0x02, 0x04

_IP_STR: dict[bytes, str] = {}


def ip_str(b: bytes) -> str:
    """Four address bytes as dotted text (cached: a capture holds few addresses)."""
    s = _IP_STR.get(b)
    if s is None:
        if len(_IP_STR) > 65536:
            _IP_STR.clear()
        s = _IP_STR[b] = socket.inet_ntoa(b)
    return s


_L4 = struct.Struct("!HHH")
_TCP = struct.Struct("!HHI")


def ether_l4(data: bytes):
    """One Ethernet frame, read at fixed offsets:

    - ``(UDP, src, dst, sport, dport, payload)``, ``(TCP, src, dst, sport, dport, payload,
      seq, flags)`` for a plain IPv4 datagram (addresses as 4 bytes; payload without the
      Ethernet trailer);
    - None for frames that hold no IPv4 UDP or TCP at all (ARP, ICMPv6, ICMP, IGMP);
    - :data:`FALLBACK` for everything else, which only a full dissector reads the same way
      (VLAN tags, IPv6 with other headers, IPv4 fragments, options-laden or inconsistent
      lengths, other protocols)."""
    n = len(data)
    if n < 34:
        return FALLBACK
    et = data[12] << 8 | data[13]
    if et != 0x0800:
        if et == 0x0806:
            return None
        if et == 0x86DD and n >= 54 and data[20] == 58:      # ICMPv6
            return None
        return FALLBACK
    vihl = data[14]
    ihl = (vihl & 15) << 2
    if vihl >> 4 != 4 or ihl < 20:
        return FALLBACK
    end = 14 + (data[16] << 8 | data[17])
    l4 = 14 + ihl
    if end < l4 or end > n or (data[20] & 0x3F) or data[21]:   # MF or a fragment offset
        return FALLBACK
    proto = data[23]
    if proto == 17:
        if end - l4 < 8:
            return FALLBACK
        sport, dport, ulen = _L4.unpack_from(data, l4)
        if ulen != end - l4:
            return FALLBACK
        return UDP, data[26:30], data[30:34], sport, dport, data[l4 + 8:end]
    if proto == 6:
        if end - l4 < 20:
            return FALLBACK
        sport, dport, seq = _TCP.unpack_from(data, l4)
        doff = (data[l4 + 12] >> 4) << 2
        if doff < 20 or l4 + doff > end:
            return FALLBACK
        return TCP, data[26:30], data[30:34], sport, dport, data[l4 + doff:end], seq, \
            data[l4 + 13]
    if proto in (1, 2):
        return None
    return FALLBACK
