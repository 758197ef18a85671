"""`pfslab decode` reads plain frames at fixed offsets (pfslab.dissect.wire) and leaves the
others to Scapy: both readers give the same report, frame for frame, on the reference
captures and on hostile ones (VLAN tags, fragments, IP and TCP options, Ethernet trailers,
lengths that disagree, mangled 4051 payloads, ports Scapy reads as another protocol)."""
import json
import pathlib
import random

import pytest

pytest.importorskip("scapy")

from scapy.layers.inet import IP, TCP, UDP  # noqa: E402
from scapy.layers.l2 import Dot1Q, Ether  # noqa: E402
from scapy.layers.tftp import TFTP, TFTP_ACK, TFTP_DATA, TFTP_RRQ  # noqa: E402
from scapy.packet import Raw  # noqa: E402
from scapy.utils import wrpcap  # noqa: E402

from pfslab.dissect import decode, fuzz, wire  # noqa: E402
from pfslab.dissect.pcapfile import Capture  # noqa: E402
from pfslab.dissect.scapy_cppdp import CPPDP, CPPDPFrame  # noqa: E402

SAMPLES = pathlib.Path(__file__).resolve().parent.parent / "pcaps" / "samples"
DIRS = sorted(d for d in SAMPLES.glob("*") if (d / "decode.json").is_file())


def both(paths, monkeypatch):
    """(the report as pfslab decode gives it, the report with every frame read by Scapy),
    and the scans of the first (to count the frames Scapy read)."""
    scans: list = []
    fast = json.loads(json.dumps(decode.decode_paths(paths, scans=scans)))
    with monkeypatch.context() as m:
        m.setattr(wire, "ether_l4", lambda data: wire.FALLBACK)
        m.setattr(decode.TftpTracker, "FAST", False)
        slow = json.loads(json.dumps(decode.decode_paths(paths)))
    return fast, slow, scans


@pytest.mark.parametrize("d", DIRS, ids=lambda d: d.name)
def test_samples_decode_alike_and_without_scapy(d, monkeypatch):
    fast, slow, scans = both([str(d)], monkeypatch)
    assert fast == slow
    assert fast == json.loads((d / "decode.json").read_text())   # the golden file
    assert sum(s.fallbacks for s in scans) == 0        # every frame of a lab run is plain
    assert sum(s.frames for s in scans) > 1000


def _cppdp_udp(src, dst, payload, t, **kw):
    p = Ether() / IP(src=src, dst=dst, **kw) / UDP(sport=4051, dport=4051) / payload
    p.time = t
    return p


