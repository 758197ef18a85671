"""Builds in-memory upgrade scenarios: phones, their configs and load sets on a SimNet.

Shared by the unit tests and the simulator command, so both describe a site the same way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .. import firmware, phoneconfig
from ..protocol.phone import Phone, PhoneId, Timers
from .memnet import SimNet


@dataclass(frozen=True)
class PhoneSpec:
    name: str
    ip: str
    mac: str
    model: str
    subnet: int
    pfs: bool = True          # the resolved PFS setting (ignored for models that cannot)


def phone_specs(subnets: int, per_subnet: int, models: list[str]) -> list[PhoneSpec]:
    """Phones p<subnet>-<n>, subnet s being 10.s.0.0/16, models cycled within each subnet."""
    if not (1 <= subnets <= 250 and 1 <= per_subnet <= 60000):
        raise ValueError("1..250 subnets of 1..60000 phones")
    out = []
    for s in range(1, subnets + 1):
        for n in range(per_subnet):
            host = 11 + n
            out.append(PhoneSpec(name=f"p{s}-{n + 1}", ip=f"10.{s}.{host >> 8}.{host & 0xff}",
                                 mac=f"08:00:27:{s:02x}:{(n >> 8) & 0xff:02x}:{n & 0xff:02x}",
                                 model=models[n % len(models)], subnet=s))
    return out


def server_files(specs: list[PhoneSpec], scale: float, log_server: str | None = None
                 ) -> dict[str, bytes]:
    """Every file HQ's TFTP server holds: the load sets of the models present and configs."""
    files: dict[str, bytes] = {}
    loads = {}
    for sp in specs:
        name = firmware.model_load(sp.model)
        if name not in loads:
            _, f = firmware.build_load(name, scale)
            files.update(f)
            loads[name] = True
        files[phoneconfig.sep_filename(sp.mac)] = phoneconfig.render_sep(
            sp.mac, sp.model, name, sp.pfs and sp.model in firmware.PFS_CAPABLE, log_server)
    files[phoneconfig.XMLDEFAULT] = phoneconfig.render_xmldefault(
        {sp.model: firmware.model_load(sp.model) for sp in specs})
    return files


def build(specs: list[PhoneSpec], *, scale: float = 0.01, seed: int = 1,
          timers: Timers | None = None, phone_cls=Phone, **net_kw) -> tuple[SimNet, list[Phone]]:
    net = SimNet(server_files(specs, scale), **net_kw)
    phones = [net.add(phone_cls(PhoneId(sp.name, sp.ip, sp.mac, sp.model), net.server,
                                seed=seed, timers=timers), sp.subnet) for sp in specs]
    return net, phones


def max_depth(n: int) -> int:
    """The depth bound of a breadth-first binary tree of n phones: ceil(log2(n+1))."""
    return math.ceil(math.log2(n + 1))
