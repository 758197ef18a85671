"""`pfslab decode PCAP|DIR...`: rebuild PFS elections, trees and TFTP use from a run's pcaps.

From the wire alone (no agent logs):
- each ``subnet-<k>.pcap``: per model, file and map, the election (claims with their ads, the
  winner, when it sent its first ROOT), the tree (OFFERs, each edge confirmed by a TCP
  REQUEST..END transfer), re-joins, and each phone's completion (its READY, else the END of
  its transfer);
- ``wan.pcap``: every TFTP transfer (RRQ, the server's new transfer ID, DATA bytes, the
  final ACK), totalled per file and per client.

A pcap is classified by name (``wan*.pcap``, ``subnet-<k>.pcap``), else by content (port-4051
traffic: a subnet, numbered from its lab addresses; TFTP: the WAN). A directory stands for all
its ``*.pcap``. Times are seconds from the first packet of all the pcaps given, rounded to
the microsecond, and every list is sorted: the output of one set of pcaps never changes.
Nothing here raises on hostile bytes: malformed messages are counted per pcap, and a pcap
that cannot be read (or ends mid-record) is reported with what it held up to there.
"""
from __future__ import annotations

import ipaddress
import json
import pathlib
import re
import struct
import sys
from collections import Counter, defaultdict

from ..errors import UserError
from . import wire
from .pcapfile import Capture, Record
from .wire import PORT
from .syslogfile import log_server_summary, parse_log

#: how many examples of malformed messages a pcap's report keeps
MAX_EXAMPLES = 5
SYSLOG_FILE = "pfs-syslog.log"   # the PFS log server's file in a run's mode folder


