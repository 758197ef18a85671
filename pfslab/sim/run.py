"""`pfslab sim`: the same phones, in memory with a virtual clock, for sites too big for a lab.

The WAN is a link with a queue (tail drop, loss, TFTP's timers and backoff; or, with
``--wan-model fluid``, ideal fair sharing); docs/sim.md describes the model and what it
leaves out. Firmware travels as sizes and digests, not bytes. A run goes on until every
phone has ended, or until ``--until`` (then it says so: "not reached"). Same site, same
settings and same flags (same units) as `pfslab lab`; results.json's schema.
The live view shows the phones' screens in virtual time (pfslab.view.sim_feed).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import os
import re
import resource
import sys
import time

from .. import firmware
from .. import results as res
from ..errors import UserError
from ..settings import Settings, add_options, deprecated
from ..site import Site
from ..view.live import Board, LiveView
from ..view.sim_feed import PlainProgress, SimFeed
from . import scenario

#: from this many phones, ``--jobs auto`` takes a worker per CPU (below, a round's cost
#: outweighs what a second process brings)
AUTO_JOBS_PHONES = 10_000


def jobs_for(arg: str, site: Site, live: bool) -> int:
    """``--jobs``: a whole number from 1, or auto (see :data:`AUTO_JOBS_PHONES`)."""
    if str(arg).strip().lower() == "auto":
        if live or len(site.phones) < AUTO_JOBS_PHONES:
            return 1
        return max(1, min(os.cpu_count() or 1, site.subnets()))
    try:
        n = int(arg)
    except ValueError:
        n = 0
    if not 1 <= n <= 256:
        raise UserError(f"--jobs takes a whole number of processes from 1 to 256, or auto; "
                        f"not {arg!r}")
    return n


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_options(p, "sim")
    p.add_argument("--wan-rtt", type=float, default=None, help=argparse.SUPPRESS)  # deprecated
    p.add_argument("--json", help="write results here (results.json's schema; default: none)")
    p.add_argument("--no-live", action="store_true",
                   help="plain progress lines instead of the live phone screens (the default "
                        "without a terminal)")
    p.add_argument("--until", type=float, default=None, metavar="S",
                   help="stop at S seconds of virtual time (default: run until every phone "
                        "has ended)")
    p.add_argument("--wan-model", choices=("packet", "fluid"), default="packet",
                   help="packet: a FIFO queue with tail drop and TFTP timers; fluid: ideal "
                        "fair sharing (default: packet)")
    p.add_argument("--wan-queue", type=float, default=1.0, metavar="S",
                   help="WAN queue, seconds at the WAN rate, as the lab's (default: 1.0)")
    p.add_argument("--jobs", default="auto", metavar="N",
                   help="worker processes, the subnets split between them (the same "
                        f"results); auto: one per CPU for {AUTO_JOBS_PHONES:,} phones or "
                        "more, else one (default: auto)")


@contextlib.contextmanager
def _no_gc():
    """Python's cyclic garbage collector paused: building, running and reporting 10^5 phones
    makes no cyclic garbage, and each collection would walk all of their objects."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def simulate(site: Site, mode: str, *, jobs: int = 1, **kw) -> dict:
    """Run one upgrade in memory; return one results.json entry (see :func:`_simulate`).
    ``jobs`` > 1: the subnets split over that many worker processes
    (:mod:`pfslab.sim.parallel`)."""
    with _no_gc():
        if jobs > 1 and site.subnets() > 1:
            from .parallel import MIN_DELAY, simulate_parallel
            if kw["wan_delay_s"] >= MIN_DELAY and kw.get("watch") is None:
                return simulate_parallel(site, mode, jobs=jobs, **kw)
        return _simulate(site, mode, **kw)


def net_options(wan_delay_s: float, wan_bps: float | None, blksize: int | None, wan_loss: float,
                wan_model: str, wan_queue_s: float) -> dict:
    """SimNet's keywords for a run with these settings (one process or its workers)."""
    return dict(wan_rtt=2 * wan_delay_s, wan_bps=wan_bps, wan_model=wan_model,
                wan_loss=wan_loss, wan_queue_bytes=wan_bps / 8 * wan_queue_s if wan_bps
                else None, payloads=False, logs=False, **({"blksize": blksize} if blksize else {}))


