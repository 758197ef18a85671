"""`make bench-calibrate`: the simulator against the lab, for the same sites.

    sudo .venv/bin/python -m pfslab.calibrate --out bench/calibrate [--sites 2x8,2x100,4x250]

Each site runs in the lab (``pfslab.lab.run.run_mode``) and in ``pfslab sim``
(``pfslab.sim.run.simulate``, its default packet WAN), with the same settings and seed:

* ``2x8``: the README's default run (`pfslab lab`'s defaults: 2 x 8 phones of CP-7961G,
  CP-7941G and CP-7960G, 384 kbit/s, 75 ms one way, firmware x 0.035), both modes;
* ``2x100`` and ``4x250``: bench-scale's settings (CP-7961G and CP-7941G, 10 Mbit/s, 20 ms,
  firmware x 0.002), PFS mode.

For each (site, mode) it prints and writes (``<out>/calibrate.json``) three figures, each as
lab / sim / closed-form bound, with the sim / lab ratio:

* **makespan**: from the reset (every phone at t = 0) to the last phone's end. The lab's is
  in emulated time (wall seconds / k under time dilation), the sim's in virtual time;
* **WAN TFTP bytes**, both directions, every frame as the WAN capture counts it (Ethernet,
  IPv4, UDP and TFTP headers): in the lab, the frames of wan.pcap that belong to a TFTP
  transfer (an RRQ to port 69 and the packets between its client port and the server),
  so not the phones' syslog to the PFS log server at HQ (UDP 514), which the sim does not
  model; in the sim, every packet that crossed its WAN both ways, retransmissions included;
* **HQ requests**: RRQs in tftpd's log / the sim's fetches / one config a phone plus every
  file of every fetching phone (a root per (subnet, model, file) in PFS mode).

The bound is ``pfslab.sim.bench.bounds`` (the WAN's bytes at its rate or a phone's lock-step
chain, whichever is longer; PFS adds its two elections and root waits and the tree's LAN
hops). Figures, never verdicts: a ratio outside 0.9..1.1 is marked ``!``; the exit code is 1
only if a lab run failed outright. ``--sim-only`` recomputes the sim's side against the lab
figures already in calibrate.json (no root needed).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
import time

from pfslab.bench_scale import DEFAULTS as SCALE_DEFAULTS
from pfslab.errors import UserError

#: bench-scale's settings (its defaults)
_SCALE = {k: SCALE_DEFAULTS[k] for k in ("models", "wan_bw", "wan_delay", "firmware_scale")}
#: site -> (Settings fields, modes)
SITES = {
    "2x8": ({"subnets": 2, "phones_per_subnet": 8}, ("pfs", "traditional")),
    "2x100": ({"subnets": 2, "phones_per_subnet": 100, **_SCALE}, ("pfs",)),
    "4x250": ({"subnets": 4, "phones_per_subnet": 250, **_SCALE}, ("pfs",)),
}
TOLERANCE = 0.10
TFTP_PORT = 69
SYSLOG_PORT = 514


def settings_of(site: str, mode: str, seed: int = 1, time_dilation: str = "auto",
                syslog: bool = True):
    """The site's settings; ``time_dilation``: the lab's k (the sim has no use for it);
    ``syslog`` False: no phone's config names the PFS log server (no syslog on the WAN)."""
    from pfslab.settings import Settings
    fields, _ = SITES[site]
    off = "" if syslog else ",".join(
        str(i) for i in range(1, fields["subnets"] * fields["phones_per_subnet"] + 1))
    return Settings(**fields, mode=mode, seed=seed, time_dilation=time_dilation,
                    log_server_off=off).check()


# ---------------------------------------------------------------- the lab's WAN bytes
def _udp(frame: bytes):
    """(src ip, sport, dst ip, dport) of an Ethernet/IPv4/UDP frame (first fragment), else
    None."""
    if len(frame) < 14 + 20 + 8:
        return None
    off, etype = 14, struct.unpack("!H", frame[12:14])[0]
    if etype == 0x8100 and len(frame) >= 18:                    # one VLAN tag
        off, etype = 18, struct.unpack("!H", frame[16:18])[0]
    if etype != 0x0800 or frame[off] >> 4 != 4 or frame[off + 9] != 17:
        return None
    if struct.unpack("!H", frame[off + 6:off + 8])[0] & 0x1FFF:  # a later fragment
        return None
    ihl = (frame[off] & 0x0F) * 4
    u = off + ihl
    if len(frame) < u + 8:
        return None
    sport, dport = struct.unpack("!HH", frame[u:u + 4])
    return frame[off + 12:off + 16], sport, frame[off + 16:off + 20], dport


