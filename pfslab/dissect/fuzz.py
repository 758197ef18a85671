"""`make fuzz`: hostile bytes against the four CPPDP decoders, with counts per decoder.

    python -m pfslab.dissect.fuzz [--cases 100000] [--seed 1] [--only codec,scapy,lua,decode]

Each decoder gets ``--cases`` port-4051 payloads, half UDP datagrams and half TCP frames:
mutated valid messages (truncated, bit-flipped, overwritten, grown, shrunk, a new length
field), random bytes, and random bytes after the magic. The four decoders:

- ``codec``: the agent codec (``decode``, ``decode_frame``, ``FrameReader``); a clean
  rejection is :class:`~pfslab.protocol.codec.DecodeError`;
- ``scapy``: the Scapy layers; a clean rejection is ``Raw`` or ``malformed()``. Their verdict
  must be the codec's, and dissection must keep every byte;
- ``lua``: cppdp.lua under tshark, on pcaps of the same cases; a clean rejection is the expert
  info ``cppdp.malformed`` or leaving the bytes to another dissector. A crash is
  ``cppdp.internal_error``, a Lua error on stderr, or tshark failing;
- ``decode``: ``pfslab decode`` (decode_paths and the text report) on those pcaps, plus
  pcaps whose own bytes are mutated; a clean rejection is a message counted as malformed, a
  record it cannot read, or a file refused as not a capture (one line, exit 2).

Prints one row per decoder (cases, decoded, rejected cleanly, crashes, and disagreements
with the codec where there is a verdict to compare) and exits 1 if any decoder crashed or
disagreed. The CI suite's fuzz tests (tests/test_fuzz_decoders.py) are the small, fast
version of this.
"""
from __future__ import annotations

import argparse
import pathlib
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field

from ..protocol import codec
from .pcapfile import NotACapture, write_pcap

DECODERS = ("codec", "scapy", "lua", "decode")
LUA = pathlib.Path(__file__).with_name("cppdp.lua")
CHUNK = 5000            # packets per pcap given to tshark and to pfslab decode


def seeds() -> tuple[list[bytes], list[bytes]]:
    """Valid datagrams and frames of every type, from the codec: what mutations start from."""
    M = dict(xid=0x080027F8, strength=0x31D4D43D, map=0xFF9D7CB9, model="CP-7961G")
    F = "SCCP41.9-4-2SR3-1S.loads"
    T = codec.MsgType
    udp = [codec.encode(codec.Message(t, file=F, **M, **kw)) for t, kw in (
        (T.CLAIM, {"ad": 0}), (T.CLAIM, {"ad": 3}), (T.ROOT, {"server": "10.0.0.10"}),
        (T.JOIN, {"lost_parent": "10.1.1.12"}),
        (T.OFFER, {"parent": "10.1.1.11", "slot": 1, "depth": 2}),
        (T.REFUSE, {"reason": 1}), (T.READY, {"source": 1, "size": 562693}))]
    FT = codec.FrameType
    tcp = [codec.encode_frame(f) for f in (
        codec.Frame(FT.REQUEST, xid=M["xid"], model="CP-7941G", file="cnu41.9-4-2ES26.sbn"),
        codec.Frame(FT.HOLD, have=65536, total=556833),
        codec.Frame(FT.HEADER, size=11, sha256=bytes(range(32))),
        codec.Frame(FT.DATA, data=b"hello world"), codec.Frame(FT.END),
        codec.Frame(FT.ABORT, reason=3, text="upstream lost"))]
    return udp, tcp


def mutate(raw: bytes, rnd: random.Random) -> bytes:
    """One to three random edits: truncate, flip, overwrite, insert, delete, or a new value
    for the length field."""
    b = bytearray(raw)
    for _ in range(rnd.randint(1, 3)):
        op = rnd.randrange(6)
        i = rnd.randrange(len(b) + 1)
        if op == 0:
            del b[i:]
        elif op == 1 and b:
            b[min(i, len(b) - 1)] ^= 1 << rnd.randrange(8)
        elif op == 2 and b:
            b[min(i, len(b) - 1)] = rnd.randrange(256)
        elif op == 3:
            b[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 8)))
        elif op == 4:
            del b[i:i + rnd.randint(1, 8)]
        elif op == 5 and len(b) >= 10:
            if raw[5] < 0x10:   # UDP: 16-bit length at 6
                b[6:8] = rnd.randrange(1 << 16).to_bytes(2, "big")
            else:               # TCP: 32-bit payload length at 6
                b[6:10] = rnd.choice([rnd.randrange(1 << 32), rnd.randrange(80)]).to_bytes(
                    4, "big")
    return bytes(b)


def cases(n: int, seed: int) -> list[tuple[str, bytes]]:
    """n hostile payloads, ("udp" | "tcp", bytes), none empty."""
    rnd = random.Random(seed)
    udp, tcp = seeds()
    out = []
    while len(out) < n:
        proto = "udp" if len(out) % 2 == 0 else "tcp"
        kind = rnd.random()
        if kind < 0.6:
            b = mutate(rnd.choice(udp if proto == "udp" else tcp), rnd)
        elif kind < 0.8:
            b = rnd.randbytes(rnd.randrange(1, 120))
        else:
            b = codec.MAGIC + bytes([1]) + rnd.randbytes(rnd.randrange(0, 100))
        if b:
            out.append((proto, b))
    return out


