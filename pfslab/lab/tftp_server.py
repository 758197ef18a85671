"""The HQ TFTP server: a real `in.tftpd` (tftpd-hpa) in the HQ host's namespace.

Logging. in.tftpd logs only through syslog(3) (`-L` keeps it in the foreground but does not
send the log to stderr), and with `-v` it logs one line per request:
`RRQ from <client ip> filename <file>` (plus NAKs and errors). Machines here have no syslog
daemon and no /dev/log, and a run must not touch the machine's /dev/log anyway. So:

* the lab binds its own syslog socket, a Unix datagram socket at <run dir>/dev/log, and a
  thread in the lab process writes each message to `tftpd.log` in the run's output with a
  microsecond wall-clock timestamp: `2025-01-01T12:00:00.123456 in.tftpd[42]: RRQ from
  10.1.1.10 filename SEP025046010000.cnf.xml`;
* in.tftpd runs in a private mount namespace (`unshare --mount --propagation private`) where
  that directory is bind-mounted over /dev (with /dev/null bound in), so its syslog() reaches
  our socket. Nothing outside that one process sees the mount.

`parse_log()` turns the log into records: which client fetched which file, and when.
"""
from __future__ import annotations

import datetime
import os
import re
import shlex
import signal
import socket
import subprocess
import threading
import time

from pfslab.errors import UserError

from .nsutil import die_with_parent, ns_argv, require_binaries, udp_port_taken

_SYSLOG_HDR = re.compile(rb"^<(\d+)>(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d )?")
_RRQ = re.compile(r"(RRQ|WRQ) from (\S+) filename (.+?)(?: remapped to .*)?$")
_NAK = re.compile(r"sending NAK \((\d+), ([^)]*)\) to (\S+)")


class SyslogReceiver(threading.Thread):
    """A /dev/log-style Unix datagram socket; each message becomes one line in `log_path`."""

    def __init__(self, sock_path: str, log_path: str):
        super().__init__(name="tftpd-syslog", daemon=True)
        self.sock_path, self.log_path = sock_path, log_path
        try:
            os.unlink(sock_path)
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(sock_path)
        os.chmod(sock_path, 0o666)
        self.sock.settimeout(0.2)
        self.out = open(log_path, "a", buffering=1)
        self.stopping = threading.Event()
        self.count = 0

    def run(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                if self.stopping.is_set():
                    break
                continue
            except OSError:
                break
            self._write(data)

    def _write(self, data: bytes):
        now = datetime.datetime.now().isoformat(timespec="microseconds")
        data = _SYSLOG_HDR.sub(b"", data.rstrip(b"\n\0"))
        self.out.write(f"{now} {data.decode(errors='replace')}\n")
        self.count += 1

    def stop(self):
        # drain whatever is queued, then close
        self.stopping.set()
        self.join(2.0)
        self.sock.setblocking(False)
        while True:
            try:
                self._write(self.sock.recv(65536))
            except OSError:
                break
        self.sock.close()
        self.out.close()
        try:
            os.unlink(self.sock_path)
        except FileNotFoundError:
            pass


def parse_log(path: str) -> list[dict]:
    """tftpd.log -> [{"time", "event": "RRQ"|"WRQ"|"NAK", "client", "file"/"error"}, ...]."""
    out = []
    try:
        f = open(path)
    except FileNotFoundError:
        return out
    with f:
        for line in f:
            ts, _, msg = line.rstrip("\n").partition(" ")
            m = _RRQ.search(msg)
            if m:
                out.append({"time": ts, "event": m.group(1), "client": m.group(2),
                            "file": m.group(3).strip()})
                continue
            m = _NAK.search(msg)
            if m:
                out.append({"time": ts, "event": "NAK", "client": m.group(3),
                            "code": int(m.group(1)), "error": m.group(2)})
    return out


class TftpServer:
    """in.tftpd -L (foreground) serving `root` from the HQ host's namespace."""

    def __init__(self, hq_pid: int, root: str, log_path: str, run_dir: str, address: str,
                 extra_args=(), record=None):
        self.bins = require_binaries("in.tftpd", "nsenter", "unshare", "mount")
        self.hq_pid, self.root, self.log_path = hq_pid, os.path.abspath(root), log_path
        self.run_dir, self.address = run_dir, address
        self.extra_args = list(extra_args)
        self.record = record
        self.proc: subprocess.Popen | None = None
        self.syslog: SyslogReceiver | None = None
        os.makedirs(self.root, exist_ok=True)
        os.chmod(self.root, 0o755)

    def start(self, timeout: float = 10.0) -> None:
        devdir = os.path.join(self.run_dir, "dev")
        os.makedirs(devdir, exist_ok=True)
        open(os.path.join(devdir, "null"), "a").close()
        self.syslog = SyslogReceiver(os.path.join(devdir, "log"), self.log_path)
        self.syslog.start()
        os.makedirs(self.root, exist_ok=True)
        os.chmod(self.root, 0o755)
        tftpd = [self.bins["in.tftpd"], "--foreground", "--ipv4", "-v", "-v", "-v",
                 "--address", f"{self.address}:69", "--secure", self.root, *self.extra_args]
        d = shlex.quote(devdir)
        # sh stays as a small supervisor: in.tftpd forks a child per transfer, and a fork
        # drops PR_SET_PDEATHSIG, so when the lab dies (SIGTERM from die_with_parent) sh
        # kills its whole process group, transfer children included
        script = (f"trap 'kill -KILL 0' TERM INT HUP; "
                  f"mount --bind /dev/null {d}/null && mount --rbind {d} /dev && "
                  f"{{ {' '.join(shlex.quote(a) for a in tftpd)} & wait; }}")
        argv = ns_argv(self.hq_pid, [self.bins["unshare"], "--mount", "--propagation",
                                     "private", "sh", "-c", script])
        errpath = self.log_path + ".stderr"
        with open(errpath, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err,
                                         stderr=err, start_new_session=True,
                                         preexec_fn=die_with_parent(signal.SIGTERM))
        if self.record:
            self.record.add_pid(self.proc.pid, "in.tftpd", group=True)
        # ready when its port is taken in the HQ namespace
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self._port_taken():
                return
            time.sleep(0.05)
        msg = ""
        try:
            msg = open(self.log_path).read().strip().splitlines()[-1]
        except (OSError, IndexError):
            pass
        self.stop()
        raise UserError(f"in.tftpd did not start in the HQ host{': ' + msg if msg else ''}")

    def _port_taken(self) -> bool:
        return udp_port_taken(self.hq_pid, self.address, 69)

    def add_files(self, files: dict[str, bytes]) -> None:
        """Write files into the served directory (world-readable: in.tftpd insists)."""
        for name, data in files.items():
            if "/" in name or name.startswith("."):
                raise UserError(f"bad TFTP file name {name!r}")
            path = os.path.join(self.root, name)
            with open(path, "wb") as f:
                f.write(data)
            os.chmod(path, 0o644)

    def requests(self) -> list[dict]:
        return parse_log(self.log_path)

    def stop(self) -> None:
        if self.proc:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGTERM)  # with its per-transfer children
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(3)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
            try:  # transfer children may outlive the parent in the same group
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if self.record:
                self.record.drop_pid(self.proc.pid)
            self.proc = None
        if self.syslog:
            time.sleep(0.05)
            self.syslog.stop()
            self.syslog = None
