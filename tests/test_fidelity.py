"""Fidelity accounting: timer lag, UDP receive drops, capture drops and the overloaded verdict,
driven with a fake clock and canned /proc and tcpdump texts."""
import socket

import pytest

from pfslab.lab import fidelity as fd
from pfslab.protocol.phone import Timers


class FakeLoop:
    """call_at/time only; run_until(t) fires due callbacks, each `cost` seconds late."""

    def __init__(self):
        self.now = 0.0
        self.queue = []

    def time(self):
        return self.now

    def call_at(self, when, fn, *args):
        h = Handle()
        self.queue.append((when, fn, args, h))
        return h

    def run_until(self, t, stall_at=None, stall=0.0):
        while True:
            due = [q for q in self.queue if q[0] <= t and not q[3].cancelled]
            if not due:
                break
            q = min(due, key=lambda q: q[0])
            self.queue.remove(q)
            self.now = max(self.now, q[0])
            if stall_at is not None and self.now >= stall_at:
                self.now += stall            # the loop was busy: this beat runs late
                stall_at = None
            q[1](*q[2])
        self.now = t


class Handle:
    cancelled = False

    def cancel(self):
        self.cancelled = True


def test_bounds_come_from_the_timers():
    b = fd.Bounds.from_timers(Timers())
    assert b.lag_p99_s == pytest.approx(0.05)      # ad interval 250 ms / 5
    assert b.lag_max_s == pytest.approx(1.25)      # offer -> confirmation
    assert (b.rcvbuf_drops, b.capture_drops) == (0, 0)
    assert fd.Bounds.from_timers(Timers(ad_interval=0.5, ads=2)).lag_max_s == pytest.approx(1.5)


def test_lag_meter_quantiles_and_max():
    m = fd.LagMeter()
    for i in range(100):
        m.record(scheduled=float(i), fired=i + 0.001)       # 1 ms late, 100 times
    m.record(10.0, 10.4)                                     # one 400 ms stall
    s = m.summary()
    assert s["n"] == 101
    assert 1.0 <= s["p50_ms"] <= 1.03                        # bucket upper edge: 2 %
    assert 1.0 <= s["p99_ms"] <= 1.03
    assert s["max_ms"] == pytest.approx(400.0)
    assert m.record(5.0, 4.9999) == pytest.approx(-0.0001)  # early: counted as 0 lag
    assert m.quantile(0.0) == 0.0


def test_lag_meter_round_trip_and_merge():
    a, b = fd.LagMeter(), fd.LagMeter()
    for _ in range(90):
        a.add(0.002)
    for _ in range(10):
        b.add(0.300)
    both = fd.LagMeter.merge([fd.LagMeter.from_dict(a.to_dict()),
                              fd.LagMeter.from_dict(b.to_dict())])
    s = both.summary()
    assert s["n"] == 100
    assert 2.0 <= s["p50_ms"] <= 2.05
    assert 300 <= s["p99_ms"] <= 300.0001
    assert s["max_ms"] == pytest.approx(300.0)


def test_probe_measures_a_stalled_loop_on_a_fake_clock():
    loop, m = FakeLoop(), fd.LagMeter()
    stop = fd.probe(loop, m, interval=0.05)
    loop.run_until(1.001)                                # 20 beats, all on time
    assert m.n == 20 and m.max == 0.0
    loop.run_until(2.0, stall_at=1.5, stall=0.8)         # one beat 0.8 s late
    assert m.max == pytest.approx(0.8)
    stop()
    n = m.n
    loop.run_until(5.0)
    assert m.n == n                                      # stopped
    v = fd.verdict(m.summary(), 0, 0)                    # 1 beat in ~35: p99 is the stall
    assert v["overloaded"] is True
    assert [r.split(" ms")[0] for r in v["reasons"]] == ["timer lag p99 800.0"]  # max < 1.25 s


def test_probe_scales_lag_to_emulated_time():
    loop, m = FakeLoop(), fd.LagMeter()
    fd.probe(loop, m, interval=0.1, scale=4.0)           # dilation k = 4
    loop.run_until(1.0, stall_at=0.5, stall=0.4)
    assert m.max == pytest.approx(0.1)


