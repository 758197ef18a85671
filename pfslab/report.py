"""Summaries people look at: per-mode tables, PFS-to-traditional ratios, hierarchy trees.

Works on the ``results.json`` schema (one dict per mode), whether the run was the Mininet
lab or the in-memory simulator, so both print the same way.
"""
from __future__ import annotations

import sys
from collections import defaultdict

from rich.console import Console
from rich.table import Table
from rich.tree import Tree


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:,.2f} MB"


def tree_depths(h: dict) -> dict[str, int]:
    """Depth of every phone in one hierarchy (root = 0), from its parent->child edges."""
    parent = {c: p for p, c in h["edges"]}
    depth = {}
    for node in [h["root"], *parent]:
        d, n, seen = 0, node, set()
        while n in parent and n not in seen:
            seen.add(n)
            n, d = parent[n], d + 1
        depth[node] = d
    return depth


def mode_stats(r: dict) -> dict:
    phones = r["phones"]
    done = sum(1 for p in phones if p["completed"])
    hs = r.get("hierarchies", [])
    depth = max((max(tree_depths(h).values()) for h in hs if h.get("root")), default=0)
    fallbacks = sum(1 for p in phones if p.get("pfs_enabled")
                    for v in (p.get("files") or {}).values() if v.get("role") == "tftp")
    return {"phones": len(phones), "upgraded": done, "makespan_s": r.get("makespan_s"),
            "fallbacks": fallbacks,
            "wan_bytes": r.get("wan_bytes"), "wan_tftp_bytes": r.get("wan_tftp_bytes"),
            "tftp_requests": len(r.get("tftp_requests", [])),
            "roots": len([h for h in hs if h.get("root")]), "max_depth": depth}


def summary_table(results: list[dict]) -> Table:
    t = Table(title="Upgrade summary", title_justify="left")
    t.add_column("mode", no_wrap=True)
    for col in ("upgraded", "makespan", "WAN bytes", "of it TFTP", "TFTP reqs at HQ",
                "PFS roots", "fallbacks", "tree depth"):
        t.add_column(col, justify="right", no_wrap=True)
    t.caption = ("WAN bytes: every frame, both ways (the lab's include syslog to HQ); of it "
                 "TFTP: the firmware and configs. PFS roots: one per (subnet, model, file) "
                 "hierarchy; fallbacks: files a PFS phone fetched from HQ itself, not as a "
                 "root; tree depth: the deepest phone, root = 0")
    for r in results:
        s = mode_stats(r)
        ms = "not reached" if r.get("truncated") else "-" if s["makespan_s"] is None \
            else f"{s['makespan_s']:,.1f} s"
        t.add_row(r["mode"] + mode_flags(r), f"{s['upgraded']}/{s['phones']}", ms,
                  _mb(s["wan_bytes"]), _mb(s["wan_tftp_bytes"]),
                  str(s["tftp_requests"]), str(s["roots"]) if r["mode"] == "pfs" else "-",
                  str(s["fallbacks"]) if r["mode"] == "pfs" else "-",
                  str(s["max_depth"]) if r["mode"] == "pfs" else "-")
    return t


def ratios(results: list[dict]) -> list[tuple[str, float | None, float | None, str]]:
    """(measure, PFS, traditional, ratio text) rows; [] unless both modes ran."""
    by = {r["mode"]: mode_stats(r) for r in results}
    if not {"pfs", "traditional"} <= set(by):
        return []
    p, t = by["pfs"], by["traditional"]
    rows = []
    for label, key in (("makespan (s)", "makespan_s"), ("WAN bytes", "wan_bytes"),
                       ("WAN bytes, TFTP only", "wan_tftp_bytes"),
                       ("TFTP requests at HQ", "tftp_requests")):
        a, b = p[key], t[key]
        rows.append((label, a, b, f"{a / b:.2f}" if a is not None and b else "-"))
    return rows


def ratio_table(results: list[dict]) -> Table | None:
    rows = ratios(results)
    if not rows:
        return None
    tab = Table(title="PFS / traditional", title_justify="left")
    tab.add_column("measure")
    tab.add_column("PFS", justify="right")
    tab.add_column("traditional", justify="right")
    tab.add_column("ratio", justify="right")
    for label, a, b, ratio in rows:
        fmt = "{:,.1f}" if label.startswith("makespan") else "{:,}"
        tab.add_row(label, "-" if a is None else fmt.format(a),
                    "-" if b is None else fmt.format(b), ratio)
    return tab


