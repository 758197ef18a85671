# SPDX-License-Identifier: MIT
# This file is part of pfslab, modelled on scapy/contrib/automotive/doip.py

# scapy.contrib.description = pfslab CPPDP (Cisco Peer to Peer Distribution Protocol)
# scapy.contrib.status = loads

"""Scapy layers for pfslab's CPPDP on UDP and TCP port 4051 (see docs/protocol.md).

- :class:`CPPDP`: one UDP datagram (CLAIM, ROOT, JOIN, OFFER, REFUSE, READY).
- :class:`CPPDPFrame`: one frame of the TCP child stream (REQUEST, HOLD, HEADER, DATA, END,
  ABORT). Several frames in one segment stack (``CPPDPFrame / CPPDPFrame``); with
  ``sniff(session=TCPSession)`` frames split over segments are reassembled by their length.

Load it like a contrib module (in the Scapy shell or a script)::

    >>> from scapy.main import _load; _load("pfslab.dissect.scapy_cppdp")
    >>> # or: from pfslab.dissect.scapy_cppdp import *
    >>> rdpcap("pcaps/RUN/subnet-1.pcap").filter(lambda p: CPPDP in p).nsummary()

Bytes on 4051 that do not start with the magic ``CPDP`` are foreign and dissect as ``Raw``.
Anything else that breaks the format still dissects, and :meth:`CPPDP.malformed` /
:meth:`CPPDPFrame.malformed` say why (``summary()`` ends with ``[malformed: ...]``).
The agent codec (pfslab.protocol.codec) is the reference; this module never imports Scapy
into the agent: nothing under pfslab.protocol or pfslab.agent imports it.
"""
from __future__ import annotations

import struct
import zlib
from typing import Iterator, NamedTuple, Optional

from scapy.config import conf
from scapy.fields import (ByteEnumField, ByteField, ConditionalField, FieldLenField, IntField,
                          IPField, ShortField, StrFixedLenField, StrLenField, XIntField,
                          XStrFixedLenField)
from scapy.layers.inet import IP, TCP, UDP
from scapy.packet import Packet, bind_bottom_up, bind_layers

from .wire import (ABORT_REASONS, FIN, FOREIGN, FRAME_HEADER_LEN, FRAME_TYPES, HEADER_LEN,
                   MAGIC, MAX_FRAME, MAX_NAME, MSG_TYPES, PORT, READY_SOURCES, REFUSE_REASONS,
                   RST, SYN, VERSION, Reassembler, frame_problem, udp_problem)
from .wire import BODY_LEN as _BODY_LEN, FRAME_FIXED as _FRAME_FIXED

__all__ = ["CPPDP", "CPPDPFrame", "PORT", "MSG_TYPES", "FRAME_TYPES", "REFUSE_REASONS",
           "ABORT_REASONS", "READY_SOURCES", "cppdp_fields", "iter_cppdp", "iter_cppdp_packets",
           "CppdpRecord", "packet_of"]

MAX_DATAGRAM = 512


def _txt(b) -> str:
    """A name or text field for display: printable ASCII as is, other bytes as ``\\xNN``
    (the same as the Lua dissector's Info column). Never raises on hostile bytes."""
    if b is None:
        return ""
    if isinstance(b, str):
        b = b.encode("utf-8", "replace")
    elif not isinstance(b, bytes):
        b = str(b).encode("utf-8", "replace")
    return "".join(chr(c) if 0x20 <= c <= 0x7E else f"\\x{c:02x}" for c in b)


# ----------------------------------------------------------------------------- validation
# udp_problem and frame_problem (pfslab.dissect.wire): the format rules of docs/protocol.md,
# applied to the wire bytes of one message.


# --------------------------------------------------------------------------------- layers

class _Lenient(Packet):
    """Dissects as far as the bytes go: a truncated message keeps the fields it has, the
    bytes that do not fit the next field become the payload (Raw), nothing raises."""

    def do_dissect(self, s):
        _raw = s
        self.raw_packet_cache_fields = {}
        for f in self.fields_desc:
            if not s:
                break
            try:
                rest, fval = f.getfield(self, s)
            except Exception:
                break  # this field does not fit: leave it (and the rest) to the payload
            s = rest
            if f.isconditional and fval is None:
                continue
            self.fields[f.name] = fval
        self.raw_packet_cache = _raw[:-len(s)] if s else _raw
        self.explicit = 1
        return s

    @classmethod
    def dispatch_hook(cls, _pkt=None, *args, **kargs):
        """Foreign bytes (no ``CPDP`` magic) are not ours: let them be Raw."""
        if _pkt is not None and bytes(_pkt[:4]) != MAGIC:
            return conf.raw_layer
        return cls

    def _wire(self) -> bytes:
        """This message's bytes as sent (its payload included, Ethernet padding excluded)."""
        b = bytes(self)
        pad = self.getlayer(conf.padding_layer)
        if pad is not None:
            b = b[:len(b) - len(bytes(pad))]
        return b

    def _name_of(self, fname):
        v = self.getfieldval(fname)
        return _txt(v)


