"""WAN check for `make bench`: measured RTT and throughput against the settings.

    sudo .venv/bin/python -m pfslab.lab.bench_wan [--out bench/out] [--quick]

For each (bandwidth, one-way delay) it builds a one-phone lab (no captures, no tftpd), measures
UDP echo RTT and bulk TCP throughput from the phone to HQ, and tears the lab down. Prints a
table; with --out writes wan.json and wan.png. Figures only: no pass/fail on timings here.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from pfslab.errors import UserError

from .measure import summary, tcp_throughput, udp_rtt
from .units import format_bandwidth, parse_bandwidth, parse_delay

FULL = {"bw": ["256kbit", "512kbit", "2mbit", "10mbit"], "delay": ["0ms", "25ms", "75ms", "150ms"]}
QUICK = {"bw": ["512kbit", "2mbit"], "delay": ["25ms", "75ms"]}


def measure_one(bw: str, delay: str, loss: str = "0%", seconds: float = 4.0,
                emulation: str = "auto") -> dict:
    from pfslab.settings import Settings
    from pfslab.site import Site

    from .net import LabNet
    with LabNet(Site.branch(1, 1), Settings(wan_bw=bw, wan_delay=delay, wan_loss=loss,
                                            wan_emulation=emulation),
                capture=False, tftp=False, out_dir=None) as net:
        phone, hq = net.phones[0].netns, net.node_netns(net.info["hq"])
        rtt = summary(udp_rtt(phone, hq, net.hq_ip, n=20))
        tput = tcp_throughput(phone, hq, net.hq_ip, seconds=seconds)
        wan = net.wan.describe()
        out_dir = net.out_dir
    # a bench lab keeps nothing
    import shutil
    shutil.rmtree(out_dir, ignore_errors=True)
    bps = parse_bandwidth(bw)
    d = parse_delay(delay)
    return {"bw": bw, "bw_bps": bps, "delay": delay, "delay_s": d, "loss": loss,
            "emulation": wan["emulation"], "rtt": rtt, "expected_rtt_ms": 2 * d * 1e3,
            "throughput_bps": tput["bps"], "throughput_all_bps": tput["bps_all"],
            "throughput_ratio": (tput["bps"] / bps) if bps else None}


def plot(results: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for bw in sorted({r["bw"] for r in results}, key=lambda s: parse_bandwidth(s) or 0):
        rows = [r for r in results if r["bw"] == bw and "median_ms" in r["rtt"]]
        a.plot([r["expected_rtt_ms"] for r in rows], [r["rtt"]["median_ms"] for r in rows],
               "o-", label=bw)
        b.plot([r["delay_s"] * 1e3 for r in rows],
               [r["throughput_bps"] / 1e3 for r in rows], "o-", label=f"measured, {bw}")
        b.axhline((parse_bandwidth(bw) or 0) / 1e3, ls=":", lw=0.8, color="grey")
    hi = max(r["expected_rtt_ms"] for r in results) or 1
    a.plot([0, hi], [0, hi], "k--", lw=0.8, label="2 x delay")
    a.set_xlabel("configured RTT (2 x one-way delay), ms")
    a.set_ylabel("measured median UDP RTT, ms")
    a.set_title("WAN delay")
    a.legend(fontsize=8)
    b.set_xlabel("one-way delay, ms")
    b.set_ylabel("TCP throughput, kbit/s (dotted: setting)")
    b.set_yscale("log")
    b.set_title("WAN bandwidth")
    b.legend(fontsize=7)
    emul = sorted({r["emulation"] for r in results})
    fig.suptitle(f"pfslab WAN emulation ({', '.join(emul)}) vs settings")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="write wan.json and wan.png here")
    p.add_argument("--quick", action="store_true", help="a 2x2 grid instead of 4x4")
    p.add_argument("--bw", help="comma list, e.g. 512kbit,2mbit")
    p.add_argument("--delay", help="comma list, e.g. 25ms,75ms")
    p.add_argument("--seconds", type=float, default=4.0, help="bulk transfer length")
    p.add_argument("--emulation", default="auto", choices=("auto", "netem", "nfqueue"))
    a = p.parse_args(argv)
    grid = dict(QUICK if a.quick else FULL)
    if a.bw:
        grid["bw"] = a.bw.split(",")
    if a.delay:
        grid["delay"] = a.delay.split(",")
    try:
        for s in grid["bw"]:
            parse_bandwidth(s)
        for s in grid["delay"]:
            parse_delay(s)
        results = []
        print(f"{'bandwidth':>10} {'delay':>7} {'emulation':>9} {'RTT set':>8} {'RTT min':>8} "
              f"{'RTT med':>8} {'lost':>4} {'TCP kbit/s':>11} {'of set':>7}")
        for bw in grid["bw"]:
            for delay in grid["delay"]:
                r = measure_one(bw, delay, seconds=a.seconds, emulation=a.emulation)
                results.append(r)
                rt = r["rtt"]
                print(f"{format_bandwidth(r['bw_bps']):>10} {delay:>7} {r['emulation']:>9} "
                      f"{r['expected_rtt_ms']:>7.0f}ms {rt.get('min_ms', float('nan')):>6.1f}ms "
                      f"{rt.get('median_ms', float('nan')):>6.1f}ms {rt['lost']:>4} "
                      f"{r['throughput_bps'] / 1e3:>11.1f} "
                      f"{(r['throughput_ratio'] or 0) * 100:>6.0f}%", flush=True)
    except UserError as e:
        print(f"pfslab: {e}", file=sys.stderr)
        return 2
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "wan.json"), "w") as f:
            json.dump(results, f, indent=1)
        plot(results, os.path.join(a.out, "wan.png"))
        print(f"wrote {a.out}/wan.json and {a.out}/wan.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
