"""Time dilation's arithmetic: WAN scaling, emulated timestamps, pcap rewriting, auto k."""
import struct

import pytest

from pfslab.lab import dilation


def _pcap(path, times, nsec=False):
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D if nsec else 0xA1B2C3D4, 2, 4, 0, 0,
                            65535, 1))
        for t in times:
            frac = 1e9 if nsec else 1e6
            f.write(struct.pack("<IIII", int(t), int(round((t - int(t)) * frac)), 3, 3))
            f.write(b"abc")


def _times(path, nsec=False):
    out = []
    with open(path, "rb") as f:
        f.read(24)
        while len(rec := f.read(16)) == 16:
            sec, sub, incl, _ = struct.unpack("<IIII", rec)
            out.append(sec + sub / (1e9 if nsec else 1e6))
            assert f.read(incl) == b"abc"
    return out


def test_pcap_timestamps_come_back_to_emulated_time(tmp_path):
    for nsec in (False, True):
        p = tmp_path / f"x{nsec}.pcap"
        t0 = 1_700_000_000.0
        _pcap(p, [t0 - 4, t0, t0 + 4, t0 + 40.5], nsec)
        assert dilation.undilate_pcap(str(p), t0, 4.0) == 4
        got = _times(p, nsec)
        for a, b in zip(got, [t0 - 1, t0, t0 + 1, t0 + 10.125]):
            assert abs(a - b) < 2e-6


def test_no_dilation_leaves_the_pcap_alone(tmp_path):
    p = tmp_path / "x.pcap"
    _pcap(p, [1.0, 2.0])
    before = p.read_bytes()
    dilation.undilate_pcap(str(p), 0.5, 1.0)
    assert p.read_bytes() == before


def test_wan_is_slowed_by_k():
    assert dilation.dilate_wan(10_000_000, 0.02, 4.0) == (2_500_000, 0.08)
    assert dilation.dilate_wan(None, 0.02, 2.0) == (None, 0.04)


def test_auto_dilation_grows_with_the_broadcast_domains_and_the_machine_load():
    assert dilation.auto_dilation([8, 8], cores=2, loadavg=0.0) == 1.0
    assert dilation.auto_dilation([25] * 4, cores=2, loadavg=0.0) == 1.0
    assert dilation.auto_dilation([100, 100], cores=2, loadavg=0.0) == 2.0   # 200 phones
    assert dilation.auto_dilation([63] * 4, cores=2, loadavg=0.0) == 2.0
    small = dilation.auto_dilation([250] * 4, cores=2, loadavg=0.0)
    big = dilation.auto_dilation([1000], cores=2, loadavg=0.0)
    assert 1.0 < small < big <= dilation.MAX_AUTO
    assert dilation.auto_dilation([1000], cores=2, loadavg=6.0) > big
    assert dilation.auto_dilation([5000], cores=2, loadavg=0.0) == dilation.MAX_AUTO


@pytest.mark.parametrize("k", ["1.5", "0", "256", "x"])
def test_time_dilation_is_a_whole_factor_a_tftp_timeout_can_carry(k):
    from pfslab.errors import UserError
    from pfslab.settings import Settings
    with pytest.raises(UserError, match="whole factor from 1 to 255"):
        Settings(time_dilation=k).dilation()
    assert Settings(time_dilation="4").dilation() == 4.0
