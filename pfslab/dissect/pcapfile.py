"""The one reader of capture files: classic pcap (either byte order, micro- or nanosecond
timestamps) and pcapng (section, interface, enhanced, simple and obsolete packet blocks).

Pure Python and no Scapy, so any part of pfslab can count or read a capture:

    cap = Capture(path)            # NotACapture (a UserError: one line, exit 2) unless the
                                   # file starts like a pcap or pcapng
    for rec in cap.records():      # Record(time, linktype, orig_len, data)
        ...
    for t, linktype, orig_len, data in cap.tuples():   # the same, as plain tuples (fast)
        ...
    cap.frames, cap.wire_bytes     # what was read, also after a bad or truncated file
    cap.truncated, cap.error       # ends inside a record / unreadable past frame N

    frames, wire_bytes = counts(path)   # one pass, (0, 0) for a missing file
    write_pcap(path, [(time, frame), ...])   # a classic pcap (fuzzing, tests)

Hostile files never raise past :class:`NotACapture`: a record that claims more than
:data:`MAX_RECORD` bytes, a block with an impossible length, or a file cut short ends the
iteration, with :attr:`Capture.error` or :attr:`Capture.truncated` saying why.

A classic pcap is read in chunks of :data:`CHUNK` bytes and cut into records with
``struct.unpack_from``: memory stays flat whatever the file's size, and no Python call is
made per record beyond the unpack and the slice (``python -m pfslab.dissect.bench``).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from ..errors import UserError

__all__ = ["NotACapture", "Record", "Capture", "counts", "write_pcap", "MAX_RECORD"]

#: largest record we believe (pcap's usual snaplen is 262,144 bytes)
MAX_RECORD = 1 << 20
#: bytes read at a time from a classic pcap
CHUNK = 1 << 20

_PCAP_MAGIC = {  # magic -> (byte order, ticks per second)
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000), b"\xa1\xb2\xc3\xd4": (">", 1_000_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000), b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_BOM = 0x1A2B3C4D


class NotACapture(UserError):
    """The file is not a pcap or pcapng capture (or cannot be read at all)."""


@dataclass(frozen=True)
class Record:
    time: float          # seconds since the epoch
    linktype: int        # LINKTYPE_* (1: Ethernet)
    orig_len: int        # the frame's length on the wire
    data: bytes          # what was captured of it


def _sniff(path) -> tuple[str, bytes]:
    """('pcap' | 'pcapng', first bytes); NotACapture with what to do instead."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except IsADirectoryError:
        raise NotACapture(f"{path} is a directory, not a capture") from None
    except OSError as e:
        raise NotACapture(f"cannot read capture {path}: {e.strerror or e}") from None
    if head[:4] in _PCAP_MAGIC and len(head) == 24:
        return "pcap", head
    if head[:4] == _PCAPNG_SHB and len(head) >= 12:
        return "pcapng", head
    what = "is empty" if not head else (
        f"is too short to be one ({len(head)} bytes)" if head[:4] in _PCAP_MAGIC
        or head[:4] == _PCAPNG_SHB else f"starts with {head[:8].hex(' ')}")
    raise NotACapture(f"{path} is not a pcap or pcapng capture: it {what} (give a capture"
                      f" such as a lab run's wan.pcap or subnet-<k>.pcap)")