def wan_tftp_bytes(path: str) -> dict:
    """The WAN capture's bytes by kind: ``tftp_down`` (server to phones), ``tftp_up`` (RRQs,
    ACKs), ``syslog`` (UDP 514) and ``other``; wire lengths (the frame's original length).

    A TFTP transfer starts with an RRQ from (client, port) to the server's port 69; every
    later packet between that client port and the server (from the server's transfer ID, or
    an ERROR from another port) belongs to it."""
    from pfslab.dissect.pcapfile import Capture
    out = {"tftp_down": 0, "tftp_up": 0, "syslog": 0, "other": 0, "frames": 0}
    clients: set = set()
    for rec in Capture(path).records():
        out["frames"] += 1
        u = _udp(rec.data) if rec.linktype == 1 else None
        if u is None:
            out["other"] += rec.orig_len
            continue
        src, sport, dst, dport = u
        if dport == TFTP_PORT:
            clients.add((src, sport, dst))
            out["tftp_up"] += rec.orig_len
        elif (dst, dport, src) in clients:
            out["tftp_down"] += rec.orig_len
        elif (src, sport, dst) in clients:
            out["tftp_up"] += rec.orig_len
        elif dport == SYSLOG_PORT:
            out["syslog"] += rec.orig_len
        else:
            out["other"] += rec.orig_len
    out["tftp"] = out["tftp_down"] + out["tftp_up"]
    return out


def lab_figures(r: dict) -> dict:
    """One lab mode's figures (its results.json entry, its wan.pcap)."""
    wb = None
    if r.get("wan_tftp_bytes") is not None:
        wb = {"tftp": r["wan_tftp_bytes"]}
    elif r.get("out_dir") and os.path.exists(os.path.join(r["out_dir"], "wan.pcap")):
        wb = wan_tftp_bytes(os.path.join(r["out_dir"], "wan.pcap"))
    fid = r.get("fidelity") or {}
    return {"makespan_s": r.get("makespan_s"), "wan_tftp_bytes": (wb or {}).get("tftp"),
            "wan_bytes_by_kind": wb, "wan_bytes_all": r.get("wan_bytes"),
            "hq_requests": len(r.get("tftp_requests") or []),
            "hq_requests_wire": ((r.get("wire_check") or {}).get("tftp_vs_log") or {}
                                 ).get("wire_requests"),
            "completed": r.get("completed"), "total": r.get("total"),
            "time_dilation": r.get("time_dilation") or 1.0,
            "overloaded": (fid.get("verdict") or {}).get("overloaded"),
            "lag_p99_ms": (fid.get("lag") or {}).get("p99_ms"),
            "run_id": r.get("run_id"), "out_dir": r.get("out_dir")}


def sim_figures(r: dict) -> dict:
    s = r.get("sim") or {}
    return {"makespan_s": r.get("makespan_s"),
            "wan_tftp_bytes": (s.get("wan_down_bytes") or 0) + (s.get("wan_up_bytes") or 0),
            "wan_down_bytes": s.get("wan_down_bytes"), "wan_up_bytes": s.get("wan_up_bytes"),
            "hq_requests": len(r.get("tftp_requests") or []),
            "completed": r.get("completed"), "total": r.get("total"),
            "tftp_retransmits": s.get("tftp_retransmits"), "wan_drops": s.get("wan_drops"),
            "cpu_s": s.get("cpu_s")}


