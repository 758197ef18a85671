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


def test_pingall_through_mn_custom(tmp_path):
    from pfslab.lab.records import new_prefix
    prefix = new_prefix()
    r = subprocess.run(["mn", "--custom", os.path.join(REPO, "topologies", "pfs_branch.py"),
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
