"""`pfslab clean`: remove what crashed lab runs left behind, found by their run records
(/run/pfslab/<run-id>.json) and their name prefix, and nothing else.

No machine-wide clean-up (Mininet's own, or killing processes by name): those act on
everything that matches a name.
Here a process is signalled only if its recorded PID still has its recorded start time, and a
link or a named network namespace (/run/netns/<name>: the phones, pfslab.lab.lighthost) is
deleted only if its name is <recorded prefix><upper-case letter>...
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import time

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from . import lighthost, records
from .nsutil import proc_starttime, require_root, same_process


def _signal(entry: dict, sig: int) -> bool:
    pid = entry["pid"]
    if not same_process(pid, entry.get("start")):
        return False
    try:
        if entry.get("group"):
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def kill_recorded(pids: list[dict], timeout: float = 3.0, log=print) -> list[int]:
    """Stop the recorded processes: SIGINT to captures (so pcaps are complete), SIGTERM to the
    rest, SIGKILL to whatever is left after `timeout`. Returns the PIDs signalled."""
    hit = []
    for e in pids:
        sig = signal.SIGINT if e.get("what", "").startswith("tcpdump") else signal.SIGTERM
        if _signal(e, sig):
            hit.append(e["pid"])
            log(f"  stopped pid {e['pid']} ({e.get('what', '?')})")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(
            same_process(e["pid"], e.get("start")) for e in pids):
        _reap(pids)
        time.sleep(0.05)
    for e in pids:
        if _signal(e, signal.SIGKILL):
            log(f"  killed pid {e['pid']} ({e.get('what', '?')})")
    _reap(pids)
    return hit


def _reap(pids: list[dict]):
    """Collect those of the recorded processes that are our own exited children (a zombie
    would otherwise look alive). Other children of this process are not touched."""
    for e in pids:
        try:
            os.waitpid(e["pid"], os.WNOHANG)
        except ChildProcessError:
            pass


def delete_links(prefix: str, log=print) -> list[str]:
    """Delete root-namespace links (veths, bridges, dummies) named <prefix><A-Z>..."""
    pat = records.name_pattern(prefix)
    gone = []
    with IPRoute() as ipr:
        links = [(l["index"], l.get_attr("IFLA_IFNAME")) for l in ipr.link("dump")]
        for index, name in links:
            if name and pat.match(name):
                try:
                    ipr.link("del", index=index)
                    gone.append(name)
                except NetlinkError as e:
                    if e.code != 19:  # ENODEV: went with its veth peer
                        log(f"  could not delete {name}: {e}")
    if gone:
        log(f"  deleted {len(gone)} link(s): {', '.join(gone[:8])}{' ...' if len(gone) > 8 else ''}")
    return gone


def _peered_links(prefix: str) -> list[str]:
    """Root-namespace links of this prefix whose peer is in another namespace (veths)."""
    pat = records.name_pattern(prefix)
    with IPRoute() as ipr:
        return [n for n, l in ((l.get_attr("IFLA_IFNAME"), l) for l in ipr.link("dump"))
                if n and pat.match(n) and l.get_attr("IFLA_LINK_NETNSID") is not None]


def delete_netns(names: list[str], prefix: str, log=print) -> list[str]:
    """Remove the named namespaces ``names`` (a run record's) and any other of ``prefix``
    (names <prefix><A-Z>... only), then wait for their veths' root ends to go."""
    pat = records.name_pattern(prefix)
    todo = sorted({n for n in names if pat.match(n)} | set(lighthost.list_named(pat)))
    if not todo:
        return []
    gone = lighthost.remove(todo, _peered_links(prefix))
    if gone:
        log(f"  removed {len(gone)} network namespace(s): {', '.join(gone[:8])}"
            f"{' ...' if len(gone) > 8 else ''}")
    return gone


def mininet_shells(prefix: str) -> list[dict]:
    """Mininet node shells of this prefix (`bash ... mininet:<prefix><A-Z>...`), which a run
    killed while still building its net had no time to record."""
    pat = records.name_pattern(prefix)
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        for a in args:
            if a.startswith(b"mininet:") and pat.match(a[8:].decode(errors="replace")):
                found.append({"pid": int(d), "start": proc_starttime(int(d)),
                              "what": "mininet " + a[8:].decode(errors="replace")})
                break
    return found


def remove_run(rec: dict, log=print) -> None:
    """Remove everything one run record names, then the record itself."""
    log(f"run {rec.get('run_id')} (prefix {rec.get('prefix')}):")
    pids = list(rec.get("pids", []))
    if rec.get("prefix"):
        known = {e["pid"] for e in pids}
        pids += [e for e in mininet_shells(rec["prefix"]) if e["pid"] not in known]
    kill_recorded(pids, log=log)
    if rec.get("prefix"):
        delete_netns(rec.get("netns") or [], rec["prefix"], log=log)
        delete_links(rec["prefix"], log=log)
    shutil.rmtree(os.path.join(records.RECORD_DIR, f"{rec.get('run_id')}.d"), ignore_errors=True)
    path = rec.get("_path") or os.path.join(records.RECORD_DIR, f"{rec.get('run_id')}.json")
    for p in (path, path + ".tmp"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def owner_alive(rec: dict) -> bool:
    o = rec.get("owner") or {}
    return bool(o.get("pid")) and same_process(o["pid"], o.get("start"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_ids", nargs="*", metavar="RUN_ID",
                   help="only these runs (default: every run whose process is gone)")
    p.add_argument("--force", action="store_true",
                   help="also clean the named RUN_IDs while their process still runs")
    p.add_argument("--dry-run", "-n", action="store_true", help="only list what would go")


def run(args) -> int:
    require_root()
    recs = records.list_records()
    if args.run_ids:
        known = {r.get("run_id") for r in recs}
        for rid in args.run_ids:
            if rid not in known:
                print(f"pfslab clean: no record of run {rid} in {records.RECORD_DIR}")
        recs = [r for r in recs if r.get("run_id") in args.run_ids]
    done = 0
    for rec in recs:
        if owner_alive(rec) and not (args.force and args.run_ids):
            print(f"run {rec.get('run_id')} is still running (pid {rec['owner']['pid']}); "
                  "left alone (name it and add --force to clean it anyway)")
            continue
        if args.dry_run:
            alive = [e for e in rec.get("pids", []) if same_process(e["pid"], e.get("start"))]
            print(f"run {rec.get('run_id')} (prefix {rec.get('prefix')}): would stop "
                  f"{len(alive)} process(es) and delete links and network namespaces named "
                  f"{rec.get('prefix')}[A-Z]*")
            continue
        remove_run(rec)
        done += 1
    if not recs:
        print("pfslab clean: nothing to clean")
    elif not args.dry_run:
        print(f"pfslab clean: cleaned {done} run(s)")
    return 0
