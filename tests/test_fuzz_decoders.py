"""Decoders never crash on hostile bytes: random, truncated and mutated messages.

- the agent codec raises DecodeError and nothing else;
- the Scapy layers dissect anything without raising, lose no byte, and call malformed exactly
  what the codec rejects; ``fuzz(CPPDP())`` builds and dissects;
- tshark with the Lua dissector reads ~300 mutated port-4051 packets, exits 0 without Lua
  errors, and flags exactly the malformed ones (expert info ``cppdp.malformed``).
"""
import json
import pathlib
import random
import re
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pfslab.dissect.fuzz import mutate
from pfslab.protocol import codec

VECTORS = json.loads((pathlib.Path(__file__).parent / "vectors" / "cppdp.json").read_text())
UDP_RAW = [bytes.fromhex(v["hex"]) for v in VECTORS["udp"]]
TCP_RAW = [bytes.fromhex(v["hex"]) for v in VECTORS["tcp"]]
SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw, pool):
    raw = draw(st.sampled_from(pool))
    return mutate(raw, random.Random(draw(st.integers(0, 2**32))))


hostile_udp = st.one_of(st.binary(max_size=120),
                        st.binary(max_size=100).map(lambda b: b"CPDP\x01" + b),
                        mutated(UDP_RAW))
hostile_tcp = st.one_of(st.binary(max_size=120),
                        st.binary(max_size=100).map(lambda b: b"CPDP\x01" + b),
                        mutated(TCP_RAW))


def codec_udp_ok(b):
    try:
        codec.decode(b)
        return True
    except codec.DecodeError:
        return False


def codec_frame_ok(b):
    try:
        codec.decode_frame(b)
        return True
    except codec.DecodeError:
        return False


# ---------------------------------------------------------------------------------- codec

@SETTINGS
@given(hostile_udp)
def test_codec_decode_raises_only_decode_error(b):
    codec_udp_ok(b)   # anything but DecodeError propagates and fails the test


@SETTINGS
@given(hostile_tcp)
def test_codec_decode_frame_raises_only_decode_error(b):
    codec_frame_ok(b)
    try:
        codec.frame_length(b)
    except codec.DecodeError:
        pass


@SETTINGS
@given(st.lists(hostile_tcp, max_size=4), st.integers(1, 40))
def test_codec_frame_reader_raises_only_decode_error(chunks, step):
    stream = b"".join(TCP_RAW[:2]) + b"".join(chunks)
    r = codec.FrameReader()
    try:
        for i in range(0, len(stream), step):
            r.feed(stream[i:i + step])
    except codec.DecodeError:
        pass


# ---------------------------------------------------------------------------------- Scapy

scapy = pytest.importorskip("scapy")
from scapy.layers.inet import IP, TCP, UDP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.packet import Raw, fuzz  # noqa: E402
from scapy.utils import wrpcap  # noqa: E402

from pfslab.dissect.scapy_cppdp import CPPDP, CPPDPFrame, cppdp_fields, iter_cppdp  # noqa: E402


def _exercise(p):
    p.summary()
    p.show(dump=True)
    repr(p)
    p.copy()


@SETTINGS
@given(hostile_udp)
def test_scapy_udp_layer_never_raises_and_agrees_with_codec(b):
    p = CPPDP(b)
    _exercise(p)
    assert bytes(p) == b                       # dissection loses nothing
    scapy_ok = isinstance(p, CPPDP) and p.malformed() is None
    assert scapy_ok == codec_udp_ok(b), (b.hex(), getattr(p, "malformed", lambda: "Raw")())
    if scapy_ok:
        m = codec.decode(b)
        want = {k: getattr(m, k) for k in codec.COMMON_FIELDS + codec.BODY_FIELDS[m.type]}
        want["type_name"] = m.type.name
        assert cppdp_fields(p) == want
    else:
        assert isinstance(p, Raw) or "[malformed:" in p.summary()


@SETTINGS
@given(hostile_tcp)
def test_scapy_frame_layer_never_raises_and_agrees_with_codec(b):
    p = CPPDPFrame(b)
    _exercise(p)
    assert bytes(p) == b
    scapy_ok = isinstance(p, CPPDPFrame) and p.malformed() is None and not p.payload
    assert scapy_ok == codec_frame_ok(b), b.hex()


@SETTINGS
@given(hostile_udp, hostile_tcp)
def test_scapy_full_packets_never_raise(u, t):
    for pkt in (Ether() / IP() / UDP(sport=4051, dport=4051) / u,
                Ether() / IP() / UDP(sport=1234, dport=4051) / u,
                Ether() / IP() / TCP(sport=4051, dport=40000) / t,
                Ether() / IP() / TCP(sport=40000, dport=4051) / t):
        q = Ether(bytes(pkt))
        _exercise(q)


def test_scapy_fuzz_builds_and_dissects():
    for i in range(500):
        for cls in (CPPDP, CPPDPFrame):
            f = fuzz(cls()) if i % 2 else fuzz(cls(magic=b"CPDP", version=1))
            _exercise(f)
            b = bytes(f)
            q = cls(b)
            _exercise(q)
            assert bytes(q) == b
            if isinstance(q, cls):
                q.malformed()
        Ether(bytes(fuzz(Ether() / IP() / UDP(sport=4051, dport=4051) / CPPDP())))


