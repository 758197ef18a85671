"""pfslab's reconstruction of the CPPDP wire format (UDP and TCP port 4051).

Cisco never published this format; see docs/protocol.md for the design and its reasons.
Plain ``struct`` only: the phone agent imports this module, and must stay light.

Decoding untrusted bytes raises :class:`DecodeError` and nothing else.
"""
from __future__ import annotations

import enum
import functools
import ipaddress
import struct
import zlib
from dataclasses import dataclass, field

PORT = 4051
MAGIC = b"CPDP"
VERSION = 1

#: Bit set in ``strength`` by a phone that has confirmed itself as root.
ROOT_BUMP = 0x80000000

MAX_NAME = 64          # model and file names, in bytes (ASCII)
MAX_DATAGRAM = 512     # no pfslab datagram is longer
MAX_FRAME = 65536      # largest TCP frame payload (a DATA chunk)


class DecodeError(ValueError):
    """The bytes are not a valid pfslab CPPDP message (foreign, truncated or malformed)."""


class MsgType(enum.IntEnum):
    """UDP message kinds."""
    CLAIM = 1    # ClaimRoot(tent): a tentative root claim; ad=0 is the offer, 1..4 the ads
    ROOT = 2     # the confirmed root of a hierarchy (what @@@HROOT logs)
    JOIN = 3     # a phone asks the root for a place in the tree
    OFFER = 4    # the root tells a phone which parent and slot to take
    REFUSE = 5   # the root (or a parent) refuses: see RefuseReason
    READY = 6    # a phone holds a complete, verified copy of the file


class FrameType(enum.IntEnum):
    """TCP child-stream frame kinds."""
    REQUEST = 0x11  # child -> parent: the file it wants, in which hierarchy
    HOLD = 0x12     # parent -> child: not complete yet (have/total); also the keepalive
    HEADER = 0x13   # parent -> child: size and SHA-256 of the file that follows
    DATA = 0x14     # parent -> child: a chunk of the file
    END = 0x15      # parent -> child: the file is complete
    ABORT = 0x16    # either side: the transfer stops, with a reason


class RefuseReason(enum.IntEnum):
    FULL = 1          # both child slots are taken
    NOT_ROOT = 2      # the receiver is not (or no longer) the root of that hierarchy
    UNKNOWN = 3       # no such hierarchy (XID / model / file) here
    MAP_MISMATCH = 4  # the joiner upgrades to another load


class AbortReason(enum.IntEnum):
    FULL = 1          # the parent has no free slot
    UNKNOWN = 2       # the parent has no such hierarchy or file
    UPSTREAM = 3      # the parent lost its own source and cannot deliver
    BAD_DIGEST = 4    # what arrived does not match the expected digest
    SHUTDOWN = 5      # the phone is going away
    PROTOCOL = 6      # a malformed or unexpected frame


class ReadySource(enum.IntEnum):
    TFTP = 0
    PEER = 1


@functools.lru_cache(maxsize=4096)
def name_hash(name: str) -> int:
    """``H=`` in the @@@HROOT log line: CRC-32 of the file name (pfslab's choice)."""
    return zlib.crc32(name.encode("ascii", "replace")) & 0xFFFFFFFF


def load_map(load_name: str) -> int:
    """``map=``: CRC-32 of the load name, so only phones upgrading to the same load mix."""
    return zlib.crc32(load_name.encode("ascii", "replace")) & 0xFFFFFFFF


# ---------------------------------------------------------------------------- UDP messages

_HDR = struct.Struct("!4sBBHIIII")  # magic version type length xid strength map hash
HEADER_LEN = _HDR.size              # 24


@dataclass(frozen=True)
class Message:
    """One UDP datagram. ``body`` fields are used by the kinds named beside them."""
    type: MsgType
    xid: int
    strength: int
    map: int
    model: str
    file: str
    hash: int = -1                  # -1: computed from ``file``
    ad: int = 0                     # CLAIM: 0 = the offer, 1..4 = advertisement number
    server: str = "0.0.0.0"         # ROOT: the TFTP server the root fetches from
    lost_parent: str = "0.0.0.0"    # JOIN: the parent this phone lost (0.0.0.0: none)
    parent: str = "0.0.0.0"         # OFFER: the parent to connect to
    slot: int = 0                   # OFFER: the child slot at that parent (0 or 1)
    depth: int = 0                  # OFFER: the joiner's depth in the tree (root = 0)
    reason: int = 0                 # REFUSE: RefuseReason
    source: int = 0                 # READY: ReadySource
    size: int = 0                   # READY: file size in bytes

    def __post_init__(self):
        if self.hash == -1:
            object.__setattr__(self, "hash", name_hash(self.file))


