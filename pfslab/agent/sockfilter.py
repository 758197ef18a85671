"""Kernel-side filters for a phone's UDP 4051 socket (classic BPF, ``SO_ATTACH_FILTER``).

Every broadcast on a subnet reaches every phone's socket. The protocol then throws most of
them away at once: everything before the phone knows it does PFS, its own broadcasts, and
messages of another model's or another load's hierarchy (``Phone.on_datagram``'s first
checks). With many phones in one process, reading those datagrams only to drop them is what
costs the most, so the same checks run in the kernel, before the datagram is queued:

* :func:`drop_all` while the phone does not do PFS (no config yet, or PFS off);
* :func:`pfs_filter` (own IP, model, load map) once it does.

A datagram without the CPPDP magic, or whose length field disagrees with its size, always
passes, so that the protocol logs it as malformed exactly as before. The kernel counts the
datagrams a filter drops in the namespace's UDP ``InErrors`` (not ``RcvbufErrors``).

Offsets: a UDP socket's filter sees the packet from the UDP header (the payload starts at 8);
``SKF_NET_OFF`` reaches the IP header.
"""
from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct

from ..protocol import codec

SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
SKF_NET_OFF = -0x100000
UDP_HDR = 8

# opcodes (linux/filter.h)
_LD_W, _LD_H, _LD_B = 0x20, 0x28, 0x30     # BPF_LD | size | BPF_ABS
_JEQ_K, _JEQ_X = 0x15, 0x1D
_SUB_K, _TAX, _RET_K = 0x14, 0x07, 0x06
ACCEPT, DROP = "accept", "drop"
_KEEP = 0x7FFFFFFF                           # "keep the whole datagram"


def _assemble(prog: list[tuple]) -> list[tuple[int, int, int, int]]:
    """(code, jt, jf, k) with jt/jf given as 0 (next) or ACCEPT/DROP; both exits appended."""
    n = len(prog)
    where = {ACCEPT: n, DROP: n + 1}
    out = []
    for i, (code, jt, jf, k) in enumerate(prog):
        rel = [0 if j == 0 else where[j] - i - 1 for j in (jt, jf)]
        out.append((code, rel[0], rel[1], k & 0xFFFFFFFF))
    out += [(_RET_K, 0, 0, _KEEP), (_RET_K, 0, 0, 0)]
    return out


def drop_all() -> list[tuple[int, int, int, int]]:
    return [(_RET_K, 0, 0, 0)]


def pfs_filter(own_ip: str, model: str, load_map: int) -> list[tuple[int, int, int, int]]:
    """Pass what ``Phone.on_datagram`` would look at; drop own, other-model, other-load ones."""
    p = UDP_HDR
    prog = [
        (_LD_W, 0, 0, SKF_NET_OFF + 12),                        # IP source
        (_JEQ_K, DROP, 0, int(ipaddress.IPv4Address(own_ip))),
        (_LD_W, 0, 0, p),                                       # magic
        (_JEQ_K, 0, ACCEPT, struct.unpack("!I", codec.MAGIC)[0]),
        (_LD_H, 0, 0, 4), (_SUB_K, 0, 0, UDP_HDR), (_TAX, 0, 0, 0),
        (_LD_H, 0, 0, p + 6),                                   # the length field
        (_JEQ_X, 0, ACCEPT, 0),
        (_LD_W, 0, 0, p + 16),                                  # map
        (_JEQ_K, 0, DROP, load_map),
    ]
    name = model.encode("ascii")
    off = p + codec.HEADER_LEN
    prog += [(_LD_B, 0, 0, off), (_JEQ_K, 0, DROP, len(name))]
    off, i = off + 1, 0
    while i < len(name):
        size = 4 if len(name) - i >= 4 else 2 if len(name) - i >= 2 else 1
        op = {4: _LD_W, 2: _LD_H, 1: _LD_B}[size]
        prog += [(op, 0, 0, off + i), (_JEQ_K, 0, DROP, int.from_bytes(name[i:i + size], "big"))]
        i += size
    return _assemble(prog)


def attach(sock: socket.socket, prog: list[tuple[int, int, int, int]]) -> None:
    """Attach (or replace) ``sock``'s filter."""
    buf = (ctypes.c_ubyte * (8 * len(prog)))()
    for i, ins in enumerate(prog):
        struct.pack_into("HBBI", buf, 8 * i, *ins)
    fprog = struct.pack("HL", len(prog), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
