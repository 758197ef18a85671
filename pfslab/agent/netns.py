"""Open sockets inside other network namespaces, from one process and one thread.

A socket belongs to the network namespace in which it was *created*; bind, connect, send and
receive then work there whatever namespace the calling thread is in later. So hosting many
phones in one process only needs ``socket()`` to run inside each phone's namespace:
:func:`socket_in` enters the namespace with ``setns(2)``, creates the socket, and always goes
back to where the thread was (in a ``finally``). No fork, no thread, a handful of syscalls.

``netns`` arguments accept:

- ``None``: the current namespace (no ``setns`` at all);
- a path to a namespace file, e.g. ``/proc/<pid>/ns/net`` (a Mininet host's shell) or
  ``/run/netns/<name>``;
- a bare name without ``/``, taken as ``ip netns``'s ``/run/netns/<name>``.

``setns`` acts on the calling thread only, so threads never disturb each other. Entering a
namespace needs root (CAP_SYS_ADMIN); failures raise :class:`pfslab.errors.UserError`.

The helpers return non-blocking sockets ready for asyncio (``loop.sock_*``,
``loop.add_reader``, ``asyncio.open_connection(sock=...)``, ``asyncio.start_server(sock=...)``).
"""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import ipaddress
import os
import socket
import threading

from pfslab.errors import UserError

__all__ = [
    "socket_in", "udp_socket", "udp_broadcast_socket", "listen_tcp", "connect_tcp",
    "current_netns_id", "netns_path",
]

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

_lock = threading.Lock()
_libc = None
_orig_fd: int | None = None        # fd of the namespace the process started in, kept open
_orig_id: tuple[int, int] | None = None


def _setns_raw(fd: int) -> None:
    """setns(fd, CLONE_NEWNET) for the calling thread; raises OSError on failure."""
    if hasattr(os, "setns"):  # Python >= 3.12
        os.setns(fd, CLONE_NEWNET)
        return
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
        _libc.setns.restype = ctypes.c_int
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _original() -> tuple[int, tuple[int, int]]:
    """The fd and (dev, inode) of the process's original network namespace (opened once)."""
    global _orig_fd, _orig_id
    if _orig_fd is None:
        with _lock:
            if _orig_fd is None:
                fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                st = os.fstat(fd)
                _orig_id = (st.st_dev, st.st_ino)
                _orig_fd = fd
    return _orig_fd, _orig_id  # type: ignore[return-value]


def _thread_ns_id() -> tuple[int, int]:
    st = os.stat("/proc/thread-self/ns/net")
    return (st.st_dev, st.st_ino)


def current_netns_id() -> tuple[int, int]:
    """(st_dev, st_ino) of the calling thread's network namespace (for tests and logs)."""
    return _thread_ns_id()


def netns_path(netns: str | os.PathLike) -> str:
    """The namespace file for ``netns`` (a path, or a bare ``ip netns`` name)."""
    p = os.fspath(netns)
    if "/" not in p:
        return os.path.join(NETNS_RUN_DIR, p)
    return p


def _open_target(netns: str | os.PathLike) -> tuple[int, str]:
    path = netns_path(netns)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UserError(
            f"no such network namespace: {path} (has its host/process stopped, "
            f"or was the namespace removed?)") from None
    except PermissionError:
        raise UserError(
            f"cannot open network namespace {path}: permission denied "
            f"(entering lab namespaces needs root: run with sudo)") from None
    except OSError as e:
        raise UserError(f"cannot open network namespace {path}: {e.strerror}") from None
    return fd, path


