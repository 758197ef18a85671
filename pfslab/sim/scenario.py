"""Builds in-memory upgrade scenarios: a site's phones, and what HQ serves, on a SimNet.

Shared by the unit tests and the simulator command, so both describe a site the same way
(pfslab.site, as the lab does).
"""
from __future__ import annotations

import math
from dataclasses import replace

from ..firmware import Signer
from ..protocol.phone import Phone, PhoneId, Timers
from ..site import PhoneSpec, Site
from .memnet import SimNet

__all__ = ["PhoneSpec", "phone_specs", "build", "max_depth"]


def phone_specs(subnets: int, per_subnet: int, models: list[str]) -> list[PhoneSpec]:
    """The phones of ``Site.branch``: p<subnet>-<n>, models cycled within each subnet."""
    return Site.branch(subnets, per_subnet, models).phones


def build(site: Site | list[PhoneSpec], mode: str = "pfs", *, scale: float | None = None,
          seed: int = 1, timers: Timers | None = None, phone_cls=Phone,
          signer: Signer | None = None, files: dict | None = None,
          subnets: set[int] | None = None, **net_kw) -> tuple[SimNet, list[Phone]]:
    """A SimNet serving ``site.files(mode, signer)`` and one Phone per PhoneSpec (not reset
    yet), each trusting ``signer``'s public key only. ``signer``: HQ's key (default: a fresh
    one per run, as in the lab). A bare list of phones is a Site with the default
    configuration levels, scale 0.01. ``files``: what HQ serves, made already (with
    ``signer``); ``subnets``: only the phones of these (a worker of pfslab.sim.parallel)."""
    if not isinstance(site, Site):
        site = Site(list(site), firmware_scale=0.01)
    if scale is not None:
        site = replace(site, firmware_scale=scale)
    signer = signer or Signer.generate()
    net = SimNet(files if files is not None else site.files(mode, signer), **net_kw)
    phones = [net.add(phone_cls(PhoneId(sp.name, sp.ip, sp.mac, sp.model), net.server,
                                seed=seed, timers=timers, trust=signer.trust), sp.subnet)
              for sp in site.phones if subnets is None or sp.subnet in subnets]
    return net, phones


def max_depth(n: int) -> int:
    """The depth bound of a breadth-first binary tree of n phones: ceil(log2(n+1))."""
    return math.ceil(math.log2(n + 1))
