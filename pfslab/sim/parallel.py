"""`pfslab sim --jobs N`: a site's subnets split over N worker processes, the WAN in this one.

Subnets meet only at the WAN. Broadcasts, unicasts and streams stay within a subnet, and the
WAN sees a phone only when it asks for a file (``SimNet._fetch``) and when the file has come
(``SimNet._fetched``). A fetch asked at t reaches HQ no sooner than t + d (d: the WAN's
one-way delay) and ends no sooner than t + 2d. That is the lookahead of a conservative
synchronisation. Let L be the slowest worker's horizon (it has run every event before L):

1. every fetch asked before L is known; this process feeds them, in time order (at the same
   instant by subnet, then in their worker's order: what one process gives), to the same WAN
   model a single process uses, and may run the WAN's events before L + d: every completion
   before L + d is then known;
2. an idle worker is handed its completions up to its next horizon, at most L + d, in steps
   of d/2 (so that the others work meanwhile: up to d ahead of the slowest), runs its events
   before it, and hands back the fetches its phones asked for;
3. a worker with nothing of its own before its next horizon moves there without a message;
   when nothing happens anywhere (a long root fetch at full size), all of them do.

The phones, the LAN and the WAN are the single-process ones; a run decides what a single
process decides, except the order of two things at the very same instant in different
subnets, which no phone can see (``tests/test_sim_parallel.py`` checks that runs give the
same roots, trees, completion times and WAN bytes). Workers are forked: they inherit the
site and HQ's files, made once here.
"""
from __future__ import annotations

import gc
import heapq
import math
import multiprocessing as mp
import resource
import time
from collections import deque
from multiprocessing.connection import wait as mp_wait

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
            conn.send((net.summary(), out, net.tftp_requests, time.process_time() - cpu))
            # its peak, sending those (pickled) included
            conn.send(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
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
    n = len(conns)
    done: list[deque] = [deque() for _ in conns]    # completions per worker, in time order
    owner: dict[str, int] = {}                      # phone ip -> its worker

    def deliver(token, ok, error):
        ip, file = token
        done[owner[ip]].append((clock.now, ip, file, ok, error))

    wan = SimNet(files, **net_kw).wan            # the single process's WAN, on our clock
    wan.clock, wan.deliver = clock, deliver
    step = d / 2
    totals = _Totals(wan)
    h = [0.0] * n             # worker i has run every event before h[i]
    later = [0.0] * n         # ... and its next event is then (inf: none, or all ended)
    ended = [False] * n       # all its phones ended, or it ran to ``until``
    busy: dict[int, tuple[float, bool]] = {}       # worker -> the horizon it is running to
    stats = [(0, 0, 0, 0, 0.0)] * n                # ok, failed, serving, events, now
    asked: list = []          # fetches not fed to the WAN yet, a heap in feeding order
    while True:
        live = [h[i] for i in range(n) if not ended[i]]
        if not live:
            break
        low = min(live)
        # every fetch asked before low is known (each live worker is past it): to the WAN,
        # in time order; at the same instant by subnet (the phones' resets at t = 0 reach
        # it in the site's order, as in one process), then as their worker ran them
        while asked and asked[0][0] < low:
            t, _, _, ip, file, nbytes, name, i = heapq.heappop(asked)
            owner[ip] = i                        # (its RRQ reaches HQ at t + d >= low + d)
            wan.fetch(t, (ip, file), nbytes, name)
        for i in range(n):
            if i in busy or ended[i]:
                continue
            # as far as the WAN's completions are known: low + d (a step at a time, so
            # that the others can work meanwhile)
            target, last = min(h[i] + step, low + d), False
            if until is not None and target >= until:
                target, last = until, True
            if target <= h[i] and not last:
                continue                         # it waits for the slowest
            _wan_to(clock, target, until)
            q, batch = done[i], []
            while q and (q[0][0] < target or (last and q[0][0] <= until)):
                batch.append(q.popleft())
            if not batch and later[i] >= target and not last:
                h[i] = target                    # nothing of its own before then
                continue
            conns[i].send(("run", ("until" if last else "before", target), batch))
            busy[i] = (target, last)
        if not busy:
            if all(later[i] == math.inf for i in range(n) if not ended[i]) and not any(done) \
                    and not clock._heap and not asked:
                break                            # nothing left to happen (stuck phones)
            continue
        for c in mp_wait([conns[i] for i in busy]):
            i = conns.index(c)
            r = c.recv()
            h[i], last = busy.pop(i)
            for a in r[0]:
                heapq.heappush(asked, a + (i,))
            later[i], stats[i] = r[6], r[2:6] + (r[7],)
            ended[i] = last or r[1] == 0
        totals.ok, totals.failed, totals.serving, totals.events = (
            sum(x[k] for x in stats) for k in range(4))
        totals.events += clock.events
        totals.now = max(x[4] for x in stats)
        if progress is not None:
            progress(totals)
    if progress is not None:
        progress(totals, final=True)
    ends = []
    for c in conns:
        c.send(("end", None, None))
    for c in conns:
        ends.append(c.recv() + (c.recv(),))
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
