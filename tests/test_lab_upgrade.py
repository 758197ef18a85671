"""A whole `pfslab lab` run in both modes on a small lab, checked from the wire and from HQ's
tftpd log, not from the agents' own account (Cisco bug CSCus67416 was a phone that said it
shared while it went to the server).

Lab: 2 subnets x 6 phones, models cycled [7961, 7961, 7941, 7961, 7961, 7960]; phone 2 (a
7961 in subnet 1) has PFS off at device level while the common phone profile turns it on.
"""
from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = "CP-7961G,CP-7961G,CP-7941G,CP-7961G,CP-7961G,CP-7960G"
DEVICE_OFF = 2


def rrqs_in_pcap(path: str) -> list[tuple[str, str]]:
    """(client ip, filename) of every TFTP read request (UDP to port 69) in a pcap."""
    out = []
    with open(path, "rb") as f:
        data = f.read()
    e = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack(e + "I", data[off + 8:off + 12])[0]
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
            continue
        ihl = (frame[14] & 0x0F) * 4
        udp = 14 + ihl
        if struct.unpack("!H", frame[udp + 2:udp + 4])[0] != 69:
            continue
        payload = frame[udp + 8:]
        if payload[:2] != b"\x00\x01":
            continue
        src = ".".join(str(b) for b in frame[26:30])
        out.append((src, payload[2:].split(b"\0", 1)[0].decode(errors="replace")))
    return out


#: the site, as a scenario (docs/testing.md); phone 2 is p1-2
SITE = {"subnets": 2, "phones_per_subnet": 6, "models": MODELS.split(","),
        "config": {"devices": {f"p1-{DEVICE_OFF}": "off"}}, "firmware": {"scale": 0.005},
        "wan": {"bandwidth": "2mbit", "delay": "20ms"},
        "run": {"mode": "both", "timeout": 240}}


@pytest.fixture
def run(pfs_lab):
    """One lab run for the whole module (the plugin caches it for the session)."""
    r = pfs_lab(SITE)
    return {"rc": r.exit_code, "out": Path(r.folder),
            "results": {m: r.mode(m).result for m in r.modes}}


def firmware_files(r: dict) -> set[str]:
    files = set()
    for p in r["phones"]:
        files.add(p["load"] + ".loads")
        files.update(p["components"])
    return files


def test_every_phone_ends_with_verified_components(run):
    assert run["rc"] == 0
    for mode in ("pfs", "traditional"):
        for p in run["results"][mode]["phones"]:
            assert p["completed"], (mode, p["name"])
            assert p["components"] and all(c and c["sha256_ok"] for c in p["components"].values())


def test_pfs_only_roots_and_non_sharing_phones_fetch_from_hq(run):
    from pfslab.lab.tftp_server import parse_log
    r = run["results"]["pfs"]
    phones = {p["ip"]: p for p in r["phones"]}
    fw = firmware_files(r)
    log = [(q["client"], q["file"]) for q in parse_log(str(run["out"] / "pfs" / "tftpd.log"))
           if q["event"] == "RRQ" and q["file"] in fw]
    fetchers = defaultdict(set)  # (subnet, model, file) -> PFS clients that fetched it
    for ip, f in log:
        p = phones[ip]
        if p["pfs_enabled"]:
            fetchers[(p["subnet"], p["model"], f)].add(ip)
    for key, ips in fetchers.items():
        assert len(ips) == 1, (key, ips)  # one root per subnet, model and file
    # the phones that do not share fetched every file of their load themselves
    for p in r["phones"]:
        if not p["pfs_enabled"]:
            mine = {f for ip, f in log if ip == p["ip"]}
            assert mine == {p["load"] + ".loads", *p["components"]}, p["name"]
    # ... and the wire agrees with the log: the same requests crossed the WAN
    wire = {x for x in rrqs_in_pcap(str(run["out"] / "pfs" / "wan.pcap")) if x[1] in fw}
    assert wire == set(log)
    # sharing happened: some phone got some component from a peer
    assert any(c["source"] != "tftp" for p in r["phones"] if p["pfs_enabled"]
               for c in p["components"].values())


