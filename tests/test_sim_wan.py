"""The simulator's links, one behaviour each, against figures worked out by hand."""
import pytest

from pfslab.sim.events import EventHeap
from pfslab.sim.pslink import PSLink
from pfslab.sim.wan import (ACK_BYTES, OACK_BYTES, OVERHEAD, FluidWan, PacketWan, block_time,
                            request_bytes, tbf_params)


class Clock(EventHeap):
    """An event heap that records when each fetch ended."""

    def __init__(self):
        super().__init__()
        self.ended = {}

    def deliver(self, token, ok, error):
        self.ended[token] = (round(self.now, 9), ok, error)


def packet_wan(clock, **kw):
    """A plain serialising link (no token bucket) unless ``burst_bytes`` is given."""
    return PacketWan(clock, clock.deliver, **{"rtt": 0.1, "blksize": 454, "burst_bytes": 0,
                                              **kw})


# ------------------------------------------------------------------ processor sharing

def test_ps_link_shares_the_bandwidth_fairly_between_n_flows():
    link = PSLink(1000.0)                       # 1000 bit/s
    for tok in "abc":
        link.add(0.0, 1000.0, tok)              # three flows of 1000 bits: 333.3 bit/s each
    assert link.next_finish() == pytest.approx(3.0)
    assert sorted(link.pop_done(3.0)) == ["a", "b", "c"]


def test_ps_link_a_flow_speeds_up_when_another_ends():
    link = PSLink(1000.0)
    link.add(0.0, 1000.0, "short")
    link.add(0.0, 2000.0, "long")
    # both at 500 bit/s: "short" ends at 2 s; "long" has 1000 bits left, alone at 1000 bit/s
    assert link.next_finish() == pytest.approx(2.0)
    assert link.pop_done(2.0) == ["short"]
    assert link.next_finish() == pytest.approx(3.0)
    assert link.in_progress_bits("long") == pytest.approx(1000.0)


def test_ps_link_a_late_flow_gets_its_share_from_its_arrival():
    link = PSLink(1000.0)
    link.add(0.0, 1500.0, "a")                 # alone for 1 s: 1000 bits done
    link.add(1.0, 500.0, "b")                  # then 500 bit/s each: both end at 2 s
    assert link.next_finish() == pytest.approx(2.0)
    assert sorted(link.pop_done(2.0)) == ["a", "b"]
    assert link.served == pytest.approx(2000.0)


def test_ps_link_per_flow_cap():
    link = PSLink(1000.0, cap=100.0)           # 2 flows could get 500 each; the cap says 100
    link.add(0.0, 200.0, "a")
    link.add(0.0, 200.0, "b")
    assert link.next_finish() == pytest.approx(2.0)


# ------------------------------------------------------------------ the packet WAN

def test_lock_step_fetch_takes_a_round_trip_per_block_plus_the_request():
    c = Clock()
    wan = packet_wan(c, bps=None, blksize=512)
    wan.fetch(0.0, "f", 1000)                  # blocks of 512 and 488: OACK + 2 blocks
    c.run()
    assert c.ended["f"] == (pytest.approx(0.3), True, "")
    assert wan.payload_bytes == 1000


def test_serialisation_at_the_bottleneck():
    c = Clock()
    wan = packet_wan(c, bps=8000)              # 1000 bytes/s; one-way delay 0.05 s
    wan.fetch(0.0, "f", 500)                   # blocks of 454 (500 on the wire) and 46 (92)
    c.run()
    assert (OACK_BYTES, ACK_BYTES, OVERHEAD) == (84, 46, 46)
    # RRQ up 0.05 + 0.046 = 0.096; OACK leaves 0.180, lands 0.230; its ACK at HQ 0.326;
    # block 1 leaves 0.826, lands 0.876; ACK at 0.972; block 2 leaves 1.064, lands 1.114
    assert c.ended["f"][0] == pytest.approx(1.114)
    assert wan.wire_bytes == 84 + 500 + 92
    assert wan.payload_bytes == 500


