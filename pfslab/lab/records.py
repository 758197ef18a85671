"""Run records: what each lab run created, so that it (or `pfslab clean`) can remove exactly
that and nothing else.

A record is /run/pfslab/<run-id>.json (root-owned, gone at reboot like the namespaces)::

    {"run_id": ..., "prefix": "pab12c", "owner": {"pid": 123, "start": 456},
     "created": "2025-...", "out_dir": "...",
     "pids": [{"pid": 1, "start": 2, "what": "tcpdump wan", "group": true}, ...],
     "names": ["pab12cS1", ...],          # root-namespace links/bridges (also found by prefix)
     "netns": ["pab12cP1", ...]}          # named network namespaces, /run/netns/<name>: the
                                          # phones (light hosts; also found by prefix)

Names are always <prefix> + an upper-case letter + ..., and prefixes are lower-case, so the
prefix of one run never matches another run's names.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import secrets
import string
import threading

from .nsutil import proc_starttime

RECORD_DIR = os.environ.get("PFSLAB_RECORD_DIR", "/run/pfslab")


def name_pattern(prefix: str) -> re.Pattern:
    return re.compile(re.escape(prefix) + r"[A-Z]")


def new_prefix() -> str:
    """'p' + 5 random lower-case letters/digits, not used by any recorded run."""
    alphabet = string.ascii_lowercase + string.digits
    taken = {r.get("prefix") for r in list_records()}
    while True:
        p = "p" + "".join(secrets.choice(alphabet) for _ in range(5))
        if p not in taken:
            return p


def list_records() -> list[dict]:
    out = []
    try:
        names = sorted(os.listdir(RECORD_DIR))
    except FileNotFoundError:
        return out
    for n in names:
        if not n.endswith(".json"):
            continue
        try:
            with open(os.path.join(RECORD_DIR, n)) as f:
                rec = json.load(f)
            rec["_path"] = os.path.join(RECORD_DIR, n)
            out.append(rec)
        except (OSError, ValueError):
            continue
    return out


class RunRecord:
    """The live record of this run; every change is written through (atomically)."""

    def __init__(self, run_id: str, prefix: str, out_dir: str | None = None):
        self.lock = threading.Lock()
        self.path = os.path.join(RECORD_DIR, f"{run_id}.json")
        self.data = {
            "run_id": run_id, "prefix": prefix,
            "owner": {"pid": os.getpid(), "start": proc_starttime(os.getpid())},
            "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "out_dir": out_dir, "pids": [], "names": [], "netns": [],
        }
        os.makedirs(RECORD_DIR, mode=0o755, exist_ok=True)
        self._write()

    @property
    def prefix(self) -> str:
        return self.data["prefix"]

    def _write(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1)
        os.replace(tmp, self.path)

    def add_pid(self, pid: int, what: str, group: bool = False):
        """group: the process leads its own process group; kill the whole group."""
        with self.lock:
            self.data["pids"].append(
                {"pid": pid, "start": proc_starttime(pid), "what": what, "group": group})
            self._write()

    def add_pids(self, items: list[tuple[int, str]]):
        with self.lock:
            for pid, what in items:
                self.data["pids"].append(
                    {"pid": pid, "start": proc_starttime(pid), "what": what, "group": False})
            self._write()

    def drop_pid(self, pid: int):
        with self.lock:
            self.data["pids"] = [p for p in self.data["pids"] if p["pid"] != pid]
            self._write()

    def add_names(self, names):
        with self.lock:
            for n in names:
                if n not in self.data["names"]:
                    self.data["names"].append(n)
            self._write()

    def set(self, **kw):
        with self.lock:
            self.data.update(kw)
            self._write()

    def remove(self):
        with self.lock:
            for p in (self.path, self.path + ".tmp"):
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
