"""Time dilation: run the emulation k times slower than the clock it reports.

When the machine cannot keep up with the phones in real time, the lab slows the whole world
down by a factor k (Gupta et al., "To Infinity and Beyond: Time-Warped Network Emulation",
NSDI 2006; DieCast, NSDI 2008):

* the agents run the protocol on a clock k times slower (every timer, TFTP retransmission
  timeout and fault time lasts k times longer on the wall clock: pfslab.agent.driver);
* the WAN's one-way delay is multiplied by k and its bandwidth divided by k
  (:func:`dilate_wan`), so a transfer takes k times longer too;
* the LAN is left as it is: its delays are microseconds, far below any protocol timer.

Every phone then sees the world as if it had k times the CPU. What is reported is emulated
time: the agents' logs, events and results already are; the pcaps and tftpd's request times
are brought back with :func:`undilate_pcap` and :func:`undilate_time` (t' = T0 + (t - T0) / k,
T0 the reset). The WAN figures in results stay the user's (undilated) settings.

:func:`auto_dilation` picks k from the site's shape when the user gives none.
"""
from __future__ import annotations

import math
import os
import struct

#: Σ (phones per broadcast domain)^2 that one idle core keeps up with in real time: each
#: phone's broadcasts are received by every phone of its domain. Calibrated on this project's
#: 2-core machine with `pfslab lab --subnets 1 --phones-per-subnet 1000 ... --time-dilation K`
#: (docs/lab.md, "1000 phones").
DOMAIN_LOAD_PER_CORE = 60_000
#: phones one core keeps within the lag bound whatever their domains: every phone's own work
#: (its start, config fetch, first ads, TCP streams) comes in bursts. `make bench-scale` on
#: 2026-11-25 (idle machine, k = 1): 4 x 63 had a timer-lag p99 of 116 ms and 4 x 125 of
#: 90 ms, over the 50 ms bound, though their domains alone asked for k = 1.
PHONES_PER_CORE = 100
MAX_AUTO = 32.0


def auto_dilation(domain_sizes: list[int], cores: int | None = None,
                  loadavg: float | None = None) -> float:
    """The k that should keep timer lag within the fidelity bound for this site (1: none).

    Scaled up by how busy the machine already is (1-minute load average per core, at least
    1): other work takes the CPU the phones' timers need."""
    cores = cores or os.cpu_count() or 1
    if loadavg is None:
        try:
            loadavg = os.getloadavg()[0]
        except OSError:
            loadavg = 0.0
    busy = max(1.0, loadavg / cores)
    need = (sum(n * n for n in domain_sizes) / DOMAIN_LOAD_PER_CORE
            + sum(domain_sizes) / PHONES_PER_CORE) / cores
    return float(min(max(1, math.ceil(need * busy)), MAX_AUTO))


def dilate_wan(bw_bps: int | None, delay_s: float, k: float) -> tuple[int | None, float]:
    """The WAN the kernel shapes for an emulated (bw, delay) under dilation k."""
    return (None if bw_bps is None else max(1, int(bw_bps / k))), delay_s * k


def undilate_time(t: float, t0: float, k: float) -> float:
    """A wall-clock time -> the emulated time (same epoch): T0 + (t - T0) / k."""
    return t0 + (t - t0) / k


_MAGIC = {b"\xd4\xc3\xb2\xa1": ("<", 1e6), b"\xa1\xb2\xc3\xd4": (">", 1e6),
          b"\x4d\x3c\xb2\xa1": ("<", 1e9), b"\xa1\xb2\x3c\x4d": (">", 1e9)}


def undilate_pcap(path: str, t0: float, k: float) -> int:
    """Rewrite a classic pcap's timestamps in place to emulated time; returns the frames.

    Reads and writes one record header at a time: memory stays flat whatever the size.
    """
    if k == 1.0:
        return 0
    n = 0
    with open(path, "r+b") as f:
        head = f.read(24)
        if len(head) < 24 or head[:4] not in _MAGIC:
            return 0
        order, frac = _MAGIC[head[:4]]
        rec = struct.Struct(order + "IIII")
        while True:
            pos = f.tell()
            raw = f.read(16)
            if len(raw) < 16:
                break
            sec, sub, incl, orig = rec.unpack(raw)
            t = undilate_time(sec + sub / frac, t0, k)
            nsec = int(t)
            nsub = min(int(round((t - nsec) * frac)), int(frac) - 1)
            f.seek(pos)
            f.write(rec.pack(nsec, nsub, incl, orig))
            f.seek(incl, 1)
            n += 1
    return n
