"""One mode's results (`results.json`), the same for the lab and the simulator.

:class:`ModeResult` is the one result type; :func:`hierarchies` the one derivation of PFS
trees from what each phone says it did (``Phone.outcome()["files"]``: role root/child/tftp);
:func:`wan_traffic` and :func:`wire_check` the lab's figures and cross-check from its captures.
The schema is documented in docs/results.md (tests/test_results.py holds the two together).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field


# ---------------------------------------------------------------- trees
def hierarchies(phones: list[dict]) -> list[dict]:
    """Per (subnet, model, file) of the PFS phones: the root (the phone that held the
    registrar) and the parent->child edges, from each phone's ``files``."""
    groups = defaultdict(lambda: {"roots": [], "tftp": [], "edges": []})
    for p in phones:
        if not p.get("pfs_enabled"):
            continue
        for f, v in sorted((p.get("files") or {}).items()):
            g = groups[(p["subnet"], p["model"], f)]
            if v.get("role") == "root":
                g["roots"].append(p["ip"])
            if v.get("source") == "tftp":
                g["tftp"].append(p["ip"])
            elif v.get("parent"):
                g["edges"].append([v["parent"], p["ip"]])
    return [{"subnet": s, "model": m, "file": f,
             "root": g["roots"][0] if g["roots"] else None,
             "edges": g["edges"], "tftp_fetchers": g["tftp"]}
            for (s, m, f), g in sorted(groups.items()) if g["roots"] or g["edges"]]


def wan_dict(bw_bps: int | None, delay_s: float, loss: float) -> dict:
    """results' ``wan``: the settings, as typed and in base units (lab and sim alike)."""
    from pfslab.lab.units import format_bandwidth
    return {"bw": format_bandwidth(bw_bps), "bw_bps": bw_bps, "delay": f"{delay_s * 1000:g}ms",
            "delay_s": delay_s, "loss": f"{loss * 100:g}%", "loss_ratio": loss}


# ---------------------------------------------------------------- the lab's figures
SYSLOG_PORT = 514


def wan_traffic(path: str) -> dict:
    """frames and wire bytes of a capture (pfslab.dissect.pcapfile), split by what they
    carry: ``tftp`` (UDP other than syslog: requests, DATA, ACKs, OACKs, errors), ``syslog``
    (UDP port 514, the phones' log lines to HQ's PFS log server) and ``other`` (ARP, ICMP,
    ...). A missing, empty or unreadable file counts nothing; a torn last record is ignored."""
    from pfslab.dissect.pcapfile import Capture, NotACapture
    c = {"frames": 0, "bytes": 0, "tftp": 0, "syslog": 0, "other": 0}
    try:
        cap = Capture(path)
    except NotACapture:
        return c
    for rec in cap.records():
        c["frames"] += 1
        c["bytes"] += rec.orig_len
        c[_kind(rec.data) if rec.linktype == 1 else "other"] += rec.orig_len
    return c


def _kind(frame: bytes) -> str:
    """tftp / syslog / other for one Ethernet frame: a plain IPv4 UDP datagram, by port
    (pfslab.dissect.wire's fixed-offset reader), else other."""
    from pfslab.dissect.wire import UDP, ether_l4
    r = ether_l4(frame)
    if not isinstance(r, tuple) or r[0] != UDP:
        return "other"
    return "syslog" if SYSLOG_PORT in (r[3], r[4]) else "tftp"


def wire_check(out: str, agent_hier: list[dict], tftp_log: list[dict]) -> dict:
    """``hierarchies`` from the mode's pcaps (``pfslab decode``), and ``wire_check``: how
    they compare with the agents' account, and the RRQs in wan.pcap with tftpd's log. Falls
    back to the agents' account if decoding fails."""
    try:
        from pfslab.dissect.decode import (compare_hierarchies, compare_tftp, decode_paths,
                                           lab_hierarchies)
        rep = decode_paths([out])
        with open(os.path.join(out, "decode.json"), "w") as f:    # report.html reads it
            f.write(json.dumps(rep))      # (json.dump encodes in Python: 4x slower)
        wire = lab_hierarchies(rep)
        check = {"hierarchies_vs_agents": compare_hierarchies(wire, agent_hier),
                 "tftp_vs_log": compare_tftp(rep, tftp_log),
                 "malformed": rep["malformed"], "unreadable_pcaps": rep["errors"]}
    except Exception as e:  # noqa: BLE001 - results must still be written
        return {"hierarchies": agent_hier, "hierarchies_source": f"agents (decode failed: {e})"}
    return {"hierarchies": wire, "hierarchies_source": "wire", "wire_check": check}


