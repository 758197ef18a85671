"""The live view, driven by a recorded event stream of a real lab run (tests/data/live/: the
agent's events of `pfslab lab --mode pfs --subnets 2 --phones-per-subnet 6 --models CP-7961G
--firmware-scale 0.005 --wan-bw 1mbit --wan-delay 20ms --fail-parent 12`), checked
as rendered text frames; its 1000-phone fold; its plain-line fallback without a terminal."""
import io
import json
import os
import pathlib
import re

import pytest
from hypothesis import given, settings, strategies as st

from pfslab.view.live import Board, LiveView, render_text

DATA = pathlib.Path(__file__).parent / "data" / "live"


def recorded():
    phones = json.loads((DATA / "phones.json").read_text())
    events = [json.loads(ln) for ln in (DATA / "pfs-events.jsonl").read_text().splitlines()]
    return phones, events


def cell_lines(frame: str, name: str) -> list[str]:
    """The three lines of one phone's cell in a grid frame."""
    lines = frame.splitlines()
    for i, ln in enumerate(lines):
        m = re.search(rf"(?<![\w-]){re.escape(name)} ", ln)
        if m:
            col = m.start()
            return [x[col:col + 21].rstrip() for x in lines[i:i + 3]]
    raise AssertionError(f"{name} not in frame:\n{frame}")


def test_every_phone_has_a_cell_and_the_end_shows_the_outcome():
    phones, events = recorded()
    b = Board(phones, "pfs", 1_000_000)
    for ev in events:
        b.event(ev)
    frame = render_text(b, 120, 60)
    outcome = {e["phone"]: e["ok"] for e in events if e["event"] == "completed"}
    dead = {e["phone"] for e in events if e["event"] == "fault"}
    assert dead, "the recording has a fault"
    for p in phones:
        cell = cell_lines(frame, p["name"])
        assert p["model"].replace("CP-", "") in cell[0]
        want = "failed ✗" if p["name"] in dead or not outcome.get(p["name"]) else "done ✓"
        assert cell[2] == want, (p["name"], cell)
    n_done = sum(1 for ok in outcome.values() if ok)
    assert f"done {n_done}  waiting 0  failed {len(phones) - n_done}" in frame
    for k in {p["subnet"] for p in phones}:
        assert f"subnet {k}: " in frame


def test_mid_run_frames_show_roles_progress_and_the_pfs_icon():
    phones, events = recorded()
    b = Board(phones, "pfs", 1_000_000)
    seen_roles, seen_share, seen_pct = set(), False, False
    for ev in events:
        b.event(ev)
        if ev["event"] != "status":
            continue
        frame = render_text(b, 120, 60)
        cell = cell_lines(frame, ev["phone"])
        if b.cells[ev["phone"]].state != "waiting":
            continue
        role = {"tftp": "TFTP"}.get(ev["role"], ev["role"])
        assert cell[2] == role
        seen_roles.add(ev["role"])
        if ev["pfs"]:
            assert "⇄" in cell[1]
            seen_share = True
        if ev["size"] and ev["file"]:
            pct = min(100, 100 * ev["got"] // ev["size"])
            assert f"{pct}%" in cell[1]
            seen_pct = True
    assert {"root", "child", "claim"} <= seen_roles
    assert seen_share and seen_pct


def test_wan_rate_comes_from_tftp_bytes_in_the_window():
    b = Board([{"name": "a", "model": "CP-7961G", "subnet": 1}], "pfs", 384_000, window=2.0)
    for i in range(5):                       # 10 kB per 0.5 s = 160 kbit/s
        b.event({"event": "status", "phone": "a", "t": 10 + i * 0.5, "file": "f.sbn",
                 "role": "root", "via": "tftp", "got": 10_000 * (i + 1), "size": 100_000,
                 "pfs": False, "files": 1, "of": 6})
    assert b.wan_rate() == pytest.approx(8 * 40_000 / 2.0)
    assert "160/384 kbit/s" in render_text(b, 120, 30)
    b.event({"event": "status", "phone": "a", "t": 13.0, "file": "f.sbn", "role": "child",
             "via": "peer", "got": 50_000, "size": 100_000, "pfs": False, "files": 1,
             "of": 6})
    assert b.wan_rate() == pytest.approx(8 * 20_000 / 2.0)   # peer bytes are not WAN bytes


def test_1000_phones_fold_to_one_line_per_subnet_with_the_busiest():
    phones = [{"name": f"p{s}-{i}", "model": "CP-7961G", "subnet": s}
              for s in range(1, 11) for i in range(1, 101)]
    b = Board(phones, "pfs", 384_000)
    for s in range(1, 11):
        b.event({"event": "status", "phone": f"p{s}-7", "t": 5.0, "file": "apps41.sbn",
                 "role": "root", "via": "tftp", "got": 500, "size": 1000, "pfs": True,
                 "files": 1, "of": 6})
        b.event({"event": "status", "phone": f"p{s}-9", "t": 5.0, "file": "apps41.sbn",
                 "role": "child", "via": "peer", "got": 100, "size": 1000, "pfs": False,
                 "files": 1, "of": 6})
        b.event({"event": "completed", "phone": f"p{s}-1", "ok": True, "t": 6.0})
    frame = render_text(b, 120, 40)
    lines = frame.rstrip("\n").splitlines()
    assert len(lines) <= 40
    rows = [ln for ln in lines if re.match(r"\s+\d+ │\s+100 │", ln)]
    assert len(rows) == 10
    for s, row in zip(range(1, 11), rows):
        assert re.match(rf"\s+{s} │\s+100 │\s+1 │\s+99 │\s+0 │\s+1 │ p{s}-7 root apps41 50% ⇄ "
                        rf" p{s}-9 child apps41 10%", row), row
    assert "done 10  waiting 990  failed 0" in frame
    # the same board unfolds when the terminal is big enough for every cell
    assert "p3-55" in render_text(b, 240, 2000)


def test_without_a_terminal_it_prints_plain_lines():
    phones, events = recorded()
    out = io.StringIO()
    view = LiveView(Board(phones, "pfs", 1_000_000), out=out, every=0.0)
    assert not view.live
    with view:
        for ev in events[:40]:
            view.event(ev)
    text = out.getvalue()
    assert "\x1b[" not in text
    lines = text.splitlines()
    assert len(lines) == 41
    assert all(re.match(r"  pfs: t=[\d.]+ s: \d+/12 done, \d+ failed, \d+ waiting, \d+ "
                        r"sharing; WAN TFTP \d+ of 1000 kbit/s$", ln) for ln in lines), lines[:3]


def test_on_a_terminal_it_draws_live_unless_told_not_to():
    phones, events = recorded()
    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as tty:
            live = LiveView(Board(phones, "pfs", 1_000_000), out=tty)
            plain = LiveView(Board(phones, "pfs", 1_000_000), out=tty, live=False)
            assert live.live and not plain.live
            with live:
                for ev in events:
                    live.event(ev)
            tty.flush()
        drawn = b""
        os.set_blocking(master, False)
        while True:
            try:
                chunk = os.read(master, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(master)
        os.close(slave)
    assert b"\x1b[" in drawn and "subnet 2".encode() in drawn


VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**12),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
                   st.lists(st.integers(), max_size=3), st.sampled_from(["p1-1", "p1-2"]))
