"""tshark with pfslab/dissect/cppdp.lua against tests/vectors/cppdp.json: every field of every
vector, TCP reassembly of a frame split over two segments, Info column text equal to the
Scapy summary, rejection of foreign traffic, and no Lua errors."""
import json
import pathlib
import re
import shutil
import subprocess

import pytest

pytest.importorskip("scapy")

from scapy.layers.inet import IP, TCP, UDP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.utils import wrpcap  # noqa: E402

from pfslab.dissect.scapy_cppdp import CPPDP, CPPDPFrame  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
LUA = ROOT / "pfslab" / "dissect" / "cppdp.lua"
VECTORS = json.loads((ROOT / "tests" / "vectors" / "cppdp.json").read_text())
TSHARK = shutil.which("tshark")

pytestmark = pytest.mark.skipif(
    TSHARK is None, reason="tshark is not installed (Debian package tshark; sudo make test "
                           "installs it)")

PARENT, CHILD, BCAST = "10.1.1.11", "10.1.1.12", "10.1.1.255"


def tshark(pcap, *args):
    """Run tshark with the Lua script; returns stdout and asserts a clean run."""
    p = subprocess.run([TSHARK, "-n", "-X", f"lua_script:{LUA}", "-r", str(pcap), *args],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert not lua_errors(p.stderr), p.stderr
    assert "cppdp.internal_error" not in p.stdout
    return p.stdout


def lua_errors(stderr: str):
    """Lines of tshark's stderr that report a Lua problem (the root warning is fine)."""
    return [ln for ln in stderr.splitlines()
            if re.search(r"lua|error|attempt to|stack traceback", ln, re.I)]


def packets_json(pcap):
    out = json.loads(tshark(pcap, "-T", "json", "--no-duplicate-keys", "-J", "frame cppdp"))
    return {int(p["_source"]["layers"]["frame"]["frame.number"]): p["_source"]["layers"]
            for p in out}


def info_column(pcap):
    rows = tshark(pcap, "-T", "fields", "-e", "frame.number", "-e", "_ws.col.Info",
                  "-e", "_ws.col.Protocol").splitlines()
    return {int(n): (info, proto) for n, info, proto in (r.split("\t") for r in rows)}


def norm(key, value):
    """A tshark JSON value in the vectors' representation."""
    if key in ("xid", "strength", "map", "hash", "type", "ad", "slot", "depth", "reason",
               "source", "size", "have", "total"):
        return int(value, 0)
    if key in ("sha256", "data"):
        return value.replace(":", "")
    return value


def lua_fields(cppdp, expected, tcp):
    names = VECTORS["wireshark_fields"]["tcp" if tcp else "udp"]
    got = {}
    for k in expected:
        if k == "type_name":
            continue
        name = names[k]
        assert name in cppdp, f"{name} missing in {cppdp}"
        got[k] = norm(k, cppdp[name])
    return got


@pytest.fixture(scope="module")
def vector_pcap(tmp_path_factory):
    """UDP vectors, then one TCP connection (child REQUEST to the parent's 4051, parent's
    frames back) with the DATA frame split over two segments, then one segment holding
    HEADER+DATA+END, then foreign traffic on 4051. Returns (pcap, expectations)."""
    pkts, expect = [], {}   # expect: frame number -> ("udp"|"tcp", vector) or "foreign"
    for v in VECTORS["udp"]:
        pkts.append(Ether() / IP(src=PARENT, dst=BCAST) / UDP(sport=4051, dport=4051)
                    / bytes.fromhex(v["hex"]))
        expect[len(pkts)] = ("udp", v)
    c2p = Ether() / IP(src=CHILD, dst=PARENT)
    p2c = Ether() / IP(src=PARENT, dst=CHILD)
    cseq, pseq = 5000, 9000
    pkts += [c2p / TCP(sport=40000, dport=4051, flags="S", seq=cseq - 1),
             p2c / TCP(sport=4051, dport=40000, flags="SA", seq=pseq - 1, ack=cseq),
             c2p / TCP(sport=40000, dport=4051, flags="A", seq=cseq, ack=pseq)]
    for v in VECTORS["tcp"]:
        raw = bytes.fromhex(v["hex"])
        if v["fields"]["type_name"] == "REQUEST":
            pkts.append(c2p / TCP(sport=40000, dport=4051, flags="PA", seq=cseq, ack=pseq)
                        / raw)
            cseq += len(raw)
        elif v["fields"]["type_name"] == "DATA":
            cut = 13   # 3 bytes into the DATA payload
            pkts.append(p2c / TCP(sport=4051, dport=40000, flags="PA", seq=pseq, ack=cseq)
                        / raw[:cut])
            pseq += cut
            expect[len(pkts)] = "segment"
            pkts.append(p2c / TCP(sport=4051, dport=40000, flags="PA", seq=pseq, ack=cseq)
                        / raw[cut:])
            pseq += len(raw) - cut
        else:
            pkts.append(p2c / TCP(sport=4051, dport=40000, flags="PA", seq=pseq, ack=cseq)
                        / raw)
            pseq += len(raw)
        expect[len(pkts)] = ("tcp", v)
    three = b"".join(bytes.fromhex(v["hex"]) for v in VECTORS["tcp"][2:5])
    pkts.append(Ether() / IP(src=PARENT, dst="10.1.1.13")
                / TCP(sport=4051, dport=40001, flags="PA", seq=100, ack=1) / three)
    expect[len(pkts)] = ("stack", three)
    pkts.append(Ether() / IP(src=PARENT, dst=BCAST) / UDP(sport=4051, dport=4051)
                / b"not CPPDP at all")
    expect[len(pkts)] = "foreign"
    pkts.append(Ether() / IP(src=PARENT, dst=CHILD) / TCP(sport=4051, dport=40002, flags="PA")
                / b"GET / HTTP/1.0\r\n\r\n")
    expect[len(pkts)] = "foreign"
    pcap = tmp_path_factory.mktemp("lua") / "vectors.pcap"
    wrpcap(str(pcap), pkts)
    return pcap, expect


def registered_fields():
    """{field name: protocol} of every field that tshark knows with the script loaded."""
    p = subprocess.run([TSHARK, "-G", "fields", "-X", f"lua_script:{LUA}"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return {r[2]: r[4] for r in (ln.split("\t") for ln in p.stdout.splitlines())
            if r[0] == "F" and len(r) > 4}


def test_fields_take_the_protocols_filter_name():
    """Like Wireshark's own dissectors: every field of protocol cppdp is cppdp.<something>,
    and the vectors' Wireshark names are exactly the fields that the script registers."""
    fields = registered_fields()
    ours = {name for name, proto in fields.items() if proto == "cppdp"}
    assert ours and all(name.startswith("cppdp.") for name in ours), sorted(ours)
    named = {n for kind in VECTORS["wireshark_fields"].values() for n in kind.values()}
    assert named <= ours, sorted(named - ours)
    assert not any(name.startswith("pfs.") for name in fields)


def test_every_vector_decodes_to_its_fields(vector_pcap):
    pcap, expect = vector_pcap
    layers = packets_json(pcap)
    seen = set()
    for num, e in expect.items():
        if not isinstance(e, tuple) or e[0] == "stack":
            continue
        proto, v = e
        assert "cppdp" in layers[num], f"frame {num} ({v['name']}) not dissected as cppdp"
        cppdp = layers[num]["cppdp"]
        assert lua_fields(cppdp, v["fields"], proto == "tcp") == \
            {k: x for k, x in v["fields"].items() if k != "type_name"}, v["name"]
        assert "_ws.expert" not in cppdp, v["name"]
        seen.add(v["name"])
    assert seen == {v["name"] for v in VECTORS["udp"] + VECTORS["tcp"]}


def test_info_column_matches_scapy_summary(vector_pcap):
    pcap, expect = vector_pcap
    info = info_column(pcap)
    for num, e in expect.items():
        if not isinstance(e, tuple):
            continue
        if e[0] == "udp":
            want = CPPDP(bytes.fromhex(e[1]["hex"])).mysummary()[0]
        elif e[0] == "tcp":
            want = CPPDPFrame(bytes.fromhex(e[1]["hex"])).summary()
        else:
            want = CPPDPFrame(e[1]).summary()
        assert info[num] == (want, "CPPDP"), num
    stack = next(n for n, e in expect.items() if isinstance(e, tuple) and e[0] == "stack")
    assert info[stack][0] == ("PFS HEADER size=11 sha256=b94d27b9934d3e08 / PFS DATA 11 bytes"
                              " / PFS END")


def test_split_data_frame_is_reassembled(vector_pcap):
    pcap, expect = vector_pcap
    layers = packets_json(pcap)
    first = next(n for n, e in expect.items() if e == "segment")
    assert "cppdp" not in layers[first]              # the first half alone is not a frame
    cppdp = layers[first + 1]["cppdp"]
    assert cppdp["cppdp.data"].replace(":", "") == b"hello world".hex()


def test_three_frames_in_one_segment(vector_pcap):
    pcap, expect = vector_pcap
    num = next(n for n, e in expect.items() if isinstance(e, tuple) and e[0] == "stack")
    out = tshark(pcap, "-Y", f"frame.number == {num}", "-T", "fields", "-E", "occurrence=a",
                 "-e", "cppdp.frame.type")
    assert out.strip().split(",") == ["0x13", "0x14", "0x15"]


def test_foreign_traffic_is_left_to_others(vector_pcap):
    pcap, expect = vector_pcap
    layers = packets_json(pcap)
    info = info_column(pcap)
    for num, e in expect.items():
        if e == "foreign":
            assert "cppdp" not in layers[num]
            assert info[num][1] != "CPPDP"


def test_display_filters(vector_pcap):
    pcap, _ = vector_pcap

    def count(flt):
        return len(tshark(pcap, "-Y", flt).splitlines())
    assert count("cppdp.type == 1") == 2
    assert count("cppdp.xid == 0x080027f8") == len(VECTORS["udp"]) + 1
    assert count("cppdp && tcp") == len(VECTORS["tcp"]) + 1
    assert count("cppdp.malformed") == 0


def test_malformed_datagram_gets_expert_info(tmp_path):
    good = bytes.fromhex(VECTORS["udp"][0]["hex"])
    bad = [good[:30], good + b"x", good[:4] + b"\x02" + good[5:],
           good[:24] + b"\x50" + good[25:]]
    pcap = tmp_path / "bad.pcap"
    wrpcap(str(pcap), [Ether() / IP() / UDP(sport=4051, dport=4051) / b for b in bad])
    layers = packets_json(pcap)
    info = info_column(pcap)
    for num, raw in enumerate(bad, 1):
        cppdp = layers[num]["cppdp"]
        assert "cppdp.malformed" in cppdp["_ws.expert"]
        # the same words as Scapy's "[malformed: ...]"
        assert info[num][0] == CPPDP(raw).mysummary()[0]
