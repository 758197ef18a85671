"""The Scapy layers against tests/vectors/cppdp.json: dissecting every vector's hex gives its
fields, and building the packet from the fields gives its bytes. Plus binding, reassembly,
summaries and malformed handling."""
import json
import pathlib

import pytest

pytest.importorskip("scapy")

from scapy.layers.inet import IP, TCP, UDP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.packet import Padding, Raw  # noqa: E402
from scapy.sessions import TCPSession  # noqa: E402
from scapy.utils import wrpcap  # noqa: E402
from scapy.sendrecv import sniff  # noqa: E402

from pfslab.dissect.scapy_cppdp import (CPPDP, CPPDPFrame, cppdp_fields,  # noqa: E402
                                        iter_cppdp)

VECTORS = json.loads((pathlib.Path(__file__).parent / "vectors" / "cppdp.json").read_text())
UDPV, TCPV = VECTORS["udp"], VECTORS["tcp"]


def _kwargs(fields):
    kw = {k: v for k, v in fields.items() if k != "type_name"}
    for k in ("sha256", "data"):
        if k in kw:
            kw[k] = bytes.fromhex(kw[k])
    return kw


@pytest.mark.parametrize("vec", UDPV, ids=[v["name"] for v in UDPV])
def test_udp_vector(vec):
    raw = bytes.fromhex(vec["hex"])
    p = CPPDP(raw)
    assert cppdp_fields(p) == vec["fields"]
    assert p.malformed() is None
    assert bytes(p) == raw
    built = CPPDP(**_kwargs(vec["fields"]))   # lengths and hash filled by post_build
    assert bytes(built) == raw
    kw = _kwargs(vec["fields"])
    kw.pop("hash")
    assert bytes(CPPDP(**kw)) == raw         # hash defaults to CRC-32 of the file name


@pytest.mark.parametrize("vec", TCPV, ids=[v["name"] for v in TCPV])
def test_tcp_vector(vec):
    raw = bytes.fromhex(vec["hex"])
    p = CPPDPFrame(raw)
    assert cppdp_fields(p) == vec["fields"]
    assert p.malformed() is None
    assert not p.payload
    assert bytes(p) == raw
    assert bytes(CPPDPFrame(**_kwargs(vec["fields"]))) == raw


def test_field_names_mirror_the_wireshark_fields():
    """A vector field x is Scapy's field x and Wireshark's cppdp.x (cppdp.frame.type for a
    frame's type): one name for one field in all three decoders."""
    for layer, kind in ((CPPDP, "udp"), (CPPDPFrame, "tcp")):
        names = {f.name for f in layer.fields_desc}
        for field, ws in VECTORS["wireshark_fields"][kind].items():
            assert field in names, (layer.__name__, field)
            assert ws in (f"cppdp.{field}", f"cppdp.frame.{field}"), ws


def test_bound_to_port_4051_both_ways():
    claim = bytes.fromhex(UDPV[1]["hex"])
    for sport, dport in ((4051, 4051), (4051, 1234), (1234, 4051)):
        p = Ether(bytes(Ether() / IP() / UDP(sport=sport, dport=dport) / claim))
        assert CPPDP in p and p[CPPDP].ad == 2
    req = bytes.fromhex(TCPV[0]["hex"])
    for sport, dport in ((40000, 4051), (4051, 40000)):
        p = Ether(bytes(Ether() / IP() / TCP(sport=sport, dport=dport) / req))
        assert CPPDPFrame in p and p[CPPDPFrame].xid == 0x080027F8
    # building sets the port
    assert (IP() / UDP() / CPPDP())[UDP].dport == 4051
    assert (IP() / TCP() / CPPDPFrame())[TCP].dport == 4051


def test_summaries_read_like_phone_logs():
    s = [CPPDP(bytes.fromhex(v["hex"])).summary() for v in UDPV]
    assert s[0].startswith("PFS ClaimRoot(tent) offer XID080027F8 m=CP-7961G")
    assert s[1].startswith("PFS ClaimRoot(tent) Ad 2 XID080027F8 m=CP-7961G")
    assert s[2] == ("PFS ROOT XID080027F8 H=D103C4C6 m=CP-7961G ROOT=10.0.0.10 "
                    "SCCP41.9-4-2SR3-1S.loads")
    full = Ether(bytes(Ether() / IP(src="10.1.1.11", dst="10.1.1.255") / UDP(sport=4051, dport=4051)
                       / bytes.fromhex(UDPV[1]["hex"]))).summary()
    assert "UDP 10.1.1.11:4051 > 10.1.1.255:4051 / PFS ClaimRoot(tent) Ad 2" in full
    t = CPPDPFrame(b"".join(bytes.fromhex(v["hex"]) for v in TCPV[2:5])).summary()
    assert t == "PFS HEADER size=11 sha256=b94d27b9934d3e08 / PFS DATA 11 bytes / PFS END"


