"""What a lab run will cost, before it starts: WAN bytes and emulated WAN time per mode.

The model is the simulator's (``pfslab.sim.memnet``): every TFTP transfer is lock-step, one
block per round trip, so one transfer moves at most blksize x 8 / RTT bits/s; all transfers
share the WAN's bandwidth; a phone fetches its files one after another. Its figures are lower
bounds: the makespan is at least the busier of

* the WAN: every byte that must cross it (files plus TFTP/UDP/IP/Ethernet headers of each
  DATA block and its ACK) over the bandwidth;
* the slowest phone's chain of lock-step transfers (one RTT per block, one more per file).

In PFS mode a (subnet, model) group's root fetches the load set for the whole group (one
hierarchy per (subnet, model, file)), the other phones only their configuration file; phones with PFS off (or a model without PFS) fetch
everything. The election adds its ~2 s (listening, then the offer-to-confirmation delay).

    est = estimate_site(site, mode, wan_bps=..., wan_rtt=..., blksize=1428)
    print(describe(est))
"""
from __future__ import annotations

import math

from pfslab import firmware, phoneconfig
from pfslab.sim.wan import ACK_BYTES, OVERHEAD, request_bytes   # one home: the wire

#: a DATA block's headers beyond its payload (Ethernet, IPv4, UDP, TFTP opcode and block),
#: and one ACK on the wire (veth frames are not padded to Ethernet's 60-byte minimum)
DATA_OVERHEAD = OVERHEAD
#: listening (up to 0.75 s) and the offer-to-confirmation delay (1.25 s) before a root fetches
ELECTION_S = 2.0
#: the lab's bring-up measured about 13 ms per phone (light hosts) on this 2-core machine
#: (docs/lab.md, "Scale": 12.8 s at 1 x 1000)
BUILD_S_PER_HOST = 0.013


def wire_bytes(size: int, blksize: int, name: str = "f", timeout: int = 1) -> int:
    """One TFTP fetch of ``size`` bytes as the WAN capture counts it, both ways, with no
    loss: the RRQ, the OACK and its ACK, every DATA block (the last one short, maybe empty)
    and its ACK."""
    rrq, oack = request_bytes(name, size, blksize, timeout)
    blocks = size // blksize + 1
    return rrq + oack + ACK_BYTES + size + blocks * (DATA_OVERHEAD + ACK_BYTES)


