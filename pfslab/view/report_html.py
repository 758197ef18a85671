"""`pfslab report RUN_DIR`: report.html, one self-contained page of a run (inline SVG and CSS,
nothing fetched): summary and PFS/traditional ratios, each hierarchy as a tree, a per-phone
timeline, one election as a ladder diagram, WAN throughput of both modes, the fidelity
figures, and links to the pcaps and logs with a Wireshark filter per hierarchy.

The trees come from results.json; the timeline, the ladder and the throughput from the run's
own captures (read with ``pfslab decode``'s readers). `pfslab lab` writes it after every run.
"""
from __future__ import annotations

import argparse
import datetime
import logging
import os
from html import escape

from ..errors import UserError
from ..report import mode_stats, ratios
from . import figures as fg
from .runfolder import Mode, artifacts, load_run

#: trees drawn in full per mode; the others are listed in a table
MAX_TREES = 24

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;
 max-width:1200px;color:#1a202c;padding:0 16px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:18px;margin-top:34px;
 border-bottom:1px solid #e2e8f0;padding-bottom:4px} h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #e2e8f0;padding:3px 10px}
th{background:#f7fafc;text-align:left} td.n{text-align:right;font-variant-numeric:tabular-nums}
.fig{overflow-x:auto;margin:6px 0 14px} .note{color:#4a5568;font-size:13px}
code{background:#f7fafc;border:1px solid #e2e8f0;padding:1px 4px;border-radius:3px;
 font-size:12px} figure{margin:10px 0 22px} figcaption{font-size:13px;margin-bottom:4px}
.legend{margin:4px 0} .trees{display:flex;flex-wrap:wrap;gap:6px 28px}
.trees figure{margin:8px 0;max-width:560px} .trees code{word-break:break-all}
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (pcaps/<run-id>)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="where to write it (default RUN_DIR/report.html)")
    p.add_argument("--figures", default=None, metavar="DIR",
                   help="also write its figures as standalone SVG files into DIR "
                        "(e.g. for docs)")


def run(args) -> int:
    path = write_report(args.run_dir, args.out)
    print(f"report: {path}")
    if args.figures:
        with open(path, encoding="utf-8") as f:
            for name in write_figures(f.read(), args.figures):
                print(f"figure: {name}")
    return 0


def write_figures(page: str, out_dir: str, trees: int = 2) -> list[str]:
    """The page's figures as standalone .svg files: the first ``trees`` trees, each
    timeline, the ladder, the throughput plot."""
    import re
    os.makedirs(out_dir, exist_ok=True)
    seen: dict[str, int] = {}
    written = []
    for m in re.finditer(r'<svg xmlns="[^"]+"[^>]*class="(tree|timeline|ladder|throughput|'
                         r'sweep-makespan|sweep-wan)"[^>]*>.*?</svg>', page, re.S):
        kind = m.group(1)
        seen[kind] = seen.get(kind, 0) + 1
        if kind == "tree" and seen[kind] > trees:
            continue
        name = os.path.join(out_dir, f"{kind}-{seen[kind]}.svg")
        with open(name, "w", encoding="utf-8") as f:
            f.write('<?xml version="1.0" encoding="utf-8"?>\n'
                    + m.group(0).replace("<svg ", '<svg style="background:#fff" ', 1) + "\n")
        written.append(name)
    return written


def write_report(run_dir: str, out: str | None = None) -> str:
    page = build_report(run_dir)
    out = out or os.path.join(run_dir, "report.html")
    try:
        with open(out, "w", encoding="utf-8") as f:
            f.write(page)
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror}") from None
    return out


def build_report(run_dir: str) -> str:
    """The page of a run folder, or of a `make bench` folder (bench.json, no results.json)."""
    if os.path.isfile(os.path.join(run_dir, "bench.json")) and \
            not os.path.isfile(os.path.join(run_dir, "results.json")):
        from .bench_html import bench_page
        try:
            return bench_page(run_dir, CSS)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise UserError(f"{os.path.join(run_dir, 'bench.json')} has an unexpected shape "
                            f"({type(e).__name__}: {e})") from None
    modes = load_run(run_dir)
    try:
        return _page(run_dir, modes)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise UserError(f"{os.path.join(run_dir, 'results.json')} has an unexpected shape "
                        f"({type(e).__name__}: {e}); was it written by this pfslab?") from None