def tftp_requests_since(log: list[dict], t0: float) -> list[dict]:
    """in.tftpd's RRQs as results' ``tftp_requests`` (t: seconds after t0)."""
    out = []
    for r in log:
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
@dataclass
class ModeResult:
    """One mode's results; ``to_dict()`` is one entry of results.json (docs/results.md)."""
    mode: str
    wan: dict
    phones: list[dict]
    tftp_requests: list[dict]
    wan_bytes: int | None
    hierarchies: list[dict] = field(default_factory=list)
    hierarchies_source: str = "agents"
    wan_frames: int | None = None
    wan_tftp_bytes: int | None = None   # of wan_bytes: TFTP only (no syslog, ARP, ICMP)
    run_id: str | None = None
    out_dir: str | None = None
    agent_exit: int | None = None
    wire_check: dict | None = None
    capped: dict | None = None          # a capped traditional baseline (pfslab.lab.estimate)
    fidelity: dict | None = None        # lab: did the emulation keep up (pfslab.lab.fidelity)
    timings: dict | None = None         # lab: wall-clock seconds of each phase
    estimate: dict | None = None        # lab: the cost printed before the run
    truncated: bool = False             # stopped before every phone had ended: no makespan
    sim: dict | None = None             # the simulator's own figures (pfslab.sim.run.simulate)
    faults: list = field(default_factory=list)         # lab: pfslab.lab.faults, to_dict()
    fault_events: list = field(default_factory=list)   # lab: what was injected, when

    @property
    def makespan_s(self) -> float | None:
        if self.truncated:
            return None
        done = [p["completed_at_s"] for p in self.phones if p.get("completed_at_s") is not None]
        return round(max(done), 3) if done else None

    @property
    def completed(self) -> int:
        return sum(1 for p in self.phones if p.get("completed"))

    def to_dict(self) -> dict:
        # shallow: the phones' dicts are the result's own (asdict's deep copy of 10^5 phones
        # cost the simulator a tenth of its run)
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for lab_only in ("wire_check", "fidelity", "timings", "estimate"):
            if d[lab_only] is None:
                del d[lab_only]
        return {**d, "makespan_s": self.makespan_s, "completed": self.completed,
                "total": len(self.phones)}


#: from this many phones (all modes together), results.json is written without indentation:
#: json's C encoder then makes it at once
COMPACT_FROM = 10_000


def write_results(results: list[dict], path: str) -> str:
    """results.json: one dict for one mode, a list for several; the file goes to the user.
    Indented, unless it holds :data:`COMPACT_FROM` phones or more (`jq .` indents it)."""
    big = sum(len(r.get("phones") or ()) for r in results) >= COMPACT_FROM
    text = json.dumps(results if len(results) > 1 else results[0], indent=None if big else 1)
    with open(path, "w") as f:
        f.write(text)           # (json.dump would write it piece by piece, far slower)
    give_to_sudo_user(path)
    return path


def give_to_sudo_user(*paths: str) -> None:
    """Under sudo, hand these files and folders (recursively) to the user who ran it."""
    uid = os.environ.get("SUDO_UID")
    if not uid:
        return
    gid = int(os.environ.get("SUDO_GID") or uid)
    for top in paths:
        walk = os.walk(top) if os.path.isdir(top) else [(top, [], [])]
        for dirpath, dirs, files in walk:
            for n in [dirpath] + [os.path.join(dirpath, x) for x in dirs + files]:
                try:
                    os.lchown(n, int(uid), gid)
                except OSError:
                    pass
