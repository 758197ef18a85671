"""pfslab.dissect.pcapfile: the one capture reader, against files that Scapy and tcpdump
write (pcap, pcapng, nanosecond pcap) and files that are cut short or hostile."""
import shutil
import struct
import subprocess

import pytest

from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.utils import rdpcap, wrpcap, wrpcapng  # noqa: E402

from pfslab.dissect.pcapfile import MAX_RECORD, Capture, NotACapture, counts
from pfslab.errors import UserError


def frames(n=5):
    out = []
    for i in range(n):
        p = Ether() / IP(src="10.1.1.11", dst="10.1.1.255") / UDP(sport=4051, dport=4051) \
            / (b"x" * (10 + i))
        p.time = 1_700_000_000 + i * 0.25
        out.append(p)
    return out


def read(path):
    cap = Capture(path)
    return cap, list(cap.records())


def test_pcap_and_pcapng_read_alike(tmp_path):
    pk = frames()
    wrpcap(str(tmp_path / "a.pcap"), pk)
    wrpcapng(str(tmp_path / "a.pcapng"), pk)
    for name, fmt in (("a.pcap", "pcap"), ("a.pcapng", "pcapng")):
        cap, recs = read(tmp_path / name)
        assert cap.format == fmt and not cap.truncated and cap.error is None
        assert [r.data for r in recs] == [bytes(p) for p in pk]
        assert [r.time for r in recs] == pytest.approx([float(p.time) for p in pk])
        assert {r.linktype for r in recs} == {1}
        assert (cap.frames, cap.wire_bytes) == (5, sum(len(p) for p in pk))
        assert counts(tmp_path / name) == (5, sum(len(p) for p in pk))


@pytest.mark.skipif(shutil.which("editcap") is None, reason="needs editcap (tshark)")
def test_nanosecond_and_big_endian_files(tmp_path):
    pk = frames()
    wrpcap(str(tmp_path / "a.pcap"), pk)
    subprocess.run(["editcap", "-F", "nsecpcap", str(tmp_path / "a.pcap"),
                    str(tmp_path / "ns.pcap")], check=True, capture_output=True)
    cap, recs = read(tmp_path / "ns.pcap")
    assert [r.time for r in recs] == pytest.approx([float(p.time) for p in pk], abs=1e-6)
    raw = (tmp_path / "a.pcap").read_bytes()            # the same file, big-endian
    big = bytearray(struct.pack(">IHHiIII", *struct.unpack("<IHHiIII", raw[:24])))
    pos = 24
    while pos < len(raw):
        head = struct.unpack("<IIII", raw[pos:pos + 16])
        big += struct.pack(">IIII", *head) + raw[pos + 16:pos + 16 + head[2]]
        pos += 16 + head[2]
    (tmp_path / "be.pcap").write_bytes(bytes(big))
    assert [r.data for r in read(tmp_path / "be.pcap")[1]] == [bytes(p) for p in pk]


def test_cut_short_files_keep_what_they_hold(tmp_path):
    pk = frames()
    for fmt, write in (("pcap", wrpcap), ("pcapng", wrpcapng)):
        path = tmp_path / f"a.{fmt}"
        write(str(path), pk)
        raw = path.read_bytes()
        for cut in (len(raw) - 3, len(raw) - 20, len(raw) // 2):
            path.write_bytes(raw[:cut])
            cap, recs = read(path)
            assert cap.truncated and cap.error is None
            assert [r.data for r in recs] == [bytes(p) for p in pk[:len(recs)]]
            assert len(recs) < 5


def test_hostile_record_lengths_end_the_walk_with_a_reason(tmp_path):
    pk = frames(2)
    path = tmp_path / "a.pcap"
    wrpcap(str(path), pk)
    raw = bytearray(path.read_bytes())
    second = 24 + 16 + len(bytes(pk[0]))
    raw[second + 8:second + 12] = struct.pack("<I", MAX_RECORD + 1)
    path.write_bytes(bytes(raw))
    cap, recs = read(path)
    assert len(recs) == 1 and "frame 2: record claims" in cap.error
    ng = tmp_path / "a.pcapng"
    wrpcapng(str(ng), pk)
    raw = bytearray(ng.read_bytes())
    raw[-4:] = b"\x07\x00\x00\x00"                           # trailing length disagrees
    ng.write_bytes(bytes(raw))
    cap, recs = read(ng)
    assert len(recs) == 1 and "disagree" in cap.error


@pytest.mark.parametrize("content,says", [
    (b"", "is empty"), (b"GET / HTTP/1.0\r\n", "starts with 47 45 54"),
    (b"\xd4\xc3\xb2\xa1\x02\x00", "too short"), ("dir", "is a directory"),
    (None, "No such file"),
])
def test_not_a_capture_is_one_line(tmp_path, content, says):
    path = tmp_path / "x.pcap"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(NotACapture, match=says) as e:
        Capture(path)
    assert isinstance(e.value, UserError) and "\n" not in str(e.value)
    assert counts(path) == (0, 0)


def test_scapy_reads_what_we_read(tmp_path):
    """A cross-check with Scapy's own reader."""
    pk = frames(20)
    wrpcap(str(tmp_path / "a.pcap"), pk)
    assert [r.data for r in read(tmp_path / "a.pcap")[1]] == \
        [bytes(p) for p in rdpcap(str(tmp_path / "a.pcap"))]