# ------------------------------------------------------------------------------ page

def _page(run_dir: str, modes: list[Mode]) -> str:
    decoded = {m.name: _decode(m) for m in modes}
    results = [m.result for m in modes]
    title = os.path.basename(os.path.abspath(run_dir))
    parts = [f"<h1>pfslab run {escape(title)}</h1>",
             f'<p class="note">{escape(_describe(results))}. Report made '
             f'{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} by '
             f"<code>pfslab report {escape(run_dir)}</code>.</p>",
             _summary(results)]
    parts += _trees(modes)
    parts += _timelines(modes, decoded)
    parts += _ladder(modes, decoded)
    parts += _throughput(modes)
    parts += _fidelity(results)
    parts += _syslog(modes)
    parts += _phones(modes)
    parts += _files(modes)
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>pfslab {escape(title)}</title><style>{CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")


def _describe(results: list[dict]) -> str:
    r = results[0]
    wan = r.get("wan") or {}
    subnets = {p.get("subnet") for p in r["phones"]}
    bw = wan.get("bw") or (f"{wan['bw_bps'] / 1000:g} kbit/s" if wan.get("bw_bps") else "?")
    delay = wan.get("delay") or (f"RTT {wan['rtt_s'] * 1000:g} ms" if wan.get("rtt_s") else "")
    return (f"{len(r['phones'])} phones in {len(subnets)} subnet(s); modes "
            f"{', '.join(x['mode'] for x in results)}; WAN {bw} {delay} "
            f"({wan.get('emulation', '?')})")


def _decode(mode: Mode) -> dict | None:
    """``pfslab decode``'s report of the mode's pcaps: the lab's own ``decode.json`` when it
    is newer than every pcap, else decoded now; None without pcaps (a simulator run)."""
    import glob
    import json
    pcaps = glob.glob(os.path.join(mode.dir, "*.pcap"))
    if not pcaps:
        return None
    cached = os.path.join(mode.dir, "decode.json")
    try:
        if os.path.getmtime(cached) >= max(os.path.getmtime(p) for p in pcaps):
            with open(cached, encoding="utf-8") as f:
                rep = json.load(f)
            if isinstance(rep, dict) and {"hierarchies", "tftp", "phones"} <= set(rep):
                return rep
    except (OSError, ValueError):
        pass
    from ..dissect.decode import decode_paths
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    try:
        return decode_paths([mode.dir])
    except UserError:
        return None


def _table(head: list[str], rows: list[list], numeric_from: int = 1, **kw) -> str:
    attrs = " ".join(f'{k.rstrip("_")}="{escape(str(v))}"' for k, v in kw.items())
    out = [f"<table {attrs}><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(
            f'<td{" class=n" if i >= numeric_from else ""}>{escape(str(c))}</td>'
            for i, c in enumerate(r)) + "</tr>")
    return "".join(out) + "</table>"


def _fmt(x, spec="{:,}") -> str:
    return "-" if x is None else spec.format(x)


def _summary(results: list[dict]) -> str:
    rows = []
    for r in results:
        s = mode_stats(r)
        pfs = r["mode"] == "pfs"
        rows.append([r["mode"], f"{s['upgraded']}/{s['phones']}", _fmt(s["makespan_s"],
                     "{:,.1f} s"), _fmt(s["wan_bytes"]), _fmt(s["wan_tftp_bytes"]),
                     s["tftp_requests"], s["roots"] if pfs else "-",
                     s["fallbacks"] if pfs else "-", s["max_depth"] if pfs else "-"])
    out = ["<h2 id=summary>Summary</h2>",
           _table(["mode", "upgraded", "makespan", "WAN bytes", "of it TFTP",
                   "TFTP requests at HQ", "PFS roots", "fallbacks", "tree depth"], rows,
                  id="summary-table"),
           '<p class="note">makespan: from the reset to the last phone done. WAN bytes: every '
           "frame, both ways (the lab's include the phones' syslog to HQ); of it TFTP: the "
           "firmware and configs. PFS roots: one per (subnet, model, file) hierarchy. "
           "Fallbacks: files a PFS phone fetched from HQ itself, not as a root. Tree depth: "
           "the deepest phone, root = 0.</p>"]
    rr = ratios(results)
    if rr:
        out.append("<h3>PFS / traditional</h3>")
        out.append(_table(["measure", "PFS", "traditional", "ratio"],
                          [[label, _fmt(a), _fmt(b), ratio] for label, a, b, ratio in rr],
                          id="ratio-table"))
    return "\n".join(out)