def test_iter_cppdp_and_decode_survive_hostile_pcaps(tmp_path):
    rnd = random.Random(4051)
    pkts = hostile_packets(rnd, 200)
    path = tmp_path / "hostile.pcap"
    wrpcap(str(path), [p for p, _ in pkts])
    recs = list(iter_cppdp(path))
    assert recs
    for r in recs:
        _exercise(r.decoded)
    from pfslab.dissect import decode
    decode.render(decode.decode_paths([path]))   # pfslab decode survives them too


# --------------------------------------------------------------------------------- tshark

def hostile_packets(rnd: random.Random, n: int):
    """n packets on port 4051: (packet, expectation). expectation: True/False = the codec's
    verdict on a message tshark must show whole (a UDP datagram with the magic, or one TCP
    segment holding exactly one frame), None = no promise beyond not crashing."""
    out = []
    for i in range(n):
        kind = rnd.randrange(4)
        if kind < 2:
            b = mutate(rnd.choice(UDP_RAW), rnd) if kind == 0 else \
                bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 60)))
            pkt = Ether() / IP(src="10.1.1.11", dst="10.1.1.255") / \
                UDP(sport=4051, dport=4051) / b
            if not b:
                continue
            expect = codec_udp_ok(b) if b[:4] == b"CPDP" else None
        else:
            b = mutate(rnd.choice(TCP_RAW), rnd)
            if not b:
                continue
            # each segment in its own connection, so one broken length cannot hold the rest
            pkt = Ether() / IP(src="10.1.1.11", dst="10.1.1.12") / \
                TCP(sport=4051, dport=20000 + i, flags="PA", seq=1, ack=1) / b
            expect = None
            if len(b) >= 10 and b[:4] == b"CPDP" and \
                    10 + int.from_bytes(b[6:10], "big") == len(b):
                expect = codec_frame_ok(b)
        out.append((pkt, expect))
    return out


@pytest.mark.skipif(shutil.which("tshark") is None,
                    reason="tshark is not installed (Debian package tshark)")
def test_tshark_lua_marks_malformed_and_never_errors(tmp_path):
    rnd = random.Random(2006)
    pkts = hostile_packets(rnd, 320)
    path = tmp_path / "hostile.pcap"
    wrpcap(str(path), [p for p, _ in pkts])
    lua = pathlib.Path(__file__).resolve().parent.parent / "pfslab" / "dissect" / "cppdp.lua"
    p = subprocess.run(["tshark", "-n", "-X", f"lua_script:{lua}", "-r", str(path),
                        "-T", "fields", "-E", "occurrence=a", "-e", "frame.number",
                        "-e", "cppdp", "-e", "cppdp.malformed", "-e", "cppdp.internal_error",
                        "-e", "_ws.malformed", "-e", "_ws.col.Info"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    bad_lines = [ln for ln in p.stderr.splitlines()
                 if re.search(r"lua|error|attempt to|traceback", ln, re.I)]
    assert not bad_lines, p.stderr
    rows = {}
    for line in p.stdout.splitlines():
        num, proto, malformed, internal, ws_malformed, info = line.split("\t")
        assert not internal, line
        rows[int(num)] = (bool(proto), bool(malformed), info)
    assert len(rows) == len(pkts)
    checked = flagged = 0
    for num, (_, expect) in enumerate(pkts, 1):
        if expect is None:
            continue
        is_cppdp, is_malformed, info = rows[num]
        assert is_cppdp, (num, info)
        assert is_malformed == (not expect), (num, info)
        assert ("[malformed:" in info) == (not expect), (num, info)
        checked += 1
        flagged += is_malformed
    assert checked > 60 and flagged > 30, (checked, flagged)


# ------------------------------------------------------------------------------ make fuzz

def test_make_fuzz_small_run_counts_every_decoder(capsys):
    """`make fuzz` at 10^5 cases is a command, not a CI test: here, 400 cases per decoder."""
    from pfslab.dissect import fuzz
    only = "codec,scapy,decode" + (",lua" if shutil.which("tshark") else "")
    assert fuzz.main(["--cases", "400", "--seed", "7", "--only", only]) == 0
    out = capsys.readouterr().out
    rows = {ln.split()[0]: ln.split()[1:] for ln in out.splitlines()
            if ln.split() and ln.split()[0] in fuzz.DECODERS}
    assert set(rows) == set(only.split(","))
    for name, (cases, decoded, rejected, crashes, disagree) in rows.items():
        assert int(cases.replace(",", "")) >= 400
        assert int(decoded.replace(",", "")) > 0 and int(rejected.replace(",", "")) > 0
        assert (crashes, disagree) == ("0", "0"), name
    assert "no crash" in out


def test_make_fuzz_bad_flags(capsys):
    from pfslab.dissect import fuzz
    assert fuzz.main(["--only", "nope"]) == 2
    assert "--only takes" in capsys.readouterr().err
