"""HQ's signing key is the run's own: a phone given a lab run's public key rejects a load
signed by the public test fixture key (what any peer could forge), in a real phone namespace."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.lab


def test_a_run_key_phone_rejects_a_fixture_signed_load(tmp_path):
    from pfslab.firmware import FIXTURE_SIGNER, Signer
    from pfslab.lab.net import LabNet
    from pfslab.settings import Settings
    from pfslab.site import Site
    site = Site.branch(1, 1, "CP-7961G", firmware_scale=0.002)
    run_key = Signer.generate()
    with LabNet(site, Settings(wan_bw="4mbit", wan_delay="5ms"), out_dir=str(tmp_path),
                tftp_files=site.files("pfs", FIXTURE_SIGNER)) as net:
        ph = net.phones[0]
        r = subprocess.run(
            ["ip", "netns", "exec", ph.host, sys.executable, "-m", "pfslab.agent", "one",
             "--name", ph.name, "--ip", ph.ip, "--mac", ph.mac, "--model", ph.model,
             "--broadcast", ph.broadcast, "--server", net.hq_ip, "--log-dir", str(tmp_path),
             "--timeout", "90", "--trust", run_key.trust.hex(),
             "--results", f"{tmp_path}/one.json"], capture_output=True, text=True)
    assert r.returncode == 1, r.stdout + r.stderr
    result = json.loads((tmp_path / "one.json").read_text())[0]
    assert not result["completed"]
    assert not any(c.get("sha256_ok") for c in (result.get("components") or {}).values())