def bound_figures(st, mode: str) -> dict:
    from pfslab.sim.bench import bounds
    from pfslab.sim.memnet import SimNet
    site = site_of(st)
    bps, delay, _ = st.wan()
    b = bounds(site.phones, site.files(mode), mode, bps=bps, rtt=2 * delay,
               lan_bps=SimNet.__init__.__kwdefaults__["lan_bps"], blksize=st.blksize,
               pfs_of=site.pfs_of(mode))
    return {"makespan_s": b["bound_s"],
            "wan_tftp_bytes": b["bound_wan_bytes"] + b["bound_up_bytes"],
            "hq_requests": b["bound_requests"]}


def site_of(st):
    """The lab's site as the lab serves it: the configs name the PFS log server at HQ (so
    they have the lab's size on the WAN; the sim sends no syslog)."""
    from pfslab.lab.syslog_server import PORT
    from pfslab.sim.memnet import SimNet
    site = st.site()
    site.log_server = f"{SimNet.__init__.__kwdefaults__['server']}:{PORT}"
    return site


def simulate(st, mode: str) -> dict:
    from pfslab.sim.run import simulate as sim
    bps, delay, loss = st.wan()
    return sim(site_of(st), mode, seed=st.seed, wan_delay_s=delay, wan_bps=bps,
               blksize=st.blksize, wan_loss=loss)


# ---------------------------------------------------------------- rows and the table
def _ratio(sim, lab):
    return round(sim / lab, 3) if sim is not None and lab else None


def build_row(site: str, mode: str, lab: dict | None, sim: dict, bound: dict) -> dict:
    lab = lab or {}
    row = {"site": site.replace("x", " x "), "key": site, "mode": mode,
           "lab": lab, "sim": sim, "bound": bound}
    for k, rk in (("makespan_s", "makespan_ratio"), ("wan_tftp_bytes", "wan_tftp_bytes_ratio"),
                  ("hq_requests", "hq_requests_ratio")):
        row[rk] = _ratio(sim.get(k), lab.get(k))
    row["within"] = all(r is not None and abs(r - 1) <= TOLERANCE for r in
                        (row["makespan_ratio"], row["wan_tftp_bytes_ratio"],
                         row["hq_requests_ratio"]))
    return row


def _fmt(v, f="{:,}"):
    return "-" if v is None else f.format(v)


def _r(v):
    return "-" if v is None else f"{v:.3f}" + (" !" if abs(v - 1) > TOLERANCE else "")


def table(rows: list[dict]):
    from rich.table import Table
    t = Table(title="bench-calibrate: the simulator against the lab (ratio = sim / lab)",
              title_justify="left")
    for c in ("site", "mode", "upgraded lab/sim", "makespan s lab / sim / bound", "ratio",
              "WAN TFTP bytes lab / sim / bound", "ratio", "HQ requests lab / sim / bound",
              "ratio", "k"):
        t.add_column(c, justify="left" if c in ("site", "mode") else "right")
    t.caption = ("makespan: reset to the last phone's end (lab: emulated time); WAN TFTP "
                 "bytes: both ways, headers included, syslog excluded; ! = outside 10 % (after a "
                 "site: the lab's run was EMULATION OVERLOADED)")
    for w in rows:
        lab, sim, b = w["lab"], w["sim"], w["bound"]
        t.add_row(w["site"] + (" !" if lab.get("overloaded") else ""), w["mode"],
                  f"{_fmt(lab.get('completed'))}/{_fmt(lab.get('total'))} "
                  f"{_fmt(sim.get('completed'))}/{_fmt(sim.get('total'))}",
                  f"{_fmt(lab.get('makespan_s'), '{:.1f}')} / "
                  f"{_fmt(sim.get('makespan_s'), '{:.1f}')} / {_fmt(b['makespan_s'], '{:.1f}')}",
                  _r(w["makespan_ratio"]),
                  f"{_fmt(lab.get('wan_tftp_bytes'))} / {_fmt(sim.get('wan_tftp_bytes'))} / "
                  f"{_fmt(b['wan_tftp_bytes'])}", _r(w["wan_tftp_bytes_ratio"]),
                  f"{_fmt(lab.get('hq_requests'))} / {_fmt(sim.get('hq_requests'))} / "
                  f"{_fmt(b['hq_requests'])}", _r(w["hq_requests_ratio"]),
                  _fmt(lab.get("time_dilation"), "{:g}"))
    return t


