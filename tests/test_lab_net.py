"""Lab infrastructure tests (root + network namespaces): LabNet, the WAN, captures, in.tftpd,
teardown and bad input. Measurements use Python sockets opened inside the lab namespaces.

Each LabNet here has its own fresh prefix, so these tests can run next to other labs.
"""
from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

pytestmark = pytest.mark.lab

DELAY_S = 0.040
BW_BPS = 2_000_000
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------ helpers
def read_pcap(path: str) -> list[bytes]:
    """Frames of a classic pcap file (tcpdump -w), without Scapy."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return []
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    frames, off = [], 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        off += 16
        frames.append(data[off:off + incl])
        off += incl
    return frames


def count(frames, marker: bytes) -> int:
    return sum(1 for f in frames if marker in f)


def lab_links(prefix: str) -> list[str]:
    from pyroute2 import IPRoute
    from pfslab.lab.records import name_pattern
    pat = name_pattern(prefix)
    with IPRoute() as ipr:
        names = [l.get_attr("IFLA_IFNAME") for l in ipr.link("dump")]
    return [n for n in names if n and pat.match(n)]


def lab_netns(prefix: str) -> list[str]:
    """Named network namespaces (/run/netns) of this prefix: the phones."""
    from pfslab.lab.lighthost import list_named
    from pfslab.lab.records import name_pattern
    return list_named(name_pattern(prefix))


def sock_in(netns, type=socket.SOCK_DGRAM):
    from pfslab.lab.nsutil import socket_in
    return socket_in(netns, socket.AF_INET, type)


class Echo(threading.Thread):
    """UDP echo server in a namespace."""

    def __init__(self, netns, ip, port=7):
        super().__init__(daemon=True)
        self.s = sock_in(netns)
        self.s.bind((ip, port))
        self.s.settimeout(0.2)
        self.stop = False

    def run(self):
        while not self.stop:
            try:
                data, addr = self.s.recvfrom(2048)
            except socket.timeout:
                continue
            self.s.sendto(data, addr)


def tftp_get(netns, server, filename, timeout=5.0) -> bytes:
    """A minimal RFC 1350 client (octet mode, 512-byte blocks) run from `netns`."""
    s = sock_in(netns)
    s.settimeout(timeout)
    try:
        s.sendto(b"\x00\x01" + filename.encode() + b"\x00octet\x00", (server, 69))
        out, expect = bytearray(), 1
        while True:
            pkt, addr = s.recvfrom(65536)
            op, blk = struct.unpack("!HH", pkt[:4])
            if op == 5:
                raise FileNotFoundError(pkt[4:].rstrip(b"\0").decode())
            assert op == 3
            if blk == expect:
                out += pkt[4:]
                expect += 1
            s.sendto(struct.pack("!HH", 4, blk), addr)
            if blk == expect - 1 and len(pkt) - 4 < 512:
                return bytes(out)
    finally:
        s.close()


def small_lab(phones_per_subnet=2, topo="small", **kw):
    """LabNet of the `small` topology's site (2 subnets, CP-7961G/CP-7960G); ``kw``: LabNet's
    own arguments, or Settings fields."""
    from pfslab.lab.net import LabNet
    from pfslab.settings import Settings
    from pfslab.site import Site
    fields = {k: kw.pop(k) for k in list(kw) if k.startswith("wan_")}
    site = Site.branch(2, phones_per_subnet, "CP-7961G,CP-7960G")
    return LabNet(site, Settings(topo=topo, **fields), **kw)


# ------------------------------------------------------------------ the shared small lab
@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab")
    with small_lab(wan_bw=f"{BW_BPS}bit", wan_delay=f"{DELAY_S * 1000:g}ms",
                wan_loss="0%", out_dir=str(out), tftp_files={"hello.bin": bytes(range(256)) * 7},
                keep_tftp_root=True) as net:
        yield net


def test_topology_plan(lab):
    assert len(lab.phones) == 4
    assert [p.subnet for p in lab.phones] == [1, 1, 2, 2]
    assert [p.model for p in lab.phones] == ["CP-7961G", "CP-7960G"] * 2
    p = lab.phones[0]
    assert (p.ip, p.mac, p.broadcast) == ("10.1.1.10", "02:50:46:01:00:00", "10.1.1.255")
    assert p.netns == f"/run/netns/{lab.prefix}P1" and os.path.exists(p.netns)
    assert p.name == "p1-1" and p.host == f"{lab.prefix}P1"
    for name in lab_links(lab.prefix):
        assert len(name) <= 15
    spec = lab.settings.agent_spec(lab.hq_ip, lab.agent_phones(), "/tmp/x", "pfs")
    assert spec["server"] == "10.0.0.10" and spec["blksize"] == 1428 and "mode" not in spec
    assert set(spec["phones"][0]) == {"name", "ip", "mac", "model", "subnet", "broadcast",
                                      "pfs", "netns"}
    assert lab.wan.emulation in ("netem", "nfqueue")


def test_ping_across_wan_has_configured_delay(lab):
    hq = lab.node_netns(lab.info["hq"])
    echo = Echo(hq, lab.hq_ip)
    echo.start()
    s = sock_in(lab.phones[0].netns)
    s.settimeout(2)
    rtts = []
    try:
        for i in range(10):
            t = time.monotonic()
            s.sendto(b"ping-%d" % i, (lab.hq_ip, 7))
            data, _ = s.recvfrom(100)
            rtts.append(time.monotonic() - t)
            assert data == b"ping-%d" % i
    finally:
        echo.stop = True
        s.close()
    assert min(rtts) >= 2 * DELAY_S, rtts
    assert sorted(rtts)[len(rtts) // 2] < 2 * DELAY_S + 0.060, rtts


def test_wan_bandwidth_is_limited(lab):
    hq = lab.node_netns(lab.info["hq"])
    srv = sock_in(hq, socket.SOCK_STREAM)
    srv.bind((lab.hq_ip, 5001))
    srv.listen(1)
    got = {}

    def receive():
        c, _ = srv.accept()
        n, first, last = 0, None, None
        while True:
            b = c.recv(65536)
            if not b:
                break
            now = time.monotonic()
            first = first or now
            n += len(b)
            last = now
        got.update(n=n, secs=last - first)
        c.close()

    t = threading.Thread(target=receive, daemon=True)
    t.start()
    cl = sock_in(lab.phones[2].netns, socket.SOCK_STREAM)
    cl.connect((lab.hq_ip, 5001))
    end = time.monotonic() + 3.0
    chunk = b"x" * 16384
    while time.monotonic() < end:
        cl.send(chunk)
    cl.close()
    t.join(15)
    srv.close()
    rate = got["n"] * 8 / got["secs"]
    assert rate <= 1.2 * BW_BPS, rate
    assert rate >= 0.5 * BW_BPS, rate


def test_broadcast_stays_in_its_subnet_and_each_frame_is_captured_once(lab):
    a, b, c = lab.phones[0], lab.phones[1], lab.phones[2]
    rb, rc = sock_in(b.netns), sock_in(c.netns)
    for r in (rb, rc):
        r.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        r.bind(("", 4051))
        r.settimeout(0.5)
    tx = sock_in(a.netns)
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    tx.bind((a.ip, 4051))
    marker = b"BCAST-%d" % os.getpid()
    tx.sendto(marker, (a.broadcast, 4051))
    assert rb.recvfrom(100)[0] == marker
    with pytest.raises(socket.timeout):
        rc.recvfrom(100)
    # N unicast datagrams phone to phone (they cross two bridge ports each)
    umark = b"UNI-%d-" % os.getpid()
    for i in range(5):
        tx.sendto(umark + b"%d" % i, (b.ip, 4051))
        rb.recvfrom(100)
    # phone-to-phone TCP
    srv = sock_in(b.netns, socket.SOCK_STREAM)
    srv.bind((b.ip, 4052))
    srv.listen(1)
    cl = sock_in(a.netns, socket.SOCK_STREAM)
    cl.connect((b.ip, 4052))
    conn, _ = srv.accept()
    tmark = b"TCP-%d" % os.getpid()
    cl.sendall(tmark)
    assert conn.recv(100) == tmark
    for s in (cl, conn, srv, tx, rb, rc):
        s.close()
    time.sleep(1.5)   # margin for tcpdump's write after the last frame
    s1 = read_pcap(lab.captures["subnet-1"])
    s2 = read_pcap(lab.captures["subnet-2"])
    assert count(s1, marker) == 1
    assert count(s2, marker) == 0
    assert count(s1, umark) == 5
    assert count(s1, tmark) == 1
    assert count(read_pcap(lab.captures["wan"]), umark) == 0


def test_wan_pcap_sees_cross_wan_traffic_once(lab):
    hq = lab.node_netns(lab.info["hq"])
    r = sock_in(hq)
    r.bind((lab.hq_ip, 9999))
    r.settimeout(2)
    tx = sock_in(lab.phones[3].netns)
    mark = b"WAN-%d-" % os.getpid()
    for i in range(4):
        tx.sendto(mark + b"%d" % i, (lab.hq_ip, 9999))
        r.recvfrom(100)
    tx.close()
    r.close()
    time.sleep(1.5)
    assert count(read_pcap(lab.captures["wan"]), mark) == 4
    assert count(read_pcap(lab.captures["subnet-2"]), mark) == 4
    assert count(read_pcap(lab.captures["subnet-1"]), mark) == 0


def test_tftp_fetch_from_a_phone_is_logged_with_client_and_file(lab):
    p = lab.phones[1]
    data = tftp_get(p.netns, lab.hq_ip, "hello.bin")
    assert data == bytes(range(256)) * 7
    with pytest.raises(FileNotFoundError):
        tftp_get(p.netns, lab.hq_ip, "no-such-file")
    time.sleep(0.2)
    reqs = lab.tftp_requests()
    assert {"client": p.ip, "file": "hello.bin"} in [
        {"client": r["client"], "file": r["file"]} for r in reqs if r["event"] == "RRQ"]
    assert any(r["event"] == "NAK" and r["client"] == p.ip for r in reqs)
    with open(lab.tftp_log) as f:
        assert f"RRQ from {p.ip} filename hello.bin" in f.read()


def test_a_folder_used_again_logs_only_its_own_run(tmp_path):
    """in.tftpd's log (and the PFS syslog) of a folder used again hold this run's lines only,
    so HQ requests are not counted twice."""
    for run in (1, 2):
        with small_lab(1, out_dir=str(tmp_path), tftp_files={"r.bin": b"x" * 10}) as net:
            p = net.phones[0]
            assert tftp_get(p.netns, net.hq_ip, "r.bin") == b"x" * 10
            time.sleep(0.2)
            assert len([r for r in net.tftp_requests() if r["event"] == "RRQ"]) == 1, run


def test_udp_counters_are_read_per_phone_namespace(lab):
    """The fidelity account reads a phone's UDP counters from its namespace file (no process
    lives there): a datagram sent to one phone counts there and not in another phone."""
    from pfslab.lab.fidelity import udp_counters
    a, b = lab.phones[0], lab.phones[1]
    before = {p.name: udp_counters(p.netns) for p in (a, b)}
    rx = sock_in(a.netns)
    rx.bind((a.ip, 9999))
    tx = sock_in(b.netns)
    tx.sendto(b"x", (a.ip, 9999))
    rx.settimeout(3)
    rx.recvfrom(16)
    after = {p.name: udp_counters(p.netns) for p in (a, b)}
    rx.close()
    tx.close()
    assert after[a.name]["InDatagrams"] - before[a.name]["InDatagrams"] == 1
    assert after[b.name]["InDatagrams"] == before[b.name]["InDatagrams"]
    assert after[b.name]["OutDatagrams"] - before[b.name]["OutDatagrams"] == 1


def test_cli_runs_a_command_in_a_phone_namespace(lab, tmp_path, capfd):
    """--cli: `<phone host> <command>` runs in the phone's namespace (a light host, not a
    Mininet node), another host's name in it replaced by its IP, as Mininet does."""
    p = lab.phones[0]
    script = tmp_path / "cli.txt"
    script.write_text(f"{p.host} ip -br addr show {p.host}-0\n"
                      f"{p.host} ping -c1 -W3 {lab.info['hq']}\n")
    with open(os.devnull) as stdin:
        lab.cli(stdin=stdin, script=str(script))
    out = capfd.readouterr().out
    assert f"{p.ip}/24" in out and "1 received" in out, out


