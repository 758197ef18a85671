"""`python -m pfslab.bench`: its pure parts, no root, no lab, no timings.

Argument parsing, the JSON and PNG written from a small synthetic result set, and the
simulated series for tiny N (figures checked for shape and consistency, never for speed).
"""
from __future__ import annotations

import json

import pytest

from pfslab import bench
from pfslab.errors import UserError


def test_defaults_sweep_1_to_64_and_simulated_further():
    a = bench.parse_args([])
    assert a.ns == [1, 2, 4, 8, 16, 32, 64]
    assert a.sim_ns[-1] >= 512 and a.sim_ns[0] == 1
    assert a.out == "bench/out"
    assert a.wan_grid == "default"
    assert a.models_list == bench.DEFAULTS["models"].split(",")
    grid = bench.wan_grid(a)
    assert (a.wan_bw, a.wan_delay) in grid and len(grid) == 4


def test_quick_and_explicit_lists():
    a = bench.parse_args(["--quick"])
    assert a.ns == bench.QUICK_LAB_NS and a.sim_ns == bench.QUICK_SIM_NS
    assert bench.wan_grid(a) == [(a.wan_bw, a.wan_delay)]
    a = bench.parse_args(["--quick", "--ns", "8,2,2", "--sim-ns", "3", "--wan-grid", "full"])
    assert a.ns == [2, 8] and a.sim_ns == [3]
    assert len(bench.wan_grid(a)) == 16


@pytest.mark.parametrize("argv", [["--ns", "0,4"], ["--ns", "a"], ["--ns", ","],
                                  ["--models", "CP-9999"], ["--wan-bw", "fast"],
                                  ["--subnets", "0"], ["--firmware-scale", "0"]])
def test_bad_arguments_are_user_errors(argv):
    with pytest.raises(UserError):
        bench.parse_args(argv)


def test_lab_settings_are_pfslab_lab_settings():
    from pfslab.settings import Settings
    a = bench.parse_args(["--subnets", "3", "--wan-bw", "1mbit", "--firmware-scale", "0.01"])
    la = bench.lab_settings(a, 16)
    assert (la.subnets, la.phones_per_subnet, la.wan_bw, la.firmware_scale) == (3, 16, "1mbit",
                                                                                 0.01)
    assert la.models == ",".join(a.models_list) and la.timeout == a.timeout
    assert la.device_pfs_off == "" and la.blksize == Settings().blksize


def test_not_root_without_no_lab_exits_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(bench.os, "geteuid", lambda: 1000)
    assert bench.main(["--out", str(tmp_path)]) == 2
    assert "root" in capsys.readouterr().err
    assert not (tmp_path / "bench.json").exists()


def _row(series, n, mode, makespan, wan):
    return {"series": series, "n": n, "phones": 2 * n, "mode": mode, "completed": 2 * n,
            "total": 2 * n, "makespan_s": makespan, "wan_bytes": wan, "tftp_requests": 7,
            "roots": 0, "max_depth": 1, "duration_s": 1.0}


def synthetic() -> dict:
    a = bench.parse_args(["--ns", "1,2,4", "--sim-ns", "1,2,4,8"])
    lab = [_row("lab", n, m, 20.0 * (n if m == "traditional" else 1),
                3e5 * (n if m == "traditional" else 1)) for n in (1, 2, 4)
           for m in bench.MODES]
    sim = [_row("simulated", n, m, 18.0 * (n if m == "traditional" else 1),
                2.9e5 * (n if m == "traditional" else 1)) for n in (1, 2, 4, 8)
           for m in bench.MODES]
    sim.append({**_row("simulated", 16, "pfs", None, None), "completed": 0})  # a failed point
    return {"started": "2026-01-01T00:00:00+00:00", "settings": bench.settings(a),
            "machine": bench.machine_info(), "durations_s": {"total": 1.0},
            "wan_check": [{"bw": "512kbit", "bw_bps": 512000, "delay": "75ms", "delay_s": 0.075,
                           "loss": "0%", "emulation": "nfqueue",
                           "rtt": {"n": 20, "lost": 0, "min_ms": 150.2, "median_ms": 150.9,
                                   "max_ms": 152.0},
                           "expected_rtt_ms": 150.0, "throughput_bps": 490e3,
                           "throughput_all_bps": 495e3, "throughput_ratio": 0.957}],
            "lab": lab, "simulated": sim}


def test_json_and_png_from_a_synthetic_result(tmp_path):
    result = synthetic()
    jp, pp = bench.write_outputs(result, str(tmp_path / "out"))
    with open(jp) as f:
        back = json.load(f)
    assert back["lab"] == result["lab"] and back["settings"]["lab_ns"] == [1, 2, 4]
    assert back["machine"]["nproc"] >= 1 and back["machine"]["kernel"]
    with open(pp, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "out" / "bench.png").stat().st_size > 10_000


def test_tables_render(tmp_path):
    from rich.console import Console
    result = synthetic()
    con = Console(file=open(tmp_path / "t.txt", "w"), width=160)
    con.print(bench.wan_table(result["wan_check"]))
    con.print(bench.sweep_table(result["lab"], "lab"))
    con.print(bench.sweep_table(result["simulated"], "simulated"))
    con.file.close()
    text = (tmp_path / "t.txt").read_text()
    assert "490 kbit/s" in text and "150 ms" in text
    assert "0.25" in text          # lab N=4: PFS / traditional = 1/4
    assert "Sweep, simulated" in text


def test_simulated_series_for_tiny_n():
    a = bench.parse_args(["--sim-ns", "1,3", "--firmware-scale", "0.002"])
    rows = bench.run_sim_sweep(a)
    assert [(r["n"], r["mode"]) for r in rows] == [(1, "pfs"), (1, "traditional"),
                                                   (3, "pfs"), (3, "traditional")]
    for r in rows:
        assert r["series"] == "simulated" and r["completed"] == r["total"] == r["phones"]
        assert r["makespan_s"] > 0 and r["wan_bytes"] > 0
    by = {(r["n"], r["mode"]): r for r in rows}
    # one phone per subnet per model: PFS and traditional fetch the same bytes
    assert by[(1, "pfs")]["wan_bytes"] == by[(1, "traditional")]["wan_bytes"]
    # three phones, two of one model: traditional fetches that load set once more per subnet
    assert by[(3, "pfs")]["wan_bytes"] < by[(3, "traditional")]["wan_bytes"]
    assert by[(3, "pfs")]["tftp_requests"] < by[(3, "traditional")]["tftp_requests"]
