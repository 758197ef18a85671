"""report.html's figures as inline SVG: hierarchy trees, the per-phone timeline (Gantt), one
election as a ladder diagram, WAN throughput of both modes.

Inputs are plain data: results.json's dicts and ``pfslab decode``'s report
(:func:`pfslab.dissect.decode.decode_paths`); the ladder takes the CPPDP records of one
subnet capture (:class:`pfslab.dissect.decode.PcapScan`).
"""
from __future__ import annotations

import ipaddress
import json
from collections import defaultdict

from .svg import (arrow_marker, circle, esc, legend, line, nice_step, polyline, rect, svg,
                  text)

ROLE_COLORS = {"root": "#2b6cb0", "peer": "#38a169", "fallback": "#dd6b20",
               "fault": "#c53030", "failed": "#ffffff", "hq": "#4a5568"}
PHASE_COLORS = {"config": "#cbd5e0", "listen": "#a0aec0", "claim": "#ecc94b",
                "root wait": "#ed8936", "TFTP fetch": "#3182ce", "receive from parent": "#38a169",
                "serve children": "#805ad5"}
#: long bars first, so the short ones (claims, TFTP fetches) stay visible on top
DRAW_ORDER = {"root wait": 0, "serve children": 0, "receive from parent": 1, "listen": 2,
              "claim": 3, "config": 4, "TFTP fetch": 5}
MSG_COLORS = {"CLAIM": "#b7791f", "ROOT": "#2b6cb0", "JOIN": "#2f855a", "OFFER": "#6b46c1",
              "REFUSE": "#c53030", "READY": "#718096"}
MODE_COLORS = {"pfs": "#2b6cb0", "traditional": "#dd6b20"}


def ipkey(ip) -> tuple:
    if not isinstance(ip, str):
        return (1, 0)
    try:
        return (0, int(ipaddress.IPv4Address(ip)))
    except ValueError:
        return (1, 0)


def short(ip: str) -> str:
    """The last two octets: enough to tell phones of one lab apart."""
    return ".".join(str(ip).split(".")[-2:])


# ------------------------------------------------------------------------------ tree

#: trees with more phones than this are drawn as small squares (names in their tooltips)
COMPACT_TREE = 40

