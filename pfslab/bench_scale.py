"""`make bench-scale`: PFS mode at 100 to 1000 phones, faithful or saying why not.

    sudo .venv/bin/python -m pfslab.bench_scale --out bench/scale [--sizes 100,250]

For each site -- 4 subnets at each of ``--sizes`` phones, and one subnet of 1000 (the seed's
own site) when 1000 is among the sizes -- it runs the real lab in PFS mode
(``pfslab.lab.run.run_mode``), the same site in ``pfslab sim``, and writes one row:

* roots on the wire (hierarchies rebuilt from the subnet captures) against those expected,
  one per (subnet, model, file); TFTP fallbacks (files PFS phones fetched from HQ without
  being their root: role ``tftp`` in results.json);
* TFTP requests at HQ (tftpd's log and wan.pcap) against one config per phone plus the roots;
* WAN bytes (every frame of wan.pcap) against the one-copy-per-group bound
  (``pfslab.lab.estimate``: the load set once per group plus every config, with TFTP headers);
* timer lag p50/p99, UDP receive-buffer drops and capture drops (``pfslab.lab.fidelity``),
  the time dilation used, and the run's verdict (EMULATION OVERLOADED or not);
* bring-up, teardown and whole-run wall time; peak memory per phone: the proportional set
  size (PSS) of every process of the run (this one, the agents, Mininet's shells, tcpdump,
  in.tftpd, the delay line), sampled every 5 s, over the phones;
* the makespan in emulated time beside the simulator's for the same site, and their ratio.

It prints a table and writes ``<out>/scale.json`` (after every site, so an interrupted run
keeps what it measured) and ``<out>/scale.png``. Pcaps are deleted once decoded unless
``--keep-pcaps``. Figures, never verdicts: the exit code is 1 only if a site's run failed.
"""
from __future__ import annotations

import argparse
import glob
import os
import threading
import time

from pfslab.errors import UserError

SIZES = [100, 250, 500, 1000]
ONE_SUBNET = [1000]
DEFAULTS = {"subnets": 4, "models": "CP-7961G,CP-7941G", "wan_bw": "10mbit",
            "wan_delay": "20ms", "wan_loss": "0%", "firmware_scale": 0.002, "timeout": 900.0,
            "seed": 1}


# ---------------------------------------------------------------- sites
def sites(sizes: list[int], subnets: int = 4, one_subnet=ONE_SUBNET) -> list[dict]:
    """Each size spread over ``subnets`` (rounded to whole phones per subnet), then one subnet
    of each size in ``one_subnet`` that is also in ``sizes``."""
    out = []
    for n in sizes:
        per = max(1, int(n / subnets + 0.5))
        out.append({"label": f"{subnets} x {per}", "subnets": subnets, "per_subnet": per,
                    "phones": subnets * per})
    for n in one_subnet:
        if n in sizes and subnets != 1:
            out.append({"label": f"1 x {n}", "subnets": 1, "per_subnet": n, "phones": n})
    return out


def site_settings(site: dict, a):
    """`pfslab lab`'s settings for one site, PFS mode (its defaults for everything else)."""
    from pfslab.settings import Settings
    return Settings(subnets=site["subnets"], phones_per_subnet=site["per_subnet"],
                    models=a.models_list, mode="pfs", wan_bw=a.wan_bw, wan_delay=a.wan_delay,
                    wan_loss=a.wan_loss, firmware_scale=a.firmware_scale, timeout=a.timeout,
                    seed=a.seed)


def expected(site: dict, a) -> dict:
    """What a faithful PFS run of ``site`` shows: roots, HQ requests, the WAN-bytes bound."""
    from pfslab.lab.estimate import estimate_settings
    e = estimate_settings(site_settings(site, a), "pfs")
    return {"roots": e["roots"], "hq_requests": e["hq_requests"],
            "wan_bytes_bound": e["wan_bytes"], "estimate": e}


