"""`pfslab doctor`: one line per check; a tool hidden from PATH is reported missing with how
to fix it, and the exit code says something is missing."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

from pfslab import doctor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_doctor(path: str, *argv) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path}
    return subprocess.run([sys.executable, "-m", "pfslab.cli", "doctor", *argv], env=env,
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def test_a_tool_hidden_from_path_is_reported_missing(tmp_path):
    # a PATH holding every tool the doctor checks but tcpdump
    for tool in doctor.TOOLS:
        found = shutil.which(tool)
        if found and tool != "tcpdump":
            os.symlink(found, tmp_path / tool)
    r = run_doctor(str(tmp_path))
    lines = r.stdout.splitlines()
    miss = [line for line in lines[:-1] if "tool: tcpdump" in line]
    assert len(miss) == 1 and miss[0].startswith("MISSING"), r.stdout
    assert "missing" in miss[0] and ("apt-get install tcpdump" in miss[0]
                                     or "add /usr/bin to PATH" in miss[0])
    assert r.returncode == 1 and "tool: tcpdump" in lines[-1], lines[-1]
    assert r.stderr == ""


def test_every_check_is_one_line_with_a_status():
    results = doctor.checks(16)
    names = [name for name, _, _ in results]
    for want in ("root", "kernel: network namespaces", "kernel: veth", "kernel: ifb",
                 "kernel: tc htb", "kernel: NFQUEUE", "tool: tc", "cores", "memory"):
        assert want in names
    assert all("\n" not in detail and detail for _, _, detail in results)


def test_a_big_site_wants_more_cores_and_memory_than_a_small_one():
    small = {n: ok for n, ok, _ in doctor.check_size(16)}
    huge = {n: ok for n, ok, _ in doctor.check_size(10 ** 7)}
    assert huge == {"cores": False, "memory": False}
    assert small["memory"] is True


def test_bad_size_is_one_line_exit_2():
    r = run_doctor(os.environ.get("PATH", ""), "--phones", "0")
    assert r.returncode == 2 and r.stderr.strip() == "pfslab: --phones must be at least 1"