def add_arguments(p):
    p.add_argument("pcaps", nargs="+", metavar="PCAP|DIR",
                   help="wan.pcap and subnet-<k>.pcap of one lab run, or its mode directory "
                        "(e.g. pcaps/<run>/pfs)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="print JSON")
    g.add_argument("--tree", action="store_true", help="print only the hierarchy trees")
    g.add_argument("--table", action="store_true", help="print only the tables")
    p.add_argument("--width", type=int, default=None, help="text width (default: terminal)")
    p.add_argument("--syslog", metavar="FILE", default=None,
                   help="the PFS log server's file (default: pfs-syslog.log in a directory "
                        "given; its roots are checked against the wire's)")


# ------------------------------------------------------------------------------ inputs

def expand_paths(args) -> list[pathlib.Path]:
    """The pcaps named on the command line; a directory gives all its ``*.pcap`` files."""
    out: list[pathlib.Path] = []
    for a in args:
        p = pathlib.Path(a)
        if p.is_dir():
            found = sorted([*p.glob("*.pcap"), *p.glob("*.pcapng")])
            if not found:
                raise UserError(f"no *.pcap in {p} (give a run's mode directory, "
                                f"e.g. pcaps/<run>/pfs)")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise UserError(f"no such pcap: {a}")
    seen, uniq = set(), []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            uniq.append(p)
    return uniq


def kind_by_name(path) -> tuple[str | None, int | None]:
    """("wan", None), ("subnet", k), or (None, None) when the name says nothing."""
    name = pathlib.Path(path).name
    if re.fullmatch(r"wan.*\.pcap(ng)?", name):
        return "wan", None
    m = re.fullmatch(r"subnet-(\d+)\.pcap(ng)?", name)
    if m:
        return "subnet", int(m.group(1))
    return None, None


def lab_subnet(ip: str) -> int | None:
    """The lab's subnet number of a phone address: 10.1.k.x (/24) or 10.(100+k).x.x (/16)."""
    try:
        a = ipaddress.IPv4Address(ip).packed
    except ValueError:
        return None
    if a[0] != 10:
        return None
    if a[1] == 1 and a[2] > 0:
        return a[2]
    if a[1] > 100:
        return a[1] - 100
    return None


def _tftp_options(pkt) -> dict[str, str]:
    """A TFTP RRQ's or OACK's options (lower-case names); {} when absent or mangled."""
    opts = {}
    try:
        for o in (pkt.getlayer("TFTP_Options").options or []):
            opts[bytes(o.oname).decode("ascii", "replace").lower()] = \
                bytes(o.value).decode("ascii", "replace")
    except Exception:
        pass
    return opts


def _nul_strings(raw: bytes) -> list[bytes] | None:
    """The NUL-terminated strings after a TFTP opcode, when they are all there is and come
    in pairs (a request's name and mode, an option and its value); else None (Scapy reads
    it then)."""
    body = raw[2:]
    if not body or body[-1] != 0:
        return None
    f = body[:-1].split(b"\0")
    return f if len(f) % 2 == 0 and len(f) <= 64 else None


def _error_text(raw: bytes) -> str:
    """A TFTP ERROR's code and message (up to its NUL, else to the end), as text."""
    end = raw.find(b"\0", 4)
    msg = raw[4:end] if end >= 0 else raw[4:]
    return f"{raw[2] << 8 | raw[3]} {msg.decode('ascii', 'replace')}"


def _options(f: list[bytes]) -> dict[str, str]:
    """Option names (lower-case) and values from name, value, name, value, ..."""
    return {o.decode("ascii", "replace").lower(): v.decode("ascii", "replace")
            for o, v in zip(f[0::2], f[1::2])}


def _ip(endpoint: str) -> str:
    return endpoint.rsplit(":", 1)[0]


# ------------------------------------------------------------------------------ TFTP

class TftpTracker:
    """TFTP transfers seen in a capture.

    The client sends its RRQ to port 69; the server answers from a new port (its transfer ID,
    TID), so a transfer is keyed by (client, client port, server) and bound to the first
    server TID that answers. Packets from another server port are counted as ``stray``.
    DATA and ACK (nearly every packet) are read from their four bytes; requests, OACKs and
    errors (a few per transfer) with Scapy's TFTP layer.
    """

    #: read plain requests, OACKs, DATA and ACKs from their bytes (False: all with Scapy, as
    #: the reference in tests/test_decode_fast.py)
    FAST = True

    def __init__(self):
        self.transfers: list[dict] = []
        self.by_key: dict = {}
        self.malformed = 0
        self.examples: list[str] = []
        self.stray = 0

    def _bad(self, why: str):
        self.malformed += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(why)

    def feed(self, src: str, sport: int, dst: str, dport: int, raw: bytes, t: float) -> None:
        """One UDP datagram (not a fragment): its addresses, ports and payload."""
        if dport == 69:
            self._rrq(src, sport, dst, raw, t)
            return
        tr = self.by_key.get((dst, dport, src))        # server TID -> client
        if tr is not None:
            if tr["tid"] is None and sport != 69:
                tr["tid"] = sport
            if sport != tr["tid"]:
                self.stray += 1
                return
            self._from_server(tr, raw, t)
            return
        tr = self.by_key.get((src, sport, dst))        # client -> server TID
        if tr is not None and tr["tid"] is not None and dport == tr["tid"]:
            self._from_client(tr, raw, t)

    def _parse(self, raw: bytes):
        from scapy.layers.tftp import TFTP
        if len(raw) < 2 or not 1 <= struct.unpack("!H", raw[:2])[0] <= 6:
            return None
        try:
            return TFTP(raw)
        except Exception:   # Scapy normally dissects leniently; never let it escape
            return None

    def _rrq(self, src, sport, dst, raw, t):
        f = _nul_strings(raw) if self.FAST and raw[:1] == b"\0" and raw[1:2] in (b"\1", b"\2") \
            else None
        if f is not None:                        # a plain request: read it here
            op, fname, opts = ("RRQ" if raw[1] == 1 else "WRQ"), f[0], _options(f[2:])
            if not fname:
                self._bad(f"{src}:{sport} -> 69: op {raw[1]} is not a request")
                return
        else:
            from scapy.layers.tftp import TFTP_RRQ, TFTP_WRQ
            pkt = self._parse(raw)
            if pkt is None:
                self._bad(f"{src}:{sport} -> 69: not TFTP")
                return
            req = pkt.getlayer(TFTP_RRQ) or pkt.getlayer(TFTP_WRQ)
            if req is None or not req.filename:
                self._bad(f"{src}:{sport} -> 69: op {pkt.op} is not a request")
                return
            op, fname = ("RRQ" if isinstance(req, TFTP_RRQ) else "WRQ"), bytes(req.filename)
            opts = _tftp_options(pkt)
        fname = fname.decode("ascii", "replace")
        key = (src, sport, dst)
        tr = self.by_key.get(key)
        if tr is not None and tr["file"] == fname and not tr["complete"]:
            tr["requests"] += 1                  # a retransmitted RRQ
            return
        tr = {"client": src, "port": sport, "server": dst, "file": fname,
              "op": op, "requests": 1,
              "start": t, "tid": None, "blksize": 512, "asked": opts, "oack": None,
              "blocks": {}, "data_bytes": 0, "data_packets": 0, "wraps": 0, "last_block": 0,
              "final_block": None, "end": None, "last": t, "complete": False, "error": None}
        self.transfers.append(tr)
        self.by_key[key] = tr

    def _from_server(self, tr, raw, t):
        if len(raw) >= 4 and raw[0] == 0 and raw[1] == 3 and self.FAST:      # DATA
            tr["last"] = t
            self._data(tr, raw[2] << 8 | raw[3], len(raw) - 4, t)
            return
        f = _nul_strings(raw) if raw[:2] == b"\0\6" and self.FAST else None
        if f:                                                   # a plain OACK
            tr["last"] = t
            self._oack(tr, _options(f))
            return
        if len(raw) >= 4 and raw[:2] == b"\0\5" and self.FAST:     # ERROR
            tr["last"] = t
            tr["error"] = _error_text(raw)
            return
        from scapy.layers.tftp import TFTP_DATA, TFTP_ERROR, TFTP_OACK
        pkt = self._parse(raw)
        if pkt is None:
            self._bad(f"{tr['server']}:{tr['tid']} -> {tr['client']}: not TFTP")
            return
        tr["last"] = t
        if pkt.haslayer(TFTP_DATA):
            self._data(tr, pkt[TFTP_DATA].block, len(bytes(pkt[TFTP_DATA].payload)), t)
        elif pkt.haslayer(TFTP_OACK):
            self._oack(tr, _tftp_options(pkt))
        elif pkt.haslayer(TFTP_ERROR):
            e = pkt[TFTP_ERROR]
            tr["error"] = f"{e.errorcode} {bytes(e.errormsg or b'').decode('ascii', 'replace')}"

    @staticmethod
    def _oack(tr, opts: dict) -> None:
        tr["oack"] = opts
        try:
            tr["blksize"] = int(opts.get("blksize", 512))
        except ValueError:
            pass

    @staticmethod
    def _data(tr, block: int, n: int, t: float) -> None:
        if block < tr["last_block"] - 32768:          # block numbers wrapped around
            tr["wraps"] += 1
        tr["last_block"] = block
        tr["blocks"][block + 65536 * tr["wraps"]] = n
        tr["data_bytes"] += n
        tr["data_packets"] += 1
        if n < tr["blksize"]:
            tr["final_block"] = block
            tr["end"] = tr["end"] or t

    def _from_client(self, tr, raw, t):
        if len(raw) >= 4 and raw[0] == 0 and raw[1] == 4 and self.FAST:      # ACK
            tr["last"] = t
            if tr["final_block"] is not None and (raw[2] << 8 | raw[3]) == tr["final_block"]:
                tr["complete"] = True
                tr["end"] = t
            return
        if len(raw) >= 4 and raw[:2] == b"\0\5" and self.FAST:     # ERROR
            tr["last"] = t
            if tr["error"] is None:
                tr["error"] = "client: " + _error_text(raw)
            return
        from scapy.layers.tftp import TFTP_ACK, TFTP_ERROR
        pkt = self._parse(raw)
        if pkt is None:
            self._bad(f"{tr['client']}:{tr['port']} -> {tr['server']}: not TFTP")
            return
        tr["last"] = t
        if pkt.haslayer(TFTP_ACK) and tr["final_block"] is not None \
                and pkt[TFTP_ACK].block == tr["final_block"]:
            tr["complete"] = True
            tr["end"] = t
        elif pkt.haslayer(TFTP_ERROR) and tr["error"] is None:
            e = pkt[TFTP_ERROR]
            tr["error"] = f"client: {e.errorcode} " \
                          f"{bytes(e.errormsg or b'').decode('ascii', 'replace')}"


def tftp_summary(transfers: list[dict], rel) -> dict:
    """The transfers (sorted), and their totals per file and per client."""
    rows = []
    for tr in transfers:
        rows.append({"client": tr["client"], "file": tr["file"], "op": tr["op"],
                     "server": tr["server"], "requests": tr["requests"],
                     "start_s": rel(tr["start"]),
                     "end_s": rel(tr["end"]) if tr["end"] is not None else None,
                     "blksize": tr["blksize"], "data_packets": tr["data_packets"],
                     "data_bytes": tr["data_bytes"], "file_bytes": sum(tr["blocks"].values()),
                     "complete": tr["complete"], "error": tr["error"]})
    rows.sort(key=lambda r: (r["start_s"], r["client"], r["file"]))
    per_file: dict = {}
    per_client: dict = {}
    for r in rows:
        f = per_file.setdefault(r["file"], {"file": r["file"], "requests": 0, "transfers": 0,
                                            "complete": 0, "clients": set(), "data_bytes": 0,
                                            "file_bytes": None})
        c = per_client.setdefault(r["client"], {"client": r["client"], "requests": 0,
                                                "transfers": 0, "complete": 0, "files": set(),
                                                "data_bytes": 0, "last_s": None})
        for d in (f, c):
            d["requests"] += r["requests"]
            d["transfers"] += 1
            d["complete"] += r["complete"]
            d["data_bytes"] += r["data_bytes"]
        f["clients"].add(r["client"])
        c["files"].add(r["file"])
        if r["complete"]:
            f["file_bytes"] = r["file_bytes"]
        if r["end_s"] is not None:
            c["last_s"] = max(c["last_s"] or 0.0, r["end_s"])
    for d in per_file.values():
        d["clients"] = sorted(d["clients"])
    for d in per_client.values():
        d["files"] = sorted(d["files"])
    return {"requests": sum(r["requests"] for r in rows), "transfers": len(rows),
            "complete": sum(r["complete"] for r in rows),
            "data_bytes": sum(r["data_bytes"] for r in rows),
            "by_file": [per_file[k] for k in sorted(per_file)],
            "by_client": [per_client[k] for k in sorted(per_client, key=_ipkey)],
            "transfers_list": rows}


def _ipkey(ip):
    try:
        return (0, int(ipaddress.IPv4Address(ip)), "")
    except ValueError:
        return (1, 0, str(ip))


# ------------------------------------------------------------------------------ one pcap

class PcapScan:
    """Everything one pass over one capture collects: CPPDP messages (into
    :class:`WireHierarchies`) and TFTP transfers. Frames are read at fixed offsets
    (:func:`pfslab.dissect.wire.ether_l4`); the few that are not plain Ethernet/IPv4 go
    through Scapy (``fallbacks`` counts them), and both give the same answer."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.capture = Capture(path)     # NotACapture (exit 2) before any work
        self.first = None
        self.messages = 0              # valid CPPDP messages
        self.sources: Counter = Counter()   # their senders' addresses
        self.malformed = 0
        self.examples: list[str] = []
        self.tftp = TftpTracker()
        self.wire = WireHierarchies()
        self.reasm = wire.Reassembler()
        self.fallbacks = 0             # frames read by Scapy

    @property
    def frames(self) -> int:
        return self.capture.frames

    @property
    def truncated(self) -> bool:
        return self.capture.truncated

    @property
    def error(self) -> str | None:
        return self.capture.error

    def run(self) -> "PcapScan":
        """Read the whole capture: its messages into :attr:`wire`, TFTP into :attr:`tftp`."""
        for m in self.walk():
            self._message(*m)
        return self

    def walk(self, tftp: bool = True):
        """Every port-4051 datagram and frame, in capture order, as ``(time, (src ip,
        port), (dst ip, port), "udp" | "tcp", wire.FRAME | wire.FOREIGN, bytes)``; TFTP is
        tracked on the way (unless ``tftp`` is False). Stop early and the rest of the
        capture is not read."""
        udp_bound, tcp_bound = _scapy_ports()
        ether_l4, ip_str, UDP, FALLBACK = wire.ether_l4, wire.ip_str, wire.UDP, wire.FALLBACK
        feed, tcp, FRAME = self.tftp.feed if tftp else None, self.reasm.tcp, wire.FRAME
        for rec in self.capture.tuples():
            t = rec[0]
            if self.first is None or t < self.first:
                self.first = t
            v = ether_l4(rec[3]) if rec[1] == 1 else FALLBACK
            if v is None:
                continue
            if v is not FALLBACK:
                sport, dport = v[3], v[4]
                mine = sport == PORT or dport == PORT
                bound = udp_bound if v[0] == UDP else tcp_bound
                if (sport in bound and (mine or sport != 69)) or \
                        (dport in bound and (mine or dport != 69)):
                    v = FALLBACK                 # Scapy would read the payload as another layer
            if v is FALLBACK:
                yield from self._scapy(rec, tftp)
                continue
            if v[0] == UDP:
                src, dst = ip_str(v[1]), ip_str(v[2])
                if feed is not None:
                    try:
                        feed(src, sport, dst, dport, v[5], t)
                    except Exception as e:   # noqa: BLE001 - count it, never stop the scan
                        self.tftp._bad(f"frame {self.frames}: {type(e).__name__}")
                if mine and v[5]:
                    yield t, (src, sport), (dst, dport), "udp", FRAME, v[5]
            elif mine:
                src, dst = ip_str(v[1]), ip_str(v[2])
                for kind, b in tcp((src, sport, dst, dport), v[6], v[7], v[5]):
                    yield t, (src, sport), (dst, dport), "tcp", kind, b

    def _scapy(self, rec, tftp: bool = True) -> list:
        """One frame that is not plain Ethernet/IPv4, read as before: with Scapy."""
        from .scapy_cppdp import cppdp_segment, packet_of, tftp_datagram
        self.fallbacks += 1
        t = rec[0]
        pkt = packet_of(Record(*rec))
        try:
            d = tftp_datagram(pkt) if tftp else None
            if d is not None:
                self.tftp.feed(*d, t)
        except Exception as e:      # a frame Scapy half-dissected: count it
            self.tftp._bad(f"frame {self.frames}: {type(e).__name__}")
        seg = cppdp_segment(pkt)
        if seg is None:
            return []
        proto, src, sport, dst, dport, payload, seq, flags = seg
        if proto == "udp":
            return [(t, (src, sport), (dst, dport), "udp", wire.FRAME, payload)]
        return [(t, (src, sport), (dst, dport), "tcp", kind, b)
                for kind, b in self.reasm.tcp((src, sport, dst, dport), seq, flags, payload)]

    def _message(self, t, src, dst, proto, kind, b) -> None:
        """One port-4051 datagram or frame: into the hierarchies, or counted as malformed."""
        if kind == wire.FOREIGN or b[:4] != wire.MAGIC:
            why = "foreign bytes (no CPDP magic)"
        else:
            why = (wire.udp_problem if proto == "udp" else wire.frame_problem)(b)
        if why:
            self.malformed += 1
            if len(self.examples) < MAX_EXAMPLES:
                self.examples.append(f"frame {self.frames} {proto} {src[0]}:{src[1]} -> "
                                     f"{dst[0]}:{dst[1]}: {why}")
            return
        self.messages += 1
        self.sources[src[0]] += 1
        if proto == "udp":
            self.wire.datagram(t, src, dst, b)
        else:
            self.wire.frame(t, src, dst, b)

    def guess(self) -> tuple[str, int | None]:
        kind, k = kind_by_name(self.path)
        if kind:
            return kind, k
        if self.messages:
            nets: Counter = Counter()
            for ip, n in self.sources.items():
                nets[lab_subnet(ip)] += n
            nets.pop(None, None)
            return "subnet", (nets.most_common(1)[0][0] if nets else None)
        if self.tftp.transfers:
            return "wan", None
        return "other", None


#: what :func:`_scapy_ports` finds once Scapy is loaded as this module loads it (the inet and
#: TFTP layers, CPPDP's own): GRE in UDP 4754 and TFTP on 69 (tests/test_decode_fast.py)
SCAPY_PORTS = (frozenset({69, 4754}), frozenset())


def _scapy_ports() -> tuple[frozenset, frozenset]:
    """The UDP and TCP ports on which Scapy reads the payload as some layer of its own
    (CPPDP's 4051 aside): frames on those ports go through Scapy, like the frames that are
    not plain. A binding on anything but ports: every frame does. Scapy is not imported for
    this: loading it reads every network interface, which takes seconds on a machine with a
    lab up; until something else loads it, its bindings are :data:`SCAPY_PORTS`."""
    if "scapy.layers.inet" not in sys.modules:
        return SCAPY_PORTS
    from scapy.layers.inet import TCP, UDP
    from . import scapy_cppdp  # noqa: F401 - CPPDP's own bindings
    from scapy.layers import tftp  # noqa: F401 - as TftpTracker loads it
    out = []
    for layer in (UDP, TCP):
        ports = set()
        for fields, _cls in layer.payload_guess:
            if not set(fields) <= {"sport", "dport"}:
                return _ALL, _ALL
            ports.update(fields.values())
        ports.discard(PORT)
        out.append(frozenset(ports))
    return out[0], out[1]


class _Everything(frozenset):
    def __contains__(self, _):
        return True


_ALL = _Everything()


# ------------------------------------------------------------------------------ hierarchies



class WireHierarchies:
    """What the valid CPPDP messages of one subnet capture say, gathered in one pass (per
    (model, file, map): claims, ROOTs, JOINs, OFFERs, REFUSEs, READYs; and the TCP
    transfers). DATA frames only add to their transfer's byte count: nothing is kept per
    message. :func:`hierarchies_of` turns it into the report's hierarchies."""

    def __init__(self):
        self.groups: dict = {}
        self.transfers: list[dict] = []
        self.open_tr: dict = {}          # (child endpoint, parent endpoint) -> transfer

    def _group(self, key):
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = {"claims": {}, "roots": {}, "offers": [], "joins": [],
                                    "ready": {}, "refused": []}
        return g

    def datagram(self, t: float, src: tuple, dst: tuple, b: bytes) -> None:
        """A valid UDP message (:func:`pfslab.dissect.wire.udp_problem` said None)."""
        p = wire.udp_fields(b)
        typ, xid = p["type"], p["xid"]
        g = self._group((p["model"].decode("ascii", "replace"),
                         p["file"].decode("ascii", "replace"), p["map"]))
        src = src[0]
        if typ == 1:
            c = g["claims"].get(src)
            if c is None:
                c = g["claims"][src] = {"ip": src, "xid": xid, "strength": p["strength"],
                                        "ads": set(), "first": t, "last": t}
            c["ads"].add(p["ad"])
            c["last"] = t
        elif typ == 2:
            r = g["roots"].get(xid)
            if r is None:
                r = g["roots"][xid] = {"ip": src, "first": t, "server": p["server"],
                                       "strength": p["strength"], "count": 0}
            r["count"] += 1
        elif typ == 3:
            g["joins"].append({"phone": src, "xid": xid, "time": t,
                               "lost_parent": p["lost_parent"]})
        elif typ == 4:
            g["offers"].append({"phone": dst[0], "xid": xid, "time": t, "parent": p["parent"],
                                "slot": p["slot"], "depth": p["depth"]})
        elif typ == 5:
            g["refused"].append({"phone": dst[0], "xid": xid, "time": t, "reason": p["reason"]})
        elif typ == 6 and src not in g["ready"]:
            g["ready"][src] = {"phone": src, "xid": xid, "time": t, "size": p["size"],
                               "source": p["source"]}

    def frame(self, t: float, src: tuple, dst: tuple, b: bytes) -> None:
        """A valid frame of a TCP child stream (:func:`pfslab.dissect.wire.frame_problem`)."""
        typ = b[5]
        if typ == 0x11:
            p = wire.frame_fields(b)
            tr = {"child": src[0], "parent": dst[0], "xid": p["xid"],
                  "model": p["model"].decode("ascii", "replace"),
                  "file": p["file"].decode("ascii", "replace"), "request": t, "holds": 0,
                  "size": None, "bytes": 0, "end": None, "abort": None}
            self.transfers.append(tr)
            self.open_tr[(src, dst)] = tr
            return
        tr = self.open_tr.get((dst, src)) or self.open_tr.get((src, dst))
        if tr is None:
            return
        if typ == 0x14:                  # DATA: only its length counts
            tr["bytes"] += len(b) - wire.FRAME_HEADER_LEN
        elif typ == 0x12:
            tr["holds"] += 1
        elif typ == 0x13:
            tr["size"] = wire.frame_fields(b)["size"]
        elif typ == 0x15:
            tr["end"] = t
        elif typ == 0x16:
            who = "parent" if src[0] == tr["parent"] else "child"
            reason = wire.frame_fields(b)["reason"]
            tr["abort"] = f"{wire.ABORT_REASONS.get(reason, reason)} by {who}"


def iter_messages(path):
    """Every port-4051 message of one capture, in capture order, as records like
    :func:`pfslab.dissect.scapy_cppdp.iter_cppdp`'s (``time``, ``src`` and ``dst`` as
    "ip:port", ``proto``, ``decoded``: a :class:`pfslab.dissect.wire.Message` with the
    Scapy layer's field names), read as ``pfslab decode`` reads it. Stop early and the
    rest is not read. NotACapture for a file that is not a capture."""
    for t, src, dst, proto, kind, b in PcapScan(path).walk(tftp=False):
        yield wire.WireRecord(t, f"{src[0]}:{src[1]}", f"{dst[0]}:{dst[1]}", proto,
                              wire.Message(proto, b, kind == wire.FOREIGN))


def hierarchies_of(scan: PcapScan, subnet, rel) -> list[dict]:
    """The PFS hierarchies in one subnet capture (see the module docstring)."""
    groups, transfers = scan.wire.groups, scan.wire.transfers
    READY_SOURCES, REFUSE_REASONS = wire.READY_SOURCES, wire.REFUSE_REASONS
    # Every record goes to exactly one hierarchy, found through a dict: output and work stay
    # linear in the capture, however many roots a hostile capture announces.
    owner: dict = {}                 # (model, file, xid) or (model, file) -> group key
    for key, g in groups.items():
        owner.setdefault(key[:2], key)
        for x in g["roots"]:
            owner.setdefault((*key[:2], x), key)
    group_trs: dict = defaultdict(list)
    for tr in transfers:
        k = owner.get((tr["model"], tr["file"], tr["xid"])) or owner.get((tr["model"], tr["file"]))
        if k is not None:
            group_trs[k].append(tr)
    out = []
    for key, g in groups.items():
        model, file, lmap = key
        xids = sorted(g["roots"], key=lambda x: (g["roots"][x]["first"], x)) or [None]

        def split(items, _roots=g["roots"], _first=xids[0]):
            """Records by hierarchy: their XID's, else (losers' claims, strays) the first."""
            by = defaultdict(list)
            for it in items:
                by[it["xid"] if it["xid"] in _roots else _first].append(it)
            return by
        b_trs, b_offers, b_joins = split(group_trs[key]), split(g["offers"]), split(g["joins"])
        b_refused, b_claims = split(g["refused"]), split(g["claims"].values())
        b_ready = split(g["ready"].values())
        for xid in xids:
            root = g["roots"].get(xid)
            root_ip = root["ip"] if root else None
            trs = b_trs[xid]
            ended = {}
            for tr in trs:
                if tr["end"] is not None:
                    ended[tr["child"]] = tr
            placed: dict = {}
            for o in sorted(b_offers[xid], key=lambda o: o["time"]):
                placed[o["phone"]] = o          # the last OFFER wins (re-joins move a phone)
            tree = []
            for ph, o in placed.items():
                tr = ended.get(ph)
                tree.append({"phone": ph, "parent": o["parent"], "slot": o["slot"],
                             "depth": o["depth"], "offer_s": rel(o["time"]),
                             "confirmed": bool(tr and tr["parent"] == o["parent"])})
            tree.sort(key=lambda e: (e["depth"], _ipkey(e["parent"]), e["slot"]))
            edges = sorted([[tr["parent"], c] for c, tr in ended.items()],
                           key=lambda e: (_ipkey(e[0]), _ipkey(e[1])))
            readies = {r["phone"]: r for r in b_ready[xid]}
            members = set(placed) | set(readies) | set(ended) | ({root_ip} if root_ip else set())
            completion = []
            for ph in members:
                r = readies.get(ph)
                if r is not None:
                    completion.append({"phone": ph, "time_s": rel(r["time"]), "via": "READY",
                                       "source": READY_SOURCES.get(r["source"], r["source"]),
                                       "size": r["size"]})
                elif ph in ended:
                    completion.append({"phone": ph, "time_s": rel(ended[ph]["end"]),
                                       "via": "END", "source": "peer",
                                       "size": ended[ph]["size"]})
                else:
                    completion.append({"phone": ph, "time_s": None, "via": None,
                                       "source": None, "size": None})
            completion.sort(key=lambda c: _ipkey(c["phone"]))
            claims = []
            for c in sorted(b_claims[xid], key=lambda c: (c["first"], _ipkey(c["ip"]))):
                claims.append({"ip": c["ip"], "xid": f"0x{c['xid']:08x}",
                               "strength": f"0x{c['strength']:08x}", "ads": sorted(c["ads"]),
                               "first_s": rel(c["first"]), "last_s": rel(c["last"]),
                               "won": c["ip"] == root_ip})
            times = [c["time_s"] for c in completion if c["time_s"] is not None]
            depth = max([e["depth"] for e in tree], default=0)
            out.append({
                "subnet": subnet, "model": model, "file": file, "map": f"0x{lmap:08x}",
                "xid": None if xid is None else f"0x{xid:08x}", "root": root_ip,
                "edges": edges,
                "tftp_fetchers": sorted({c["phone"] for c in completion
                                         if c["source"] == "TFTP"}, key=_ipkey),
                "election": {
                    "claims": claims, "winner": root_ip,
                    "confirmed_s": rel(root["first"]) if root else None,
                    "strength": f"0x{root['strength']:08x}" if root else None,
                    "server": root["server"] if root else None,
                    "root_broadcasts": root["count"] if root else 0},
                "tree": tree, "depth": depth,
                "rejoins": sorted(({"phone": j["phone"], "lost_parent": j["lost_parent"],
                                    "time_s": rel(j["time"])} for j in b_joins[xid]
                                   if j["lost_parent"] != "0.0.0.0"),
                                  key=lambda j: (j["time_s"], _ipkey(j["phone"]))),
                "refused": sorted(({"phone": r["phone"], "time_s": rel(r["time"]),
                                    "reason": REFUSE_REASONS.get(r["reason"], r["reason"])}
                                   for r in b_refused[xid]),
                                  key=lambda r: (r["time_s"], _ipkey(r["phone"]))),
                "transfers": sorted(({"parent": tr["parent"], "child": tr["child"],
                                      "request_s": rel(tr["request"]), "holds": tr["holds"],
                                      "size": tr["size"], "bytes": tr["bytes"],
                                      "end_s": rel(tr["end"]) if tr["end"] is not None else None,
                                      "abort": tr["abort"]} for tr in trs),
                                    key=lambda r: (r["request_s"], _ipkey(r["child"]))),
                "completion": completion, "phones": len(members),
                "completed_s": max(times) if times else None,
                "pcap": scan.path.name,
            })
    out.sort(key=lambda h: (h["subnet"] if h["subnet"] is not None else -1, h["model"],
                            h["file"], h["map"], h["election"]["confirmed_s"] or 0.0))
    return out


# ------------------------------------------------------------------------------ all pcaps

def decode_paths(paths, syslog: str | None = None, scans: list | None = None) -> dict:
    """Decode a run's pcaps (files or directories). The whole report as plain data; with the
    PFS log server's file (``syslog``, or pfs-syslog.log in a directory given) its
    ``log_server`` part says what the phones reported there, checked against the wire.
    ``scans``: a list that gets each pcap's :class:`PcapScan` (for their counts)."""
    found_scans = [PcapScan(p) for p in expand_paths(paths)]   # all checked before any is read
    if scans is not None:
        scans.extend(found_scans)
    if syslog is None:
        found = [pathlib.Path(a) / SYSLOG_FILE for a in paths
                 if (pathlib.Path(a) / SYSLOG_FILE).is_file()]
        syslog = str(found[0]) if found else None
    elif not pathlib.Path(syslog).is_file():
        raise UserError(f"--syslog {syslog}: no such file (the run's pfs-syslog.log)")
    report = decode_scans([s.run() for s in found_scans])
    if syslog is not None:
        report["log_server"] = {"file": pathlib.Path(syslog).name, **log_server_summary(
            parse_log(syslog), report["hierarchies"])}
    return report


def decode_scans(scans: list[PcapScan]) -> dict:
    """The report of captures already scanned (:meth:`PcapScan.run`)."""
    firsts = [s.first for s in scans if s.first is not None]
    t0 = min(firsts) if firsts else 0.0

    def rel(t):
        return round(t - t0, 6)

    pcaps, hier, tftp = [], [], []
    for s in scans:
        kind, k = s.guess()
        malformed = s.malformed + s.tftp.malformed + s.truncated
        ex = s.examples + s.tftp.examples
        if s.truncated:
            ex = [f"frame {s.frames}: the pcap ends inside this record"] + ex
        pcaps.append({"pcap": s.path.name, "kind": kind, "subnet": k, "frames": s.frames,
                      "truncated": s.truncated,
                      "cppdp_messages": s.messages + s.malformed,
                      "tftp_transfers": len(s.tftp.transfers), "malformed": malformed,
                      "malformed_examples": ex[:MAX_EXAMPLES],
                      "error": s.error})
        if kind == "subnet":
            hier += hierarchies_of(s, k, rel)
        elif kind == "wan":
            tftp += s.tftp.transfers
    pcaps.sort(key=lambda p: ({"subnet": 1, "wan": 0}.get(p["kind"], 2),
                              p["subnet"] or 0, p["pcap"]))
    hier.sort(key=lambda h: (h["subnet"] if h["subnet"] is not None else -1, h["model"],
                             h["file"], h["map"], h["election"]["confirmed_s"] or 0.0))
    summary = tftp_summary(tftp, rel)
    return {"pcaps": pcaps, "malformed": sum(p["malformed"] for p in pcaps),
            "errors": sum(1 for p in pcaps if p["error"]),
            "hierarchies": hier, "phones": phone_summary(hier, summary), "tftp": summary}


def phone_summary(hier: list[dict], tftp: dict) -> list[dict]:
    """Per phone: how many files it got from a peer (subnet pcaps) and by TFTP (complete WAN
    transfers, configuration files included), and when the last one completed (a READY or
    END in its subnet, or the final ACK of a WAN transfer)."""
    ph: dict = {}
    for h in hier:
        for c in h["completion"]:
            d = ph.setdefault(c["phone"], {"ip": c["phone"], "subnet": h["subnet"],
                                           "models": set(), "peer_files": 0, "tftp_files": 0,
                                           "done_s": None})
            d["models"].add(h["model"])
            if c["time_s"] is None:
                continue
            d["peer_files"] += c["source"] == "peer"
            d["done_s"] = max(d["done_s"] or 0.0, c["time_s"])
    for tr in tftp["transfers_list"]:
        d = ph.setdefault(tr["client"], {"ip": tr["client"], "subnet": lab_subnet(tr["client"]),
                                         "models": set(), "peer_files": 0, "tftp_files": 0,
                                         "done_s": None})
        if tr["complete"]:
            d["tftp_files"] += 1
            d["done_s"] = max(d["done_s"] or 0.0, tr["end_s"])
    for d in ph.values():
        d["models"] = sorted(d["models"])
    return [ph[k] for k in sorted(ph, key=_ipkey)]


# ------------------------------------------------------------------------------ lab use

def lab_hierarchies(report: dict) -> list[dict]:
    """results.json's ``hierarchies``: one per root seen on the wire."""
    out = []
    for h in report["hierarchies"]:
        out.append({"subnet": h["subnet"], "model": h["model"], "file": h["file"],
                    "root": h["root"], "edges": h["edges"], "tftp_fetchers": h["tftp_fetchers"],
                    "xid": h["xid"], "confirmed_s": h["election"]["confirmed_s"],
                    "claimants": len(h["election"]["claims"]), "depth": h["depth"],
                    "phones": h["phones"], "completed_s": h["completed_s"],
                    "rejoins": len(h["rejoins"]),
                    "aborted_transfers": sum(1 for t in h["transfers"] if t["abort"]
                                             or t["end_s"] is None)})
    return out


def compare_hierarchies(wire: list[dict], agent: list[dict]) -> list[str]:
    """Where the wire and the agents' own account disagree on a root or an edge."""
    diffs = []

    def idx(hs):
        d = defaultdict(lambda: (set(), set()))
        for h in hs:
            roots, edges = d[(h["subnet"], h["model"], h["file"])]
            if h.get("root"):
                roots.add(h["root"])
            edges |= {tuple(e) for e in h.get("edges", [])}
        return d

    w, a = idx(wire), idx(agent)
    for key in sorted(set(w) | set(a), key=str):
        (wr, we), (ar, ae) = w.get(key, (set(), set())), a.get(key, (set(), set()))
        if not (ar <= wr):
            diffs.append(f"{key}: root on the wire {sorted(wr)}, agents {sorted(ar)}")
        if we != ae:
            diffs.append(f"{key}: edges only on the wire {sorted(we - ae)}, "
                         f"only in agents {sorted(ae - we)}")
    return diffs


def compare_tftp(report: dict, log_requests: list[dict]) -> dict:
    """RRQs in wan.pcap against in.tftpd's log (client, file), as multisets."""
    wire = Counter()
    for tr in report["tftp"]["transfers_list"]:
        if tr["op"] == "RRQ":
            wire[(tr["client"], tr["file"])] += tr["requests"]
    log = Counter((r.get("client"), r.get("file")) for r in log_requests
                  if r.get("event") == "RRQ")
    return {"wire_requests": sum(wire.values()), "log_requests": sum(log.values()),
            "only_on_wire": sorted(f"{c} {f}" for c, f in (wire - log).elements()),
            "only_in_log": sorted(f"{c} {f}" for c, f in (log - wire).elements())}


# ------------------------------------------------------------------------------ text

def _t(x) -> str:
    return "-" if x is None else f"{x:.3f}s"


def shown(x) -> str:
    """A name from a capture, safe to print: control characters as escapes. (The console
    below has rich markup and emoji codes off, so ``[/]`` or ``:x:`` print as they are.)"""
    s = "" if x is None else str(x)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in s)


def hierarchy_trees(report: dict) -> list:
    """One rich Tree per hierarchy: root (TFTP) and children, each with its completion."""
    from rich.tree import Tree
    trees = []
    for h in report["hierarchies"]:
        comp = {c["phone"]: c for c in h["completion"]}
        trs = {}
        for tr in h["transfers"]:
            trs[tr["child"]] = tr
        el = h["election"]

        def label(ip, extra=""):
            c = comp.get(ip)
            done = f" done {_t(c['time_s'])} ({c['via']}, {c['source']})" \
                if c and c["time_s"] is not None else " not done"
            return shown(f"{ip}{extra}{done}")

        head = (f"subnet {h['subnet']} {shown(h['model'])} {shown(h['file'])}"
                f" XID{(h['xid'] or '0x-')[2:].upper()}\n"
                f"election: {len(el['claims'])} claimant(s), ")
        if h["root"]:
            head += (f"root {shown(h['root'])} confirmed {_t(el['confirmed_s'])}, "
                     f"TFTP from {shown(el['server'])}")
        else:
            head += "no ROOT seen"
        top = Tree(head)
        kids = defaultdict(list)
        for e in h["tree"]:
            kids[e["parent"]].append(e)
        if h["root"]:
            node = top.add(label(h["root"], " [root]"))
            stack, seen = [(node, h["root"])], {h["root"]}
            while stack:
                n, ip = stack.pop(0)
                for e in sorted(kids.get(ip, []), key=lambda e: e["slot"]):
                    tr = trs.get(e["phone"])
                    how = "" if tr is None else (
                        f", {tr['bytes']:,} B, " + ("END" if tr["end_s"] is not None else
                                                   (f"ABORT {tr['abort']}" if tr["abort"]
                                                    else "no END")))
                    mark = "" if e["confirmed"] else " (unconfirmed)"
                    c = n.add(label(e["phone"], f" [slot {e['slot']}{how}{mark}]"))
                    if e["phone"] not in seen:
                        seen.add(e["phone"])
                        stack.append((c, e["phone"]))
        for j in h["rejoins"]:
            top.add(shown(f"re-join {j['phone']} at {_t(j['time_s'])}: "
                          f"lost parent {j['lost_parent']}"))
        trees.append(top)
    return trees


def tables(report: dict) -> list:
    """rich Tables: pcaps, hierarchies, TFTP per file and per client."""
    from rich.table import Table
    out = []
    t = Table(title="Captures", title_justify="left")
    for col in ("pcap", "kind", "frames", "CPPDP msgs", "TFTP transfers", "malformed", "error"):
        t.add_column(col, justify="left" if col in ("pcap", "kind", "error") else "right")
    for p in report["pcaps"]:
        kind = p["kind"] + (f" {p['subnet']}" if p["subnet"] is not None else "")
        t.add_row(shown(p["pcap"]), kind, f"{p['frames']:,}", f"{p['cppdp_messages']:,}",
                  str(p["tftp_transfers"]), str(p["malformed"]), shown(p["error"]))
    out.append(t)
    if report["hierarchies"]:
        t = Table(title="PFS hierarchies (from the subnet pcaps)", title_justify="left")
        for col in ("subnet", "model", "file", "root", "claims", "confirmed", "phones",
                    "depth", "peer bytes", "done", "re-joins"):
            t.add_column(col, justify="left" if col in ("model", "file", "root") else "right",
                         no_wrap=col != "file")
        for h in report["hierarchies"]:
            t.add_row(str(h["subnet"]), shown(h["model"]), shown(h["file"]),
                      shown(h["root"] or "-"),
                      str(len(h["election"]["claims"])), _t(h["election"]["confirmed_s"]),
                      str(h["phones"]), str(h["depth"]),
                      f"{sum(tr['bytes'] for tr in h['transfers']):,}", _t(h["completed_s"]),
                      str(len(h["rejoins"])))
        out.append(t)
    tf = report["tftp"]
    if tf["transfers"]:
        t = Table(title=f"TFTP across the WAN, per file: {tf['requests']} requests, "
                        f"{tf['data_bytes']:,} DATA bytes", title_justify="left")
        for col in ("file", "requests", "clients", "complete", "DATA bytes", "file size"):
            t.add_column(col, justify="left" if col == "file" else "right")
        for f in tf["by_file"]:
            t.add_row(shown(f["file"]), str(f["requests"]), str(len(f["clients"])),
                      str(f["complete"]), f"{f['data_bytes']:,}",
                      "-" if f["file_bytes"] is None else f"{f['file_bytes']:,}")
        out.append(t)
        t = Table(title="TFTP across the WAN, per client", title_justify="left")
        for col in ("client", "requests", "files", "complete", "DATA bytes", "last done"):
            t.add_column(col, justify="left" if col == "client" else "right")
        for c in tf["by_client"]:
            t.add_row(shown(c["client"]), str(c["requests"]), str(len(c["files"])),
                      str(c["complete"]), f"{c['data_bytes']:,}", _t(c["last_s"]))
        out.append(t)
    return out


def render(report: dict, what: str = "all", width: int | None = None) -> str:
    """The report as text: ``tree``, ``table`` or ``all`` (trees, then tables)."""
    from rich.console import Console
    import io
    con = Console(width=width or 120, record=True, file=io.StringIO(), color_system=None,
                  highlight=False, markup=False, emoji=False)
    if what in ("all", "tree"):
        for tr in hierarchy_trees(report):
            con.print(tr)
        if not report["hierarchies"]:
            con.print("no PFS hierarchy on the wire (no port-4051 election in the subnet pcaps)")
    if what in ("all", "table"):
        for t in tables(report):
            con.print(t)
    ls = report.get("log_server")
    if ls is not None and what in ("all", "table"):
        con.print(shown(
            f"PFS log server ({ls['file']}): {ls['lines']:,} lines from {ls['phones']} phones; "
            f"{ls['roots_announced']} roots announced (@@@HROOT), "
            f"{len(ls['roots_not_on_wire'])} not on the wire, "
            f"{len(ls['wire_roots_not_announced'])} on the wire but not announced"))
        for r in (ls["roots_not_on_wire"] + ls["wire_roots_not_announced"])[:MAX_EXAMPLES]:
            con.print(shown(f"  {r['ip']} {r['model']} {r['file']}"))
    if report["malformed"] or report["errors"]:
        for p in report["pcaps"]:
            if p["malformed"] or p["error"]:
                con.print(shown(f"{p['pcap']}: {p['malformed']} malformed"
                                + (f", unreadable past frame {p['frames']}: {p['error']}"
                                   if p["error"] else "")))
                for ex in p["malformed_examples"]:
                    con.print(f"  {shown(ex)}")
    return con.export_text()


def run(args) -> int:
    report = decode_paths(args.pcaps, args.syslog)
    if args.json:
        print(json.dumps(report, indent=1, sort_keys=False))
    else:
        import shutil
        width = args.width or shutil.get_terminal_size((120, 24)).columns
        print(render(report, "tree" if args.tree else "table" if args.table else "all",
                     width), end="")
    return 1 if report["errors"] else 0
