"""Memory per phone, all of the lab's processes included.

RSS counts shared pages (bash's text, Python's libraries) once per process, so a sum of RSS
overstates what 1000 Mininet shells cost; PSS shares each page among the processes mapping
it, so PSS sums to what the lab really holds. Both are reported, from /proc (smaps_rollup).
"""
from __future__ import annotations

import os


def _rollup(pid: int) -> dict[str, int] | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            text = f.read()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            out[key.lower()] = int(rest.split()[0])      # kB
    return out


def descendants(pids: list[int]) -> list[int]:
    """``pids`` and every process below them (children first found through /proc)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    seen, todo = set(), list(pids)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        todo.extend(children.get(p, ()))
    return sorted(seen)


def footprint(groups: dict[str, list[int]], phones: int) -> dict:
    """{group: {processes, rss_kb, pss_kb}, total..., per_phone_rss_mb, per_phone_pss_mb}
    for named groups of PIDs (each with its descendants; a PID counts in its first group)."""
    out: dict = {}
    seen: set[int] = set()
    tot_rss = tot_pss = 0
    for name, pids in groups.items():
        rss = pss = n = 0
        for pid in descendants(pids):
            if pid in seen:
                continue
            seen.add(pid)
            r = _rollup(pid)
            if r is None:
                continue
            n += 1
            rss += r.get("rss", 0)
            pss += r.get("pss", 0)
        out[name] = {"processes": n, "rss_kb": rss, "pss_kb": pss}
        tot_rss += rss
        tot_pss += pss
    out["total"] = {"processes": len(seen), "rss_kb": tot_rss, "pss_kb": tot_pss}
    if phones:
        out["per_phone_rss_mb"] = round(tot_rss / 1024 / phones, 3)
        out["per_phone_pss_mb"] = round(tot_pss / 1024 / phones, 3)
    return out
