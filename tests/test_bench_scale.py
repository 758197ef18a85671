"""bench-scale's pure parts: the sites, the expected figures, a row from a results dict, the
table and the plot (no lab here)."""
import json

import pytest

from pfslab import bench_scale as bs
from pfslab.errors import UserError


def test_sites_spread_each_size_over_the_subnets_and_add_one_big_subnet():
    s = bs.sites([100, 250, 500, 1000], 4, [1000])
    assert [x["label"] for x in s] == ["4 x 25", "4 x 63", "4 x 125", "4 x 250", "1 x 1000"]
    assert [x["phones"] for x in s] == [100, 252, 500, 1000, 1000]
    assert [x["label"] for x in bs.sites([100, 250], 4, [1000])] == ["4 x 25", "4 x 63"]


def test_bad_sizes_are_one_line_user_errors():
    for bad in (["--sizes", "0"], ["--sizes", "a,b"], ["--sizes", "4000", "--subnets", "1"],
                ["--models", "CP-0000"], ["--wan-bw", "fast"]):
        with pytest.raises(UserError):
            bs.parse_args(bad)


def test_expected_roots_requests_and_wan_bound():
    a = bs.parse_args(["--sizes", "100"])
    e = bs.expected(bs.sites([100])[0], a)
    # 4 subnets x 2 models, 6 files per SCCP41 load set (the .loads and 5 components)
    assert e["roots"] == 4 * 2 * 6
    assert e["hq_requests"] == 100 + e["roots"]
    assert e["wan_bytes_bound"] == e["estimate"]["wan_bytes"] > 0


def phone(ip, subnet, model, role, pfs=True):
    src = "10.1.1.10" if role == "child" else "tftp"
    return {"ip": ip, "subnet": subnet, "model": model, "pfs_enabled": pfs, "completed": True,
            "files": {f: {"role": role, "source": src} for f in ("a.loads", "a.sbn")}}


def results():
    """A 1 x 3 PFS run: p1 the root, p2 its child, p3 fell back to TFTP."""
    return {"mode": "pfs", "completed": 3, "total": 3, "makespan_s": 30.0, "wan_bytes": 905_000,
            "wan_tftp_bytes": 105_000, "run_id": "x", "out_dir": "/o",
            "phones": [phone("10.1.1.10", 1, "M", "root"), phone("10.1.1.11", 1, "M", "child"),
                       phone("10.1.1.12", 1, "M", "tftp"),
                       phone("10.1.1.13", 1, "N", "tftp", pfs=False)],
            "hierarchies": [{"root": "10.1.1.10", "edges": [["10.1.1.10", "10.1.1.11"]]},
                            {"root": "10.1.1.10", "edges": []}],
            "tftp_requests": [{}] * 7,
            "wire_check": {"tftp_vs_log": {"wire_requests": 7}},
            "fidelity": {"lag": {"p50_ms": 0.4, "p99_ms": 3.0, "max_ms": 40.0},
                         "udp_drops": {"rcvbuf_errors": 0}, "capture_drops": 0,
                         "verdict": {"overloaded": False}},
            "timings": {"bringup_s": 5.0, "teardown_s": 3.0, "results_s": 1.0},
            "footprint": {"per_phone_pss_mb": 1.5, "per_phone_rss_mb": 2.5}}


def test_build_row_counts_roots_fallbacks_and_ratios():
    site = {"label": "1 x 3", "subnets": 1, "per_subnet": 3, "phones": 3}
    exp = {"roots": 2, "hq_requests": 5, "wan_bytes_bound": 100_000}
    w = bs.build_row(site, results(), exp, {"makespan_s": 20.0}, run_s=61.23,
                     mem={"peak_kb": 3 * 1024 * 2, "peak_rss_kb": 3 * 1024 * 5})
    assert (w["roots_wire"], w["roots_expected"]) == (2, 2)
    assert w["fallbacks"] == 2                 # p3's two files from HQ (the no-PFS phone's
                                               # are not fallbacks)
    assert (w["hq_requests_log"], w["hq_requests_wire"], w["hq_requests_expected"]) == (7, 7, 5)
    assert w["wan_ratio"] == 1.05             # TFTP bytes only: syslog is not firmware
    assert w["wan_bytes_all"] == 905_000
    assert w["makespan_ratio"] == 1.5
    assert (w["rss_per_phone_mb"], w["pss_per_phone_mb"]) == (5.0, 2.0)
    with_est = {**results(), "estimate": {"wan_bytes": 105_000}}      # the run's own bound
    assert bs.build_row(site, with_est, exp, None, run_s=1.0)["wan_ratio"] == 1.0
    assert (w["lag_p99_ms"], w["rcvbuf_drops"], w["capture_drops"]) == (3.0, 0, 0)
    assert w["dilation"] == 1.0 and w["overloaded"] is False
    assert w["run_s"] == 61.2 and w["teardown_s"] == 4.0
    w2 = bs.build_row(site, results(), exp, None, run_s=1.0)
    assert (w2["rss_per_phone_mb"], w2["pss_per_phone_mb"]) == (2.5, 1.5)
    json.dumps(w)


def test_a_row_without_fidelity_figures_still_renders(tmp_path):
    site = {"label": "4 x 25", "subnets": 4, "per_subnet": 25, "phones": 100}
    r = {"mode": "pfs", "phones": [], "hierarchies": []}
    w = bs.build_row(site, r, {"roots": 48, "hq_requests": 148, "wan_bytes_bound": 1},
                     None, run_s=None)
    assert w["lag_p99_ms"] is None and w["makespan_ratio"] is None
    big = bs.build_row({"label": "1 x 3", "subnets": 1, "per_subnet": 3, "phones": 3},
                       results(), {"roots": 2, "hq_requests": 5, "wan_bytes_bound": 100_000},
                       {"makespan_s": 20.0}, run_s=1.0)
    err = {"site": "1 x 1000", "subnets": 1, "phones": 1000, "error": "boom"}
    from rich.console import Console
    con = Console(width=250, record=True)
    con.print(bs.table([w, big, err]))
    text = con.export_text()
    assert "4 x 25" in text and "2/2" in text and "error: boom" in text
    bs.plot([w, big, err], str(tmp_path / "scale.png"))
    bs.plot([w], str(tmp_path / "scale.png"))            # one site, nothing measured
    assert (tmp_path / "scale.png").read_bytes()[:4] == b"\x89PNG"


def test_tree_memory_samples_this_process_tree():
    m = bs.TreeMemory(every=0.05)
    with m:
        pass
    assert m.peak_kb > 1000 and m.peak_procs >= 1
