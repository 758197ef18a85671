"""One run's settings: one table of defaults, the same flags and units for the lab and the sim.

``OPTIONS`` is the table: each option's default, type, metavar and help, and which commands
take it. ``add_options(parser, command)`` turns it into argparse options whose help shows the
default; ``Settings.from_args(args)`` builds the object once (validated: one clear line on bad
input); the bench and the tests build ``Settings(...)`` directly. ``Settings.site()`` makes the
:class:`pfslab.site.Site`, ``Settings.agent_spec(...)`` the phone agent's spec.

Units: ``--wan-bw`` is a bandwidth as tc writes it (``384kbit``, a bare number is bit/s),
``--wan-delay`` is ONE WAY (``75ms``, a bare number is ms), ``--wan-loss`` per direction.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field

from .errors import UserError

#: TFTP blksize the phones ask for (RFC 2348): 1428 fits a 1500-byte Ethernet frame
BLKSIZE = 1428
BLKSIZE_RANGE = (8, 65464)
LEVELS = {"on": True, "off": False, "unset": None}
#: the RFC 2347 options in.tftpd (tftpd-hpa) knows, so can --refuse
TFTP_OPTIONS = ("blksize", "blksize2", "tsize", "timeout", "utimeout", "rollover")


@dataclass(frozen=True)
class Option:
    default: object
    help: str
    type: type = str
    metavar: str | None = None
    choices: tuple | None = None
    commands: tuple = ("lab", "sim")
    sim_default: object = None     # the simulator's default where it differs (bigger sites)


#: THE table of defaults. 384 kbit/s is where Cisco's 9900 white paper starts calling a link
#: "low-bandwidth"; the lab's scale keeps both modes within about 2.5 minutes on 2 cores.
OPTIONS: dict[str, Option] = {
    "topo": Option("branch", "a name in topologies/ or FILE.py[:NAME]", commands=("lab",)),
    "subnets": Option(2, "remote subnets", int, "K"),
    "phones_per_subnet": Option(8, "phones in each subnet", int, "N", sim_default=50),
    "models": Option("CP-7961G,CP-7941G,CP-7960G", "comma list, cycled in each subnet"),
    "mode": Option("both", "which upgrade(s) to run", choices=("pfs", "traditional", "both")),
    "reset": Option("all", "reset all phones at once, or one after another",
                    choices=("all", "staggered"), commands=("lab",)),
    "stagger": Option(0.5, "seconds between resets with --reset staggered", float, "S",
                      commands=("lab",)),
    "wan_bw": Option("384kbit", "WAN bandwidth (tc units; a bare number is bit/s)",
                     metavar="BW"),
    "wan_delay": Option("75ms", "WAN delay, one way (a bare number is ms)", metavar="T"),
    "wan_loss": Option("0%", "WAN loss per direction", metavar="P"),
    "wan_emulation": Option("auto", "how the WAN delays (auto: netem if the kernel has it)",
                            choices=("auto", "netem", "nfqueue"), commands=("lab",)),
    "firmware_scale": Option(0.035, "component sizes x F (1.0: the real 8.1 MB SCCP41 set)",
                             float, "F", sim_default=0.01),
    "blksize": Option(BLKSIZE, "TFTP blksize the phones ask for", int, "B"),
    "tftp_refuse": Option((), "in.tftpd refuses this TFTP option (e.g. blksize); repeatable",
                          metavar="OPTION", commands=("lab",)),
    "pfs_enterprise": Option("unset", "enterprise-level PFS setting (pfs mode)",
                             choices=tuple(LEVELS)),
    "pfs_profile": Option("on", "common phone profile PFS setting (pfs mode)",
                          choices=tuple(LEVELS)),
    "device_pfs_off": Option("", "phone numbers (1-based, across subnets) with PFS off at "
                                 "device level", metavar="I,J"),
    "log_server_off": Option("", "phone numbers (1-based, across subnets) whose config names "
                                 "no PFS log server (the lab's rsyslogd at HQ)", metavar="I,J",
                             commands=("lab",)),
    "seed": Option(1, "random seed of the phones' timers", int),
    "timeout": Option(600.0, "give up on an upgrade after S seconds", float, "S",
                      commands=("lab",)),
    "traditional_sample": Option(0, "cap the traditional baseline: upgrade only N phones, "
                                    "spread over subnets and models (0: all)", int, "N",
                                 commands=("lab",)),
    "traditional_until": Option(None, "cap the traditional baseline: stop it after S seconds",
                                float, "S", commands=("lab",)),
    "time_dilation": Option("auto", "run the emulation K times slower: phones' timers x K, WAN "
                                    "delay x K, bandwidth / K; results stay in emulated time "
                                    "(auto: from the site's size and the machine's load)",
                            metavar="K", commands=("lab",)),
    "agent_procs": Option(0, "phone agent processes (0: one per core from 100 phones on)",
                          int, "N", commands=("lab",)),
    "fail_parent": Option(None, "pfs mode: S seconds after the reset, a parent that is "
                                "passing a file on dies (its connections reset; ':silent': it "
                                "just goes quiet)", metavar="S[:silent]", commands=("lab",)),
    "fault": Option((), "inject a fault, KIND[@T][:ARG...] (e.g. tftp-restart@10:5, "
                        "wan-outage@10:5, rogue:max-root:1; docs/faults.md); repeatable",
                    metavar="SPEC", commands=("lab",)),
    "signing_key": Option(None, "HQ's Ed25519 signing key, a PEM file (default: a fresh key "
                                "per run; only its public key is saved)", metavar="FILE",
                          commands=("lab",)),
}


def default(name: str, command: str = "lab"):
    o = OPTIONS[name]
    return o.sim_default if command == "sim" and o.sim_default is not None else o.default


class _Given(argparse.Action):
    """Store (or append) the value and remember that the flag was given, so that flags
    beside ``--scenario`` override the file and defaults do not."""

    def __init__(self, *a, append: bool = False, **kw):
        self.append = append
        super().__init__(*a, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        if self.append:
            values = [*(getattr(namespace, self.dest, None) or []), values]
        setattr(namespace, self.dest, values)
        given = set(getattr(namespace, "_given", ()))
        setattr(namespace, "_given", given | {self.dest})


def add_options(p: argparse.ArgumentParser, command: str) -> None:
    """Every option of the table that ``command`` takes, its default in its help; and
    ``--scenario FILE`` (pfslab.scenario), which the other flags override."""
    p.add_argument("--scenario", metavar="FILE", default=None,
                   help="a scenario file (TOML, see scenarios/ and docs/testing.md); flags "
                        "given beside it override the file")
    for name, o in OPTIONS.items():
        if command not in o.commands:
            continue
        flag = "--" + name.replace("_", "-")
        d = default(name, command)
        shown = "none" if d in (None, "", ()) else ",".join(d) if isinstance(d, tuple) else d
        kw = dict(help=f"{o.help} (default: {shown})".replace("%", "%%"), metavar=o.metavar)
        if isinstance(o.default, tuple):
            kw.update(action=_Given, append=True, default=[])
        else:
            kw.update(action=_Given, default=d, type=o.type)
        if o.choices:
            kw.update(choices=o.choices, metavar=None)
        p.add_argument(flag, **kw)


@dataclass
class Settings:
    """One run's settings (see the module docstring). Field defaults come from ``OPTIONS``."""
    topo: str = default("topo")
    subnets: int = default("subnets")
    phones_per_subnet: int = default("phones_per_subnet")
    models: str = default("models")
    mode: str = default("mode")
    reset: str = default("reset")
    stagger: float = default("stagger")
    wan_bw: str = default("wan_bw")
    wan_delay: str = default("wan_delay")
    wan_loss: str = default("wan_loss")
    wan_emulation: str = default("wan_emulation")
    firmware_scale: float = default("firmware_scale")
    blksize: int = default("blksize")
    tftp_refuse: list = field(default_factory=list)
    pfs_enterprise: str = default("pfs_enterprise")
    pfs_profile: str = default("pfs_profile")
    device_pfs_off: str = default("device_pfs_off")
    log_server_off: str = default("log_server_off")
    seed: int = default("seed")
    timeout: float = default("timeout")
    traditional_sample: int = default("traditional_sample")
    traditional_until: float | None = default("traditional_until")
    fail_parent: str | None = default("fail_parent")
    fault: list = field(default_factory=list)
    signing_key: str | None = default("signing_key")
    # set by scenario files only (pfslab.scenario): no flags
    layout: list | None = None          # one model list per subnet (overrides the counts)
    devices: dict = field(default_factory=dict)   # phone name -> on/off/unset (device level)
    loads: dict = field(default_factory=dict)     # model -> load name
    faults: list = field(default_factory=list)    # the scenario's [[faults]] entries
    time_dilation: str = default("time_dilation")
    agent_procs: int = default("agent_procs")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Settings":
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in vars(args).items() if k in names}
        if getattr(args, "scenario", None):
            from .scenario import load
            return load(args.scenario, {k: values[k] for k in getattr(args, "_given", ())
                                        if k in values})
        s = cls(**values)
        s.check()
        return s

    def __post_init__(self):
        if isinstance(self.models, (list, tuple)):
            self.models = ",".join(self.models)

    # ------------------------------------------------------------ derived values
    @property
    def modes(self) -> list[str]:
        return ["pfs", "traditional"] if self.mode == "both" else [self.mode]

    def wan(self):
        """(bits/s or None, one-way delay s, loss ratio)."""
        from .lab.units import parse_bandwidth, parse_delay, parse_loss
        loss = next((f.loss for f in self.all_faults() if f.kind == "wan-loss"), self.wan_loss)
        return parse_bandwidth(self.wan_bw), parse_delay(self.wan_delay), parse_loss(loss)

    def device_off(self) -> set[int]:
        return _numbers(self.device_pfs_off, "--device-pfs-off")

    def log_off(self) -> set[int]:
        return _numbers(self.log_server_off, "--log-server-off")

    def site(self):
        from .site import Site, SiteError
        try:
            site = Site.branch(self.subnets, self.phones_per_subnet, self.models,
                               layout=self.layout, device_pfs_off=self.device_off(),
                               log_server_off=self.log_off(),
                               profile=LEVELS[self.pfs_profile],
                               enterprise=LEVELS[self.pfs_enterprise],
                               firmware_scale=self.firmware_scale, loads=dict(self.loads))
        except SiteError as e:
            raise UserError(str(e)) from None
        names = {p.name for p in site.phones}
        for name, level in self.devices.items():
            if name not in names:
                raise UserError(f"config.devices: no phone {name!r} (names are "
                                f"p<subnet>-<n>, here p1-1..{site.phones[-1].name})")
            site = site.with_pfs(name, LEVELS[level])
        return site

    def all_faults(self) -> list:
        """Every fault of the run (pfslab.lab.faults.Fault): the scenario's [[faults]],
        ``--fault`` specs, then ``--fail-parent`` (a parent fault)."""
        from .lab.faults import Fault, parse_fault
        out = [Fault.from_dict(d, "scenario fault") for d in self.faults]
        out += [parse_fault(t, self.subnets) for t in self.fault]
        if self.fail_parent:
            after, _, how = self.fail_parent.partition(":")
            try:
                t = float(after)
            except ValueError:
                t = -1.0
            if not 0 <= t < float("inf") or how not in ("", "crash", "silent"):
                raise UserError(f"--fail-parent {self.fail_parent!r}: want seconds, optionally "
                                "':silent' (e.g. 30 or 30:silent)")
            out.append(Fault("parent", t, how=how or "crash"))
        return out

    def dilation(self, site=None) -> float:
        """The time dilation k (pfslab.lab.dilation): the user's, or picked for ``site``."""
        v = str(self.time_dilation).strip().lower()
        if v == "auto":
            from collections import Counter

            from .lab.dilation import auto_dilation
            if site is None:
                return 1.0
            return auto_dilation(list(Counter(p.subnet for p in site.phones).values()))
        # whole factors only: the phones ask HQ's tftpd for a retransmission timeout of
        # k x 1 s (RFC 2349 takes whole seconds, 1..255), so both ends' timers dilate alike
        try:
            k = float(v)
        except ValueError:
            k = 0.0
        if not (1.0 <= k <= 255.0 and k == int(k)):
            raise UserError(f"--time-dilation {self.time_dilation!r}: auto, or a whole factor "
                            "from 1 to 255 (e.g. 4)")
        return k

    def check(self) -> "Settings":
        """Every setting valid, or one UserError line saying which and how to fix it."""
        for name, o in OPTIONS.items():
            if o.choices and getattr(self, name) not in o.choices:
                raise UserError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: one of "
                                f"{', '.join(o.choices)}")
        for name in ("subnets", "phones_per_subnet"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1")
        if not self.firmware_scale > 0:
            raise UserError("--firmware-scale must be positive")
        if not BLKSIZE_RANGE[0] <= self.blksize <= BLKSIZE_RANGE[1]:
            raise UserError(f"--blksize {self.blksize}: {BLKSIZE_RANGE[0]}..{BLKSIZE_RANGE[1]} "
                            "(RFC 2348)")
        if not self.timeout > 0:
            raise UserError("--timeout must be positive")
        if self.stagger < 0:
            raise UserError("--stagger must not be negative")
        if self.traditional_sample < 0:
            raise UserError("--traditional-sample must be 0 (all phones) or more")
        if self.traditional_until is not None and not self.traditional_until > 0:
            raise UserError("--traditional-until must be positive (seconds)")
        for o in self.tftp_refuse:
            if o not in TFTP_OPTIONS:
                raise UserError(f"--tftp-refuse {o!r}: one of {', '.join(TFTP_OPTIONS)}")
        self.wan()           # and every fault spec
        self.dilation()
        if self.agent_procs < 0:
            raise UserError("--agent-procs must not be negative (0: one per core)")
        self.site()          # models, counts, device numbers
        if self.signing_key:
            self.signer()    # a key file that cannot be used: one line
        return self

    def signer(self):
        """HQ's signer: the ``--signing-key`` file's, else a fresh key (call once per run)."""
        from .firmware import load_signer
        return load_signer(self.signing_key)

    # ------------------------------------------------------------ the agent's spec
    def agent_spec(self, server: str, phones: list[dict], log_dir: str, mode: str,
                   time_dilation: float = 1.0, trust: str | None = None) -> dict:
        """SPEC.json of ``pfslab phone many``: phones are PhoneSpec fields plus ``netns``;
        ``trust``: HQ's public key (``Trust.hex()``), the phones' trust list."""
        spec = {"server": server, "seed": self.seed, "log_dir": log_dir,
                "timeout_s": self.timeout, "blksize": self.blksize,
                "stagger": self.stagger if self.reset == "staggered" else 0.0,
                "time_dilation": time_dilation, "agent_procs": self.agent_procs,
                "phones": phones}
        if trust:
            spec["trust"] = trust
        # a phone's own faults; PFS ones only in pfs mode (no parents or roots otherwise)
        agent = [f.agent_entry() for f in self.all_faults()
                 if f.by_agent and (mode == "pfs" or f.kind == "power-cycle")]
        if agent:
            spec["faults"] = agent
        return spec


def _numbers(text: str, flag: str) -> set[int]:
    try:
        return {int(x) for x in text.split(",") if x.strip()}
    except ValueError:
        raise UserError(f"{flag} {text!r}: want phone numbers, e.g. 1,3") from None


def deprecated(old: str, new: str) -> None:
    """The one-line warning of an old flag that still works."""
    print(f"pfslab: {old} is deprecated; use {new}", file=sys.stderr)