def codec_ok(proto: str, b: bytes) -> bool:
    """The codec's verdict (DecodeError: False); anything else propagates."""
    try:
        (codec.decode if proto == "udp" else codec.decode_frame)(b)
        return True
    except codec.DecodeError:
        return False


@dataclass
class Tally:
    cases: int = 0
    decoded: int = 0
    rejected: int = 0
    crashes: int = 0
    disagree: int = 0
    examples: list = field(default_factory=list)
    seconds: float = 0.0

    def crash(self, what: str) -> None:
        self.crashes += 1
        if len(self.examples) < 3:
            self.examples.append(what)

    def count(self, decoded: bool) -> None:
        """One case that did not crash: decoded whole, or rejected cleanly."""
        if decoded:
            self.decoded += 1
        else:
            self.rejected += 1

    def differ(self, what: str) -> None:
        self.disagree += 1
        if len(self.examples) < 3:
            self.examples.append(what)


# ------------------------------------------------------------------------------ decoders

def fuzz_codec(cs, tally: Tally) -> None:
    for proto, b in cs:
        tally.cases += 1
        try:
            ok = codec_ok(proto, b)
            if proto == "tcp":
                codec.frame_length(b)
                r = codec.FrameReader()
                for i in range(0, len(b), 7):
                    r.feed(b[i:i + 7])
        except codec.DecodeError:
            ok = False
        except Exception as e:
            tally.crash(f"{proto} {b.hex()}: {type(e).__name__}: {e}")
            continue
        tally.count(ok)


def fuzz_scapy(cs, tally: Tally) -> None:
    from .scapy_cppdp import CPPDP, CPPDPFrame
    for proto, b in cs:
        tally.cases += 1
        cls = CPPDP if proto == "udp" else CPPDPFrame
        try:
            p = cls(b)
            p.summary()
            repr(p)
            lossless = bytes(p) == b
            # one whole valid message; else Raw, malformed(), or frames stacked with more
            ok = isinstance(p, cls) and p.malformed() is None and \
                (proto == "udp" or not p.payload)
        except Exception as e:
            tally.crash(f"{proto} {b.hex()}: {type(e).__name__}: {e}")
            continue
        tally.count(ok)
        if not lossless or ok != codec_ok(proto, b):
            tally.differ(f"{proto} {b.hex()}: scapy {'ok' if ok else 'rejects'}, "
                         f"lossless={lossless}")


def _pcaps(cs, work: pathlib.Path) -> list[tuple[pathlib.Path, list]]:
    """The cases as pcaps of CHUNK packets: each TCP case alone in its own connection."""
    out = []
    for k in range(0, len(cs), CHUNK):
        chunk = cs[k:k + CHUNK]
        path = work / f"cases-{k // CHUNK:04d}.pcap"
        write_pcap(path, (_frame(i, proto, b) for i, (proto, b) in enumerate(chunk)))
        out.append((path, chunk))
    return out


def _csum(b: bytes) -> int:
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s & 0xFFFF) + (s >> 16)
    return ~((s & 0xFFFF) + (s >> 16)) & 0xFFFF


def _src(i: int) -> str:
    """Case i's source address (unique within a pcap of CHUNK cases)."""
    return f"10.1.{1 + (i // 250) % 200}.{1 + i % 250}"


def _frame(i: int, proto: str, payload: bytes) -> tuple[float, bytes]:
    """(time, Ethernet frame) carrying ``payload`` on 4051, from case i's own address."""
    src = bytes(int(x) for x in _src(i).split("."))
    if proto == "udp":
        dst = bytes([10, 1, 1, 255])
        l4 = struct.pack("!HHHH", 4051, 4051, 8 + len(payload), 0) + payload
        pnum = 17
    else:
        dst = bytes([10, 1, 250, 1])
        # the child's port above 4051: Wireshark tries the lower port's dissector first
        l4 = struct.pack("!HHIIBBHHH", 4051, 4052 + i % 60000, 1, 1, 5 << 4, 0x19, 65535,
                         0, 0) + payload                          # PSH+ACK+FIN
        pnum = 6
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), i & 0xFFFF, 0x4000, 64, pnum, 0,
                     src, dst)
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    eth = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
    return 1_700_000_000 + i * 0.001, eth + ip + l4