def test_a_full_queue_drops_and_the_block_is_retransmitted_after_the_timeout():
    c = Clock()
    wan = packet_wan(c, bps=8000, queue_bytes=500)     # room for one 500-byte packet
    wan.fetch(0.0, "a", 500)
    wan.fetch(0.0, "b", 500)
    c.run()
    # OACKs leave 0.180 and 0.264; their ACKs reach HQ at 0.326 (a) and 0.410 (b).
    # a's block 1 waits in the queue until 0.826; b's block 1 at 0.410 finds it full: dropped.
    # a: block 1 lands 0.876, ACK at HQ 0.972; block 2 leaves 1.064, lands 1.114.
    # b: HQ's timer (1 s) resends block 1 at 1.410: leaves 1.910, lands 1.960; ACK 2.056;
    #    block 2 leaves 2.148, lands 2.198.
    assert wan.tail_drops == 1 and wan.retransmits == 1
    assert c.ended["a"][0] == pytest.approx(1.114)
    assert c.ended["b"][0] == pytest.approx(2.198)
    assert wan.payload_bytes == 1000
    assert wan.wire_bytes == 2 * (84 + 500 + 92)          # the dropped copy never crossed


def test_timeouts_back_off_and_the_fetch_fails_after_its_retries():
    c = Clock()
    wan = packet_wan(c, bps=None, loss=1.0, retries=2)  # every packet is lost
    wan.fetch(0.0, "f", 100)
    c.run()
    # the OACK leaves at 0.05 and again after 1 s and 2 s (backing off): 1.05, 3.05; the
    # third timer (4 s) ends the fetch at 7.05
    assert wan.retransmits == 2
    assert c.ended["f"] == (pytest.approx(7.05), False, "timeout: no ACK of block 0 after 3 tries")
    assert wan.payload_bytes == 0


def test_n_lock_step_flows_share_the_bottleneck_fairly():
    c = Clock()
    wan = packet_wan(c, bps=80_000)            # 10 kB/s: a 500-byte packet takes 0.05 s
    for k in range(4):
        wan.fetch(0.0, k, 454 * 20)            # 20 full blocks and an empty one
    c.run()
    ends = sorted(t for t, ok, _ in c.ended.values())
    assert wan.tail_drops == 0 and wan.retransmits == 0
    # Alone, a flow would send a block per 0.155 s (0.05 serialisation, 0.1 RTT, 0.0046 for
    # the ACK); four need 0.2 s of link per round: the link is the bottleneck and serves them
    # in turn (round robin): they end in the order they started, within a packet time of
    # each other, once all 4 x 10130 bytes have crossed (4.052 s), plus the first round's
    # set-up and the last block's flight.
    assert wan.wire_bytes == 4 * (84 + 20 * 500 + 46)
    assert sorted(c.ended, key=lambda k: c.ended[k][0]) == [0, 1, 2, 3]
    assert all(b - a <= 0.05 + 1e-9 for a, b in zip(ends, ends[1:]))
    assert 4.052 < ends[-1] < 4.052 + 0.3


def test_the_fluid_wan_counts_bytes_delivered_not_requested():
    c = Clock()
    wan = FluidWan(c, c.deliver, bps=8000, rtt=0.1, blksize=454, burst_bytes=0)
    # alone, a flow is lock-step: 500 bytes per 0.1 s + (500 + 46) bytes at 1 kB/s = 0.646 s,
    # 6192 bit/s; two share 8000 bit/s: 4000 each, below that cap
    for tok in "ab":
        wan.fetch(0.0, tok, 454 * 9)          # 10 blocks: 4086 payload + 460 header bytes
    c.run(until=0.1 + 2.5)                     # after the request's round trip, 2.5 s
    assert not c.ended
    assert wan.delivered() == (pytest.approx(2 * 4086 * 1250 / 4546, abs=1), 2500)
    c.run()
    assert c.ended["a"][0] == c.ended["b"][0] == pytest.approx(0.1 + 4546 * 8 / 4000)
    assert wan.delivered() == (2 * 4086, 2 * 4546)


# ------------------------------------------------------------------ the lab's token bucket

