"""`pfslab lab`: build the lab, run a PFS and/or a traditional upgrade, capture, tear down.

For each mode (the same topology, seed and settings each time) it:
  1. renders HQ's TFTP files: the load set of every model present (pfslab.firmware) and each
     phone's SEP<MAC>.cnf.xml with its resolved PFS setting (device > common phone profile >
     enterprise; traditional mode turns PFS off everywhere), plus XMLDefault.cnf.xml;
  2. builds a fresh LabNet (captures and in.tftpd included);
  3. writes the agent spec and runs `python -m pfslab.agent many SPEC.json` (all phones reset
     at once, or staggered), showing its progress;
  4. tears the lab down (captures flushed last), then reads wan.pcap and the tftpd log.
Output: <out>/<mode>/{wan.pcap, subnet-<k>.pcap, tftpd.log, logs/, agent-*.json*} and
<out>/results.json (a list of one dict per mode when both ran), then a summary table.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import struct
import subprocess
import sys
import threading
import time
from collections import defaultdict

from pfslab.errors import UserError

from .net import REPO_ROOT, LabNet
from .records import new_prefix

#: `sudo make lab`'s run: 384 kbit/s is where Cisco's 9900 white paper starts calling a link
#: "low-bandwidth"; the scale keeps both modes within about 2.5 minutes on 2 cores.
DEFAULTS = {"subnets": 2, "phones_per_subnet": 8, "wan_bw": "384kbit", "wan_delay": "75ms",
            "wan_loss": "0%", "firmware_scale": 0.035, "timeout": 600.0}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--topo", default="branch", help="a name in topologies/ or FILE.py[:NAME]")
    p.add_argument("--subnets", type=int, default=DEFAULTS["subnets"], metavar="K")
    p.add_argument("--phones-per-subnet", type=int, default=DEFAULTS["phones_per_subnet"],
                   metavar="N")
    p.add_argument("--models", default=None,
                   help="comma list, cycled in each subnet (default CP-7961G,CP-7941G,CP-7960G)")
    p.add_argument("--mode", choices=("pfs", "traditional", "both"), default="both")
    p.add_argument("--reset", choices=("all", "staggered"), default="all",
                   help="reset all phones at once (default) or one after another")
    p.add_argument("--stagger", type=float, default=0.5, metavar="S",
                   help="seconds between resets with --reset staggered")
    p.add_argument("--wan-bw", default=DEFAULTS["wan_bw"])
    p.add_argument("--wan-delay", default=DEFAULTS["wan_delay"], help="one way")
    p.add_argument("--wan-loss", default=DEFAULTS["wan_loss"], help="per direction")
    p.add_argument("--wan-emulation", choices=("auto", "netem", "nfqueue"), default="auto")
    p.add_argument("--firmware-scale", type=float, default=DEFAULTS["firmware_scale"],
                   metavar="F", help="component sizes x F (1.0: the real 8.1 MB SCCP41 set)")
    p.add_argument("--blksize", type=int, default=None, help="TFTP blksize the phones ask for")
    p.add_argument("--tftp-refuse", action="append", default=[], metavar="OPTION",
                   help="in.tftpd refuses this TFTP option (e.g. blksize); repeatable")
    p.add_argument("--pfs-enterprise", choices=("on", "off", "unset"), default="unset",
                   help="enterprise-level PFS setting (pfs mode)")
    p.add_argument("--pfs-profile", choices=("on", "off", "unset"), default="on",
                   help="common phone profile PFS setting (pfs mode; default on)")
    p.add_argument("--device-pfs-off", default="", metavar="I,J",
                   help="phone numbers (1-based, across subnets) with PFS off at device level")
    p.add_argument("--out", help="output directory (default pcaps/<run-id>)")
    p.add_argument("--cli", action="store_true", help="open the Mininet CLI after setup")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=DEFAULTS["timeout"], metavar="S",
                   help="give up on an upgrade after S seconds")
    p.add_argument("--prefix", default=None, help="name prefix (default: a fresh one)")
    p.add_argument("--fail-parent", default=None, metavar="S[:silent]",
                   help="pfs mode: S seconds after the reset, a parent that is passing a file "
                        "on dies (its connections reset; ':silent': it just goes quiet)")


# ---------------------------------------------------------------- TFTP files
def _level(v: str):
    return {"on": True, "off": False, "unset": None}[v]


def render_files(phones: list[dict], mode: str, scale: float, enterprise, profile,
                 device_off: set[int]) -> tuple[dict[str, bytes], dict[str, bool]]:
    """All files HQ serves for this mode, and each phone's resolved PFS setting."""
    from pfslab import firmware, phoneconfig
    files: dict[str, bytes] = {}
    loads: dict[str, str] = {}
    pfs_of: dict[str, bool] = {}
    built: set[str] = set()
    try:
        for i, ph in enumerate(phones, start=1):
            name = firmware.model_load(ph["model"])
            if name not in built:
                _, f = firmware.build_load(name, scale)
                files.update(f)
                built.add(name)
            loads[ph["model"]] = name
            if mode == "traditional":
                pfs = False
            else:
                pfs = phoneconfig.resolve_pfs(ph["model"], False if i in device_off else None,
                                              profile, enterprise)
            pfs_of[ph.get("label", ph["name"])] = pfs
            files[phoneconfig.sep_filename(ph["mac"])] = phoneconfig.render_sep(
                ph["mac"], ph["model"], name, pfs)
        files[phoneconfig.XMLDEFAULT] = phoneconfig.render_xmldefault(loads)
    except (firmware.FirmwareError, ValueError) as e:
        raise UserError(str(e)) from None
    return files, pfs_of


