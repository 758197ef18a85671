"""Reference captures: ``python -m pfslab.dissect.samples --out pcaps/samples`` (``make samples``).

Runs small lab upgrades (needs root: Mininet) and keeps, per sample, in ``<out>/<name>/``:
``wan.pcap``, ``subnet-<k>.pcap``, ``tftpd.log``, ``decode.json`` (the golden
``pfslab decode --json`` of that directory, checked by tests/test_samples.py) and ``lab.json``
(the command that made it and what the run reported). Samples:

- ``pfs``: 1 subnet x 6 phones, 2 models, PFS on: elections, trees with 2 children, transfers;
- ``traditional``: the same phones with PFS off: every file across the WAN by TFTP;
- ``fail-parent``: 1 subnet x 7 phones of one model; a parent dies mid-transfer
  (``pfslab lab --fail-parent``) and its children re-join or fall back to TFTP.

Firmware is scaled down (``--firmware-scale``) so all pcaps together stay well under 2 MB.
``--decode-only`` rewrites the golden ``decode.json`` files from the pcaps already there (no
root, no lab), for when the decoder's output changes on purpose.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[2]

COMMON = ["--subnets", "1", "--firmware-scale", "0.005", "--seed", "1", "--timeout", "180"]
SAMPLES = {
    "pfs": COMMON + ["--phones-per-subnet", "6", "--models", "CP-7961G,CP-7941G",
                     "--mode", "pfs"],
    "traditional": COMMON + ["--phones-per-subnet", "6", "--models", "CP-7961G,CP-7941G",
                             "--mode", "traditional"],
    "fail-parent": COMMON + ["--phones-per-subnet", "7", "--models", "CP-7961G", "--mode", "pfs",
                             "--wan-bw", "1mbit", "--wan-delay", "20ms", "--fail-parent", "12"],
}
KEEP = ("wan.pcap", "tftpd.log")
#: what the samples may weigh together (pcaps), to keep the repository small
MAX_TOTAL = 2_000_000


def write_golden(d: pathlib.Path) -> dict:
    """decode.json beside the pcaps of one sample directory."""
    from .decode import decode_paths
    rep = decode_paths([str(d)])
    (d / "decode.json").write_text(json.dumps(rep, indent=1) + "\n")
    return rep


def _fault_hit(run_dir: pathlib.Path) -> bool:
    try:
        for line in (run_dir / "agent-events.jsonl").open():
            ev = json.loads(line)
            if ev.get("event") == "fault" and ev.get("phone"):
                return True
    except (OSError, ValueError):
        pass
    return False


def make_sample(name: str, argv: list[str], out: pathlib.Path, work: pathlib.Path,
                tries: int = 3) -> dict:
    """Run the lab for one sample (retrying a fail-parent run whose fault found no parent
    mid-transfer), copy its pcaps and tftpd log, write decode.json and lab.json."""
    for attempt in range(tries):
        run_dir = work / f"{name}-{attempt}"
        cmd = [sys.executable, "-m", "pfslab.cli", "lab", *argv, "--out", str(run_dir)]
        if attempt:
            cmd += ["--seed", str(1 + attempt)]      # a later --seed wins in argparse
        print(f"samples: {name}: {' '.join(cmd[1:])}", flush=True)
        rc = subprocess.run(cmd, cwd=REPO, stdin=subprocess.DEVNULL).returncode
        if rc not in (0, 1) or not (run_dir / "results.json").exists():
            raise SystemExit(f"samples: {name}: pfslab lab failed (exit {rc})")
        if "--fail-parent" not in argv or _fault_hit(run_dir):
            break
        print(f"samples: {name}: the fault found no parent mid-transfer; again", flush=True)
    else:
        raise SystemExit(f"samples: {name}: no run with a parent failing mid-transfer")
    dest = out / name
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for f in sorted(run_dir.glob("subnet-*.pcap")) + [run_dir / k for k in KEEP]:
        if f.exists():
            shutil.copy2(f, dest / f.name)
    res = json.loads((run_dir / "results.json").read_text())
    seed = cmd[-1] if attempt else "1"
    (dest / "lab.json").write_text(json.dumps({
        "command": "pfslab lab " + " ".join(argv + ([] if not attempt else ["--seed", seed])),
        "completed": res.get("completed"), "total": res.get("total"),
        "makespan_s": res.get("makespan_s"), "wan_bytes": res.get("wan_bytes"),
        "wire_check": res.get("wire_check"),
        "faults": [p["ip"] for p in res.get("phones", []) if p.get("fault")],
    }, indent=1) + "\n")
    return write_golden(dest)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pfslab.dissect.samples",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "pcaps" / "samples"))
    ap.add_argument("--only", action="append", choices=sorted(SAMPLES), default=None,
                    help="make only this sample (repeatable)")
    ap.add_argument("--decode-only", action="store_true",
                    help="only rewrite decode.json from the pcaps already in OUT/<sample>/")
    args = ap.parse_args(argv)
    out = pathlib.Path(args.out)
    names = args.only or list(SAMPLES)
    if args.decode_only:
        for n in names:
            if (out / n).is_dir():
                write_golden(out / n)
                print(f"samples: {out / n}/decode.json")
        return 0
    if os.geteuid() != 0:
        print("samples: the lab needs root (sudo make samples)", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pfslab-samples-") as work:
        for n in names:
            make_sample(n, SAMPLES[n], out, pathlib.Path(work))
    total = sum(f.stat().st_size for f in out.rglob("*.pcap"))
    print(f"samples: {out}: {', '.join(names)}; pcaps {total:,} bytes")
    if total > MAX_TOTAL:
        print(f"samples: warning: more than {MAX_TOTAL:,} bytes of pcaps", file=sys.stderr)
    from pfslab.results import give_to_sudo_user
    give_to_sudo_user(str(out))       # under sudo, the samples are the invoking user's
    return 0


if __name__ == "__main__":
    sys.exit(main())
