"""`make bench-sim`: the seed's curve in the simulator, with the physical bound beside it.

PFS and traditional makespan and WAN bytes against phones per subnet (1..1000) at the real
firmware size and a 384 kbit/s, 75 ms WAN, plus how fast the simulator ran each point:

    .venv/bin/python -m pfslab.sim.bench --out bench/sim          # table, sim.json, sim.png

Each point runs both WAN models: ``packet`` (a FIFO queue with tail drop and TFTP timers;
only up to --packet-max phones per subnet in traditional mode, where every phone fetches the
whole load block by block) and ``fluid`` (ideal fair sharing). The bounds:

- traditional: every phone's bytes (config and load, with per-packet headers) through the
  WAN at its rate;
- PFS: each subnet's load once plus every phone's config through the WAN, plus the root's
  wait before it fetches, plus the tree's depth of LAN hops (a parent shares its uplink
  between two children).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import time

from .. import firmware
from ..protocol.phone import Timers
from ..site import Site, SiteError
from . import scenario
from .wan import ACK_BYTES, OVERHEAD, block_time, blocks_of, lab_burst, request_bytes

NS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


def wire_bytes(nbytes: int, blksize: int, name: str | None = None) -> int:
    """One TFTP fetch on the wire, downstream: OACK, blocks and their headers."""
    return request_bytes(name, nbytes, blksize)[1] + nbytes + blocks_of(nbytes, blksize) * OVERHEAD


def up_bytes(nbytes: int, blksize: int, name: str | None = None) -> int:
    """One TFTP fetch on the wire, upstream: the RRQ, the OACK's ACK and one ACK a block."""
    return request_bytes(name, nbytes, blksize)[0] + (blocks_of(nbytes, blksize) + 1) * ACK_BYTES


def bounds(specs, files: dict, mode: str, *, bps: float, rtt: float, lan_bps: float,
           blksize: int, pfs_of: dict | None = None) -> dict:
    """The physical lower bounds (seconds, WAN bytes) of one upgrade: the WAN's bytes at its
    rate, or a phone's lock-step fetches one after the other (a block per round trip),
    whichever is longer; PFS adds its fixed waits and the tree's LAN hops. In PFS mode a
    phone that cannot share (a model without PFS, or ``pfs_of[name]`` false) counts as
    traditional. Also: the upstream bytes (RRQs and ACKs) and the requests at HQ."""
    named = [(f, len(d)) for f, d in files.items() if f.startswith("SEP")]  # one per phone
    configs = [n for _, n in named]
    load_named = {m: [(f, len(files[f])) for f in firmware.peek_loads(
        files[firmware.model_load(m) + firmware.LOADS_SUFFIX]).files()]
        for m in {sp.model for sp in specs}}
    load_of = {m: [n for _, n in fs] for m, fs in load_named.items()}
    per_phone = {m: sum(wire_bytes(n, blksize, f) for f, n in fs)
                 for m, fs in load_named.items()}
    per_phone_up = {m: sum(up_bytes(n, blksize, f) for f, n in fs)
                    for m, fs in load_named.items()}
    step = block_time(rtt, bps, blksize, lab_burst(bps, None))   # the lab's TBF

    def shares(sp) -> bool:
        return (mode == "pfs" and sp.model in firmware.PFS_CAPABLE
                and (pfs_of or {}).get(sp.name, True) is not False)

    alone = [sp for sp in specs if not shares(sp)]
    group_size: dict = {}
    for sp in specs:
        if shares(sp):
            group_size[(sp.subnet, sp.model)] = group_size.get((sp.subnet, sp.model), 0) + 1
    fetchers = [sp.model for sp in alone] + [m for _, m in group_size]
    wan = sum(wire_bytes(n, blksize, f) for f, n in named) + sum(per_phone[m] for m in fetchers)
    up = sum(up_bytes(n, blksize, f) for f, n in named) + sum(per_phone_up[m] for m in fetchers)
    out = {"bound_wan_bytes": wan, "bound_up_bytes": up,
           "bound_requests": len(configs) + sum(len(load_of[m]) for m in fetchers)}
    wan_s = wan * 8 / bps if bps else 0.0
    lockstep = max((sum((blocks_of(n, blksize) + 1) * step for n in load_of[m] + configs[:1])
                    for m in {sp.model for sp in alone}), default=0.0)
    t = max(wan_s, lockstep)
    if group_size:
        n = max(group_size.values())
        depth = math.ceil(math.log2(n + 1)) - 1
        fs = max((load_of[m] for _, m in group_size), key=sum)
        loads, comps = min(fs), sorted(fs)[1:]          # the manifest is the smallest file
        # the components' roots fetch in parallel, at most one file each at a time
        each = [(blocks_of(c, blksize) + 1) * step for c in comps]
        comp_lockstep = max(max(each), sum(each) / min(n, len(each)))
        tm = Timers()
        election = tm.listen_min + (tm.ads + 1) * tm.ad_interval + tm.root_wait  # .loads, rest
        t = max(t, 2 * election + (blocks_of(loads, blksize) + 1) * step
                + max(wan_s, comp_lockstep) + depth * 2 * max(comps) * 8 / lan_bps)
    return {"bound_s": round(t, 3), **out}