class Capture:
    """One capture file; see the module docstring."""

    def __init__(self, path):
        self.path = path
        self.format, _ = _sniff(path)
        self.frames = 0
        self.wire_bytes = 0
        self.truncated = False
        self.error: str | None = None

    def records(self) -> Iterator[Record]:
        """Every record, as a :class:`Record`."""
        for rec in self.tuples():
            yield Record(*rec)

    def tuples(self) -> Iterator[tuple[float, int, int, bytes]]:
        """Every record as a plain ``(time, linktype, orig_len, data)`` tuple: what
        :meth:`records` gives, without an object per frame."""
        self.frames = self.wire_bytes = 0
        self.truncated, self.error = False, None
        try:
            with open(self.path, "rb") as f:
                walk = self._pcap if self.format == "pcap" else self._pcapng
                for rec in walk(f):
                    self.frames += 1
                    self.wire_bytes += rec[2]
                    yield rec
        except OSError as e:
            self.error = f"read error: {e.strerror or e}"

    def _bad(self, why: str) -> None:
        self.error = f"frame {self.frames + 1}: {why}"

    def _take(self, f: BinaryIO, n: int) -> bytes | None:
        """n bytes, or None (and truncated) when the file ends first."""
        b = f.read(n)
        if len(b) < n:
            self.truncated = self.truncated or bool(b)
            return None
        return b

    def _pcap(self, f: BinaryIO) -> Iterator[tuple]:
        head = f.read(24)
        order, ticks = _PCAP_MAGIC[head[:4]]
        linktype = struct.unpack(order + "I", head[20:24])[0] & 0x0FFFFFFF
        unpack = struct.Struct(order + "IIII").unpack_from
        buf, pos = b"", 0
        while True:
            if len(buf) - pos < 16:                  # the next record header: read on
                more = f.read(CHUNK)
                if not more:
                    self.truncated = self.truncated or len(buf) > pos
                    return
                buf, pos = buf[pos:] + more, 0
                continue
            sec, frac, incl, orig = unpack(buf, pos)
            if incl > MAX_RECORD:
                self._bad(f"record claims {incl:,} bytes (at most {MAX_RECORD:,})")
                return
            end = pos + 16 + incl
            if end > len(buf):                       # the record's data: read on
                more = f.read(max(CHUNK, end - len(buf)))
                if not more:
                    self.truncated = True
                    return
                buf, pos = buf[pos:] + more, 0
                continue
            yield sec + frac / ticks, linktype, max(orig, incl), buf[pos + 16:end]
            pos = end

    def _pcapng(self, f: BinaryIO) -> Iterator[tuple]:
        order = "<"
        ifaces: list[tuple[int, float]] = []     # (linktype, seconds per tick)
        while True:
            head = self._take(f, 8)
            if head is None:
                return
            btype = struct.unpack(order + "I", head[:4])[0]
            if head[:4] == _PCAPNG_SHB:          # a new section: its own byte order
                bom = f.read(4)
                if len(bom) < 4:
                    self.truncated = True
                    return
                if struct.unpack("<I", bom)[0] == _BOM:
                    order = "<"
                elif struct.unpack(">I", bom)[0] == _BOM:
                    order = ">"
                else:
                    self._bad("pcapng section header with a bad byte-order magic")
                    return
                ifaces = []
                blen = struct.unpack(order + "I", head[4:8])[0]
                body_len = blen - 16
                prefix = bom
            else:
                blen = struct.unpack(order + "I", head[4:8])[0]
                body_len = blen - 12
                prefix = b""
            if blen < 12 + len(prefix) or blen % 4 or blen > MAX_RECORD + 64:
                self._bad(f"pcapng block of impossible length {blen}")
                return
            body = self._take(f, body_len)
            tail = self._take(f, 4) if body is not None else None
            if body is None or tail is None:
                self.truncated = True
                return
            if struct.unpack(order + "I", tail)[0] != blen:
                self._bad("pcapng block lengths disagree")
                return
            if head[:4] == _PCAPNG_SHB:
                continue
            rec = self._block(order, btype, body, ifaces)
            if rec is not None:
                yield rec

    def _block(self, order: str, btype: int, body: bytes, ifaces: list) -> tuple | None:
        if btype == 1 and len(body) >= 8:                       # interface description
            ifaces.append((struct.unpack(order + "H", body[:2])[0], _tsresol(order, body[8:])))
            return None
        if btype == 6 and len(body) >= 20:                      # enhanced packet
            iface, hi, lo, cap, orig = struct.unpack(order + "IIIII", body[:20])
            data = body[20:20 + cap]
        elif btype == 2 and len(body) >= 20:                    # obsolete packet
            iface, _, hi, lo, cap, orig = struct.unpack(order + "HHIIII", body[:20])
            data = body[20:20 + cap]
        elif btype == 3 and len(body) >= 4:                     # simple packet
            iface, hi, lo = 0, 0, 0
            orig = struct.unpack(order + "I", body[:4])[0]
            data = body[4:4 + orig]
        else:
            return None
        if iface >= len(ifaces):
            self._bad(f"packet on undeclared pcapng interface {iface}")
            return None
        linktype, unit = ifaces[iface]
        return ((hi << 32) | lo) * unit, linktype, max(orig, len(data)), data


def _tsresol(order: str, opts: bytes) -> float:
    """Seconds per timestamp tick from an interface's options (if_tsresol; default 1 us)."""
    pos = 0
    while pos + 4 <= len(opts):
        code, n = struct.unpack(order + "HH", opts[pos:pos + 4])
        if code == 0:
            break
        if code == 9 and n >= 1 and pos + 5 <= len(opts):
            v = opts[pos + 4]
            return 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0 ** -(v & 0x7F)
        pos += 4 + n + (-n % 4)
    return 1e-6


def counts(path) -> tuple[int, int]:
    """(frames, bytes on the wire) of a capture; (0, 0) when the file does not exist."""
    try:
        cap = Capture(path)
    except NotACapture:
        return 0, 0
    for _ in cap.tuples():
        pass
    return cap.frames, cap.wire_bytes


def write_pcap(path, frames, linktype: int = 1) -> int:
    """Write ``(time, frame bytes)`` pairs as a classic little-endian microsecond pcap;
    returns how many."""
    n = 0
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype))
        for t, data in frames:
            sec = int(t)
            f.write(struct.pack("<IIII", sec, round((t - sec) * 1e6) % 1_000_000, len(data),
                                len(data)))
            f.write(data)
            n += 1
    return n
