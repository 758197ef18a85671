"""WAN measurements from Python sockets opened inside lab namespaces (no ping/iperf parsing).

    rtts = udp_rtt(phone.netns, net.node_netns(net.info["hq"]), net.hq_ip)
    bps = tcp_throughput(phone.netns, net.node_netns(net.info["hq"]), net.hq_ip)
"""
from __future__ import annotations

import socket
import statistics
import threading
import time

from .nsutil import socket_in


def udp_rtt(client_ns: str, server_ns: str, server_ip: str, n: int = 20, port: int = 7,
            interval: float = 0.02, timeout: float = 3.0) -> list[float | None]:
    """RTT of n UDP echoes (seconds; None for a lost one), echo server in server_ns."""
    srv = socket_in(server_ns)
    srv.bind((server_ip, port))
    srv.settimeout(0.1)
    stop = threading.Event()

    def echo():
        while not stop.is_set():
            try:
                data, addr = srv.recvfrom(2048)
            except socket.timeout:
                continue
            srv.sendto(data, addr)

    t = threading.Thread(target=echo, daemon=True)
    t.start()
    cl = socket_in(client_ns)
    cl.settimeout(timeout)
    out: list[float | None] = []
    try:
        for i in range(n):
            msg = b"rtt-%d" % i
            t0 = time.monotonic()
            cl.sendto(msg, (server_ip, port))
            try:
                while True:
                    data, _ = cl.recvfrom(2048)
                    if data == msg:
                        out.append(time.monotonic() - t0)
                        break
            except socket.timeout:
                out.append(None)
            time.sleep(interval)
    finally:
        stop.set()
        t.join(1)
        cl.close()
        srv.close()
    return out


def tcp_throughput(client_ns: str, server_ns: str, server_ip: str, seconds: float = 4.0,
                   port: int = 5001) -> dict:
    """Bulk TCP client_ns -> server_ns for `seconds`. Rate measured at the receiver over the
    second half of the transfer (after slow start), and over all of it."""
    srv = socket_in(server_ns, type=socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((server_ip, port))
    srv.listen(1)
    marks: list[tuple[float, int]] = []

    def receive():
        c, _ = srv.accept()
        n = 0
        while True:
            b = c.recv(262144)
            if not b:
                break
            n += len(b)
            marks.append((time.monotonic(), n))
        c.close()

    t = threading.Thread(target=receive, daemon=True)
    t.start()
    cl = socket_in(client_ns, type=socket.SOCK_STREAM)
    cl.connect((server_ip, port))
    chunk = b"\0" * 65536
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        cl.send(chunk)
    cl.close()
    t.join(seconds * 4 + 30)
    srv.close()
    if len(marks) < 2:
        return {"bps": 0.0, "bps_all": 0.0, "bytes": marks[-1][1] if marks else 0}
    t0, t1 = marks[0][0], marks[-1][0]
    mid = t0 + (t1 - t0) / 2
    half = next(m for m in marks if m[0] >= mid)
    bps_half = (marks[-1][1] - half[1]) * 8 / max(t1 - half[0], 1e-6)
    return {"bps": bps_half, "bps_all": marks[-1][1] * 8 / max(t1 - t0, 1e-6),
            "bytes": marks[-1][1], "seconds": t1 - t0}


def summary(rtts: list[float | None]) -> dict:
    got = [r for r in rtts if r is not None]
    if not got:
        return {"n": len(rtts), "lost": len(rtts)}
    return {"n": len(rtts), "lost": len(rtts) - len(got), "min_ms": min(got) * 1e3,
            "median_ms": statistics.median(got) * 1e3, "max_ms": max(got) * 1e3}
