"""Do the captures keep every frame of a LAN-speed burst? A figure, not a test verdict.

    sudo .venv/bin/python -m pfslab.lab.capture_bench [--pairs 4] [--mb 40] [--broadcasts 2000]

Builds a one-subnet lab (2 x --pairs phones, no TFTP), then, all at once: each pair moves
--mb MB over TCP at memory speed (the way a parent hands a file to its child), and every
phone sends its share of --broadcasts 100-byte broadcasts to port 4051. After teardown it
prints, per capture, the frames the bridge ports (or the WAN interface) saw, what tcpdump
captured and dropped, and the burst's rate. ``Capture.check`` is the same account the lab
writes into results.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time

from pfslab.errors import UserError


def burst(net, pairs: int, mb: float, broadcasts: int) -> dict:
    from pfslab.agent import netns as ns
    ph = net.phones
    servers, sinks = [], []

    def sink(srv):
        c, _ = srv.accept()
        while c.recv(1 << 20):
            pass
        c.close()

    for i in range(pairs):
        b = ph[2 * i + 1]
        srv = ns.listen_tcp(b.netns, b.ip, 5001)
        srv.setblocking(True)
        servers.append(srv)
        t = threading.Thread(target=sink, args=(srv,), daemon=True)
        t.start()
        sinks.append(t)

    async def connect():
        return [await ns.connect_tcp(ph[2 * i].netns, ph[2 * i + 1].ip, 5001, timeout=5.0,
                                     source=(ph[2 * i].ip, 0)) for i in range(pairs)]

    socks = asyncio.run(connect())
    chunk = b"\0" * 65536
    n_chunks = max(1, int(mb * 1e6 / len(chunk)))

    def push(s):
        s.setblocking(True)
        for _ in range(n_chunks):
            s.sendall(chunk)
        s.close()

    def shout():
        us = [(ns.udp_broadcast_socket(p.netns, 4051), p.broadcast) for p in ph]
        for i in range(broadcasts):
            s, dst = us[i % len(us)]
            s.sendto(b"x" * 100, (dst, 4051))
        for s, _ in us:
            s.close()

    t0 = time.monotonic()
    workers = [threading.Thread(target=push, args=(s,)) for s in socks]
    workers.append(threading.Thread(target=shout))
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for t in sinks:
        t.join(30)
    dt = time.monotonic() - t0
    for srv in servers:
        srv.close()
    time.sleep(0.5)
    return {"tcp_bytes": pairs * n_chunks * len(chunk), "broadcasts": broadcasts,
            "seconds": round(dt, 3), "mbyte_per_s": round(pairs * n_chunks * len(chunk)
                                                          / dt / 1e6, 1)}


def measure(pairs: int = 4, mb: float = 40.0, broadcasts: int = 2000, prefix=None) -> dict:
    from pfslab.settings import Settings
    from .net import LabNet
    st = Settings(subnets=1, phones_per_subnet=2 * pairs, models="CP-7961G",
                  wan_bw="10mbit", wan_delay="1ms")
    with tempfile.TemporaryDirectory(prefix="pfslab-capture-bench-") as out:
        with LabNet(st.site(), st, tftp=False, prefix=prefix, out_dir=out) as net:
            sent = burst(net, pairs, mb, broadcasts)
    return {"burst": sent, "captures": net.capture_checks}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pfslab.lab.capture_bench",
                                description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--mb", type=float, default=40.0, help="MB per pair")
    p.add_argument("--broadcasts", type=int, default=2000)
    a = p.parse_args(argv)
    try:
        if a.pairs < 1 or a.mb <= 0 or a.broadcasts < 0:
            raise UserError("--pairs >= 1, --mb > 0 and --broadcasts >= 0, please")
        r = measure(a.pairs, a.mb, a.broadcasts)
    except UserError as e:
        print(f"pfslab: {e}", file=sys.stderr)
        return 2
    b = r["burst"]
    print(f"burst: {b['tcp_bytes'] / 1e6:.0f} MB TCP over {a.pairs} pairs + {b['broadcasts']} "
          f"broadcasts in {b['seconds']:.2f} s ({b['mbyte_per_s']:.0f} MB/s)")
    for label, c in r["captures"].items():
        print(f"{label}: {c['frames_on_interfaces']} frames on the interfaces, "
              f"{c['captured']} captured, {c['dropped']} dropped by the kernel, missing "
              f"{c['missing']} -> {'complete' if c['complete'] else 'INCOMPLETE'}")
    print(json.dumps(r))
    return 0 if all(c["complete"] for c in r["captures"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
