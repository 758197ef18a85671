"""TFTP recovers like a real phone: a transfer whose server went away and came back restarts
within a few seconds of its return (not after its whole retry ladder), and a client whose
server stays silent fails in bounded time, faster once it knows the server is silent.

The timing properties are checked on the sans-I/O ReadTransfer in virtual time; the real
socket tests use a real UDP server on loopback that is stopped and restarted on its port.
"""
from __future__ import annotations

import asyncio
import os
import socket

from pfslab.agent.tftp import (
    MAX_BACKOFF, Ack, Error, ReadTransfer, Rrq, ServerReach, TftpError, decode, encode_data,
    encode_oack, tftp_get,
)

SERVER = ("10.0.0.10", 69)
OLD_TID, NEW_TID = ("10.0.0.10", 40001), ("10.0.0.10", 40002)


class Clock:
    """Drives one ReadTransfer in virtual time; records what it sends, when."""

    def __init__(self, xfer: ReadTransfer):
        self.x, self.now, self.sent = xfer, 0.0, []

    def out(self, pkts):
        self.sent += [(self.now, decode(p), a) for p, a in pkts]

    def until(self, t: float) -> None:
        """Let timers fire up to time t (the server answers nothing meanwhile)."""
        while not self.x.finished and self.x.deadline <= t:
            self.now = self.x.deadline
            self.out(self.x.timer_expired(self.now))
        if not self.x.finished:
            self.now = max(self.now, t)

    def recv(self, pkt: bytes, addr) -> None:
        self.out(self.x.datagram_received(pkt, addr, self.now))


def serve_blocks(c: Clock, data: bytes, tid, first: int, last: int, bs: int = 512) -> None:
    for b in range(first, last + 1):
        c.recv(encode_data(b, data[(b - 1) * bs:b * bs]), tid)


def test_a_restarted_server_is_asked_again_within_the_backoff_cap():
    data = os.urandom(512 * 20 + 7)
    c = Clock(ReadTransfer(SERVER, "f", blksize=512, timeout=1.0, retries=8))
    c.out(c.x.start(0.0))
    c.recv(encode_oack({"tsize": len(data)}), OLD_TID)
    serve_blocks(c, data, OLD_TID, 1, 5)
    down_at, back_at = c.now, c.now + 5.0      # the server dies with the transfer, 5 s down
    c.until(back_at)
    c.until(back_at + MAX_BACKOFF * 1.0)
    asked = [t for t, p, a in c.sent if isinstance(p, Rrq) and a == SERVER and t >= back_at]
    assert asked, "no RRQ after the server came back"
    assert asked[0] - back_at <= MAX_BACKOFF * 1.0
    # the new server answers that RRQ with a new transfer: taken from block 1
    c.now = asked[0] + 0.05
    c.recv(encode_oack({"tsize": len(data)}), NEW_TID)
    # the old transfer, were it still alive, is told it is unknown
    c.recv(encode_data(6, b"x" * 512), OLD_TID)
    assert isinstance(c.sent[-1][1], Error) and c.sent[-1][1].code == 5
    assert c.sent[-1][2] == OLD_TID
    serve_blocks(c, data, NEW_TID, 1, 21)
    assert c.x.done and c.x.data == data and c.x.restarts == 1
    assert c.now - down_at < 55        # the old ladder alone took 55 s, then failed


def test_a_transfer_that_its_server_resumes_goes_on_without_restarting():
    """A WAN outage, not a restart: the old transfer answers the probe first and continues."""
    data = os.urandom(512 * 10 + 1)
    c = Clock(ReadTransfer(SERVER, "f", blksize=512, timeout=1.0, retries=8))
    c.out(c.x.start(0.0))
    c.recv(encode_oack({"tsize": len(data)}), OLD_TID)
    serve_blocks(c, data, OLD_TID, 1, 4)
    c.until(c.now + 12)                             # probing by now
    serve_blocks(c, data, OLD_TID, 5, 11)
    c.recv(encode_oack({"tsize": len(data)}), NEW_TID)    # a late answer to a probe
    assert c.x.done and c.x.data == data and c.x.restarts == 0
    assert not any(isinstance(p, Ack) and a == NEW_TID and p.block == 0 for _, p, a in c.sent)


