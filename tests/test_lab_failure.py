"""A parent dies mid-transfer in a real lab run: its subtree still completes, by rejoining or
by TFTP fallback, and every surviving phone ends with verified components."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("how", ["crash", "silent"])
def test_parent_failure_mid_transfer(pfs_lab, how):
    run = pfs_lab({"subnets": 1, "phones_per_subnet": 7, "models": ["CP-7961G"],
                   "firmware": {"scale": 0.01}, "wan": {"bandwidth": "1mbit", "delay": "20ms"},
                   "run": {"mode": "pfs", "timeout": 180},
                   "faults": [{"kind": "fail_parent", "after": 12, "how": how}]})
    rc, r, tmp_path = run.exit_code, run.result, Path(run.folder)
    events = [json.loads(line) for line in (tmp_path / "agent-events.jsonl").open()]
    fault = next(e for e in events if e["event"] == "fault")
    assert fault["phone"], "no parent was serving a file mid-transfer at the fault time"
    victim = fault["ip"]
    assert rc == 0
    survivors = [ph for ph in r["phones"] if ph["ip"] != victim]
    assert len(survivors) == 6
    for ph in survivors:
        assert ph["completed"], ph["name"]
        assert all(c["sha256_ok"] for c in ph["components"].values())
        assert all(c["source"] != victim or c["at_s"] < fault["t"]
                   for c in ph["components"].values())
    # The victim's children noticed and recovered: their logs say so.
    logs = "".join((tmp_path / "logs" / f"{ph['name']}.log").read_text() for ph in survivors)
    assert f"lost parent {victim}" in logs or "fallback to TFTP" in logs
    if how == "silent":
        assert "silent for" in logs or "lost the root" in logs
