"""Small sites give the results recorded before the simulator's speed work: the
same roots and trees (every phone's source for every file) and the same completion times,
within TOLERANCE_S (docs/sim.md, "How fast, how big"). Re-record (only for a deliberate
change of behaviour): python tests/test_sim_recorded.py tests/data/sim_small_before.json

Recorded on the calibrated WAN model (the lab's token bucket, requests of their real size)
without the speed work (branch wt-C at 31d0442); the merged code gives the same file, byte
for byte. The first recording (f451bd4, the old WAN model) matched the speed work alike."""
import json
import pathlib
import sys
from dataclasses import replace

import pytest

from pfslab.site import Site
from pfslab.sim.run import simulate

TOLERANCE_S = 0.001
RECORDED = pathlib.Path(__file__).parent / "data" / "sim_small_before.json"

CASES = {
    "pfs-3models": dict(site=(2, 24, ["CP-7961G", "CP-7941G", "CP-7960G"]), mode="pfs",
                        kw=dict(wan_delay_s=0.075, wan_bps=384e3)),
    "pfs-lossy": dict(site=(2, 16, ["CP-7961G"]), mode="pfs",
                      kw=dict(wan_delay_s=0.075, wan_bps=256e3, wan_loss=0.02)),
    "trad": dict(site=(1, 6, ["CP-7961G"]), mode="traditional",
                 kw=dict(wan_delay_s=0.075, wan_bps=512e3)),
}


def run_case(name: str) -> dict:
    c = CASES[name]
    site = replace(Site.branch(*c["site"]), firmware_scale=0.01)
    r = simulate(site, c["mode"], seed=1, **c["kw"])
    phones = {p["name"]: {"done": p["completed_at_s"], "ok": p["completed"],
                          "files": {f: [v["role"], v["source"]] for f, v in p["files"].items()}}
              for p in r["phones"]}
    return {"phones": phones, "wan_bytes": r["wan_bytes"], "events": r["sim"]["events"]}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_small_site_gives_the_recorded_roots_trees_and_times(name):
    want = json.loads(RECORDED.read_text())[name]
    got = run_case(name)
    assert got["wan_bytes"] == want["wan_bytes"]
    assert got["phones"].keys() == want["phones"].keys()
    for phone, w in want["phones"].items():
        g = got["phones"][phone]
        assert (g["ok"], g["files"]) == (w["ok"], w["files"]), phone    # roots and parents
        assert abs(g["done"] - w["done"]) <= TOLERANCE_S, phone


if __name__ == "__main__":
    pathlib.Path(sys.argv[1]).write_text(json.dumps({n: run_case(n) for n in CASES},
                                                    indent=0, sort_keys=True))
