"""File contents as the phone sees them: real bytes, or a :class:`Content` that stands for them.

The simulator runs 10^5 phones; a copy of an 8 MB load per phone, framed, hashed and joined
at every hop, would not fit in memory nor in time. There a file travels as its size and
SHA-256 only: a :class:`Content`. It stands in for the bytes everywhere the phone touches
them: ``len()``, the digest, the component check, and the stream that carries it (one
:class:`Framed` write with the exact wire length of HEADER + DATA frames + END). The agent
and the lab only ever hand the phone real bytes, and for them these helpers are the plain
operations.
"""
from __future__ import annotations

import hashlib

from .. import firmware
from . import codec
from .codec import FRAME_HEADER_LEN, MAX_FRAME, Frame, FrameReader, FrameType


class Content:
    """A file's bytes, known by size and digest only. Equal to bytes with the same digest."""
    __slots__ = ("size", "sha256")

    def __init__(self, size: int, sha256: bytes):
        self.size, self.sha256 = size, sha256

    @classmethod
    def of(cls, data: bytes) -> "Content":
        return cls(len(data), hashlib.sha256(data).digest())

    def __len__(self) -> int:
        return self.size

    def __eq__(self, other) -> bool:
        if isinstance(other, Content):
            return (self.size, self.sha256) == (other.size, other.sha256)
        if isinstance(other, (bytes, bytearray, memoryview)):
            return len(other) == self.size and hashlib.sha256(other).digest() == self.sha256
        return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        return f"Content({self.size}, {self.sha256.hex()[:12]}..)"


class Framed:
    """What a stream carries for a :class:`Content`: HEADER, DATA frames and END, by length."""
    __slots__ = ("content",)

    def __init__(self, content: Content):
        self.content = content

    def __len__(self) -> int:
        n = self.content.size
        frames = 2 + -(-n // MAX_FRAME)                # HEADER (36 bytes), END, DATA chunks
        return frames * FRAME_HEADER_LEN + 36 + n


def sha256(data) -> bytes:
    return data.sha256 if isinstance(data, Content) else hashlib.sha256(data).digest()


def verify(component: firmware.Component, data) -> bool:
    """firmware.verify, for bytes or a Content."""
    if isinstance(data, Content):
        return data.size == component.size and data.sha256.hex() == component.sha256
    return firmware.verify(component, data)


def join(parts: list):
    """The bytes of a stream's DATA frames (a transfer by Content is a single part)."""
    if len(parts) == 1 and isinstance(parts[0], Content):
        return parts[0]
    return b"".join(parts)


def framed(data):
    """A whole transfer on a stream: HEADER (size, digest), DATA frames, END."""
    if isinstance(data, Content):
        return Framed(data)
    chunks = [codec.encode_frame(Frame(FrameType.HEADER, size=len(data), sha256=sha256(data)))]
    view = memoryview(data)
    for off in range(0, len(data), MAX_FRAME):
        chunks.append(codec.encode_data(view[off:off + MAX_FRAME]))
    chunks.append(codec.encode_frame(Frame(FrameType.END)))
    return b"".join(chunks)


def feed(reader: FrameReader, data) -> list[Frame]:
    """``reader.feed(data)``, and the three frames a :class:`Framed` write stands for."""
    if isinstance(data, Framed):
        c = data.content
        return reader.feed(b"") + [Frame(FrameType.HEADER, size=c.size, sha256=c.sha256),
                                   Frame(FrameType.DATA, data=c), Frame(FrameType.END)]
    return reader.feed(data)
