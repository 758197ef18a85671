"""results.json's schema (docs/results.md) against what pfslab.results produces, and the one
derivation of PFS trees from the phones' own account."""
from __future__ import annotations

import os
import re

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
                       wire_check={"hierarchies_vs_agents": []}).to_dict()
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


def test_pcap_bytes_of_a_missing_or_empty_file(tmp_path):
    assert res.pcap_bytes(str(tmp_path / "none.pcap")) == (0, 0)
    (tmp_path / "e.pcap").write_bytes(b"")
    assert res.pcap_bytes(str(tmp_path / "e.pcap")) == (0, 0)
