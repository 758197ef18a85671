"""pfslab.site (one PhoneSpec, Site.files) and pfslab.settings (one table of defaults, the same
flags and units for the lab and the simulator, validated up front)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from pfslab import firmware, phoneconfig
from pfslab.errors import UserError
from pfslab.settings import BLKSIZE, OPTIONS, Settings, default
from pfslab.site import Site, SiteError


def test_branch_site_names_addresses_and_models():
    s = Site.branch(2, 3, "CP-7961G,CP-7960G")
    assert [p.name for p in s.phones] == ["p1-1", "p1-2", "p1-3", "p2-1", "p2-2", "p2-3"]
    p = s.phones[3]
    assert (p.ip, p.mac, p.subnet, p.broadcast, p.model) == (
        "10.1.2.10", "02:50:46:02:00:00", 2, "10.1.2.255", "CP-7961G")
    assert s.networks == ["10.1.1.0/24", "10.1.2.0/24"]
    assert [p.model for p in s.phones[:3]] == ["CP-7961G", "CP-7960G", "CP-7961G"]
    big = Site.branch(1, 300, "CP-7961G")
    assert big.networks == ["10.101.0.0/16"] and big.phones[-1].ip == "10.101.1.53"


def test_files_serve_every_phone_and_load():
    s = Site.branch(1, 3, "CP-7961G,CP-7941G,CP-7960G", firmware_scale=0.002)
    files = s.files("pfs")
    for p in s.phones:
        cfg = phoneconfig.parse_sep(files[phoneconfig.sep_filename(p.mac)])
        assert cfg.pfs == (p.model in firmware.PFS_CAPABLE)
        assert firmware.model_load(p.model) + ".loads" in files
    assert phoneconfig.XMLDEFAULT in files


def test_traditional_and_the_three_levels():
    s = Site.branch(1, 4, "CP-7961G", device_pfs_off={2})
    assert s.pfs_of("pfs") == {"p1-1": True, "p1-2": False, "p1-3": True, "p1-4": True}
    assert set(s.pfs_of("traditional").values()) == {False}
    s.profile = None
    assert set(s.pfs_of("pfs").values()) == {False}        # unset everywhere: off
    s.enterprise = True
    assert s.pfs_of("pfs")["p1-1"] and not s.pfs_of("pfs")["p1-2"]


@pytest.mark.parametrize("kw, words", [
    (dict(subnets=0), "subnets"), (dict(phones_per_subnet=0), "phones"),
    (dict(models="CP-1"), "unknown phone model"), (dict(device_pfs_off="99"), "no phone number"),
    (dict(device_pfs_off="x"), "phone numbers"), (dict(blksize=7), "blksize"),
    (dict(blksize=65465), "blksize"), (dict(timeout=0), "timeout"),
    (dict(wan_bw="fast"), "bandwidth"), (dict(wan_delay="1 parsec"), "delay"),
    (dict(firmware_scale=0), "firmware-scale"), (dict(fail_parent="soon"), "fail-parent"),
    (dict(mode="all"), "mode"),
])
def test_bad_settings_are_one_user_error(kw, words):
    with pytest.raises((UserError, SiteError), match=words):
        Settings(**kw).check()


@pytest.mark.parametrize("argv", [["sim", "--blksize", "4"], ["sim", "--models", "CP-1"],
                                  ["sim", "--device-pfs-off", "999"],
                                  ["lab", "--wan-bw", "fast"], ["lab", "--timeout", "-1"]])
def test_bad_flags_exit_2_with_one_line(argv):
    r = subprocess.run([sys.executable, "-m", "pfslab.cli", *argv], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("pfslab: ") and "Traceback" not in r.stderr


def test_one_table_of_defaults():
    s = Settings()
    assert (s.wan_bw, s.wan_delay, s.blksize) == ("384kbit", "75ms", BLKSIZE) == (
        default("wan_bw"), default("wan_delay"), 1428)
    assert default("phones_per_subnet", "sim") == OPTIONS["phones_per_subnet"].sim_default
    assert s.wan() == (384000, 0.075, 0.0)


def test_agent_spec_is_the_settings():
    s = Settings(seed=7, reset="staggered", stagger=0.25, blksize=512, fail_parent="3:silent")
    spec = s.agent_spec("10.0.0.10", [{"name": "p1-1"}], "/x/logs", "pfs")
    assert spec == {"server": "10.0.0.10", "seed": 7, "log_dir": "/x/logs", "timeout_s": 600.0,
                    "blksize": 512, "stagger": 0.25, "phones": [{"name": "p1-1"}],
                    "faults": [{"after_s": 3.0, "phone": "auto", "how": "silent"}]}
    assert "faults" not in s.agent_spec("10.0.0.10", [], "/x", "traditional")


def test_sim_takes_the_labs_units_and_old_flags_with_a_warning(tmp_path):
    def sim(*extra):
        r = subprocess.run([sys.executable, "-m", "pfslab.cli", "sim", "--subnets", "1",
                            "--phones-per-subnet", "2", "--mode", "pfs", "--json",
                            str(tmp_path / "r.json"), *extra], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        import json
        return json.loads((tmp_path / "r.json").read_text())["wan"], r.stderr
    wan, err = sim("--wan-bw", "512kbit", "--wan-delay", "100ms")
    assert (wan["bw_bps"], wan["delay_s"]) == (512000, 0.1) and err == ""
    wan, err = sim("--wan-bw", "512e3", "--wan-rtt", "0.2")
    assert (wan["bw_bps"], wan["delay_s"]) == (512000, 0.1)
    assert err.count("deprecated") == 2 and len(err.strip().splitlines()) == 2


def test_the_agent_reads_what_the_lab_writes():
    """LabPhone (lab) -> SPEC.json phones[] -> AgentPhone (agent): the site's PhoneSpec plus
    its namespace, nothing renamed on the way."""
    import dataclasses

    from pfslab.agent.cli import _spec_phones
    from pfslab.lab.net import LabPhone
    site = Site.branch(1, 2, "CP-7961G", device_pfs_off={2})
    lab = [LabPhone(**vars(p), host=f"pxP{i}", netns=f"/proc/{i}/ns/net")
           for i, p in enumerate(site.phones, 1)]
    agent = _spec_phones({"phones": [p.agent_entry() for p in lab]})
    for a, spec, lp in zip(agent, site.phones, lab):
        assert {k: v for k, v in dataclasses.asdict(a).items() if k != "netns"} == vars(spec)
        assert a.netns == lp.netns