def test_several_frames_in_one_segment_stack():
    raw = b"".join(bytes.fromhex(v["hex"]) for v in TCPV)
    p = CPPDPFrame(raw)
    frames = []
    while isinstance(p, CPPDPFrame):
        frames.append(p)
        p = p.payload
    assert [f.type for f in frames] == [v["fields"]["type"] for v in TCPV]
    assert all(f.malformed() is None for f in frames)
    assert bytes(frames[0]) == raw


def test_foreign_bytes_are_raw():
    for junk in (b"", b"C", b"CPD", b"GET / HTTP/1.0\r\n\r\n", b"\x00" * 40):
        if junk:
            assert isinstance(CPPDP(junk), Raw)
            assert isinstance(CPPDPFrame(junk), Raw)
    p = Ether(bytes(Ether() / IP() / UDP(sport=4051, dport=4051) / b"hello"))
    assert CPPDP not in p and Raw in p


@pytest.mark.parametrize("raw,why", [
    (bytes.fromhex(UDPV[0]["hex"])[:30], "length field"),
    (bytes.fromhex(UDPV[0]["hex"]) + b"x", "length field"),
    (bytes.fromhex(UDPV[0]["hex"])[:4] + b"\x02" + bytes.fromhex(UDPV[0]["hex"])[5:],
     "version"),
    (bytes.fromhex(UDPV[0]["hex"])[:5] + b"\x09" + bytes.fromhex(UDPV[0]["hex"])[6:],
     "message type"),
])
def test_malformed_datagrams_are_marked(raw, why):
    p = CPPDP(raw)
    assert why in p.malformed()
    assert "[malformed:" in p.summary()
    assert bytes(p) == raw   # dissection loses nothing


def test_tcp_session_reassembles_a_split_frame(tmp_path):
    hdr, data, end = (bytes.fromhex(v["hex"]) for v in TCPV[2:5])
    stream = hdr + data + end
    cut = len(hdr) + 7    # inside the DATA frame
    base = Ether() / IP(src="10.1.1.11", dst="10.1.1.12")
    pkts = [base / TCP(sport=4051, dport=40000, flags="PA", seq=1000) / stream[:cut],
            base / TCP(sport=4051, dport=40000, flags="PA", seq=1000 + cut) / stream[cut:]]
    path = tmp_path / "split.pcap"
    wrpcap(str(path), pkts)
    got = sniff(offline=str(path), session=TCPSession)
    frames = []
    for p in got:
        f = p.getlayer(CPPDPFrame)
        while isinstance(f, CPPDPFrame):
            frames.append(f)
            f = f.payload
    assert [f.type for f in frames] == [0x13, 0x14, 0x15]
    assert frames[1].data == b"hello world"
    # and the pure pcap iterator
    recs = list(iter_cppdp(path))
    assert [r.decoded.type for r in recs] == [0x13, 0x14, 0x15]
    assert recs[1].src == "10.1.1.11:4051" and recs[1].proto == "tcp"
    assert recs[1].decoded.data == b"hello world"


def test_iter_cppdp_udp_and_foreign(tmp_path):
    base = Ether() / IP(src="10.1.1.11", dst="10.1.1.255") / UDP(sport=4051, dport=4051)
    path = tmp_path / "u.pcap"
    wrpcap(str(path), [base / bytes.fromhex(v["hex"]) for v in UDPV] + [base / b"junk"])
    recs = list(iter_cppdp(path))
    assert [cppdp_fields(r.decoded) for r in recs[:-1]] == [v["fields"] for v in UDPV]
    assert isinstance(recs[-1].decoded, Raw)
    assert all(r.proto == "udp" for r in recs)


def test_padding_does_not_make_a_datagram_malformed():
    raw = bytes.fromhex(UDPV[6]["hex"])       # short enough to be padded? make sure it is
    p = Ether(bytes(Ether() / IP() / UDP(sport=4051, dport=4051) / raw) + b"\x00" * 20)
    assert p[CPPDP].malformed() is None
    assert Padding in p


# ------------------------------------------------------------------ pfslab decode (first cut)

