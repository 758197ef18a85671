"""results.json's schema (docs/results.md) against what pfslab.results produces, and the one
derivation of PFS trees from the phones' own account."""
from __future__ import annotations

import os
import re
import struct

import pytest

from pfslab import results as res
from pfslab.settings import Settings
from pfslab.sim.run import simulate

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                   "results.md")


def documented() -> dict[str, dict[str, bool]]:
    """section -> {key: lab only?} from docs/results.md's tables."""
    out, section = {}, None
    for line in open(DOC):
        if line.startswith("## "):
            section = out.setdefault(line[3:].strip(), {})
        m = re.match(r"\| (`[^|]+`) \| (.*) \|$", line.strip())
        if m and section is not None:
            for key in re.findall(r"`([^`]+)`", m.group(1)):
                section[key] = m.group(2).startswith("*lab*")
    return out


@pytest.fixture(scope="module")
def sim_result():
    s = Settings(subnets=2, phones_per_subnet=4, firmware_scale=0.005)
    bps, delay, _ = s.wan()
    return simulate(s.site(), "pfs", seed=1, wan_delay_s=delay, wan_bps=bps)


def _check(section: dict[str, bool], got: set[str], lab: bool):
    want = {k for k, lab_only in section.items() if lab or not lab_only}
    assert got - set(section) == set(), "not in docs/results.md"
    assert want - got == set(), "documented but missing"


def test_doc_tables_are_read():
    d = documented()
    assert {"One mode", "One phone (`phones[]`)", "One hierarchy (`hierarchies[]`)"} <= set(d)
    assert d["One mode"]["wire_check"] and not d["One mode"]["makespan_s"]


def test_simulator_results_match_the_documented_schema(sim_result):
    d = documented()
    _check(d["One mode"], set(sim_result), lab=False)
    for p in sim_result["phones"]:
        _check(d["One phone (`phones[]`)"], set(p), lab=False)
    assert sim_result["hierarchies"]
    for h in sim_result["hierarchies"]:
        _check(d["One hierarchy (`hierarchies[]`)"], set(h), lab=False)


def test_lab_shaped_result_matches_the_documented_schema(sim_result):
    """A lab result: the same type, with the lab's extra fields filled in."""
    d = documented()
    phones = [{**p, "netns": "/proc/1/ns/net", "fault": None, "pfs_configured": True}
              for p in sim_result["phones"]]
    r = res.ModeResult(mode="pfs", wan=sim_result["wan"], phones=phones, tftp_requests=[],
                       wan_bytes=1, wan_frames=1, run_id="x", out_dir="/x", agent_exit=0,
                       wire_check={"hierarchies_vs_agents": []}, fidelity={}, timings={},
                       estimate={}).to_dict()
    _check(d["One mode"], set(r), lab=True)
    for p in r["phones"]:
        _check(d["One phone (`phones[]`)"], set(p), lab=True)


def test_hierarchies_come_from_each_phones_files(sim_result):
    """Every edge's child got the file from that parent; every root held the registrar."""
    byip = {p["ip"]: p for p in sim_result["phones"]}
    for h in sim_result["hierarchies"]:
        assert byip[h["root"]]["files"][h["file"]]["role"] == "root"
        for parent, child in h["edges"]:
            f = byip[child]["files"][h["file"]]
            assert f["role"] == "child" and f["parent"] == parent == f["source"]
            assert byip[parent]["subnet"] == byip[child]["subnet"] == h["subnet"]


def test_makespan_and_counts(sim_result):
    done = [p["completed_at_s"] for p in sim_result["phones"]]
    assert sim_result["makespan_s"] == max(done)
    assert sim_result["completed"] == sim_result["total"] == 8


def test_traditional_is_pfs_off_everywhere():
    s = Settings(subnets=1, phones_per_subnet=3, firmware_scale=0.005)
    site = s.site()
    assert set(site.pfs_of("traditional").values()) == {False}
    bps, delay, _ = s.wan()
    r = simulate(site, "traditional", seed=1, wan_delay_s=delay, wan_bps=bps)
    assert r["hierarchies"] == [] and not any(p["pfs_enabled"] for p in r["phones"])
    assert all(f["role"] == "tftp" for p in r["phones"] for f in p["files"].values())


