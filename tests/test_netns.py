"""Sockets in other network namespaces from one process (pfslab.agent.netns).

The lab tests make two throwaway namespaces joined by a veth pair (names with a unique
prefix), and remove exactly those afterwards.
"""
import asyncio
import os
import secrets
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from pfslab.agent import netns as nsmod
from pfslab.agent.netns import (
    connect_tcp, current_netns_id, listen_tcp, socket_in, udp_broadcast_socket, udp_socket,
)
from pfslab.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def _self_ns():
    st = os.stat("/proc/self/ns/net")
    return (st.st_dev, st.st_ino)


def _wait_up(*ns_devs, limit=5.0):
    """Wait until each veth end is operationally up: until then the kernel drops what is sent
    (the carrier comes up asynchronously, in the link watch)."""
    deadline = time.monotonic() + limit
    for ns, dev in ns_devs:
        while "state UP" not in _ip("-n", ns, "link", "show", "dev", dev).stdout:
            if time.monotonic() > deadline:
                raise AssertionError(f"{dev} in {ns} did not come up")
            time.sleep(0.02)


@pytest.fixture
def two_namespaces():
    """Namespaces A (10.231.7.1/24) and B (10.231.7.2/24) on a veth pair; yields their names.

    Also yields a process (`sleep`) living in B, so /proc/<pid>/ns/net paths are tested too.
    """
    tag = secrets.token_hex(3)
    a, b = f"pfst{tag}a", f"pfst{tag}b"
    va, vb = f"pfv{tag}a", f"pfv{tag}b"
    made = []
    sleeper = None
    try:
        for ns in (a, b):
            _ip("netns", "add", ns)
            made.append(ns)
        _ip("link", "add", va, "netns", a, "type", "veth", "peer", "name", vb, "netns", b)
        for ns, dev, addr in ((a, va, "10.231.7.1/24"), (b, vb, "10.231.7.2/24")):
            _ip("-n", ns, "addr", "add", addr, "brd", "+", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        _wait_up((a, va), (b, vb))
        sleeper = subprocess.Popen(["ip", "netns", "exec", b, "sleep", "300"])
        # Until `ip netns exec` has called setns, /proc/<pid>/ns/net is still our namespace.
        want = os.stat(f"/run/netns/{b}").st_ino
        deadline = time.monotonic() + 5
        while os.stat(f"/proc/{sleeper.pid}/ns/net").st_ino != want:
            assert time.monotonic() < deadline, "ip netns exec did not enter the namespace"
            time.sleep(0.01)
        yield a, b, sleeper.pid
    finally:
        if sleeper is not None:
            sleeper.kill()          # by PID: only the process started here
            sleeper.wait()
        if made:
            _ip("-n", made[0], "link", "del", va, check=False)   # removes the peer too
        for ns in made:
            _ip("netns", "del", ns, check=False)


# -- no root needed ---------------------------------------------------------------------------

def test_current_namespace_needs_no_setns():
    before = _self_ns()
    with socket_in(None, socket.AF_INET, socket.SOCK_DGRAM) as s:
        assert s.type == socket.SOCK_DGRAM
    with udp_socket(None, "127.0.0.1") as s:
        assert not s.getblocking() and s.getsockname()[0] == "127.0.0.1"
    assert _self_ns() == before == current_netns_id()


def test_own_namespace_path_takes_the_fast_path():
    with socket_in("/proc/self/ns/net") as s:
        assert s.family == socket.AF_INET


def test_missing_namespace_is_a_user_error():
    with pytest.raises(UserError, match="no such network namespace"):
        socket_in("/proc/999999999/ns/net")
    with pytest.raises(UserError, match="no such network namespace: /run/netns/pfst-none"):
        socket_in("pfst-none")


def test_not_a_namespace_file_is_a_user_error():
    if os.geteuid() != 0:
        pytest.skip("without root, setns fails with EPERM first")
    with pytest.raises(UserError, match="not a network namespace"):
        socket_in("/proc/self/ns/uts")


def test_bad_ip_is_a_user_error():
    with pytest.raises(UserError, match="not an IP address"):
        listen_tcp(None, "not-an-ip", 0)


# -- lab: root and namespaces -----------------------------------------------------------------

@pytest.mark.lab
def test_broadcast_and_tcp_across_namespaces(two_namespaces):
    a, b, pid_in_b = two_namespaces
    before = _self_ns()
    port = 4051

    async def recv_from(sock, ip):
        """The next datagram from ip (a sender also hears its own broadcasts: skip those)."""
        loop = asyncio.get_running_loop()
        while True:
            data, src = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), 5)
            if src[0] == ip:
                return data

    async def main():
        loop = asyncio.get_running_loop()
        sa = udp_broadcast_socket(a, port)
        sb = udp_broadcast_socket(f"/proc/{pid_in_b}/ns/net", port)
        try:
            assert not sa.getblocking() and not sb.getblocking()
            assert sa.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST)
            assert sa.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
            # A and B both have 10.231.7.0/24; the host namespace does not.
            await loop.sock_sendto(sa, b"hello from A", ("10.231.7.255", port))
            assert await recv_from(sb, "10.231.7.1") == b"hello from A"
            # (255.255.255.255 would need a route: these namespaces have no default route.)
            await loop.sock_sendto(sb, b"and B", ("10.231.7.255", port))
            assert await recv_from(sa, "10.231.7.2") == b"and B"
        finally:
            sa.close()
            sb.close()

        lsock = listen_tcp(b, "10.231.7.2", 4051)
        got = loop.create_future()

        async def handle(reader, writer):
            got.set_result(await reader.readexactly(5))
            writer.write(b"pong")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, sock=lsock)
        try:
            csock = await connect_tcp(a, "10.231.7.2", 4051, timeout=5)
            assert csock.getsockname()[0] == "10.231.7.1"
            reader, writer = await asyncio.open_connection(sock=csock)
            writer.write(b"ping!")
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 5) == b"pong"
            assert await got == b"ping!"
            writer.close()
        finally:
            server.close()
            await server.wait_closed()

        # Nothing listens on that port in B: refused, and the socket is not leaked.
        with pytest.raises(ConnectionRefusedError):
            await connect_tcp(a, "10.231.7.2", 4052, timeout=5)

    asyncio.run(main())
    assert _self_ns() == before == current_netns_id()


