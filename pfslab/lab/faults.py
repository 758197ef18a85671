"""Faults to inject in a lab run: one small typed spec, its text form and its parser.

Text form (``pfslab lab --fault SPEC``, repeatable; docs/faults.md)::

    KIND[@T][:ARG[:ARG]]        T: seconds after the phones' reset (default 0)

    parent@12[:silent]          a parent passing a file on dies (= --fail-parent 12[:silent])
    root-fetching@5[:silent]    the root of a file dies during its TFTP fetch from HQ
    root-serving@8[:silent]     a root dies while serving its children
    power-cycle@10[:3]          a phone mid-upgrade loses power for 3 s and boots again
    tftp-restart@10:5           in.tftpd is stopped for 5 s, then started again
    wan-outage@10:5             the WAN drops every packet for 5 s
    wan-loss:5%                 the WAN loses 5 % per direction, the whole run
    link-flap@10:5[:2]          subnet 2's link to the branch router is down for 5 s
    rogue[@T]:ATTACK[:K]        a rogue host on subnet K (default 1) runs ATTACK, one of
                                max-root, zero-root, claim-trickle, flood, tamper, stall,
                                replay=PCAP (the 4051 datagrams of an earlier run's pcap)

Scenario form: ``Fault.to_dict()`` / ``Fault.from_dict()`` (JSON/TOML tables with the same
field names). Every bad spec raises :class:`FaultSpecError`: one line saying what is wrong and
how to write it (exit 2). Pure and stdlib-only: the settings, the scenario files and the
pytest plugin read it; pfslab.lab.inject acts on it.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields

from pfslab.errors import UserError

#: kind -> one line of help (also the order of the fault matrix)
KINDS = {
    "parent": "a parent passing a file on dies (crash: its connections reset; silent)",
    "root-fetching": "the root of a file dies during its TFTP fetch",
    "root-serving": "a root dies while serving its children",
    "power-cycle": "a phone mid-upgrade is powered off for S s (default 3) and boots again",
    "tftp-restart": "in.tftpd is stopped for S seconds, then started again",
    "wan-outage": "the WAN drops every packet for S seconds",
    "wan-loss": "the WAN loses P per direction for the whole run",
    "link-flap": "a subnet's link to the branch router goes down for S seconds",
    "rogue": "a rogue host on a subnet runs an attack",
}
#: faults that the phone agent carries out (a phone's own crash): the rest act on the network
AGENT_KINDS = ("parent", "root-fetching", "root-serving", "power-cycle")
HOW = ("crash", "silent")
ATTACKS = {
    "max-root": "ROOTs of the top strength for every file, from a host that serves nothing",
    "zero-root": "strength-0 ROOTs for every file",
    "claim-trickle": "one stronger CLAIM per file every 4.5 s",
    "flood": "JOINs, CLAIMs and ROOTs with made-up XIDs and names, as fast as it can",
    "replay": "the port-4051 datagrams of an earlier run's pcap, in their order",
    "tamper": "a top-strength root that offers itself as parent and serves wrong bytes",
    "stall": "a top-strength root that offers itself as parent and only sends HOLDs",
}
EXAMPLES = ("parent@12:silent", "root-fetching@5", "tftp-restart@10:5", "wan-outage@10:5",
            "wan-loss:5%", "link-flap@10:5:2", "power-cycle@10", "rogue:max-root:1",
            "rogue@2:replay=old/wan.pcap")
MAX_T = 86400.0


class FaultSpecError(UserError):
    """A fault spec that cannot be used: one line, with the form to write."""


@dataclass(frozen=True)
class Fault:
    """One fault. ``at``: seconds after the reset; ``duration``: how long it lasts
    (tftp-restart, wan-outage, link-flap, power-cycle's off time); ``how``: crash or silent
    (parent, root-*) or the attack (rogue); ``subnet``: 1-based (link-flap, rogue);
    ``loss``: e.g. "5%" (wan-loss); ``pcap``: what a replay attack sends."""
    kind: str
    at: float = 0.0
    duration: float = 0.0
    how: str = ""
    subnet: int = 1
    loss: str = ""
    pcap: str = ""

    # ------------------------------------------------------------ forms
    def spec(self) -> str:
        """The text form (parse_fault(f.spec()) == f)."""
        at = f"@{self.at:g}" if self.at else ""
        k = self.kind
        if k in ("parent", "root-fetching", "root-serving"):
            return f"{k}{at}" + (":silent" if self.how == "silent" else "")
        if k == "power-cycle":
            return f"{k}{at}:{self.duration:g}"
        if k in ("tftp-restart", "wan-outage"):
            return f"{k}{at}:{self.duration:g}"
        if k == "link-flap":
            return f"{k}{at}:{self.duration:g}:{self.subnet}"
        if k == "wan-loss":
            return f"{k}:{self.loss}"
        attack = f"replay={self.pcap}" if self.how == "replay" else self.how
        return f"{k}{at}:{attack}:{self.subnet}"

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in ("", 0, 0.0) or k == "kind"}

    @classmethod
    def from_dict(cls, d: dict, where: str = "fault") -> "Fault":
        """A fault from a scenario table; checked as the text form is."""
        if not isinstance(d, dict) or "kind" not in d:
            raise FaultSpecError(f"{where}: want a table with a 'kind' (one of "
                                 f"{', '.join(KINDS)})")
        names = {f.name for f in fields(cls)}
        extra = sorted(set(d) - names)
        if extra:
            raise FaultSpecError(f"{where}: unknown field {extra[0]!r} (fields: "
                                 f"{', '.join(sorted(names))})")
        try:
            f = cls(kind=str(d["kind"]), at=float(d.get("at", 0.0)),
                    duration=float(d.get("duration", 0.0)), how=str(d.get("how", "")),
                    subnet=int(d.get("subnet", 1)), loss=str(d.get("loss", "")),
                    pcap=str(d.get("pcap", "")))
        except (TypeError, ValueError) as e:
            raise FaultSpecError(f"{where}: {e}") from None
        return f.checked(where)

    # ------------------------------------------------------------ checks
    def checked(self, where: str = "fault", subnets: int | None = None) -> "Fault":
        """This fault if it can be injected (on a site of ``subnets``), else FaultSpecError."""
        def bad(why: str):
            raise FaultSpecError(f"{where} {self.spec_or_kind()!r}: {why}")
        if self.kind not in KINDS:
            bad(f"unknown kind; one of {', '.join(KINDS)} (e.g. {EXAMPLES[2]})")
        if not (math.isfinite(self.at) and 0 <= self.at <= MAX_T):
            bad(f"the time must be 0..{MAX_T:g} seconds after the reset")
        if not (math.isfinite(self.duration) and 0 <= self.duration <= MAX_T):
            bad(f"the duration must be 0..{MAX_T:g} seconds")
        k = self.kind
        if k in ("parent", "root-fetching", "root-serving") and self.how not in ("", *HOW):
            bad(f"how {self.how!r}: want crash or silent, e.g. {k}@12:silent")
        if k in ("tftp-restart", "wan-outage", "link-flap") and not self.duration > 0:
            bad(f"give how long, in seconds, e.g. {k}@10:5")
        if k == "wan-loss":
            from .units import parse_loss
            try:
                parse_loss(self.loss)
            except UserError as e:
                bad(str(e))
            if not self.loss:
                bad("give the loss, e.g. wan-loss:5%")
        if k == "rogue":
            if self.how not in ATTACKS:
                bad(f"unknown attack; one of {', '.join(ATTACKS)} (e.g. rogue:max-root:1)")
            if self.how == "replay" and not os.path.isfile(self.pcap):
                bad(f"no capture file {self.pcap!r} to replay (rogue:replay=PCAP)")
        if k in ("link-flap", "rogue"):
            top = subnets if subnets is not None else 99
            if not 1 <= self.subnet <= top:
                bad(f"no subnet {self.subnet} (the site has subnets 1..{top})")
        return self

    def spec_or_kind(self) -> str:
        try:
            return self.spec()
        except (TypeError, ValueError):
            return self.kind

    @property
    def by_agent(self) -> bool:
        return self.kind in AGENT_KINDS

    @property
    def end(self) -> float:
        """When the fault is over (seconds after the reset)."""
        return self.at + self.duration

    def agent_entry(self) -> dict:
        """The agent spec's faults[] entry (pfslab.agent.driver.Fault) of an agent fault."""
        phone = {"parent": "auto", "root-fetching": "root-fetching",
                 "root-serving": "root-serving", "power-cycle": "mid-upgrade"}[self.kind]
        how = "power-cycle" if self.kind == "power-cycle" else (self.how or "crash")
        d = {"after_s": self.at, "phone": phone, "how": how}
        if self.kind == "power-cycle":
            d["off_s"] = self.duration
        return d


def _seconds(text: str, what: str, spec: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise FaultSpecError(f"fault {spec!r}: {what} {text!r} is not a number of seconds "
                             f"(e.g. {EXAMPLES[2]})") from None
    return v


def parse_fault(text: str, subnets: int | None = None) -> Fault:
    """'tftp-restart@10:5' -> Fault(kind='tftp-restart', at=10.0, duration=5.0); see the
    module docstring. FaultSpecError (one line) on anything else."""
    spec = str(text).strip()
    head, _, rest = spec.partition(":")
    args = rest.split(":") if rest else []
    kind, _, at_text = head.partition("@")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise FaultSpecError(f"fault {spec!r}: unknown kind {kind!r}; one of "
                             f"{', '.join(KINDS)} (e.g. {', '.join(EXAMPLES[:4])})")
    at = _seconds(at_text, "the time", spec) if at_text else 0.0
    if "@" in head and not at_text:
        raise FaultSpecError(f"fault {spec!r}: give the time after '@', e.g. {kind}@10")

    def need(n_min: int, n_max: int, form: str):
        if not n_min <= len(args) <= n_max:
            raise FaultSpecError(f"fault {spec!r}: write it as {form}")

    f: Fault
    if kind in ("parent", "root-fetching", "root-serving"):
        need(0, 1, f"{kind}@T[:silent]")
        f = Fault(kind, at, how=args[0] if args else "crash")
    elif kind == "power-cycle":
        need(0, 1, "power-cycle@T[:S]")
        f = Fault(kind, at, duration=_seconds(args[0], "the off time", spec) if args else 3.0)
    elif kind in ("tftp-restart", "wan-outage"):
        need(1, 1, f"{kind}@T:S")
        f = Fault(kind, at, duration=_seconds(args[0], "the duration", spec))
    elif kind == "link-flap":
        need(1, 2, "link-flap@T:S[:SUBNET]")
        f = Fault(kind, at, duration=_seconds(args[0], "the duration", spec),
                  subnet=_subnet(args[1], spec) if len(args) > 1 else 1)
    elif kind == "wan-loss":
        need(1, 1, "wan-loss:P (e.g. wan-loss:5%)")
        f = Fault(kind, at, loss=args[0])
    else:
        need(1, 2, "rogue[@T]:ATTACK[:SUBNET] (ATTACK: " + ", ".join(ATTACKS) + ")")
        attack, _, arg = args[0].partition("=")
        if attack == "replay" and not arg:
            raise FaultSpecError(f"fault {spec!r}: name the capture: rogue:replay=PCAP")
        f = Fault(kind, at, how=attack, pcap=arg,
                  subnet=_subnet(args[1], spec) if len(args) > 1 else 1)
    return f.checked("fault", subnets)


def _subnet(text: str, spec: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise FaultSpecError(f"fault {spec!r}: subnet {text!r} is not a number") from None
