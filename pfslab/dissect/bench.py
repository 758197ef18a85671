"""`make bench-decode`: how fast `pfslab decode` reads a run's captures, and in how much memory.

    python -m pfslab.dissect.bench DIR [DIR ...] [--no-half] [--report]

For each DIR (a run's mode folder: subnet-<k>.pcap, wan.pcap, pfs-syslog.log), the decode
runs in a fresh process (``decode_paths``, what `pfslab lab` runs after every mode), and one
row is printed: the captures' size and frames, how many frames went to Scapy (the ones that
are not plain Ethernet/IPv4; pfslab.dissect.wire), CPU and wall time, and the process's peak
RSS, also per MB of capture (the peak less the RSS once Python and Scapy are loaded).

Unless ``--no-half``, the same folder cut to the first half of each capture's frames (and of
the log server's lines) is decoded too, and the two rows' memory compared: memory that grows
linearly with the captures gives about the same RSS per MB at both sizes.

``--report`` also times report.html (``pfslab report``, written to a temporary file) for a
folder with a results.json. Figures, never pass/fail; run it under ``flock /work/heavy.lock``
on a shared machine, and read the CPU time rather than the wall time while others run.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import struct
import subprocess
import sys
import tempfile
import time

from ..errors import UserError
from .decode import SYSLOG_FILE, expand_paths


def _rss_mb() -> float:
    """This process's resident set now, in MB (/proc; 0 where there is none)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def measure(run_dir: str, report: bool = False) -> dict:
    """Decode ``run_dir`` in this process: sizes, times and memory (call it in a fresh
    process: the peak RSS is the process's)."""
    from . import decode
    decode._scapy_ports()                  # Scapy and the layers loaded: the baseline
    paths = expand_paths([run_dir])
    base = _rss_mb()
    scans: list = []
    c0, w0 = time.process_time(), time.perf_counter()
    rep = decode.decode_paths([run_dir], scans=scans)
    out = {"dir": run_dir, "mb": sum(p.stat().st_size for p in paths) / 1e6,
           "frames": sum(s.frames for s in scans), "scapy_frames": sum(s.fallbacks for s in scans),
           "hierarchies": len(rep["hierarchies"]), "tftp_transfers": rep["tftp"]["transfers"],
           "cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - w0,
           "rss_base_mb": base, "rss_peak_mb": resource.getrusage(
               resource.RUSAGE_SELF).ru_maxrss / 1024}
    if report:
        from ..view.report_html import write_report
        with tempfile.TemporaryDirectory() as tmp:
            c0, w0 = time.process_time(), time.perf_counter()
            try:
                write_report(run_dir, os.path.join(tmp, "report.html"))
                out["report_cpu_s"] = time.process_time() - c0
                out["report_wall_s"] = time.perf_counter() - w0
            except UserError as e:
                out["report_error"] = str(e)
    return out


def cut_half(run_dir: str, dest: str) -> str:
    """``dest`` filled with the first half of each classic pcap's frames in ``run_dir`` (and
    of its log server's lines); other captures are left out."""
    for p in expand_paths([run_dir]):
        raw = p.read_bytes()
        if len(raw) < 24 or raw[:4] not in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4",
                                             b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"):
            continue
        order = "<" if raw[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        ends, pos = [], 24
        while pos + 16 <= len(raw):
            pos += 16 + struct.unpack_from(order + "I", raw, pos + 8)[0]
            if pos > len(raw):
                break
            ends.append(pos)
        (pathlib.Path(dest) / p.name).write_bytes(raw[:ends[len(ends) // 2 - 1]] if len(ends) > 1
                                                 else raw[:24])
    log = pathlib.Path(run_dir) / SYSLOG_FILE
    if log.is_file():
        lines = log.read_bytes().splitlines(keepends=True)
        (pathlib.Path(dest) / SYSLOG_FILE).write_bytes(b"".join(lines[:len(lines) // 2]))
    return dest


def _child(run_dir: str, report: bool) -> dict:
    p = subprocess.run([sys.executable, "-m", "pfslab.dissect.bench", "--child", run_dir]
                       + (["--report"] if report else []),
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise UserError(f"decoding {run_dir} failed: {p.stderr.strip().splitlines()[-1:]}")
    return json.loads(p.stdout)


def row(name: str, m: dict) -> str:
    grown = m["rss_peak_mb"] - m["rss_base_mb"]
    s = (f"{name:<28} {m['mb']:>8.1f} {m['frames']:>10,} {m['scapy_frames']:>6,} "
         f"{m['cpu_s']:>7.2f} {m['wall_s']:>7.2f} {m['mb'] / max(m['cpu_s'], 1e-9):>7.1f} "
         f"{m['rss_peak_mb']:>8.0f} {m['rss_base_mb']:>6.0f} "
         f"{grown / max(m['mb'], 1e-9):>9.2f}")
    if "report_cpu_s" in m:
        s += f"   report.html {m['report_cpu_s']:.2f} s CPU ({m['report_wall_s']:.2f} s wall)"
    elif "report_error" in m:
        s += f"   no report.html: {m['report_error']}"
    return s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pfslab.dissect.bench",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", metavar="DIR", help="a run's mode folder (its pcaps)")
    ap.add_argument("--no-half", action="store_true",
                    help="do not also decode the first half of the captures")
    ap.add_argument("--report", action="store_true", help="also time report.html")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    try:
        if a.child:
            print(json.dumps(measure(a.dirs[0], a.report)))
            return 0
        print(f"{'captures':<28} {'MB':>8} {'frames':>10} {'Scapy':>6} {'CPU s':>7} "
              f"{'wall s':>7} {'MB/s':>7} {'peak MB':>8} {'base':>6} {'MB/MB cap':>9}")
        for d in a.dirs:
            expand_paths([d])                  # one line, exit 2, for a folder without pcaps
            full = _child(d, a.report)
            print(row(os.path.basename(os.path.abspath(d)), full), flush=True)
            if a.no_half:
                continue
            with tempfile.TemporaryDirectory(prefix="pfslab-bench-decode-") as tmp:
                half = _child(cut_half(d, tmp), False)
            print(row("  first half", half), flush=True)
            g_full = full["rss_peak_mb"] - full["rss_base_mb"]
            g_half = half["rss_peak_mb"] - half["rss_base_mb"]
            print(f"  memory over the baseline: {g_half:.0f} MB for {half['mb']:.1f} MB of "
                  f"capture, {g_full:.0f} MB for {full['mb']:.1f} MB (x{g_full / max(g_half, 1e-9):.2f}"
                  f" for x{full['mb'] / max(half['mb'], 1e-9):.2f} the capture); CPU "
                  f"x{full['cpu_s'] / max(half['cpu_s'], 1e-9):.2f}")
    except UserError as e:
        print(f"pfslab: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
