"""The reference captures in pcaps/samples/ (made by `make samples`): golden decodes, tshark
with the Lua dissector on every pcap, WAN TFTP accounting, and `pfslab decode`'s outputs.
No root needed: these only read files."""
from __future__ import annotations

import argparse
import json
import pathlib
import random
import re
import shutil
import subprocess

import pytest

pytest.importorskip("scapy")

from pfslab.dissect import decode  # noqa: E402
from pfslab.errors import UserError  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "pcaps" / "samples"
LUA = ROOT / "pfslab" / "dissect" / "cppdp.lua"
TSHARK = shutil.which("tshark")
DIRS = sorted(d for d in SAMPLES.glob("*") if (d / "decode.json").is_file())
PCAPS = sorted(p for d in DIRS for p in d.glob("*.pcap"))


def sample(name: str) -> pathlib.Path:
    d = SAMPLES / name
    if not (d / "decode.json").is_file():
        pytest.skip(f"no {name} sample in {SAMPLES} (sudo make samples)")
    return d


def test_samples_exist_and_stay_small():
    names = {d.name for d in DIRS}
    assert {"pfs", "traditional"} <= names, f"run: sudo make samples ({names})"
    assert sum(p.stat().st_size for p in PCAPS) < 2_500_000


@pytest.mark.parametrize("d", DIRS, ids=lambda d: d.name)
def test_golden_decode(d):
    got = json.loads(json.dumps(decode.decode_paths([str(d)])))
    want = json.loads((d / "decode.json").read_text())
    assert got == want, ("decode output changed; if on purpose: "
                         "python -m pfslab.dissect.samples --decode-only")
    assert got["malformed"] == 0 and got["errors"] == 0


# ------------------------------------------------------------------- tshark + Lua