# ------------------------------------------------------------------ teardown
def _alive(entries):
    from pfslab.lab.nsutil import same_process
    return [e for e in entries if same_process(e["pid"], e.get("start"))]


@pytest.mark.parametrize("how", ["normal", "error", "interrupt"])
def test_teardown_leaves_nothing(tmp_path, how):
    from pfslab.lab import records
    seen = {}
    exc = {"normal": None, "error": RuntimeError, "interrupt": KeyboardInterrupt}[how]
    try:
        with small_lab(1, wan_bw="1mbit", wan_delay="10ms", wan_loss="1%",
                       out_dir=str(tmp_path)) as net:
            seen["prefix"] = net.prefix
            seen["record"] = net.record.path
            seen["pids"] = list(net.record.data["pids"])
            assert lab_links(net.prefix)
            assert lab_netns(net.prefix) == sorted(p.host for p in net.phones)
            assert _alive(seen["pids"])
            if exc:
                raise exc("boom")
    except (RuntimeError, KeyboardInterrupt):
        assert exc is not None
    assert lab_links(seen["prefix"]) == []
    assert lab_netns(seen["prefix"]) == []
    assert _alive(seen["pids"]) == []
    assert not os.path.exists(seen["record"])
    assert not [r for r in records.list_records() if r.get("prefix") == seen["prefix"]]
    assert os.path.getsize(tmp_path / "wan.pcap") >= 24


