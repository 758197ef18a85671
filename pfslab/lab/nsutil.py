"""Small helpers for namespaces, binaries and process identity (no output parsing)."""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket

from pyroute2 import netns as _netns

from pfslab.agent.netns import socket_in  # noqa: F401  (one implementation, re-exported)

from pfslab.errors import UserError

#: binary -> Debian package that provides it
BINARIES = {
    "mnexec": "mininet",
    "brctl": "bridge-utils",
    "tcpdump": "tcpdump",
    "in.tftpd": "tftpd-hpa",
    "iptables": "iptables",
    "nsenter": "util-linux",
    "unshare": "util-linux",
    "mount": "mount",
    "ip": "iproute2",
    "rsyslogd": "rsyslog",
}


def require_binaries(*names: str) -> dict[str, str]:
    """Full paths of the binaries, or UserError naming the Debian package to install."""
    found, missing = {}, []
    for name in names:
        path = shutil.which(name) or next(
            (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}", f"/usr/bin/{name}")
             if os.access(p, os.X_OK)), None)
        if path:
            found[name] = path
        else:
            missing.append(name)
    if missing:
        pkgs = sorted({BINARIES.get(n, n) for n in missing})
        raise UserError(f"missing {', '.join(missing)}: install the Debian package(s) "
                        f"{' '.join(pkgs)} (sudo apt-get install {' '.join(pkgs)})")
    return found


def require_root() -> None:
    if os.geteuid() != 0:
        raise UserError("the lab needs root (network namespaces, bridges, tc): run with sudo")


def netns_path(pid: int) -> str:
    return f"/proc/{pid}/ns/net"


def ns_argv(where: int | str, argv: list[str]) -> list[str]:
    """argv run inside a network namespace: process ``where``'s (a PID), or the namespace
    file ``where`` (e.g. a phone's /run/netns/<host>); nsenter execs: same PID."""
    path = where if isinstance(where, str) else netns_path(where)
    return [shutil.which("nsenter") or "nsenter", f"--net={path}", "--", *argv]


@contextlib.contextmanager
def in_netns(path: str):
    """Run the body with the *calling thread* in the network namespace at `path`.

    setns(CLONE_NEWNET) acts on one thread only, and sockets stay in the namespace where they
    were made, so this is how one process opens sockets in many lab namespaces.
    """
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _netns.setns(path, flags=0)
        try:
            yield
        finally:
            _netns.setns(back, flags=0)
    finally:
        os.close(back)


def udp_port_taken(pid: int, address: str, port: int) -> bool:
    """Whether a UDP ``address:port`` is bound in process ``pid``'s network namespace (a
    daemon started there is listening)."""
    with in_netns(netns_path(pid)):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((address, port))
        return False
    except OSError:
        return True
    finally:
        s.close()


def proc_starttime(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), to tell a PID from a reused one."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # the command name may contain spaces and parentheses: fields follow the last ')'
    rest = data[data.rindex(b")") + 2:].split()
    return int(rest[19])


def same_process(pid: int, starttime: int | None) -> bool:
    """Is `pid` alive and still the process that had `starttime`?"""
    now = proc_starttime(pid)
    return now is not None and (starttime is None or now == starttime)


@contextlib.contextmanager
def iproute_in(path: str | None):
    """An IPRoute whose netlink socket lives in the namespace at `path` (None: ours).

    Made with a thread-level setns (in_netns) rather than IPRoute(netns=...), which forks a
    helper process per socket; that fork is slow and can hang in a threaded lab process.
    """
    from pyroute2 import IPRoute
    if path is None:
        with IPRoute() as ipr:
            yield ipr
        return
    with in_netns(path):
        ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


_libc = ctypes.CDLL(None, use_errno=True)     # loaded now: never dlopen in a forked child
_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL):
    """A ``preexec_fn`` for Popen: the child gets ``sig`` when this process dies, even by
    SIGKILL (``PR_SET_PDEATHSIG``), so a killed lab leaves no process behind.

    The signal survives exec (nsenter, unshare and ``sh -c 'exec ...'`` keep the PID) but not
    fork: the child's own children are stopped by their process group (``pfslab clean``).
    The kernel ties it to the *thread* that forked: call Popen from a thread that lives as
    long as the run (the lab's main thread).
    """
    parent = os.getpid()

    def preexec() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:          # the parent died before prctl took effect
            os.kill(os.getpid(), sig)
    return preexec
