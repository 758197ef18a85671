"""`make bench`: the WAN measured against its settings, then PFS vs traditional as N grows.

    sudo .venv/bin/python -m pfslab.bench --out bench/out [--quick] [--ns 1,2,4,...]

Three parts, each printed as it runs and all written to ``<out>/bench.json`` and
``<out>/bench.png`` (makespan and WAN bytes against phones per subnet, log-log):

1. **WAN check.** ``pfslab.lab.bench_wan.measure_one`` on a one-phone lab per (bandwidth,
   one-way delay): UDP echo RTT and bulk TCP throughput, printed against the settings. The
   default grid is 512kbit and 2mbit x 25ms and 75ms (the sweep's own setting is in it);
   ``--wan-grid full`` uses bench_wan's 4 x 4 grid, ``--quick`` measures the sweep's setting only.
2. **Lab sweep.** For each N in ``--ns`` (default 1,2,4,8,16,32,64 phones per subnet), the real
   lab (``pfslab.lab.run.run_mode``: fresh Mininet lab, in.tftpd, captures, the phone agent) in
   PFS mode, then traditional mode. WAN bytes are every frame on ``wan.pcap``, both directions,
   headers and TFTP ACKs included. The pcaps are deleted after they are counted
   (``--keep-pcaps`` keeps them); each run's logs and agent results stay in
   ``<out>/lab/n<N>/<mode>/``.
3. **Simulated sweep.** The same site in ``pfslab.sim.run.simulate`` (virtual clock, a WAN
   link with a queue and TFTP's timers, docs/sim.md) up to ``--sim-ns`` (default 1..512 phones
   per subnet). Its WAN bytes are the frames its WAN model delivered, both directions, headers
   and ACKs included, as the lab's.

Defaults (chosen so the whole run takes about 20-25 minutes on a 2-core machine):
2 subnets; models CP-7961G,CP-7941G (both PFS-capable: the sweep compares sharing with not
sharing; `--models` can add the CP-7960G); WAN 512kbit (`pfslab lab` defaults to 384kbit;
the sweep keeps the setting of its measured runs), 75 ms one way, no loss; firmware scale 0.02 (163 kB per SCCP41 load set, so traditional mode at N=64, 128
phones, moves about 21 MB through 512 kbit/s); agent timeout 600 s per mode; seed 1.

Measured: ``sudo make bench`` on 2026-11-25 took 15.3 min on this machine (2 cores, kernel
6.18, no netem so the NFQUEUE delay line; another engineer's lab was running part of the time):
WAN check 0.6 min, lab sweep 13.5 min, simulated sweep 1.2 min (54 s of it N=512). That run's
traditional mode lost most phones at N=32 and 64 (0/64 and 1/128 upgraded: TFTP timeouts and
digest failures, see docs/lab.md), so those runs ended early; had they upgraded, the
simulator's makespans (177 s and 354 s, which the lab matched within 4 % for N <= 16) put the
whole run at about 20 min. See docs/lab.md, "Benchmarks".

Timings are figures, never pass/fail: a run whose phones did not all finish is still recorded,
with ``completed < total``, and the command exits 1.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import platform
import sys
import time

from pfslab.errors import UserError
from pfslab.results import give_to_sudo_user
from pfslab.settings import Settings, default

LAB_NS = [1, 2, 4, 8, 16, 32, 64]
SIM_NS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
QUICK_LAB_NS = [1, 4, 16]
QUICK_SIM_NS = [1, 4, 16, 64]
#: pfslab.settings' defaults, except where the sweep deliberately differs: two PFS-capable
#: models, a smaller firmware, and 512kbit (the WAN of the measured runs in docs/lab.md; the
#: lab's default is 384kbit)
DEFAULTS = {**{k: default(k) for k in ("subnets", "wan_delay", "wan_loss", "timeout", "seed")},
            "models": "CP-7961G,CP-7941G", "wan_bw": "512kbit", "firmware_scale": 0.02}
WAN_GRIDS = {"default": {"bw": ["512kbit", "2mbit"], "delay": ["25ms", "75ms"]}}
MODES = ("pfs", "traditional")


# ---------------------------------------------------------------- arguments
def parse_ns(text: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4] (sorted, no repeats); every N at least 1."""
    try:
        ns = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise UserError(f"not a comma list of integers: {text!r}") from None
    if not ns or ns[0] < 1:
        raise UserError(f"phones per subnet must be at least 1: {text!r}")
    return ns


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pfslab.bench",
                                description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="example: sudo .venv/bin/python -m pfslab.bench --quick "
                                       "--out bench/out   (sudo make bench: the full run)")
    p.add_argument("--out", default="bench/out",
                   help="bench.json, bench.png and lab/ go here (default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help=f"lab N={','.join(map(str, QUICK_LAB_NS))}, simulated up to "
                        f"{QUICK_SIM_NS[-1]}, one WAN setting (a few minutes)")
    p.add_argument("--ns", help="lab sweep, phones per subnet (default "
                                f"{','.join(map(str, LAB_NS))})")
    p.add_argument("--sim-ns", help="simulated sweep, phones per subnet (default "
                                    f"{','.join(map(str, SIM_NS))})")
    p.add_argument("--subnets", type=int, default=DEFAULTS["subnets"], metavar="K",
                   help="remote subnets (default: %(default)s)")
    p.add_argument("--models", default=DEFAULTS["models"],
                   help="comma list, cycled per subnet (default: %(default)s)")
    p.add_argument("--wan-bw", default=DEFAULTS["wan_bw"], metavar="BW",
                   help="WAN bandwidth (default: %(default)s)")
    p.add_argument("--wan-delay", default=DEFAULTS["wan_delay"], metavar="T",
                   help="WAN delay, one way (default: %(default)s)")
    p.add_argument("--wan-loss", default=DEFAULTS["wan_loss"], metavar="P",
                   help="WAN loss per direction (default: %(default)s)")
    p.add_argument("--firmware-scale", type=float, default=DEFAULTS["firmware_scale"],
                   metavar="F", help="component sizes x F (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=DEFAULTS["timeout"], metavar="S",
                   help="per lab run: give up on an upgrade after S seconds "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                   help="random seed (default: %(default)s)")
    p.add_argument("--wan-grid", choices=("default", "full", "sweep"), default=None,
                   help="WAN check grid: default (2 bw x 2 delays), full (bench_wan's 4 x 4), "
                        "sweep (the sweep's setting only; the --quick default)")
    p.add_argument("--no-wan", action="store_true", help="skip the WAN check")
    p.add_argument("--no-lab", action="store_true", help="skip the lab sweep")
    p.add_argument("--no-sim", action="store_true", help="skip the simulated sweep")
    p.add_argument("--keep-pcaps", action="store_true", help="keep the lab runs' pcaps")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    a = build_parser().parse_args(argv)
    a.ns = parse_ns(a.ns) if a.ns else list(QUICK_LAB_NS if a.quick else LAB_NS)
    a.sim_ns = parse_ns(a.sim_ns) if a.sim_ns else list(QUICK_SIM_NS if a.quick else SIM_NS)
    if a.wan_grid is None:
        a.wan_grid = "sweep" if a.quick else "default"
    _check(a)
    return a


