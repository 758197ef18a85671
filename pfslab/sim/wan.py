"""The WAN between HQ's TFTP server and the phones, as the simulator sees it. Two models:

:class:`PacketWan` (the default): the bottleneck is the lab's link, a token bucket filter
(``tc tbf``: :func:`tbf_params`). Every TFTP packet from HQ (OACK, DATA blocks) waits in one
FIFO of ``queue_bytes``, leaves when the bucket (filled at ``bps`` up to its burst) holds its
bytes, and then propagates for half the round trip; a packet that finds the queue full is
dropped (tail drop),
and any packet may be lost at random (``loss``). TFTP is lock-step: block k+1 leaves HQ when
the ACK of block k arrives. A block whose ACK has not come back ``rto`` after it left is sent
again; ``rto`` doubles (up to ``max_backoff`` x ``timeout``) until progress, and after
``retries`` retransmissions of one block the fetch fails. One heap event per block; a timer
event only when the block's ACK will not beat it. The upstream direction (RRQs, ACKs) is not
queued: it carries ~3 % of the downstream bytes.

:class:`FluidWan`: every transfer is a fluid sharing the bandwidth fairly with the others,
each capped at one block per :func:`block_time` (lock-step), after one round trip
for the request.
No queue, no loss: O(log n) per fetch, whatever the file size. The seed of the curves.

Both count what actually crossed the link: payload bytes and wire bytes (with TFTP, UDP, IP
and Ethernet headers), so a truncated run reports bytes delivered, not bytes requested.
"""
from __future__ import annotations

import math
import random
from collections import deque

from .pslink import PSLink

#: Per-packet bytes around a TFTP payload: TFTP 4, UDP 8, IPv4 20, Ethernet 14.
OVERHEAD = 4 + 8 + 20 + 14
#: An OACK (blksize, tsize, timeout options) and an RRQ/ACK, on the wire.
OACK_BYTES = OVERHEAD - 4 + 2 + 40
ACK_BYTES = OVERHEAD
#: An RRQ's name and options, beyond an ACK's size.
RRQ_EXTRA = 40


def request_bytes(name: str | None, nbytes: int, blksize: int,
                  timeout: float = 1.0) -> tuple[int, int]:
    """(RRQ, OACK) on the wire for a fetch of file ``name``, ``nbytes`` long: the options the
    phones ask for (blksize unless 512, tsize 0, a whole-second timeout: pfslab.agent.tftp)
    and HQ's answer (the same, tsize the file's size). Without a name: the fixed estimates
    ``ACK_BYTES + RRQ_EXTRA`` and ``OACK_BYTES``."""
    if name is None:
        return ACK_BYTES + RRQ_EXTRA, OACK_BYTES
    opts = (f"blksize\0{blksize}\0" if blksize != 512 else "") + "tsize\0{}\0" + (
        f"timeout\0{int(timeout)}\0" if timeout == int(timeout) and 1 <= timeout <= 255 else "")
    head = OVERHEAD - 4 + 2                    # Ethernet, IPv4, UDP and the opcode
    return (head + len(name) + 1 + len("octet\0") + len(opts.format(0)),
            head + len(opts.format(nbytes)))


def tbf_params(bw_bps: int, queue_s: float = 1.0) -> dict:
    """The lab's token bucket (``tc tbf``, pfslab.lab.wan) for a rate and a queue in seconds:
    ``rate`` bytes/s; ``burst``, the bucket (at least two full frames, ~4 ms at the rate);
    ``limit``, the bytes that may wait (``queue_s`` at the rate, at least the bucket plus 64
    full frames)."""
    rate = int(bw_bps) // 8
    burst = max(3200, int(rate * 0.004))
    return {"rate": rate, "burst": burst, "limit": max(burst + 64 * 1514, int(rate * queue_s))}


def block_time(rtt: float, bps: float | None, blksize: int, burst: float = 0.0) -> float:
    """One full block of a lock-step transfer alone on the link: its round trip, and the
    serialisation of the block and of its ACK; with a token bucket of ``burst`` bytes that
    holds a block, the block leaves at once and the link's rate only caps the average."""
    if not bps:
        return rtt
    if burst >= blksize + OVERHEAD:
        return max(rtt, (blksize + OVERHEAD) * 8 / bps)
    return rtt + (blksize + OVERHEAD + ACK_BYTES) * 8 / bps


def blocks_of(nbytes: int, blksize: int) -> int:
    """TFTP DATA blocks for a file: the last is shorter than blksize (maybe empty)."""
    return nbytes // blksize + 1


