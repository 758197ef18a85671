"""The asyncio TFTP client against a real tftpd-hpa and against small in-process fake servers.

tftpd-hpa needs root (it chroots with -s and drops to a user), so those tests are ``lab``;
the fake-server tests run anywhere.
"""
import asyncio
import contextlib
import errno
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from pfslab.agent.tftp import (
    Error, Rrq, TftpError, decode, encode_data, encode_error, encode_oack, tftp_get,
)

TFTPD = "/usr/sbin/in.tftpd"


def _udp(ip="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, 0))
    s.setblocking(False)
    return s


def _free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_taken(port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            return e.errno == errno.EADDRINUSE
        return False


# -- tftpd-hpa ---------------------------------------------------------------------------------

@pytest.fixture
def tftpd(tmp_path):
    """Run in.tftpd in the foreground on 127.0.0.1:<free port>; yields (dir, port)."""
    if not shutil.which(TFTPD) and not os.path.exists(TFTPD):
        pytest.skip("tftpd-hpa is not installed")
    root = tmp_path / "tftproot"
    root.mkdir()
    root.chmod(0o755)
    for attempt in range(5):
        port = _free_udp_port()
        proc = subprocess.Popen(
            [TFTPD, "--foreground", "--secure", "--address", f"127.0.0.1:{port}",
             "--user", "nobody", "--blocksize", "65464", str(root)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and proc.poll() is None and not _port_taken(port):
                time.sleep(0.02)
            if proc.poll() is None and _port_taken(port):
                yield root, port
                return
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)      # by PID: only the server we started
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    pytest.fail(f"in.tftpd did not start: {proc.stderr.read().decode(errors='replace')}")


def _put(root, name, data):
    p = root / name
    p.write_bytes(data)
    p.chmod(0o644)          # tftpd-hpa serves only world-readable files
    return data


def _get(port, name, **kw):
    async def main():
        with _udp() as s:
            return await tftp_get(s, "127.0.0.1", name, port=port, **kw)
    return asyncio.run(main())


@pytest.mark.lab
@pytest.mark.parametrize("blksize", [512, 1428])
@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 1428, 1428 * 3, 1429, 3_000_017])
def test_tftpd_sizes(tftpd, blksize, size):
    root, port = tftpd
    data = _put(root, "f.bin", os.urandom(size))
    assert _get(port, "f.bin", blksize=blksize) == data


@pytest.mark.lab
def test_tftpd_without_tsize_and_fractional_timeout(tftpd):
    root, port = tftpd
    data = _put(root, "f.bin", os.urandom(5000))
    assert _get(port, "f.bin", tsize=False, timeout=0.5) == data


@pytest.mark.lab
def test_tftpd_missing_file_reports_server_message(tftpd):
    _, port = tftpd
    with pytest.raises(TftpError, match="File not found") as ei:
        _get(port, "nope.bin")
    assert ei.value.code == 1


@pytest.mark.lab
def test_tftpd_progress_reports_tsize(tftpd):
    root, port = tftpd
    data = _put(root, "f.bin", os.urandom(100_000))
    calls = []
    assert _get(port, "f.bin", progress=lambda got, total: calls.append((got, total))) == data
    assert calls[-1] == (100_000, 100_000)
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)


@pytest.mark.lab
def test_tftpd_block_number_wraparound(tftpd):
    """> 65535 blocks of 512 bytes: tftpd-hpa wraps the block number to 0."""
    root, port = tftpd
    data = _put(root, "big.bin", os.urandom(512 * 65536 + 1000))
    t = time.monotonic()
    got = _get(port, "big.bin", blksize=512)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert time.monotonic() - t < 60