def tree_svg(h: dict, names: dict[str, str], faulty: set[str], failed: set[str]) -> str:
    """One hierarchy: HQ on top, dashed lines to the phones that fetched the file by TFTP
    (the root, and fallbacks in orange), solid lines parent -> child."""
    kids: dict[str, list[str]] = defaultdict(list)
    parent: dict[str, str] = {}
    for p, c in h.get("edges", []):
        kids[p].append(c)
        parent.setdefault(c, p)
    fetchers = list(h.get("tftp_fetchers") or [])
    root = h.get("root")
    nodes = {root} if root else set()
    nodes |= set(parent) | set(kids) | set(fetchers)
    tops = sorted((n for n in nodes if n not in parent), key=lambda n: (n != root, ipkey(n)))
    pos: dict[str, tuple[float, int]] = {}
    next_x = [0]

    def place(n: str, depth: int, seen: set) -> float:
        seen.add(n)
        xs = [place(c, depth + 1, seen) for c in sorted(kids.get(n, []), key=ipkey)
              if c not in seen]
        x = sum(xs) / len(xs) if xs else next_x[0]
        if not xs:
            next_x[0] += 1
        pos[n] = (x, depth)
        return x

    seen: set = set()
    for t in tops:
        place(t, 1, seen)
    for n in sorted(nodes - seen, key=ipkey):      # a cycle (cannot happen, but never crash)
        place(n, 1, seen)
    cols = max(next_x[0], 1)
    depth = max((d for _, d in pos.values()), default=1)
    compact = len(pos) > COMPACT_TREE     # a big tree: dots with tooltips, no labels
    bw, bh, dx, dy = (8, 8, 12, 40) if compact else (84, 30, 96, 64)
    width, height = max(cols * dx + 20, 220), depth * dy + bh + 20

    def xy(n):
        x, d = pos[n]
        return 10 + x * dx + dx / 2, 10 + d * dy + bh / 2

    hbw, hbh = 84, 30
    hqx = xy(root)[0] if root in pos else width / 2
    hqx = min(max(hqx, hbw / 2 + 2), width - hbw / 2 - 2)
    hqy = 10 + hbh / 2
    body = [rect(hqx - hbw / 2, hqy - hbh / 2, hbw, hbh, ROLE_COLORS["hq"], "HQ TFTP server",
                 class_="hq", rx=4),
            text(hqx, hqy + 4, "HQ TFTP", anchor="middle", fill="#fff")]
    for f in sorted(set(fetchers) & set(pos), key=ipkey):
        x, y = xy(f)
        body.append(line(hqx, hqy + hbh / 2, x, y - bh / 2, "#2b6cb0" if f == root else
                         ROLE_COLORS["fallback"], 1.5, "5,4", class_="tftp-fetch",
                         data_phone=f))
    for p, c in h.get("edges", []):
        if p in pos and c in pos:
            (x1, y1), (x2, y2) = xy(p), xy(c)
            body.append(line(x1, y1 + bh / 2, x2, y2 - bh / 2, "#2d3748", 1 if compact else 1.5,
                             class_="edge", data_parent=p, data_child=c))
    for n in sorted(pos, key=ipkey):
        x, y = xy(n)
        role = ("fault" if n in faulty else "failed" if n in failed else "root" if n == root
                else "fallback" if n in fetchers else "peer")
        what = {"root": "root (TFTP)", "fallback": "fell back to TFTP", "fault": "fault injected",
                "failed": "did not complete", "peer": "from its parent"}[role]
        stroke = "#c53030" if role in ("failed", "fault") else "#1a202c"
        body.append(rect(x - bw / 2, y - bh / 2, bw, bh, ROLE_COLORS[role],
                         f"{names.get(n, '?')} {n}: {what}", class_=f"node {role}",
                         data_ip=n, rx=2 if compact else 4, stroke=stroke))
        if compact:
            continue
        ink = "#1a202c" if role == "failed" else "#fff"
        body.append(text(x, y - 2, names.get(n, n), size=11, anchor="middle", fill=ink))
        body.append(text(x, y + 10, short(n), size=9, anchor="middle", fill=ink))
    return svg(width, height, body, class_="tree",
               data_edges=json.dumps(sorted(h.get("edges", []))), data_file=h.get("file"),
               data_subnet=h.get("subnet"), data_model=h.get("model"))


TREE_LEGEND = [(ROLE_COLORS["root"], "root (TFTP)"), (ROLE_COLORS["peer"], "got it from a peer"),
               (ROLE_COLORS["fallback"], "fell back to TFTP"), (ROLE_COLORS["fault"], "fault"),
               (ROLE_COLORS["failed"], "not completed")]


# ------------------------------------------------------------------------------ timeline

def phone_phases(dec: dict) -> tuple[dict[str, list], dict[str, float]]:
    """Per phone: (lane, phase, start, end, what) bars from the decoded captures, and when
    it was done. Lane 0: election, 1: download, 2: upload."""
    bars: dict[str, list] = defaultdict(list)
    cfg_end: dict[str, float] = {}
    loads_done: dict[str, float] = {}
    fetch_start: dict[tuple[str, str], float] = {}
    for tr in dec["tftp"]["transfers_list"]:
        ip, f, s = tr["client"], tr["file"], tr["start_s"]
        e = tr["end_s"] if tr["end_s"] is not None else s
        if f.endswith(".cnf.xml"):
            bars[ip].append((1, "config", s, e, f"config {f}"))
            if tr["complete"]:
                cfg_end[ip] = min(cfg_end.get(ip, e), e)
            continue
        bars[ip].append((1, "TFTP fetch", s, e, f"TFTP {f}"
                         + ("" if tr["complete"] else " (incomplete)")))
        fetch_start.setdefault((ip, f), s)
        if f.endswith(".loads") and tr["complete"]:
            loads_done[ip] = min(loads_done.get(ip, e), e)
    for h in dec["hierarchies"]:
        if h["file"].endswith(".loads"):
            for c in h["completion"]:
                if c["time_s"] is not None:
                    loads_done[c["phone"]] = min(loads_done.get(c["phone"], c["time_s"]),
                                                 c["time_s"])
    for h in dec["hierarchies"]:
        f, el = h["file"], h["election"]
        starts = cfg_end if f.endswith(".loads") else loads_done
        claims = {c["ip"]: c for c in el["claims"]}
        offers = {e["phone"]: e["offer_s"] for e in h["tree"]}
        for c in h["completion"]:
            ip = c["phone"]
            cl = claims.get(ip)
            first = cl["first_s"] if cl else offers.get(ip)
            s0 = starts.get(ip)
            if s0 is not None and first is not None and first > s0:
                bars[ip].append((0, "listen", s0, first, f"listen {f}"))
            if cl:
                end = el["confirmed_s"] if cl["won"] and el["confirmed_s"] else cl["last_s"]
                bars[ip].append((0, "claim", cl["first_s"], end, f"claim {f}"))
        if h["root"] and el["confirmed_s"] is not None:
            fs = fetch_start.get((h["root"], f))
            if fs is not None and fs > el["confirmed_s"]:
                bars[h["root"]].append((0, "root wait", el["confirmed_s"], fs,
                                        f"root of {f}: waiting before its TFTP fetch"))
        for tr in h["transfers"]:
            end = tr["end_s"] if tr["end_s"] is not None else tr["request_s"]
            tail = "" if tr["end_s"] is not None else f" ({tr['abort'] or 'no END'})"
            bars[tr["child"]].append((1, "receive from parent", tr["request_s"], end,
                                      f"{f} from {tr['parent']}{tail}"))
            bars[tr["parent"]].append((2, "serve children", tr["request_s"], end,
                                       f"{f} to {tr['child']}{tail}"))
    done = {p["ip"]: p["done_s"] for p in dec["phones"] if p["done_s"] is not None}
    return bars, done


