"""bench-calibrate's own arithmetic: the lab's TFTP bytes from wan.pcap, the sites, the rows."""
import struct

import pytest

from pfslab import calibrate
from pfslab.dissect.pcapfile import write_pcap
from pfslab.errors import UserError


def udp_frame(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    ip = lambda a: bytes(int(x) for x in a.split("."))       # noqa: E731
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, ip(src), ip(dst))
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + iph + udp


def test_wan_tftp_bytes_counts_transfers_both_ways_and_not_syslog(tmp_path):
    hq, phone = "10.0.0.10", "10.1.1.10"
    rrq = udp_frame(phone, 40000, hq, 69, b"\x00\x01SEP0.cnf.xml\x00octet\x00")    # 42 + 21
    data = udp_frame(hq, 50000, phone, 40000, b"\x00\x03\x00\x01" + b"x" * 100)     # 42 + 104
    ack = udp_frame(phone, 40000, hq, 50000, b"\x00\x04\x00\x01")                    # 42 + 4
    log = udp_frame(phone, 40001, hq, 514, b"<134>DLoad line")                       # 42 + 15
    other = udp_frame(phone, 40002, hq, 50000, b"\x00\x04\x00\x01")     # not a TFTP client port
    arp = b"\xff" * 6 + b"\x04" * 6 + b"\x08\x06" + b"\x00" * 28                      # 42
    path = tmp_path / "wan.pcap"
    write_pcap(path, [(1.0, f) for f in (rrq, data, ack, log, other, arp)])
    got = calibrate.wan_tftp_bytes(str(path))
    assert (len(rrq), len(data), len(ack), len(log), len(other)) == (63, 146, 46, 57, 46)
    assert got["tftp_up"] == 63 + 46
    assert got["tftp_down"] == 146
    assert got["tftp"] == 63 + 46 + 146
    assert got["syslog"] == 57
    assert got["other"] == 46 + 42
    assert got["frames"] == 6


def test_the_sites_are_the_readme_default_and_bench_scale():
    from pfslab.settings import Settings
    st = calibrate.settings_of("2x8", "pfs")
    d = Settings()
    assert (st.subnets, st.phones_per_subnet) == (2, 8)
    assert (st.models, st.wan_bw, st.wan_delay, st.firmware_scale) == \
        (d.models, d.wan_bw, d.wan_delay, d.firmware_scale)      # `pfslab lab`'s defaults
    assert calibrate.SITES["2x8"][1] == ("pfs", "traditional")
    from pfslab.bench_scale import DEFAULTS
    for name, n in (("2x100", 100), ("4x250", 250)):
        st = calibrate.settings_of(name, "pfs")
        assert st.phones_per_subnet == n
        assert (st.models, st.wan_bw, st.wan_delay, st.firmware_scale) == \
            (DEFAULTS["models"], DEFAULTS["wan_bw"], DEFAULTS["wan_delay"],
             DEFAULTS["firmware_scale"])
    with pytest.raises(UserError):
        calibrate.parse_sites("2x9")


def test_a_row_is_sim_over_lab_and_says_whether_all_three_are_within_10_percent():
    lab = {"makespan_s": 50.0, "wan_tftp_bytes": 1000, "hq_requests": 100}
    sim = {"makespan_s": 56.0, "wan_tftp_bytes": 1050, "hq_requests": 100}
    w = calibrate.build_row("2x8", "pfs", lab, sim, {"makespan_s": 45.0,
                                                       "wan_tftp_bytes": 990,
                                                       "hq_requests": 100})
    assert (w["makespan_ratio"], w["wan_tftp_bytes_ratio"], w["hq_requests_ratio"]) == \
        (1.12, 1.05, 1.0)
    assert w["within"] is False                        # the makespan is 12 % off
    sim["makespan_s"] = 54.0
    assert calibrate.build_row("2x8", "pfs", lab, sim, {})["within"] is True