class _Flow:
    __slots__ = ("token", "nbytes", "blocks", "k", "tries", "rto", "best_ack", "done", "oack")

    def __init__(self, token, nbytes: int, blocks: int, rto: float, oack: int = OACK_BYTES):
        self.token, self.nbytes, self.blocks, self.oack = token, nbytes, blocks, oack
        self.k = 0                     # the block in flight: 0 is the OACK
        self.tries = 0
        self.rto = rto
        self.best_ack = math.inf       # earliest known ACK of block k at HQ
        self.done = False


def lab_burst(bps: float | None, burst_bytes: float | None) -> float:
    """The token bucket a WAN model uses: ``burst_bytes``, or (None) the lab's for ``bps``."""
    if burst_bytes is not None:
        return burst_bytes
    return tbf_params(bps)["burst"] if bps else 0.0


class PacketWan:
    """See the module docstring. ``clock`` has ``now`` and ``at(t, fn, a, b, c)``;
    ``deliver(token, ok, error)`` is called when a fetch ends. ``burst_bytes``: the token
    bucket; None is the lab's TBF (:func:`tbf_params`), whose queue is then at least the
    bucket plus 64 full frames, as the lab's; 0 is a plain serialising link."""

    def __init__(self, clock, deliver, *, bps: float | None, rtt: float, blksize: int = 1428,
                 queue_bytes: float | None = None, loss: float = 0.0, seed: int = 1,
                 timeout: float = 1.0, retries: int = 8, max_backoff: float = 8.0,
                 burst_bytes: float | None = None):
        self.clock, self.deliver = clock, deliver
        self.bps, self.d, self.blksize = bps, rtt / 2, blksize
        self.burst = lab_burst(bps, burst_bytes)
        self.limit = queue_bytes if queue_bytes is not None else (
            bps / 8 if bps else math.inf)              # the lab's default: 1 s at the rate
        if burst_bytes is None and bps:
            self.limit = max(self.limit, tbf_params(bps, 0.0)["limit"])
        self.loss, self.rng = loss, random.Random(f"wan|{seed}")
        self.timeout, self.retries, self.max_backoff = timeout, retries, max_backoff
        self._q: deque[tuple[float, int]] = deque()   # (departure, bytes) waiting to leave
        self._qbytes = 0
        self._last_dep = 0.0
        self._tokens = self.burst                      # the bucket, at _last_dep
        # the upstream (RRQs, ACKs: ~3 % of the bytes) is not queued: with a bucket that
        # holds an ACK it leaves at once, else it pays its serialisation
        self._up = ACK_BYTES * 8 / bps if bps and self.burst < ACK_BYTES else 0.0
        self.payload_bytes = 0        # TFTP data delivered to the phones (first copies)
        self.wire_bytes = 0           # every packet that crossed the link, duplicates included
        self.up_bytes = 0             # RRQs and ACKs, the other way
        self.tail_drops = 0
        self.losses = 0
        self.retransmits = 0
        self.failures = 0

    def fetch(self, now: float, token, nbytes: int, name: str | None = None) -> None:
        """Fetch ``nbytes`` (file ``name``: the RRQ and OACK have their real sizes)."""
        rrq, oack = request_bytes(name, nbytes, self.blksize, self.timeout)
        f = _Flow(token, nbytes, blocks_of(nbytes, self.blksize), self.timeout, oack)
        self.up_bytes += rrq
        self.clock.at(now + self.d + self._up, self._send, f, 0, None)   # the RRQ goes up

    # ----------------------------------------------------------------- the link

    def _enqueue(self, now: float, size: int) -> float | None:
        """A packet enters the bottleneck at ``now``: its arrival at the phone, or None."""
        if self.bps:
            q = self._q
            while q and q[0][0] <= now:
                self._qbytes -= q.popleft()[1]
            if self._qbytes + size > self.limit:
                self.tail_drops += 1
                return None
            # FIFO behind the last departure; it leaves once the bucket holds its bytes
            start = max(now, self._last_dep)
            tokens = min(self.burst, self._tokens + (start - self._last_dep) * self.bps / 8)
            if tokens >= size:
                dep, self._tokens = start, tokens - size
            else:
                dep, self._tokens = start + (size - tokens) * 8 / self.bps, 0.0
            self._last_dep = dep
            q.append((dep, size))
            self._qbytes += size
        else:
            dep = now
        self.wire_bytes += size
        if self.loss and self.rng.random() < self.loss:
            self.losses += 1
            return None
        return dep + self.d

    def _block_bytes(self, f: _Flow, k: int) -> int:
        return min(self.blksize, f.nbytes - (k - 1) * self.blksize)

    # ----------------------------------------------------------------- TFTP, at HQ

    def _send(self, f: _Flow, k: int, _=None) -> None:
        """HQ sends block k (again): the RRQ or an ACK arrived, or its timer fired."""
        if f.done or f.k != k:
            return
        now = self.clock.now
        arr = self._enqueue(now, f.oack if k == 0 else self._block_bytes(f, k) + OVERHEAD)
        if arr is not None:
            if k == f.blocks:
                self.clock.at(arr, self._complete, f, k, None)
            ack = arr + self.d + self._up
            self.up_bytes += ACK_BYTES
            if self.loss and self.rng.random() < self.loss:
                self.losses += 1
            elif ack < f.best_ack:
                f.best_ack = ack
                if k < f.blocks:
                    self.clock.at(ack, self._acked, f, k, None)
        if f.best_ack > now + f.rto:
            self.clock.at(now + f.rto, self._timeout, f, k, None)

    def _acked(self, f: _Flow, k: int, _=None) -> None:
        if f.done or f.k != k:
            return
        if k:
            self.payload_bytes += self._block_bytes(f, k)
        f.k, f.tries, f.rto, f.best_ack = k + 1, 0, self.timeout, math.inf
        self._send(f, k + 1)

    def _complete(self, f: _Flow, k: int, _=None) -> None:
        if f.done or f.k != k:
            return
        f.done = True
        self.payload_bytes += self._block_bytes(f, k)
        self.deliver(f.token, True, "")

    def _timeout(self, f: _Flow, k: int, _=None) -> None:
        if f.done or f.k != k or f.best_ack <= self.clock.now:
            return
        if f.tries >= self.retries:
            f.done = True
            self.failures += 1
            self.deliver(f.token, False, f"timeout: no ACK of block {k} after "
                                          f"{f.tries + 1} tries")
            return
        f.tries += 1
        self.retransmits += 1
        f.rto = min(f.rto * 2, self.timeout * self.max_backoff)
        self._send(f, k)

    def delivered(self) -> tuple[int, int]:
        """(payload bytes, wire bytes) that reached the phones' side so far."""
        return self.payload_bytes, self.wire_bytes