def test_traditional_every_phone_fetches_everything_from_hq(run):
    from pfslab.lab.tftp_server import parse_log
    r = run["results"]["traditional"]
    log = {(q["client"], q["file"]) for q in parse_log(
        str(run["out"] / "traditional" / "tftpd.log")) if q["event"] == "RRQ"}
    for p in r["phones"]:
        assert not p["pfs_enabled"]
        for f in [p["load"] + ".loads", *p["components"]]:
            assert (p["ip"], f) in log
    assert r["wan_bytes"] > run["results"]["pfs"]["wan_bytes"]


def test_device_level_off_behaves_traditionally(run):
    r = run["results"]["pfs"]
    p = r["phones"][DEVICE_OFF - 1]
    assert p["model"] == "CP-7961G" and p["pfs_configured"] is False
    assert p["pfs_enabled"] is False
    assert all(c["source"] == "tftp" for c in p["components"].values())
    # its model twin in the same subnet does share
    twin = r["phones"][0]
    assert twin["model"] == "CP-7961G" and twin["pfs_enabled"] is True


def test_no_phone_serves_more_than_two_children_on_the_wire(run):
    from pfslab.dissect.decode import decode_paths
    seen = 0
    for k in (1, 2):
        for h in decode_paths([run["out"] / "pfs" / f"subnet-{k}.pcap"])["hierarchies"]:
            kids = defaultdict(set)
            for tr in h["transfers"]:
                kids[tr["parent"]].add(tr["child"])
                seen += 1
            for parent, children in kids.items():
                assert len(children) <= 2, (h["file"], parent, children)
    assert seen > 0


def test_bad_input_exits_2_with_one_line(tmp_path):
    for argv in (["--wan-bw", "fast"], ["--topo", "no-such-topology"]):
        r = subprocess.run([sys.executable, "-m", "pfslab.cli", "lab", *argv, "--out",
                            str(tmp_path)], capture_output=True, timeout=60, cwd=REPO)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pfslab: "), lines


def test_ctrl_c_mid_upgrade_tears_everything_down(tmp_path):
    import signal
    import time
    from pfslab.lab.records import list_records, new_prefix
    from pfslab.lab.nsutil import same_process
    prefix = new_prefix()
    p = subprocess.Popen(
        [sys.executable, "-m", "pfslab.cli", "lab", "--mode", "pfs", "--subnets", "1",
         "--phones-per-subnet", "3", "--firmware-scale", "0.01", "--prefix", prefix,
         "--out", str(tmp_path)], cwd=REPO, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not (tmp_path / "agent-spec.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    recs = [r for r in list_records() if r.get("prefix") == prefix]
    assert recs and recs[0]["pids"]
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    from pyroute2 import IPRoute
    from pfslab.lab.records import name_pattern
    with IPRoute() as ipr:
        names = [l.get_attr("IFLA_IFNAME") or "" for l in ipr.link("dump")]
    assert not [n for n in names if name_pattern(prefix).match(n)]
    assert not [e for e in recs[0]["pids"] if same_process(e["pid"], e.get("start"))]
    assert not [r for r in list_records() if r.get("prefix") == prefix]
    assert os.path.getsize(tmp_path / "wan.pcap") >= 24


def test_waiting_children_get_a_hold_every_hold_interval_on_the_wire(run):
    """The parent's HOLDs are its agent's Keepalive: on the wire, one when the child's
    REQUEST comes, then one every HOLD_INTERVAL (emulated time) until the file goes."""
    from pfslab.dissect.pcapfile import Capture
    from pfslab.dissect.wire import TCP, ether_l4
    from pfslab.protocol.codec import FrameType
    from pfslab.protocol.phone import Timers
    holds = defaultdict(list)                # (parent, port, child, port) -> HOLD times
    for k in (1, 2):
        for t, _, _, data in Capture(run["out"] / "pfs" / f"subnet-{k}.pcap").tuples():
            f = ether_l4(data)
            if f and f[0] == TCP and f[5][:4] == b"CPDP" and f[5][5] == FrameType.HOLD \
                    and f[3] == 4051:
                holds[f[1:5]].append(t)
    gaps = [b - a for ts in holds.values() for a, b in zip(ts, ts[1:])]
    assert gaps, "no stream carried two HOLDs"
    every = Timers().hold_interval
    assert all(abs(g - every) < 0.25 * every for g in gaps), sorted(gaps)
