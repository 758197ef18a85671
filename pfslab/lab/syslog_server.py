"""The PFS log server at HQ: a real `rsyslogd` (Debian's rsyslog) in an HQ host's namespace,
listening on UDP 514, writing what the phones send into the run's ``pfs-syslog.log``.

It touches nothing of the machine's own syslog: its own config file, pid file and work
directory (all in the run's folder), only the UDP input (no imuxsock, no imklog: it never
opens /dev/log or the kernel log), and it runs in the HQ host's network namespace, so it
hears only the lab. It never looks names up (the lab has no DNS: each lookup would stall it
for seconds while messages wait). Each line of the file is::

    <time received, RFC 3339> <phone ip> <the phone's message after its <PRI>>

and a phone's message is ``<time> <phone name> <its DLoad line>`` (see
``pfslab.agent.syslog``), so the file can be lined up with each phone's own log.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

from pfslab.errors import UserError

from pfslab.dissect.syslogfile import parse_log  # noqa: F401  (the file's reader)

from .nsutil import die_with_parent, ns_argv, require_binaries, udp_port_taken

PORT = 514

CONFIG = """\
# pfslab's PFS log server (one lab run); see pfslab/lab/syslog_server.py
global(workDirectory="{work}" maxMessageSize="8k" net.enableDNS="off")
module(load="imudp")
template(name="pfs" type="string"
         string="%timegenerated:::date-rfc3339% %fromhost-ip% %rawmsg-after-pri%\\n")
ruleset(name="pfs") {{
  action(type="omfile" file="{log}" template="pfs" flushOnTXEnd="on" asyncWriting="off")
}}
input(type="imudp" address="{address}" port="{port}" ruleset="pfs")
"""


class SyslogServer:
    """``rsyslogd -n -f <run>/rsyslog/rsyslog.conf`` in the HQ host ``hq_pid``'s namespace."""

    def __init__(self, hq_pid: int, address: str, run_dir: str, log_path: str,
                 port: int = PORT, record=None):
        self.bins = require_binaries("rsyslogd")
        self.hq_pid, self.address, self.port = hq_pid, address, port
        self.dir = os.path.join(os.path.abspath(run_dir), "rsyslog")
        self.log_path = os.path.abspath(log_path)
        self.record = record
        self.proc: subprocess.Popen | None = None

    @property
    def target(self) -> str:
        """What each phone's ``<logServer>`` says."""
        return f"{self.address}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        work = os.path.join(self.dir, "work")
        os.makedirs(work, exist_ok=True)
        conf = os.path.join(self.dir, "rsyslog.conf")
        with open(conf, "w") as f:
            f.write(CONFIG.format(work=work, log=self.log_path, address=self.address,
                                  port=self.port))
        open(self.log_path, "a").close()
        argv = ns_argv(self.hq_pid, [self.bins["rsyslogd"], "-n", "-f", conf,
                                     "-i", os.path.join(self.dir, "rsyslogd.pid")])
        with open(os.path.join(self.dir, "rsyslogd.stderr"), "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err,
                                         stderr=err, start_new_session=True,
                                         preexec_fn=die_with_parent())
        if self.record:
            self.record.add_pid(self.proc.pid, "rsyslogd", group=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self._port_taken():
                return
            time.sleep(0.05)
        self.stop()
        raise UserError(f"rsyslogd did not start in the HQ host; see {self.dir}/rsyslogd.stderr")

    def _port_taken(self) -> bool:
        return udp_port_taken(self.hq_pid, self.address, self.port)

    def stop(self) -> None:
        """SIGTERM (rsyslogd flushes its file and exits), SIGKILL if it lingers."""
        if not self.proc:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(5)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.record:
            self.record.drop_pid(self.proc.pid)
        self.proc = None
