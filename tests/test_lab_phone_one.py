"""`pfslab phone one`, run by hand in a phone's namespace (``ip netns exec <host> ...``, as a
user would from a shell or the Mininet CLI's ``sh``): a lone phone elects itself root, fetches
everything from HQ and logs like the seed."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.lab


def test_one_phone_in_its_namespace(tmp_path):
    from pfslab.lab.net import LabNet
    from pfslab.settings import Settings
    from pfslab.site import Site
    site = Site.branch(1, 1, "CP-7961G", firmware_scale=0.002)
    with LabNet(site, Settings(wan_bw="4mbit", wan_delay="5ms"), out_dir=str(tmp_path),
                tftp_files=site.files("pfs")) as net:
        ph = net.phones[0]
        r = subprocess.run(
            ["ip", "netns", "exec", ph.host, sys.executable, "-m", "pfslab.agent", "one",
             "--name", ph.name, "--ip", ph.ip, "--mac", ph.mac, "--model", ph.model,
             "--broadcast", ph.broadcast, "--server", net.hq_ip, "--log-dir", str(tmp_path),
             "--timeout", "120", "--results", f"{tmp_path}/one.json"],
            capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        rrqs = {r["file"] for r in net.tftp_requests() if r.get("event") == "RRQ"}
    result = json.loads((tmp_path / "one.json").read_text())[0]
    assert result["completed"] and result["pfs_enabled"]
    assert all(c["source"] == "tftp" and c["sha256_ok"] for c in result["components"].values())
    assert rrqs >= {result["load"] + ".loads", *result["components"]}
    log = (tmp_path / f"{ph.name}.log").read_text()
    assert "+++ fd=7 Listening on peer TCP port 4051" in log
    assert "UT:Confirmed root bumping strength" in log and "@@@HROOT:XID" in log