# ---------------------------------------------------------------- memory
class TreeMemory:
    """Peak PSS and peak RSS (summed over processes: shared pages counted once per process)
    of this process and all its descendants (pfslab.lab.footprint), sampled in a thread
    every ``every`` seconds."""

    def __init__(self, every: float = 5.0):
        self.every = every
        self.peak_kb = 0
        self.peak_rss_kb = 0
        self.peak_procs = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        from pfslab.lab.footprint import footprint
        tot = footprint({"run": [os.getpid()]}, 0)["total"]
        if tot["pss_kb"] > self.peak_kb:
            self.peak_kb, self.peak_procs = tot["pss_kb"], tot["processes"]
        self.peak_rss_kb = max(self.peak_rss_kb, tot["rss_kb"])

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def __enter__(self):
        self.sample()
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(self.every + 5)
        return False


# ---------------------------------------------------------------- one row
def fallbacks(r: dict) -> int:
    """Files that PFS phones fetched from HQ without being their root (role ``tftp``: a
    phone that gave up on PFS, e.g. refused by a demoted root)."""
    return sum(1 for p in r.get("phones", []) if p.get("pfs_enabled")
               for f in (p.get("files") or {}).values() if f.get("role") == "tftp")


def _per_phone_mb(r: dict, mem: dict | None, phones: int, kind: str = "pss") -> float | None:
    """Peak PSS (or RSS) per phone: the bench's own sample of its process tree (this
    process, which also decodes, included), else the run's ``footprint`` (agents, lab)."""
    key = "peak_kb" if kind == "pss" else "peak_rss_kb"
    if mem and mem.get(key):
        return round(mem[key] / 1024 / phones, 2)
    return (r.get("footprint") or {}).get(f"per_phone_{kind}_mb")


def _ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def build_row(site: dict, r: dict, exp: dict, sim: dict | None, *, run_s: float | None,
              mem: dict | None = None) -> dict:
    """One site's figures, from its PFS results dict (the lab's results.json schema), what was
    expected, and the simulator's results for the same site."""
    hs = r.get("hierarchies") or []
    roots_wire = sum(1 for h in hs if h.get("root"))
    fid = r.get("fidelity") or {}
    lag = fid.get("lag") or {}
    udp = fid.get("udp_drops") or {}
    tim = r.get("timings") or {}
    check = (r.get("wire_check") or {}).get("tftp_vs_log") or {}
    phones = r.get("total") or len(r.get("phones", [])) or site["phones"]
    makespan = r.get("makespan_s")
    sim_ms = (sim or {}).get("makespan_s")
    return {
        "site": site["label"], "subnets": site["subnets"], "phones": site["phones"],
        "completed": r.get("completed"), "total": r.get("total"),
        "roots_wire": roots_wire, "roots_expected": exp["roots"],
        "fallbacks": fallbacks(r),
        "captures_complete": fid.get("captures_complete"),
        "hq_requests_log": len(r.get("tftp_requests") or []),
        "hq_requests_wire": check.get("wire_requests"),
        "hq_requests_expected": exp["hq_requests"],
        # TFTP only (the phones' syslog to HQ is not firmware) against the run's own
        # estimate (its configs name the log server; its TFTP timeout is the k it used)
        "wan_bytes": r.get("wan_tftp_bytes", r.get("wan_bytes")),
        "wan_bytes_all": r.get("wan_bytes"),
        "wan_bytes_bound": (r.get("estimate") or {}).get("wan_bytes") or exp["wan_bytes_bound"],
        "wan_ratio": _ratio(r.get("wan_tftp_bytes", r.get("wan_bytes")),
                            (r.get("estimate") or {}).get("wan_bytes") or exp["wan_bytes_bound"]),
        "lag_p50_ms": lag.get("p50_ms"), "lag_p99_ms": lag.get("p99_ms"),
        "lag_max_ms": lag.get("max_ms"),
        "rcvbuf_drops": udp.get("rcvbuf_errors"), "capture_drops": fid.get("capture_drops"),
        "overloaded": (fid.get("verdict") or {}).get("overloaded"),
        "dilation": r.get("time_dilation") or fid.get("time_dilation") or 1.0,
        "bringup_s": tim.get("bringup_s"),
        # the lab's teardown, then the results written (decoding included)
        "teardown_s": (None if tim.get("teardown_s") is None else
                       round(tim["teardown_s"] + (tim.get("results_s") or 0), 3)),
        "run_s": None if run_s is None else round(run_s, 1),
        "rss_per_phone_mb": _per_phone_mb(r, mem, phones, "rss"),
        "pss_per_phone_mb": _per_phone_mb(r, mem, phones, "pss"),
        "makespan_s": makespan, "sim_makespan_s": sim_ms,
        "makespan_ratio": _ratio(makespan, sim_ms),
        "out_dir": r.get("out_dir"), "run_id": r.get("run_id"),
    }