# ---------------------------------------------------------------- running
def parse_sites(text: str) -> list[str]:
    names = [s.strip().replace(" ", "") for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in SITES]
    if bad or not names:
        raise UserError(f"--sites {text!r}: a comma list of {', '.join(SITES)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pfslab.calibrate",
                                description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench/calibrate", help="calibrate.json and runs/")
    p.add_argument("--sites", default=",".join(SITES), help=f"among {', '.join(SITES)}")
    p.add_argument("--prefix", default=None,
                   help="the lab's interface prefix (default: a fresh one per run)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--time-dilation", default="auto", metavar="K",
                   help="the lab's time dilation: auto (its own choice) or a factor; a busy "
                        "machine needs more to stay faithful (see the lag p99)")
    p.add_argument("--no-syslog", action="store_true",
                   help="no phone sends syslog to the PFS log server at HQ (an experiment: "
                        "the syslog shares the WAN's upstream with TFTP's RRQs and ACKs)")
    p.add_argument("--sim-only", action="store_true",
                   help="re-run only the sim, against the lab figures in calibrate.json")
    p.add_argument("--keep-pcaps", action="store_true")
    return p


def _load(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def run_lab(st, mode: str, out: str, prefix: str | None) -> dict:
    from pfslab.lab.records import new_prefix
    from pfslab.lab.run import run_mode
    r = run_mode(st, mode, out, prefix or new_prefix(), live=False)
    return lab_figures(r)


def main(argv=None) -> int:
    from rich.console import Console

    from pfslab.bench import Clock, machine_info, write_json
    from pfslab.results import give_to_sudo_user
    try:
        a = build_parser().parse_args(argv)
        names = parse_sites(a.sites)
        for name in names:                       # one line on bad input
            settings_of(name, SITES[name][1][0], a.seed, a.time_dilation, not a.no_syslog)
        if not a.sim_only and os.geteuid() != 0:
            raise UserError("the lab needs root: sudo make bench-calibrate (or --sim-only)")
    except UserError as e:
        print(f"pfslab: {e}", file=sys.stderr)
        return 2
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "calibrate.json")
    old = _load(path)
    old_rows = {(w["key"], w["mode"]): w for w in old.get("rows", [])}
    clock = Clock()
    rows, failed = [], False
    for name in names:
        for mode in SITES[name][1]:
            st = settings_of(name, mode, a.seed, a.time_dilation, not a.no_syslog)
            t = time.process_time()
            sim = sim_figures(simulate(st, mode))
            clock.say(f"{name} {mode}: sim makespan {sim['makespan_s']} s, "
                      f"{time.process_time() - t:.1f} s CPU")
            if a.sim_only:
                lab = (old_rows.get((name, mode)) or {}).get("lab")
            else:
                run_out = os.path.join(out, "runs", name, mode)
                shutil.rmtree(run_out, ignore_errors=True)   # tftpd.log would append
                try:
                    lab = run_lab(st, mode, run_out, a.prefix)
                except (UserError, OSError, RuntimeError) as e:
                    clock.say(f"{name} {mode}: lab run failed: {e}")
                    lab, failed = None, True
                if not a.keep_pcaps:
                    for f in os.listdir(run_out) if os.path.isdir(run_out) else ():
                        if f.endswith(".pcap"):
                            os.unlink(os.path.join(run_out, f))
            w = build_row(name, mode, lab, sim, bound_figures(st, mode))
            rows.append(w)
            # another run (another site) may have written meanwhile: keep its rows
            old_rows = {**{(x["key"], x["mode"]): x for x in _load(path).get("rows", [])},
                        **{(x["key"], x["mode"]): x for x in rows}}
            ordered = [old_rows[k] for k in sorted(
                old_rows, key=lambda k: (list(SITES).index(k[0]), k[1]))]
            write_json({"command": "python -m pfslab.calibrate " + " ".join(
                            sys.argv[1:] if argv is None else argv),
                        "tolerance": TOLERANCE, "machine": machine_info(),
                        "rows": ordered}, path)
    Console(width=200).print(table([old_rows[k] for k in sorted(
        old_rows, key=lambda k: (list(SITES).index(k[0]), k[1]))]))
    give_to_sudo_user(out)
    print(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