def timeline_svg(dec: dict, names: dict[str, str], limit: int = 150) -> tuple[str, int]:
    """The Gantt chart of one mode; returns (svg, phones left out past ``limit``)."""
    bars, done = phone_phases(dec)
    ips = sorted(set(bars) | set(done), key=ipkey)
    ips = [ip for ip in ips if ip in names] or ips          # phones, not HQ
    cut = max(len(ips) - limit, 0)
    ips = ips[:limit]
    tmax = max([e for ip in ips for _, _, _, e, _ in bars[ip]] + list(done.values()) + [1.0])
    left, width, lane, row, top = 96, 960, 7, 26, 30
    plot_w = width - left - 20
    height = top + row * len(ips) + 30

    def X(t):
        return left + plot_w * max(t, 0.0) / tmax

    body = []
    step = nice_step(tmax)
    k = 0
    while k * step <= tmax + 1e-9:
        x = X(k * step)
        body.append(line(x, top - 4, x, height - 26, "#e2e8f0", 1))
        body.append(text(x, top - 8, f"{k * step:g} s", size=10, anchor="middle"))
        k += 1
    for i, ip in enumerate(ips):
        y = top + i * row
        body.append(text(left - 6, y + 15, names.get(ip, ip), size=11, anchor="end"))
        for ln, phase, s, e, what in sorted(bars[ip], key=lambda b: (DRAW_ORDER[b[1]], b[2])):
            body.append(rect(X(s), y + 2 + ln * (lane + 1), max(X(e) - X(s), 1.5), lane,
                             PHASE_COLORS[phase], f"{names.get(ip, ip)}: {what} "
                             f"{s:.2f}-{e:.2f} s", class_="seg", data_phase=phase))
        if ip in done:
            x, yc = X(done[ip]), y + 2 + 1.5 * (lane + 1)
            body.append(f'<path class="done" d="M{x:.1f},{yc - 6:.1f} l5,6 l-5,6 l-5,-6 z" '
                        f'fill="#1a202c"><title>{esc(names.get(ip, ip))} done at '
                        f'{done[ip]:.2f} s</title></path>')
    body.append(text(left, height - 8, "seconds from the first captured packet; rows: "
                     "election, download, upload; ◆ done", size=10, fill="#4a5568"))
    return svg(width, height, body, class_="timeline"), cut


TIMELINE_LEGEND = [(c, p) for p, c in PHASE_COLORS.items()] + [("#1a202c", "◆ done")]


# ------------------------------------------------------------------------------ ladder