def _extra_len_udp(p) -> int:
    """Bytes between the body and the ``length`` field's end (only in malformed datagrams)."""
    try:
        used = HEADER_LEN + 2 + len(p.model or b"") + len(p.file or b"") + \
            _BODY_LEN.get(p.type, 0)
        return max(0, (p.length or 0) - used)
    except Exception:
        return 0


class CPPDP(_Lenient):
    """One CPPDP datagram on UDP 4051. Field names follow docs/protocol.md.

    ``length`` and the name lengths are filled on build, and ``hash`` (``H=``) defaults to
    the CRC-32 of ``file``. Note: the OFFER field ``parent`` shares its name with Scapy's
    ``Packet.parent`` attribute, so read it with ``pkt.getfieldval("parent")``.
    """
    name = "CPPDP"
    fields_desc = [
        StrFixedLenField("magic", MAGIC, 4),
        ByteField("version", VERSION),
        ByteEnumField("type", 1, MSG_TYPES),
        ShortField("length", None),
        XIntField("xid", 0),
        XIntField("strength", 0),
        XIntField("map", 0),
        XIntField("hash", None),
        FieldLenField("model_len", None, length_of="model", fmt="B"),
        StrLenField("model", b"", length_from=lambda p: p.model_len,
                                     max_length=MAX_NAME),
        FieldLenField("file_len", None, length_of="file", fmt="B"),
        StrLenField("file", b"", length_from=lambda p: p.file_len,
                                     max_length=MAX_NAME),
        ConditionalField(ByteField("ad", 0), lambda p: p.type == 1),
        ConditionalField(IPField("server", "0.0.0.0"), lambda p: p.type == 2),
        ConditionalField(IPField("lost_parent", "0.0.0.0"), lambda p: p.type == 3),
        ConditionalField(IPField("parent", "0.0.0.0"), lambda p: p.type == 4),
        ConditionalField(ByteField("slot", 0), lambda p: p.type == 4),
        ConditionalField(ByteField("depth", 0), lambda p: p.type == 4),
        ConditionalField(ByteEnumField("reason", 0, REFUSE_REASONS), lambda p: p.type == 5),
        ConditionalField(ByteEnumField("source", 0, READY_SOURCES), lambda p: p.type == 6),
        ConditionalField(IntField("size", 0), lambda p: p.type == 6),
        # only in malformed datagrams: bytes left before the end the length field claims
        ConditionalField(StrLenField("extra", b"", length_from=_extra_len_udp),
                         lambda p: _extra_len_udp(p) > 0),
    ]

    # Scapy only calls a dispatch_hook found in the class's own __dict__
    dispatch_hook = _Lenient.__dict__["dispatch_hook"]

    def post_build(self, pkt, pay):
        if self.hash is None and len(pkt) >= 24:
            h = zlib.crc32(bytes(self.file or b"")) & 0xFFFFFFFF
            pkt = pkt[:20] + struct.pack("!I", h) + pkt[24:]
        if self.length is None and len(pkt) >= 8:
            pkt = pkt[:6] + struct.pack("!H", (len(pkt) + len(pay)) & 0xFFFF) + pkt[8:]
        return pkt + pay

    def extract_padding(self, s):
        return s, None  # a datagram is the whole UDP payload: what is left is trailing junk

    def malformed(self) -> Optional[str]:
        """Why this datagram breaks the wire format, or None."""
        try:
            return udp_problem(self._wire())
        except Exception as e:  # fuzzed field values may not even build
            return f"cannot build: {e}"

    def hashret(self):
        return struct.pack("!I", (self.xid or 0) & 0xFFFFFFFF)

    def answers(self, other):
        """JOIN -> OFFER/REFUSE, CLAIM -> ROOT, within one hierarchy (XID)."""
        if not isinstance(other, CPPDP) or self.xid != other.xid:
            return 0
        return int((other.type, self.type) in {(3, 4), (3, 5), (1, 2)})

    def mysummary(self):
        return _udp_summary(self), [UDP]


