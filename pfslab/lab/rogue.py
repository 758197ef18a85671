"""A rogue host's attacker: a small process on a real extra lab host that speaks port 4051
with the codec (no Scapy), as anything on an open subnet can.

    python -m pfslab.lab.rogue ATTACK --broadcast 10.1.1.255 --server 10.0.0.10 \
        --files FILES.json [--pcap OLD.pcap] [--rate 500]

FILES.json: [{"model", "file", "map", "size"}, ...], the files the site's phones upgrade
(what an attacker who watched one upgrade knows). Attacks (pfslab.lab.faults.ATTACKS):
max-root, zero-root, claim-trickle, flood, replay, and two that make the rogue a parent
(a top-strength root that answers JOINs with OFFERs naming itself, and serves on TCP 4051):
tamper (the right size, wrong bytes, a HEADER whose digest matches the wrong bytes) and
stall (HOLD every 2 s, never a byte). It runs until it is stopped (SIGTERM) and prints one
JSON line of counts when it stops.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import signal
import socket
import struct
import sys
import time

from pfslab.protocol.codec import (PORT, DecodeError, Frame, FrameReader, FrameType, Message,
                                   MsgType, decode, encode, encode_data, encode_frame)

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


class RogueParent:
    """A top-strength root for every file that places every joiner under itself, then
    serves tampered bytes or stalls (asyncio: UDP and TCP 4051 in this host)."""

    def __init__(self, attack: str, ip: str, broadcast: str, server: str, files: list[dict]):
        self.attack, self.ip, self.broadcast, self.server = attack, ip, broadcast, server
        rnd = random.Random(11)
        self.files = {f["file"]: dict(f, xid=rnd.getrandbits(32)) for f in files}
        self.counts = {"attack": attack, "sent": 0, "offers": 0, "requests": 0,
                       "bytes_served": 0}
        self.slot = 0

    async def run(self, stop: asyncio.Event) -> dict:
        loop = asyncio.get_running_loop()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        u.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        u.bind(("0.0.0.0", PORT))
        u.setblocking(False)
        self.udp = u
        loop.add_reader(u.fileno(), self._datagram)
        srv = await asyncio.start_server(self._serve, self.ip, PORT, reuse_address=True)
        print("ready", flush=True)
        while not stop.is_set():
            for f in self.files.values():
                self._send(Message(MsgType.ROOT, f["xid"], TOP, f["map"], f["model"], f["file"],
                                   server=self.server), self.broadcast)
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
        srv.close()
        loop.remove_reader(u.fileno())
        u.close()
        return self.counts

    def _send(self, m: Message, dst: str) -> None:
        try:
            self.udp.sendto(encode(m), (dst, PORT))
            self.counts["sent"] += 1
        except OSError:
            pass

    def _datagram(self) -> None:
        try:
            raw, (src, _) = self.udp.recvfrom(65536)
            m = decode(raw)
        except (OSError, DecodeError):
            return
        f = self.files.get(m.file)
        if m.type != MsgType.JOIN or f is None or m.xid != f["xid"] or src == self.ip:
            return
        self.slot ^= 1
        self._send(Message(MsgType.OFFER, f["xid"], TOP, f["map"], f["model"], f["file"],
                           parent=self.ip, slot=self.slot, depth=1), src)
        self.counts["offers"] += 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        fr = FrameReader()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                for fm in fr.feed(data):
                    if fm.type == FrameType.REQUEST and fm.file in self.files:
                        self.counts["requests"] += 1
                        await self._answer(writer, self.files[fm.file])
        except (OSError, DecodeError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, f: dict) -> None:
        size = int(f.get("size") or 4096)
        if self.attack == "stall":
            while True:
                writer.write(encode_frame(Frame(FrameType.HOLD, have=0, total=size)))
                await writer.drain()
                await asyncio.sleep(2.0)
        bad = bytes(random.Random(f["file"]).getrandbits(8) for _ in range(size))
        writer.write(encode_frame(Frame(FrameType.HEADER, size=size,
                                        sha256=hashlib.sha256(bad).digest())))
        for i in range(0, size, 1024):
            writer.write(encode_data(bad[i:i + 1024]))
            await writer.drain()
        writer.write(encode_frame(Frame(FrameType.END)))
        await writer.drain()
        self.counts["bytes_served"] += size


def run_parent(attack: str, ip: str, broadcast: str, server: str, files: list[dict]) -> dict:
    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await RogueParent(attack, ip, broadcast, server, files).run(stop)
    return asyncio.run(main())


def _nap(seconds: float, stop: list) -> None:
    """Sleep, but wake within 50 ms of a stop: a SIGTERM during a 4.5 s wait must still leave
    time to print the counts before the lab's grace period ends."""
    end = time.monotonic() + seconds
    while not stop:
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))


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
                _nap(min(wait, 5.0), stop)
            s.sendto(payload, (broadcast, PORT))
            sent += 1
        while not stop:
            _nap(0.2, stop)
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
            _nap(max(wait, gap), stop)
    return {"attack": attack, "sent": sent}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pfslab.lab.rogue", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("attack", choices=("max-root", "zero-root", "claim-trickle", "flood",
                                      "replay", "tamper", "stall"))
    p.add_argument("--ip", help="tamper, stall: this host's address")
    p.add_argument("--broadcast", required=True)
    p.add_argument("--server", required=True, help="HQ's TFTP address (ROOT's server field)")
    p.add_argument("--files", required=True, help="JSON list of {model, file, map}")
    p.add_argument("--pcap", help="replay: the capture whose 4051 datagrams are sent")
    p.add_argument("--rate", type=float, default=500.0, help="flood: datagrams/s (default 500)")
    a = p.parse_args(argv)
    with open(a.files) as f:
        files = json.load(f)
    if a.attack in ("tamper", "stall"):
        counts = run_parent(a.attack, a.ip, a.broadcast, a.server, files)
    else:
        counts = run(a.attack, a.broadcast, a.server, files, a.pcap, a.rate)
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