def test_a_silent_server_fails_the_transfer_in_bounded_time():
    for retries, bound in ((8, 31.0), (3, 11.0)):
        c = Clock(ReadTransfer(SERVER, "f", timeout=1.0, retries=retries))
        c.out(c.x.start(0.0))
        c.until(600)
        assert isinstance(c.x.error, TftpError) and "timeout" in str(c.x.error)
        assert c.now == bound


# -- real sockets on loopback ------------------------------------------------------------------

def _udp(port: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    s.setblocking(False)
    return s


class RestartingServer:
    """A real lock-step TFTP server on a fixed loopback port that can be stopped (its
    listening and transfer sockets closed: the transfer is forgotten) and started again."""

    def __init__(self, data: bytes, blksize: int = 512):
        self.data, self.bs = data, blksize
        self.port = _udp().getsockname()[1]
        self.tasks: list[asyncio.Task] = []
        self.blocks_sent = 0
        self.rrqs = 0

    def start(self) -> None:
        self.listen = _udp(self.port)
        self.tasks.append(asyncio.create_task(self._accept()))

    def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        self.tasks = []
        self.listen.close()

    async def _accept(self):
        loop = asyncio.get_running_loop()
        while True:
            raw, client = await loop.sock_recvfrom(self.listen, 65536)
            if isinstance(decode(raw), Rrq):
                self.rrqs += 1
                self.tasks.append(asyncio.create_task(self._serve(client)))

    async def _serve(self, client):
        loop = asyncio.get_running_loop()
        with _udp() as sock:
            async def xchg(pkt, block):
                for _ in range(20):
                    await loop.sock_sendto(sock, pkt, client)
                    try:
                        raw, _ = await asyncio.wait_for(loop.sock_recvfrom(sock, 100), 0.3)
                    except asyncio.TimeoutError:
                        continue
                    p = decode(raw)
                    if isinstance(p, Ack) and p.block == block:
                        return True
                    if not isinstance(p, Ack):
                        return False         # e.g. ERROR 5: the client left this transfer
                return False
            if not await xchg(encode_oack({"tsize": len(self.data)}), 0):
                return
            for b in range(1, len(self.data) // self.bs + 2):
                self.blocks_sent += 1
                if not await xchg(encode_data(b, self.data[(b - 1) * self.bs:b * self.bs]), b):
                    return
                await asyncio.sleep(0.01)         # a slow link: time to stop mid-transfer


def test_a_real_server_stopped_and_restarted_mid_transfer_is_recovered():
    data = os.urandom(512 * 60 + 3)

    async def main():
        srv = RestartingServer(data)
        srv.start()
        with _udp() as s:
            get = asyncio.create_task(tftp_get(s, "127.0.0.1", "f", port=srv.port,
                                               blksize=512, timeout=0.2, retries=4))
            while srv.blocks_sent < 10:
                await asyncio.sleep(0.01)
            srv.stop()                            # mid-transfer: the transfer is forgotten
            await asyncio.sleep(1.0)              # down for longer than 4 retransmissions
            srv.start()
            try:
                return await asyncio.wait_for(get, 30), srv.rrqs
            finally:
                srv.stop()
    got, rrqs = asyncio.run(main())
    assert got == data          # without the probe, 4 retransmissions to the dead TID: failed
    assert rrqs == 2


def test_a_client_that_knows_its_server_is_silent_gives_up_sooner():
    async def main():
        reach = ServerReach()
        counts = []
        with _udp() as s, _udp() as dead:
            for _ in range(2):
                try:
                    await tftp_get(s, "127.0.0.1", "f", port=dead.getsockname()[1],
                                   timeout=0.02, retries=8, reach=reach)
                except TftpError:
                    pass
                n = 0
                while True:
                    try:
                        dead.recv(100)
                        n += 1
                    except BlockingIOError:
                        break
                counts.append((n, reach.silent))
        return counts
    assert asyncio.run(main()) == [(9, True), (4, True)]
