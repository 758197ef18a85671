"""`pfslab lab` killed with SIGKILL (no handler runs) at four points: while it builds the
net (Mininet's part is up, the phones' namespaces are being made), once the phones are up,
mid-upgrade, and while it tears down. Every process of the run dies with it
(PR_SET_PDEATHSIG); `pfslab clean` then leaves no link, bridge, network namespace, process,
mount or record."""
from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.lab

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--subnets", "1", "--phones-per-subnet", "3", "--models", "CP-7961G", "--mode", "pfs",
        "--firmware-scale", "0.01", "--wan-bw", "1mbit", "--wan-delay", "20ms",
        "--timeout", "120"]
PROGRESS = re.compile(r"t=([\d.]+) s: (\d+)/(\d+) done")      # the live view's plain lines


def _when(point: str, line: str) -> bool:
    """Is this stdout line the moment to kill at ``point``?"""
    if point == "build":
        return line.strip().startswith("pfs: build:")     # Mininet's part up, phones to come
    if point == "phones":
        return line.strip().startswith("pfs: phones:")    # the phones' namespaces are up
    m = PROGRESS.search(line)
    if not m:
        return False
    t, done, total = float(m.group(1)), int(m.group(2)), int(m.group(3))
    if point == "mid-upgrade":
        return t > 10 and done < total                 # past ROOT_WAIT: files in flight
    return done == total                                  # the agent is ending: teardown


def _record(prefix: str) -> dict | None:
    for path in glob.glob(f"/run/pfslab/*-{prefix}.json"):
        with open(path) as f:
            return json.load(f)
    return None


def _processes_of(prefix: str, out: str, pids: set[int]) -> list[str]:
    """Live processes that belong to the run: recorded, its Mininet shells, or naming its
    output folder."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{d}/stat") as f:
                zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if not zombie and (int(d) in pids or f"mininet:{prefix}" in cmd or out in cmd):
            found.append(f"{d}: {cmd[:120]}")
    return found


def _links(prefix: str) -> list[str]:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        names = [link.get_attr("IFLA_IFNAME") for link in ipr.link("dump")]
    return [n for n in names if n and n.startswith(prefix)]


@pytest.mark.parametrize("point", ["build", "phones", "mid-upgrade", "teardown"])
def test_sigkill_leaves_nothing_after_clean(tmp_path, point):
    from pfslab.lab.records import new_prefix
    prefix, out = new_prefix(), str(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-m", "pfslab.cli", "lab", *ARGS, "--prefix", prefix,
                             "--out", out], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen_pids: set[int] = set()
    said = []
    try:
        for line in proc.stdout:
            said.append(line)
            rec = _record(prefix)
            seen_pids |= {e["pid"] for e in (rec or {}).get("pids", [])}
            if _when(point, line):
                break
        else:
            pytest.fail(f"the run ended before the {point} point:\n" + "".join(said[-20:]))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rec = _record(prefix)
    assert rec is not None, "the killed run left no record for `pfslab clean`"
    seen_pids |= {e["pid"] for e in rec.get("pids", [])}
    # every process of the run dies with it (no clean-up has run yet)
    deadline = time.monotonic() + 5
    while _processes_of(prefix, out, seen_pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_of(prefix, out, seen_pids) == []
    r = subprocess.run([sys.executable, "-m", "pfslab.cli", "clean", rec["run_id"]], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _links(prefix) == []                          # veths, bridges, mirror dummies
    assert [n for n in os.listdir("/run/netns") if n.startswith(prefix)] == []
    assert _processes_of(prefix, out, seen_pids) == []
    assert _record(prefix) is None
    assert not os.path.exists(f"/run/pfslab/{rec['run_id']}.d")
    with open("/proc/self/mounts") as f:
        assert not [m for m in f if prefix in m or out in m]