def _f(v, fmt="{:,}", none="-"):
    return none if v is None else fmt.format(v)


def _mb_pair(a, b) -> str:
    return "-" if a is None else f"{a / 1e6:.2f} / {b / 1e6:.2f}"


def table(rows: list[dict]):
    from rich.table import Table
    t = Table(title="bench-scale: PFS mode", title_justify="left")
    cols = ("site", "upgraded", "roots wire/exp", "fallbacks", "HQ reqs log/wire/exp",
            "WAN TFTP MB / bound", "lag p50/p99 ms", "rcvbuf drops", "capture drops", "dilation",
            "bring-up/teardown/run s", "MB/phone RSS/PSS", "makespan lab/sim s (ratio)")
    for c in cols:
        t.add_column(c, justify="left" if c == "site" else "right")
    t.caption = ("roots: one per (subnet, model, file); WAN: TFTP bytes both ways, against one "
                 "load set per group + configs; MB/phone: peak RSS (summed) and PSS of all "
                 "the run's processes; ! = EMULATION OVERLOADED")
    for w in rows:
        if w.get("error"):
            t.add_row(w["site"], "error: " + w["error"][:60], *[""] * (len(cols) - 2))
            continue
        t.add_row(
            w["site"] + (" !" if w.get("overloaded") else ""),
            f"{_f(w['completed'])}/{_f(w['total'])}",
            f"{w['roots_wire']}/{w['roots_expected']}", str(w["fallbacks"]),
            f"{w['hq_requests_log']}/{_f(w['hq_requests_wire'])}/{w['hq_requests_expected']}",
            _mb_pair(w["wan_bytes"], w["wan_bytes_bound"]),
            f"{_f(w['lag_p50_ms'], '{:.1f}')}/{_f(w['lag_p99_ms'], '{:.1f}')}",
            _f(w["rcvbuf_drops"]), _f(w["capture_drops"]), _f(w["dilation"], "{:g}"),
            f"{_f(w['bringup_s'], '{:.0f}')}/{_f(w['teardown_s'], '{:.0f}')}/"
            f"{_f(w['run_s'], '{:.0f}')}",
            f"{_f(w['rss_per_phone_mb'], '{:.2f}')}/{_f(w.get('pss_per_phone_mb'), '{:.2f}')}",
            f"{_f(w['makespan_s'], '{:.1f}')}/{_f(w['sim_makespan_s'], '{:.1f}')} "
            f"({_f(w['makespan_ratio'], '{:.2f}')})")
    return t