def _names(r: dict) -> dict[str, str]:
    return {p["ip"]: p.get("name", p["ip"]) for p in r["phones"] if p.get("ip")}


def _legend(items) -> str:
    body, w = fg.legend(items, 0, 2)
    return f'<div class="legend">{fg.svg(w, 16, body)}</div>'


def _filter(h: dict) -> str:
    return f'cppdp.model == "{h["model"]}" && cppdp.file == "{h["file"]}"'


def _trees(modes: list[Mode]) -> list[str]:
    out = ["<h2 id=trees>Hierarchies</h2>",
           '<p class="note">One tree per (subnet, model, file): HQ on top, a dashed line to '
           "each phone that fetched the file by TFTP, a solid line from each parent to each "
           "child it served. The Wireshark filter shows the hierarchy's election and each "
           "transfer's request in the subnet capture (with <code>pfslab/dissect/cppdp.lua"
           "</code> loaded).</p>"]
    any_pfs = False
    for m in modes:
        hs = [h for h in m.result.get("hierarchies") or [] if h.get("root") or h.get("edges")]
        if m.name != "pfs" and not hs:
            continue
        any_pfs = True
        names = _names(m.result)
        faulty = {p["ip"] for p in m.result["phones"] if p.get("fault")}
        failed = {p["ip"] for p in m.result["phones"] if not p.get("completed")}
        out.append(f"<h3>{escape(m.name)}: {len(hs)} hierarchies</h3>")
        out.append(_legend(fg.TREE_LEGEND))
        hs = sorted(hs, key=lambda h: (h.get("subnet") or 0, h["model"], h["file"]))
        out.append("<div class=trees>")
        for h in hs[:MAX_TREES]:
            extra = [f"{h['rejoins']} re-join(s)"] if h.get("rejoins") else []
            if h.get("aborted_transfers"):
                extra.append(f"{h['aborted_transfers']} transfer(s) cut short")
            out.append(f"<figure><figcaption>subnet {escape(str(h.get('subnet')))} "
                       f"<b>{escape(h['model'])}</b> <b>{escape(h['file'])}</b><br>root "
                       f"{escape(names.get(h.get('root'), '-'))} ({escape(str(h.get('root')))}"
                       f"), {len(h.get('edges', []))} edges"
                       f"{'; ' + ', '.join(extra) if extra else ''}<br>"
                       f"<code>{escape(_filter(h))}</code></figcaption><div class=fig>"
                       f"{fg.tree_svg(h, names, faulty, failed)}</div></figure>")
        out.append("</div>")
        if len(hs) > MAX_TREES:
            out.append(f"<p class=note>{len(hs) - MAX_TREES} more hierarchies:</p>")
            out.append(_table(["subnet", "model", "file", "root", "edges", "Wireshark filter"],
                              [[h.get("subnet"), h["model"], h["file"], h.get("root"),
                                len(h.get("edges", [])), _filter(h)]
                               for h in hs[MAX_TREES:]], numeric_from=4))
    if not any_pfs:
        out.append("<p class=note>No PFS mode in this run.</p>")
    return out


