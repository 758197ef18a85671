"""The in-memory network: honest ends, payload-free transfers, broadcast groups, LAN sharing."""
from collections import Counter

import pytest

from pfslab.protocol import codec, payload
from pfslab.protocol.phone import Phone
from pfslab.protocol.states import State
from pfslab.sim import scenario

MODEL = "CP-7961G"


def site(n, models=(MODEL,), subnets=1, **kw):
    specs = scenario.phone_specs(subnets, n, list(models))
    net, phones = scenario.build(specs, **kw)
    for p in phones:
        net.reset(p)
    return net, phones


def outcome(net, phones):
    """What a run decided: who fetched what, each phone's sources and completion time."""
    return ([(round(t, 6), ip, f) for t, ip, f in net.tftp_requests],
            {p.id.ip: ({f: (i.source, round(i.t, 6)) for f, i in p.installed.items()},
                       round(p.completed.t, 6)) for p in phones})


def roots_and_trees(phones):
    return {(p.id.ip, f): i.source for p in phones for f, i in p.installed.items()}


def test_a_run_cut_short_says_so_and_counts_only_bytes_delivered():
    net, phones = site(6, wan_bps=64e3, wan_rtt=0.1)
    net.run(until=30.0)
    s = net.summary()
    assert s["truncated"] and s["makespan_s"] is None and s["t_s"] == 30.0
    assert s["completed"] + len(s["not_completed"]) == 6 and s["not_completed"]
    requested = sum(len(net.files[f]) for _, _, f in net.tftp_requests)
    assert 0 < s["wan_payload_bytes"] < requested
    assert s["wan_payload_bytes"] <= s["wan_wire_bytes"] <= 30.0 * 64e3 / 8
    net.run()                                   # no horizon: on to the end
    s = net.summary()
    assert not s["truncated"] and s["completed"] == 6 and s["not_completed"] == []
    assert s["makespan_s"] == pytest.approx(max(p.completed.t for p in phones), abs=1e-3)
    assert s["wan_payload_bytes"] == sum(len(net.files[f]) for _, _, f in net.tftp_requests)


def test_payload_free_transfers_decide_exactly_what_byte_transfers_do():
    kw = dict(wan_bps=512e3, wan_rtt=0.15)
    with_bytes, pb = site(20, models=("CP-7961G", "CP-7941G"), payloads=True, **kw)
    without, pc = site(20, models=("CP-7961G", "CP-7941G"), payloads=False, **kw)
    with_bytes.run()
    without.run()
    assert outcome(with_bytes, pb) == outcome(without, pc)
    for p in pc:                                # every phone holds the server's file, by digest
        for f, s in p.sessions.items():
            assert isinstance(s.data, payload.Content) or f.endswith(".loads")
            assert s.data == without.files[f]


