"""`make faults`: the fault matrix. One lab run (pfs mode) per fault on a small site, plus the
no-fault run they are compared with; one row per fault.

    sudo .venv/bin/python -m pfslab.lab.matrix --out pcaps/faults [--only tftp-restart,flood]
        [--append]                  (keep the no-fault run and rows already in --out)

Per row: phones verified / explicit failures / hung (no outcome when the run ended) / killed
by the fault itself; components installed with bad bytes ("tampered"); the makespan, the
time to recover (the last phone's completion after the fault ended); extra WAN bytes and HQ
TFTP requests against the no-fault run. Writes <out>/faults.json and <out>/faults.md (the
table of docs/faults.md) and exits 1 if any phone hangs or installs tampered bytes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from pfslab.errors import UserError
from pfslab.settings import Settings

from .faults import parse_fault
from .records import new_prefix

#: the small site of the matrix: 2 subnets x 8 phones, two PFS models
SITE = dict(subnets=2, phones_per_subnet=8, models="CP-7961G,CP-7941G", mode="pfs")
#: the matrix, in order ("{baseline}" is the no-fault run's folder)
#: (the no-fault run fetches its components from HQ from about 24 s: faults at 26 s hit
#: transfers in flight)
MATRIX = ("parent@12", "parent@12:silent", "root-fetching@1", "root-fetching@1:silent",
          "root-serving@1", "power-cycle@15:3", "tftp-restart@26:5", "wan-outage@26:10",
          "wan-loss:2%", "wan-loss:5%", "link-flap@26:5:1", "rogue:max-root:1",
          "rogue:zero-root:1", "rogue:claim-trickle:1", "rogue:flood:1",
          "rogue:replay={baseline}/subnet-1.pcap:1", "rogue:tamper:1", "rogue:stall:1")


def row(r: dict, base: dict | None, spec: str) -> dict:
    """One row of the matrix from a mode's results.json entry."""
    killed = verified = failed = hung = tampered = 0
    for p in r["phones"]:
        comps = [c for c in (p.get("components") or {}).values() if c]
        tampered += sum(1 for c in comps if not c.get("sha256_ok"))
        if p.get("fault") in ("crash", "silent"):
            killed += 1
        elif p.get("completed") and all(c.get("sha256_ok") for c in comps):
            verified += 1
        elif p.get("completed_at_s") is not None:
            failed += 1
        else:
            hung += 1
    ends = [f.get("at", 0.0) + f.get("duration", 0.0) for f in r.get("faults", [])
            if f.get("kind") != "wan-loss"]
    injected = [e.get("t") for e in r.get("fault_events", []) if e.get("t") is not None]
    t_fault = max(ends + injected) if (ends or injected) else None
    makespan = r.get("makespan_s")
    out = {"fault": spec, "phones": len(r["phones"]), "verified": verified,
           "explicit_failures": failed, "hung": hung, "killed": killed, "tampered": tampered,
           "makespan_s": makespan,
           "recover_s": round(makespan - t_fault, 1) if makespan and t_fault is not None
           and makespan > t_fault else (0.0 if t_fault is not None else None),
           "wan_bytes": r.get("wan_bytes"), "hq_requests": len(r.get("tftp_requests", [])),
           "fault_events": r.get("fault_events", []), "out_dir": r.get("out_dir")}
    if base is not None:
        out["extra_wan_bytes"] = (r["wan_bytes"] or 0) - (base["wan_bytes"] or 0)
        out["extra_hq_requests"] = out["hq_requests"] - base["hq_requests"]
    return out


def table(rows: list[dict]) -> str:
    """The markdown table of docs/faults.md."""
    head = ("| fault | verified | explicit failures | hung | killed | tampered | makespan s | "
            "recover s | extra WAN bytes | extra HQ requests |")
    lines = [head, "|" + "---|" * 10]
    for x in rows:
        lines.append(f"| `{x['fault']}` | {x['verified']}/{x['phones']} | "
                     f"{x['explicit_failures']} | {x['hung']} | {x['killed']} | "
                     f"{x['tampered']} | {x['makespan_s']} | {_s(x['recover_s'])} | "
                     f"{x.get('extra_wan_bytes', 0):+,} | {x.get('extra_hq_requests', 0):+d} |")
    return "\n".join(lines)