def _simulate(site: Site, mode: str, *, seed: int, wan_delay_s: float, wan_bps: float | None,
             blksize: int | None = None, wan_loss: float = 0.0, until: float | None = None,
             wan_model: str = "packet", wan_queue_s: float = 1.0, watch=None,
             progress=None) -> dict:
    """Run one upgrade in memory; return one results.json entry (``sim``: the run's own
    figures: events, CPU, peak memory, what the WAN dropped and resent). ``watch(phone,
    now)`` is called after each input that changed what a phone shows (the live view's
    feed); ``progress(net)`` every 16,384 events, and ``progress(net, final=True)`` at the
    end (plain lines)."""
    net, phones = scenario.build(site, mode, seed=seed, **net_options(
        wan_delay_s, wan_bps, blksize, wan_loss, wan_model, wan_queue_s))
    net.on_drain = watch
    for p in phones:
        net.reset(p)
    wall, cpu = time.monotonic(), time.process_time()
    net.run(until=until, tick=None if progress is None else lambda: progress(net))
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    if progress is not None:
        progress(net, final=True)
    out = [{**vars(sp), **p.outcome()} for sp, p in zip(site.phones, phones)]
    return result(mode, net.summary(), out, net.tftp_requests, until=until, wan_bps=wan_bps,
                  wan_delay_s=wan_delay_s, wan_loss=wan_loss, wan_model=wan_model, cpu=cpu,
                  wall=wall, peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def result(mode: str, s: dict, out: list[dict], tftp_requests, *, until, wan_bps, wan_delay_s,
           wan_loss, wan_model, cpu: float, wall: float, peak_mb: float, jobs: int = 1) -> dict:
    """One results.json entry from a run's summary (``SimNet.summary``'s keys), its phones'
    outcomes (site order) and its TFTP requests ``(t, client, file)``."""
    tftp = [{"client": ip, "file": f, "t": round(t, 3)} for t, ip, f in tftp_requests]
    return res.ModeResult(
        mode=mode, wan={**res.wan_dict(wan_bps, wan_delay_s, wan_loss), "emulation": "simulated",
                        "model": wan_model},
        phones=out, tftp_requests=tftp, wan_bytes=s["wan_wire_bytes"] + s["wan_up_bytes"],
        wan_tftp_bytes=s["wan_wire_bytes"] + s["wan_up_bytes"],
        hierarchies=res.hierarchies(out), truncated=s["truncated"],
        sim={"t_s": s["t_s"], "until_s": until, "not_completed": s["not_completed"],
             "wan_payload_bytes": s["wan_payload_bytes"], "wan_down_bytes": s["wan_wire_bytes"],
             "wan_up_bytes": s["wan_up_bytes"], "tftp_retransmits": s["tftp_retransmits"],
             "wan_drops": s["wan_drops"], "wan_losses": s["wan_losses"],
             "tftp_failures": s["tftp_failures"], "events": s["events"],
             "datagrams": s["datagrams"], "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
             "jobs": jobs,
             "events_per_s": round(s["events"] / wall) if wall > 0 else None,
             "peak_rss_mb": round(peak_mb)}
    ).to_dict()


def sharing(site: Site) -> list[str]:
    """What shares with what: phones share a file only with phones of their own model (one
    PFS hierarchy per subnet, model and file), models may use the same load, and some models
    cannot share at all."""
    by_load: dict[str, list[str]] = {}
    for m in site.models():
        by_load.setdefault(firmware.model_load(m), []).append(m)
    lines = []
    for load, models in by_load.items():
        pfs = [m for m in models if m in firmware.PFS_CAPABLE]
        if pfs:
            lines.append(f"{', '.join(pfs)} (load {load}): phones share with phones of their "
                         "own model, one PFS hierarchy per subnet, model and file")
        lines += [f"{m} (load {load}): not PFS-capable, upgrades by TFTP in both modes"
                  for m in models if m not in firmware.PFS_CAPABLE]
    return lines


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
    bps, delay, loss = settings.wan()
    if args.until is not None and not args.until > 0:
        raise UserError("--until must be a positive number of seconds (virtual time)")
    if not args.wan_queue > 0:
        raise UserError("--wan-queue must be a positive number of seconds")
    live = not args.no_live and sys.stdout.isatty()
    jobs = jobs_for(args.jobs, site, live)
    for line in sharing(site):
        print(f"models: {line}")
    results = []
    phones = [{"name": p.name, "model": p.model, "subnet": p.subnet} for p in site.phones]
    if jobs > 1 and live:
        print(f"--jobs {jobs}: plain progress lines (the live phone screens take one process)")
        live = False
    for mode in settings.modes:
        kw = dict(seed=settings.seed, wan_delay_s=delay, wan_bps=bps, blksize=settings.blksize,
                  wan_loss=loss, until=args.until, wan_model=args.wan_model,
                  wan_queue_s=args.wan_queue, jobs=jobs)
        if live:
            with LiveView(Board(phones, mode, bps), live=True) as view:
                r = simulate(site, mode, watch=SimFeed(view.event, every=0.25), **kw)
        else:
            r = simulate(site, mode, progress=PlainProgress(mode, len(site.phones), bps), **kw)
        results.append(r)
        m = r["sim"]
        procs = f"{m['jobs']} processes, " if m["jobs"] > 1 else ""
        print(f"simulated {mode}: {len(site.phones)} phones, {m['events']:,} events in "
              f"{m['wall_s']:.1f} s ({procs}{m['cpu_s']:.1f} s CPU; "
              f"{m['events_per_s'] or 0:,} events/s), peak memory "
              f"{m['peak_rss_mb']:,} MB; virtual time {m['t_s']:,.1f} s"
              + (f": cut short by --until, {len(m['not_completed'])} phones not done"
                 if r["truncated"] else ""))
    with _no_gc():
        print_report(results)
    if args.json:
        res.write_results(results, args.json)
    return 0
