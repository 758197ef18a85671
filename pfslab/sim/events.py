"""The simulator's clock: one heap of plain tuples ``(t, seq, fn, a, b, c)``, run in order."""
from __future__ import annotations

import heapq


class EventHeap:
    def __init__(self):
        self.now = 0.0
        self.events = 0                # events run so far
        self._heap: list = []
        self._seq = 0

    def at(self, t: float, fn, a=None, b=None, c=None) -> None:
        """Schedule ``fn(a, b, c)`` at virtual time ``t`` (ties run in scheduling order)."""
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, fn, a, b, c))

    def busy(self) -> bool:
        """Whether the run should go on (subclasses add their own end condition)."""
        return True

    def run(self, until: float | None = None, tick=None, before: float | None = None) -> float:
        """Run events in time order until none is left, :meth:`busy` turns false, or the
        next is after ``until`` (or at or after ``before``: the clock then stays at the last
        event run); returns the time reached. ``tick()`` is called every 16,384 events (a
        progress line's chance to look at the clock)."""
        heap, pop = self._heap, heapq.heappop
        n = 0
        try:
            while heap and self.busy():
                if until is not None and heap[0][0] > until:
                    self.now = max(self.now, until)
                    break
                if before is not None and heap[0][0] >= before:
                    break
                t, _, fn, a, b, c = pop(heap)
                self.now = t
                fn(a, b, c)
                n += 1
                if tick is not None and not n & 0x3FFF:
                    self.events += n
                    n = 0
                    tick()
        finally:
            self.events += n
        return self.now
