"""The live view of an upgrade: every phone's screen, from the agents' own events.

:class:`Board` holds what the phones show, fed by the agent's event stream (``status``,
``installed``, ``completed``, ``fault``, ``timeout``; see ``pfslab/view/status.py``).
:class:`LiveView` draws it with rich Live on a terminal: each subnet a grid of phone cells
(name and model; the file it is on with its % or KB; the PFS icon while it shares; its role
for that file), the WAN's TFTP rate against the bandwidth, and done/waiting/failed counts.
When the cells do not fit (1000 phones) it folds to one line per subnet with its busiest
phones. Without a terminal (CI, pipes) or with ``--no-live`` it prints plain progress lines.
"""
from __future__ import annotations

import io
import math
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

PFS_ICON = "⇄"
ROLE_STYLE = {"root": "bold blue", "parent": "magenta", "child": "green", "tftp": "cyan",
              "fallback": "bold yellow", "failed": "bold red", "done": "green",
              "listen": "dim", "claim": "yellow", "config": "dim", "waiting": "dim"}
ROLE_LABEL = {"tftp": "TFTP", "done": "done ✓", "failed": "failed ✗", "config": "config",
              "waiting": "waiting"}
CELL_W = 22


@dataclass
class Cell:
    name: str
    model: str
    subnet: int
    role: str = "waiting"
    file: str | None = None
    got: int = 0
    size: int | None = None
    pfs: bool = False
    files: int = 0
    of: int | None = None
    state: str = "waiting"         # waiting, done, failed
    note: str = ""                 # e.g. "fault: crash"

    def progress(self) -> str:
        if self.size:
            return f"{min(100, 100 * self.got // self.size)}%"
        return f"{self.got // 1024}KB" if self.got else ""

    def busy(self) -> float:
        """How much there is to see on this phone (the folded view shows the busiest)."""
        if self.state != "waiting":
            return -1.0
        frac = self.got / self.size if self.size else 0.0
        return 2 * self.pfs + (self.role in ("root", "parent")) + (self.role == "fallback") + frac


def _count(x) -> int | None:
    """A non-negative integer from an event field, else None."""
    return x if isinstance(x, int) and not isinstance(x, bool) and x >= 0 else None


def short_file(f: str | None) -> str:
    """``apps41.9-4-2ES26.sbn`` -> ``apps41``; config files -> ``config``."""
    if not isinstance(f, str) or not f:
        return ""
    if f.endswith(".cnf.xml"):
        return "config"
    return f.split(".")[0] + (".loads" if f.endswith(".loads") else "")