def _timelines(modes: list[Mode], decoded: dict) -> list[str]:
    out = ["<h2 id=timeline>Timeline per phone</h2>",
           '<p class="note">From the captures: each phone\'s row has three lanes: the '
           "election (listen, claim, root wait), what it downloads (its config, TFTP fetches "
           "across the WAN, files from its parent) and what it uploads (serving its "
           "children). Hover a bar for the file.</p>", _legend(fg.TIMELINE_LEGEND)]
    for m in modes:
        dec = decoded.get(m.name)
        out.append(f"<h3>{escape(m.name)}</h3>")
        if dec is None:
            out.append("<p class=note>No captures in this mode's folder (a simulator run?): "
                       "no timeline.</p>")
            continue
        try:
            fig, cut = fg.timeline_svg(dec, _names(m.result))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            out.append(f"<p class=note>The decoded captures have an unexpected shape "
                       f"({escape(type(e).__name__)}): no timeline.</p>")
            continue
        out.append(f"<div class=fig>{fig}</div>")
        if cut:
            out.append(f"<p class=note>{cut} more phones not drawn.</p>")
    return out


def _ladder(modes: list[Mode], decoded: dict) -> list[str]:
    out = ["<h2 id=ladder>One election, as a ladder diagram</h2>"]
    for m in modes:
        try:
            part = _ladder_of(m, decoded.get(m.name))
        except (KeyError, TypeError, ValueError, AttributeError):
            part = None            # a decode.json of another shape: no ladder from it
        if part:
            return out + part
    out.append("<p class=note>No PFS election in the captures.</p>")
    return out


def _ladder_of(m: Mode, dec: dict | None) -> list[str] | None:
    hs = [h for h in (dec or {}).get("hierarchies", []) if h["root"]]
    if not hs:
        return None
    h = max(hs, key=lambda h: (len(h["election"]["claims"]), len(h["edges"]),
                               -(h["subnet"] or 0)))
    from ..dissect.decode import iter_messages
    pcap = os.path.basename(str(h["pcap"]))
    msgs = fg.ladder_messages(iter_messages(os.path.join(m.dir, pcap)), h)
    return [f'<p class="note">{escape(m.name)} mode, subnet {escape(str(h["subnet"]))} '
            f'<b>{escape(h["model"])}</b> {escape(h["file"])}, rebuilt from '
            f'<code>{escape(m.rel + pcap)}</code>: '
            f'{len(h["election"]["claims"])} claimant(s); root {escape(str(h["root"]))} '
            f'confirmed at {h["election"]["confirmed_s"]:.3f} s into the capture. Dashed: a '
            "broadcast (the dot is its sender); arrows: unicast. Times on the left: from the "
            "first message shown. Each ROOT sender's later announcements are left out.</p>",
            _legend([(c, k) for k, c in fg.MSG_COLORS.items() if k != "READY"]),
            f"<div class=fig>{fg.ladder_svg(msgs, _names(m.result))}</div>"]


def _throughput(modes: list[Mode]) -> list[str]:
    out = ["<h2 id=throughput>WAN throughput</h2>"]
    series = {}
    for m in modes:
        path = os.path.join(m.dir, "wan.pcap")
        if os.path.isfile(path):
            ips = {p["ip"] for p in m.result["phones"] if p.get("ip")}
            series[m.name] = fg.wan_arrivals(path, ips)
    if not any(series.values()):
        out.append("<p class=note>No WAN capture (wan.pcap) in this run.</p>")
        return out
    bw = (modes[0].result.get("wan") or {}).get("bw_bps")
    out.append('<p class="note">Bytes on the wire from HQ to the phones in '
               "<code>wan.pcap</code>, per mode, against the WAN's bandwidth.</p>")
    out.append(f"<div class=fig>{fg.throughput_svg(series, bw)}</div>")
    return out


def _flat(d: dict, prefix: str = "", depth: int = 0):
    """(dotted key, value) of a nested dict, leaving out histograms and long lists."""
    for k, v in d.items():
        key = f"{prefix}{k}"
        if k == "hist":
            continue
        if isinstance(v, dict) and depth < 2:
            yield from _flat(v, key + ".", depth + 1)
        elif isinstance(v, list):
            yield key, ", ".join(map(str, v[:5])) + (f" ... ({len(v)})" if len(v) > 5 else "")
        else:
            yield key, v