def point(n: int, mode: str, wan_model: str, a) -> dict:
    site = Site.branch(a.subnets, n, [a.model], firmware_scale=a.scale)
    specs = site.phones
    net, phones = scenario.build(site, mode, seed=a.seed, wan_rtt=2 * a.wan_delay,
                                 wan_bps=a.wan_bw, wan_model=wan_model, payloads=False,
                                 logs=False)
    for p in phones:
        net.reset(p)
    cpu = time.process_time()
    net.run(until=a.until)
    cpu = time.process_time() - cpu
    s = net.summary()
    b = bounds(specs, net.files, mode, bps=a.wan_bw, rtt=net.wan_rtt, lan_bps=net.lan_bps,
               blksize=net.blksize)
    return {"n": n, "phones": len(specs), "mode": mode, "wan_model": wan_model,
            **{k: s[k] for k in ("truncated", "makespan_s", "completed", "failed",
                                 "wan_payload_bytes", "wan_wire_bytes", "tftp_retransmits",
                                 "wan_drops", "events")},
            **b, "ratio": round(s["makespan_s"] / b["bound_s"], 3) if s["makespan_s"] else None,
            "cpu_s": round(cpu, 2), "events_per_s": round(s["events"] / cpu) if cpu else None,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table
    t = Table(title="pfslab sim: makespan and WAN bytes vs phones per subnet (virtual time)",
              title_justify="left")
    for c in ("N", "phones", "mode", "WAN", "makespan s", "bound s", "x bound", "WAN MB",
              "bound MB", "done/failed", "retx", "drops", "CPU s", "events/s"):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(str(r["n"]), str(r["phones"]), r["mode"], r["wan_model"],
                  "not reached" if r["makespan_s"] is None else f"{r['makespan_s']:,.0f}",
                  f"{r['bound_s']:,.0f}", "-" if r["ratio"] is None else f"{r['ratio']:.2f}",
                  f"{r['wan_wire_bytes'] / 1e6:,.1f}", f"{r['bound_wan_bytes'] / 1e6:,.1f}",
                  f"{r['completed']}/{r['failed']}", str(r["tftp_retransmits"]),
                  str(r["wan_drops"]), f"{r['cpu_s']:.1f}", f"{r['events_per_s'] or 0:,}")
    Console(width=160).print(t)


def plot(rows: list[dict], path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5))
    colors = {"pfs": "tab:blue", "traditional": "tab:red"}
    for mode in ("pfs", "traditional"):
        for wm, ls in (("packet", "-"), ("fluid", ":")):
            rs = [r for r in rows if r["mode"] == mode and r["wan_model"] == wm
                  and r["makespan_s"] is not None]
            if rs:
                ns = [r["n"] for r in rs]
                ax.plot(ns, [r["makespan_s"] for r in rs], ls, marker="o", color=colors[mode],
                        label=f"{mode}, {wm} WAN")
                bx.plot(ns, [r["wan_wire_bytes"] / 1e6 for r in rs], ls, marker="o",
                        color=colors[mode], label=f"{mode}, {wm} WAN")
        rs = sorted({r["n"]: r for r in rows if r["mode"] == mode}.values(), key=lambda r: r["n"])
        ax.plot([r["n"] for r in rs], [r["bound_s"] for r in rs], "--", color=colors[mode],
                alpha=0.4, label=f"{mode}, bound")
        bx.plot([r["n"] for r in rs], [r["bound_wan_bytes"] / 1e6 for r in rs], "--",
                color=colors[mode], alpha=0.4, label=f"{mode}, bound")
    for x, yl in ((ax, "makespan (s, virtual)"), (bx, "WAN bytes (MB)")):
        x.set_xscale("log")
        x.set_yscale("log")
        x.set_xlabel("phones per subnet")
        x.set_ylabel(yl)
        x.grid(True, which="both", alpha=0.3)
        x.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pfslab.sim.bench", description=__doc__.split(
        "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/sim", help="folder for sim.json and sim.png")
    p.add_argument("--ns", default=",".join(map(str, NS)), help="phones per subnet")
    p.add_argument("--subnets", type=int, default=4)
    p.add_argument("--model", default="CP-7961G")
    p.add_argument("--scale", type=float, default=1.0, help="firmware scale (1.0: 8.1 MB)")
    p.add_argument("--wan-bw", type=float, default=384e3, help="bit/s")
    p.add_argument("--wan-delay", type=float, default=0.075, help="one way, seconds")
    p.add_argument("--packet-max", type=int, default=50,
                   help="largest N run on the packet WAN in traditional mode")
    p.add_argument("--until", type=float, default=None, help="virtual-time limit per run")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    try:
        ns = [int(x) for x in a.ns.split(",")]
        for n in ns:
            Site.branch(a.subnets, n, [a.model])
    except (ValueError, SiteError) as e:
        p.exit(2, f"pfslab sim bench: {e}\n")
    os.makedirs(a.out, exist_ok=True)
    rows = []
    for n in ns:
        for mode in ("pfs", "traditional"):
            for wm in ("packet", "fluid"):
                if mode == "traditional" and wm == "packet" and n > a.packet_max:
                    continue
                r = point(n, mode, wm, a)
                rows.append(r)
                print(f"N={n} {mode} {wm}: makespan {r['makespan_s']} s (bound {r['bound_s']}),"
                      f" {r['completed']}/{r['phones']} completed, CPU {r['cpu_s']} s,"
                      f" {r['events_per_s']} events/s", flush=True)
    title = (f"{a.subnets} subnets of N {a.model}, {a.wan_bw / 1e3:g} kbit/s, "
             f"{a.wan_delay * 1e3:g} ms one way, firmware x{a.scale:g}")
    with open(os.path.join(a.out, "sim.json"), "w") as f:
        json.dump({"settings": vars(a), "title": title, "rows": rows}, f, indent=1)
    table(rows)
    plot(rows, os.path.join(a.out, "sim.png"), title)
    print(f"wrote {a.out}/sim.json and {a.out}/sim.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
