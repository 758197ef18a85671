"""`make bench-sim-speed`: how fast and how big `pfslab sim` runs, the sites of issue #12.

Each case is the whole command a user types, run as its own process (start-up, site, run,
results and report included), timed from outside:

    pfslab sim --subnets S --phones-per-subnet N --mode pfs --models CP-7961G,CP-7941G \\
        --wan-bw 1gbit --firmware-scale X --no-live --json ...

It prints one row per case (wall seconds of the whole command, the run's own wall and CPU
seconds, events and events per second, peak memory summed over the processes) and writes
``bench/speed/speed.json``. The default cases are 10^4 and 10^5 phones at firmware scale
0.01 and at full size; ``--phones 1000000`` adds 10^6 (250 subnets of 4,000).

    .venv/bin/python -m pfslab.sim.speed --out bench/speed
    .venv/bin/python -m pfslab.sim.speed --phones 100000 --scales 1 --jobs 1,2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

#: phones -> (subnets, phones per subnet): all PFS-capable, two hierarchies per subnet and file
SITES = {10_000: (10, 1000), 100_000: (99, 1011), 1_000_000: (250, 4000)}
MODELS = "CP-7961G,CP-7941G"


def command(phones: int, scale: float, jobs: str, json_path: str) -> list[str]:
    subnets, per = SITES[phones]
    return [sys.executable, "-m", "pfslab.cli", "sim", "--subnets", str(subnets),
            "--phones-per-subnet", str(per), "--mode", "pfs", "--models", MODELS,
            "--wan-bw", "1gbit", "--firmware-scale", f"{scale:g}", "--no-live",
            "--jobs", jobs, "--json", json_path]


def run_case(phones: int, scale: float, jobs: str, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="pfslab-speed-") as tmp:
        out = os.path.join(tmp, "r.json")
        t = time.monotonic()
        try:
            p = subprocess.run(command(phones, scale, jobs, out), capture_output=True,
                               text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"phones": phones, "scale": scale, "jobs": jobs, "error":
                    f"stopped after {timeout:g} s"}
        wall = time.monotonic() - t
        if p.returncode != 0 or not os.path.exists(out):
            tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
            return {"phones": phones, "scale": scale, "jobs": jobs,
                    "error": f"exit {p.returncode}: {tail[0]}"}
        with open(out) as f:
            r = json.load(f)               # one mode: one entry
    m = r["sim"]
    return {"phones": phones, "scale": scale, "jobs": m["jobs"], "wall_s": round(wall, 1),
            "run_wall_s": m["wall_s"], "cpu_s": m["cpu_s"], "events": m["events"],
            "events_per_s": m["events_per_s"], "peak_mb": m["peak_rss_mb"],
            "kb_per_phone": round(m["peak_rss_mb"] * 1024 / phones, 1),
            "site_phones": len(r["phones"]),
            "upgraded": sum(1 for p in r["phones"] if p["completed"]),
            "virtual_s": m["t_s"], "truncated": r["truncated"]}


def row(c: dict) -> str:
    head = f"| {c['phones']:,} | {c['scale']:g} |"
    if "error" in c:
        return head + f" {c['jobs']} | {c['error']} |" + " |" * 7
    return (head + f" {c['jobs']} | {c['wall_s']:.1f} s | {c['run_wall_s']:.1f} s | "
            f"{c['cpu_s']:.1f} s | {c['events']:,} | {c['events_per_s']:,} | "
            f"{c['peak_mb']:,} MB ({c['kb_per_phone']} KB a phone) | "
            f"{c['upgraded']:,}/{c['site_phones']:,} | {c['virtual_s']:,.1f} s |")


HEADER = ("| phones | firmware | processes | wall, whole command | run, wall | run, CPU | "
          "events | events/s | peak memory | upgraded | virtual time |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pfslab.sim.speed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phones", default="10000,100000",
                    help="comma-separated, of " + ", ".join(f"{n:,}".replace(",", "")
                                                            for n in SITES))
    ap.add_argument("--scales", default="0.01,1", help="firmware scales (default: 0.01,1)")
    ap.add_argument("--jobs", default="auto", help="comma-separated --jobs values (default: "
                                                    "auto)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per case, seconds")
    ap.add_argument("--out", default="bench/speed")
    a = ap.parse_args(argv)
    try:
        phones = [int(x) for x in a.phones.split(",")]
        scales = [float(x) for x in a.scales.split(",")]
    except ValueError:
        print("pfslab.sim.speed: --phones and --scales take comma-separated numbers",
              file=sys.stderr)
        return 2
    bad = [n for n in phones if n not in SITES]
    if bad:
        print(f"pfslab.sim.speed: no site of {bad[0]:,} phones; choose from "
              + ", ".join(str(n) for n in SITES), file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    cases = []
    print(HEADER, flush=True)
    try:
        for n in phones:
            for s in scales:
                for j in a.jobs.split(","):
                    c = run_case(n, s, j.strip(), a.timeout)
                    cases.append(c)
                    print(row(c), flush=True)
    except KeyboardInterrupt:
        print("interrupted: the cases so far are in the table above", file=sys.stderr)
    path = os.path.join(a.out, "speed.json")
    with open(path, "w") as f:
        json.dump({"cpus": os.cpu_count(), "cases": cases}, f, indent=1)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
