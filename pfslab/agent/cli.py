"""`pfslab phone`: run phone agents.

  pfslab phone many SPEC.json [--results OUT.json]   many phones in one process (the lab's way)
  pfslab phone one --name p1 --ip 10.1.1.11 ...      one phone in this namespace, e.g. from the
                                                     Mininet CLI:  mininet> p1 pfslab phone one ...

Progress goes to stdout as JSON lines (one event per line); logs go to --log-dir.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import json
import os
import signal
import sys

from ..errors import UserError
from ..firmware import FIXTURE_TRUST, FirmwareError, Trust
from ..protocol.phone import Timers
from ..settings import BLKSIZE
from . import shards
from .driver import Agent, AgentPhone, Fault

_FIELDS = ("name", "ip", "mac", "model", "broadcast")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="how", metavar="many|one", required=True)
    m = sub.add_parser("many", help="many phones in one process, from a spec file",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example: pfslab phone many pcaps/RUN/pfs/agent-spec.json")
    m.add_argument("spec", help="JSON: {server, seed, log_dir, timeout_s, phones: [...]}")
    m.add_argument("--results", help="write the per-phone results here (JSON; default: none)")
    m.add_argument("--procs", type=int, default=None, metavar="K",
                   help="agent processes (default: the spec's agent_procs, else one per core "
                        "for 100+ phones)")
    m.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    o = sub.add_parser("one", help="one phone in the current network namespace",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example: mininet> p1 pfslab phone one --name p1-1 --ip 10.1.1.10 "
                              "--mac 02:50:46:01:00:00 --model CP-7961G --broadcast 10.1.1.255 "
                              "--server 10.0.0.10")
    for f in _FIELDS:
        o.add_argument(f"--{f}", required=True)
    o.add_argument("--subnet", type=int, default=0, help="its subnet number (default: 0)")
    o.add_argument("--server", required=True, help="the HQ TFTP server's address")
    o.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    o.add_argument("--log-dir", default=".", help="its log goes here (default: .)")
    o.add_argument("--timeout", type=float, default=900.0,
                   help="give up after S seconds (default: 900.0)", metavar="S")
    o.add_argument("--results", help="write its result here (JSON; default: none)")
    o.add_argument("--trust", metavar="HEX", default=None,
                   help="HQ's public key, 64 hex digits (a lab run's hq-signing-key.pub; "
                        "default: the public test fixture key)")
    for q in (m, o):
        q.add_argument("--blksize", type=int, default=None,
                       help=f"TFTP blksize to ask for (default: the spec's, else {BLKSIZE})")
        q.add_argument("--stagger", type=float, default=None,
                       help="seconds between phone resets (default: the spec's, else 0: all "
                            "at once)")
        q.add_argument("--time-dilation", type=float, default=None, metavar="K",
                       help="run the protocol's clock K times slower than the wall clock "
                            "(times reported stay emulated; default: the spec's, else 1)")


def _spec_phones(raw: dict) -> list[AgentPhone]:
    names = {f.name for f in dataclasses.fields(AgentPhone)}
    try:
        phones = [AgentPhone(**{k: v for k, v in p.items() if k in names})
                  for p in raw["phones"]]
        for ph in phones:
            ipaddress.IPv4Address(ph.ip)
            ipaddress.IPv4Address(ph.broadcast)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"bad agent spec: {e.__class__.__name__}: {e}") from None
    return phones


def _trust(text: str | None, where: str) -> Trust:
    """HQ's public key from hex, or the public test fixture key when none is given."""
    if text is None:
        return FIXTURE_TRUST
    try:
        return Trust.from_hex(text)
    except FirmwareError as e:
        raise UserError(f"{where}: {e}") from None