def _exchange_pcap(path):
    """A CLAIM/ROOT/JOIN/OFFER exchange among 4 phones, two TCP transfers, READYs."""
    F, M, MAP = "apps41.9-4-2ES26.sbn", "CP-7961G", 0xFF9D7CB9
    root, b = "10.1.1.11", "10.1.1.255"
    phones = ["10.1.1.11", "10.1.1.12", "10.1.1.13", "10.1.1.14"]
    common = dict(model=M, file=F, map=MAP)
    pk, t = [], [0.0]

    def udp(src, dst, msg, dt=0.01):
        t[0] += dt
        p = Ether() / IP(src=src, dst=dst) / UDP(sport=4051, dport=4051) / msg
        p.time = t[0]
        pk.append(p)

    for ad in range(5):
        for i, ip in enumerate(phones[:3]):
            if ip != root and ad > 1:
                continue              # the weaker claimants yield after ad 1
            udp(ip, b, CPPDP(type=1, ad=ad, xid=0x100 + i, strength=0x1000 - i, **common))
    udp(root, b, CPPDP(type=2, xid=0x100, strength=0x80001000, server="10.0.0.10", **common))
    for slot_parent, ip in zip([(root, 0, 1), (root, 1, 1), ("10.1.1.12", 0, 2)], phones[1:]):
        udp(ip, root, CPPDP(type=3, xid=0x100, **common))
        par, slot, depth = slot_parent
        udp(root, ip, CPPDP(type=4, xid=0x100, parent=par, slot=slot, depth=depth, **common))
    seq = {}

    def tcp(src, sport, dst, dport, frames):
        t[0] += 0.01
        k = (src, sport)
        s = seq.setdefault(k, 1000)
        raw = b"".join(bytes(f) for f in frames)
        p = Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="PA",
                                                  seq=s) / raw
        p.time = t[0]
        seq[k] = s + len(raw)
        pk.append(p)

    for child, port in (("10.1.1.12", 40000), ("10.1.1.13", 40001)):
        tcp(child, port, root, 4051, [CPPDPFrame(type=0x11, xid=0x100, model=M, file=F)])
        tcp(root, 4051, child, port, [CPPDPFrame(type=0x13, size=11, sha256=b"\x01" * 32),
                                      CPPDPFrame(type=0x14, data=b"hello")])
        tcp(root, 4051, child, port, [CPPDPFrame(type=0x14, data=b" world"),
                                      CPPDPFrame(type=0x15)])
    udp(root, b, CPPDP(type=6, xid=0x100, source=0, size=11, **common))
    udp("10.1.1.12", b, CPPDP(type=6, xid=0x100, source=1, size=11, **common))
    wrpcap(str(path), pk)


def test_decode_rebuilds_election_and_tree(tmp_path, capsys):
    import argparse
    from pfslab.dissect import decode
    path = tmp_path / "subnet-1.pcap"
    _exchange_pcap(path)
    [h] = decode.decode_paths([path])["hierarchies"]
    assert (h["model"], h["file"], h["xid"], h["root"]) == \
        ("CP-7961G", "apps41.9-4-2ES26.sbn", "0x00000100", "10.1.1.11")
    claims = h["election"]["claims"]
    assert [c["ip"] for c in claims] == ["10.1.1.11", "10.1.1.12", "10.1.1.13"]
    assert claims[0]["ads"] == [0, 1, 2, 3, 4] and max(claims[1]["ads"]) == 1
    assert claims[0]["won"] and h["election"]["winner"] == "10.1.1.11"
    assert {(o["phone"], o["parent"], o["slot"], o["depth"]) for o in h["tree"]} == {
        ("10.1.1.12", "10.1.1.11", 0, 1), ("10.1.1.13", "10.1.1.11", 1, 1),
        ("10.1.1.14", "10.1.1.12", 0, 2)}
    assert [(tr["child"], tr["bytes"], tr["end_s"] is not None) for tr in h["transfers"]] == \
        [("10.1.1.12", 11, True), ("10.1.1.13", 11, True)]
    assert h["edges"] == [["10.1.1.11", "10.1.1.12"], ["10.1.1.11", "10.1.1.13"]]
    assert [(c["phone"], c["source"]) for c in h["completion"] if c["via"] == "READY"] == \
        [("10.1.1.11", "TFTP"), ("10.1.1.12", "peer")]

    p = argparse.ArgumentParser()
    decode.add_arguments(p)
    assert decode.run(p.parse_args([str(path)])) == 0
    text = capsys.readouterr().out
    assert "root 10.1.1.11" in text and "└── 10.1.1.14" in text
    assert decode.run(p.parse_args([str(path), "--json"])) == 0
    assert json.loads(capsys.readouterr().out)["hierarchies"][0]["root"] == "10.1.1.11"
