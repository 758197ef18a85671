"""The phones' syslog messages (RFC 3164) and the PFS log server's file, without a lab: a
message as a phone sends it, the line rsyslogd's template makes of it, and parse_log."""
import socket

from pfslab.agent.syslog import SEVERITY, SyslogSender, syslog_message
from pfslab.lab.syslog_server import CONFIG, parse_log
from pfslab.protocol.logs import LogRecord, render


def test_a_dload_line_as_syslog():
    rec = LogRecord(61.5, "WRN", "XID0A0B0C0D apps41.sbn: parent 10.1.1.14 silent for 8s")
    line = render(rec, epoch=86400 * 30)
    msg = syslog_message(rec, line, "p1-3", epoch=86400 * 30)
    assert msg == (f"<{23 * 8 + SEVERITY['WRN']}>Jan 31 00:01:01 p1-3 {line}").encode()
    assert syslog_message(rec, line, "p1-3", epoch=0)[5:12] == b"Jan  1 "   # day padded


def test_the_server_file_reads_back_in_order(tmp_path):
    lines = []
    for i, (name, ip) in enumerate([("p1-1", "10.1.1.10"), ("p1-2", "10.1.1.11")] * 3):
        rec = LogRecord(float(i), "NOT", f"line {i}")
        msg = syslog_message(rec, render(rec), name, 0).decode()
        after_pri = msg.split(">", 1)[1]                  # %rawmsg-after-pri%
        lines.append(f"2026-11-25T09:34:46.80712{i}+00:00 {ip} {after_pri}")
    path = tmp_path / "pfs-syslog.log"
    path.write_text("\n".join(lines + ["garbage line"]) + "\n")
    recs = parse_log(str(path))
    assert [r["phone"] for r in recs] == ["p1-1", "p1-2"] * 3
    assert [r["line"].split("DLoad: ")[1] for r in recs] == [f"line {i}" for i in range(6)]
    assert parse_log(str(tmp_path / "none.log")) == []


def test_the_server_config_listens_on_udp_only():
    conf = CONFIG.format(work="/w", log="/l", address="10.0.0.10", port=514)
    assert 'module(load="imudp")' in conf and "imuxsock" not in conf and "imklog" not in conf
    assert 'address="10.0.0.10" port="514"' in conf


def test_sender_goes_to_the_config_target_and_never_raises():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    port = rx.getsockname()[1]
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s = SyslogSender(f"127.0.0.1:{port}", "p1-1", lambda: tx)
    rec = LogRecord(0.0, "INF", "x")
    s.send(rec, "INF 00:00:00.000000 DLoad: x", 0.0)
    data, addr = rx.recvfrom(9000)
    assert data == syslog_message(rec, "INF 00:00:00.000000 DLoad: x", "p1-1", 0.0)
    assert addr[1] == tx.getsockname()[1]
    s.close()
    assert tx.fileno() == -1
    s.send(rec, "after close", 0.0)                      # best effort: no exception
    rx.close()
