"""`pfslab lab`: build the lab, run a PFS and/or a traditional upgrade, capture, tear down.

One mode is a pipeline (``run_mode``), the same topology, seed and settings each time:
  settings (pfslab.settings: one table of defaults, validated once)
  -> site (``settings.site()``, pfslab.site: the phones, their three configuration levels,
     ``Site.files(mode)``)
  -> ``LabNet(site, settings)`` (Mininet, WAN, captures, in.tftpd serving the site's files)
  -> the phone agent (``python -m pfslab.agent many SPEC.json``, all phones in one process)
  -> results (pfslab.results: per-phone outcomes, pcap figures, the wire check, and the
     fidelity account: timer lag, UDP receive drops, capture drops -> overloaded or not).
Before the first mode it prints what each will cost (pfslab.lab.estimate); the traditional
baseline can be capped (--traditional-sample N, --traditional-until S) and then says so.
Output: <out>/<mode>/{wan.pcap, subnet-<k>.pcap, tftpd.log, pfs-syslog.log, logs/,
agent-*.json*}, <out>/results.json (a list of one dict per mode when both ran;
docs/results.md) and <out>/report.html (docs/report.md), then a summary table. While the
phones upgrade, the live view shows their screens (plain lines without a terminal).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import glob
import json
import os
import re
import subprocess
import sys
import threading
import time

from pfslab import results as res
from pfslab.errors import UserError
from pfslab.firmware import Signer
from pfslab.settings import Settings, add_options

from pfslab.view.live import Board, LiveView

from . import estimate as est
from .fidelity import RunWatch, mark_missing_frames
from .dilation import undilate_pcap
from .footprint import footprint
from .net import REPO_ROOT, LabNet
from .inject import Injector
from .nsutil import die_with_parent
from .records import new_prefix
from .syslog_server import PORT as PFS_LOG_PORT

#: the run's public key, in each mode's folder
TRUST_FILE = "hq-signing-key.pub"
#: a run prefix (records.new_prefix makes 'p' + 5): interface names stay within 15 bytes
PREFIX_RE = re.compile(r"[a-z][a-z0-9]{0,7}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_options(p, "lab")
    p.add_argument("--out", help="output directory (default: pcaps/<date>-lab)")
    p.add_argument("--cli", action="store_true", help="open the Mininet CLI after setup")
    p.add_argument("--prefix", default=None, help="name prefix (default: a fresh one)")
    p.add_argument("--no-live", action="store_true",
                   help="plain progress lines instead of the live phone screens (the default "
                        "without a terminal)")


# ---------------------------------------------------------------- one mode
def run_mode(settings: Settings, mode: str, out: str, prefix: str, cli: bool = False,
             live: bool | None = None, signer: Signer | None = None) -> dict:
    """One mode: settings -> site -> LabNet -> agent -> results (one results.json entry).
    ``live``: the live phone screens (None: when stdout is a terminal). ``signer``: HQ's key
    for this run (default: a fresh one); the phones get its public key."""
    site = settings.site()
    k = settings.dilation(site)
    capped = est.capped(mode, settings.traditional_sample, settings.traditional_until,
                        len(site.phones))
    if capped and capped.get("until_s") is not None:
        settings = dataclasses.replace(settings, timeout=capped["until_s"])
    signer = signer or settings.signer()
    os.makedirs(out, exist_ok=True)
    save_trust(signer, out)
    net = LabNet(site, settings, out_dir=out, prefix=prefix, time_dilation=k,
                 log=lambda m: print(f"  {mode}: {m}", flush=True))
    site.log_server = f"{net.hq_ip}:{PFS_LOG_PORT}"     # the PFS log server at HQ
    estimate = est.estimate_settings(settings, mode, site, k)   # configs name it: their size
    net.tftp_files = site.files(mode, signer)
    with net:
        w = net.wan.describe()
        print(f"{mode}: lab {net.run_id}: {len(net.phones)} phones in {site.subnets()} "
              f"subnets; WAN {settings.wan_bw}, {settings.wan_delay} one way, loss {w['loss']} "
              f"({net.wan.emulation})", flush=True)
        print(f"{mode}: time dilation k = {k:g}" + (
            f" (the phones' clocks run {k:g}x slower; the kernel's WAN is {w['bw']}, "
            f"{w['delay']}; times reported are emulated)" if k != 1 else ""), flush=True)
        if cli:
            print("Mininet CLI: the lab is up; `exit` starts the upgrade", flush=True)
            net.cli()
        phones = net.agent_phones()
        if capped and capped.get("sample"):
            phones = est.sample_phones(phones, capped["sample"])
            print(f"{mode}: {est.capped_note(capped)}", flush=True)
        watch = RunWatch(net.phone_netns(), others={"HQ": net.hq.pid})
        watch.start()
        t_agent, t0 = time.time(), time.monotonic()
        injector = Injector(net, settings.all_faults(),
                            log=lambda m: print(f"  {mode}: {m}", flush=True))
        try:
            agent_rc, agent = run_agent(net, settings, mode, out, phones, k,
                                        on_event=watch.event, live=live,
                                        trust=signer.trust.hex(), injector=injector)
        finally:
            injector.close()
        agent_s = time.monotonic() - t0
        watch.stop()
        tftp_log, wan = net.tftp_requests(), net.wan.describe()
        t = time.monotonic()
    teardown_s = round(time.monotonic() - t, 3)
    # torn down: captures are complete; bring their clocks back to emulated time
    t = time.monotonic()
    epoch = agent.get("epoch") or t_agent
    for path in glob.glob(os.path.join(out, "*.pcap")):
        undilate_pcap(path, epoch, k)
    wan = {**wan, **settings_wan(settings), "kernel": {"bw": wan["bw"], "delay": wan["delay"]}} \
        if k != 1 else wan
    r = collect(net, mode, agent_rc, tftp_log, epoch, wan)
    r.capped, r.estimate = capped, estimate
    r.faults = [f.to_dict() for f in settings.all_faults()]
    r.fault_events = agent_fault_events(out) + injector.events
    r.fidelity = watch.result(net.capture_checks)
    if r.hierarchies_source == "wire":
        mark_missing_frames(r.hierarchies, res.hierarchies(r.phones), net.capture_checks)
    r = r.to_dict()
    if k != 1:
        for q in r["tftp_requests"]:
            if q.get("t") is not None:
                q["t"] = round(q["t"] / k, 3)
    bringup = sum(v for n, v in net.timings.items() if n != "teardown")
    r.update(time_dilation=k, agent=agent.get("stats"), footprint=agent.get("footprint"),
             timings={**net.timings, "bringup_s": round(bringup, 3),
                      "agent_s": round(agent_s, 3), "teardown_s": teardown_s,
                      "results_s": round(time.monotonic() - t, 3)})
    return r


def agent_summary(ev: dict) -> dict:
    """The agent's ``agent_stats`` event for results: no histograms, one entry per process."""
    def short(d: dict) -> dict:
        return {k: ({a: b for a, b in v.items() if a != "hist"} if k == "lag" else v)
                for k, v in d.items() if k not in ("event", "processes")}
    return {**short(ev), "processes": [short(p) for p in ev.get("processes") or []]}


