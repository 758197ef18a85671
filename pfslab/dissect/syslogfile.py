"""Reading the PFS log server's file (``pfs-syslog.log``, written by rsyslogd at HQ with
pfslab's template: ``<received> <sender ip> <RFC 3164 timestamp> <phone> <DLoad line>``).

Used by ``pfslab decode`` (beside the captures) and by report.html. Hostile or foreign
lines are skipped, never fatal.
"""
from __future__ import annotations

import re

_LINE = re.compile(r"^(\S+) (\S+) [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d (\S+) (.*)$")
#: a root's announcement in its DLoad log (Cisco's tech note): the model and file it serves
_HROOT = re.compile(r"@@@HROOT:XID[0-9A-Fa-f]+ H=[0-9a-f]+ m=(\S+) ROOT=\S+ /dnld/(\S+)")


def parse_log(path: str) -> list[dict]:
    """pfs-syslog.log -> [{"received", "ip", "phone", "line"}] in file order ("line" is the
    phone's DLoad line, as in its own log). Lines of another shape are skipped."""
    out = []
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return out
    with f:
        for raw in f:
            m = _LINE.match(raw.rstrip("\n"))
            if m:
                out.append({"received": m[1], "ip": m[2], "phone": m[3], "line": m[4]})
    return out


def log_server_summary(records: list[dict], wire_hierarchies: list[dict]) -> dict:
    """What the log server heard: lines per phone, and the roots the phones announced
    (``@@@HROOT``) checked against the roots rebuilt from the subnet captures."""
    per_phone: dict[str, int] = {}
    announced = set()
    for r in records:
        per_phone[r["phone"]] = per_phone.get(r["phone"], 0) + 1
        m = _HROOT.search(r["line"])
        if m:
            announced.add((r["ip"], m[1], m[2]))
    on_wire = {(h["root"], h["model"], h["file"]) for h in wire_hierarchies if h.get("root")}
    return {"lines": len(records), "phones": len(per_phone),
            "lines_per_phone": dict(sorted(per_phone.items())),
            "roots_announced": len(announced),
            "roots_not_on_wire": [{"ip": i, "model": m, "file": f}
                                  for i, m, f in sorted(announced - on_wire)],
            "wire_roots_not_announced": [{"ip": i, "model": m, "file": f}
                                         for i, m, f in sorted(on_wire - announced)]}
