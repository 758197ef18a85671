"""A new user's first commands (issue 13): `mn --custom topologies/pfs_branch.py ... --test
pingall` on a small topology reaches every host (0% dropped), and Mininet prints no
bridge-netfilter warning (the topology's bridges turn bridge netfilter off first)."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

pytestmark = pytest.mark.lab

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOPO_FILE = os.path.join(REPO, "topologies", "pfs_branch.py")


def check_mn_can_load(topo: str, **params) -> None:
    """Load the topology file as `mn --custom` does (exec() on /usr/bin/python3, no
    __file__) and build the Topo, touching nothing. Run before `mn` itself: `mn` answers any
    exception with Mininet's global clean-up (it kills every Mininet's processes on the
    machine, other labs' included)."""
    code = ("import sys; f = sys.argv[1]; d = {}\n"
            "exec(compile(open(f).read(), f, 'exec'), d, d)\n"
            "d['topos'][sys.argv[2]](**dict(a.split('=', 1) for a in sys.argv[3:]))\n")
    r = subprocess.run(["/usr/bin/python3", "-c", code, TOPO_FILE, topo,
                        *(f"{k}={v}" for k, v in params.items())],
                       capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 0, r.stderr[-2000:]


def test_pingall_through_mn_custom(tmp_path):
    from pfslab.lab.records import new_prefix
    prefix = new_prefix()
    check_mn_can_load("branch", subnets=1, phones_per_subnet=2, prefix=prefix)
    r = subprocess.run(["mn", "--custom", TOPO_FILE,
                        "--topo", f"branch,subnets=1,phones_per_subnet=2,prefix={prefix}",
                        "--switch", "lxbr", "--controller", "none", "--test", "pingall"],
                       capture_output=True, text=True, timeout=180, cwd=str(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-2000:]
    assert "command not found" not in out
    m = re.search(r"Results: (\d+)% dropped \((\d+)/(\d+) received\)", out)
    assert m, out[-2000:]
    assert m.group(1) == "0" and m.group(2) == m.group(3) and int(m.group(3)) > 0
    assert "bridge-nf-call" not in out
