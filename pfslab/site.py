"""A site: its phones, their configuration (three levels), and everything HQ serves.

One :class:`PhoneSpec` says what a phone is (name ``p<subnet>-<n>``, address, MAC, subnet,
model, and its own device-level PFS setting); the topology, the lab, the agent, the simulator
and the bench all take these. :class:`Site` holds the phones, the common phone profile and
enterprise PFS levels, and the firmware scale; ``Site.files(mode)`` renders every file the HQ
TFTP server holds for one mode. ``traditional`` means PFS off on every phone (:meth:`Site.cluster`
is the one place that says so).

The address plan (also what ``mn --custom topologies/pfs_branch.py`` builds): remote subnet k
is 10.1.k.0/24 while its phones fit, else 10.(100+k).0.0/16; phones start at host .10, MACs are
02:50:46:<k>:<position>. Pure and stdlib-only: the topology file imports it under Debian's
``/usr/bin/python3`` (``mn``).
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace

from . import firmware, phoneconfig

DEFAULT_MODELS = ("CP-7961G", "CP-7941G", "CP-7960G")
#: first host number of the phones in a subnet (.1 is the branch router)
PHONE_HOST_BASE = 10
MAX_SUBNETS = 99
#: the largest subnet the address plan holds (a /16); a Linux bridge (the lab) takes 1000
MAX_PHONES_PER_SUBNET = 60000
MODES = ("pfs", "traditional")


class SiteError(ValueError):
    """A site that cannot be built (bad counts, unknown models, bad phone numbers)."""


@dataclass(frozen=True)
class PhoneSpec:
    """One phone: what the lab builds, the agent runs and the simulator models."""
    name: str                 # p<subnet>-<n>: its name in logs and results
    ip: str
    mac: str
    model: str
    subnet: int               # 1-based
    broadcast: str
    pfs: bool | None = None   # its device-level PFS setting (None: not set)


def split_models(models) -> list[str]:
    """'CP-7961G,CP-7941G' (or + : space between) / ['A', 'B'] / None (the defaults) -> a list
    of known model names."""
    if models is None:
        return list(DEFAULT_MODELS)
    if isinstance(models, str):
        models = re.split(r"[+,:\s]+", models.strip())
    out = [str(m).strip() for m in models if str(m).strip()]
    if not out:
        raise SiteError("models: give at least one phone model, e.g. CP-7961G")
    for m in out:
        try:
            firmware.model_load(m)
        except firmware.FirmwareError as e:
            raise SiteError(str(e)) from None
    return out


def subnet_network(k: int, phones_per_subnet: int) -> ipaddress.IPv4Network:
    """Remote subnet k (1-based): 10.1.k.0/24 while the phones fit, else 10.(100+k).0.0/16."""
    if PHONE_HOST_BASE + phones_per_subnet <= 254:
        return ipaddress.ip_network(f"10.1.{k}.0/24")
    return ipaddress.ip_network(f"10.{100 + k}.0.0/16")


def phone_mac(k: int, j: int) -> str:
    """Locally administered, deterministic: 02:50:46 ('PF') : subnet : position (16 bits)."""
    return "02:50:46:%02x:%02x:%02x" % (k, (j >> 8) & 0xFF, j & 0xFF)


@dataclass
class Site:
    """The phones and their configuration levels; see the module docstring."""
    phones: list[PhoneSpec]
    profile: bool | None = True        # the common phone profile's PFS setting
    enterprise: bool | None = None     # the enterprise PFS setting
    firmware_scale: float = 0.035
    log_server: str | None = None      # the PFS log server ip:port in every config, except
    log_server_off: frozenset = frozenset()   # these phones' (by name)
    networks: list[str] = field(default_factory=list)   # each subnet's network, 1-based order
    loads: dict[str, str] = field(default_factory=dict)  # model -> load (default: model_load)

    def load_of(self, model: str) -> str:
        return self.loads.get(model) or firmware.model_load(model)

    @classmethod
    def branch(cls, subnets: int = 2, phones_per_subnet: int = 8, models=None, *,
               layout: list | None = None, device_pfs_off=(), log_server_off=(),
               **kw) -> "Site":
        """K subnets of N phones, models cycled in each subnet (or ``layout``: one model list
        per subnet). ``device_pfs_off``: phone numbers (1-based, across subnets) whose device
        level turns PFS off; ``log_server_off``: phone numbers whose config names no log
        server."""
        if layout is not None:
            layout = [split_models(row) for row in layout]
        else:
            subnets, phones_per_subnet = int(subnets), int(phones_per_subnet)
            if not 1 <= phones_per_subnet <= MAX_PHONES_PER_SUBNET:
                raise SiteError(f"phones per subnet: 1..{MAX_PHONES_PER_SUBNET}, "
                                f"not {phones_per_subnet}")
            ml = split_models(models)
            layout = [[ml[j % len(ml)] for j in range(phones_per_subnet)]
                      for _ in range(subnets)]
        if not 1 <= len(layout) <= MAX_SUBNETS:
            raise SiteError(f"subnets: 1..{MAX_SUBNETS}, not {len(layout)}")
        widest = max(len(row) for row in layout)
        total = sum(len(row) for row in layout)
        off = set(device_pfs_off)
        for what, nums in (("device PFS off", off), ("log server off", set(log_server_off))):
            bad = sorted(i for i in nums if not 1 <= i <= total)
            if bad:
                raise SiteError(f"{what}: no phone number {bad[0]} (the site has phones "
                                f"1..{total})")
        phones, nets, index = [], [], 0
        for k, row in enumerate(layout, start=1):
            net = subnet_network(k, widest)
            nets.append(str(net))
            for j, model in enumerate(row):
                index += 1
                phones.append(PhoneSpec(
                    name=f"p{k}-{j + 1}", ip=str(net.network_address + PHONE_HOST_BASE + j),
                    mac=phone_mac(k, j), model=model, subnet=k,
                    broadcast=str(net.broadcast_address),
                    pfs=False if index in off else None))
        no_log = frozenset(phones[i - 1].name for i in log_server_off)
        return cls(phones, networks=nets, log_server_off=no_log, **kw)

    # ------------------------------------------------------------ configuration
    def cluster(self, mode: str) -> phoneconfig.Cluster:
        """The three levels for one mode. Traditional: PFS off on every device."""
        if mode not in MODES:
            raise SiteError(f"mode {mode!r}: pfs or traditional")
        c = phoneconfig.Cluster(enterprise=self.enterprise, profiles={"site": self.profile},
                                log_server=self.log_server)
        for p in self.phones:
            c.add_device(p.mac, p.model, "site", False if mode == "traditional" else p.pfs,
                         log_server=p.name not in self.log_server_off)
        return c

    def pfs_of(self, mode: str) -> dict[str, bool]:
        """Each phone's resolved PFS setting, by name."""
        c = self.cluster(mode)
        return {p.name: c.pfs_for(p.mac) for p in self.phones}

    def models(self) -> list[str]:
        return sorted({p.model for p in self.phones})

    def files(self, mode: str, signer: firmware.Signer = firmware.FIXTURE_SIGNER
              ) -> dict[str, bytes]:
        """Everything HQ serves in this mode: each model's load set (signed by ``signer``,
        HQ's key), every SEP<MAC>.cnf.xml, and XMLDefault.cnf.xml."""
        out: dict[str, bytes] = {}
        try:
            for name in sorted({self.load_of(m) for m in self.models()}):
                out.update(firmware.build_load(name, self.firmware_scale, signer)[1])
            out.update(self.cluster(mode).files(self.load_of))
        except (firmware.FirmwareError, ValueError) as e:
            raise SiteError(str(e)) from None
        return out

    def with_pfs(self, name: str, pfs: bool | None) -> "Site":
        """A copy where phone ``name``'s device level is ``pfs``."""
        return replace(self, phones=[replace(p, pfs=pfs) if p.name == name else p
                                     for p in self.phones])

    def subnets(self) -> int:
        return max(p.subnet for p in self.phones)