def run(args) -> int:
    if args.how == "many":
        try:
            with open(args.spec) as f:
                raw = json.load(f)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read agent spec {args.spec}: {e}") from None
        phones = _spec_phones(raw)
        server = raw.get("server")
        seed, log_dir = raw.get("seed", 1), raw.get("log_dir")
        timeout = float(raw.get("timeout_s", 900))
        blksize = args.blksize or raw.get("blksize", BLKSIZE)
        stagger = args.stagger if args.stagger is not None else raw.get("stagger", 0.0)
        timers = Timers(**raw["timers"]) if raw.get("timers") else None
        try:
            faults = [Fault(**f) for f in raw.get("faults", [])]
        except TypeError as e:
            raise UserError(f"bad fault in agent spec: {e}") from None
        dilation = args.time_dilation or raw.get("time_dilation") or 1.0
        shard = raw.get("shard") or [0, 1]
        trust = _trust(raw.get("trust"), "the agent spec's 'trust'")
    else:
        phones = [AgentPhone(**{f: getattr(args, f) for f in _FIELDS}, subnet=args.subnet)]
        server, seed, log_dir, timeout = args.server, args.seed, args.log_dir, args.timeout
        blksize, stagger, timers, faults = args.blksize or BLKSIZE, 0.0, None, []
        dilation, shard = args.time_dilation or 1.0, [0, 1]
        trust = _trust(args.trust, "--trust")
    if not server:
        raise UserError("no TFTP server address (spec field 'server' or --server)")
    if not (isinstance(dilation, (int, float)) and 1 <= dilation <= 1000):
        raise UserError(f"time dilation {dilation!r}: want a number from 1 to 1000")
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)

    def emit(ev: dict) -> None:
        sys.stdout.write(json.dumps(ev) + "\n")
        sys.stdout.flush()

    if args.how == "many" and not args.worker:
        procs = args.procs or raw.get("agent_procs") or shards.auto_procs(len(phones))
        if procs < 1:
            raise UserError(f"--procs {procs}: want at least 1")
        if procs > 1:
            extra = [a for flag, v in (("--blksize", args.blksize), ("--stagger", args.stagger))
                     if v is not None for a in (flag, str(v))]
            results = shards.run_sharded(raw, args.spec, args.results, min(procs, len(phones)),
                                         emit, extra, dilation=dilation)
            return _finish(args, results, emit)

    _prefer_cpu()
    agent = Agent(phones, server, seed=seed, log_dir=log_dir, timers=timers, blksize=blksize,
                  stagger=stagger, faults=faults, emit=emit, time_dilation=dilation,
                  reset_slot=tuple(shard), trust=trust)
    control = _Control() if args.how == "many" and args.worker else None

    async def main():
        task = asyncio.ensure_future(agent.run(
            timeout, start=control.start if control else None,
            hold=control.hold if control else None))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            return [r.result() for r in agent.runners]

    prof_path = os.environ.get("PFSLAB_AGENT_PROFILE")   # a cProfile dump, for tuning
    if prof_path and args.how == "many" and args.worker:
        prof_path += f".{shard[0]}"
    if prof_path:
        import cProfile
        prof = cProfile.Profile()
        results = prof.runcall(asyncio.run, main())
        prof.dump_stats(prof_path)
    else:
        results = asyncio.run(main())
    return _finish(args, results, emit)


def _finish(args, results: list[dict], emit) -> int:
    if args.results:
        with open(args.results, "w") as f:
            json.dump(results, f, indent=1)
    emit({"event": "finished", "completed": sum(r["completed"] for r in results),
          "phones": len(results)})
    return 0 if all(r["completed"] for r in results) else 1


#: Niceness the phones' event loops ask for: on a busy machine the scheduler then runs them
#: before batch work, so their timers fire on time. They use little CPU (a few seconds per
#: run at 1000 phones); what they need is to run when a timer is due.
AGENT_NICE = -10


def _prefer_cpu() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, 0, AGENT_NICE)
    except OSError:
        pass                                    # not root: the default priority


class _Control:
    """A worker's side of the supervisor's stdin protocol (pfslab.agent.shards)."""

    def __init__(self):
        self.reader: asyncio.StreamReader | None = None

    async def _line(self) -> bytes:
        if self.reader is None:
            loop = asyncio.get_running_loop()
            self.reader = asyncio.StreamReader()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(self.reader),
                                         sys.stdin)
        return await self.reader.readline()

    async def start(self) -> float:
        sys.stdout.write(json.dumps({"event": "ready"}) + "\n")
        sys.stdout.flush()
        words = (await self._line()).split()
        if len(words) != 2 or words[0] != b"go":
            raise asyncio.CancelledError        # the supervisor went away
        return float(words[1])

    async def hold(self) -> None:
        await self._line()                      # "stop", or EOF: the supervisor is gone