# ---------------------------------------------------------------- pcap figures
def pcap_bytes(path: str) -> tuple[int, int]:
    """(frames, bytes on the wire) of a classic pcap file."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
            if len(head) < 24:
                return 0, 0
            e = "<" if head[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
            n = total = 0
            while True:
                rec = f.read(16)
                if len(rec) < 16:
                    break
                _, _, incl, orig = struct.unpack(e + "IIII", rec)
                f.seek(incl, 1)
                n += 1
                total += orig
            return n, total
    except FileNotFoundError:
        return 0, 0


# ---------------------------------------------------------------- results
def hierarchies(phones: list[dict]) -> list[dict]:
    """Per (subnet, model, file) of the PFS phones: the root (fetched it by TFTP and served it
    on) and the parent->child edges, from where each phone got each file."""
    groups = defaultdict(lambda: {"tftp": [], "edges": []})
    for p in phones:
        if not p.get("pfs_enabled"):
            continue
        srcs = dict((c, (v or {}).get("source")) for c, v in (p.get("components") or {}).items())
        if p.get("load"):
            srcs[p["load"] + ".loads"] = p.get("loads_source")
        for f, src in srcs.items():
            if src is None:
                continue
            g = groups[(p["subnet"], p["model"], f)]
            if src == "tftp":
                g["tftp"].append(p["ip"])
            else:
                g["edges"].append([src, p["ip"]])
    out = []
    for (subnet, model, f), g in sorted(groups.items()):
        parents = {e[0] for e in g["edges"]}
        root = next((ip for ip in g["tftp"] if ip in parents), g["tftp"][0] if g["tftp"] else None)
        out.append({"subnet": subnet, "model": model, "file": f, "root": root,
                    "edges": g["edges"], "tftp_fetchers": g["tftp"]})
    return out


def wire_hierarchies(out: str, phones: list[dict], tftp_reqs: list[dict]) -> dict:
    """results' ``hierarchies`` from the mode's pcaps (``pfslab decode``), not from what the
    agents say; ``wire_check`` compares them with the agents' account and the RRQs in
    wan.pcap with tftpd's log. Falls back to the agents' account if decoding fails."""
    agent = hierarchies(phones)
    try:
        from pfslab.dissect.decode import (compare_hierarchies, compare_tftp, decode_paths,
                                           lab_hierarchies)
        rep = decode_paths([out])
        wire = lab_hierarchies(rep)
        check = {"hierarchies_vs_agents": compare_hierarchies(wire, agent),
                 "tftp_vs_log": compare_tftp(rep, tftp_reqs),
                 "malformed": rep["malformed"], "unreadable_pcaps": rep["errors"]}
    except Exception as e:  # noqa: BLE001 - results must still be written
        return {"hierarchies": agent, "hierarchies_source": f"agents (decode failed: {e})"}
    return {"hierarchies": wire, "hierarchies_source": "wire", "wire_check": check}


def _tftp_rel(reqs: list[dict], t0: float) -> list[dict]:
    out = []
    for r in reqs:
        if r.get("event") != "RRQ":
            continue
        try:
            t = datetime.datetime.fromisoformat(r["time"]).timestamp() - t0
        except (KeyError, ValueError):
            t = None
        out.append({"client": r["client"], "file": r["file"],
                    "t": round(t, 3) if t is not None else None})
    return out


# ---------------------------------------------------------------- one mode
class Progress:
    def __init__(self, mode: str, total: int):
        self.mode, self.total, self.done, self.ok = mode, total, 0, 0
        self.t0 = time.monotonic()
        self.last_print = 0.0
        self.tty = sys.stdout.isatty()
        self.bar = None
        if self.tty:
            from rich.progress import BarColumn, Progress as RP, TextColumn, TimeElapsedColumn
            self.bar = RP(TextColumn(f"[bold]{mode}[/]"), BarColumn(),
                          TextColumn("{task.completed}/{task.total} phones upgraded"),
                          TextColumn("{task.fields[files]} files"), TimeElapsedColumn())
            self.bar.start()
            self.task = self.bar.add_task(mode, total=total, files=0)
        self.files = 0

    def event(self, ev: dict) -> None:
        kind = ev.get("event")
        if kind == "completed":
            self.done += 1
            self.ok += bool(ev.get("ok"))
        elif kind == "installed":
            self.files += 1
        if self.bar:
            self.bar.update(self.task, completed=self.done, files=self.files)
        elif time.monotonic() - self.last_print > 5 or (kind == "completed"
                                                          and self.done == self.total):
            self.last_print = time.monotonic()
            print(f"  {self.mode}: {self.done}/{self.total} phones done, {self.files} files "
                  f"installed, {time.monotonic() - self.t0:.0f}s", flush=True)

    def close(self):
        if self.bar:
            self.bar.stop()


def run_mode(args, mode: str, out: str, prefix: str) -> dict:
    topo_args = {"subnets": args.subnets, "phones_per_subnet": args.phones_per_subnet,
                 "models": args.models}
    device_off = {int(x) for x in args.device_pfs_off.split(",") if x.strip()} \
        if args.device_pfs_off else set()
    net = LabNet(args.topo, topo_args, wan_bw=args.wan_bw, wan_delay=args.wan_delay,
                 wan_loss=args.wan_loss, wan_emulation=args.wan_emulation, seed=args.seed,
                 out_dir=out, prefix=prefix,
                 tftp_args=[a for o in args.tftp_refuse for a in ("--refuse", o)],
                 log=lambda m: print(f"  {mode}: {m}", flush=True))
    plan = net.topo.phones
    files, pfs_of = render_files(plan, mode, args.firmware_scale, _level(args.pfs_enterprise),
                                 _level(args.pfs_profile), device_off)
    net.tftp_files = files
    events_path = os.path.join(out, "agent-events.jsonl")
    results_path = os.path.join(out, "agent-results.json")
    agent_rc = None
    t_agent = None
    with net:
        print(f"{mode}: lab {net.run_id}: {len(net.phones)} phones in {len(net.info['subnets'])} "
              f"subnets; WAN {net.wan.describe()['bw']}, {net.wan.describe()['delay']} one way, "
              f"loss {net.wan.describe()['loss']} ({net.wan.emulation})", flush=True)
        if args.cli:
            print("Mininet CLI: the lab is up; `exit` starts the upgrade", flush=True)
            net.cli()
        extra = {"stagger": args.stagger if args.reset == "staggered" else 0.0}
        if args.blksize:
            extra["blksize"] = args.blksize
        if args.fail_parent and mode == "pfs":
            extra["faults"] = [parse_fault(args.fail_parent)]
        spec_path = net.write_spec(os.path.join(out, "agent-spec.json"), mode=mode,
                                   seed=args.seed, log_dir=os.path.join(out, "logs"),
                                   timeout_s=args.timeout, **extra)
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO_ROOT + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        t_agent = time.time()
        with open(os.path.join(out, "agent.stderr"), "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "pfslab.agent", "many", spec_path,
                                     "--results", results_path], stdout=subprocess.PIPE,
                                    stderr=err, stdin=subprocess.DEVNULL, cwd=REPO_ROOT,
                                    env=env, start_new_session=True)
        net.track(proc, "agent", group=True)
        progress = Progress(mode, len(net.phones))
        def pump():  # the agent's JSON lines -> agent-events.jsonl and the progress display
            with open(events_path, "w") as evf:
                for raw in proc.stdout:
                    line = raw.decode(errors="replace").strip()
                    if not line:
                        continue
                    evf.write(line + "\n")
                    try:
                        progress.event(json.loads(line))
                    except ValueError:
                        pass

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + args.timeout + 60
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            if proc.poll() is None:
                proc.terminate()
            agent_rc = proc.wait()
            reader.join(5)
        finally:
            progress.close()
        tftp_reqs = net.tftp_requests()
        wan = net.wan.describe()
    # torn down: captures are complete
    try:
        with open(results_path) as f:
            phones = json.load(f)
    except (OSError, ValueError):
        raise UserError(f"the phone agent wrote no results (exit {agent_rc}); see "
                        f"{out}/agent.stderr")
    meta = {p.get("label", p["name"]): p for p in plan}
    for p in phones:
        p.setdefault("subnet", meta.get(p["name"], {}).get("subnet"))
        p["pfs_configured"] = pfs_of.get(p["name"])
    frames, wan_bytes = pcap_bytes(os.path.join(out, "wan.pcap"))
    done = [p["completed_at_s"] for p in phones if p.get("completed_at_s") is not None]
    return {"mode": mode, "run_id": net.run_id, "wan": wan,
            "makespan_s": max(done) if done else None,
            "completed": sum(1 for p in phones if p.get("completed")), "total": len(phones),
            "wan_bytes": wan_bytes, "wan_frames": frames,
            "tftp_requests": _tftp_rel(tftp_reqs, t_agent),
            "phones": phones, **wire_hierarchies(out, phones, tftp_reqs),
            "agent_exit": agent_rc, "out_dir": out}


def parse_fault(text: str) -> dict:
    """'30' or '30:silent' -> the agent spec's fault entry."""
    after, _, how = text.partition(":")
    try:
        t = float(after)
    except ValueError:
        t = -1.0
    if t < 0 or how not in ("", "crash", "silent"):
        raise UserError(f"--fail-parent {text!r}: want seconds, optionally ':silent' "
                        "(e.g. 30 or 30:silent)")
    return {"after_s": t, "phone": "auto", "how": how or "crash"}


