"""`pfslab sim --jobs N`: a site's subnets split over N worker processes, the WAN in this one.

Subnets meet only at the WAN. Broadcasts, unicasts and streams stay within a subnet, and the
WAN sees a phone only when it asks for a file (``SimNet._fetch``) and when the file has come
(``SimNet._fetched``). A fetch asked at t ends no sooner than t + 2d (d: the WAN's one-way
delay: the request goes up, the last block comes down). So the run goes in rounds, a
conservative synchronisation with d as its lookahead: rounds of s = d/2, and at the start of
each the workers have run every event before H and the WAN (here) every event before H + s:

1. each worker is handed the WAN's completions in [H, H + s) (events in its heap, as a single
   process would run them), runs its events before H + s, and hands back the fetches its
   phones asked for meanwhile;
2. meanwhile this process runs the WAN's events before H + 2s. They need only the fetches
   asked before H + 2s - d = H, which it has; every completion before H + 2s is then known;
3. it feeds the workers' new fetches, in time order, to the WAN (a fetch asked at t >= H
   reaches HQ at t + d >= H + 2s, so never in the WAN's past), and H += s. When nothing
   happens for a while (a long root fetch at full size), H jumps to the next event
   anywhere.

The phones, the LAN and the WAN are the single-process ones; a run decides what a single
process decides, except the order of two things at the very same instant in different
subnets, which no phone can see (``tests/test_sim_parallel.py`` checks that runs give the
same roots, trees, completion times and WAN bytes). Workers are forked: they inherit the
site and HQ's files, made once here.
"""
from __future__ import annotations

import gc
import math
import multiprocessing as mp
import resource
import time

from ..firmware import Signer
from . import scenario
from .events import EventHeap
from .memnet import SimNet

#: the least one-way WAN delay worth the rounds (below it, a run takes one process)
MIN_DELAY = 1e-3


class _WanStub:
    """A worker's WAN: it only notes the fetches; the WAN itself runs in the parent."""
    up_bytes = retransmits = tail_drops = losses = failures = 0

    def __init__(self):
        self.asked: list = []

    def fetch(self, now: float, token, nbytes: int, name: str | None = None) -> None:
        node, file = token
        self.asked.append((now, node.subnet, len(self.asked), node.ip, file, nbytes, name))

    def delivered(self) -> tuple[int, int]:
        return 0, 0