class Board:
    """What every phone shows, and the WAN's recent TFTP rate. Thread-safe: the lab feeds it
    from its reader thread while rich redraws from another."""

    def __init__(self, phones: list[dict], mode: str = "", bw_bps: float | None = None,
                 window: float = 3.0):
        self.mode, self.bw_bps, self.window = mode, bw_bps, window
        self.cells = {p["name"]: Cell(p["name"], p.get("model", "?"), p.get("subnet") or 0)
                      for p in phones}
        self.subnets: dict[int, list[Cell]] = {}
        for c in self.cells.values():
            self.subnets.setdefault(c.subnet, []).append(c)
        self.t = 0.0
        self.lock = threading.Lock()
        self._wan: deque = deque()               # (t, TFTP bytes)
        self._tftp_at: dict[str, tuple] = {}     # phone -> (file, bytes) last seen by TFTP
        self.timed_out = False

    def event(self, ev) -> None:
        """One event of the agent's stream; anything malformed is ignored."""
        if not isinstance(ev, dict):
            return
        with self.lock:
            try:
                self._event(ev)
            except (TypeError, ValueError, KeyError, AttributeError):
                pass

    def _event(self, ev: dict) -> None:
        kind = ev.get("event")
        if isinstance(ev.get("t"), (int, float)) and math.isfinite(ev["t"]):
            self.t = max(self.t, float(ev["t"]))
        phone = ev.get("phone")
        c = self.cells.get(phone) if isinstance(phone, str) else None
        if kind == "timeout":
            self.timed_out = True
        if c is None:
            return
        if kind == "status":
            got, size, files, of = (_count(ev.get(k)) for k in ("got", "size", "files", "of"))
            self._wan_bytes(c.name, ev.get("file"), got or 0, ev)
            if c.state == "waiting":
                c.role = str(ev.get("role") or "waiting")
            c.file = ev.get("file") if isinstance(ev.get("file"), str) else None
            c.got, c.size, c.files, c.of = got or 0, size or None, files or 0, of
            c.pfs = bool(ev.get("pfs"))
        elif kind == "installed":
            c.files += 1
            n = _count(ev.get("bytes"))    # the simulator's TFTP fetches (no progress events)
            if n:
                since = ev.get("since")
                self._spread(since if isinstance(since, (int, float)) else self.t, self.t, n)
        elif kind == "completed":
            c.state = "done" if ev.get("ok") else "failed"
            c.role, c.pfs = ("done" if ev.get("ok") else "failed"), False
        elif kind == "fault":
            c.state, c.role, c.pfs = "failed", "failed", False
            c.note = f"fault: {ev.get('how', '?')}"

    def _wan_bytes(self, name: str, f, got: int, ev: dict) -> None:
        if ev.get("via") != "tftp" and ev.get("role") not in ("tftp", "config"):
            self._tftp_at.pop(name, None)
            return
        last = self._tftp_at.get(name)
        delta = got - last[1] if last and last[0] == f and got >= last[1] else got
        self._tftp_at[name] = (f, got)
        if delta > 0:
            self._wan.append((self.t, delta))

    def _spread(self, t0: float, t1: float, n: int, step: float = 0.25) -> None:
        """``n`` bytes that arrived evenly from t0 to t1, in slices, in time order."""
        slices = max(1, min(int((t1 - t0) / step), 4000))
        first = t1 - (slices - 1) * step
        unsorted = bool(self._wan) and first < self._wan[-1][0]
        for i in range(slices):
            self._wan.append((first + i * step, n / slices))
        if unsorted:
            self._wan = deque(sorted(w for w in self._wan if w[0] > self.t - self.window))

    def wan_rate(self) -> float:
        """TFTP bits/s over the last ``window`` seconds of the run's clock."""
        while self._wan and self._wan[0][0] <= self.t - self.window:
            self._wan.popleft()
        return 8 * sum(b for _, b in self._wan) / self.window

    def counts(self) -> dict[str, int]:
        out = {"done": 0, "waiting": 0, "failed": 0, "sharing": 0}
        for c in self.cells.values():
            out[c.state] += 1
            out["sharing"] += c.pfs
        return out

    # ------------------------------------------------------------------ drawing

    def header(self) -> Text:
        n = self.counts()
        rate = self.wan_rate()
        t = Text()
        t.append(f" {self.mode} ", style="bold reverse")
        t.append(f" t={self.t:.1f}s  WAN ")
        if self.bw_bps:
            full = int(round(min(rate / self.bw_bps, 1.0) * 12))
            t.append("█" * full, style="cyan")
            t.append("░" * (12 - full), style="dim")
            t.append(f" {rate / 1000:.0f}/{self.bw_bps / 1000:g} kbit/s")
        else:
            t.append(f"{rate / 1000:.0f} kbit/s")
        t.append("  done ")
        t.append(str(n["done"]), style="green")
        t.append("  waiting ")
        t.append(str(n["waiting"]))
        t.append("  failed ")
        t.append(str(n["failed"]), style="red" if n["failed"] else "")
        t.append(f"  {PFS_ICON} {n['sharing']}")
        if self.timed_out:
            t.append("  TIMED OUT", style="bold red")
        return t

    def cell(self, c: Cell) -> Text:
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(c.name, style="bold")
        t.append(" " + c.model.replace("CP-", ""), style="dim")
        t.append("\n")
        if c.note:
            t.append(c.note, style="red")
        elif c.state == "waiting" and c.file:
            t.append(" ".join(x for x in (short_file(c.file), c.progress()) if x))
        elif c.of:
            t.append(f"{c.files}/{c.of} files", style="dim")
        if c.pfs:
            t.append(f" {PFS_ICON}", style="bold magenta")
        t.append("\n")
        t.append(ROLE_LABEL.get(c.role, c.role), style=ROLE_STYLE.get(c.role, ""))
        return t

    def grid(self, width: int):
        cols = max(1, (width - 4) // CELL_W)
        panels = []
        for k in sorted(self.subnets):
            g = Table.grid(padding=(0, 1))
            for _ in range(cols):
                g.add_column(width=CELL_W - 1, no_wrap=True)
            cells = self.subnets[k]
            for i in range(0, len(cells), cols):
                row = [self.cell(c) for c in cells[i:i + cols]]
                g.add_row(*row, *[""] * (cols - len(row)))
            n = sum(c.state == "done" for c in cells)
            panels.append(Panel(g, title=f"subnet {k}: {n}/{len(cells)} done",
                                title_align="left", padding=(0, 1)))
        return panels

    def grid_height(self, width: int) -> int:
        cols = max(1, (width - 4) // CELL_W)
        return sum(-(-len(c) // cols) * 3 + 2 for c in self.subnets.values()) + 1

    def folded(self, width: int, busiest: int = 3) -> Table:
        t = Table(title_justify="left", expand=False, show_edge=False, pad_edge=False)
        for col in ("subnet", "phones", "done", "waiting", "failed", PFS_ICON):
            t.add_column(col, justify="right", no_wrap=True)
        t.add_column("busiest phones", no_wrap=True, overflow="ellipsis",
                     max_width=max(width - 48, 20))
        for k in sorted(self.subnets):
            cells = self.subnets[k]
            busy = sorted((c for c in cells if c.busy() >= 0), key=lambda c: -c.busy())
            line = Text()
            for c in busy[:busiest]:
                line.append(c.name, style="bold")
                line.append(f" {ROLE_LABEL.get(c.role, c.role)}",
                            style=ROLE_STYLE.get(c.role, ""))
                line.append("".join(f" {x}" for x in (short_file(c.file), c.progress()) if x))
                if c.pfs:
                    line.append(f" {PFS_ICON}", style="bold magenta")
                line.append("  ")
            t.add_row(str(k), str(len(cells)), str(sum(c.state == "done" for c in cells)),
                      str(sum(c.state == "waiting" for c in cells)),
                      str(sum(c.state == "failed" for c in cells)),
                      str(sum(c.pfs for c in cells)), line)
        return t

    def renderable(self, width: int, height: int):
        with self.lock:
            head = self.header()
            if self.grid_height(width) + 2 <= height:
                return Group(head, *self.grid(width))
            return Group(head, self.folded(width))

    def line(self) -> str:
        """One plain progress line."""
        with self.lock:
            n = self.counts()
            rate = self.wan_rate()
        bw = f" of {self.bw_bps / 1000:g}" if self.bw_bps else ""
        return (f"  {self.mode}: t={self.t:.1f} s: {n['done']}/{len(self.cells)} done, "
                f"{n['failed']} failed, {n['waiting']} waiting, {n['sharing']} sharing; "
                f"WAN TFTP {rate / 1000:.0f}{bw} kbit/s")


def render_text(board: Board, width: int = 100, height: int = 40) -> str:
    """One frame as plain text (what the terminal shows, without colours)."""
    con = Console(width=width, height=height, file=io.StringIO(), record=True,
                  color_system=None, force_terminal=False)
    con.print(board.renderable(width, height))
    return con.export_text()


class _Frame:
    """What rich Live draws: the board at the console's current size."""

    def __init__(self, board: Board):
        self.board = board

    def __rich_console__(self, console, options):
        yield self.board.renderable(options.max_width, console.size.height)


class LiveView:
    """Feed it events; on a terminal it redraws the board 4 times a second, otherwise (or
    ``live=False``) it prints a plain line every ``every`` seconds and at the end."""

    def __init__(self, board: Board, live: bool | None = None, every: float = 5.0,
                 out=None):
        self.board = board
        self.out = out or sys.stdout
        self.live = (self.out.isatty() if live is None else live)
        self.every = every
        self._last = time.monotonic()
        self._rich = None

    def __enter__(self) -> "LiveView":
        if self.live:
            from rich.live import Live
            self._rich = Live(_Frame(self.board), console=Console(file=self.out),
                              refresh_per_second=4, transient=False)
            self._rich.start()
        return self

    def event(self, ev: dict) -> None:
        self.board.event(ev)
        if not self.live and time.monotonic() - self._last >= self.every:
            self._print()

    def _print(self) -> None:
        self._last = time.monotonic()
        print(self.board.line(), file=self.out, flush=True)

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.refresh()
            self._rich.stop()
        else:
            self._print()


def _recorded(events_path: str, phones_path: str):
    import json
    with open(phones_path) as f:
        spec = json.load(f)
    phones = spec["phones"] if isinstance(spec, dict) else spec
    events = []
    with open(events_path) as f:
        for line in f:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return phones, events


def replay(events_path: str, phones_path: str, at: float | None = None, mode: str = "pfs",
           bw_bps: float | None = None, width: int = 100, height: int = 40) -> str:
    """One frame of a recorded run: the agent's ``agent-events.jsonl`` and its
    ``agent-spec.json`` (or a JSON list of phones), up to the time ``at`` (default: the end)."""
    phones, events = _recorded(events_path, phones_path)
    board = Board(phones, mode, bw_bps)
    for ev in events:
        if at is not None and isinstance(ev.get("t"), (int, float)) and ev["t"] > at:
            continue
        board.event(ev)
    return render_text(board, width, height)


def play(events_path: str, phones_path: str, speed: float = 1.0, mode: str = "pfs",
         bw_bps: float | None = None, live: bool | None = None) -> None:
    """A recorded run's screens again, in its own time (``speed`` x faster)."""
    phones, events = _recorded(events_path, phones_path)
    t0, start = None, time.monotonic()
    with LiveView(Board(phones, mode, bw_bps), live=live, every=5.0 / speed) as view:
        for ev in events:
            t = ev.get("t")
            if isinstance(t, (int, float)):
                t0 = t if t0 is None else t0
                wait = (t - t0) / speed - (time.monotonic() - start)
                if wait > 0:
                    time.sleep(wait)
            view.event(ev)


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(prog="python -m pfslab.view.live",
                                 description="a recorded run's live view: one frame, or "
                                             "played again (--play)")
    ap.add_argument("events", help="agent-events.jsonl of a run's mode folder")
    ap.add_argument("phones", help="agent-spec.json of that folder (or a JSON list of phones)")
    ap.add_argument("--at", type=float, default=None, help="seconds after the reset")
    ap.add_argument("--play", type=float, default=None, metavar="SPEED",
                    help="play the run again, SPEED times faster")
    ap.add_argument("--no-live", action="store_true", help="plain lines, even on a terminal")
    ap.add_argument("--bw", type=float, default=None, help="WAN bandwidth, bits/s")
    ap.add_argument("--width", type=int, default=100)
    a = ap.parse_args()
    if a.play:
        play(a.events, a.phones, a.play, bw_bps=a.bw, live=False if a.no_live else None)
    else:
        print(replay(a.events, a.phones, a.at, bw_bps=a.bw, width=a.width), end="")
