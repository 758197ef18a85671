"""The captures' own account, without a lab: pcap_frames on a pcap being written, and
Capture.check from tcpdump's figures and the interfaces' counters."""
import struct

from pfslab.lab.capture import Capture, pcap_frames


def write_pcap(path, frames, cut=0):
    data = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
    for i in range(frames):
        body = bytes(60 + i)
        data += struct.pack("<IIII", i, 0, len(body), len(body)) + body
    path.write_bytes(data[:len(data) - cut] if cut else data)
    return len(data)


def test_pcap_frames_counts_whole_records_and_resumes(tmp_path):
    p = tmp_path / "x.pcap"
    write_pcap(p, 5, cut=10)                    # the 5th record is half written
    n, off = pcap_frames(str(p))
    assert n == 4
    size = write_pcap(p, 7)
    n, off = pcap_frames(str(p), off, n)        # resumes where it stopped
    assert (n, off) == (7, size)
    assert pcap_frames(str(tmp_path / "none.pcap")) == (0, 24)


def check(stats, start=None, stop=None):
    c = Capture("subnet-1", "xM1", "/tmp/x.pcap")
    c.stats, c.counter_start, c.counter_stop = stats, start, stop
    return c.check()


def test_check_complete_only_when_every_account_agrees():
    ok = {"captured": 100, "received": 100, "dropped": 0}
    assert check(ok, 10, 110)["complete"] is True
    r = check({"captured": 4604, "received": 4960, "dropped": 356}, 0, 4960)
    assert (r["missing"], r["complete"]) == (356, False)
    r = check({"captured": 98, "received": 100, "dropped": 0}, 0, 100)   # not written
    assert r["missing"] == 2
    r = check({"captured": 100, "received": 100, "dropped": 0}, 0, 103)  # never reached tcpdump
    assert (r["missing"], r["frames_on_interfaces"]) == (3, 103)
    r = check(ok)                                # no counters: not proven complete
    assert (r["missing"], r["complete"]) == (0, False)
    r = check({"captured": None, "received": None, "dropped": None})      # tcpdump killed
    assert (r["missing"], r["complete"]) == (None, False)