def test_the_lab_tbf_parameters():
    # 384 kbit/s: 48,000 bytes/s; bucket max(3200, 4 ms = 192) = 3200; queue max(3200 + 64 x
    # 1514 = 100,096, 1 s = 48,000). 10 Mbit/s: 1,250,000 bytes/s; bucket 5000; queue 1 s.
    assert tbf_params(384_000) == {"rate": 48_000, "burst": 3200, "limit": 100_096}
    assert tbf_params(10_000_000) == {"rate": 1_250_000, "burst": 5000, "limit": 1_250_000}
    from pfslab.lab.wan import _tbf_params
    assert _tbf_params(384_000, 1.0) == tbf_params(384_000, 1.0)      # one formula
    c = Clock()
    wan = PacketWan(c, c.deliver, bps=384_000, rtt=0.15, queue_bytes=48_000)  # sim's 1 s
    assert (wan.burst, wan.limit) == (3200, 100_096)                  # the lab's, by default


def test_a_full_bucket_lets_a_block_leave_at_once():
    c = Clock()
    wan = packet_wan(c, bps=8000, burst_bytes=1000)    # 1000 bytes/s, a 1000-byte bucket
    wan.fetch(0.0, "f", 500)                   # blocks of 454 (500 on the wire) and 46 (92)
    c.run()
    # the bucket holds an ACK: the RRQ reaches HQ at 0.05. OACK (84) leaves at once, 916
    # tokens left, lands 0.10; ACK at HQ 0.15: 1000 tokens again (capped), block 1 leaves at
    # once, lands 0.20; ACK 0.25: 600 tokens, block 2 (92) leaves at once, lands 0.30. The
    # same as a link without a rate limit: the lock-step, not the rate, sets the pace.
    assert c.ended["f"][0] == pytest.approx(0.30)
    # a long fetch's step: the round trip, unless the rate is slower (500 bytes at 1000
    # bytes/s = 0.5 s); without a bucket, the round trip plus the block's and ACK's bytes
    assert block_time(0.1, 80_000, 454, burst=1000) == pytest.approx(0.1)
    assert block_time(0.1, 8000, 454, burst=1000) == pytest.approx(0.5)
    assert block_time(0.1, 8000, 454) == pytest.approx(0.1 + (500 + 46) * 8 / 8000)


def test_an_empty_bucket_paces_the_packets_in_fifo_order():
    c = Clock()
    wan = packet_wan(c, bps=8000, burst_bytes=600)     # 1000 bytes/s, a 600-byte bucket
    wan.fetch(0.0, "a", 500)
    wan.fetch(0.0, "b", 500)
    c.run()
    # 0.05: both OACKs (84 each) leave at once: 600 - 168 = 432 tokens; ACKs at HQ 0.15.
    # 0.15: 432 + 100 = 532 tokens: a's block 1 (500) leaves at once (32 left); b's block 1
    #       waits for 468 more bytes: leaves 0.618, bucket empty; lands 0.668, ACK 0.768.
    # 0.25: a's ACK; its block 2 (92) queues behind b's block 1 and waits for its 92 bytes of
    #       tokens: leaves 0.710, lands 0.760 (a ends).
    # 0.768: 58 tokens since 0.710; b's block 2 waits 34 more bytes: leaves 0.802, lands 0.852.
    assert c.ended["a"][0] == pytest.approx(0.760)
    assert c.ended["b"][0] == pytest.approx(0.852)
    assert wan.tail_drops == wan.retransmits == 0


def test_a_named_fetch_pays_its_real_request_and_oack():
    c = Clock()
    wan = packet_wan(c, bps=None)              # blksize 454, timeout 1 s
    wan.fetch(0.0, "f", 500, "a.bin")
    c.run()
    # RRQ: 42 bytes of headers + opcode 2 + "a.bin\0" 6 + "octet\0" 6 + "blksize\0454\0" 12
    # + "tsize\00\0" 8 + "timeout\01\0" 10 = 86; OACK: 44 + 12 + "tsize\0500\0" 10 + 10 = 76
    assert request_bytes("a.bin", 500, 454) == (86, 76)
    assert wan.wire_bytes == 76 + 500 + 92     # OACK, blocks of 454 (+46) and 46 (+46)
    assert wan.up_bytes == 86 + 3 * 46         # RRQ, and the ACKs of the OACK and 2 blocks
