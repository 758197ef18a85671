"""`pfslab lab`: build the lab, run a PFS and/or a traditional upgrade, capture, tear down.

One mode is a pipeline (``run_mode``), the same topology, seed and settings each time:
  settings (pfslab.settings: one table of defaults, validated once)
  -> site (``settings.site()``, pfslab.site: the phones, their three configuration levels,
     ``Site.files(mode)``)
  -> ``LabNet(site, settings)`` (Mininet, WAN, captures, in.tftpd serving the site's files)
  -> the phone agent (``python -m pfslab.agent many SPEC.json``, all phones in one process)
  -> results (pfslab.results: per-phone outcomes, pcap figures, the wire check).
Output: <out>/<mode>/{wan.pcap, subnet-<k>.pcap, tftpd.log, pfs-syslog.log, logs/,
agent-*.json*}, <out>/results.json (a list of one dict per mode when both ran;
docs/results.md) and <out>/report.html (docs/report.md), then a summary table. While the
phones upgrade, the live view shows their screens (plain lines without a terminal).
"""
from __future__ import annotations

import argparse
import datetime
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
    signer = signer or settings.signer()
    os.makedirs(out, exist_ok=True)
    save_trust(signer, out)
    net = LabNet(site, settings, out_dir=out, prefix=prefix,
                 log=lambda m: print(f"  {mode}: {m}", flush=True))
    site.log_server = f"{net.hq_ip}:{PFS_LOG_PORT}"     # the PFS log server at HQ
    net.tftp_files = site.files(mode, signer)
    with net:
        w = net.wan.describe()
        print(f"{mode}: lab {net.run_id}: {len(net.phones)} phones in {site.subnets()} "
              f"subnets; WAN {w['bw']}, {w['delay']} one way, loss {w['loss']} "
              f"({net.wan.emulation})", flush=True)
        if cli:
            print("Mininet CLI: the lab is up; `exit` starts the upgrade", flush=True)
            net.cli()
        t_agent = time.time()
        injector = Injector(net, settings.all_faults(), log=lambda m: print(f"  {mode}: {m}",
                                                                             flush=True))
        try:
            agent_rc = run_agent(net, settings, mode, out, signer.trust.hex(), injector, live)
        finally:
            injector.close()
        tftp_log, wan = net.tftp_requests(), net.wan.describe()
    # torn down: captures are complete
    r = collect(net, mode, agent_rc, tftp_log, t_agent, wan)
    r.faults = [f.to_dict() for f in settings.all_faults()]
    r.fault_events = agent_fault_events(out) + injector.events
    return r.to_dict()


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


def run_agent(net: LabNet, settings: Settings, mode: str, out: str, trust: str,
              injector: Injector | None = None, live: bool | None = None) -> int:
    """Run all phones in one agent process; its JSON lines go to agent-events.jsonl and the
    live view (pfslab.view.live). ``trust``: the public key the phones hold; ``injector``:
    the network faults, ticked from here (this thread) from the phones' reset. Returns its
    exit code."""
    spec_path = os.path.join(out, "agent-spec.json")
    with open(spec_path, "w") as f:
        json.dump(settings.agent_spec(net.hq_ip, net.agent_phones(),
                                      os.path.join(out, "logs"), mode, trust), f, indent=1)
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(os.path.join(out, "agent.stderr"), "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "pfslab.agent", "many", spec_path,
                                 "--results", os.path.join(out, "agent-results.json")],
                                stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                cwd=REPO_ROOT, env=env, start_new_session=True,
                                preexec_fn=die_with_parent())
    net.track(proc, "agent", group=True)
    view = LiveView(Board(net.agent_phones(), mode, settings.wan()[0]), live=live)
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
                if isinstance(ev, dict):
                    if ev.get("event") == "started" and not reset_at:
                        reset_at.append(time.monotonic())
                    view.event(ev)

    reader = threading.Thread(target=pump, daemon=True)
    with view:
        reader.start()
        deadline = time.monotonic() + settings.timeout + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if injector is not None and reset_at:
                injector.tick(time.monotonic() - reset_at[0])
            time.sleep(0.2)
        if proc.poll() is None:
            proc.terminate()
        rc = proc.wait()
        reader.join(5)
    return rc


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
    frames, wan_bytes = res.pcap_bytes(os.path.join(out, "wan.pcap"))
    check = res.wire_check(out, res.hierarchies(phones), tftp_log)
    return res.ModeResult(mode=mode, wan=wan, phones=phones,
                          tftp_requests=res.tftp_requests_since(tftp_log, t_agent),
                          wan_bytes=wan_bytes, wan_frames=frames, run_id=net.run_id,
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
    signer = settings.signer()          # one HQ key per run (both modes)
    results = []
    for mode in modes:
        prefix = args.prefix if (args.prefix and len(modes) == 1) else new_prefix()
        mode_out = os.path.join(out, mode) if len(modes) > 1 else out
        r = run_mode(settings, mode, mode_out, prefix, cli=args.cli,
                     live=False if args.no_live else None, signer=signer)
        results.append(r)
        print(f"{mode}: {r['completed']}/{r['total']} phones upgraded, makespan "
              f"{r['makespan_s']} s, WAN {r['wan_bytes']:,} bytes, "
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