def plot(rows: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ok = [w for w in rows if not w.get("error")]
    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    for sub, mk in ((4, "o"), (1, "s")):
        pts = sorted((w for w in ok if (w["subnets"] == 1) == (sub == 1)),
                     key=lambda w: w["phones"])
        if not pts:
            continue
        x = [w["phones"] for w in pts]
        tag = "1 subnet" if sub == 1 else f"{pts[0]['subnets']} subnets"
        ax[0][0].plot(x, [w["roots_wire"] for w in pts], marker=mk, label=f"roots, {tag}")
        ax[0][0].plot(x, [w["roots_expected"] for w in pts], marker=mk, ls=":", color="grey",
                      label=f"expected, {tag}")
        ax[0][0].plot(x, [w["fallbacks"] for w in pts], marker=mk, ls="--",
                      label=f"fallbacks, {tag}")
        ax[0][1].plot(x, [w["makespan_s"] for w in pts], marker=mk, label=f"lab, {tag}")
        ax[0][1].plot(x, [w["sim_makespan_s"] for w in pts], marker=mk, ls="--",
                      label=f"sim, {tag}")
        ax[1][0].plot(x, [w["lag_p99_ms"] for w in pts], marker=mk, label=f"lag p99, {tag}")
        ax[1][1].plot(x, [w["rss_per_phone_mb"] for w in pts], marker=mk,
                      label=f"RSS, {tag}")
        ax[1][1].plot(x, [w.get("pss_per_phone_mb") for w in pts], marker=mk, ls="--",
                      label=f"PSS, {tag}")
    ax[1][0].axhline(50, color="red", ls=":", label="bound (ad interval / 5)")
    titles = (("PFS roots and fallbacks", "count"), ("makespan (emulated time)", "s"),
              ("timer lag p99", "ms"), ("memory per phone (peak RSS and PSS)", "MB"))
    for a_, (title, unit) in zip([ax[0][0], ax[0][1], ax[1][0], ax[1][1]], titles):
        a_.set_title(title)
        a_.set_xlabel("phones")
        a_.set_ylabel(unit)
        a_.grid(alpha=0.3)
        a_.set_ylim(bottom=0)
        if a_.has_data():
            a_.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- running
def parse_sizes(text: str) -> list[int]:
    """'100,250' -> [100, 250]: phones per site, each at least 1."""
    try:
        ns = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise UserError(f"--sizes/--one-subnet: not a comma list of integers: {text!r}") from None
    if not ns or ns[0] < 1:
        raise UserError(f"--sizes/--one-subnet: phones per site must be at least 1: {text!r}")
    return ns


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pfslab.bench_scale",
                                description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench/scale", help="scale.json, scale.png, runs/")
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="phones per site")
    p.add_argument("--one-subnet", default=",".join(map(str, ONE_SUBNET)),
                   help="sizes also run as one subnet (only those in --sizes; '' for none)")
    p.add_argument("--subnets", type=int, default=DEFAULTS["subnets"], metavar="K")
    p.add_argument("--models", default=DEFAULTS["models"])
    p.add_argument("--wan-bw", default=DEFAULTS["wan_bw"])
    p.add_argument("--wan-delay", default=DEFAULTS["wan_delay"], help="one way")
    p.add_argument("--wan-loss", default=DEFAULTS["wan_loss"])
    p.add_argument("--firmware-scale", type=float, default=DEFAULTS["firmware_scale"],
                   metavar="F")
    p.add_argument("--timeout", type=float, default=DEFAULTS["timeout"], metavar="S")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--no-sim", action="store_true", help="skip the simulator's makespans")
    p.add_argument("--keep-pcaps", action="store_true")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    from pfslab.site import SiteError, split_models
    a = build_parser().parse_args(argv)
    a.sizes = parse_sizes(a.sizes)
    a.one_subnet_sizes = parse_sizes(a.one_subnet) if a.one_subnet.strip() else []
    try:
        a.models_list = split_models(a.models)
    except SiteError as e:
        raise UserError(str(e)) from None
    for s in sites(a.sizes, a.subnets, a.one_subnet_sizes):
        if s["per_subnet"] > 1000:
            raise UserError(f"site {s['label']}: a Linux bridge takes at most 1024 ports, "
                            "so at most 1000 phones per subnet; use more --subnets")
        site_settings(s, a).check()         # one line on bad input (counts, WAN, models)
    return a


