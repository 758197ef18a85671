"""WAN emulation between the HQ router and the branch router.

* Bandwidth: a TBF qdisc (pyroute2) on both routers' WAN egress, so each direction gets the
  configured rate.
* Delay and loss, one way, in each direction:
  - `netem` (pyroute2) on both WAN egresses when the kernel has sch_netem (TBF as its child);
  - otherwise the userspace NFQUEUE delay line (pfslab.lab.delayline) in the HQ router's
    namespace: iptables FORWARD rules for the WAN interface send both directions to it.
  `Wan.emulation` says which was used: "netem", "nfqueue", or "none" (no delay, no loss).
"""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import select
import subprocess
import sys

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pfslab.errors import UserError
from pfslab.results import wan_dict
from pfslab.sim.wan import tbf_params as _tbf_params   # one formula: the sim models this TBF

from .nsutil import die_with_parent, iproute_in, netns_path, ns_argv, require_binaries
from .units import parse_bandwidth, parse_delay, parse_loss

QUEUE_NUM = 0  # NFQUEUE numbers are per network namespace: no clash between runs


@dataclasses.dataclass
class WanSettings:
    bw_bps: int | None = 384_000
    delay_s: float = 0.075
    loss: float = 0.0
    queue_s: float = 1.0  # TBF queue: how much traffic (in seconds at the rate) may wait

    @classmethod
    def parse(cls, bw="384kbit", delay="75ms", loss="0%", queue_s: float = 1.0) -> "WanSettings":
        return cls(parse_bandwidth(bw), parse_delay(delay), parse_loss(loss), float(queue_s))

    def as_dict(self) -> dict:
        return wan_dict(self.bw_bps, self.delay_s, self.loss)




def netem_available(ipr: IPRoute, index: int) -> bool:
    """Probe: can a netem qdisc be made here? (Leaves the interface as it was.)"""
    try:
        ipr.tc("add", "netem", index=index, handle="1:", delay=0)
    except NetlinkError as e:
        if e.code in (errno.ENOENT, errno.EINVAL, errno.EOPNOTSUPP):
            return False
        raise
    ipr.tc("del", "netem", index=index, handle="1:")
    return True


class Wan:
    """Applies and removes one run's WAN emulation.

    hq_pid / branch_pid: PIDs of the routers' Mininet shells (their namespaces);
    hq_if / branch_if: the WAN interface names inside them.
    """

    def __init__(self, settings: WanSettings, hq_pid: int, hq_if: str, branch_pid: int,
                 branch_if: str, seed: int = 1, emulation: str = "auto", record=None,
                 log_dir: str | None = None):
        if emulation not in ("auto", "netem", "nfqueue"):
            raise UserError(f"bad WAN emulation {emulation!r}: auto, netem or nfqueue")
        self.s = settings
        self.ends = [(hq_pid, hq_if), (branch_pid, branch_if)]
        self.seed = seed
        self.want = emulation
        self.record = record
        self.log_dir = log_dir
        self.emulation = "none"
        self.proc: subprocess.Popen | None = None
        self.rules: list[list[str]] = []
        self.stats: dict = {}

    # --- setup ---
    def start(self) -> str:
        need_delay = self.s.delay_s > 0 or self.s.loss > 0
        use_netem = False
        if need_delay and self.want in ("auto", "netem"):
            pid, ifname = self.ends[0]
            with iproute_in(netns_path(pid)) as ipr:
                use_netem = netem_available(ipr, ipr.link_lookup(ifname=ifname)[0])
            if not use_netem and self.want == "netem":
                raise UserError("this kernel has no sch_netem (netem): use --wan-emulation auto "
                                "or nfqueue")
        for pid, ifname in self.ends:
            with iproute_in(netns_path(pid)) as ipr:
                index = ipr.link_lookup(ifname=ifname)[0]
                parent = None
                if use_netem:
                    ipr.tc("add", "netem", index=index, handle="1:",
                           delay=int(self.s.delay_s * 1e6), loss=self.s.loss * 100,
                           limit=100000)
                    parent = 0x10000
                if self.s.bw_bps:
                    kw = _tbf_params(self.s.bw_bps, self.s.queue_s)
                    if parent is None:
                        ipr.tc("add", "tbf", index=index, handle="1:", **kw)
                    else:
                        ipr.tc("add", "tbf", index=index, handle="10:", parent=parent, **kw)
        if use_netem:
            self.emulation = "netem"
        elif need_delay:
            self._start_delayline()
            self.emulation = "nfqueue"
        return self.emulation

    def _start_delayline(self) -> None:
        require_binaries("iptables", "nsenter")
        pid, ifname = self.ends[0]
        argv = ns_argv(pid, [sys.executable, "-m", "pfslab.lab.delayline", "--queue",
                             str(QUEUE_NUM), "--delay", repr(self.s.delay_s), "--loss",
                             repr(self.s.loss), "--seed", str(self.seed)])
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        err = open(os.path.join(self.log_dir, "delayline.err"), "wb") if self.log_dir \
            else subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env=env,
                                     start_new_session=True, preexec_fn=die_with_parent())
        if err is not subprocess.DEVNULL:
            err.close()
        if self.record:
            self.record.add_pid(self.proc.pid, "delayline", group=True)
        poller = select.poll()  # not select(): a big lab has fds beyond FD_SETSIZE
        poller.register(self.proc.stdout, select.POLLIN)
        ready = poller.poll(15000)
        line = self.proc.stdout.readline().decode(errors="replace").strip() if ready else ""
        if line != "ready":
            self.proc.kill()
            self.proc.wait()
            raise UserError("the NFQUEUE delay line did not start (is netfilterqueue installed "
                            "and nfnetlink_queue available?)" +
                            (f"; see {self.log_dir}/delayline.err" if self.log_dir else ""))
        for direction in ("-i", "-o"):
            rule = ["FORWARD", direction, ifname, "-j", "NFQUEUE", "--queue-num",
                    str(QUEUE_NUM)]
            self._iptables(pid, ["-I", *rule])
            self.rules.append(rule)

    @staticmethod
    def _iptables(pid: int, args: list[str]) -> None:
        r = subprocess.run(ns_argv(pid, ["iptables", "-w", *args]), capture_output=True)
        if r.returncode:
            raise UserError(f"iptables {' '.join(args)} failed in the HQ router: "
                            f"{r.stderr.decode(errors='replace').strip()}")

    # --- teardown ---
    def stop(self) -> dict:
        """Remove the rules, then stop the delay line; returns its counters."""
        pid = self.ends[0][0]
        for rule in self.rules:
            try:
                self._iptables(pid, ["-D", *rule])
            except UserError:
                pass  # the namespace may already be gone
        self.rules = []
        if self.proc:
            if self.proc.poll() is None:
                self.proc.terminate()
            try:
                out, _ = self.proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, _ = self.proc.communicate()
            for line in out.decode(errors="replace").splitlines():
                if line.startswith("{"):
                    try:
                        self.stats = json.loads(line)
                    except ValueError:
                        pass
            if self.record:
                self.record.drop_pid(self.proc.pid)
            self.proc = None
        return self.stats

    def describe(self) -> dict:
        d = self.s.as_dict()
        d["emulation"] = self.emulation
        d["bandwidth_by"] = "tbf" if self.s.bw_bps else "none"
        if self.stats:
            d["delayline"] = self.stats
        return d