@pytest.mark.lab
def test_tftpd_many_concurrent_transfers(tftpd):
    root, port = tftpd
    data = _put(root, "f.bin", os.urandom(60_000))

    async def main():
        socks = [_udp() for _ in range(200)]
        try:
            return await asyncio.gather(*(tftp_get(s, "127.0.0.1", "f.bin", port=port)
                                          for s in socks))
        finally:
            for s in socks:
                s.close()
    results = asyncio.run(main())
    assert all(r == data for r in results)


# -- fake servers ------------------------------------------------------------------------------

class FakeServer:
    """A tiny lock-step TFTP server: one RRQ, served from a fresh port (its TID).

    ``options``: "oack" (honour blksize/tsize), "ignore" (never OACK), or "error" (ERROR 8 to
    any request with options). ``drop``: DATA block numbers whose first transmission is lost.
    ``rogue``: also send a DATA 1 from a third port, which the client must answer with ERROR 5.
    """

    def __init__(self, files, options="oack", drop=(), rogue=False, timeout=0.1):
        self.files, self.options, self.drop, self.rogue = files, options, set(drop), rogue
        self.timeout = timeout
        self.listen = _udp()
        self.port = self.listen.getsockname()[1]
        self.requests = []
        self.sent_data = []       # block numbers, every transmission
        self.rogue_got = []
        self.client_retransmits = 0       # repeated ACKs seen
        self.tasks = []

    async def run(self):
        loop = asyncio.get_running_loop()
        while True:
            raw, client = await loop.sock_recvfrom(self.listen, 65536)
            req = decode(raw)
            self.requests.append(req)
            self.tasks.append(asyncio.create_task(self.serve(req, client)))

    async def _xchg(self, sock, pkt, client, expect_block, lose_first=False):
        """Send pkt until ACK expect_block arrives. Resend on our timeout, or when the client
        repeats its previous ACK (its retransmission). ``lose_first``: the first send is lost."""
        loop = asyncio.get_running_loop()
        for _ in range(50):
            if lose_first:
                lose_first = False
            else:
                await loop.sock_sendto(sock, pkt, client)
            try:
                while True:
                    raw, src = await asyncio.wait_for(loop.sock_recvfrom(sock, 65536), self.timeout)
                    ack = decode(raw)
                    if src != client:
                        continue
                    if getattr(ack, "block", None) == expect_block:
                        return
                    if getattr(ack, "block", None) == (expect_block - 1) & 0xFFFF:
                        self.client_retransmits += 1
                        break          # the client resent its last ACK: resend now
            except asyncio.TimeoutError:
                continue
        raise AssertionError("fake server: client never ACKed")

    async def serve(self, req, client):
        loop = asyncio.get_running_loop()
        assert isinstance(req, Rrq)
        with _udp() as sock:
            if self.options == "error" and req.options:
                await loop.sock_sendto(sock, encode_error(8, "options refused"), client)
                return
            if req.filename not in self.files:
                await loop.sock_sendto(sock, encode_error(1, "File not found"), client)
                return
            data = self.files[req.filename]
            blksize = 512
            if self.options == "oack" and req.options:
                reply = {}
                if "blksize" in req.options:
                    blksize = reply["blksize"] = int(req.options["blksize"])
                if "tsize" in req.options:
                    reply["tsize"] = len(data)
                await self._xchg(sock, encode_oack(reply), client, 0)
            if self.rogue:
                with _udp() as other:
                    await loop.sock_sendto(other, encode_data(1, b"evil" * 200), client)
                    raw, _ = await asyncio.wait_for(loop.sock_recvfrom(other, 100), 2)
                    self.rogue_got.append(decode(raw))
            block = 1
            for off in range(0, len(data) + 1, blksize):
                chunk = data[off:off + blksize]
                wire = block & 0xFFFF
                lose = wire in self.drop
                if lose:
                    self.drop.discard(wire)
                    self.sent_data.append(wire)     # "sent", lost on the way
                await self._xchg(sock, encode_data(wire, chunk), client, wire, lose_first=lose)
                self.sent_data.append(wire)
                block += 1
                if len(chunk) < blksize:
                    break

    def close(self):
        for t in self.tasks:
            t.cancel()
        self.listen.close()


