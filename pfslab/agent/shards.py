"""Several agent processes for one lab run: one per core, phones dealt out round-robin.

One Python process is one core. ``pfslab phone many SPEC --procs K`` (or the spec's
``agent_procs``) makes this process a supervisor: it deals the phones out (phone i goes to
worker i mod K), starts K workers (``pfslab phone many SHARD --worker``) and speaks a
three-line protocol with each on its stdin/stdout:

    worker -> {"event": "ready"}        every socket is open
    super  -> go <T0>                   reset at loop time T0 (CLOCK_MONOTONIC: shared)
    worker -> {"event": "shard_done"}   all its phones have completed
    super  -> stop                      all workers' phones have: linger, then exit

A worker's roots serve phones in other workers, so none stops before all are done. The
supervisor forwards the workers' progress events, merges their results in the spec's phone
order, and emits one ``agent_stats`` event: each process's figures and the merged timer lag.
SIGTERM/SIGINT are passed on to the workers, which then write what they have.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

from ..errors import UserError
from ..lab.fidelity import LagMeter

CONTROL = {"ready", "shard_done", "agent_stats", "started", "finished", "reset"}
#: How far ahead of "everyone is ready" the common reset time is set.
GO_MARGIN_S = 0.3


def deal(phones: list, k: int) -> list[list]:
    """Phone i to shard i mod k (shards balanced within one phone)."""
    return [phones[i::k] for i in range(k)]


def auto_procs(n_phones: int) -> int:
    """One process per core, but not for small runs (a process costs ~0.3 s and 20 MB)."""
    return max(1, min(os.cpu_count() or 1, n_phones // 100))


class _Worker:
    def __init__(self, i: int, argv: list[str]):
        self.i = i
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.ready = threading.Event()
        self.done = threading.Event()
        self.stats: dict | None = None

    def say(self, line: str) -> None:
        try:
            self.proc.stdin.write((line + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass


def run_sharded(raw: dict, spec_path: str, results_path: str | None, k: int, emit,
                extra_args: list[str] = (), dilation: float = 1.0) -> list[dict]:
    """Run ``raw`` (an agent spec) in ``k`` worker processes; returns the merged results."""
    phones = raw["phones"]
    base = os.path.splitext(results_path or spec_path)[0]
    workers: list[_Worker] = []
    lock = threading.Lock()
    for i, part in enumerate(deal(phones, k)):
        shard = {**raw, "phones": part, "agent_procs": 1, "shard": [i, k],
                 "time_dilation": dilation}
        if i:
            shard["faults"] = []                # fault injection picks from shard 0's phones
        path = f"{base}.shard{i}.json"
        with open(path, "w") as f:
            json.dump(shard, f)
        argv = [sys.executable, "-m", "pfslab.agent", "many", path, "--worker",
                "--results", f"{base}.shard{i}.results.json", *extra_args]
        workers.append(_Worker(i, argv))

    def pump(w: _Worker) -> None:
        for raw_line in w.proc.stdout:
            try:
                ev = json.loads(raw_line)
            except ValueError:
                continue
            kind = ev.get("event")
            if kind == "ready":
                w.ready.set()
            elif kind == "shard_done":
                w.done.set()
            elif kind == "agent_stats":
                w.stats = ev
            if kind not in CONTROL:
                with lock:
                    emit(ev)
        w.ready.set()                           # it exited: nobody waits on it any more
        w.done.set()

    threads = [threading.Thread(target=pump, args=(w,), daemon=True) for w in workers]
    for t in threads:
        t.start()

    def stop(signum, frame):
        for w in workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for w in workers:
            w.ready.wait()
        emit({"event": "started", "phones": len(phones), "processes": k})
        t0 = time.monotonic() + GO_MARGIN_S
        for w in workers:
            w.say(f"go {t0!r}")
        emit({"event": "reset", "epoch": time.time() + (t0 - time.monotonic()),
              "time_dilation": dilation})
        for w in workers:
            while not w.done.wait(0.5):
                pass
        for w in workers:
            w.say("stop")
        for w in workers:
            w.proc.wait()
        for t in threads:
            t.join(5)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    results: dict[str, dict] = {}
    for w in workers:
        path = f"{base}.shard{w.i}.results.json"
        try:
            with open(path) as f:
                for r in json.load(f):
                    results[r["name"]] = r
        except (OSError, ValueError):
            raise UserError(f"agent worker {w.i} wrote no results (exit {w.proc.returncode})")
    procs = [{k: v for k, v in w.stats.items() if k not in ("event", "processes")}
             for w in workers if w.stats]
    lag = LagMeter.merge(LagMeter.from_dict(p.get("lag") or {}) for p in procs)
    sources = {p.get("lag_source") for p in procs} - {None}
    emit({"event": "agent_stats", "processes": procs, "lag": lag.to_dict(),
          "lag_source": "timers" if "timers" in sources else "heartbeat",
          "time_dilation": dilation,
          "maxrss_kb_total": sum(p.get("maxrss_kb", 0) for p in procs)})
    missing = [p["name"] for p in phones if p["name"] not in results]
    if missing:
        raise UserError(f"agent workers gave no result for {len(missing)} phones "
                        f"(e.g. {missing[0]})")
    return [results[p["name"]] for p in phones]