def test_clean_removes_a_crashed_run(tmp_path):
    """A run killed with SIGKILL leaves its net; `pfslab clean RUN_ID` removes it."""
    code = f"""
import os, json, sys
from pfslab.lab.net import LabNet
from pfslab.settings import Settings
from pfslab.site import Site
net = LabNet(Site.branch(2, 1), Settings(wan_delay="5ms"), out_dir={str(tmp_path)!r})
net.__enter__()
print(json.dumps({{"run_id": net.run_id, "prefix": net.prefix,
                   "pids": net.record.data["pids"]}}), flush=True)
os.kill(os.getpid(), 9)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, cwd=REPO)
    info = json.loads(r.stdout.decode().splitlines()[0])
    assert lab_links(info["prefix"])
    assert len(lab_netns(info["prefix"])) == 2
    r = subprocess.run([sys.executable, "-m", "pfslab.cli", "clean", info["run_id"]],
                       capture_output=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert lab_links(info["prefix"]) == []
    assert lab_netns(info["prefix"]) == []
    assert _alive(info["pids"]) == []


def test_clean_removes_namespaces_by_record_and_by_prefix_and_no_other():
    """`pfslab clean`'s namespace step: the record's names and any other <prefix><A-Z>...
    namespace go (a run killed before its record named them); a namespace of a longer prefix,
    or one the record names but not of its prefix, stays."""
    from pfslab.lab import clean, lighthost
    from pfslab.lab.records import new_prefix
    p = new_prefix()
    mine, unrecorded = f"{p}P1", f"{p}P2"
    other, stray = f"{p}xP1", f"{new_prefix()}P1"     # not <p><A-Z>...
    hosts = [lighthost.netns_file(n) for n in (mine, unrecorded, other, stray)]
    try:
        for n in (mine, unrecorded, other, stray):
            lighthost.create_netns(n)
        gone = clean.delete_netns([mine, stray], p, log=lambda m: None)
        assert sorted(gone) == sorted([mine, unrecorded])
        assert [os.path.exists(h) for h in hosts] == [False, False, True, True]
    finally:
        lighthost.remove([other, stray, mine, unrecorded])


# ------------------------------------------------------------------ bad input
def _snapshot():
    from pfslab.lab import records
    return {r["run_id"] for r in records.list_records()}


@pytest.mark.parametrize("kwargs, words", [
    ({"wan_bw": "fast"}, "bandwidth"),
    ({"wan_delay": "75 parsecs"}, "delay"),
    ({"wan_loss": "150%"}, "loss"),
    ({"topo": "no-such-topology"}, "unknown topology"),
])
def test_bad_input_is_a_user_error_and_leaves_nothing(tmp_path, kwargs, words):
    from pfslab.errors import UserError
    before = _snapshot()
    kwargs = dict(kwargs)
    topo = kwargs.pop("topo", "small")
    with pytest.raises(UserError, match=words):
        small_lab(topo=topo, prefix="pzzbad", out_dir=str(tmp_path), **kwargs)
    assert _snapshot() == before
    assert lab_links("pzzbad") == []


def test_broken_topology_file(tmp_path):
    from pfslab.errors import UserError
    bad = tmp_path / "broken.py"
    bad.write_text("topos = {'x': \n")
    with pytest.raises(UserError, match="broken"):
        small_lab(topo=str(bad), out_dir=str(tmp_path))
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    with pytest.raises(UserError, match="topos"):
        small_lab(topo=str(empty), out_dir=str(tmp_path))


def test_missing_binary_names_the_package(tmp_path, monkeypatch):
    from pfslab.errors import UserError
    from pfslab.lab import net as netmod
    monkeypatch.setattr(netmod, "LAB_BINARIES", netmod.LAB_BINARIES + ("in.tftpd-nope",))
    monkeypatch.setitem(__import__("pfslab.lab.nsutil", fromlist=["x"]).BINARIES,
                        "in.tftpd-nope", "tftpd-hpa")
    with pytest.raises(UserError, match="tftpd-hpa"):
        small_lab(out_dir=str(tmp_path))


def test_not_root_is_a_user_error():
    code = ("import sys; from pfslab.errors import UserError\n"
            "from pfslab.lab.net import LabNet; from pfslab.site import Site\n"
            "try:\n    LabNet(Site.branch(1, 1))\nexcept UserError as e:\n    print(e); sys.exit(2)\n")
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60,
                           cwd="/", user=65534, group=65534,
                           env={"PYTHONPATH": REPO, "PATH": os.environ.get("PATH", "")})
    except PermissionError:
        pytest.skip("cannot run as nobody here")
    if b"No module named" in r.stderr or b"Permission denied" in r.stderr:
        pytest.skip("the venv is not readable by nobody")
    assert r.returncode == 2, r.stderr
    assert b"root" in r.stdout


def test_mn_custom_loads_the_topology(tmp_path):
    """`mn --custom topologies/pfs_branch.py --topo small,prefix=P` builds and tears down."""
    from pfslab.lab.records import new_prefix
    from test_lab_first_minutes import check_mn_can_load
    prefix = new_prefix()
    check_mn_can_load("small", prefix=prefix)   # before mn: its failure cleans up globally
    r = subprocess.run(["mn", "--custom", os.path.join(REPO, "topologies", "pfs_branch.py"),
                        "--topo", f"small,prefix={prefix}", "--switch", "lxbr",
                        "--controller", "none", "--test", "build"],
                       capture_output=True, timeout=120, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert lab_links(prefix) == []


def test_wan_loss_drops_about_the_configured_share(tmp_path):
    with small_lab(1, wan_bw="10mbit", wan_delay="5ms", wan_loss="20%", capture=False,
                   tftp=False, out_dir=str(tmp_path)) as net:
        hq = net.node_netns(net.info["hq"])
        r = sock_in(hq)
        r.bind((net.hq_ip, 9998))
        r.settimeout(0.5)
        tx = sock_in(net.phones[0].netns)
        tx.connect((net.hq_ip, 9998))  # (ARP is not forwarded, so only these 200 face loss)
        for i in range(200):
            tx.send(b"loss-%d" % i)
            time.sleep(0.001)
        got = 0
        try:
            while True:
                r.recv(100)
                got += 1
        except socket.timeout:
            pass
        tx.close()
        r.close()
        assert net.wan.emulation in ("netem", "nfqueue")
    assert 120 <= got <= 190, got  # 160 expected; +-4 sigma plus a lost ARP or two