def ladder_messages(records, h: dict, limit: int = 70) -> list[dict]:
    """CLAIM/ROOT/JOIN/OFFER/REFUSE of one hierarchy (its model and file) from a subnet
    capture's CPPDP records (:func:`pfslab.dissect.scapy_cppdp.iter_cppdp`), in capture
    order, the first ``limit`` of them; it stops reading there. Repeated ROOT announcements
    after the first two of a sender are left out (they repeat every second). A capture that
    breaks off gives what came before."""
    out: list[dict] = []
    try:
        for rec in records:
            m = _ladder_message(rec, h)
            if m is None:
                continue
            if m["type"] == "ROOT":
                if sum(1 for x in out if x["type"] == "ROOT" and x["src"] == m["src"]) >= 2:
                    continue
            out.append(m)
            if len(out) >= limit:
                break
    except Exception:          # noqa: BLE001 - a truncated or hostile pcap: keep what we have
        pass
    finally:
        close = getattr(records, "close", None)
        if close:
            close()
    return out


def _ladder_message(rec, h: dict) -> dict | None:
    from ..dissect.decode import _ip
    from ..protocol.codec import MsgType
    p = rec.decoded
    try:
        if rec.proto != "udp" or p.malformed():
            return None
        kind = MsgType(p.type).name
        if (p.model.decode("ascii", "replace"), p.file.decode("ascii", "replace")) != \
                (h["model"], h["file"]) or kind == "READY":
            return None
        m = {"t": rec.time, "type": kind, "src": _ip(rec.src), "dst": _ip(rec.dst)}
        if kind == "CLAIM":
            m["label"] = f"CLAIM ad {p.ad}"
        elif kind == "OFFER":
            m["label"] = f"OFFER parent {short(p.getfieldval('parent'))} slot {p.slot}"
        elif kind == "JOIN":
            lost = p.lost_parent
            m["label"] = "JOIN" + ("" if lost in (None, "0.0.0.0") else f" lost {short(lost)}")
        else:
            m["label"] = kind
        return m
    except (ValueError, AttributeError, TypeError):
        return None


def ladder_svg(msgs: list[dict], names: dict[str, str], broadcast_suffix=".255") -> str:
    lanes = sorted({m["src"] for m in msgs} | {m["dst"] for m in msgs
                                              if not m["dst"].endswith(broadcast_suffix)},
                   key=ipkey)
    col, top, row, left = 120, 46, 20, 70
    width = left + col * max(len(lanes), 1) + 20
    height = top + row * len(msgs) + 20
    X = {ip: left + col * i + col / 2 for i, ip in enumerate(lanes)}
    t0 = msgs[0]["t"] if msgs else 0.0
    body = ["<defs>" + "".join(arrow_marker(f"a-{k}", c) for k, c in MSG_COLORS.items())
            + "</defs>"]
    for ip in lanes:
        body.append(text(X[ip], 16, names.get(ip, ip), size=12, anchor="middle",
                         font_weight="bold"))
        body.append(text(X[ip], 30, ip, size=10, anchor="middle", fill="#4a5568"))
        body.append(line(X[ip], top - 8, X[ip], height - 10, "#a0aec0", 1, "3,3"))
    for i, m in enumerate(msgs):
        y = top + i * row + 6
        c = MSG_COLORS[m["type"]]
        body.append(text(4, y + 4, f"{m['t'] - t0:.3f} s", size=10, fill="#4a5568"))
        xs = X[m["src"]]
        bcast = m["dst"].endswith(broadcast_suffix) or m["dst"] not in X
        cls = f"msg {m['type']}" + (" broadcast" if bcast else "")
        if bcast:
            lo, hi = min(X.values()), max(X.values())
            body.append(line(lo, y, hi, y, c, 1.2, "6,3", class_=cls, data_src=m["src"],
                             data_dst="broadcast"))
            body.append(circle(xs, y, 3.5, c, c))
            lx = xs + 6 if xs < hi - 60 else xs - 6
            anchor = "start" if xs < hi - 60 else "end"
        else:
            xd = X[m["dst"]]
            body.append(line(xs, y, xd, y, c, 1.6, class_=cls, data_src=m["src"],
                             data_dst=m["dst"], marker_end=f"url(#a-{m['type']})"))
            lx, anchor = (xs + xd) / 2, "middle"
        body.append(text(lx, y - 3, m["label"], size=10, anchor=anchor, fill=c))
    return svg(width, height, body, class_="ladder")