def settings_wan(settings: Settings) -> dict:
    """The WAN the user asked for (the emulated one), in results' ``wan`` keys."""
    bw, delay, loss = settings.wan()
    from .wan import WanSettings
    return WanSettings(bw, delay, loss).as_dict()


def agent_fault_events(out: str) -> list[dict]:
    """The agent's fault events (a phone's own faults), from agent-events.jsonl."""
    found = []
    try:
        with open(os.path.join(out, "agent-events.jsonl")) as f:
            for line in f:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if isinstance(ev, dict) and ev.get("event") == "fault":
                    found.append(ev)
    except OSError:
        pass
    return found


def save_trust(signer: Signer, out: str) -> str:
    """The run's public key (never the private one) in the run folder: hq-signing-key.pub,
    64 hex digits (``Trust.from_hex``)."""
    path = os.path.join(out, TRUST_FILE)
    with open(path, "w") as f:
        f.write(signer.trust.hex() + "\n")
    return path


def run_agent(net: LabNet, settings: Settings, mode: str, out: str, phones: list[dict],
              k: float = 1.0, on_event=None, live: bool | None = None, trust: str | None = None,
              injector: Injector | None = None) -> tuple[int, dict]:
    """Run the phone agent on ``phones`` (one process per core at scale:
    pfslab.agent.shards); its JSON lines go to agent-events.jsonl, the live view
    (pfslab.view.live) and ``on_event``. ``trust``: the public key the phones hold;
    ``injector``: the network faults, ticked from here in emulated time from the phones'
    reset. Returns its exit code and {epoch: the reset's wall-clock time, stats: its
    agent_stats, footprint: the largest memory footprint seen while it ran}."""
    spec_path = os.path.join(out, "agent-spec.json")
    with open(spec_path, "w") as f:
        json.dump(settings.agent_spec(net.hq_ip, phones, os.path.join(out, "logs"), mode,
                                      time_dilation=k, trust=trust),
                  f, indent=1)
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(os.path.join(out, "agent.stderr"), "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "pfslab.agent", "many", spec_path,
                                 "--results", os.path.join(out, "agent-results.json")],
                                stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                cwd=REPO_ROOT, env=env, start_new_session=True,
                                preexec_fn=die_with_parent())
    net.track(proc, "agent", group=True)
    view = LiveView(Board(phones, mode, settings.wan()[0]), live=live)
    info: dict = {}
    reset_at: list[float] = []          # monotonic time of the agent's "started" (the reset)

    def pump():
        with open(os.path.join(out, "agent-events.jsonl"), "w") as evf:
            for raw in proc.stdout:
                line = raw.decode(errors="replace").strip()
                if not line:
                    continue
                evf.write(line + "\n")
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(ev, dict):
                    continue
                if ev.get("event") == "started" and not reset_at:
                    reset_at.append(time.monotonic())
                if ev.get("event") == "reset":
                    info["epoch"] = ev.get("epoch")
                elif ev.get("event") == "agent_stats":
                    info["stats"] = agent_summary(ev)
                view.event(ev)
                if on_event:
                    on_event(ev)

    reader = threading.Thread(target=pump, daemon=True)
    groups = {"agent": [proc.pid], "mininet_hosts": [h.pid for h in net.mn.hosts],
              "lab": [os.getpid()]}
    with view:
        reader.start()
        deadline = time.monotonic() + settings.timeout * k + 60
        next_sample = time.monotonic() + 5
        while proc.poll() is None and time.monotonic() < deadline:
            if injector is not None and reset_at:
                injector.tick((time.monotonic() - reset_at[0]) / k)   # emulated time
            time.sleep(0.2)
            if time.monotonic() >= next_sample:       # memory, while everything is up
                fp = footprint(groups, len(net.phones))
                if fp["total"]["rss_kb"] > (info.get("footprint") or {}).get(
                        "total", {}).get("rss_kb", 0):
                    info["footprint"] = fp
                next_sample = time.monotonic() + 10
        if proc.poll() is None:
            proc.terminate()
        rc = proc.wait()
        reader.join(5)
    return rc, info