def socket_in(netns: str | os.PathLike | None, family: int = socket.AF_INET,
              type: int = socket.SOCK_DGRAM, proto: int = 0) -> socket.socket:
    """Create ``socket.socket(family, type, proto)`` inside network namespace ``netns``.

    The calling thread is back in the namespace it was in before, whatever happens. The socket
    is returned as ``socket.socket`` makes it (blocking); the helpers below make it
    non-blocking.
    """
    if netns is None:
        return socket.socket(family, type, proto)
    target_fd, path = _open_target(netns)
    try:
        st = os.fstat(target_fd)
        here = _thread_ns_id()
        if (st.st_dev, st.st_ino) == here:       # already there: nothing to switch
            return socket.socket(family, type, proto)
        orig_fd, orig_id = _original()
        # Go back to where this thread actually was (normally the process's original ns).
        back_fd = orig_fd if here == orig_id else os.open(
            "/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                _setns_raw(target_fd)
            except OSError as e:
                if e.errno == errno.EPERM:
                    raise UserError(
                        f"cannot enter network namespace {path}: operation not permitted "
                        f"(needs root / CAP_SYS_ADMIN: run with sudo)") from None
                if e.errno == errno.EINVAL:
                    raise UserError(
                        f"cannot enter {path}: not a network namespace file") from None
                raise UserError(f"cannot enter network namespace {path}: {e.strerror}") from None
            try:
                return socket.socket(family, type, proto)
            finally:
                try:
                    _setns_raw(back_fd)
                except OSError as e:  # pragma: no cover - would need the kernel to refuse
                    # The thread is stranded in the wrong namespace: nothing made here after
                    # this point could be trusted, so fail loudly rather than carry on.
                    raise RuntimeError(
                        f"pfslab: could not return to the original network namespace after "
                        f"entering {path}: {e}") from e
        finally:
            if back_fd != orig_fd:
                os.close(back_fd)
    finally:
        os.close(target_fd)


def _family_of(ip: str) -> int:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    except ValueError:
        raise UserError(f"not an IP address: {ip!r}") from None


def _prepared(sock: socket.socket, fn) -> socket.socket:
    """Run ``fn(sock)``; close the socket if it fails; return it non-blocking."""
    try:
        fn(sock)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def udp_socket(netns: str | os.PathLike | None, ip: str = "0.0.0.0",
               port: int = 0) -> socket.socket:
    """A non-blocking UDP socket in ``netns`` bound to ``ip:port`` (port 0: any), e.g. for TFTP."""
    return _prepared(socket_in(netns, _family_of(ip), socket.SOCK_DGRAM),
                     lambda s: s.bind((ip, port)))


def udp_broadcast_socket(netns: str | os.PathLike | None, port: int) -> socket.socket:
    """A non-blocking UDP socket in ``netns``: SO_REUSEADDR, SO_BROADCAST, bound 0.0.0.0:port.

    It receives the subnet's broadcasts to ``port`` and may send to broadcast addresses.
    """
    def setup(s: socket.socket) -> None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.bind(("0.0.0.0", port))
    return _prepared(socket_in(netns, socket.AF_INET, socket.SOCK_DGRAM), setup)


def listen_tcp(netns: str | os.PathLike | None, ip: str, port: int,
               backlog: int = 128) -> socket.socket:
    """A non-blocking listening TCP socket in ``netns`` on ``ip:port`` (SO_REUSEADDR).

    Serve it with ``asyncio.start_server(handler, sock=sock)``.
    """
    def setup(s: socket.socket) -> None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((ip, port))
        s.listen(backlog)
    return _prepared(socket_in(netns, _family_of(ip), socket.SOCK_STREAM), setup)


async def connect_tcp(netns: str | os.PathLike | None, ip: str, port: int, *,
                      timeout: float | None = None,
                      source: tuple[str, int] | None = None) -> socket.socket:
    """Connect a TCP socket made in ``netns`` to ``ip:port``; returns it connected, non-blocking.

    A coroutine, because connecting takes a round trip: ``sock = await connect_tcp(...)``,
    then ``asyncio.open_connection(sock=sock)``. Raises ``OSError`` (e.g.
    ``ConnectionRefusedError``) or ``TimeoutError`` as ``loop.sock_connect`` does; the socket
    is closed then.
    """
    sock = socket_in(netns, _family_of(ip), socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if source is not None:
            sock.bind(source)
        loop = asyncio.get_running_loop()
        if timeout is None:
            await loop.sock_connect(sock, (ip, port))
        else:
            await asyncio.wait_for(loop.sock_connect(sock, (ip, port)), timeout)
    except BaseException:
        sock.close()
        raise
    return sock
