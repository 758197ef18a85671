"""The agent codec against tests/vectors/cppdp.json: every vector decodes to its fields and
re-encodes to its hex. (tests/test_scapy_layers.py and tests/test_lua_dissector.py check the
other two decoders against the same file.)"""
import json
import pathlib

import pytest

from pfslab.protocol import codec

VECTORS = json.loads((pathlib.Path(__file__).parent / "vectors" / "cppdp.json").read_text())
UDP = VECTORS["udp"]
TCP = VECTORS["tcp"]


def _fields(obj, names):
    d = {}
    for k in names:
        v = getattr(obj, k)
        if k == "type":
            d["type"], d["type_name"] = int(v), v.name
        else:
            d[k] = v.hex() if isinstance(v, bytes) else v
    return d


def test_vectors_cover_every_kind():
    assert {v["fields"]["type"] for v in UDP} == {int(t) for t in codec.MsgType}
    assert {v["fields"]["type"] for v in TCP} == {int(t) for t in codec.FrameType}


@pytest.mark.parametrize("vec", UDP, ids=[v["name"] for v in UDP])
def test_udp_vector(vec):
    raw = bytes.fromhex(vec["hex"])
    m = codec.decode(raw)
    names = codec.COMMON_FIELDS + codec.BODY_FIELDS[m.type]
    assert _fields(m, names) == vec["fields"]
    assert codec.encode(m) == raw
    # built from the vector's fields alone (hash included) gives the same bytes
    kw = {k: v for k, v in vec["fields"].items() if k not in ("type", "type_name")}
    assert codec.encode(codec.Message(type=codec.MsgType(vec["fields"]["type"]), **kw)) == raw


@pytest.mark.parametrize("vec", TCP, ids=[v["name"] for v in TCP])
def test_tcp_vector(vec):
    raw = bytes.fromhex(vec["hex"])
    assert codec.frame_length(raw) == len(raw)
    f = codec.decode_frame(raw)
    assert _fields(f, ("type",) + codec.FRAME_FIELDS[f.type]) == vec["fields"]
    assert codec.encode_frame(f) == raw
    kw = {k: (bytes.fromhex(v) if k in ("sha256", "data") else v)
          for k, v in vec["fields"].items() if k not in ("type", "type_name")}
    assert codec.encode_frame(codec.Frame(codec.FrameType(vec["fields"]["type"]), **kw)) == raw


def test_tcp_vectors_reassemble_byte_by_byte():
    stream = b"".join(bytes.fromhex(v["hex"]) for v in TCP)
    r = codec.FrameReader()
    got = []
    for i in range(len(stream)):
        got += r.feed(stream[i:i + 1])
    assert [codec.encode_frame(f) for f in got] == [bytes.fromhex(v["hex"]) for v in TCP]