# The few names and addresses of a site recur in every message: their conversions are cached
# (a simulator's 10^5 phones encode and decode millions). Errors are raised, never cached.
@functools.lru_cache(maxsize=1 << 16)
def _ip(b: bytes) -> str:
    return str(ipaddress.IPv4Address(b))


@functools.lru_cache(maxsize=1 << 16)
def _ipb(s: str) -> bytes:
    return ipaddress.IPv4Address(s).packed


_PRINTABLE = bytes(range(0x21, 0x7F))


def _printable(raw: bytes) -> bool:
    """Every byte is printable ASCII other than space (0x21..0x7E)."""
    return not raw.translate(None, _PRINTABLE)


@functools.lru_cache(maxsize=4096)
def _name(s: str) -> bytes:
    b = s.encode("ascii")
    if len(b) > MAX_NAME:
        raise ValueError(f"name longer than {MAX_NAME} bytes: {s!r}")
    return bytes([len(b)]) + b


def _body(m: Message) -> bytes:
    t = m.type
    if t == MsgType.CLAIM:
        return struct.pack("!B", m.ad)
    if t == MsgType.ROOT:
        return _ipb(m.server)
    if t == MsgType.JOIN:
        return _ipb(m.lost_parent)
    if t == MsgType.OFFER:
        return _ipb(m.parent) + struct.pack("!BB", m.slot, m.depth)
    if t == MsgType.REFUSE:
        return struct.pack("!B", m.reason)
    if t == MsgType.READY:
        return struct.pack("!BI", m.source, m.size)
    raise ValueError(f"unknown message type {t!r}")


#: The body fields each message kind carries (the rest of a Message keeps its defaults).
BODY_FIELDS = {MsgType.CLAIM: ("ad",), MsgType.ROOT: ("server",),
               MsgType.JOIN: ("lost_parent",), MsgType.OFFER: ("parent", "slot", "depth"),
               MsgType.REFUSE: ("reason",), MsgType.READY: ("source", "size")}
COMMON_FIELDS = ("type", "xid", "strength", "map", "hash", "model", "file")

_BODY_LEN = {MsgType.CLAIM: 1, MsgType.ROOT: 4, MsgType.JOIN: 4, MsgType.OFFER: 6,
             MsgType.REFUSE: 1, MsgType.READY: 5}


def encode(m: Message) -> bytes:
    tail = _name(m.model) + _name(m.file) + _body(m)
    length = HEADER_LEN + len(tail)
    return _HDR.pack(MAGIC, VERSION, int(m.type), length, m.xid, m.strength, m.map,
                     m.hash) + tail


def decode(data: bytes) -> Message:
    """Decode one datagram. Raises DecodeError for anything that is not one."""
    try:
        return _decode(bytes(data))
    except DecodeError:
        raise
    except Exception as e:  # belt and braces: hostile bytes never escape as anything else
        raise DecodeError(f"malformed datagram: {e}") from None


@functools.lru_cache(maxsize=4096)
def decode_shared(data: bytes) -> Message:
    """decode() with a cache: a broadcast is the same bytes for every phone that hears it,
    so many phones in one process (or a simulator) decode it once. Messages are immutable."""
    return decode(data)