def hierarchy_tree(h: dict, names: dict[str, str], depth: int | None = 4) -> Tree:
    """One hierarchy as a tree: root (TFTP) and children, each labelled name (ip). Past
    ``depth`` levels below the root (None: all), a node says how many phones hang below it,
    so a 1000-phone tree stays a screenful."""
    kids = defaultdict(list)
    for parent, child in h["edges"]:
        kids[parent].append(child)

    def label(ip):
        return f"{names.get(ip, '?')} ({ip})"

    def below(ip):
        n, stack, seen = 0, list(kids.get(ip, [])), {ip}
        while stack:
            c = stack.pop()
            if c not in seen:
                seen.add(c)
                n += 1
                stack.extend(kids.get(c, []))
        return n

    top = Tree(f"[bold]{h['file']}[/] subnet {h['subnet']} {h['model']}: root "
               f"{label(h['root'])} ← TFTP")
    stack = [(top, h["root"], 0)]
    seen = {h["root"]}
    while stack:
        node, ip, d = stack.pop()
        for c in sorted(kids.get(ip, [])):
            if c in seen:                      # a loop in a hostile capture: show it once
                continue
            seen.add(c)
            if depth is not None and d + 1 >= depth and kids.get(c):
                node.add(f"{label(c)} [dim]+{below(c)} phones below[/]")
            else:
                stack.append((node.add(label(c)), c, d + 1))
    return top


def mode_flags(r: dict) -> str:
    """What the mode cell says beside the mode: overloaded, capped, capture incomplete."""
    fid = r.get("fidelity") or {}
    flags = [f for f, on in (("EMULATION OVERLOADED", (fid.get("verdict") or {}).get("overloaded")),
                             ("CAPPED", r.get("capped")),
                             ("capture incomplete", fid.get("captures") and not
                              fid.get("captures_complete"))) if on]
    return "".join(f"\n[bold red]{f}[/]" for f in flags)


def fidelity_lines(r: dict) -> list[str]:
    """The lines under the summary for one mode: the fidelity headline, the cap."""
    from pfslab.lab.estimate import capped_note
    out = []
    fid = r.get("fidelity")
    if fid:
        bad = (fid.get("verdict") or {}).get("overloaded")
        out.append(("[bold red]" if bad else "") + f"{r['mode']}: {fid['headline']}"
                   + ("[/]" if bad else ""))
    if r.get("capped"):
        out.append(f"[bold]{r['mode']}: {capped_note(r['capped'])}[/]")
    line = one_copy_line(r)
    if line:
        out.append(line)
    return out


def one_copy_line(r: dict) -> str | None:
    """TFTP bytes on the WAN against the estimate's bytes: one copy of each load set per
    (subnet, model) in PFS mode, one per phone in traditional mode, plus every config."""
    est, got = r.get("estimate") or {}, r.get("wan_tftp_bytes")
    if not est.get("wan_bytes") or got is None or r.get("capped"):
        return None
    what = "one copy per (subnet, model) + configs" if r["mode"] == "pfs" \
        else "every phone's load + config"
    return (f"{r['mode']}: WAN TFTP bytes {got / 1e6:,.2f} MB = "
            f"{got / est['wan_bytes']:.3f} x {what} ({est['wan_bytes'] / 1e6:,.2f} MB)")


def print_report(results: list[dict], console: Console | None = None, trees: int = 1) -> None:
    console = console or Console(width=None if sys.stdout.isatty() else 120)
    console.print(summary_table(results))
    for r in results:
        for line in fidelity_lines(r):
            console.print(line)
    rt = ratio_table(results)
    if rt is not None:
        console.print(rt)
    for r in results:
        if r["mode"] != "pfs" or not r.get("hierarchies"):
            continue
        names = {p["ip"]: p["name"] for p in r["phones"]}
        hs = sorted(r["hierarchies"], key=lambda h: (-len(h["edges"]), h["subnet"], h["file"]))
        for h in hs[:trees]:
            console.print(hierarchy_tree(h, names))
