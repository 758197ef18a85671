"""One small `pfslab lab` run in both modes, checked for what people see: the PFS log server
at HQ (rsyslogd) got every phone's DLoad lines in the phone's own order, across the WAN; the
phone whose config names no log server sent none; the run wrote report.html, whose trees
are results.json's; without a terminal the progress is plain lines.

Lab: 1 subnet x 4 phones (CP-7961G, CP-7941G cycled); phone 3 has no <logServer>.
"""
from __future__ import annotations

import argparse
import json
import os

import pytest

pytestmark = pytest.mark.lab

NO_LOG_SERVER = 3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from pfslab.lab import run as labrun
    out = tmp_path_factory.mktemp("syslogrun")
    p = argparse.ArgumentParser()
    labrun.add_arguments(p)
    args = p.parse_args(["--subnets", "1", "--phones-per-subnet", "4", "--models",
                         "CP-7961G,CP-7941G", "--mode", "both", "--firmware-scale", "0.004",
                         "--wan-bw", "2mbit", "--wan-delay", "20ms", "--timeout", "150",
                         "--log-server-off", str(NO_LOG_SERVER), "--out", str(out)])
    rc = labrun.run(args)
    with open(out / "results.json") as f:
        results = json.load(f)
    return out, rc, results


def own_log(mode_dir, name) -> list[str]:
    with open(os.path.join(mode_dir, "logs", f"{name}.log")) as f:
        return [ln.rstrip("\n") for ln in f if ln.strip()]


def test_every_phone_with_a_log_server_sent_its_lines_in_order(run):
    from pfslab.lab.syslog_server import parse_log
    out, rc, results = run
    assert rc == 0
    for r in results:
        mode_dir = out / r["mode"]
        recs = parse_log(str(mode_dir / "pfs-syslog.log"))
        by_phone: dict[str, list] = {}
        for rec in recs:
            by_phone.setdefault(rec["phone"], []).append(rec)
        silent = r["phones"][NO_LOG_SERVER - 1]
        assert silent["name"] not in by_phone, f"{r['mode']}: {silent['name']} sent syslog"
        for ph in r["phones"]:
            if ph is silent:
                continue
            got = by_phone.get(ph["name"])
            assert got, f"{r['mode']}: nothing from {ph['name']}"
            assert {g["ip"] for g in got} == {ph["ip"]}
            lines = [g["line"] for g in got]
            own = own_log(mode_dir, ph["name"])
            start = own.index(lines[0])            # it sends once it has read its config
            assert own[start].split("DLoad: ")[1].startswith("Config: ")
            assert lines == own[start:], f"{r['mode']} {ph['name']}: not its log's order"


def test_syslog_crossed_the_wan(run):
    from scapy.all import IP, UDP, PcapReader
    out, _, results = run
    for r in results:
        senders = set()
        with PcapReader(str(out / r["mode"] / "wan.pcap")) as pcap:
            for pkt in pcap:
                if pkt.haslayer(UDP) and pkt[UDP].dport == 514:
                    senders.add(pkt[IP].src)
        ips = [p["ip"] for p in r["phones"]]
        assert senders == set(ips) - {ips[NO_LOG_SERVER - 1]}


def test_the_run_wrote_its_report_and_left_no_rsyslogd(run):
    from test_report_html import parse, tree_edges
    out, _, results = run
    el = parse((out / "report.html").read_text())
    pfs = next(r for r in results if r["mode"] == "pfs")
    assert tree_edges(el) == {tuple(e) for h in pfs["hierarchies"] for e in h["edges"]}
    assert el.find("svg", "ladder") and el.find("svg", "timeline")
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            assert not (b"rsyslogd" in cmd and any(r["run_id"].encode() in cmd
                                                   for r in results)), cmd


def test_decode_checks_the_log_servers_roots_against_the_wire(run):
    """`pfslab decode` reads pfs-syslog.log beside the captures: every root a phone announced
    there is a root on the wire, and every wire root announced it (but the silent phone)."""
    from pfslab.dissect.decode import decode_paths
    out, _, results = run
    pfs = next(r for r in results if r["mode"] == "pfs")
    report = decode_paths([str(out / "pfs")])
    ls = report["log_server"]
    assert ls["file"] == "pfs-syslog.log" and ls["roots_announced"] > 0
    assert ls["roots_not_on_wire"] == []
    silent_ip = pfs["phones"][NO_LOG_SERVER - 1]["ip"]
    assert {r["ip"] for r in ls["wire_roots_not_announced"]} <= {silent_ip}