def down_bytes(size: int, blksize: int, name: str = "f", timeout: int = 1) -> int:
    """The HQ-to-phone part of one fetch (the OACK and the DATA blocks): what the shaped
    direction of the WAN carries, so what its bandwidth bounds (RRQs and ACKs go the other
    way)."""
    _, oack = request_bytes(name, size, blksize, timeout)
    return oack + size + (size // blksize + 1) * DATA_OVERHEAD


def transfer_s(size: int, blksize: int, rtt: float) -> float:
    """One lock-step transfer alone on the WAN: the request's round trip and one per block."""
    return (size // blksize + 2) * rtt


def load_files(files: dict[str, bytes], load_name: str) -> list[tuple[str, int]]:
    """(file, size) of a load set as HQ serves it: the .loads, then its components. Only
    sizes matter here, so the signature is not checked."""
    loads = load_name + firmware.LOADS_SUFFIX
    data = files.get(loads)
    if data is None:
        return []
    ls = firmware.peek_loads(data)
    return [(loads, len(data))] + [(c.name, c.size) for c in ls.components]


def estimate_mode(phones: list[dict], files: dict[str, bytes], pfs_of: dict[str, bool],
                  mode: str, *, wan_bps: float | None, wan_rtt: float,
                  blksize: int = 1428, timeout: int = 1) -> dict:
    """The cost of one mode. ``phones``: dicts with name, subnet, model, mac; ``files``:
    what HQ serves in this mode; ``pfs_of``: each phone's resolved PFS setting, by name;
    ``timeout``: the TFTP timeout the phones ask for (the time dilation k)."""
    total_bytes = down = 0
    requests = 0
    chains = []
    groups: set = set()
    roots = 0
    for p in phones:
        label = p.get("label") or p["name"]
        load = firmware.model_load(p["model"])
        cfg = phoneconfig.sep_filename(p["mac"])
        mine = [(cfg, len(files.get(cfg, b"")))]
        shares = mode == "pfs" and pfs_of.get(label) and p["model"] in firmware.PFS_CAPABLE
        key = (p.get("subnet"), p["model"])
        if not shares or key not in groups:
            lf = load_files(files, load)
            if shares:
                groups.add(key)
                roots += len(lf)
            mine += lf
        total_bytes += sum(wire_bytes(s, blksize, f, timeout) for f, s in mine)
        down += sum(down_bytes(s, blksize, f, timeout) for f, s in mine)
        requests += len(mine)
        chain = sum(transfer_s(s, blksize, wan_rtt) for _, s in mine)
        if shares and len(mine) > 1:
            chain += ELECTION_S
        chains.append(chain)
    wan_s = down * 8 / wan_bps if wan_bps else 0.0       # the downstream direction's bound
    chain_s = max(chains, default=0.0)
    return {"mode": mode, "phones": len(phones), "wan_bytes": total_bytes,
            "wan_down_bytes": down,
            "hq_requests": requests, "groups": len(groups), "roots": roots,
            "wan_busy_s": round(wan_s, 1), "lockstep_s": round(chain_s, 1),
            "makespan_s": round(max(wan_s, chain_s), 1),
            "bound": "bandwidth" if wan_s >= chain_s else "lock-step TFTP",
            "build_s": round(BUILD_S_PER_HOST * len(phones), 1)}


def estimate_site(site, mode: str, *, wan_bps: float | None, wan_rtt: float,
                  blksize: int = 1428, timeout: int = 1) -> dict:
    """``estimate_mode`` for a ``pfslab.site.Site``: the files HQ serves in that mode."""
    return estimate_mode([vars(p) for p in site.phones], site.files(mode), site.pfs_of(mode),
                         mode, wan_bps=wan_bps, wan_rtt=wan_rtt, blksize=blksize,
                         timeout=timeout)


def estimate_settings(settings, mode: str, site=None, k: float | None = None) -> dict:
    """``estimate_site`` for a run's ``pfslab.settings.Settings`` (``k``: the time dilation
    the run uses, which sets the TFTP timeout the phones ask for; default: the settings')."""
    bps, delay, _ = settings.wan()
    site = site or settings.site()
    return estimate_site(site, mode, wan_bps=bps, wan_rtt=2 * delay, blksize=settings.blksize,
                         timeout=int(k or settings.dilation(site)))


def human_s(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def describe(est: dict) -> str:
    """One line: 'traditional: >= 3.1 h emulated (bandwidth), 167 MB over the WAN, ...'."""
    return (f"{est['mode']}: >= {human_s(est['makespan_s'])} of upgrade ({est['bound']}-bound), "
            f"{est['wan_bytes'] / 1e6:,.1f} MB over the WAN, {est['hq_requests']:,} TFTP "
            f"requests at HQ; lab bring-up ~{human_s(est['build_s'])}")


def sample_phones(phones: list[dict], n: int) -> list[dict]:
    """``n`` phones spread evenly over the plan (every subnet and model represented as far as
    n allows): the traditional baseline's sample."""
    if n >= len(phones):
        return list(phones)
    step = len(phones) / n
    return [phones[math.floor(i * step)] for i in range(n)]


def capped(mode: str, sample: int | None, until_s: float | None, total: int) -> dict | None:
    """The ``capped`` entry of a mode's results (None when the run is not capped)."""
    if mode != "traditional" or (not sample or sample >= total) and until_s is None:
        return None
    out = {"phones_in_lab": total}
    if sample and sample < total:
        out["sample"] = sample
    if until_s is not None:
        out["until_s"] = until_s
    return out


def capped_note(c: dict | None) -> str:
    """How a summary says a traditional run was capped ('' when it was not)."""
    if not c:
        return ""
    parts = []
    if c.get("sample"):
        parts.append(f"a sample of {c['sample']} of {c['phones_in_lab']} phones")
    if c.get("until_s") is not None:
        parts.append(f"stopped at {c['until_s']:g} s")
    return "CAPPED traditional baseline: " + ", ".join(parts) + \
        " -- its makespan and WAN bytes are not the full site's (see the estimate)"