def simulate_site(site: dict, a) -> dict:
    from pfslab.calibrate import simulate
    return simulate(site_settings(site, a), "pfs")


def run_site(site: dict, a, out: str, clock) -> dict:
    from pfslab.lab.records import new_prefix
    from pfslab.lab.run import run_mode
    exp = expected(site, a)
    site_out = os.path.abspath(os.path.join(out, "runs", site["label"].replace(" ", "")))
    sim = None
    if not a.no_sim:
        t = time.monotonic()
        sim = simulate_site(site, a)
        clock.say(f"{site['label']}: simulated makespan {sim['makespan_s']} s "
                  f"({time.monotonic() - t:.1f} s to compute)")
    clock.say(f"{site['label']} ({site['phones']} phones): lab run starting; expected "
              f"{exp['roots']} roots, {exp['hq_requests']} HQ requests, WAN >= "
              f"{exp['wan_bytes_bound'] / 1e6:.2f} MB")
    t = time.monotonic()
    try:
        with TreeMemory() as mem:
            r = run_mode(site_settings(site, a), "pfs", site_out, new_prefix())
        w = build_row(site, r, exp, sim, run_s=time.monotonic() - t,
                      mem={"peak_kb": mem.peak_kb, "peak_rss_kb": mem.peak_rss_kb,
                           "procs": mem.peak_procs})
    except (UserError, OSError, RuntimeError) as e:
        w = {"site": site["label"], "subnets": site["subnets"], "phones": site["phones"],
             "error": str(e), "run_s": round(time.monotonic() - t, 1), "out_dir": site_out}
    if not a.keep_pcaps:
        for f in glob.glob(os.path.join(site_out, "*.pcap")):
            os.unlink(f)
    return w


def main(argv=None) -> int:
    import sys
    from rich.console import Console
    from pfslab.bench import Clock, machine_info, write_json
    from pfslab.results import give_to_sudo_user
    try:
        a = parse_args(argv)
        if os.geteuid() != 0:
            raise UserError("the lab needs root: sudo make bench-scale")
    except UserError as e:
        print(f"pfslab: {e}", file=sys.stderr)
        return 2
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    clock = Clock()
    plan = sites(a.sizes, a.subnets, a.one_subnet_sizes)
    clock.say("sites: " + ", ".join(s["label"] for s in plan))
    result = {"command": "python -m pfslab.bench_scale " + " ".join(
                  sys.argv[1:] if argv is None else argv),
              "settings": {k: v for k, v in vars(a).items() if k != "one_subnet"},
              "machine": machine_info(), "rows": []}
    path = os.path.join(out, "scale.json")
    for site in plan:
        try:
            w = run_site(site, a, out, clock)
        except KeyboardInterrupt:              # the lab has torn itself down by now
            print(f"pfslab: bench-scale interrupted during {site['label']}; "
                  f"{len(result['rows'])} sites written to {path}", file=sys.stderr)
            return 130
        result["rows"].append(w)
        result["duration_s"] = round(clock.elapsed(), 1)
        write_json(result, path)
        clock.say(f"{site['label']}: " + (f"ERROR {w['error']}" if w.get("error") else
                  f"{w['completed']}/{w['total']} upgraded, roots {w['roots_wire']}/"
                  f"{w['roots_expected']}, fallbacks {w['fallbacks']}, run {w['run_s']:.0f} s"
                  + (" -- EMULATION OVERLOADED" if w.get("overloaded") else "")))
    Console(width=200).print(table(result["rows"]))
    plot(result["rows"], os.path.join(out, "scale.png"))
    give_to_sudo_user(out)
    print(f"wrote {path} and {os.path.join(out, 'scale.png')}")
    return 1 if any(w.get("error") for w in result["rows"]) else 0


if __name__ == "__main__":
    import sys
    sys.exit(main())