def test_wan_traffic_of_a_missing_or_empty_file(tmp_path):
    zero = {"frames": 0, "bytes": 0, "tftp": 0, "syslog": 0, "other": 0}
    assert res.wan_traffic(str(tmp_path / "none.pcap")) == zero
    (tmp_path / "e.pcap").write_bytes(b"")
    assert res.wan_traffic(str(tmp_path / "e.pcap")) == zero


def _udp_frame(sport: int, dport: int, payload: bytes) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + len(payload), 0, 0, 64, 17, 0,
                     bytes([10, 1, 1, 10]), bytes([10, 0, 0, 10]))
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + \
        struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def test_wan_traffic_splits_tftp_from_syslog_and_the_rest(tmp_path):
    frames = [_udp_frame(50000, 69, b"\x00\x01SEP.cnf.xml\x00octet\x00"),   # RRQ
              _udp_frame(40000, 50000, b"\x00\x03\x00\x01" + b"x" * 512),   # DATA
              _udp_frame(50001, 514, b"<134>pfs: hello"),                    # syslog
              b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + b"\x00" * 28]         # ARP
    blob = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for fr in frames:
        blob += struct.pack("<IIII", 0, 0, len(fr), len(fr)) + fr
    p = tmp_path / "wan.pcap"
    p.write_bytes(blob + b"\x00\x00\x00")       # a torn last record header is ignored
    sizes = [len(fr) for fr in frames]
    assert res.wan_traffic(str(p)) == {"frames": 4, "bytes": sum(sizes),
                                       "tftp": sizes[0] + sizes[1], "syslog": sizes[2],
                                       "other": sizes[3]}


def test_the_summary_shows_tftp_bytes_against_one_copy_per_group():
    from rich.console import Console
    from pfslab.report import one_copy_line, print_report
    r = {"mode": "pfs", "phones": [{"completed": True}], "hierarchies": [], "makespan_s": 1.0,
         "wan_bytes": 5_650_000, "wan_tftp_bytes": 306_000,
         "estimate": {"wan_bytes": 300_000}}
    assert one_copy_line(r) == ("pfs: WAN TFTP bytes 0.31 MB = 1.020 x one copy per "
                                "(subnet, model) + configs (0.30 MB)")
    con = Console(width=200, record=True)
    print_report([r], console=con)
    text = con.export_text()
    assert "5.65 MB" in text and "0.31 MB" in text and "1.020 x" in text
    assert one_copy_line({**r, "capped": {"sample": 1}}) is None   # a sample is no copy count


def test_a_deep_tree_folds_below_four_levels():
    from rich.console import Console
    from pfslab.report import hierarchy_tree
    ips = [f"10.1.1.{i}" for i in range(1, 64)]                  # a full binary tree, 63 nodes
    edges = [[ips[(i - 1) // 2], ips[i]] for i in range(1, 63)]
    h = {"file": "f", "subnet": 1, "model": "CP-7961G", "root": ips[0], "edges": edges}
    con = Console(width=200, record=True)
    con.print(hierarchy_tree(h, {}))
    text = con.export_text()
    assert text.count("(10.1.1.") == 1 + 2 + 4 + 8 + 16            # root and four levels
    assert text.count("+2 phones below") == 16                    # level 4 holds the rest
    con = Console(width=200, record=True)
    con.print(hierarchy_tree(h, {}, depth=None))
    assert con.export_text().count("(10.1.1.") == 63


def test_the_summary_counts_fallbacks_of_pfs_phones_only():
    from pfslab.report import mode_stats
    phones = [{"completed": True, "pfs_enabled": True,
               "files": {"a": {"role": "root"}, "b": {"role": "tftp"}, "c": {"role": "child"}}},
              {"completed": True, "pfs_enabled": False,        # a CP-7960G: TFTP by design
               "files": {"a": {"role": "tftp"}}}]
    assert mode_stats({"mode": "pfs", "phones": phones})["fallbacks"] == 1