def odd_frames():
    """Frames that are not plain, beside plain ones that mean the same."""
    kw = dict(model=b"CP-7961G", file=b"apps41.sbn", map=0x1234)
    claim = bytes(CPPDP(type=1, xid=0x11, strength=9, ad=0, **kw))
    root = bytes(CPPDP(type=2, xid=0x11, strength=0x80000009, server="10.0.0.10", **kw))
    offer = bytes(CPPDP(type=4, xid=0x11, parent="10.1.1.11", slot=0, depth=1, **kw))
    req = bytes(CPPDPFrame(type=0x11, xid=0x11, model=b"CP-7961G", file=b"apps41.sbn"))
    data = bytes(CPPDPFrame(type=0x14, data=b"z" * 300))
    end = bytes(CPPDPFrame(type=0x15))
    a, b, bc = "10.1.1.11", "10.1.1.12", "10.1.1.255"
    out = [_cppdp_udp(a, bc, claim, 1.0),
           _cppdp_udp(a, bc, root, 1.5, options=b"\x01\x01\x01\x00"),   # IP options
           Ether() / Dot1Q(vlan=5) / IP(src=a, dst=b) / UDP(sport=4051, dport=4051) / offer]
    out[-1].time = 1.6
    # the same datagram with an Ethernet trailer, and cut into IP fragments
    p = _cppdp_udp(b, bc, claim, 1.7)
    out.append(Ether(bytes(p) + b"\x00" * 9))
    out[-1].time = 1.7
    frag = Ether() / IP(src=b, dst=bc, flags="MF", proto=17) / bytes(UDP(
        sport=4051, dport=4051, len=8 + len(claim)) / claim)[:16]
    frag.time = 1.8
    out.append(frag)
    # a TCP transfer: SYN, REQUEST with TCP options, DATA split over two segments and one
    # out of order, END and FIN; then a second stream that breaks off mid-frame
    seq = 1000
    segs = [(b"", "S"), (req, "PA"), (data[:100], "PA"), (data[100:], "PA"), (end, "FPA")]
    t = 2.0
    for i, (pl, fl) in enumerate(segs):
        opts = [("NOP", None), ("NOP", None), ("Timestamp", (1, 2))] if i == 1 else []
        q = Ether() / IP(src=b, dst=a) / TCP(sport=40000, dport=4051, seq=seq, flags=fl,
                                             options=opts) / pl
        q.time = t
        t += 0.1
        out.append(q)
        seq += len(pl) + (1 if "S" in fl else 0)
    out[-2], out[-3] = out[-3], out[-2]          # out of order
    cut = Ether() / IP(src=a, dst=b) / TCP(sport=40001, dport=4051, seq=5, flags="S")
    cut.time = 3.0
    rest = Ether() / IP(src=a, dst=b) / TCP(sport=40001, dport=4051, seq=6, flags="RA") / req[:12]
    rest.time = 3.1
    out += [cut, rest]
    # lengths that disagree: a UDP length past the IP payload, an IP length past the frame
    bad_udp = _cppdp_udp(a, bc, claim, 3.2)
    bad_udp[UDP].len = 200
    bad_ip = Ether(bytes(_cppdp_udp(a, bc, claim, 3.3))[:-5])
    bad_ip.time = 3.3
    out += [bad_udp, bad_ip]
    # ports Scapy reads as another protocol (GRE in UDP), TFTP beside 4051
    gre = Ether() / IP(src=a, dst=b) / UDP(sport=4051, dport=4754) / claim
    gre.time = 3.4
    rrq = Ether() / IP(src=a, dst="10.0.0.10") / UDP(sport=5000, dport=69) / TFTP() / \
        TFTP_RRQ(filename=b"f.sbn", mode=b"octet")
    rrq.time = 3.5
    dat = Ether() / IP(src="10.0.0.10", dst=a) / UDP(sport=7000, dport=5000) / TFTP() / \
        TFTP_DATA(block=1) / Raw(b"q" * 10)
    dat.time = 3.6
    ack = Ether() / IP(src=a, dst="10.0.0.10") / UDP(sport=5000, dport=7000) / TFTP() / \
        TFTP_ACK(block=1)
    ack.time = 3.7
    short = Ether() / IP(src="10.0.0.10", dst=a) / UDP(sport=7000, dport=5000) / b"\x00\x03\x00"
    short.time = 3.8
    out += [gre, rrq, dat, ack, short]
    for p in out:
        if p.time is None:
            p.time = 4.0
    return out


def test_frames_that_are_not_plain_decode_as_with_scapy(tmp_path, monkeypatch):
    path = tmp_path / "subnet-1.pcap"
    wrpcap(str(path), odd_frames())
    fast, slow, scans = both([path], monkeypatch)
    assert fast == slow
    assert 0 < scans[0].fallbacks < scans[0].frames      # some went to Scapy, not all
    h = fast["hierarchies"]
    assert h and h[0]["root"] == "10.1.1.11"
    assert [t["bytes"] for t in h[0]["transfers"]] == [300]
    assert fast["pcaps"][0]["tftp_transfers"] == 1 and fast["malformed"] == 2
    wan = tmp_path / "wan.pcap"                    # the same frames as a WAN capture
    wan.write_bytes(path.read_bytes())
    fast, slow, _ = both([wan], monkeypatch)
    assert fast == slow and fast["tftp"]["complete"] == 1