@pytest.mark.lab
def test_socket_is_really_in_the_namespace(two_namespaces):
    a, b, _ = two_namespaces
    before = _self_ns()
    with udp_socket(a, "10.231.7.1", 0) as s:            # only A has this address
        assert s.getsockname()[0] == "10.231.7.1"
    with pytest.raises(OSError):
        with udp_socket(b, "10.231.7.1", 0):             # B does not
            pass
    assert _self_ns() == before


@pytest.mark.lab
def test_failure_inside_namespace_still_returns(two_namespaces):
    a, _, _ = two_namespaces
    before = _self_ns()
    with pytest.raises(OSError):
        socket_in(a, 12345, socket.SOCK_DGRAM)          # no such address family
    assert _self_ns() == before == current_netns_id()


@pytest.mark.lab
def test_many_sockets_are_fast(two_namespaces):
    a, b, _ = two_namespaces
    t = time.perf_counter()
    socks = [udp_socket(a if i % 2 else b) for i in range(1000)]
    elapsed = time.perf_counter() - t
    for s in socks:
        s.close()
    assert elapsed < 2, elapsed
    assert _self_ns() == current_netns_id()


@pytest.mark.lab
def test_threads_do_not_disturb_each_other(two_namespaces):
    from concurrent.futures import ThreadPoolExecutor
    a, b, _ = two_namespaces

    def work(i):
        ns, ip = (a, "10.231.7.1") if i % 2 else (b, "10.231.7.2")
        with udp_socket(ns, ip, 0) as s:
            return s.getsockname()[0] == ip and current_netns_id() == nsmod._original()[1]
    with ThreadPoolExecutor(8) as ex:
        assert all(ex.map(work, range(400)))


@pytest.mark.lab
def test_not_root_is_a_user_error(two_namespaces):
    a, _, _ = two_namespaces
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {REPO!r})
        from pfslab.agent.netns import socket_in
        from pfslab.errors import UserError
        try:
            socket_in({a!r})
        except UserError as e:
            print("USERERROR", e)
    """)
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                       cwd="/")
    assert "USERERROR" in r.stdout, (r.stdout, r.stderr)
    assert "root" in r.stdout