def _fidelity(results: list[dict]) -> list[str]:
    """results.json's ``fidelity`` of each mode (how faithful the emulation was: timer lag,
    drops, the overload verdict), whatever keys it has."""
    rows = []
    for r in results:
        fid = r.get("fidelity")
        if isinstance(fid, dict):
            rows += [[r["mode"], k, v] for k, v in _flat(fid)]
    if not rows:
        return []
    return ["<h2 id=fidelity>Emulation fidelity</h2>",
            '<p class="note">How faithfully the lab kept the timing it was asked for '
            "(results.json's <code>fidelity</code>: timer lag, drops, the verdict).</p>",
            _table(["mode", "measure", "value"], rows, numeric_from=2, id="fidelity-table")]


def _syslog(modes: list[Mode]) -> list[str]:
    """What the PFS log server at HQ received, per phone."""
    from ..dissect.syslogfile import parse_log
    out = []
    for m in modes:
        path = os.path.join(m.dir, "pfs-syslog.log")
        if not os.path.isfile(path):
            continue
        recs = parse_log(path)
        per: dict[str, list] = {}
        for r in recs:
            per.setdefault(r["phone"], []).append(r)
        rows = [[name, len(rs), rs[0]["ip"], rs[0]["received"][11:23], rs[-1]["received"][11:23],
                 sum(1 for r in rs if "XID" in r["line"])]
                for name, rs in sorted(per.items(), key=lambda kv: fg.ipkey(kv[1][0]["ip"]))]
        out.append(f"<h3>{escape(m.name)}: {len(recs):,} lines from {len(per)} phones in "
                   f'<a href="{escape(m.rel)}pfs-syslog.log">{escape(m.rel)}pfs-syslog.log'
                   "</a></h3>")
        out.append(_table(["phone", "lines", "from", "first", "last", "PFS lines (XID)"],
                          rows[:60], numeric_from=1))
        if len(rows) > 60:
            out.append(f"<p class=note>{len(rows) - 60} more phones in the file.</p>")
    if out:
        out.insert(0, "<h2 id=syslog>PFS log server</h2><p class=note>rsyslogd at HQ "
                      "(UDP 514) received the phones' DLoad lines across the WAN; each "
                      "phone's <code>&lt;logServer&gt;</code> names it.</p>")
    return out


def _phones(modes: list[Mode], limit: int = 200) -> list[str]:
    """Per mode, each phone's outcome (results.json's phones)."""
    out = ["<h2 id=phones>Phones</h2>"]
    for m in modes:
        rows = []
        for p in m.result["phones"][:limit]:
            srcs = [v.get("source") for v in (p.get("components") or {}).values() if v]
            if p.get("loads_source"):
                srcs.append(p["loads_source"])
            rows.append([p.get("name"), p.get("ip"), p.get("model"), p.get("subnet"),
                         "on" if p.get("pfs_enabled") else "off",
                         _fmt(p.get("completed_at_s"), "{:.1f} s") if p.get("completed")
                         else "not done", sum(1 for x in srcs if x == "tftp"),
                         sum(1 for x in srcs if x and x != "tftp"), p.get("fault") or ""])
        out.append(f"<h3>{escape(m.name)}</h3>")
        out.append(_table(["phone", "ip", "model", "subnet", "PFS", "done at", "files by TFTP",
                           "files from a peer", "fault"], rows, numeric_from=3))
        if len(m.result["phones"]) > limit:
            out.append(f"<p class=note>{len(m.result['phones']) - limit} more phones in "
                       "results.json.</p>")
    return out


def _files(modes: list[Mode]) -> list[str]:
    out = ["<h2 id=files>Files of this run</h2>"]
    for m in modes:
        items = artifacts(m)
        out.append(f"<h3>{escape(m.name)}</h3><ul>")
        for rel, what in items:
            out.append(f'<li><a href="{escape(rel)}">{escape(rel)}</a>: {escape(what)}</li>')
        out.append("</ul>")
    out.append('<p class="note">Open a capture with the PFS dissector: <code>wireshark -X '
               "lua_script:pfslab/dissect/cppdp.lua FILE.pcap</code>; "
               "<code>pfslab decode DIR</code> prints the same trees as text.</p>")
    return out