def test_hostile_captures_decode_as_with_scapy(tmp_path, monkeypatch):
    from test_fuzz_decoders import hostile_packets           # mutated 4051 messages
    pk = [p for p, _ in hostile_packets(random.Random(11), 300)]
    for i, p in enumerate(pk):
        p.time = 1_700_000_000 + i * 0.01
    wrpcap(str(tmp_path / "subnet-1.pcap"), pk)
    fast, slow, _ = both([tmp_path / "subnet-1.pcap"], monkeypatch)
    assert fast == slow and fast["malformed"] > 50
    # the fuzz cases of `make fuzz`, and captures whose own bytes are mutated
    cs = fuzz.cases(600, 3)
    [(path, _)] = fuzz._pcaps(cs, tmp_path)
    fast, slow, _ = both([path], monkeypatch)
    assert fast == slow
    raw = (SAMPLES / "pfs" / "subnet-1.pcap").read_bytes()
    rnd = random.Random(5)
    for j in range(30):
        b = bytearray(raw[:rnd.randrange(2000, len(raw))])
        for _ in range(rnd.randint(1, 40)):
            b[rnd.randrange(24, len(b))] = rnd.randrange(256)
        bad = tmp_path / f"m{j}" / "subnet-1.pcap"
        bad.parent.mkdir()
        bad.write_bytes(bytes(b))
        fast, slow, _ = both([bad], monkeypatch)
        assert fast == slow, j


def tftp_frames(rnd: random.Random, n: int):
    """A TFTP exchange per client, with requests, OACKs, DATA and ACKs that are sometimes
    mangled (options without values, missing NULs, odd opcodes, short packets)."""
    out, t = [], 1.0
    srv = "10.0.0.10"

    def udp(src, sport, dst, dport, payload):
        nonlocal t
        p = Ether() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload
        p.time = t
        t += 0.01
        out.append(p)

    def mangle(b: bytes) -> bytes:
        r, i = rnd.random(), rnd.randrange(len(b) + 1)
        if r < 0.4:
            return b
        if r < 0.7:
            return fuzz.mutate(b, rnd)
        return b[:i] + rnd.choice([b"\0", b"x", b"blksize\0", b"\0\0"]) + b[i:]

    for i in range(n):
        c, port, tid = f"10.1.1.{10 + i}", 5000 + i, 7000 + i
        opts = rnd.choice([b"", b"blksize\x001428\0", b"BLKSIZE\x00512\0tsize\x000\0",
                           b"blksize\0abc\0"])
        udp(c, port, srv, 69, mangle(b"\0\1f%d.sbn\0octet\0" % i + opts))
        if rnd.random() < 0.3:
            udp(c, port, srv, 69, b"\0\1f%d.sbn\0octet\0" % i)        # retransmitted
        udp(srv, tid, c, port, mangle(b"\0\6" + opts) if opts else b"\0\3\0\1" + b"d" * 9)
        blk = 1428 if b"1428" in opts else 512
        for k in range(1, rnd.randint(2, 4)):
            udp(srv, tid, c, port, mangle(b"\0\3" + k.to_bytes(2, "big") + b"d" * blk))
            udp(c, port, srv, tid, mangle(b"\0\4" + k.to_bytes(2, "big")))
        udp(srv, tid, c, port, b"\0\3" + (k + 1).to_bytes(2, "big") + b"e" * 7)
        udp(c, port, srv, tid, mangle(b"\0\4" + (k + 1).to_bytes(2, "big")))
        if rnd.random() < 0.2:
            udp(c, port, srv, tid, mangle(b"\0\5\0\1oops\0"))
        if rnd.random() < 0.2:
            udp(srv, tid, c, port, mangle(b"\0\5\0\2no such file\0"))
    return out


def tracked(path, fast: bool, monkeypatch) -> tuple[list, int, list]:
    """A WAN capture's TFTP transfers as the tracker holds them (options asked and
    acknowledged included), its malformed count and examples."""
    with monkeypatch.context() as m:
        m.setattr(decode.TftpTracker, "FAST", fast)
        scan = decode.PcapScan(path).run()
    return scan.tftp.transfers, scan.tftp.malformed, scan.tftp.examples