def _check(a: argparse.Namespace) -> None:
    from pfslab.site import SiteError, split_models
    try:
        a.models_list = split_models(a.models)
    except SiteError as e:
        raise UserError(str(e)) from None
    for n in a.ns:
        lab_settings(a, n).check()


def settings(a: argparse.Namespace) -> dict:
    return {"subnets": a.subnets, "models": a.models_list, "wan_bw": a.wan_bw,
            "wan_delay": a.wan_delay, "wan_loss": a.wan_loss,
            "firmware_scale": a.firmware_scale, "timeout_s": a.timeout, "seed": a.seed,
            "lab_ns": a.ns, "sim_ns": a.sim_ns, "wan_grid": a.wan_grid, "quick": a.quick}


def machine_info() -> dict:
    info = {"nproc": os.cpu_count(), "kernel": platform.release(),
            "machine": platform.machine(), "python": platform.python_version(),
            "hostname": platform.node()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            info["mem_kb"] = int(f.readline().split()[1])
        info["loadavg_start"] = os.getloadavg()
    except (OSError, ValueError, IndexError):
        pass
    return info


# ---------------------------------------------------------------- progress
class Clock:
    def __init__(self):
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def stamp(self) -> str:
        s = int(self.elapsed())
        return f"[{s // 60:02d}:{s % 60:02d}]"

    def say(self, msg: str) -> None:
        print(f"{self.stamp()} {msg}", flush=True)


# ---------------------------------------------------------------- 1. WAN check
def wan_grid(a: argparse.Namespace) -> list[tuple[str, str]]:
    from pfslab.lab import bench_wan
    if a.wan_grid == "sweep":
        return [(a.wan_bw, a.wan_delay)]
    g = bench_wan.FULL if a.wan_grid == "full" else WAN_GRIDS["default"]
    return [(bw, d) for bw in g["bw"] for d in g["delay"]]


def run_wan(a: argparse.Namespace, clock: Clock) -> list[dict]:
    from pfslab.lab.bench_wan import measure_one
    rows = []
    for bw, delay in wan_grid(a):
        clock.say(f"WAN check: {bw}, {delay} one way")
        t = time.monotonic()
        r = measure_one(bw, delay)
        r["duration_s"] = round(time.monotonic() - t, 1)
        rows.append(r)
    return rows


def wan_table(rows: list[dict]):
    from rich.table import Table
    from pfslab.lab.units import format_bandwidth
    t = Table(title="WAN: set vs measured (one phone to HQ)", title_justify="left")
    for col, j in (("bandwidth set", "right"), ("TCP measured", "right"), ("of set", "right"),
                   ("delay set", "right"), ("RTT set", "right"), ("RTT min", "right"),
                   ("RTT median", "right"), ("lost", "right"), ("emulation", "left")):
        t.add_column(col, justify=j, no_wrap=True)
    t.caption = "TCP: bulk goodput (headers not counted; the shaper counts whole frames)"
    for r in rows:
        rt = r["rtt"]

        def ms(k):
            return f"{rt[k]:.1f} ms" if k in rt else "-"
        ratio = f"{r['throughput_ratio'] * 100:.0f} %" if r.get("throughput_ratio") else "-"
        t.add_row(format_bandwidth(r["bw_bps"]) if r["bw_bps"] else "none",
                  f"{r['throughput_bps'] / 1e3:,.0f} kbit/s", ratio, r["delay"],
                  f"{r['expected_rtt_ms']:.0f} ms", ms("min_ms"), ms("median_ms"),
                  f"{rt['lost']}/{rt['n']}", r["emulation"])
    return t


# ---------------------------------------------------------------- 2. lab sweep
def lab_settings(a: argparse.Namespace, n: int) -> Settings:
    """`pfslab lab`'s settings for one N (its defaults for everything else)."""
    return Settings(subnets=a.subnets, phones_per_subnet=n, models=a.models_list,
                    wan_bw=a.wan_bw, wan_delay=a.wan_delay, wan_loss=a.wan_loss,
                    firmware_scale=a.firmware_scale, timeout=a.timeout, seed=a.seed)


def row(series: str, n: int, subnets: int, r: dict, duration_s: float | None) -> dict:
    """One point of a sweep from a results dict (lab or simulator schema)."""
    from pfslab.report import mode_stats
    s = mode_stats(r)
    return {"series": series, "n": n, "phones": n * subnets, "mode": r["mode"],
            "completed": s["upgraded"], "total": s["phones"], "makespan_s": s["makespan_s"],
            "wan_bytes": s["wan_bytes"], "wan_frames": r.get("wan_frames"),
            "tftp_requests": s["tftp_requests"], "roots": s["roots"],
            "max_depth": s["max_depth"],
            "duration_s": None if duration_s is None else round(duration_s, 2),
            "run_id": r.get("run_id"), "out_dir": r.get("out_dir"),
            "agent_exit": r.get("agent_exit"), "emulation": (r.get("wan") or {}).get("emulation")}


def run_lab_sweep(a: argparse.Namespace, out: str, clock: Clock, on_row=None) -> list[dict]:
    from pfslab.lab.records import new_prefix
    from pfslab.lab.run import run_mode
    rows = []
    for n in a.ns:
        for mode in MODES:
            clock.say(f"lab N={n} ({n * a.subnets} phones) {mode}: starting")
            mode_out = os.path.abspath(os.path.join(out, "lab", f"n{n:03d}", mode))
            t = time.monotonic()
            try:
                r = run_mode(lab_settings(a, n), mode, mode_out, new_prefix())
                rw = row("lab", n, a.subnets, r, time.monotonic() - t)
            except (UserError, OSError, RuntimeError) as e:
                rw = {"series": "lab", "n": n, "phones": n * a.subnets, "mode": mode,
                      "completed": 0, "total": n * a.subnets, "makespan_s": None,
                      "wan_bytes": None, "duration_s": round(time.monotonic() - t, 2),
                      "out_dir": mode_out, "error": str(e)}
            if not a.keep_pcaps:
                for f in glob.glob(os.path.join(mode_out, "*.pcap")):
                    os.unlink(f)
            rows.append(rw)
            ms = "-" if rw["makespan_s"] is None else f"{rw['makespan_s']:.1f} s"
            wb = "-" if rw["wan_bytes"] is None else f"{rw['wan_bytes']:,} B"
            clock.say(f"lab N={n} {mode}: {rw['completed']}/{rw['total']} upgraded, makespan "
                      f"{ms}, WAN {wb}, run took {rw['duration_s']:.0f} s"
                      + (f" ERROR {rw['error']}" if rw.get("error") else ""))
            if on_row:
                on_row(rows)
    return rows


# ---------------------------------------------------------------- 3. simulated sweep
def run_sim_sweep(a: argparse.Namespace, clock: Clock | None = None, on_row=None) -> list[dict]:
    from pfslab.sim.run import simulate
    rows = []
    for n in a.sim_ns:
        st = lab_settings(a, n)
        site = st.site()
        bps, delay, _ = st.wan()
        for mode in MODES:
            t = time.monotonic()
            r = simulate(site, mode, seed=a.seed, wan_delay_s=delay, wan_bps=bps)
            rw = row("simulated", n, a.subnets, r, time.monotonic() - t)
            rows.append(rw)
            if clock:
                clock.say(f"simulated N={n} ({n * a.subnets} phones) {mode}: makespan "
                          f"{rw['makespan_s']} s (virtual), WAN {rw['wan_bytes']:,} B, "
                          f"{rw['duration_s']:.1f} s to compute")
            if on_row:
                on_row(rows)
    return rows


# ---------------------------------------------------------------- output
def write_json(result: dict, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, path)


STYLE = {("lab", "pfs"): dict(color="tab:blue", marker="o", ls="-", label="PFS, lab"),
         ("lab", "traditional"): dict(color="tab:red", marker="s", ls="-",
                                      label="traditional, lab"),
         ("simulated", "pfs"): dict(color="tab:blue", marker=".", ls="--", alpha=0.6,
                                    label="PFS, simulated"),
         ("simulated", "traditional"): dict(color="tab:red", marker=".", ls="--", alpha=0.6,
                                            label="traditional, simulated")}


def plot(result: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    rows = result.get("lab", []) + result.get("simulated", [])
    st = result["settings"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.8))
    failed_label = "not every phone upgraded (upgraded/total)"
    for (series, mode), style in STYLE.items():
        pts = sorted((r["n"], r["makespan_s"], r["wan_bytes"], r["completed"], r["total"])
                     for r in rows if r["series"] == series and r["mode"] == mode
                     and r.get("makespan_s") is not None)
        if not pts:
            continue
        a.plot([p[0] for p in pts], [p[1] for p in pts], **style)
        pts_b = [p for p in pts if p[2]]
        b.plot([p[0] for p in pts_b], [p[2] / 1e6 for p in pts_b], **style)
        for n, ms, wb, done, total in pts:  # a point where phones failed: marked, with k/n
            if done == total:
                continue
            for ax, y in ((a, ms), (b, wb / 1e6 if wb else None)):
                if y is None:
                    continue
                ax.plot([n], [y], "x", color="black", ms=9, mew=2, label=failed_label)
                ax.annotate(f"{done}/{total}", (n, y), textcoords="offset points",
                            xytext=(6, -10), fontsize=7)
            failed_label = "_nolegend_"
    ns = sorted({r["n"] for r in rows}) or [1]
    for ax in (a, b):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xticks([n for n in ns if n & (n - 1) == 0] or ns)
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="major", lw=0.4, alpha=0.5)
        ax.set_xlabel(f"phones per subnet (x {st['subnets']} subnets)")
    a.set_ylabel("makespan, s (reset to last phone upgraded)")
    a.set_title("Upgrade makespan")
    b.set_ylabel("WAN bytes, MB")
    b.set_title("Bytes across the WAN")
    a.legend(fontsize=8)
    b.text(0.99, 0.01, "lab: all frames on wan.pcap; simulated: all frames its WAN delivered",
           transform=b.transAxes, ha="right", va="bottom", fontsize=7, color="grey")
    when = result.get("started", "")[:16].replace("T", " ")
    fig.suptitle(f"pfslab bench: WAN {st['wan_bw']}, {st['wan_delay']} one way, loss "
                 f"{st['wan_loss']}; {', '.join(st['models'])}; firmware x{st['firmware_scale']}"
                 f"  ({when})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(result: dict, out: str) -> tuple[str, str]:
    os.makedirs(out, exist_ok=True)
    jp, pp = os.path.join(out, "bench.json"), os.path.join(out, "bench.png")
    write_json(result, jp)
    plot(result, pp)
    return jp, pp


def sweep_table(rows: list[dict], series: str):
    """One line per N: both modes side by side, and PFS / traditional ratios."""
    from rich.table import Table
    t = Table(title=f"Sweep, {series}" + (" (virtual time)" if series == "simulated" else ""),
              title_justify="left")
    for col in ("N", "phones", "done P/T", "makespan PFS", "trad", "P/T", "WAN PFS", "trad",
                "P/T", "TFTP reqs P/T", "depth", "run time"):
        t.add_column(col, justify="right", no_wrap=True)
    t.caption = ("N: phones per subnet; P/T: PFS / traditional; depth: deepest PFS phone "
                 "(root = 0); run time: both modes, wall clock")
    by = {(r["n"], r["mode"]): r for r in rows if r["series"] == series}

    def ratio(x, y):
        return f"{x / y:.2f}" if x is not None and y else "-"

    def sec(x):
        return "-" if x is None else f"{x:,.1f} s"

    def mb(x):
        return "-" if x is None else f"{x / 1e6:,.2f} MB"
    for n in sorted({k[0] for k in by}):
        p, tr = by.get((n, "pfs"), {}), by.get((n, "traditional"), {})
        dur = sum(r.get("duration_s") or 0 for r in (p, tr))
        t.add_row(str(n), str(p.get("phones") or tr.get("phones")),
                  f"{p.get('completed', '-')}/{tr.get('completed', '-')}",
                  sec(p.get("makespan_s")), sec(tr.get("makespan_s")),
                  ratio(p.get("makespan_s"), tr.get("makespan_s")),
                  mb(p.get("wan_bytes")), mb(tr.get("wan_bytes")),
                  ratio(p.get("wan_bytes"), tr.get("wan_bytes")),
                  f"{p.get('tftp_requests', '-')}/{tr.get('tftp_requests', '-')}",
                  str(p.get("max_depth", "-")), f"{dur:,.1f} s")
    return t


# ---------------------------------------------------------------- main
def main(argv=None) -> int:
    from rich.console import Console
    try:
        a = parse_args(argv)
        if os.geteuid() != 0 and not (a.no_lab and a.no_wan):
            raise UserError("the WAN check and the lab sweep need root (sudo make bench); "
                            "--no-wan --no-lab runs the simulated sweep only")
    except UserError as e:
        print(f"pfslab: {e}", file=sys.stderr)
        return 2
    console = Console(width=None if sys.stdout.isatty() else 140)
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    clock = Clock()
    result = {"started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "command": "python -m pfslab.bench " + " ".join(sys.argv[1:] if argv is None
                                                                else argv),
              "settings": settings(a), "machine": machine_info(), "durations_s": {},
              "wan_check": [], "lab": [], "simulated": []}
    save = lambda: write_json(result, os.path.join(out, "bench.json"))  # noqa: E731
    clock.say(f"pfslab bench -> {out}: lab N={a.ns if not a.no_lab else 'skipped'}, simulated "
              f"N={a.sim_ns if not a.no_sim else 'skipped'}, {a.subnets} subnets, "
              f"{','.join(a.models_list)}, WAN {a.wan_bw} {a.wan_delay} loss {a.wan_loss}, "
              f"firmware x{a.firmware_scale}")
    try:
        if not a.no_wan:
            t = time.monotonic()
            result["wan_check"] = run_wan(a, clock)
            result["durations_s"]["wan_check"] = round(time.monotonic() - t, 1)
            console.print(wan_table(result["wan_check"]))
            save()
        if not a.no_lab:
            t = time.monotonic()

            def on_lab(rows):
                result["lab"] = rows
                result["durations_s"]["lab"] = round(time.monotonic() - t, 1)
                save()
            run_lab_sweep(a, out, clock, on_lab)
        if not a.no_sim:
            t = time.monotonic()

            def on_sim(rows):
                result["simulated"] = rows
                result["durations_s"]["simulated"] = round(time.monotonic() - t, 1)
            run_sim_sweep(a, clock, on_sim)
    except UserError as e:
        print(f"pfslab: {e}", file=sys.stderr)
        result["error"] = str(e)
        save()
        return 2
    except KeyboardInterrupt:
        print("pfslab: interrupted; partial results in bench.json", file=sys.stderr)
        result["error"] = "interrupted"
        save()
        return 130
    result["durations_s"]["total"] = round(clock.elapsed(), 1)
    result["finished"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    jp, pp = write_outputs(result, out)
    give_to_sudo_user(out)
    if result["wan_check"]:
        console.print(wan_table(result["wan_check"]))
    for series in ("lab", "simulated"):
        if result[series]:
            console.print(sweep_table(result[series], series))
    d = result["durations_s"]
    console.print("durations: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in d.items()))
    print(f"wrote {jp} and {pp}")
    ok = all(r["completed"] == r["total"] for r in result["lab"] + result["simulated"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