def _worker(conn, site, mode, subnets, files, signer, seed, net_kw) -> None:
    gc.disable()
    net, phones = scenario.build(site, mode, seed=seed, signer=signer, files=files,
                                 subnets=subnets, **net_kw)
    net.wan = stub = _WanStub()
    for p in phones:
        net.reset(p)
    cpu = time.process_time()
    while True:
        cmd, horizon, done = conn.recv()
        if cmd == "run":
            for t, ip, file, ok, err in done:
                net.at(t, net._fetched, (net.nodes[ip], file), ok, err)
            if horizon[0] == "until":
                net.run(until=horizon[1])
            else:
                net.run(before=horizon[1])
            asked, stub.asked = stub.asked, []
            heap = net._heap
            conn.send((asked, net.pending, net.ok, net.failed, net.serving, net.events,
                       heap[0][0] if heap and net.busy() else math.inf, net.now))
        else:
            out = [(i, p.outcome()) for i, p in zip(
                (i for i, sp in enumerate(site.phones) if sp.subnet in subnets), phones)]
            conn.send((net.summary(), out, net.tftp_requests, time.process_time() - cpu,
                       resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
            conn.close()
            return


class _Totals:
    """What a progress line reads (PlainProgress), summed over the workers."""

    def __init__(self, wan):
        self.wan = wan
        self.now = 0.0
        self.ok = self.failed = self.serving = self.events = 0


def split(site, jobs: int) -> list[set[int]]:
    """The subnets dealt out in turn, each to the worker with the fewest phones so far: alike
    subnets go round-robin. (Consecutive runs would not do: the WAN serves the first subnets'
    requests first, so one worker's bursts would come a round before the other's, and each
    would wait for the other in turn.)"""
    counts: dict[int, int] = {}
    for sp in site.phones:
        counts[sp.subnet] = counts.get(sp.subnet, 0) + 1
    parts: list[set[int]] = [set() for _ in range(min(jobs, len(counts)))]
    load = [0] * len(parts)
    for k in sorted(counts):
        i = load.index(min(load))
        parts[i].add(k)
        load[i] += counts[k]
    return parts


def simulate_parallel(site, mode: str, *, jobs: int, seed: int, wan_delay_s: float,
                      wan_bps: float | None, blksize: int | None = None, wan_loss: float = 0.0,
                      until: float | None = None, wan_model: str = "packet",
                      wan_queue_s: float = 1.0, watch=None, progress=None) -> dict:
    """:func:`pfslab.sim.run.simulate` with the subnets over ``jobs`` workers (``watch``, a
    feed per phone, is not available here: plain ``progress`` lines are)."""
    from .run import net_options, result
    net_kw = net_options(wan_delay_s, wan_bps, blksize, wan_loss, wan_model, wan_queue_s)
    signer = Signer.generate()
    files = site.files(mode, signer)
    parts = split(site, jobs)
    ctx = mp.get_context("fork")
    conns, procs = [], []
    wall = time.monotonic()
    try:
        for subnets in parts:
            here, there = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(there, site, mode, subnets, files, signer,
                                                  seed, net_kw), daemon=True)
            p.start()
            there.close()
            conns.append(here)
            procs.append(p)
        s, indexed, tftp, cpu, peak = _rounds(conns, files, net_kw, wan_delay_s, until,
                                              progress, site)
        return result(mode, s, outcomes(site, indexed), tftp, until=until, wan_bps=wan_bps, wan_delay_s=wan_delay_s,
                      wan_loss=wan_loss, wan_model=wan_model, cpu=cpu,
                      wall=time.monotonic() - wall, peak_mb=peak, jobs=len(parts))
    finally:
        for c in conns:
            c.close()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()


def _rounds(conns, files, net_kw, d: float, until: float | None, progress, site):
    """The rounds of the module docstring; returns what :func:`~pfslab.sim.run.result`
    takes (summary, outcomes, TFTP requests) plus CPU seconds and peak memory, summed."""
    clock = EventHeap()
    done: list[list] = [[] for _ in conns]
    owner: dict[str, int] = {}                   # phone ip -> its worker

    def deliver(token, ok, error):
        ip, file = token
        done[owner[ip]].append((clock.now, ip, file, ok, error))

    wan = SimNet(files, **net_kw).wan            # the single process's WAN, on our clock
    wan.clock, wan.deliver = clock, deliver
    step = d / 2        # the WAN works a step ahead, while the workers run theirs
    totals = _Totals(wan)
    h = 0.0             # the workers have run every event before h, the WAN before h + step
    last = False
    while True:
        nxt = h + step
        if until is not None and nxt > until:
            nxt, last = until, True
        for i, c in enumerate(conns):
            c.send(("run", ("until" if last else "before", nxt), done[i]))
            done[i] = []
        # meanwhile the WAN's next step: it needs the fetches asked before nxt + step - d,
        # i.e. before h, which it has; its completions before nxt + step are the next round's
        _wan_to(clock, nxt + step, until)
        replies = [c.recv() for c in conns]
        h = nxt
        # in time order; at the same instant, by subnet (the phones' resets at t = 0 reach
        # the WAN in the site's order, as in one process), then as each worker ran them
        asked = sorted((a + (i,) for i, r in enumerate(replies) for a in r[0]),
                       key=lambda a: a[:3])
        for t, _, _, ip, file, nbytes, name, i in asked:
            owner[ip] = i                        # (its RRQ reaches HQ at t + d >= h + step)
            wan.fetch(t, (ip, file), nbytes, name)
        totals.ok = sum(r[2] for r in replies)
        totals.failed = sum(r[3] for r in replies)
        totals.serving = sum(r[4] for r in replies)
        totals.events = sum(r[5] for r in replies) + clock.events
        totals.now = max(r[7] for r in replies)
        if progress is not None:
            progress(totals)
        pending = sum(r[1] for r in replies)
        if last or pending == 0:
            break
        later = min(r[6] for r in replies)       # the workers' next events
        if not any(done):
            w = clock._heap[0][0] if clock._heap else math.inf
            if later == math.inf and w == math.inf:
                break                            # nothing left to happen (stuck phones)
            jump = min(later, w - step)          # nothing anywhere before it
            if until is not None:
                jump = min(jump, until)
            if jump > h:
                h = jump
    if progress is not None:
        progress(totals, final=True)
    ends = []
    for c in conns:
        c.send(("end", None, None))
    for c in conns:
        ends.append(c.recv())
    return _merge(ends, wan, clock, site) + (sum(e[3] for e in ends) + time.process_time(),
                                       sum(e[4] for e in ends)
                                       + resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                       / 1024)


def _wan_to(clock: EventHeap, t: float, until: float | None) -> None:
    """The WAN's events before ``t`` (at most those at or before ``until``)."""
    if until is not None and t > until:
        clock.run(until=until)
    else:
        clock.run(before=t)


def _merge(ends, wan, clock, site) -> tuple[dict, list[dict], list]:
    """One summary, as one process gives it: lists in the site's order, requests in time
    order (and at the same instant, in the site's order)."""
    subnet = {sp.ip: sp.subnet for sp in site.phones}
    name = {sp.name: i for i, sp in enumerate(site.phones)}
    sums = [e[0] for e in ends]
    truncated = any(s["truncated"] for s in sums)
    payload, wire = wan.delivered()
    ends_t = [s["makespan_s"] for s in sums if s["makespan_s"] is not None]
    s = {"truncated": truncated, "t_s": max(s["t_s"] for s in sums),
         "phones": sum(s["phones"] for s in sums),
         "completed": sum(s["completed"] for s in sums),
         "failed": sum(s["failed"] for s in sums), "killed": sum(s["killed"] for s in sums),
         "not_completed": sorted((n for s in sums for n in s["not_completed"]),
                                 key=name.__getitem__),
         "makespan_s": None if truncated else max(ends_t, default=0.0),
         "wan_payload_bytes": payload, "wan_wire_bytes": wire, "wan_up_bytes": wan.up_bytes,
         "tftp_retransmits": wan.retransmits, "wan_drops": wan.tail_drops,
         "wan_losses": wan.losses, "tftp_failures": wan.failures,
         "events": sum(s["events"] for s in sums) + clock.events,
         "datagrams": sum(s["datagrams"] for s in sums)}
    tftp = [(r[0], subnet[r[1]], k, r) for e in ends for k, r in enumerate(e[2])]
    return s, [o for e in ends for o in e[1]], [x[3] for x in sorted(tftp, key=lambda x: x[:3])]


def outcomes(site, indexed: list) -> list[dict]:
    """The phones' result entries, in the site's order."""
    return [{**vars(site.phones[i]), **o} for i, o in sorted(indexed, key=lambda x: x[0])]
