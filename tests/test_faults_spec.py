"""Fault specs (pfslab.lab.faults), the key file and the trust key: typed, round-tripped, and
bad input is one line and exit 2 before anything is built. The matrix rows count outcomes."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pfslab.lab.faults import EXAMPLES, KINDS, Fault, FaultSpecError, parse_fault
from pfslab.lab.matrix import row
from pfslab.settings import Settings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("text", [e for e in EXAMPLES if "replay" not in e] + [
    "parent@12", "root-serving@3:silent", "power-cycle@10:5", "rogue@2:flood:2",
    "rogue:claim-trickle", "rogue:zero-root:1", "rogue:tamper:2", "rogue:stall"])
def test_specs_round_trip_through_text_and_table(text):
    f = parse_fault(text, subnets=2)
    assert f.kind in KINDS
    assert parse_fault(f.spec(), subnets=2) == f
    assert Fault.from_dict(f.to_dict()) == f


def test_a_spec_says_what_it_does():
    assert parse_fault("tftp-restart@10:5") == Fault("tftp-restart", 10.0, duration=5.0)
    assert parse_fault("link-flap@15:5:2", 2) == Fault("link-flap", 15.0, 5.0, subnet=2)
    assert parse_fault("power-cycle@10").duration == 3.0
    assert parse_fault("parent@12").how == "crash"
    assert parse_fault("rogue:replay=" + __file__).pcap == __file__


def test_the_agent_gets_a_phones_own_faults_only_and_the_wan_its_loss():
    s = Settings(fault=["root-fetching@1:silent", "tftp-restart@5:5", "power-cycle@9:2",
                        "wan-loss:5%"], fail_parent="12")
    spec = s.agent_spec("10.0.0.10", [], "/tmp", "pfs")
    assert spec["faults"] == [
        {"after_s": 1.0, "phone": "root-fetching", "how": "silent"},
        {"after_s": 9.0, "phone": "mid-upgrade", "how": "power-cycle", "off_s": 2.0},
        {"after_s": 12.0, "phone": "auto", "how": "crash"}]
    assert s.wan()[2] == 0.05
    trad = s.agent_spec("10.0.0.10", [], "/tmp", "traditional")["faults"]
    assert [f["how"] for f in trad] == ["power-cycle"]


@pytest.mark.parametrize("text, words", [
    ("nope", "unknown kind"), ("tftp-restart@x:5", "not a number"),
    ("tftp-restart@10", "tftp-restart@T:S"), ("wan-outage@10:0", "how long"),
    ("link-flap@1:5:3", "no subnet 3"), ("rogue:zz", "unknown attack"),
    ("rogue:replay=/no/such.pcap", "no capture file"), ("rogue:replay", "name the capture"),
    ("wan-loss:200%", "loss"), ("parent@5:loud", "crash or silent"),
    ("wan-outage@-1:3", "0..86400"), ("tftp-restart@nan:3", "0..86400"), ("parent@", "time"),
    ("rogue:flood:x", "not a number"),
])
def test_bad_specs_are_one_line(text, words):
    with pytest.raises(FaultSpecError, match=words) as e:
        parse_fault(text, subnets=2)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("d, words", [
    ({"at": 1}, "kind"), ({"kind": "tftp-restart", "at": 1, "duration": 2, "colour": 1},
                           "unknown field"),
    ({"kind": "wan-outage", "at": "soon", "duration": 1}, "could not convert"),
])
def test_bad_scenario_tables_are_one_line(d, words):
    with pytest.raises(FaultSpecError, match=words):
        Fault.from_dict(d)


def _lab(*argv, tmp_path):
    return subprocess.run([sys.executable, "-m", "pfslab.cli", "lab", *argv, "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=60,
                          cwd=REPO)


@pytest.mark.parametrize("argv, words", [
    (["--fault", "tftp-restart@x:5"], "not a number"),
    (["--fault", "rogue:max-root:3"], "no subnet 3"),
    (["--fault", "rogue:replay=nothing.pcap"], "no capture file"),
    (["--signing-key", "/no/such/key.pem"], "cannot read signing key file"),
    (["--signing-key", __file__], "not a PEM private key"),
    (["--tftp-refuse", "bogus"], "one of blksize"),
    (["--prefix", "Bad-Prefix"], "lower-case letter"),
    (["--prefix", "p123456789"], "lower-case letter"),
])
def test_bad_lab_input_exits_2_with_one_line_before_building(tmp_path, argv, words):
    r = _lab(*argv, tmp_path=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], lines
    assert not (tmp_path / "out").exists()          # nothing was built


def test_a_bad_trust_key_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pfslab.agent", "one", "--name", "p", "--ip",
                        "10.1.1.10", "--mac", "02:50:46:01:00:00", "--model", "CP-7961G",
                        "--broadcast", "10.1.1.255", "--server", "10.0.0.10", "--trust", "zz"],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--trust" in lines[0] and "64 hex" in lines[0], lines


def _phone(name, completed, at, fault=None, ok=True):
    return {"name": name, "completed": completed, "completed_at_s": at, "fault": fault,
            "components": {"a.sbn": {"source": "tftp", "sha256_ok": ok, "at_s": 1.0}}}


def test_a_matrix_row_tells_verified_failed_hung_killed_and_tampered():
    base = {"phones": [], "wan_bytes": 1000, "tftp_requests": [{}] * 10}
    r = {"phones": [_phone("a", True, 40.0), _phone("b", False, 30.0), _phone("c", False, None),
                    _phone("d", False, None, fault="crash"), _phone("e", True, 50.0, ok=False)],
         "makespan_s": 50.0, "wan_bytes": 1500, "tftp_requests": [{}] * 13,
         "faults": [{"kind": "tftp-restart", "at": 10.0, "duration": 5.0}],
         "fault_events": []}
    x = row(r, row(base, None, "none"), "tftp-restart@10:5")
    assert (x["verified"], x["explicit_failures"], x["hung"], x["killed"], x["tampered"]) == \
        (1, 2, 1, 1, 1)       # e finished, but not verified: a failure, and tampered
    assert (x["recover_s"], x["extra_wan_bytes"], x["extra_hq_requests"]) == (35.0, 500, 3)
