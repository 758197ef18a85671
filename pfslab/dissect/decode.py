"""`pfslab decode PCAP...`: rebuild PFS elections and trees from subnet captures alone.

A first cut: per pcap, model, file and map, the hierarchies seen on the wire (claims and the
winner, the tree from the OFFERs, each phone's READY, the bytes each child received over TCP).
TFTP accounting from the WAN pcap is not done yet.
"""
from __future__ import annotations

import json
import pathlib
from collections import defaultdict

from ..errors import UserError


def add_arguments(p):
    p.add_argument("pcaps", nargs="+", metavar="PCAP", help="subnet captures of a lab run")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _ip(endpoint: str) -> str:
    return endpoint.rsplit(":", 1)[0]


def decode_pcap(path) -> list[dict]:
    """The hierarchies in one pcap, as plain dicts (times in seconds from the first message)."""
    from .scapy_cppdp import CPPDP, CPPDPFrame, iter_cppdp

    groups: dict = defaultdict(lambda: {"claims": {}, "roots": {}, "offers": {}, "ready": {},
                                        "refused": []})
    requests: dict = {}          # (child endpoint, parent endpoint) -> (model, file, xid)
    transfers: dict = {}         # same key -> transfer dict
    malformed = 0
    t0 = None
    for rec in iter_cppdp(path):
        t0 = rec.time if t0 is None else t0
        t = round(rec.time - t0, 6)
        p = rec.decoded
        if not isinstance(p, (CPPDP, CPPDPFrame)) or p.malformed():
            malformed += 1
            continue
        if isinstance(p, CPPDP):
            model, file = p.model.decode(), p.file.decode()
            g = groups[(model, file, p.map)]
            src = _ip(rec.src)
            if p.type == 1:
                c = g["claims"].setdefault(src, {"ip": src, "xid": f"0x{p.xid:08x}",
                                                  "strength": f"0x{p.strength:08x}",
                                                  "first": t, "max_ad": 0})
                c["max_ad"] = max(c["max_ad"], p.ad)
                c["last"] = t
            elif p.type == 2:
                g["roots"].setdefault(p.xid, {"root": src, "first": t, "server": p.server,
                                              "strength": f"0x{p.strength:08x}"})
            elif p.type == 4:
                g["offers"].setdefault(p.xid, {})[_ip(rec.dst)] = {
                    "phone": _ip(rec.dst), "parent": p.getfieldval("parent"),
                    "slot": p.slot, "depth": p.depth, "time": t}
            elif p.type == 5:
                g["refused"].append({"phone": _ip(rec.dst), "reason": p.reason, "time": t})
            elif p.type == 6:
                g["ready"].setdefault(src, {"phone": src, "time": t, "size": p.size,
                                            "source": "peer" if p.source else "TFTP"})
        else:
            if p.type == 0x11:
                key = (rec.src, rec.dst)
                requests[key] = (p.model.decode(), p.file.decode(), p.xid)
                transfers[key] = {"child": _ip(rec.src), "parent": _ip(rec.dst),
                                  "start": t, "bytes": 0, "end": None, "abort": None}
            else:
                key = (rec.dst, rec.src)
                tr = transfers.get(key)
                if tr is None:
                    continue
                if p.type == 0x14:
                    tr["bytes"] += len(p.data)
                elif p.type == 0x15:
                    tr["end"] = t
                elif p.type == 0x16:
                    tr["abort"] = p.reason
    out = []
    for (model, file, lmap), g in sorted(groups.items(), key=lambda kv: kv[0][:2]):
        xids = list(g["roots"]) or [None]
        for xid in xids:
            root = g["roots"].get(xid)
            h = {"pcap": str(path), "model": model, "file": file, "map": f"0x{lmap:08x}",
                 "xid": None if xid is None else f"0x{xid:08x}",
                 "root": root and root["root"], "root_time": root and root["first"],
                 "server": root and root["server"],
                 "claims": sorted(g["claims"].values(), key=lambda c: c["first"]),
                 "tree": sorted(g["offers"].get(xid, {}).values(), key=lambda o: o["time"]),
                 "ready": sorted(g["ready"].values(), key=lambda r: r["time"]),
                 "refused": g["refused"],
                 "transfers": [tr for k, tr in transfers.items()
                               if requests[k][:2] == (model, file)
                               and (xid is None or requests[k][2] == xid)]}
            out.append(h)
    if malformed and out:
        out[0]["malformed_messages"] = malformed
    return out


def _tree_lines(h) -> list[str]:
    ready = {r["phone"]: r for r in h["ready"]}
    children = defaultdict(list)
    for o in h["tree"]:
        children[o["parent"]].append(o)

    def label(ip):
        r = ready.get(ip)
        return ip + (f"  ready {r['time']:.3f}s ({r['source']})" if r else "")

    lines = [f"    {label(h['root'])}  [root, TFTP from {h['server']}]"]

    def walk(ip, prefix, seen):
        kids = sorted(children.get(ip, []), key=lambda o: o["slot"])
        for i, o in enumerate(kids):
            last = i == len(kids) - 1
            lines.append(f"    {prefix}{'└── ' if last else '├── '}{label(o['phone'])}"
                         f"  [slot {o['slot']}, depth {o['depth']}]")
            if o["phone"] not in seen:
                walk(o["phone"], prefix + ("    " if last else "│   "), seen | {o["phone"]})

    walk(h["root"], "", {h["root"]})
    return lines


def render_text(hierarchies) -> str:
    out = []
    for h in hierarchies:
        out.append(f"{pathlib.Path(h['pcap']).name}  {h['model']}  {h['file']}  "
                   f"XID{(h['xid'] or '-')[2:].upper()}")
        cl = h["claims"]
        win = f"winner {h['root']} at {h['root_time']:.3f}s" if h["root"] else "no ROOT seen"
        out.append(f"  election: {len(cl)} claimant(s), {win}")
        for c in cl:
            out.append(f"    {c['ip']:<15} strength {c['strength']}  ads 0..{c['max_ad']}  "
                       f"{c['first']:.3f}s..{c['last']:.3f}s")
        if h["root"]:
            out.append("  tree:")
            out += _tree_lines(h)
        for tr in h["transfers"]:
            state = f"END {tr['end']:.3f}s" if tr["end"] is not None else \
                (f"ABORT {tr['abort']}" if tr["abort"] else "open")
            out.append(f"  tcp {tr['parent']} -> {tr['child']}: {tr['bytes']} bytes, {state}")
        out.append("")
    return "\n".join(out)


def run(args) -> int:
    allh = []
    for p in args.pcaps:
        if not pathlib.Path(p).is_file():
            raise UserError(f"no such pcap: {p}")
        try:
            allh += decode_pcap(p)
        except Exception as e:  # a pcap that Scapy cannot even read
            raise UserError(f"cannot read {p}: {e}") from None
    if args.json:
        print(json.dumps({"hierarchies": allh}, indent=1))
    else:
        print(render_text(allh), end="")
    return 0