def _s(v) -> str:
    return "-" if v is None else f"{v}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pfslab.lab.matrix", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="pcaps/faults", help="output folder (default: pcaps/faults)")
    p.add_argument("--only", default="", help="comma list of fault kinds or attacks to run "
                                               "(default: all)")
    p.add_argument("--append", action="store_true",
                   help="keep <out>'s no-fault run and rows; add (or redo) the rows run now")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="each run's upgrade timeout, s (default: 300)")
    a = p.parse_args(argv)
    try:
        return run(a)
    except UserError as e:
        print(f"pfslab faults: {e}", file=sys.stderr)
        return 2


def run(a) -> int:
    from .run import run_mode
    from pfslab.results import give_to_sudo_user
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    only = {k.strip() for k in a.only.split(",") if k.strip()}
    specs = [s for s in MATRIX if not only or only & set(s.replace("@", ":").split(":"))]
    base_dir = os.path.join(out, "00-none")
    for s in specs:                 # bad input first: every spec, before any lab is built
        if "{baseline}" not in s:
            parse_fault(s, SITE["subnets"])
    t0 = time.monotonic()
    rows = _previous(out) if a.append else []
    names = {"none"} | {s.replace("{baseline}", "BASELINE") for s in MATRIX}
    rows = [x for x in rows if x["fault"] in names]         # rows of an older matrix go
    if not rows:
        base = run_mode(Settings(**SITE, timeout=a.timeout).check(), "pfs", base_dir,
                        new_prefix())
        rows.append(row(base, None, "none"))
        rows[0].update(extra_wan_bytes=0, extra_hq_requests=0)
        _write(out, rows)
    for i, spec in enumerate(specs, start=1):
        text = spec.format(baseline=base_dir)
        name = f"{i:02d}-" + "".join(c if c.isalnum() else "-" for c in spec.split("{")[0])
        settings = Settings(**SITE, timeout=a.timeout, fault=[text]).check()
        print(f"=== fault {text} ({i}/{len(specs)}, {time.monotonic() - t0:.0f} s so far)",
              flush=True)
        r = run_mode(settings, "pfs", os.path.join(out, name.strip("-")), new_prefix())
        new = row(r, rows[0], spec.replace("{baseline}", "BASELINE"))
        rows = [x for x in rows if x["fault"] != new["fault"]] + [new]
        rows.sort(key=lambda x: _order(x["fault"]))
        _write(out, rows)
    give_to_sudo_user(out)
    print(table(rows))
    bad = [x["fault"] for x in rows if x["hung"] or x["tampered"]]
    print(f"faults: {len(rows)} rows in {time.monotonic() - t0:.0f} s; "
          + (f"FAILED (hung or tampered): {', '.join(bad)}" if bad else "no hang, no tampered"
             " install") + f"; {out}/faults.json")
    return 1 if bad else 0


def _order(fault: str) -> int:
    """A row's place: the no-fault run, then MATRIX's order."""
    names = ["none"] + [s.replace("{baseline}", "BASELINE") for s in MATRIX]
    return names.index(fault) if fault in names else len(names)


def _previous(out: str) -> list[dict]:
    """The rows of an earlier matrix in ``out`` (its no-fault run first), or []."""
    try:
        with open(os.path.join(out, "faults.json")) as f:
            rows = json.load(f)["rows"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return rows if rows and rows[0].get("fault") == "none" else []


def _write(out: str, rows: list[dict]) -> None:
    with open(os.path.join(out, "faults.json"), "w") as f:
        json.dump({"site": SITE, "rows": rows}, f, indent=1)
    with open(os.path.join(out, "faults.md"), "w") as f:
        f.write(table(rows) + "\n")


if __name__ == "__main__":
    sys.exit(main())