def _udp_summary(p) -> str:
    try:
        t = p.type
        xid = f"XID{(p.xid or 0) & 0xFFFFFFFF:08X}"
        m = f"m={_txt(p.model)}"
        f = _txt(p.file)
        if t == 1:
            what = "offer" if p.ad == 0 else f"Ad {p.ad}"
            s = f"PFS ClaimRoot(tent) {what} {xid} {m} {f}"
        elif t == 2:
            s = f"PFS ROOT {xid} H={(p.hash or 0) & 0xFFFFFFFF:08X} {m} ROOT={p.server} {f}"
        elif t == 3:
            lost = p.lost_parent
            s = f"PFS JOIN {xid} {m} {f}" + (f" lost={lost}" if lost != "0.0.0.0" else "")
        elif t == 4:
            s = (f"PFS OFFER {xid} {m} parent={p.getfieldval('parent')} slot={p.slot} "
                 f"depth={p.depth} {f}")
        elif t == 5:
            s = f"PFS REFUSE {REFUSE_REASONS.get(p.reason, p.reason)} {xid} {m} {f}"
        elif t == 6:
            s = (f"PFS READY {xid} {m} {f} size={p.size} "
                 f"from={READY_SOURCES.get(p.source, p.source)}")
        else:
            s = f"PFS type={t} {xid}"
        bad = p.malformed()
        return s + (f" [malformed: {bad}]" if bad else "")
    except Exception as e:  # a summary line must never raise
        return f"PFS [malformed: {e}]"


def _extra_len_frame(p) -> int:
    try:
        t, n = p.type, p.length or 0
        if t == 0x11:
            used = 6 + len(p.model or b"") + len(p.file or b"")
        elif t == 0x14:
            used = n
        elif t == 0x16:
            used = 2 + len(p.text or b"")
        else:
            used = _FRAME_FIXED.get(t, 0)
        return max(0, n - used)
    except Exception:
        return 0


class CPPDPFrame(_Lenient):
    """One frame of the CPPDP child stream on TCP 4051. ``length`` (payload bytes) and the
    name lengths are filled on build."""
    name = "CPPDP frame"
    fields_desc = [
        StrFixedLenField("magic", MAGIC, 4),
        ByteField("version", VERSION),
        ByteEnumField("type", 0x11, FRAME_TYPES),
        IntField("length", None),
        ConditionalField(XIntField("xid", 0), lambda p: p.type == 0x11),
        ConditionalField(FieldLenField("model_len", None, length_of="model", fmt="B"),
                         lambda p: p.type == 0x11),
        ConditionalField(StrLenField("model", b"", length_from=lambda p: p.model_len,
                                     max_length=MAX_NAME),
                         lambda p: p.type == 0x11),
        ConditionalField(FieldLenField("file_len", None, length_of="file", fmt="B"),
                         lambda p: p.type == 0x11),
        ConditionalField(StrLenField("file", b"", length_from=lambda p: p.file_len,
                                     max_length=MAX_NAME),
                         lambda p: p.type == 0x11),
        ConditionalField(IntField("have", 0), lambda p: p.type == 0x12),
        ConditionalField(IntField("total", 0), lambda p: p.type == 0x12),
        ConditionalField(IntField("size", 0), lambda p: p.type == 0x13),
        ConditionalField(XStrFixedLenField("sha256", b"\x00" * 32, 32),
                         lambda p: p.type == 0x13),
        ConditionalField(StrLenField("data", b"", length_from=lambda p: p.length or 0,
                                     max_length=MAX_FRAME),
                         lambda p: p.type == 0x14),
        ConditionalField(ByteEnumField("reason", 0, ABORT_REASONS), lambda p: p.type == 0x16),
        ConditionalField(FieldLenField("text_len", None, length_of="text", fmt="B"),
                         lambda p: p.type == 0x16),
        ConditionalField(StrLenField("text", b"", length_from=lambda p: p.text_len,
                                     max_length=MAX_NAME),
                         lambda p: p.type == 0x16),
        # only in malformed frames: payload bytes the frame's kind has no field for
        ConditionalField(StrLenField("extra", b"", length_from=_extra_len_frame),
                         lambda p: _extra_len_frame(p) > 0),
    ]

    dispatch_hook = _Lenient.__dict__["dispatch_hook"]

    def do_dissect(self, s):
        """Dissect one frame, bounded by its length; what follows is the next frame."""
        if len(s) >= FRAME_HEADER_LEN:
            end = FRAME_HEADER_LEN + struct.unpack_from("!I", s, 6)[0]
            return super().do_dissect(s[:end]) + s[end:]
        return super().do_dissect(s)

    def post_build(self, pkt, pay):
        if self.length is None and len(pkt) >= FRAME_HEADER_LEN:
            pkt = pkt[:6] + struct.pack("!I", len(pkt) - FRAME_HEADER_LEN) + pkt[10:]
        return pkt + pay

    def guess_payload_class(self, payload):
        return CPPDPFrame if payload[:4] == MAGIC else conf.raw_layer

    def frame_bytes(self) -> bytes:
        """This frame's own bytes (without the frames stacked after it)."""
        b = self._wire()
        if len(b) >= FRAME_HEADER_LEN:
            b = b[:FRAME_HEADER_LEN + struct.unpack_from("!I", b, 6)[0]]
        return b

    def malformed(self) -> Optional[str]:
        """Why this frame breaks the wire format, or None."""
        try:
            return frame_problem(self.frame_bytes())
        except Exception as e:
            return f"cannot build: {e}"

    def mysummary(self):
        return _frame_summary(self), [TCP, CPPDPFrame]

    @classmethod
    def tcp_reassemble(cls, data, metadata, session):
        """TCPSession hook: return the complete frames at the head of ``data`` (the rest,
        as Padding, stays buffered), or None while the first frame is incomplete."""
        if data[:4] != MAGIC[:len(data[:4])]:
            return conf.raw_layer(data)  # foreign: hand it over as is
        end = 0
        while len(data) - end >= FRAME_HEADER_LEN:
            if data[end:end + 4] != MAGIC:
                break
            n = struct.unpack_from("!I", data, end + 6)[0]
            if n > MAX_FRAME:  # never wait for a frame that cannot be: show it malformed
                return cls(data)
            if len(data) - end < FRAME_HEADER_LEN + n:
                break
            end += FRAME_HEADER_LEN + n
        if end == 0:
            if metadata.get("tcp_end"):
                return cls(data)  # the stream ended inside a frame: show what there is
            return None
        pkt = cls(data[:end])
        if end < len(data):
            pkt = pkt / conf.padding_layer(data[end:])
        return pkt


