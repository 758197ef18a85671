"""`pfslab sim`: the same phones, in memory with a virtual clock, for sites too big for a lab.

The WAN model is simple: every TFTP transfer is lock-step (one block per round trip) and all
share the WAN bandwidth fairly; no loss, no TCP dynamics on the LAN. It shows the protocol's
behaviour (elections, trees, who fetches what) at any scale; the Mininet lab measures timings.
Same site, same settings and same flags (same units) as `pfslab lab`; results.json's schema.
The live view shows the phones' screens in virtual time (pfslab.view.sim_feed).
"""
from __future__ import annotations

import argparse
import re
import time

from .. import results as res
from ..settings import Settings, add_options, deprecated
from ..site import Site
from ..view.live import Board, LiveView
from ..view.sim_feed import SimFeed
from . import scenario

def add_arguments(p: argparse.ArgumentParser) -> None:
    add_options(p, "sim")
    p.add_argument("--wan-rtt", type=float, default=None, help=argparse.SUPPRESS)  # deprecated
    p.add_argument("--json", help="write results here (results.json's schema; default: none)")
    p.add_argument("--no-live", action="store_true",
                   help="plain progress lines instead of the live phone screens (the default "
                        "without a terminal)")


def simulate(site: Site, mode: str, *, seed: int, wan_delay_s: float, wan_bps: float | None,
             blksize: int | None = None, watch=None) -> dict:
    """Run one upgrade in memory; return one results.json entry. ``watch(phone, now)`` is
    called after each input a phone takes (the live view's feed)."""
    net, phones = scenario.build(site, mode, seed=seed, wan_rtt=2 * wan_delay_s,
                                 wan_bps=wan_bps, **({"blksize": blksize} if blksize else {}))
    net.on_drain = watch
    for p in phones:
        net.reset(p)
    net.run(until=24 * 3600)
    out = [{**vars(sp), **p.outcome()} for sp, p in zip(site.phones, phones)]
    tftp = [{"client": ip, "file": f, "t": round(t, 3)} for t, ip, f in net.tftp_requests]
    return res.ModeResult(
        mode=mode, wan={**res.wan_dict(wan_bps, wan_delay_s, 0.0), "emulation": "simulated"},
        phones=out, tftp_requests=tftp,
        wan_bytes=sum(len(net.files.get(r["file"], b"")) for r in tftp),
        hierarchies=res.hierarchies(out)).to_dict()


def _old_flags(args) -> None:
    """`--wan-rtt S` and a `--wan-bw` in plain bit/s (e.g. 512e3) still work, with a warning."""
    if args.wan_rtt is not None:
        deprecated("--wan-rtt SECONDS", "--wan-delay (one way, e.g. 75ms)")
        args.wan_delay = f"{args.wan_rtt * 500:g}ms"
    if re.fullmatch(r"\d+(\.\d*)?[eE]\d+", str(args.wan_bw).strip()):
        deprecated(f"--wan-bw {args.wan_bw}", "--wan-bw with a unit (e.g. 512kbit)")
        args.wan_bw = f"{float(args.wan_bw):.0f}bit"


def run(args) -> int:
    from ..report import print_report
    _old_flags(args)
    settings = Settings.from_args(args)
    site = settings.site()
    bps, delay, _ = settings.wan()
    results = []
    phones = [{"name": p.name, "model": p.model, "subnet": p.subnet} for p in site.phones]
    for mode in settings.modes:
        t = time.perf_counter()
        with LiveView(Board(phones, mode, bps), live=False if args.no_live else None) as view:
            results.append(simulate(site, mode, seed=settings.seed, wan_delay_s=delay,
                                    wan_bps=bps, blksize=settings.blksize,
                                    watch=SimFeed(view.event)))
        print(f"simulated {mode}: {len(site.phones)} phones in {time.perf_counter() - t:.1f} s")
    print_report(results)
    if args.json:
        res.write_results(results, args.json)
    return 0