def _decode(data: bytes) -> Message:
    if len(data) < HEADER_LEN:
        raise DecodeError(f"truncated: {len(data)} bytes, header needs {HEADER_LEN}")
    magic, ver, typ, length, xid, strength, lmap, h = _HDR.unpack_from(data)
    if magic != MAGIC:
        raise DecodeError("not CPPDP: bad magic")
    if ver != VERSION:
        raise DecodeError(f"unsupported version {ver}")
    try:
        mtype = MsgType(typ)
    except ValueError:
        raise DecodeError(f"unknown message type {typ}") from None
    if length != len(data):
        raise DecodeError(f"length field {length} != datagram size {len(data)}")
    off = HEADER_LEN
    names = []
    for _ in range(2):
        if off >= len(data):
            raise DecodeError("truncated in names")
        n = data[off]
        off += 1
        if n > MAX_NAME or off + n > len(data):
            raise DecodeError("bad name length")
        raw = data[off:off + n]
        if not _printable(raw):
            raise DecodeError("name is not printable ASCII")
        names.append(raw.decode("ascii"))
        off += n
    body = data[off:]
    if len(body) != _BODY_LEN[mtype]:
        raise DecodeError(f"{mtype.name} body is {len(body)} bytes, expected {_BODY_LEN[mtype]}")
    kw: dict = {}
    if mtype == MsgType.CLAIM:
        kw["ad"] = body[0]
    elif mtype == MsgType.ROOT:
        kw["server"] = _ip(body)
    elif mtype == MsgType.JOIN:
        kw["lost_parent"] = _ip(body)
    elif mtype == MsgType.OFFER:
        kw.update(parent=_ip(body[:4]), slot=body[4], depth=body[5])
    elif mtype == MsgType.REFUSE:
        kw["reason"] = body[0]
    elif mtype == MsgType.READY:
        kw["source"], kw["size"] = struct.unpack("!BI", body)
    return Message(type=mtype, xid=xid, strength=strength, map=lmap, model=names[0],
                   file=names[1], hash=h, **kw)


# ---------------------------------------------------------------------- TCP child stream

_FHDR = struct.Struct("!4sBBI")  # magic version type payload-length
FRAME_HEADER_LEN = _FHDR.size    # 10


@dataclass(frozen=True)
class Frame:
    type: FrameType
    xid: int = 0            # REQUEST
    model: str = ""         # REQUEST
    file: str = ""          # REQUEST
    have: int = 0           # HOLD: bytes the parent holds so far
    total: int = 0          # HOLD: the file's size (0: unknown yet)
    size: int = 0           # HEADER
    sha256: bytes = b""     # HEADER: 32 bytes
    data: bytes = b""       # DATA
    reason: int = 0         # ABORT: AbortReason
    text: str = ""          # ABORT: free text (ASCII, <= 64 bytes)


def _frame_payload(f: Frame) -> bytes:
    t = f.type
    if t == FrameType.REQUEST:
        return struct.pack("!I", f.xid) + _name(f.model) + _name(f.file)
    if t == FrameType.HOLD:
        return struct.pack("!II", f.have, f.total)
    if t == FrameType.HEADER:
        if len(f.sha256) != 32:
            raise ValueError("sha256 must be 32 bytes")
        return struct.pack("!I", f.size) + f.sha256
    if t == FrameType.DATA:
        return bytes(f.data)
    if t == FrameType.END:
        return b""
    if t == FrameType.ABORT:
        return struct.pack("!B", f.reason) + _text(f.text)
    raise ValueError(f"unknown frame type {t!r}")


def _text(s: str) -> bytes:
    b = s.encode("ascii", "replace")[:MAX_NAME]
    return bytes([len(b)]) + b


def encode_frame(f: Frame) -> bytes:
    payload = _frame_payload(f)
    if len(payload) > MAX_FRAME:
        raise ValueError(f"frame payload {len(payload)} > {MAX_FRAME}")
    return _FHDR.pack(MAGIC, VERSION, int(f.type), len(payload)) + payload


def encode_data(chunk) -> bytes:
    """A DATA frame without building a Frame (the hot path of a transfer)."""
    return _FHDR.pack(MAGIC, VERSION, FrameType.DATA, len(chunk)) + bytes(chunk)


