"""`make bench-sim-speed`: each case is the whole `pfslab sim` command; a row per case."""
import subprocess
import sys

from pfslab.sim import speed


def test_a_case_runs_the_users_command_and_reads_its_own_figures(monkeypatch, tmp_path):
    monkeypatch.setitem(speed.SITES, 60, (3, 20))
    c = speed.run_case(60, 0.01, "2", timeout=300)
    assert c["jobs"] == 2 and c["upgraded"] == 60 and not c["truncated"]
    assert c["wall_s"] >= c["run_wall_s"] > 0 and c["events"] > 0 and c["peak_mb"] > 0
    assert speed.row(c).startswith("| 60 | 0.01 | 2 | ")
    assert speed.row(c).count("|") == speed.HEADER.splitlines()[0].count("|")


def test_bad_arguments_get_one_line_and_exit_2(tmp_path):
    for args in (["--phones", "12345"], ["--scales", "x"]):
        p = subprocess.run([sys.executable, "-m", "pfslab.sim.speed", "--out", str(tmp_path),
                            *args], capture_output=True, text=True)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert "Traceback" not in p.stderr
