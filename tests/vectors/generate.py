"""Regenerates tests/vectors/cppdp.json from the agent codec: `python tests/vectors/generate.py`.

The JSON is the contract shared by the three decoders (agent codec, Scapy, Wireshark Lua).
Regenerate only when the wire format changes on purpose, and review the diff.
"""
import hashlib
import json
import pathlib

from pfslab.protocol.codec import (BODY_FIELDS, COMMON_FIELDS, FRAME_FIELDS, Frame, FrameType,
                                   Message, MsgType, encode, encode_frame)

M = dict(xid=0x080027F8, strength=0x31D4D43D, map=0xFF9D7CB9, model="CP-7961G")
F = "SCCP41.9-4-2SR3-1S.loads"
MESSAGES = {
    "claim_offer": Message(MsgType.CLAIM, file=F, ad=0, **M),
    "claim_ad2": Message(MsgType.CLAIM, file=F, ad=2, **M),
    "root": Message(MsgType.ROOT, file=F, server="10.0.0.10", **{**M, "strength": 0xB1D4D43D}),
    "join": Message(MsgType.JOIN, file="apps41.9-4-2ES26.sbn", lost_parent="0.0.0.0", **M),
    "join_lost": Message(MsgType.JOIN, file="apps41.9-4-2ES26.sbn", lost_parent="10.1.1.12", **M),
    "offer": Message(MsgType.OFFER, file="apps41.9-4-2ES26.sbn", parent="10.1.1.11", slot=1,
                     depth=2, **M),
    "refuse_full": Message(MsgType.REFUSE, file="apps41.9-4-2ES26.sbn", reason=1, **M),
    "ready": Message(MsgType.READY, file="dsp41.9-4-2ES26.sbn", source=1, size=562693, **M),
}
FRAMES = {
    "request": Frame(FrameType.REQUEST, xid=0x080027F8, model="CP-7941G",
                     file="cnu41.9-4-2ES26.sbn"),
    "hold": Frame(FrameType.HOLD, have=65536, total=556833),
    "header": Frame(FrameType.HEADER, size=11, sha256=hashlib.sha256(b"hello world").digest()),
    "data": Frame(FrameType.DATA, data=b"hello world"),
    "end": Frame(FrameType.END),
    "abort": Frame(FrameType.ABORT, reason=3, text="upstream lost"),
}


def fields(obj, names):
    d = {}
    for k in names:
        v = getattr(obj, k)
        if k == "type":
            d["type"] = int(v)
            d["type_name"] = v.name
        elif isinstance(v, bytes):
            d[k] = v.hex()
        else:
            d[k] = v
    return d


def wireshark_fields():
    """Each vector field's Wireshark name: the protocol's filter name, ``cppdp``, then the
    field (a TCP frame's own header fields under ``cppdp.frame.``), as Wireshark's own
    dissectors name theirs."""
    udp = {k for t in MsgType for k in COMMON_FIELDS + BODY_FIELDS[t]}
    tcp = {k for t in FrameType for k in FRAME_FIELDS[t]}
    return {"udp": {k: f"cppdp.{k}" for k in sorted(udp)},
            "tcp": {"type": "cppdp.frame.type",
                    **{k: f"cppdp.{k}" for k in sorted(tcp)}}}


def main():
    out = {"wireshark_fields": wireshark_fields(), "udp": [], "tcp": []}
    for name, m in MESSAGES.items():
        out["udp"].append({"name": name, "hex": encode(m).hex(), "fields": fields(m, COMMON_FIELDS + BODY_FIELDS[m.type])})
    for name, f in FRAMES.items():
        out["tcp"].append({"name": name, "hex": encode_frame(f).hex(), "fields": fields(f, ("type",) + FRAME_FIELDS[f.type])})
    path = pathlib.Path(__file__).with_name("cppdp.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