def frame_length(buf: bytes) -> int | None:
    """Total length of the frame at the start of ``buf``, or None if more bytes are needed.

    Raises DecodeError as soon as the header is visibly foreign or malformed.
    """
    if len(buf) < FRAME_HEADER_LEN:
        if buf[:len(MAGIC)] != MAGIC[:len(buf[:4])]:
            raise DecodeError("not CPPDP: bad magic")
        return None
    magic, ver, typ, n = _FHDR.unpack_from(buf)
    if magic != MAGIC:
        raise DecodeError("not CPPDP: bad magic")
    if ver != VERSION:
        raise DecodeError(f"unsupported version {ver}")
    if typ not in FrameType._value2member_map_:
        raise DecodeError(f"unknown frame type {typ}")
    if n > MAX_FRAME:
        raise DecodeError(f"frame payload {n} > {MAX_FRAME}")
    return FRAME_HEADER_LEN + n


def decode_frame(buf: bytes) -> Frame:
    """Decode exactly one whole frame."""
    try:
        return _decode_frame(bytes(buf))
    except DecodeError:
        raise
    except Exception as e:
        raise DecodeError(f"malformed frame: {e}") from None


#: The payload fields each frame kind carries.
FRAME_FIELDS = {FrameType.REQUEST: ("xid", "model", "file"), FrameType.HOLD: ("have", "total"),
                FrameType.HEADER: ("size", "sha256"), FrameType.DATA: ("data",),
                FrameType.END: (), FrameType.ABORT: ("reason", "text")}

_FIXED = {FrameType.HOLD: 8, FrameType.HEADER: 36, FrameType.END: 0}


def _decode_frame(buf: bytes) -> Frame:
    n = frame_length(buf)
    if n is None:
        raise DecodeError(f"truncated: {len(buf)} bytes, frame header needs {FRAME_HEADER_LEN}")
    if n != len(buf):
        raise DecodeError(f"frame length {n} != {len(buf)} bytes given")
    ftype = FrameType(buf[5])
    p = buf[FRAME_HEADER_LEN:]
    if ftype in _FIXED and len(p) != _FIXED[ftype]:
        raise DecodeError(f"{ftype.name} payload is {len(p)} bytes, expected {_FIXED[ftype]}")
    if ftype == FrameType.REQUEST:
        if len(p) < 6:
            raise DecodeError("REQUEST truncated")
        (xid,) = struct.unpack_from("!I", p)
        off, names = 4, []
        for _ in range(2):
            if off >= len(p):
                raise DecodeError("REQUEST truncated in names")
            k = p[off]
            off += 1
            raw = p[off:off + k]
            if k > MAX_NAME or len(raw) != k or not _printable(raw):
                raise DecodeError("REQUEST has a bad name")
            names.append(raw.decode("ascii"))
            off += k
        if off != len(p):
            raise DecodeError("REQUEST has trailing bytes")
        return Frame(ftype, xid=xid, model=names[0], file=names[1])
    if ftype == FrameType.HOLD:
        have, total = struct.unpack("!II", p)
        return Frame(ftype, have=have, total=total)
    if ftype == FrameType.HEADER:
        (size,) = struct.unpack_from("!I", p)
        return Frame(ftype, size=size, sha256=p[4:])
    if ftype == FrameType.DATA:
        return Frame(ftype, data=p)
    if ftype == FrameType.END:
        return Frame(ftype)
    # ABORT
    if len(p) < 2 or p[1] != len(p) - 2 or p[1] > MAX_NAME:
        raise DecodeError("ABORT has a bad length")
    return Frame(ftype, reason=p[0], text=p[2:].decode("ascii", "replace"))


@functools.lru_cache(maxsize=4096)
def _decode_small(buf: bytes) -> Frame:
    """decode_frame() of a small frame, cached: the same HOLD goes to every waiting child
    every HOLD_INTERVAL. Frames are immutable."""
    return decode_frame(buf)


@dataclass
class FrameReader:
    """Reassembles frames from a TCP byte stream. ``feed`` returns the complete frames.

    After a DecodeError the stream is unusable (the caller aborts the connection).
    """
    buf: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[Frame]:
        if not self.buf and type(data) is bytes and FRAME_HEADER_LEN <= len(data) <= 256 \
                and frame_length(data) == len(data):
            return [_decode_small(data)]         # one whole small frame: HOLD, REQUEST, END
        self.buf += data
        out = []
        while True:
            n = frame_length(self.buf)
            if n is None or len(self.buf) < n:
                return out
            out.append(decode_frame(bytes(self.buf[:n])))
            del self.buf[:n]
