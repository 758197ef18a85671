"""make bench-sim's pure parts: the physical bounds, and one small point end to end."""
import json

import pytest

from pfslab.sim import bench, scenario
from pfslab.sim.wan import blocks_of


def test_wire_bytes_of_a_fetch():
    # OACK 84, then 3 blocks (1428, 1428, 144) with 46 bytes of headers each
    assert bench.wire_bytes(3000, 1428) == 84 + 3000 + 3 * 46
    # named: the OACK as HQ sends it: 42 bytes of headers, opcode 2, "blksize\0" "1428\0"
    # 13, "tsize\0" "3000\0" 11, "timeout\0" "1\0" 10 = 78; the RRQ: 44 + "a.bin\0" 6 +
    # "octet\0" 6 + the options with tsize 0: 13 + 8 + 10 = 87; and 4 ACKs of 46
    assert bench.wire_bytes(3000, 1428, "a.bin") == 78 + 3000 + 3 * 46
    assert bench.up_bytes(3000, 1428, "a.bin") == 87 + 4 * 46


def test_traditional_bound_is_every_phones_bytes_at_the_wan_rate():
    specs = scenario.phone_specs(2, 3, ["CP-7961G"])
    net, _ = scenario.build(specs, scale=0.05)
    b = bench.bounds(specs, net.files, "traditional", bps=64e3, rtt=0.1, lan_bps=100e6,
                     blksize=1428)
    per_phone = sum(bench.wire_bytes(len(d), 1428, f) for f, d in net.files.items()
                    if not f.endswith(".cnf.xml"))
    configs = sum(bench.wire_bytes(len(d), 1428, f) for f, d in net.files.items()
                  if f.startswith("SEP"))
    assert b["bound_wan_bytes"] == 6 * per_phone + configs
    assert b["bound_s"] == pytest.approx(b["bound_wan_bytes"] * 8 / 64e3, abs=1e-3)


def test_pfs_bound_fetches_each_subnets_load_once():
    specs = scenario.phone_specs(2, 3, ["CP-7961G"])
    net, _ = scenario.build(specs, scale=0.05)
    trad = bench.bounds(specs, net.files, "traditional", bps=64e3, rtt=0.1, lan_bps=100e6,
                        blksize=1428)
    pfs = bench.bounds(specs, net.files, "pfs", bps=64e3, rtt=0.1, lan_bps=100e6, blksize=1428)
    configs = sum(bench.wire_bytes(len(d), 1428, f) for f, d in net.files.items()
                  if f.startswith("SEP"))
    assert pfs["bound_wan_bytes"] - configs == (trad["bound_wan_bytes"] - configs) // 3
    assert blocks_of(1428, 1428) == 2


def test_one_point_end_to_end(tmp_path, capsys):
    assert bench.main(["--out", str(tmp_path), "--ns", "2", "--scale", "0.02",
                       "--wan-bw", "256000"]) == 0
    rows = json.loads((tmp_path / "sim.json").read_text())["rows"]
    assert {(r["mode"], r["wan_model"]) for r in rows} == {
        ("pfs", "packet"), ("pfs", "fluid"), ("traditional", "packet"),
        ("traditional", "fluid")}
    for r in rows:
        assert not r["truncated"] and r["completed"] == r["phones"] == 8
        assert r["ratio"] >= 0.95           # a bound, within the model's rounding
    assert (tmp_path / "sim.png").stat().st_size > 10_000


def test_bad_arguments_get_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--ns", "1,x"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "x" in err[0]