def _tshark(pcap, *args) -> str:
    p = subprocess.run([TSHARK, "-n", "-2", "-X", f"lua_script:{LUA}", "-r", str(pcap), *args],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    bad = [ln for ln in p.stderr.splitlines()
           if re.search(r"lua|error|attempt to|stack traceback", ln, re.I)]
    assert not bad, p.stderr
    return p.stdout


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
@pytest.mark.parametrize("pcap", PCAPS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_tshark_lua_decodes_every_4051_frame(pcap):
    rows = _tshark(pcap, "-Y", "udp.port == 4051 || (tcp.port == 4051 && tcp.len > 0)",
                   "-T", "fields", "-e", "frame.number", "-e", "frame.protocols",
                   "-e", "tcp.reassembled_in").splitlines()
    undecoded = []
    for row in rows:
        num, protos, reassembled_in = (row.split("\t") + ["", ""])[:3]
        # a middle segment of a frame spanning segments is decoded where it completes
        if "cppdp" not in protos.split(":") and not reassembled_in:
            undecoded.append(num)
    assert not undecoded, f"frames on 4051 not decoded as cppdp: {undecoded[:20]}"
    if pcap.name.startswith("subnet") and pcap.parent.name != "traditional":
        assert rows, "a PFS subnet capture without port-4051 traffic"
    flagged = _tshark(pcap, "-Y", "cppdp.malformed || cppdp.internal_error || _ws.malformed",
                      "-T", "fields", "-e", "frame.number").split()
    assert not flagged, f"frames flagged malformed: {flagged[:20]}"


# ------------------------------------------------------------------- WAN TFTP

def _wan_report(d):
    return decode.decode_paths([str(d / "wan.pcap")])


def test_wan_tftp_traditional_every_phone_fetches_every_file():
    from pfslab import firmware
    d = sample("traditional")
    rep = _wan_report(d)
    tf = rep["tftp"]
    assert rep["hierarchies"] == [] and rep["pcaps"][0]["kind"] == "wan"
    clients = {c["client"] for c in tf["by_client"]}
    assert len(clients) == 6
    assert tf["complete"] == tf["transfers"] and not any(t["error"] for t in
                                                          tf["transfers_list"])
    sizes = {}
    for model in ("CP-7961G", "CP-7941G"):
        _, files = firmware.build_load(firmware.model_load(model), 0.005)
        sizes.update({k: len(v) for k, v in files.items()})
    by_file = {f["file"]: f for f in tf["by_file"]}
    for name, size in sizes.items():
        f = by_file[name]
        assert f["file_bytes"] == size, name
        assert f["clients"] == sorted(clients, key=decode._ipkey), name  # all phones
        assert f["data_bytes"] >= size * len(clients)
    # one SEP<MAC>.cnf.xml per phone
    assert sum(1 for n in by_file if n.startswith("SEP")) == 6
    assert sum(c["data_bytes"] for c in tf["by_client"]) == tf["data_bytes"]


def test_wan_tftp_pfs_only_roots_cross_the_wan():
    d = sample("pfs")
    full = json.loads((d / "decode.json").read_text())
    tf = full["tftp"]
    roots = {(h["file"], h["root"]) for h in full["hierarchies"]}
    fetched = {(t["file"], t["client"]) for t in tf["transfers_list"]
               if not t["file"].startswith("SEP")}
    assert fetched == roots      # every firmware file crossed the WAN once per hierarchy
    trad = json.loads((sample("traditional") / "decode.json").read_text())["tftp"]
    assert tf["data_bytes"] < trad["data_bytes"]


@pytest.mark.parametrize("name", ["pfs", "traditional", "fail-parent"])
def test_wan_rrqs_match_tftpd_log(name):
    from pfslab.lab.tftp_server import parse_log
    d = sample(name)
    check = decode.compare_tftp(_wan_report(d), parse_log(str(d / "tftpd.log")))
    assert check["only_on_wire"] == [] and check["only_in_log"] == []
    assert check["wire_requests"] > 0


def test_tftp_tracker_tid_retransmissions_and_stray_packets(tmp_path):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.layers.tftp import TFTP, TFTP_ACK, TFTP_DATA, TFTP_ERROR, TFTP_RRQ
    from scapy.packet import Raw
    from scapy.utils import wrpcap
    c, s = "10.1.1.10", "10.0.0.10"

    def pkt(src, sport, dst, dport, pl, t):
        p = Ether() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / pl
        p.time = t
        return p

    data = [b"a" * 512, b"b" * 512, b"c" * 100]
    pk = [pkt(c, 5000, s, 69, TFTP() / TFTP_RRQ(filename=b"f.sbn", mode=b"octet"), 1.0),
          pkt(c, 5000, s, 69, TFTP() / TFTP_RRQ(filename=b"f.sbn", mode=b"octet"), 1.5)]
    t = 2.0
    for i, chunk in enumerate(data, 1):
        pk.append(pkt(s, 7000, c, 5000, TFTP() / TFTP_DATA(block=i) / Raw(chunk), t))
        if i == 1:   # a retransmission, and a second server TID answering the repeated RRQ
            pk.append(pkt(s, 7000, c, 5000, TFTP() / TFTP_DATA(block=1) / Raw(chunk), t + .1))
            pk.append(pkt(s, 7001, c, 5000, TFTP() / TFTP_DATA(block=1) / Raw(chunk), t + .2))
            pk.append(pkt(c, 5000, s, 7001, TFTP() / TFTP_ERROR(errorcode=5), t + .3))
        pk.append(pkt(c, 5000, s, 7000, TFTP() / TFTP_ACK(block=i), t + .4))
        t += 1
    pk.append(pkt(c, 5001, s, 69, TFTP() / TFTP_RRQ(filename=b"nope", mode=b"octet"), 9.0))
    pk.append(pkt(s, 7002, c, 5001, TFTP() / TFTP_ERROR(errorcode=1, errormsg=b"no"), 9.1))
    pk.append(pkt(c, 5002, s, 69, Raw(b"\x00\x09junk"), 9.2))       # not TFTP at all
    path = tmp_path / "wan.pcap"
    wrpcap(str(path), pk)
    rep = decode.decode_paths([str(path)])
    tf = rep["tftp"]
    assert tf["requests"] == 3 and tf["transfers"] == 2
    f = next(t for t in tf["transfers_list"] if t["file"] == "f.sbn")
    assert f["complete"] and f["requests"] == 2 and f["data_packets"] == 4
    assert f["file_bytes"] == 1124 and f["data_bytes"] == 1124 + 512
    assert f["start_s"] == 0.0 and f["end_s"] == pytest.approx(3.4)
    nope = next(t for t in tf["transfers_list"] if t["file"] == "nope")
    assert not nope["complete"] and nope["error"].startswith("1 no")
    assert rep["malformed"] == 1 and rep["pcaps"][0]["kind"] == "wan"


# ------------------------------------------------------------------- decode output

def test_decode_text_tree_and_table():
    d = sample("pfs")
    rep = decode.decode_paths([str(d)])
    tree = decode.render(rep, "tree", width=160)
    table = decode.render(rep, "table", width=160)
    for h in rep["hierarchies"]:
        assert f"{h['root']} [root]" in tree
        assert f"{h['file']}" in tree
        assert h["root"] and h["election"]["winner"] == h["root"]
        assert all(e["confirmed"] for e in h["tree"])
        assert {c["phone"] for c in h["completion"] if c["time_s"] is None} == set()
    assert "└── " in tree and "[slot 0" in tree
    assert "PFS hierarchies" in table and "TFTP across the WAN, per file" in table
    assert "per client" in table and "Captures" in table
    assert decode.render(rep, "all", width=160) == tree + table


def test_decode_cli_json_and_dir_and_exit_code(capsys):
    d = sample("pfs")
    p = argparse.ArgumentParser()
    decode.add_arguments(p)
    assert decode.run(p.parse_args([str(d), "--json"])) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep == json.loads((d / "decode.json").read_text())
    kinds = {(x["pcap"], x["kind"], x["subnet"]) for x in rep["pcaps"]}
    assert ("wan.pcap", "wan", None) in kinds and ("subnet-1.pcap", "subnet", 1) in kinds
    assert decode.run(p.parse_args([str(d / "subnet-1.pcap"), "--table"])) == 0
    assert "PFS hierarchies" in capsys.readouterr().out


def test_lab_hierarchies_keep_the_results_schema():
    d = sample("pfs")
    hs = decode.lab_hierarchies(decode.decode_paths([str(d)]))
    assert hs and all({"subnet", "model", "file", "root", "edges"} <= set(h) for h in hs)
    from pfslab.report import tree_depths
    assert max(max(tree_depths(h).values()) for h in hs) >= 1
    lab = json.loads((d / "lab.json").read_text())
    assert lab["wire_check"]["hierarchies_vs_agents"] == []   # the wire agrees with the agents


def test_classified_by_content_when_names_say_nothing(tmp_path):
    d = sample("pfs")
    shutil.copy(d / "wan.pcap", tmp_path / "a.pcap")
    shutil.copy(d / "subnet-1.pcap", tmp_path / "b.pcap")
    rep = decode.decode_paths([str(tmp_path)])
    assert {(x["pcap"], x["kind"], x["subnet"]) for x in rep["pcaps"]} == \
        {("a.pcap", "wan", None), ("b.pcap", "subnet", 1)}
    golden = json.loads((d / "decode.json").read_text())
    strip = lambda hs: [{k: v for k, v in h.items() if k != "pcap"} for h in hs]  # noqa: E731
    assert strip(rep["hierarchies"]) == strip(golden["hierarchies"])
    assert rep["tftp"] == golden["tftp"]


def test_decode_survives_truncated_and_mangled_pcaps(tmp_path):
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.utils import rdpcap, wrpcap
    d = sample("pfs")
    raw = (d / "subnet-1.pcap").read_bytes()
    cut = tmp_path / "subnet-1.pcap"
    cut.write_bytes(raw[:len(raw) // 2 + 7])          # ends mid-record
    rep = decode.decode_paths([str(cut)])
    assert rep["hierarchies"] and rep["pcaps"][0]["frames"] > 0
    assert rep["pcaps"][0]["truncated"] and rep["malformed"] >= 1
    assert "ends inside" in decode.render(rep)
    # port-4051 payloads with random bytes overwritten, cut short or extended
    rng = random.Random(4051)
    pkts = rdpcap(str(d / "subnet-1.pcap"))
    for p in pkts:
        l4 = p.getlayer(UDP) or p.getlayer(TCP)
        if l4 is None or 4051 not in (l4.sport, l4.dport) or not bytes(l4.payload) \
                or rng.random() > 0.3:
            continue
        b = bytearray(bytes(l4.payload))
        for _ in range(rng.randrange(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        b = b[:rng.randrange(len(b) + 1)] if rng.random() < 0.3 else b + bytes(rng.randrange(9))
        l4.remove_payload()
        l4.add_payload(bytes(b))
        for f in ("len", "chksum"):
            if f in l4.fields:
                del l4.fields[f]
        ip = p.getlayer(IP)
        del ip.fields["len"], ip.fields["chksum"]
    (tmp_path / "m").mkdir()
    wrpcap(str(tmp_path / "m" / "subnet-1.pcap"), pkts)
    (tmp_path / "m" / "wan.pcap").write_bytes(b"not a pcap at all")
    with pytest.raises(UserError, match="wan.pcap is not a pcap or pcapng capture"):
        decode.decode_paths([str(tmp_path / "m")])     # checked before anything is read
    (tmp_path / "m" / "wan.pcap").write_bytes(raw[:24] + b"\xff" * 16)   # a corrupt record
    rep = decode.decode_paths([str(tmp_path / "m")])
    by = {x["pcap"]: x for x in rep["pcaps"]}
    assert "claims" in by["wan.pcap"]["error"] and rep["errors"] == 1
    assert by["subnet-1.pcap"]["frames"] == len(pkts)
    assert by["subnet-1.pcap"]["malformed"] > 10 and by["subnet-1.pcap"]["malformed_examples"]
    assert "malformed" in decode.render(rep)
    json.dumps(rep)
    p = argparse.ArgumentParser()
    decode.add_arguments(p)
    assert decode.run(p.parse_args([str(tmp_path / "m"), "--json"])) == 1


def test_fail_parent_sample_shows_the_recovery():
    d = sample("fail-parent")
    rep = json.loads((d / "decode.json").read_text())
    lab = json.loads((d / "lab.json").read_text())
    [victim] = lab["faults"]
    hs = rep["hierarchies"]
    assert any(j["lost_parent"] == victim for h in hs for j in h["rejoins"]) or \
        any(t["client"] != h["root"] and t["file"] == h["file"]
            for h in hs for t in rep["tftp"]["transfers_list"])      # re-joined or fell back
    cut = [t for h in hs for t in h["transfers"] if t["end_s"] is None]
    assert any(victim in (t["parent"], t["child"]) for t in cut)
    # every survivor completed every file it was part of
    for h in hs:
        for c in h["completion"]:
            if c["phone"] != victim:
                assert c["time_s"] is not None, (h["file"], c)