def fuzz_lua(cs, tally: Tally, work: pathlib.Path) -> None:
    tshark = shutil.which("tshark")
    if tshark is None:
        raise SystemExit("fuzz: tshark is not installed (Debian package tshark)")
    for path, chunk in _pcaps(cs, work):
        tally.cases += len(chunk)
        p = subprocess.run([tshark, "-n", "-X", f"lua_script:{LUA}", "-r", str(path),
                            "-T", "fields", "-E", "occurrence=a", "-e", "frame.number",
                            "-e", "cppdp", "-e", "cppdp.malformed", "-e",
                            "cppdp.internal_error", "-e", "_ws.col.Info"],
                           capture_output=True, encoding="utf-8", errors="replace",
                           timeout=1800)
        lua_err = [ln for ln in p.stderr.splitlines()
                   if re.search(r"lua|error|attempt to|traceback", ln, re.I)]
        # other dissectors' Info columns may hold any character but "\n"
        rows = [ln.split("\t", 4) for ln in p.stdout.split("\n") if ln]
        if p.returncode != 0 or lua_err or len(rows) != len(chunk):
            for _ in chunk:
                tally.crashes += 1
            tally.examples.append(f"{path.name}: tshark exit {p.returncode}, {len(rows)} rows"
                                  f" of {len(chunk)}; {(lua_err or [''])[0][:200]}")
            continue
        for (num, proto_col, malformed, internal, info), (proto, b) in zip(rows, chunk):
            if internal:
                tally.crash(f"{proto} {b.hex()}: cppdp.internal_error: {info[:120]}")
                continue
            ok = bool(proto_col) and not malformed
            tally.count(ok)
            whole = proto == "udp" and b[:4] == codec.MAGIC or (
                proto == "tcp" and len(b) >= 10 and b[:4] == codec.MAGIC
                and 10 + int.from_bytes(b[6:10], "big") == len(b))
            if whole and ok != codec_ok(proto, b):
                tally.differ(f"{proto} {b.hex()}: lua {'ok' if ok else 'rejects'}")


def fuzz_decode(cs, tally: Tally, work: pathlib.Path, seed: int) -> None:
    """A case counts as decoded when pfslab decode kept a valid message from its address."""
    from . import decode
    rnd = random.Random(seed)
    for path, chunk in _pcaps(cs, work):
        tally.cases += len(chunk)
        try:
            scan = decode.PcapScan(path).run()
            decode.render(decode.decode_scans([scan]))
        except Exception:
            tally.crash(f"{path.name}: {traceback.format_exc(limit=-1).strip()[-300:]}")
            continue
        valid = set(scan.sources)
        ok = sum(1 for i in range(len(chunk)) if _src(i) in valid)
        tally.decoded += ok
        tally.rejected += len(chunk) - ok
        # the file itself mutated: a hostile capture, not only hostile packets
        raw = path.read_bytes()[:8192]      # the pcap header and its first records
        for j in range(20):
            bad = work / f"mutated-{j}.pcap"
            cut = rnd.randrange(len(raw)) if j % 2 else len(raw)
            b = bytearray(raw[:cut])
            for _ in range(rnd.randint(1, 8)):
                if b:
                    b[rnd.randrange(len(b))] = rnd.randrange(256)
            bad.write_bytes(bytes(b))
            tally.cases += 1
            try:
                rep = decode.decode_paths([bad])
                decode.render(rep)
                tally.rejected += 1 if rep["errors"] or rep["malformed"] else 0
                tally.decoded += 0 if rep["errors"] or rep["malformed"] else 1
            except NotACapture:
                tally.rejected += 1
            except Exception:
                tally.crash(f"mutated pcap: {traceback.format_exc(limit=-1).strip()[-300:]}")


# ------------------------------------------------------------------------------ main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pfslab.dissect.fuzz",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100_000, help="cases per decoder")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", default=",".join(DECODERS),
                    help="comma-separated decoders (default: all four)")
    a = ap.parse_args(argv)
    only = [d.strip() for d in a.only.split(",") if d.strip()]
    bad = [d for d in only if d not in DECODERS]
    if bad or not only or a.cases < 1:
        print(f"fuzz: --only takes {','.join(DECODERS)} and --cases a positive number",
              file=sys.stderr)
        return 2
    cs = cases(a.cases, a.seed)
    tallies = {}
    with tempfile.TemporaryDirectory(prefix="pfslab-fuzz-") as tmp:
        work = pathlib.Path(tmp)
        for d in only:
            t = tallies[d] = Tally()
            t0 = time.perf_counter()
            if d == "codec":
                fuzz_codec(cs, t)
            elif d == "scapy":
                fuzz_scapy(cs, t)
            elif d == "lua":
                fuzz_lua(cs, t, work)
            else:
                fuzz_decode(cs, t, work, a.seed)
            t.seconds = time.perf_counter() - t0
            print(f"fuzz: {d}: {t.cases:,} cases in {t.seconds:.1f} s", file=sys.stderr,
                  flush=True)
    print(f"{'decoder':<8} {'cases':>9} {'decoded':>9} {'rejected cleanly':>17} "
          f"{'crashes':>8} {'disagree':>9}")
    for d, t in tallies.items():
        print(f"{d:<8} {t.cases:>9,} {t.decoded:>9,} {t.rejected:>17,} {t.crashes:>8,} "
              f"{t.disagree:>9,}")
    failed = False
    for d, t in tallies.items():
        for ex in t.examples:
            print(f"  {d}: {ex}")
        failed |= bool(t.crashes or t.disagree)
    print("fuzz: " + ("FAILED: a decoder crashed or disagreed with the codec" if failed
                      else f"no crash (seed {a.seed})"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