def test_framed_content_has_the_wire_length_of_the_real_frames():
    for n in (0, 1, 65536, 65537, 3 * 65536 + 5):
        data = bytes(range(256)) * (n // 256) + b"x" * (n % 256)
        framed = payload.framed(data)
        assert len(payload.framed(payload.Content.of(data))) == len(framed)
        frames = payload.feed(codec.FrameReader(), payload.framed(payload.Content.of(data)))
        assert [f.type for f in frames] == [codec.FrameType.HEADER, codec.FrameType.DATA,
                                            codec.FrameType.END]
        assert frames[1].data == data and frames[0].sha256 == payload.sha256(data)


def test_the_fluid_and_packet_wans_build_the_same_trees():
    """Without a bandwidth limit the two WAN models differ only in how they round a fetch's
    time (a block per round trip, or the bytes at a block per round trip): same roots and
    trees, completion within 5 %."""
    nets = {}
    for model in ("packet", "fluid"):
        net, phones = site(30, wan_model=model, wan_rtt=0.15)
        net.run()
        nets[model] = (net, phones)
    (pn, pp), (fn, fp) = nets["packet"], nets["fluid"]
    assert roots_and_trees(pp) == roots_and_trees(fp)
    assert fn.summary()["makespan_s"] == pytest.approx(pn.summary()["makespan_s"], rel=0.05)


class ListeningPhone(Phone):
    heard: Counter

    def on_datagram(self, now, data, src):
        self.heard[codec.decode(data).model] += 1
        super().on_datagram(now, data, src)


def test_broadcasts_reach_only_phones_of_their_model_and_load():
    specs = scenario.phone_specs(1, 9, ["CP-7961G", "CP-7941G", "CP-7960G"])
    net, phones = scenario.build(specs, phone_cls=ListeningPhone)
    for p in phones:
        p.heard = Counter()
        net.reset(p)
    net.run()
    assert all(p.completed.ok for p in phones)
    for p in phones:
        if p.id.model == "CP-7960G":             # not PFS-capable: hears nothing
            assert not p.heard
        else:
            assert set(p.heard) == {p.id.model}


def test_a_parent_shares_its_uplink_between_its_two_children():
    lan_bps = 1e6
    net, phones = site(3, lan_bps=lan_bps)
    net.run()
    comps = phones[0].load.components
    for c in comps:
        src = {p.id.ip: p.installed[c.name] for p in phones}
        root = next(ip for ip, i in src.items() if i.source == "tftp")
        kids = [i for ip, i in src.items() if i.source == root]
        assert len(kids) == 2                   # both wait for the root, then get it at once
        wire = len(payload.framed(net.files[c.name])) * 8
        for i in kids:                          # two equal streams at half the rate each
            assert i.t == pytest.approx(src[root].t + 2 * wire / lan_bps + net.lan_latency)


def _holding_site():
    """Three phones, a root whose fetch takes minutes: its two children wait on HOLDs."""
    net, phones = site(3, wan_bps=8e3, wan_rtt=0.1, scale=0.05)
    t = 0.0
    while True:
        t += 0.5
        net.run(until=t)
        for p in phones:
            for s in p.sessions.values():
                if s.state == State.ROOT_FETCHING and len(s.children) == 2:
                    return net, phones, p, s.file
        assert t < 120, "no root with two waiting children"


def test_a_beating_keepalive_keeps_its_children_without_an_event_per_hold():
    net, phones, root, file = _holding_site()
    frames = Counter()                       # frame type -> deliveries
    deliver = net._stream_data

    def counted(link, data, close=None):
        if isinstance(data, bytes) and data[:4] == b"CPDP":
            frames[data[5]] += 1
        deliver(link, data, close)
    net._stream_data = counted
    net.run(until=net.now + 400.0)           # 100 HOLD intervals for each waiting child
    assert any(s.state == State.ROOT_FETCHING for s in root.sessions.values())
    text = "\n".join(r.text for p in phones for r in net.nodes[p.id.ip].logs)
    assert "silent" not in text
    # the children hold on, and no HOLD was an event (2 x 100 went on the root's streams
    # alone), while the streams themselves carried their REQUESTs
    assert frames[codec.FrameType.HOLD] == 0 < frames[codec.FrameType.REQUEST]
    net.run()
    assert all(p.completed and p.completed.ok for p in phones)
    assert all(p.installed[file].source != "tftp" for p in phones if p is not root)


def test_a_silent_parent_is_found_silent_parent_silence_after_its_last_hold():
    net, phones, root, file = _holding_site()
    kill_at = net.now + 10.3                 # HOLDs went at t1, t1 + 4, t1 + 8 (t1 <= now)
    net.kill(root, at=kill_at, silent=True)
    net.run(until=kill_at + 30)
    child = next(p for p in phones if p is not root)
    lost = [r for r in net.nodes[child.id.ip].logs if f"parent {root.id.ip} silent" in r.text]
    assert lost, "the child never noticed its silent parent"
    # its last HOLD left less than a HOLD interval before the kill, one LAN hop before it
    # arrived; the child waited PARENT_SILENCE from that arrival, not from the kill
    heard = lost[0].t - child.t.parent_silence
    assert kill_at - child.t.hold_interval < heard <= kill_at + 2 * net.lan_latency