class FluidWan:
    """Fair-shared fluid transfers, each capped at a block per round trip (see above)."""

    def __init__(self, clock, deliver, *, bps: float | None, rtt: float, blksize: int = 1428,
                 burst_bytes: float | None = None, **_ignored):
        self.clock, self.deliver = clock, deliver
        self.rtt, self.blksize = rtt, blksize
        step = block_time(rtt, bps, blksize, lab_burst(bps, burst_bytes))
        self.link = PSLink(bps, cap=(blksize + OVERHEAD) * 8 / step if step > 0 else math.inf)
        self._active: dict = {}       # token -> (payload bytes, wire bytes)
        self.payload_bytes = 0
        self.up_bytes = 0             # RRQs and ACKs, counted when the fetch starts
        self.retransmits = self.tail_drops = self.losses = self.failures = 0

    def fetch(self, now: float, token, nbytes: int, name: str | None = None) -> None:
        self.clock.at(now + self.rtt, self._start, token, nbytes, name)  # RRQ, then OACK

    def _start(self, token, nbytes: int, name: str | None = None) -> None:
        wire = nbytes + blocks_of(nbytes, self.blksize) * OVERHEAD
        rrq = request_bytes(name, nbytes, self.blksize)[0]
        self.up_bytes += (blocks_of(nbytes, self.blksize) + 1) * ACK_BYTES + rrq
        self._active[token] = (nbytes, wire)
        self.link.add(self.clock.now, wire * 8, token)
        self._schedule()

    def _schedule(self) -> None:
        t = self.link.next_finish()
        if t is not None:
            self.clock.at(t, self._done, self.link.gen, None, None)

    def _done(self, gen: int, _a=None, _b=None) -> None:
        if gen != self.link.gen:
            return
        for token in self.link.pop_done(self.clock.now):
            self.payload_bytes += self._active.pop(token)[0]
            self.deliver(token, True, "")
        self._schedule()

    def delivered(self) -> tuple[int, int]:
        self.link.advance(self.clock.now)
        partial = sum(n * min(1.0, self.link.in_progress_bits(tok) / (w * 8))
                      for tok, (n, w) in self._active.items())
        return int(self.payload_bytes + partial), int(self.link.served / 8)


MODELS = {"packet": PacketWan, "fluid": FluidWan}