def _frame_summary(p) -> str:
    try:
        t = p.type
        if t == 0x11:
            s = f"PFS REQUEST XID{(p.xid or 0) & 0xFFFFFFFF:08X} m={_txt(p.model)} {_txt(p.file)}"
        elif t == 0x12:
            s = f"PFS HOLD have={p.have} total={p.total}"
        elif t == 0x13:
            s = f"PFS HEADER size={p.size} sha256={bytes(p.sha256 or b'').hex()[:16]}"
        elif t == 0x14:
            s = f"PFS DATA {p.length if p.length is not None else len(p.data or b'')} bytes"
        elif t == 0x15:
            s = "PFS END"
        elif t == 0x16:
            s = f"PFS ABORT {ABORT_REASONS.get(p.reason, p.reason)} \"{_txt(p.text)}\""
        else:
            s = f"PFS frame type={t:#x}" if isinstance(t, int) else f"PFS frame type={t}"
        bad = p.malformed()
        return s + (f" [malformed: {bad}]" if bad else "")
    except Exception as e:
        return f"PFS [malformed: {e}]"


bind_bottom_up(UDP, CPPDP, sport=PORT)
bind_bottom_up(UDP, CPPDP, dport=PORT)
bind_layers(UDP, CPPDP, sport=PORT, dport=PORT)

bind_bottom_up(TCP, CPPDPFrame, sport=PORT)
bind_layers(TCP, CPPDPFrame, dport=PORT)


# ------------------------------------------------------------------------- field values

def cppdp_fields(pkt) -> dict:
    """The field values of one CPPDP / CPPDPFrame layer in the form of
    tests/vectors/cppdp.json (``type``, ``type_name``, names as str, digests/data as hex)."""
    if isinstance(pkt, CPPDP):
        body = {1: ("ad",), 2: ("server",), 3: ("lost_parent",), 4: ("parent", "slot", "depth"),
                5: ("reason",), 6: ("source", "size")}.get(pkt.type, ())
        names = ("xid", "strength", "map", "hash", "model", "file") + body
        kinds = MSG_TYPES
    elif isinstance(pkt, CPPDPFrame):
        names = {0x11: ("xid", "model", "file"), 0x12: ("have", "total"),
                 0x13: ("size", "sha256"), 0x14: ("data",), 0x15: (),
                 0x16: ("reason", "text")}.get(pkt.type, ())
        kinds = FRAME_TYPES
    else:
        raise TypeError(f"not a CPPDP layer: {pkt!r}")
    d = {"type": pkt.type, "type_name": kinds.get(pkt.type, str(pkt.type))}
    for k in names:
        v = pkt.getfieldval(k)
        if k in ("model", "file", "text"):
            v = _txt(v)
        elif isinstance(v, bytes):
            v = v.hex()
        d[k] = v
    return d


