"""The cost estimate printed before a lab run, and the capped traditional baseline's labels."""
import pytest

from pfslab import firmware
from pfslab.lab import estimate as est
from pfslab.site import Site

SCALE = 0.01


def plan(subnets, per, models="CP-7961G,CP-7941G"):
    return Site.branch(subnets, per, models, firmware_scale=SCALE)


def mode_estimate(site, mode, **kw):
    return est.estimate_site(site, mode, **kw)


def loadset_bytes():
    _, files = firmware.build_load("SCCP41.9-4-2SR3-1S", SCALE)
    return sum(est.wire_bytes(len(b), 1428, f) for f, b in files.items()), len(files)


def test_wire_bytes_counts_every_packet_of_a_fetch():
    # RRQ "SEP0250460101.cnf.xml" octet blksize 1428 tsize 0 timeout 1: 2+22+6+13+8+10 = 61
    # OACK blksize 1428 tsize 233 timeout 1: 2+13+10+10 = 35; ACK 46; DATA 46 + payload
    rrq, oack = 42 + 61, 42 + 35
    assert est.wire_bytes(233, 1428, "SEP0250460101.cnf.xml") == \
        rrq + oack + 46 + (46 + 233) + 46
    assert est.down_bytes(233, 1428, "SEP0250460101.cnf.xml") == oack + 46 + 233
    # a whole block is followed by an empty one; timeout 10 is one more byte each way
    assert est.wire_bytes(1428, 1428, "x", 10) - est.wire_bytes(1428, 1428, "x", 1) == 2
    assert est.wire_bytes(1428, 1428, "x") == est.wire_bytes(0, 1428, "x") + 1428 + 2 * 46 \
        + 3                                                   # tsize "1428", not "0"


def test_pfs_moves_one_load_set_per_subnet_and_load():
    phones = plan(2, 8)
    ls, nfiles = loadset_bytes()
    p = mode_estimate(phones, "pfs", wan_bps=512e3, wan_rtt=0.15)
    t = mode_estimate(phones, "traditional", wan_bps=512e3, wan_rtt=0.15)
    assert p["groups"] == 4                       # (subnet, model): one hierarchy each
    assert p["roots"] == 4 * nfiles               # one root per (subnet, model, file)
    assert p["hq_requests"] == 16 + 4 * nfiles    # a config each, the load set per group
    assert t["hq_requests"] == 16 * (1 + nfiles)
    configs = p["wan_bytes"] - 4 * ls
    assert 0 < configs < 16 * 4000
    assert t["wan_bytes"] == 16 * ls + configs
    assert t["bound"] == "bandwidth"
    # the bandwidth bounds the shaped direction (DATA from HQ), not the ACKs going back
    assert t["wan_down_bytes"] < t["wan_bytes"]
    assert t["makespan_s"] == pytest.approx(t["wan_down_bytes"] * 8 / 512e3, abs=0.1)
    assert p["bound"] == "lock-step TFTP" and p["makespan_s"] < t["makespan_s"] / 1.5


def test_lock_step_bounds_a_fast_long_wan():
    phones = plan(1, 2)
    e = mode_estimate(phones, "traditional", wan_bps=1e9, wan_rtt=0.3)
    assert e["bound"] == "lock-step TFTP"
    assert e["lockstep_s"] > e["wan_busy_s"]
    assert "lock-step TFTP-bound" in est.describe(e)


def test_phones_without_pfs_fetch_everything_in_pfs_mode():
    phones = plan(1, 3, models="CP-7961G,CP-7960G")       # the 7960 cannot share
    e = mode_estimate(phones, "pfs", wan_bps=512e3, wan_rtt=0.15)
    _, n41 = loadset_bytes()
    n7960 = len(firmware.build_load("P0030801SR02", SCALE)[1])
    assert e["groups"] == 1
    assert e["hq_requests"] == 3 + n41 + n7960


def test_describe_and_human_units():
    assert est.human_s(30) == "30 s"
    assert est.human_s(600) == "10 min"
    assert est.human_s(3 * 3600) == "3.0 h"
    phones = plan(2, 8)
    line = est.describe(mode_estimate(phones, "traditional", wan_bps=512e3, wan_rtt=0.15))
    assert line.startswith("traditional: >= ") and "MB over the WAN" in line


def test_sample_spreads_over_subnets_and_models():
    phones = [vars(p) for p in plan(4, 10).phones]
    s = est.sample_phones(phones, 8)
    assert len(s) == 8 and len({p["name"] for p in s}) == 8
    assert {p["subnet"] for p in s} == {1, 2, 3, 4}
    assert {p["model"] for p in s} == {"CP-7961G", "CP-7941G"}
    assert est.sample_phones(phones, 100) == phones


def test_capped_is_said_only_of_a_capped_traditional_run():
    assert est.capped("pfs", 5, 30.0, 100) is None
    assert est.capped("traditional", None, None, 100) is None
    assert est.capped("traditional", 100, None, 100) is None
    c = est.capped("traditional", 10, 300.0, 1000)
    assert c == {"phones_in_lab": 1000, "sample": 10, "until_s": 300.0}
    note = est.capped_note(c)
    assert note.startswith("CAPPED traditional baseline: a sample of 10 of 1000 phones, "
                           "stopped at 300 s")
    assert est.capped_note(None) == ""


def test_request_sizes_are_the_real_encoders():
    from pfslab.agent.tftp import encode_oack, encode_rrq
    from pfslab.sim.wan import request_bytes
    for name, size, blk, k in (("SEP0250460101.cnf.xml", 233, 1428, 1), ("x.loads", 0, 512, 12)):
        opts = {"blksize": str(blk)} if blk != 512 else {}
        rrq = encode_rrq(name, "octet", {**opts, "tsize": "0", "timeout": str(k)})
        oack = encode_oack({**opts, "tsize": str(size), "timeout": str(k)})
        assert request_bytes(name, size, blk, k) == (42 + len(rrq), 42 + len(oack))
