"""A real lab run carries its fidelity account, and a capped traditional baseline says so."""
import pytest

pytestmark = pytest.mark.lab


def test_capped_traditional_run_reports_its_cap_and_its_fidelity(tmp_path, capsys):
    from pfslab.lab.run import run_mode
    from pfslab.report import print_report
    from pfslab.settings import Settings
    st = Settings(subnets=1, phones_per_subnet=3, models="CP-7961G", mode="traditional",
                  traditional_sample=1, traditional_until=120.0, firmware_scale=0.005,
                  wan_bw="2mbit", wan_delay="10ms").check()
    r = run_mode(st, "traditional", str(tmp_path), prefix=None)
    assert r["capped"] == {"phones_in_lab": 3, "sample": 1, "until_s": 120.0}
    assert r["total"] == 1 and r["completed"] == 1          # only the sample was reset
    assert {t["client"] for t in r["tftp_requests"]} == {r["phones"][0]["ip"]}
    f = r["fidelity"]
    assert set(f["captures"]) == {"subnet-1", "wan"}
    assert f["captures_complete"] is True and f["capture_drops"] == 0
    for c in f["captures"].values():                       # every frame once, by counters
        assert c["captured"] == c["frames_on_interfaces"] > 0
    assert f["udp_drops"]["namespaces"] == 3 and f["udp_drops"]["unread"] == []
    assert r["estimate"]["mode"] == "traditional" and r["timings"]["agent_s"] > 0
    # no phone runs a PFS timer: the loop's lag comes from the agent's heartbeat
    assert f["lag_source"] == "heartbeat" and f["lag"]["n"] > 0
    assert "timer lag" not in f["verdict"]["unmeasured"]
    assert 0 < r["wan_tftp_bytes"] <= r["wan_bytes"]
    print_report([r])
    assert "CAPPED traditional baseline: a sample of 1 of 3 phones, stopped at 120 s" in \
        capsys.readouterr().out
