"""The agent codec: every message kind round-trips; hostile bytes raise only DecodeError."""
import hashlib

import pytest
from hypothesis import given, settings, strategies as st

from pfslab.protocol import codec
from pfslab.protocol.codec import (BODY_FIELDS, DecodeError, Frame, FrameReader, FrameType,
                                   Message, MsgType)

BASE = dict(xid=0x080027F8, strength=0x31D4D43D, map=0xFF9D7CB9, model="CP-7961G",
            file="apps41.9-4-2ES26.sbn")
BODIES = {MsgType.CLAIM: dict(ad=3), MsgType.ROOT: dict(server="10.0.0.10"),
          MsgType.JOIN: dict(lost_parent="10.1.1.12"),
          MsgType.OFFER: dict(parent="10.1.1.11", slot=1, depth=4),
          MsgType.REFUSE: dict(reason=1), MsgType.READY: dict(source=1, size=3157527)}
FRAMES = [Frame(FrameType.REQUEST, xid=7, model="CP-7941G", file="cnu41.9-4-2ES26.sbn"),
          Frame(FrameType.HOLD, have=1, total=2),
          Frame(FrameType.HEADER, size=3, sha256=hashlib.sha256(b"abc").digest()),
          Frame(FrameType.DATA, data=b"abc"), Frame(FrameType.END),
          Frame(FrameType.ABORT, reason=1, text="both child slots taken")]


def test_every_message_kind_round_trips():
    assert set(BODIES) == set(MsgType) == set(BODY_FIELDS)
    for t, body in BODIES.items():
        m = Message(t, **BASE, **body)
        raw = codec.encode(m)
        assert len(raw) <= codec.MAX_DATAGRAM
        assert codec.decode(raw) == m
        assert raw[6:8] == len(raw).to_bytes(2, "big")


def test_every_frame_kind_round_trips_and_reassembles_byte_by_byte():
    assert {f.type for f in FRAMES} == set(FrameType)
    stream = b"".join(codec.encode_frame(f) for f in FRAMES)
    r = FrameReader()
    got = []
    for i in range(len(stream)):
        got += r.feed(stream[i:i + 1])
    assert got == FRAMES
    assert codec.encode_data(b"abc") == codec.encode_frame(Frame(FrameType.DATA, data=b"abc"))


def test_oversized_inputs_are_rejected():
    raw = codec.encode(Message(MsgType.CLAIM, **BASE))
    with pytest.raises(DecodeError):
        codec.decode(raw + b"\x00")                    # length field no longer matches
    with pytest.raises(DecodeError):
        FrameReader().feed(codec.MAGIC + bytes([1, 0x14]) + (codec.MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(ValueError):
        codec.encode(Message(MsgType.CLAIM, **{**BASE, "model": "X" * 65}))


@given(st.binary(max_size=600))
@settings(max_examples=500)
def test_random_bytes_raise_only_decode_error(data):
    try:
        codec.decode(data)
    except DecodeError:
        pass
    try:
        FrameReader().feed(data)
    except DecodeError:
        pass


@given(st.sampled_from(sorted(BODIES)), st.integers(0, 80), st.binary(min_size=1, max_size=4))
def test_truncated_and_mutated_messages_raise_only_decode_error(t, cut, junk):
    raw = codec.encode(Message(t, **BASE, **BODIES[t]))
    for bad in (raw[:cut], raw[:cut] + junk + raw[cut + len(junk):], raw + junk):
        if bad == raw:
            continue
        try:
            m = codec.decode(bad)
        except DecodeError:
            continue
        assert codec.encode(m) == bad      # whatever decodes must re-encode to the same bytes