def run(args) -> int:
    if args.fail_parent:
        parse_fault(args.fail_parent)
    for name in ("subnets", "phones_per_subnet"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if not args.firmware_scale > 0:
        raise UserError("--firmware-scale must be positive")
    modes = ["pfs", "traditional"] if args.mode == "both" else [args.mode]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = os.path.abspath(args.out or os.path.join(REPO_ROOT, "pcaps", f"{stamp}-lab"))
    results = []
    for mode in modes:
        prefix = args.prefix if (args.prefix and len(modes) == 1) else new_prefix()
        mode_out = os.path.join(out, mode) if len(modes) > 1 else out
        results.append(run_mode(args, mode, mode_out, prefix))
        r = results[-1]
        print(f"{mode}: {r['completed']}/{r['total']} phones upgraded, makespan "
              f"{r['makespan_s']} s, WAN {r['wan_bytes']:,} bytes, "
              f"{len(r['tftp_requests'])} TFTP requests at HQ", flush=True)
    path = os.path.join(out, "results.json")
    with open(path, "w") as f:
        json.dump(results if len(results) > 1 else results[0], f, indent=1)
    uid = os.environ.get("SUDO_UID")
    if uid:
        try:
            os.chown(path, int(uid), int(os.environ.get("SUDO_GID") or uid))
            os.chown(out, int(uid), int(os.environ.get("SUDO_GID") or uid))
        except OSError:
            pass
    try:
        from pfslab.report import print_report
        print_report(results)
    except ImportError:
        pass
    print(f"results: {path}")
    survivors_ok = all(p.get("completed") or p.get("fault") for r in results for p in r["phones"])
    return 0 if survivors_ok else 1