SNMP = """Ip: Forwarding DefaultTTL
Ip: 2 64
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: {ind} 0 {ine} 50 {rcv} 0 0 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 0 0 0 0 0 0 0 0 0
"""


def snmp(ind, rcv):
    return fd.parse_snmp_udp(SNMP.format(ind=ind, ine=rcv, rcv=rcv))


def test_udp_drops_deltas_per_namespace():
    assert snmp(1205, 109549)["RcvbufErrors"] == 109549
    assert fd.parse_snmp_udp("garbage\n") == {}
    before = {"p1": snmp(0, 0), "p2": snmp(10, 5), "p3": snmp(0, 0), "gone": snmp(0, 0)}
    after = {"p1": snmp(100, 0), "p2": snmp(1215, 109554), "p3": snmp(7, 3), "gone": None}
    d = fd.udp_drops(before, after)
    assert d["rcvbuf_errors"] == 109549 + 3
    assert d["in_datagrams"] == 100 + 1205 + 7
    assert d["namespaces_dropping"] == 2
    assert d["worst"][0] == ["p2", 109549]
    assert d["unread"] == ["gone"]


def test_udp_counters_of_this_namespace():
    import os
    c = fd.udp_counters(os.getpid())
    assert c is not None and "RcvbufErrors" in c
    assert fd.udp_counters(2 ** 22 + 12345) is None