EVENTS = st.one_of(st.dictionaries(st.sampled_from(["event", "phone", "t", "file", "role",
                                                    "got", "size", "via", "pfs", "files", "of",
                                                    "ok", "how", "bytes"]), VALUES),
                   st.fixed_dictionaries({"event": st.sampled_from(["status", "installed",
                                                                    "completed", "fault",
                                                                    "timeout"]),
                                          "phone": st.sampled_from(["p1-1", "p1-2", "x"]),
                                          "t": VALUES, "got": VALUES, "size": VALUES,
                                          "role": VALUES, "file": VALUES, "via": VALUES,
                                          "bytes": VALUES}),
                   VALUES)


@settings(max_examples=200, deadline=None)
@given(st.lists(EVENTS, max_size=30))
def test_hostile_events_never_break_the_view(events):
    b = Board([{"name": "p1-1", "model": "CP-7961G", "subnet": 1},
               {"name": "p1-2", "model": "CP-7941G", "subnet": 1}], "pfs", 384_000)
    for ev in events:
        b.event(ev)
    assert "p1-1" in render_text(b, 100, 30)
    assert "phones" in render_text(b, 60, 4)      # folded
    b.line()


def test_the_simulator_feeds_the_same_view_in_virtual_time():
    from pfslab.sim import scenario
    from pfslab.sim.memnet import SimNet
    from pfslab.view.sim_feed import SimFeed
    specs = scenario.phone_specs(2, 6, ["CP-7961G", "CP-7941G"])
    b = Board([{"name": s.name, "model": s.model, "subnet": s.subnet} for s in specs], "pfs",
              512_000)
    seen = {"roles": set(), "rates": []}

    def sink(ev):
        b.event(ev)
        if ev["event"] == "status":
            seen["roles"].add(ev["role"])
        seen["rates"].append(b.wan_rate())

    net, phones = scenario.build(specs, wan_bps=512_000, wan_rtt=0.15)
    assert isinstance(net, SimNet)
    net.on_drain = SimFeed(sink)
    for p in phones:
        net.reset(p)
    end = net.run(until=3600)
    assert {"root", "claim", "child"} <= seen["roles"]
    assert b.counts()["done"] == len(specs) and b.t == pytest.approx(end, abs=0.01)
    assert 0 < max(seen["rates"]) <= 512_000 * 1.05     # TFTP bytes spread over each fetch
    assert "done 12  waiting 0  failed 0" in render_text(b, 120, 60)
