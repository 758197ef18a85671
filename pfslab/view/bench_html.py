"""report.html for a `make bench` folder (``bench.json``): the settings, the WAN check, and
the sweep (makespan and WAN bytes against phones per subnet, lab and simulated, both modes)
as tables and log-log inline-SVG charts."""
from __future__ import annotations

import json
import math
import os
from html import escape

from ..errors import UserError
from .svg import circle, line, polyline, svg, text

SERIES_STYLE = {("lab", "pfs"): ("#2b6cb0", None), ("lab", "traditional"): ("#dd6b20", None),
                ("simulated", "pfs"): ("#2b6cb0", "5,4"),
                ("simulated", "traditional"): ("#dd6b20", "5,4")}


def load_bench(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except ValueError as e:
        raise UserError(f"{path} is broken: {e} (re-run make bench)") from None
    if not (isinstance(data, dict) and isinstance(data.get("lab", []), list)
            and isinstance(data.get("simulated", []), list)):
        raise UserError(f"{path} is not pfslab bench output (want lab and simulated lists)")
    return data


def _num(x: float) -> str:
    return f"{x:,.0f}" if x >= 1 else f"{x:g}"


def loglog_svg(series: dict[tuple[str, str], list[tuple[float, float]]], ylabel: str,
               cls: str) -> str:
    """Lines of (x, y) points on log-log axes, one per (series, mode)."""
    pts = [p for s in series.values() for p in s if p[0] > 0 and p[1] > 0]
    if not pts:
        return ""
    lx = [math.log10(x) for x, _ in pts]
    ly = [math.log10(y) for _, y in pts]
    x0, x1 = math.floor(min(lx)), math.ceil(max(lx) + 1e-9)
    y0, y1 = math.floor(min(ly)), math.ceil(max(ly) + 1e-9)
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    left, top, pw, ph = 70, 14, 460, 250
    width, height = left + pw + 190, top + ph + 44

    def X(x):
        return left + pw * (math.log10(x) - x0) / (x1 - x0)

    def Y(y):
        return top + ph * (1 - (math.log10(y) - y0) / (y1 - y0))

    body = [line(left, top, left, top + ph, "#2d3748"), line(left, top + ph, left + pw,
                                                                top + ph, "#2d3748")]
    for e in range(x0, x1 + 1):
        body += [line(X(10 ** e), top, X(10 ** e), top + ph, "#edf2f7"),
                 text(X(10 ** e), top + ph + 14, _num(10 ** e), size=10, anchor="middle")]
    for e in range(y0, y1 + 1):
        body += [line(left, Y(10 ** e), left + pw, Y(10 ** e), "#edf2f7"),
                 text(left - 4, Y(10 ** e) + 4, _num(10 ** e), size=10, anchor="end")]
    body.append(text(left + pw / 2, height - 6, "phones per subnet", size=11, anchor="middle"))
    body.append(text(14, top + ph / 2, ylabel, size=11, anchor="middle",
                     transform=f"rotate(-90 14 {top + ph / 2:.0f})"))
    ly_ = top + 8
    for key, s in series.items():
        s = [(x, y) for x, y in s if x > 0 and y > 0]
        color, dash = SERIES_STYLE.get(key, ("#4a5568", None))
        if not s:
            continue
        dash_attr = {"stroke_dasharray": dash} if dash else {}
        body.append(polyline([(X(x), Y(y)) for x, y in s], color, class_="series",
                             data_series=f"{key[0]} {key[1]}", **dash_attr))
        body += [circle(X(x), Y(y), 3, color, color) for x, y in s]
        body.append(line(left + pw + 12, ly_, left + pw + 34, ly_, color, 2.5, dash))
        body.append(text(left + pw + 38, ly_ + 4, f"{key[1]}, {key[0]}", size=11))
        ly_ += 18
    return svg(width, height, body, class_=cls)


def bench_page(run_dir: str, css: str) -> str:
    b = load_bench(os.path.join(run_dir, "bench.json"))
    rows = [r for r in b.get("lab", []) + b.get("simulated", []) if isinstance(r, dict)]
    st = b.get("settings") or {}
    parts = [f"<h1>pfslab bench {escape(os.path.basename(os.path.abspath(run_dir)))}</h1>",
             f'<p class="note">{escape(str(st.get("subnets")))} subnets of '
             f'{escape(", ".join(st.get("models") or []))}; WAN {escape(str(st.get("wan_bw")))}'
             f', {escape(str(st.get("wan_delay")))} one way, loss {escape(str(st.get("wan_loss")))}'
             f"; firmware scale {escape(str(st.get('firmware_scale')))}; started "
             f"{escape(str(b.get('started')))}. Written by <code>pfslab report "
             f"{escape(run_dir)}</code> from <code>bench.json</code>.</p>"]
    for key, label, cls in (("makespan_s", "makespan (s)", "sweep-makespan"),
                            ("wan_bytes", "WAN bytes", "sweep-wan")):
        series: dict = {}
        for r in sorted(rows, key=lambda r: (r.get("series", ""), r.get("n") or 0)):
            if r.get(key) is not None and r.get("completed") == r.get("total"):
                series.setdefault((r.get("series"), r.get("mode")), []).append(
                    (r.get("n") or 0, r[key]))
        parts.append(f"<h2>{escape(label)} against phones per subnet</h2>")
        parts.append("<p class=note>Solid: the Mininet lab; dashed: the simulator. Points "
                     "where not every phone upgraded are left out (see the table).</p>")
        parts.append(f"<div class=fig>{loglog_svg(series, label, cls)}</div>")
    head = ["series", "N", "phones", "mode", "upgraded", "makespan (s)", "WAN bytes",
            "TFTP requests", "run took (s)", "note"]
    body = []
    for r in rows:
        body.append("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in (
            r.get("series"), r.get("n"), r.get("phones"), r.get("mode"),
            f"{r.get('completed')}/{r.get('total')}",
            "-" if r.get("makespan_s") is None else f"{r['makespan_s']:,.1f}",
            "-" if r.get("wan_bytes") is None else f"{r['wan_bytes']:,.0f}",
            r.get("tftp_requests", "-"), r.get("duration_s", "-"), r.get("error", ""))) + "</tr>")
    parts.append("<h2>The sweep</h2><table id=sweep-table><tr>"
                 + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"
                 + "".join(body) + "</table>")
    wc = [w for w in b.get("wan_check") or [] if isinstance(w, dict)]
    if wc:
        parts.append("<h2>WAN check</h2><table><tr><th>bandwidth</th><th>delay (one way)"
                     "</th><th>median RTT (ms)</th><th>expected RTT (ms)</th><th>throughput "
                     "/ bandwidth</th></tr>" + "".join(
                         f"<tr><td>{escape(str(w.get('bw')))}</td><td>"
                         f"{escape(str(w.get('delay')))}</td><td>"
                         f"{escape(str((w.get('rtt') or {}).get('median_ms')))}</td><td>"
                         f"{escape(str(w.get('expected_rtt_ms')))}</td><td>"
                         f"{escape(str(w.get('throughput_ratio')))}</td></tr>" for w in wc)
                     + "</table>")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>pfslab bench</title><style>{css}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")
