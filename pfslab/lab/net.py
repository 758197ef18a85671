"""`LabNet`: one lab run's network, from topology to teardown.

    settings = Settings(wan_bw="384kbit", wan_delay="75ms", wan_loss="0.5%")
    site = settings.site()                      # or Site.branch(2, 4)
    with LabNet(site, settings, out_dir="pcaps/x", tftp_files=site.files("pfs")) as net:
        net.phones                              # [LabPhone: a PhoneSpec + host, netns]
        ...                                     # run the agent (net.track(popen, "agent"))
        net.tftp_requests()                     # [{"client", "file", "time", "event"}, ...]

Entering builds the infrastructure of the topology (HQ, routers, bridges) as a Mininet net
(Linux bridges, no controller) and every phone as a light host (pfslab.lab.lighthost: a named
network namespace /run/netns/<host>, a veth to its bridge, no process), sets bridge sysctls,
turns IPv6 and TX checksum offload off on every lab interface, shapes the WAN (netem or the
NFQUEUE delay line), starts the captures, in.tftpd and the PFS log server (rsyslogd,
lab/syslog_server.py).
Leaving (normally, on an exception, on Ctrl-C or SIGTERM/SIGHUP) stops, in this order:
tracked processes (the agent), in.tftpd, rsyslogd, the delay line,
the captures (SIGINT: flushed last, after all traffic has stopped), the phones' namespaces,
the Mininet net, the capture dummies, then anything left that the run record names; finally
the record goes.

Every name starts with the run prefix; the run record (/run/pfslab/<run-id>.json) lists PIDs
and the phones' namespaces, so `pfslab clean` can finish the job if this process is killed
outright.
"""
from __future__ import annotations

import dataclasses
import datetime
import glob
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

from pfslab.errors import UserError
from pfslab.results import give_to_sudo_user
from pfslab.settings import Settings
from pfslab.site import PhoneSpec, Site

from . import clean, lighthost, records
from .capture import WAN_BUFFER_KIB, Captures, add_mirror, set_ipv6
from .nsutil import netns_path, require_binaries, require_root
from .offload import tx_offload_off
from .records import RunRecord, name_pattern, new_prefix
from .syslog_server import SyslogServer
from .tftp_server import TftpServer
from .arpproxy import proxy_arp
from .dilation import dilate_wan
from .wan import Wan, WanSettings

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOPO_DIR = os.path.join(REPO_ROOT, "topologies")
LAB_BINARIES = ("mnexec", "brctl", "tcpdump", "in.tftpd", "iptables", "nsenter", "unshare",
                "mount", "ip")


@dataclasses.dataclass(frozen=True)
class LabPhone(PhoneSpec):
    """A site's phone in this lab: plus its topology host name and network namespace."""
    host: str = ""
    netns: str = ""      # /run/netns/<host> (a light host: pfslab.lab.lighthost)

    def agent_entry(self) -> dict:
        """SPEC.json's phones[]: the PhoneSpec's fields plus the namespace."""
        d = dataclasses.asdict(self)
        del d["host"]
        return d


