"""`pfslab sim --jobs N`: the subnets over N worker processes, the WAN in the parent. The
same decisions as one process: roots, trees, completion times, TFTP requests, WAN bytes."""
import json
from dataclasses import replace

import pytest

from pfslab.errors import UserError
from pfslab.sim.parallel import split
from pfslab.sim.run import jobs_for, simulate
from pfslab.site import Site

KW = dict(seed=1, wan_delay_s=0.075, wan_bps=512e3)


def site(subnets, per, scale=0.01, models=("CP-7961G", "CP-7941G", "CP-7960G")):
    return replace(Site.branch(subnets, per, list(models)), firmware_scale=scale)


def decided(r):
    """What a run decided, phone by phone, and what crossed the WAN."""
    sim = r["sim"]
    return ([(p["name"], p["completed"], p["completed_at_s"], json.dumps(p["files"], sort_keys=True))
             for p in r["phones"]], r["tftp_requests"], r["hierarchies"], r["truncated"],
            {k: sim[k] for k in ("t_s", "wan_payload_bytes", "wan_down_bytes", "wan_up_bytes",
                                 "tftp_retransmits", "wan_drops", "datagrams", "not_completed")})


@pytest.mark.parametrize("mode", ["pfs", "traditional"])
def test_workers_decide_what_one_process_decides(mode):
    s = site(3, 24)
    one = simulate(s, mode, **KW)
    two = simulate(s, mode, jobs=2, **KW)
    assert two["sim"]["jobs"] == 2 and one["sim"]["jobs"] == 1
    assert decided(two) == decided(one)


def test_the_same_under_a_congested_lossy_wan():
    s = site(4, 12, scale=0.05)
    kw = {**KW, "wan_bps": 256e3, "wan_loss": 0.01}
    one, three = simulate(s, "pfs", **kw), simulate(s, "pfs", jobs=3, **kw)
    assert one["sim"]["tftp_retransmits"] > 0 and one["sim"]["wan_losses"] > 0
    assert decided(three) == decided(one)


def test_the_same_when_many_phones_of_a_subnet_fall_back_at_one_instant():
    """At full size on a slow WAN the children's budget runs out together: their fetches
    reach the WAN at the very same instant, in the order one process ran them."""
    s = site(5, 30, scale=0.2)
    one, two = simulate(s, "pfs", **KW), simulate(s, "pfs", jobs=2, **KW)
    times = [r["t"] for r in one["tftp_requests"]]
    assert len(times) - len(set(times)) > 50            # many share an instant
    assert decided(two) == decided(one)


def test_a_run_cut_short_by_until_is_cut_at_the_same_place():
    s = site(3, 24)
    one = simulate(s, "pfs", until=20.0, **KW)
    two = simulate(s, "pfs", jobs=2, until=20.0, **KW)
    assert one["truncated"] and two["truncated"] and two["sim"]["t_s"] == 20.0
    assert decided(two) == decided(one)


def test_subnets_are_dealt_out_in_turn_to_the_least_loaded_worker():
    s = Site.branch(5, 10, ["CP-7961G"])
    assert split(s, 2) == [{1, 3, 5}, {2, 4}]
    assert split(s, 5) == [{1}, {2}, {3}, {4}, {5}]
    assert split(s, 8) == [{1}, {2}, {3}, {4}, {5}]       # no worker without a subnet
    uneven = Site.branch(3, 10, layout=[["CP-7961G"] * 30, ["CP-7961G"] * 10,
                                        ["CP-7961G"] * 10])
    assert split(uneven, 2) == [{1}, {2, 3}]


def test_jobs_auto_takes_one_process_for_small_sites_and_bad_values_say_what_is_wrong():
    assert jobs_for("auto", site(2, 8), live=False) == 1
    assert jobs_for("2", site(2, 8), live=False) == 2
    for bad in ("0", "x", "-3", "1.5"):
        with pytest.raises(UserError, match="--jobs takes a whole number"):
            jobs_for(bad, site(2, 8), live=False)
