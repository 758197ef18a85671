"""A processor-sharing link: n active flows each get min(cap, bps/n), in O(log n) per event.

Every active flow is served at the same rate, so one number tracks them all: the virtual time
``v``, the bits each active flow has received since the link began. A flow of b bits that
starts when the virtual time is v0 ends when v reaches v0 + b: its finish tag. Tags wait in a
heap; the next completion is the smallest tag, whatever comes and goes meanwhile.
"""
from __future__ import annotations

import heapq
import math

_EPS = 1e-9


class PSLink:
    def __init__(self, bps: float | None, cap: float = math.inf):
        self.bps = bps if bps else math.inf      # None: no bandwidth limit
        self.cap = cap                           # a flow's own limit, bits/s
        self.v = 0.0
        self.t = 0.0
        self.n = 0
        self.served = 0.0                        # bits delivered, all flows
        self.gen = 0                             # bumped whenever the next finish may move
        self._heap: list[tuple[float, int, object]] = []
        self._start: dict[object, float] = {}    # token -> virtual start
        self._seq = 0

    def rate(self) -> float:
        """Each active flow's rate, bits/s."""
        return min(self.cap, self.bps / self.n) if self.n else 0.0

    def advance(self, now: float) -> None:
        r = self.rate()
        if now > self.t and self.n and r != math.inf:
            self.v += r * (now - self.t)
            self.served += r * self.n * (now - self.t)
        self.t = max(self.t, now)

    def add(self, now: float, bits: float, token) -> None:
        self.advance(now)
        self._seq += 1
        heapq.heappush(self._heap, (self.v + bits, self._seq, token))
        self._start[token] = self.v
        self.n += 1
        self.gen += 1

    def next_finish(self) -> float | None:
        """When the next flow ends (if nothing is added meanwhile), or None."""
        if not self._heap:
            return None
        r = self.rate()
        left = self._heap[0][0] - self.v
        return self.t if left <= _EPS or r == math.inf else self.t + left / r

    def pop_done(self, now: float) -> list:
        """Tokens of the flows that have finished by ``now``."""
        self.advance(now)
        out = []
        h = self._heap
        while h and (h[0][0] - self.v <= _EPS * max(1.0, abs(self.v)) or self.rate() == math.inf):
            _, _, token = heapq.heappop(h)
            del self._start[token]
            self.n -= 1
            out.append(token)
        if out:
            self.gen += 1
        return out

    def in_progress_bits(self, token) -> float:
        """Bits an active flow has received so far (0 if it is not active)."""
        v0 = self._start.get(token)
        return 0.0 if v0 is None else self.v - v0