async def _fake_get(server, name, **kw):
    task = asyncio.create_task(server.run())
    try:
        with _udp() as s:
            return await asyncio.wait_for(
                tftp_get(s, "127.0.0.1", name, port=server.port, timeout=kw.pop("timeout", 0.2),
                         **kw), 30)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        server.close()


def test_fake_server_honours_options():
    data = os.urandom(5000)
    srv = FakeServer({"f": data})
    assert asyncio.run(_fake_get(srv, "f", blksize=1000)) == data
    assert srv.requests[0].options["blksize"] == "1000"
    assert len(srv.sent_data) == 6


def test_server_ignoring_options_falls_back_to_rfc1350():
    data = os.urandom(512 * 4 + 7)
    srv = FakeServer({"f": data}, options="ignore")
    assert asyncio.run(_fake_get(srv, "f", blksize=1428)) == data
    assert srv.sent_data == [1, 2, 3, 4, 5]


def test_error_to_options_retries_without_options():
    data = os.urandom(1024)     # an exact multiple of 512: ends with an empty block
    srv = FakeServer({"f": data}, options="error")
    assert asyncio.run(_fake_get(srv, "f")) == data
    assert [bool(r.options) for r in srv.requests] == [True, False]
    assert srv.sent_data == [1, 2, 3]


@pytest.mark.parametrize("lost", [1, 3])
def test_lost_data_is_recovered_by_client_retransmission(lost):
    data = os.urandom(5000)
    srv = FakeServer({"f": data}, drop={lost}, timeout=5)   # the server itself waits 5 s
    t = time.monotonic()
    assert asyncio.run(_fake_get(srv, "f", blksize=1428, timeout=0.1)) == data
    assert time.monotonic() - t < 3
    assert srv.sent_data.count(lost) == 2 and srv.client_retransmits >= 1


def test_lost_first_data_without_oack_retransmits_rrq():
    """No OACK and DATA 1 lost: the client's RRQ retransmission starts a second server
    session (a new TID), and the transfer completes from it."""
    data = os.urandom(700)
    srv = FakeServer({"f": data}, options="ignore", drop={1}, timeout=5)
    t = time.monotonic()
    assert asyncio.run(_fake_get(srv, "f", timeout=0.1)) == data
    assert time.monotonic() - t < 3
    assert len(srv.requests) == 2


def test_rogue_tid_gets_error_5():
    data = os.urandom(2000)
    srv = FakeServer({"f": data}, rogue=True)
    assert asyncio.run(_fake_get(srv, "f")) == data
    assert isinstance(srv.rogue_got[0], Error) and srv.rogue_got[0].code == 5


def test_missing_file_from_fake_server():
    srv = FakeServer({})
    with pytest.raises(TftpError, match="server error 1: File not found"):
        asyncio.run(_fake_get(srv, "nope"))


def test_timeout_when_nobody_answers():
    async def main():
        with _udp() as s, _udp() as dead:   # a bound port that never answers
            t = time.monotonic()
            with pytest.raises(TftpError, match="timeout"):
                await tftp_get(s, "127.0.0.1", "f", port=dead.getsockname()[1],
                               timeout=0.05, retries=3)
            return time.monotonic() - t
    assert 0.15 < asyncio.run(main()) < 2


def test_cancel_leaves_socket_usable():
    async def main():
        with _udp() as s, _udp() as dead:
            task = asyncio.create_task(tftp_get(s, "127.0.0.1", "f", port=dead.getsockname()[1]))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            data = os.urandom(600)
            srv = FakeServer({"f": data})
            run = asyncio.create_task(srv.run())
            try:
                assert await tftp_get(s, "127.0.0.1", "f", port=srv.port, timeout=0.2) == data
            finally:
                run.cancel()
                srv.close()
    asyncio.run(main())
