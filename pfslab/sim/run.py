"""`pfslab sim`: the same phones, in memory with a virtual clock, for sites too big for a lab.

The WAN model is simple: every TFTP transfer is lock-step (one block per round trip) and all
share the WAN bandwidth fairly; no loss, no TCP dynamics on the LAN. It shows the protocol's
behaviour (elections, trees, who fetches what) at any scale; the Mininet lab measures timings.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

from ..errors import UserError
from ..protocol.phone import Phone
from . import scenario

DEFAULT_MODELS = "CP-7961G,CP-7941G,CP-7960G"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--subnets", type=int, default=2)
    p.add_argument("--phones-per-subnet", type=int, default=50)
    p.add_argument("--models", default=DEFAULT_MODELS)
    p.add_argument("--mode", choices=("pfs", "traditional", "both"), default="both")
    p.add_argument("--firmware-scale", type=float, default=0.01)
    p.add_argument("--wan-rtt", type=float, default=0.15, help="seconds (default 0.15)")
    p.add_argument("--wan-bw", type=float, default=512e3, help="bits/s (default 512000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", help="write results here (the lab's results.json schema)")


def simulate(specs: list[scenario.PhoneSpec], mode: str, *, scale: float, seed: int,
             wan_rtt: float, wan_bps: float | None = None) -> dict:
    """Run one upgrade in memory; return the results dict of one mode."""
    if mode == "traditional":
        specs = [scenario.PhoneSpec(**{**sp.__dict__, "pfs": False}) for sp in specs]
    net, phones = scenario.build(specs, scale=scale, seed=seed, wan_rtt=wan_rtt,
                                 wan_bps=wan_bps)
    for p in phones:
        net.reset(p)
    net.run(until=24 * 3600)
    return results_from_sim(net, phones, specs, mode)


def results_from_sim(net, phones: list[Phone], specs, mode: str) -> dict:
    out_phones = []
    hier = defaultdict(lambda: {"root": None, "edges": []})
    for p, sp in zip(phones, specs):
        out_phones.append({"name": sp.name, "ip": sp.ip, "mac": sp.mac, "subnet": sp.subnet,
                           "model": sp.model, **p.outcome()})
        if not p.pfs:
            continue
        for f, s in p.sessions.items():
            h = hier[(sp.subnet, sp.model, f)]
            if s.registrar is not None:
                h["root"] = sp.ip
            i = p.installed.get(f)
            if i is not None and i.source != "tftp":
                h["edges"].append([i.source, sp.ip])
    tftp = [{"client": ip, "file": f, "t": round(t, 3)} for t, ip, f in net.tftp_requests]
    wan_bytes = sum(len(net.files.get(r["file"], b"")) for r in tftp)
    done = [p.completed.t for p in phones if p.completed]
    return {"mode": mode,
            "wan": {"rtt_s": net.wan_rtt, "bw_bps": net.wan_bps, "emulation": "simulated"},
            "makespan_s": round(max(done), 3) if done else None,
            "wan_bytes": wan_bytes, "tftp_requests": tftp, "phones": out_phones,
            "hierarchies": [{"subnet": k[0], "model": k[1], "file": k[2], **v}
                            for k, v in sorted(hier.items())]}


def run(args) -> int:
    from ..report import print_report
    from .. import firmware
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        try:
            firmware.model_load(m)
        except firmware.FirmwareError as e:
            raise UserError(str(e)) from None
    if args.subnets < 1 or args.phones_per_subnet < 1:
        raise UserError("--subnets and --phones-per-subnet must be at least 1")
    specs = scenario.phone_specs(args.subnets, args.phones_per_subnet, models)
    modes = ["pfs", "traditional"] if args.mode == "both" else [args.mode]
    results = []
    for mode in modes:
        t = time.perf_counter()
        results.append(simulate(specs, mode, scale=args.firmware_scale, seed=args.seed,
                                wan_rtt=args.wan_rtt, wan_bps=args.wan_bw))
        print(f"simulated {mode}: {len(specs)} phones in {time.perf_counter() - t:.1f} s")
    print_report(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results if len(results) > 1 else results[0], f, indent=1)
    return 0