# ---------------------------------------------------------------- topologies
def _load_module(path: str):
    try:
        spec = importlib.util.spec_from_file_location(
            "pfslab_topo_" + os.path.basename(path).replace(".", "_"), path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    except FileNotFoundError:
        raise UserError(f"topology file {path} not found")
    except Exception as e:  # a broken file: say which and why, in one line
        raise UserError(f"topology file {path} is broken: {type(e).__name__}: {e}".splitlines()[0])
    topos = getattr(mod, "topos", None)
    if not isinstance(topos, dict) or not topos:
        raise UserError(f"topology file {path} has no `topos = {{name: TopoClass}}` dict")
    return topos


def builtin_topologies() -> dict[str, tuple[str, type]]:
    """name -> (file, class) for every topologies/*.py."""
    found = {}
    for path in sorted(glob.glob(os.path.join(TOPO_DIR, "*.py"))):
        try:
            topos = _load_module(path)
        except UserError:
            continue
        for name, cls in topos.items():
            found.setdefault(name, (path, cls))
    return found


def resolve_topology(topo: str) -> type:
    """'branch' (a name in topologies/), 'FILE.py' (its only or 'branch' topo) or 'FILE.py:NAME'."""
    path, _, name = topo.partition(":") if ".py" in topo else (None, None, None)
    if path is None and (os.path.sep in topo or os.path.exists(topo)):
        path, name = topo, ""
    if path is not None:
        topos = _load_module(path)
        if name:
            if name not in topos:
                raise UserError(f"topology file {path} has no topology {name!r} "
                                f"(it has: {', '.join(sorted(topos))})")
            return topos[name]
        if len(topos) == 1:
            return next(iter(topos.values()))
        if "branch" in topos:
            return topos["branch"]
        raise UserError(f"topology file {path} has several topologies: name one as "
                        f"{path}:NAME ({', '.join(sorted(topos))})")
    known = builtin_topologies()
    if topo not in known:
        raise UserError(f"unknown topology {topo!r}: use one of {', '.join(sorted(known))} "
                        "or a FILE.py[:NAME] with a `topos` dict")
    return known[topo][1]


def build_topology(topo, prefix: str, site: Site):
    """A Topo instance of this site with this run's prefix (validated: names, phones)."""
    cls = resolve_topology(topo) if isinstance(topo, str) else topo
    kwargs = {"site": site}
    try:
        t = cls(prefix=prefix, **kwargs)
    except TypeError as e:
        raise UserError(f"topology {getattr(cls, '__name__', cls)} does not take these "
                        f"parameters {sorted(kwargs)}: {e}")
    except ValueError as e:
        raise UserError(f"topology parameters: {e}")
    if not hasattr(t, "hosts_of") or not hasattr(t, "info"):
        raise UserError(f"topology {cls.__name__} lacks .hosts_of/.info "
                        "(derive it from topologies/pfs_branch.py's BranchTopo)")
    pat = name_pattern(prefix)
    bad = [n for n in t.nodes() if not pat.match(n)]
    if bad:
        raise UserError(f"topology {cls.__name__}: node names must start with the run prefix "
                        f"and an upper-case letter ({prefix}X...): {bad[:3]}")
    return t


def infrastructure(topo, light: set[str]):
    """The Topo without the ``light`` hosts and their links: what Mininet builds."""
    from mininet.topo import Topo
    infra = Topo()
    for n in topo.nodes():
        if n not in light:
            infra.g.add_node(n, **topo.nodeInfo(n))
    for n1, n2, key, info in topo.links(sort=True, withKeys=True, withInfo=True):
        if n1 not in light and n2 not in light:
            infra.g.add_edge(n1, n2, key, info)
    return infra


def _lab_cli():
    """Mininet's CLI, plus the light hosts as the first word of a command."""
    from mininet.cli import CLI

    class LabCLI(CLI):
        def __init__(self, mn, light, **kw):
            self.light = light          # before CLI.__init__, which runs the loop
            super().__init__(mn, **kw)

        def default(self, line):
            first, args, line = self.parseline(line)
            if first not in self.light:
                return super().default(line)
            words = [self.light[a].ip.split("/")[0] if a in self.light else
                     (self.mn[a].IP() or a) if a in self.mn else a for a in args.split(" ")]
            subprocess.call(["ip", "netns", "exec", first, "sh", "-c", " ".join(words)])
    return LabCLI


# ---------------------------------------------------------------- the net
class LabNet:
    """See the module docstring. Attributes once entered:

    run_id, prefix, out_dir, site, settings, phones (list[LabPhone], the site's order),
    hq (Mininet host), hq_ip, mn (the Mininet object), wan (Wan; .describe()), tftp
    (TftpServer), captures (label -> pcap path), tftp_log (path), info (the topology's plan),
    record (RunRecord), timings (set-up steps and teardown, seconds), light (host name ->
    LightHost: the phones, and any rogue host); after teardown, capture_checks (label ->
    Capture.check(): every frame once?).
    """

    def __init__(self, site: Site, settings: Settings | None = None, *,
                 out_dir: str | None = None, prefix: str | None = None,
                 run_id: str | None = None, capture: bool = True, tftp: bool = True,
                 tftp_files: dict | None = None, keep_tftp_root: bool = False,
                 syslog: bool = True, handle_signals: bool = True,
                 time_dilation: float = 1.0, log=None):
        # validate everything before touching the machine
        require_root()
        require_binaries(*LAB_BINARIES, *(("rsyslogd",) if syslog else ()))
        self.site = site
        self.settings = settings = settings or Settings()
        bw, delay, loss = settings.wan()
        self.time_dilation = float(time_dilation)    # pfslab.lab.dilation: WAN k times slower
        bw, delay = dilate_wan(bw, delay, self.time_dilation)
        self.wan_settings = WanSettings(bw, delay, loss, queue_s=self.time_dilation)
        self.prefix = prefix or new_prefix()
        self.topo = build_topology(settings.topo, self.prefix, site)
        self._phone_hosts = set(self.topo.hosts_of.values())
        self._light_plan = lighthost.hosts_from_topo(self.topo, self._phone_hosts)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.run_id = run_id or f"{stamp}-{self.prefix}"
        self.out_dir = os.path.abspath(out_dir or os.path.join(REPO_ROOT, "pcaps", self.run_id))
        self.capture_enabled = capture
        self.tftp_enabled = tftp
        self.tftp_files = tftp_files or {}
        self.keep_tftp_root = keep_tftp_root
        self.handle_signals = handle_signals
        self.log = log or (lambda msg: None)
        self.info = self.topo.info
        self.hq_ip = self.info["hq_ip"]
        self.run_dir = os.path.join(records.RECORD_DIR, f"{self.run_id}.d")
        self.tftp_root = os.path.join(self.out_dir, "tftproot")
        self.tftp_log = os.path.join(self.out_dir, "tftpd.log")
        self.syslog_enabled = syslog
        self.syslog: SyslogServer | None = None       # the PFS log server, beside in.tftpd
        self.phones: list[LabPhone] = []
        self.light: dict[str, lighthost.LightHost] = {}
        self.captures: dict[str, str] = {}
        self.mn = None
        self.hq = None
        self.record: RunRecord | None = None
        self.wan: Wan | None = None
        self.timings: dict[str, float] = {}     # bring-up step -> seconds
        self.teardown_steps: dict[str, float] = {}   # teardown step -> seconds
        self.tftp: TftpServer | None = None
        self._captures: Captures | None = None
        self._dummies: list[str] = []
        self._tracked: list[tuple[subprocess.Popen, str]] = []
        self._old_handlers: dict = {}
        self.capture_checks: dict[str, dict] = {}

    # ------------------------------------------------------------ public helpers
    def track(self, proc: subprocess.Popen, what: str, group: bool = False) -> None:
        """Record a process this run started (e.g. the agent); it is stopped first on exit."""
        self._tracked.append((proc, what))
        self.record.add_pid(proc.pid, what, group=group)

    def agent_phones(self) -> list[dict]:
        return [p.agent_entry() for p in self.phones]

    def tftp_requests(self) -> list[dict]:
        return self.tftp.requests() if self.tftp else []

    def phone_netns(self) -> dict[str, str]:
        """Phone name -> its network namespace file (/run/netns/<host>)."""
        return {p.name: p.netns for p in self.phones}

    def node_netns(self, name: str) -> str:
        """The namespace file of a topology node: a light host's, or a Mininet node's."""
        if name in self.light:
            return self.light[name].netns
        return netns_path(self.mn.get(name).pid)

    def bridge_ports(self, bridge: str) -> list[str]:
        """Every port of a topology bridge: Mininet's links' and the light hosts'."""
        return [i.name for i in self.mn.get(bridge).intfList() if i.name != "lo"] + [
            h.port for h in self.light.values() if h.bridge == bridge]

    def add_light_host(self, host: lighthost.LightHost) -> str:
        """One more light host on a topology bridge (e.g. a rogue), recorded and removed
        with the phones; its ARP is not proxied. Returns its namespace file."""
        self.record.set(netns=self.record.data.get("netns", []) + [host.name])
        self.record.add_names([host.port])
        self.light[host.name] = host
        lighthost.create([host])
        return host.netns

    def cli(self, stdin=None, script=None):
        """The Mininet CLI, its commands' output shown (the lab keeps Mininet's log quiet).
        The phones are light hosts, not Mininet nodes, but ``<phone host> <command>`` still
        runs the command in that phone's namespace (``ip netns exec``), other host names in
        it replaced by their IPs, as Mininet does; ``nodes`` and ``pingall`` see only the
        infrastructure."""
        from mininet.log import setLogLevel
        setLogLevel("output")
        first = next(iter(self.light), None)
        if first:
            print(f"The phones are network namespaces (`sh ip netns list`), e.g. "
                  f"`{first} ping -c1 {self.hq_ip}`.", flush=True)
        try:
            _lab_cli()(self.mn, self.light, **({"stdin": stdin} if stdin else {}),
                       script=script)
        finally:
            setLogLevel("warning")

    # ------------------------------------------------------------ setup
    def __enter__(self) -> "LabNet":
        os.makedirs(self.out_dir, exist_ok=True)
        self.record = RunRecord(self.run_id, self.prefix, self.out_dir)
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP):
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            self._setup()
        except BaseException:
            self._teardown()
            raise
        return self

    @staticmethod
    def _on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    def _step(self, name: str, t0: float) -> float:
        t = time.monotonic()
        self.timings[name.split(" ")[0]] = round(t - t0, 3)
        self.log(f"{name}: {t - t0:.1f}s")
        return t

    def _setup(self) -> None:
        # Mininet's host shells inherit our environment: put this interpreter's bin dir first,
        # so `pfslab phone one ...` works from the Mininet CLI (--cli)
        bindir = os.path.dirname(sys.executable)
        if bindir not in os.environ.get("PATH", "").split(os.pathsep):
            os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
        from mininet.log import setLogLevel
        from mininet.net import Mininet
        from mininet.node import Host  # noqa: F401  (mininet import check)
        from mininet.nodelib import LinuxBridge

        setLogLevel("warning")
        t = time.monotonic()
        # bridges: no netfilter on bridged frames, set before Mininet checks it (the sysctls
        # exist once br_netfilter loads; topologies/pfs_branch.py's LabBridge does the same)
        for table in ("arp", "ip", "ip6"):
            p = f"/proc/sys/net/bridge/bridge-nf-call-{table}tables"
            if os.path.exists(p):
                with open(p, "w") as f:
                    f.write("0")
        light = self._light_plan
        self.mn = Mininet(topo=infrastructure(self.topo, self._phone_hosts), switch=LinuxBridge,
                          controller=None, build=False, autoSetMacs=False,
                          autoStaticArp=False, waitConnected=False)
        self.mn.build()
        self.record.add_pids([(h.pid, f"mininet {h.name}") for h in self.mn.hosts])
        self.mn.start()
        t = self._step("build", t)

        # the phones: light hosts, named before they exist (a killed run is still cleaned)
        self.record.set(netns=[h.name for h in light])
        self.record.add_names([h.port for h in light])
        self.light.update((h.name, h) for h in light)
        lighthost.create(light)
        t = self._step("phones", t)

        root_names = []
        for sw in self.mn.switches:
            root_names.append(sw.name)
            root_names += [i.name for i in sw.intfList() if i.name != "lo"]
        self.record.add_names(root_names)
        for n in root_names:
            set_ipv6(n, False)
        tx_offload_off([n for n in root_names if "-" in n])
        for h in self.mn.hosts:
            tx_offload_off([i.name for i in h.intfList() if i.name != "lo"], netns_path(h.pid))
        t = self._step("offload", t)

        self.hq = self.mn.get(self.info["hq"])
        for ph in self.site.phones:
            host = self.topo.hosts_of[ph.name]
            self.phones.append(LabPhone(**vars(ph), host=host, netns=self.light[host].netns))

        rh, rb = self.mn.get(self.info["hq_router"]), self.mn.get(self.info["branch_router"])
        for sub in self.info["subnets"]:
            hosts = [(p.ip, p.mac) for p in self.phones if p.subnet == sub["index"]]
            hosts.append((sub["gateway"], rb.intf(sub["router_intf"]).MAC()))
            proxy_arp(sub["switch"], self.bridge_ports(sub["switch"]), hosts)
        t = self._step("arp proxy", t)

        self.wan = Wan(self.wan_settings, rh.pid, self.info["hq_wan_intf"], rb.pid,
                       self.info["branch_wan_intf"], seed=self.settings.seed,
                       emulation=self.settings.wan_emulation, record=self.record,
                       log_dir=self.out_dir)
        self.wan.start()
        self.record.set(wan=self.wan.describe())
        t = self._step(f"wan ({self.wan.emulation})", t)

        if self.capture_enabled:
            self._captures = Captures(self.out_dir, self.record)
            from pyroute2 import IPRoute
            with IPRoute() as ipr:
                for sub in self.info["subnets"]:
                    dummy = f"{self.prefix}M{sub['index']}"
                    self._dummies.append(dummy)
                    self.record.add_names([dummy])
                    ports = self.bridge_ports(sub["switch"])
                    add_mirror(ipr, dummy, ports)
                    # every frame enters the bridge once: the ports' rx counters
                    self._captures.add(f"subnet-{sub['index']}", dummy,
                                       counted=(ports, None, ("rx_packets",)))
            self._captures.add("wan", self.info["branch_wan_intf"], netns_pid=rb.pid,
                               buffer_kib=WAN_BUFFER_KIB,
                               counted=([self.info["branch_wan_intf"]], netns_path(rb.pid),
                                        ("rx_packets", "tx_packets")))
            self._captures.start()
            self.captures = dict(self._captures.files)
            t = self._step("captures", t)

        if self.tftp_enabled:
            os.makedirs(self.run_dir, exist_ok=True)
            # a folder used again: its old log would count the last run's requests too (the
            # server appends, so a restart within this run keeps what came before)
            if os.path.isfile(self.tftp_log):
                os.unlink(self.tftp_log)
            self.tftp = TftpServer(self.hq.pid, self.tftp_root, self.tftp_log, self.run_dir,
                                   self.hq_ip,
                                   [a for o in self.settings.tftp_refuse for a in ("--refuse", o)],
                                   self.record)
            self.tftp.add_files(self.tftp_files)
            self.tftp.start()
            t = self._step("tftpd", t)

        if self.syslog_enabled:
            os.makedirs(self.run_dir, exist_ok=True)
            syslog_file = os.path.join(self.out_dir, "pfs-syslog.log")
            if os.path.isfile(syslog_file):        # a folder used again: this run's lines only
                os.unlink(syslog_file)
            self.syslog = SyslogServer(self.hq.pid, self.hq_ip, self.run_dir, syslog_file,
                                       record=self.record)
            self.syslog.start()
            t = self._step("rsyslogd", t)

    # ------------------------------------------------------------ teardown
    def __exit__(self, exc_type, exc, tb) -> bool:
        self._teardown()
        return False

    def _teardown(self) -> None:
        """Stop everything in order; every step runs even if an earlier one failed.
        Ctrl-C is held back meanwhile, so a second Ctrl-C cannot leave half a lab."""
        blocked = threading.current_thread() is threading.main_thread()
        if blocked:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM,
                                                      signal.SIGHUP})
        errors = []
        t0 = time.monotonic()

        def step(what, fn):
            t = time.monotonic()
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - keep tearing down
                errors.append(f"{what}: {type(e).__name__}: {e}")
            self.teardown_steps[what] = round(time.monotonic() - t, 3)

        try:
            step("tracked processes", self._stop_tracked)
            if self.tftp:
                step("tftpd", self.tftp.stop)
            if self.syslog:
                step("rsyslogd", self.syslog.stop)
            if self.wan:
                step("wan", self.wan.stop)
            if self._captures:
                step("captures", self._captures.stop)
                step("capture checks",
                     lambda: self.capture_checks.update(self._captures.checks()))
            if self.light:
                step("phones", lambda: lighthost.remove(
                    list(self.light), [h.port for h in self.light.values()]))
            if self.mn is not None:
                step("mininet", self.mn.stop)
            if self.record:
                rec = dict(self.record.data)
                step("leftovers", lambda: clean.kill_recorded(
                    rec.get("pids", []) + clean.mininet_shells(self.prefix), timeout=2,
                    log=lambda m: None))
                step("namespaces", lambda: clean.delete_netns(
                    rec.get("netns", []), self.prefix, log=lambda m: None))
                step("links", lambda: clean.delete_links(self.prefix, log=lambda m: None))
            step("run dir", lambda: shutil.rmtree(self.run_dir, ignore_errors=True))
            if not self.keep_tftp_root:
                step("tftp root", lambda: shutil.rmtree(self.tftp_root, ignore_errors=True))
            step("ownership", self._chown_out)
            if self.record:
                if errors:
                    self.record.set(teardown_errors=errors)
                else:
                    self.record.remove()
            for sig, h in self._old_handlers.items():
                signal.signal(sig, h)
            self._old_handlers = {}
            self.timings["teardown"] = round(time.monotonic() - t0, 3)
            slow = ", ".join(f"{k} {v:.1f}s" for k, v in self.teardown_steps.items() if v >= 0.5)
            self.log(f"teardown: {self.timings['teardown']:.1f}s" + (f" ({slow})" if slow else ""))
        finally:
            if blocked:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM,
                                                            signal.SIGHUP})
        if errors:
            print("pfslab: teardown problems (run `pfslab clean`): " + "; ".join(errors),
                  file=sys.stderr)

    def _stop_tracked(self) -> None:
        for proc, what in reversed(self._tracked):
            if proc.poll() is None:
                proc.terminate()
        for proc, what in reversed(self._tracked):
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self.record.drop_pid(proc.pid)
        self._tracked = []

    def _chown_out(self) -> None:
        if os.path.isdir(self.out_dir):
            give_to_sudo_user(self.out_dir)