# ------------------------------------------------------------------------------ throughput

def wan_arrivals(path: str, phone_ips: set[str]) -> list[tuple[float, int]]:
    """(time, bytes on the wire) of the frames in a WAN capture that go to a phone (the HQ ->
    branch direction, the one the bandwidth limits for an upgrade). Unreadable: []."""
    from scapy.utils import RawPcapReader
    dsts = {bytes(int(o) for o in ip.split(".")) for ip in phone_ips}
    out = []
    try:
        with RawPcapReader(path) as r:
            for data, meta in r:
                if len(data) >= 34 and data[12:14] == b"\x08\x00" and data[30:34] in dsts:
                    t = getattr(meta, "sec", 0) + getattr(meta, "usec", 0) / 1e6
                    out.append((t, getattr(meta, "wirelen", len(data))))
    except Exception:          # noqa: BLE001 - a broken pcap just gives no curve
        return out
    return out


def throughput_svg(series: dict[str, list[tuple[float, int]]], bw_bps: float | None) -> str:
    """kbit/s over time for each mode (each from its own first frame), one plot, with the
    WAN's bandwidth as a dashed line."""
    rel = {m: [(t - s[0][0], b) for t, b in s] for m, s in series.items() if s}
    tmax = max([s[-1][0] for s in rel.values()] + [1.0])
    bin_s = max(0.25, round(tmax / 120, 2))
    curves = {}
    for m, s in rel.items():
        bins = [0] * (int(tmax / bin_s) + 1)
        for t, b in s:
            bins[int(t / bin_s)] += b
        curves[m] = [(i * bin_s, 8 * v / bin_s / 1000) for i, v in enumerate(bins)]
    ymax = max([v for c in curves.values() for _, v in c] + [(bw_bps or 0) / 1000 * 1.1, 1.0])
    left, width, height, top, bottom = 64, 900, 300, 16, 40
    pw, ph = width - left - 150, height - top - bottom

    def X(t):
        return left + pw * t / tmax

    def Y(v):
        return top + ph * (1 - v / ymax)

    body = [line(left, top, left, top + ph, "#2d3748"), line(left, top + ph, left + pw,
                                                                top + ph, "#2d3748")]
    st = nice_step(tmax)
    k = 0
    while k * st <= tmax + 1e-9:
        body.append(text(X(k * st), top + ph + 14, f"{k * st:g}", size=10, anchor="middle"))
        k += 1
    sy = nice_step(ymax, 5)
    k = 0
    while k * sy <= ymax + 1e-9:
        body.append(line(left, Y(k * sy), left + pw, Y(k * sy), "#edf2f7"))
        body.append(text(left - 4, Y(k * sy) + 4, f"{k * sy:g}", size=10, anchor="end"))
        k += 1
    body.append(text(left + pw / 2, height - 6, f"seconds from the mode's first WAN frame "
                     f"(bins of {bin_s:g} s)", size=11, anchor="middle"))
    body.append(text(14, top + ph / 2, "kbit/s HQ → phones", size=11, anchor="middle",
                     transform=f"rotate(-90 14 {top + ph / 2:.0f})"))
    ly = top + 8
    if bw_bps:
        body.append(line(left, Y(bw_bps / 1000), left + pw, Y(bw_bps / 1000), "#c53030", 1.5,
                         "6,4", class_="bandwidth"))
        body.append(line(left + pw + 12, ly, left + pw + 32, ly, "#c53030", 1.5, "6,4"))
        body.append(text(left + pw + 36, ly + 4, f"WAN {bw_bps / 1000:g} kbit/s", size=11))
        ly += 18
    for m, c in curves.items():
        color = MODE_COLORS.get(m, "#4a5568")
        body.append(polyline([(X(t), Y(v)) for t, v in c], color, class_="series",
                             data_mode=m))
        body.append(line(left + pw + 12, ly, left + pw + 32, ly, color, 2.5))
        body.append(text(left + pw + 36, ly + 4, m, size=11))
        ly += 18
    return svg(width, height, body, class_="throughput")


__all__ = ["tree_svg", "timeline_svg", "ladder_messages", "ladder_svg", "wan_arrivals",
           "throughput_svg", "TREE_LEGEND", "TIMELINE_LEGEND", "legend"]