def collect(net: LabNet, mode: str, agent_rc: int, tftp_log: list[dict], t_agent: float,
            wan: dict) -> res.ModeResult:
    """The agents' per-phone results, the pcaps' figures and the wire check."""
    out = net.out_dir
    try:
        with open(os.path.join(out, "agent-results.json")) as f:
            phones = json.load(f)
    except (OSError, ValueError):
        raise UserError(f"the phone agent wrote no results (exit {agent_rc}); see "
                        f"{out}/agent.stderr")
    pfs_of = net.site.pfs_of(mode)
    for p in phones:
        p["pfs_configured"] = pfs_of.get(p["name"])
    wan_pcap = res.wan_traffic(os.path.join(out, "wan.pcap"))
    check = res.wire_check(out, res.hierarchies(phones), tftp_log)
    return res.ModeResult(mode=mode, wan=wan, phones=phones,
                          tftp_requests=res.tftp_requests_since(tftp_log, t_agent),
                          wan_bytes=wan_pcap["bytes"], wan_frames=wan_pcap["frames"],
                          wan_tftp_bytes=wan_pcap["tftp"], run_id=net.run_id,
                          out_dir=out, agent_exit=agent_rc, **check)


def run(args) -> int:
    settings = Settings.from_args(args)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = os.path.abspath(args.out or os.path.join(REPO_ROOT, "pcaps", f"{stamp}-lab"))
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out {args.out}: that is a file, not a folder")
    if args.prefix is not None and not PREFIX_RE.fullmatch(args.prefix):
        raise UserError(f"--prefix {args.prefix!r}: a lower-case letter, then up to 7 "
                        "lower-case letters or digits (it starts every interface name)")
    modes = settings.modes
    site = settings.site()
    print("what it will cost (lower bounds, from the WAN settings and the load sizes):")
    for mode in modes:
        print("  " + est.describe(est.estimate_settings(settings, mode, site)))
    if "traditional" in modes and not (settings.traditional_sample or
                                       settings.traditional_until):
        t = est.estimate_settings(settings, "traditional", site)
        if t["makespan_s"] > 1800:
            print(f"  (the traditional baseline alone takes >= {est.human_s(t['makespan_s'])};"
                  " cap it with --traditional-sample N or --traditional-until S)")
    signer = settings.signer()          # one HQ key per run (both modes)
    results = []
    for mode in modes:
        prefix = args.prefix if (args.prefix and len(modes) == 1) else new_prefix()
        mode_out = os.path.join(out, mode) if len(modes) > 1 else out
        r = run_mode(settings, mode, mode_out, prefix, cli=args.cli,
                     live=False if args.no_live else None, signer=signer)
        results.append(r)
        print(f"{mode}: {r['completed']}/{r['total']} phones upgraded, makespan "
              f"{r['makespan_s']} s, WAN {r['wan_bytes']:,} bytes "
              f"({r['wan_tftp_bytes']:,} of them TFTP), "
              f"{len(r['tftp_requests'])} TFTP requests at HQ", flush=True)
    path = res.write_results(results, os.path.join(out, "results.json"))
    from pfslab.view.report_html import write_report
    try:
        page = write_report(out)
    except UserError as e:
        page = None
        print(f"pfslab: no report.html: {e}", file=sys.stderr)
    res.give_to_sudo_user(out)
    from pfslab.report import print_report
    print_report(results)
    print(f"results: {path}")
    if page:
        print(f"report: {page}")
    survivors_ok = all(p.get("completed") or p.get("fault") for r in results for p in r["phones"])
    return 0 if survivors_ok else 1