def overflowed_socket() -> tuple[socket.socket, socket.socket]:
    """A receiver with a 4 KiB buffer and 200 KB sent at it: real receive-buffer drops."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    rx.bind(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(200):
        tx.sendto(b"x" * 1000, rx.getsockname())
    return rx, tx


def test_socket_drops_counts_a_full_buffer():
    rx, tx = overflowed_socket()
    drops = fd.socket_drops(rx)
    rx.close()
    tx.close()
    assert drops is not None and drops > 100


def test_tcpdump_stats():
    text = ("tcpdump: listening on xM1, link-type EN10MB (Ethernet), snapshot length 262144 "
            "bytes\n4604 packets captured\n4960 packets received by filter\n"
            "356 packets dropped by kernel\n")
    assert fd.tcpdump_stats(text) == {"captured": 4604, "received": 4960, "dropped": 356,
                                      "dropped_by_interface": None}
    assert fd.tcpdump_stats("killed")["dropped"] is None


def test_verdict_names_every_breach():
    ok = {"n": 10, "p50_ms": 1.0, "p99_ms": 10.0, "max_ms": 100.0}
    assert fd.verdict(ok, 0, 0) == {"overloaded": False, "reasons": [], "unmeasured": [],
                                    "bounds": fd.Bounds.from_timers().as_dict()}
    bad = {"n": 10, "p50_ms": 600.0, "p99_ms": 1100.0, "max_ms": 9000.0}
    v = fd.verdict(bad, 109549, 356)
    assert v["overloaded"] is True
    assert len(v["reasons"]) == 4
    assert any("p99 1100.0 ms > 50 ms" in r for r in v["reasons"])
    assert any("109,549 UDP datagrams" in r for r in v["reasons"])
    assert any("356 frames" in r for r in v["reasons"])
    assert fd.headline(v).startswith("EMULATION OVERLOADED: ")


def test_verdict_unmeasured_is_neither_fine_nor_a_breach():
    v = fd.verdict(None, None, 0)
    assert v["overloaded"] is False
    assert v["unmeasured"] == ["timer lag", "UDP receive drops"]
    assert "not measured" in fd.headline(v)


def lag_dict(values):
    m = fd.LagMeter()
    for v in values:
        m.add(v)
    return m.to_dict()


def test_run_fidelity_merges_processes_and_judges():
    stats = {"lag": lag_dict([0.001] * 99 + [0.002]), "time_dilation": 2.0,
             "processes": [{"pid": 1, "phones": 50, "lag": lag_dict([0.001] * 50)},
                           {"pid": 2, "phones": 50, "lag": lag_dict([0.001] * 49 + [0.002])}]}
    caps = {"subnet-1": {"missing": 0, "complete": True},
            "wan": {"missing": 0, "complete": True}}
    f = fd.run_fidelity(stats, {"rcvbuf_errors": 0}, caps)
    assert f["verdict"]["overloaded"] is False and f["captures_complete"] is True
    assert f["time_dilation"] == 2.0 and f["capture_drops"] == 0
    assert [p["phones"] for p in f["lag_per_process"]] == [50, 50]
    assert f["headline"].startswith("emulation within bounds")
    caps["subnet-1"] = {"missing": 356, "complete": False}
    f = fd.run_fidelity(stats, {"rcvbuf_errors": 7}, caps)
    assert f["verdict"]["overloaded"] is True and f["capture_drops"] == 356
    assert f["captures_complete"] is False
    assert f["headline"].startswith(fd.OVERLOADED)
    f = fd.run_fidelity(None, None, {"wan": {"missing": None, "complete": False}})
    assert f["verdict"]["unmeasured"] == ["timer lag", "UDP receive drops", "capture drops"]


def test_hierarchies_of_an_incomplete_capture_name_the_edges_not_on_the_wire():
    key = {"model": "M", "file": "f"}
    wire = [{"subnet": 1, "root": "a", "edges": [["a", "b"]], **key},
            {"subnet": 2, "root": "x", "edges": [["x", "y"]], **key}]
    agent = [{"subnet": 1, "root": "a", "edges": [["a", "b"], ["a", "c"], ["b", "d"]], **key},
             {"subnet": 2, "root": "x", "edges": [["x", "y"], ["x", "z"]], **key}]
    caps = {"subnet-1": {"complete": False}, "subnet-2": {"complete": True},
            "wan": {"complete": True}}
    assert fd.mark_missing_frames(wire, agent, caps) == 2
    assert wire[0]["capture_complete"] is False
    assert wire[0]["edges_not_on_wire"] == [["a", "c"], ["b", "d"]]
    assert wire[1]["capture_complete"] is True and "edges_not_on_wire" not in wire[1]


def test_the_summary_says_overloaded_and_capped_loudly():
    from rich.console import Console
    from pfslab.report import fidelity_lines, print_report
    bad = {"mode": "pfs", "phones": [{"completed": True}], "hierarchies": [], "wan_bytes": 1,
           "makespan_s": 1.0,
           "fidelity": fd.run_fidelity(None, {"rcvbuf_errors": 9},
                                       {"subnet-1": {"missing": 0, "complete": True}})}
    capped = {"mode": "traditional", "phones": [{"completed": True}], "hierarchies": [],
              "wan_bytes": 1, "makespan_s": 1.0,
              "capped": {"phones_in_lab": 100, "sample": 10}}
    assert fidelity_lines(bad)[0].startswith("[bold red]pfs: EMULATION OVERLOADED: 9 UDP")
    con = Console(width=200, record=True)
    print_report([bad, capped], console=con)
    text = con.export_text()
    assert text.count("EMULATION OVERLOADED") == 2          # in the table and under it
    assert "CAPPED traditional baseline: a sample of 10 of 100 phones" in text


def test_run_watch_reads_this_namespace_and_keeps_the_agent_stats():
    import os
    w = fd.RunWatch({"me": os.getpid()}, others={"also me": os.getpid()})
    w.start()
    rx, tx = overflowed_socket()
    rx.close()
    tx.close()
    w.event({"event": "completed"})
    w.event({"event": "agent_stats", "lag": lag_dict([0.001] * 10), "processes": []})
    w.stop()
    f = w.result({"wan": {"missing": 0, "complete": True}})
    assert f["udp_drops"]["rcvbuf_errors"] > 100     # this namespace's own counters
    assert f["lag"]["n"] == 10
    assert f["udp_drops_others"]["rcvbuf_errors"] == f["udp_drops"]["rcvbuf_errors"]
    assert f["verdict"]["overloaded"] is True
