"""`pfslab sim`: honest ends in results.json, what the default site says, bad input."""
import json
import subprocess
import sys

from pfslab.settings import Settings
from pfslab.sim.run import sharing, simulate


def test_a_run_cut_short_by_until_reports_itself_truncated():
    s = Settings(subnets=1, phones_per_subnet=6, firmware_scale=0.01, wan_bw="64kbit")
    bps, delay, _ = s.wan()
    r = simulate(s.site(), "pfs", seed=1, wan_delay_s=delay, wan_bps=bps, until=15.0)
    assert r["truncated"] and r["makespan_s"] is None
    assert r["completed"] < r["total"] == 6
    assert len(r["sim"]["not_completed"]) == 6 - r["completed"]
    assert r["sim"]["t_s"] == 15.0
    full = simulate(s.site(), "pfs", seed=1, wan_delay_s=delay, wan_bps=bps)
    assert not full["truncated"] and full["completed"] == 6 and full["makespan_s"] > 15.0
    assert r["wan_bytes"] < full["wan_bytes"]


def test_the_default_site_says_which_models_share():
    lines = sharing(Settings().site())
    assert any("CP-7961G" in x and "CP-7941G" in x and "own model" in x for x in lines)
    assert any(x.startswith("CP-7960G") and "not PFS-capable" in x for x in lines)


def run_cli(*args):
    return subprocess.run([sys.executable, "-c", "import sys; from pfslab.cli import main; "
                           "sys.exit(main(sys.argv[1:]))", "sim", *args],
                          capture_output=True, text=True, timeout=120)


def test_bad_input_gets_one_line_and_exit_2():
    for args, want in ((["--subnets", "400"], "subnets"), (["--until", "-1"], "--until"),
                       (["--models", "CP-1234"], "CP-1234"),
                       (["--phones-per-subnet", "70000"], "phones per subnet")):
        p = run_cli(*args)
        assert p.returncode == 2, (args, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1 and want in p.stderr, p.stderr


def test_cli_prints_event_rate_and_peak_memory(tmp_path):
    out = tmp_path / "r.json"
    p = run_cli("--subnets", "1", "--phones-per-subnet", "3", "--mode", "pfs", "--json",
                str(out))
    assert p.returncode == 0, p.stderr
    assert "events/s" in p.stdout and "peak memory" in p.stdout
    r = json.loads(out.read_text())
    assert r["sim"]["events"] > 0 and r["wan"]["model"] == "packet"
