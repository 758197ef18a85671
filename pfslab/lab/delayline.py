"""A userspace WAN delay line for kernels without sch_netem.

Runs as one process inside the HQ router's network namespace; iptables there sends every
packet forwarded through the WAN interface (both directions) to NFQUEUE <queue>::

    iptables -I FORWARD -i <wan> -j NFQUEUE --queue-num Q
    iptables -I FORWARD -o <wan> -j NFQUEUE --queue-num Q

Each packet is either dropped (loss, from a seeded RNG: the same seed drops the same packet
numbers) or held in a heap keyed by its release time (arrival + delay); a timer thread gives
the ACCEPT verdicts when they are due. The queue callback never sleeps, so packets in flight
overlap exactly as on a long wire, and a constant delay keeps their order.

Only metadata is copied to userspace (COPY_META): the kernel keeps the packet, we keep the id.

Usage (the lab starts it; `nsenter --net=/proc/<router shell pid>/ns/net` in front):
    python -m pfslab.lab.delayline --queue 0 --delay 0.075 --loss 0.005 --seed 1
It prints `ready` once bound, and on SIGTERM/SIGINT a JSON line of counters, then exits.
"""
from __future__ import annotations

import argparse
import heapq
import itertools
import json
import random
import signal
import sys
import threading
import time

from netfilterqueue import COPY_META, NetfilterQueue


class DelayLine:
    def __init__(self, delay: float, loss: float, seed: int):
        self.delay = float(delay)
        self.loss = float(loss)
        self.rng = random.Random(seed)
        self.heap: list = []
        self.seq = itertools.count()
        self.cond = threading.Condition()
        self.stopping = False
        self.stats = {"packets": 0, "dropped": 0, "released": 0, "max_held": 0, "late_max_ms": 0.0}

    # called by netfilterqueue for each packet: O(log n), never blocks
    def on_packet(self, pkt) -> None:
        self.stats["packets"] += 1
        if self.loss and self.rng.random() < self.loss:
            self.stats["dropped"] += 1
            pkt.drop()
            return
        if self.delay <= 0:
            self.stats["released"] += 1
            pkt.accept()
            return
        due = time.monotonic() + self.delay
        with self.cond:
            heapq.heappush(self.heap, (due, next(self.seq), pkt))
            if len(self.heap) > self.stats["max_held"]:
                self.stats["max_held"] = len(self.heap)
            if self.heap[0][2] is pkt:
                self.cond.notify()

    def releaser(self) -> None:
        while True:
            with self.cond:
                while not self.stopping and (
                        not self.heap or self.heap[0][0] > time.monotonic()):
                    timeout = (self.heap[0][0] - time.monotonic()) if self.heap else None
                    self.cond.wait(timeout)
                if self.stopping:
                    return
                now = time.monotonic()
                due = []
                while self.heap and self.heap[0][0] <= now:
                    due.append(heapq.heappop(self.heap))
            for when, _, pkt in due:
                late = (now - when) * 1000.0
                if late > self.stats["late_max_ms"]:
                    self.stats["late_max_ms"] = round(late, 3)
                try:
                    pkt.accept()
                    self.stats["released"] += 1
                except Exception:  # queue gone while stopping
                    return

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="NFQUEUE delay line (see module docstring)")
    p.add_argument("--queue", type=int, default=0)
    p.add_argument("--delay", type=float, default=0.0, help="one-way delay, seconds")
    p.add_argument("--loss", type=float, default=0.0, help="drop probability per packet")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-len", type=int, default=65536, help="kernel queue length (packets)")
    a = p.parse_args(argv)

    line = DelayLine(a.delay, a.loss, a.seed)
    nfq = NetfilterQueue()

    def on_signal(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    nfq.bind(a.queue, line.on_packet, max_len=a.max_len, mode=COPY_META,
             sock_len=64 * 1024 * 1024)
    t = threading.Thread(target=line.releaser, name="release", daemon=True)
    t.start()
    print("ready", flush=True)
    try:
        nfq.run()
    except SystemExit:
        pass
    finally:
        line.stop()
        t.join(1.0)
        line.stats["held_at_exit"] = len(line.heap)
        print(json.dumps(line.stats), flush=True)
        try:
            nfq.unbind()
        except Exception:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