def test_tftp_read_from_bytes_as_with_scapy(tmp_path, monkeypatch):
    for d in DIRS:
        fast, slow, _ = both([d / "wan.pcap"], monkeypatch)
        assert fast == slow and fast["tftp"]["transfers"] > 5
        assert tracked(d / "wan.pcap", True, monkeypatch) == \
            tracked(d / "wan.pcap", False, monkeypatch)
    path = tmp_path / "wan.pcap"
    wrpcap(str(path), tftp_frames(random.Random(69), 150))
    fast, slow, _ = both([path], monkeypatch)
    assert fast == slow
    assert fast["tftp"]["complete"] > 10 and fast["malformed"] > 10
    trs, bad, examples = tracked(path, True, monkeypatch)
    assert (trs, bad, examples) == tracked(path, False, monkeypatch)
    assert any(tr["oack"] and "tsize" in tr["oack"] for tr in trs)
    assert any(tr["asked"].get("blksize") == "1428" for tr in trs)


def test_fast_reader_gives_the_records_unchanged(tmp_path):
    """Capture.tuples reads in chunks: records that straddle a chunk's end come out whole."""
    from pfslab.dissect import pcapfile
    pk = odd_frames() * 3
    path = tmp_path / "a.pcap"
    wrpcap(str(path), pk)
    want = [bytes(p) for p in pk]
    old = pcapfile.CHUNK
    try:
        for chunk in (1, 7, 100, 1 << 20):
            pcapfile.CHUNK = chunk
            cap = Capture(path)
            assert [r[3] for r in cap.tuples()] == want, chunk
            assert not cap.truncated and cap.frames == len(pk)
    finally:
        pcapfile.CHUNK = old


@pytest.mark.parametrize("d", DIRS, ids=lambda d: d.name)
def test_messages_read_from_bytes_match_the_scapy_layers(d):
    """decode.iter_messages (report.html's ladder reads it) against iter_cppdp: the same
    messages, verdicts and field values; and the same ladder of every hierarchy."""
    from pfslab.dissect.scapy_cppdp import iter_cppdp
    from pfslab.view import figures
    path = d / "subnet-1.pcap"
    fast, slow = list(decode.iter_messages(path)), list(iter_cppdp(path))
    assert len(fast) == len(slow) and (len(fast) > 100 or d.name == "traditional")
    for f, s in zip(fast, slow):
        assert (f.time, f.src, f.dst, f.proto) == (s.time, s.src, s.dst, s.proto)
        assert f.decoded.malformed() == s.decoded.malformed()
        for name, v in f.decoded._fields_now().items():
            assert v == s.decoded.getfieldval(name), name
    for h in json.loads((d / "decode.json").read_text())["hierarchies"]:
        assert figures.ladder_messages(decode.iter_messages(path), h) == \
            figures.ladder_messages(iter_cppdp(path), h)


def test_a_plain_capture_decodes_without_loading_scapy():
    """Loading Scapy reads every network interface (seconds on a machine with a lab up): the
    decode of a lab run does without it, and assumes the bindings Scapy would have."""
    import subprocess
    import sys
    code = ("import sys, json\n"
            "from pfslab.dissect import decode\n"
            f"rep = decode.decode_paths([{str(SAMPLES / 'pfs')!r}])\n"
            "assert rep['hierarchies'] and rep['malformed'] == 0\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('scapy'))))\n"
            "import pfslab.dissect.scapy_cppdp, scapy.layers.tftp\n"
            "print(json.dumps([sorted(p) for p in decode._scapy_ports()]))\n"
            "print(json.dumps([sorted(p) for p in decode.SCAPY_PORTS]))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    loaded, ports, assumed = (json.loads(x) for x in p.stdout.splitlines())
    assert loaded == []
    assert ports == assumed
