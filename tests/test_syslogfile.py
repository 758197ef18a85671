"""pfs-syslog.log as `pfslab decode` reads it: lines per phone, and the roots the phones
announced (@@@HROOT) checked against the roots on the wire."""
from pfslab.dissect.syslogfile import log_server_summary, parse_log

LINES = [
    "2026-11-25T10:00:01+00:00 10.1.1.10 Nov 25 10:00:01 p1-1 NOT 10:00:01.000000 DLoad: "
    "@@@HROOT:XID0A0B0C0D H=36685558 m=CP-7961G ROOT=10.0.0.10 /dnld/a.loads",
    "2026-11-25T10:00:02+00:00 10.1.1.11 Nov 25 10:00:02 p1-2 INF 10:00:02.000000 DLoad: "
    "XID0A0B0C0D TxJoin to root 10.1.1.10 try 1",
    "not a syslog line [/] \x00",
    "2026-11-25T10:00:03+00:00 10.1.1.12 Nov 25 10:00:03 p1-3 NOT 10:00:03.000000 DLoad: "
    "@@@HROOT:XID01020304 H=00000001 m=CP-7941G ROOT=10.0.0.10 /dnld/b.sbn",
]


def test_roots_announced_are_checked_against_the_wire(tmp_path):
    path = tmp_path / "pfs-syslog.log"
    path.write_text("\n".join(LINES) + "\n")
    recs = parse_log(str(path))
    assert [r["phone"] for r in recs] == ["p1-1", "p1-2", "p1-3"]   # the foreign line skipped
    wire = [{"root": "10.1.1.10", "model": "CP-7961G", "file": "a.loads"},
            {"root": "10.1.1.20", "model": "CP-7961G", "file": "c.sbn"}]
    s = log_server_summary(recs, wire)
    assert s["lines"] == 3 and s["phones"] == 3 and s["roots_announced"] == 2
    assert s["roots_not_on_wire"] == [{"ip": "10.1.1.12", "model": "CP-7941G", "file": "b.sbn"}]
    assert s["wire_roots_not_announced"] == [{"ip": "10.1.1.20", "model": "CP-7961G",
                                              "file": "c.sbn"}]


def test_a_missing_or_hostile_file_is_empty_not_fatal(tmp_path):
    assert parse_log(str(tmp_path / "none.log")) == []
    (tmp_path / "bin.log").write_bytes(bytes(range(256)) * 4)
    assert parse_log(str(tmp_path / "bin.log")) == []