# ---------------------------------------------------------------------------- pcap reading

class CppdpRecord(NamedTuple):
    time: float
    src: str          # "ip:port"
    dst: str
    proto: str        # "udp" or "tcp"
    decoded: Packet   # CPPDP, CPPDPFrame (check .malformed()), or Raw for foreign bytes


def packet_of(rec) -> Packet:
    """A :class:`pfslab.dissect.pcapfile.Record` as a Scapy packet of its link type (``Raw``
    when Scapy does not know the link type or cannot dissect the bytes)."""
    cls = conf.l2types.num2layer.get(rec.linktype, conf.raw_layer)
    try:
        pkt = cls(rec.data)
    except Exception:      # Scapy dissects leniently; never let hostile bytes escape
        pkt = conf.raw_layer(rec.data)
    pkt.time = rec.time
    pkt.wirelen = rec.orig_len
    return pkt


def iter_cppdp(pcap_path) -> Iterator[CppdpRecord]:
    """Every CPPDP message in a pcap or pcapng, in capture order: UDP datagrams on port 4051
    and the frames of TCP 4051 streams (reassembled by sequence number and frame length; a
    frame is reported at the time of the segment that completes it). Pure: reads the file
    only. Raises :class:`pfslab.dissect.pcapfile.NotACapture` for a file that is not one."""
    from .pcapfile import Capture
    yield from iter_cppdp_packets(packet_of(r) for r in Capture(pcap_path).records())


def iter_cppdp_packets(packets) -> Iterator[CppdpRecord]:
    """:func:`iter_cppdp` over any iterable of Scapy packets (with ``.time``), e.g. a
    PcapReader that another consumer also looks at."""
    reasm = Reassembler()
    for pkt in packets:
        seg = cppdp_segment(pkt)
        if seg is None:
            continue
        t = float(pkt.time)
        proto, src, sport, dst, dport, payload, seq, flags = seg
        s, d = f"{src}:{sport}", f"{dst}:{dport}"
        if proto == "udp":
            yield CppdpRecord(t, s, d, "udp", CPPDP(payload))
            continue
        for kind, b in reasm.tcp((src, sport, dst, dport), seq, flags, payload):
            yield CppdpRecord(t, s, d, "tcp",
                              conf.raw_layer(b) if kind == FOREIGN else CPPDPFrame(b))


def _payload(l4) -> bytes:
    """A UDP or TCP layer's payload as sent (the Ethernet trailer, if any, left out)."""
    payload = bytes(l4.payload)
    pad = l4.getlayer(conf.padding_layer)
    if pad is not None:
        payload = payload[:len(payload) - len(bytes(pad))]
    return payload


def cppdp_segment(pkt) -> Optional[tuple]:
    """The port-4051 part of one Scapy packet, or None: ``("udp", src, sport, dst, dport,
    payload, None, None)`` for a datagram (not a fragment, not empty), ``("tcp", src, sport,
    dst, dport, payload, seq, flags)`` for a segment (flags: FIN, SYN and RST bits)."""
    ip = pkt.getlayer(IP)
    if ip is None:
        return None
    udp = ip.getlayer(UDP)
    if udp is not None and PORT in (udp.sport, udp.dport):
        if ip.frag or ip.flags.MF:
            return None
        payload = _payload(udp)
        if not payload:
            return None
        return "udp", ip.src, udp.sport, ip.dst, udp.dport, payload, None, None
    tcp = ip.getlayer(TCP)
    if tcp is None or PORT not in (tcp.sport, tcp.dport):
        return None
    return "tcp", ip.src, tcp.sport, ip.dst, tcp.dport, _payload(tcp), tcp.seq, \
        int(tcp.flags) & (FIN | SYN | RST)


def tftp_datagram(pkt) -> Optional[tuple]:
    """``(src, sport, dst, dport, payload)`` of a Scapy packet's UDP datagram (not a
    fragment; the payload cut to the UDP length), or None."""
    ip = pkt.getlayer(IP)
    if ip is None:
        return None
    udp = ip.getlayer(UDP)
    if udp is None or ip.frag or ip.flags.MF:
        return None
    raw = bytes(udp.payload)
    if udp.len is not None and 8 <= udp.len <= 8 + len(raw):
        raw = raw[:udp.len - 8]          # Ethernet padding off
    return ip.src, udp.sport, ip.dst, udp.dport, raw
