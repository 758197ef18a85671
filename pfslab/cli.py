"""`pfslab` command line. Each subcommand lives in its own module, imported only when used
(so `pfslab decode` never loads Mininet and `pfslab phone` never loads Scapy)."""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import UserError

#: subcommand -> (module, one-line help, one-line example). The module has add_arguments(p)
#: and run(args) -> int.
COMMANDS = {
    "lab": ("pfslab.lab.run", "build the lab, run PFS and/or traditional upgrades, capture "
            "(`sudo make lab` runs it with the defaults below)",
            "sudo .venv/bin/pfslab lab --subnets 1 --phones-per-subnet 4 --mode pfs"),
    "clean": ("pfslab.lab.clean", "remove what a crashed lab run left behind (its own only)",
              "sudo .venv/bin/pfslab clean --dry-run"),
    "phone": ("pfslab.agent.cli", "run phone agents (one phone in its namespace, or many)",
              "mininet> p1 pfslab phone one --name p1-1 --ip 10.1.1.10 --mac 02:50:46:01:00:00 "
              "--model CP-7961G --broadcast 10.1.1.255 --server 10.0.0.10"),
    "decode": ("pfslab.dissect.decode", "rebuild elections, trees and TFTP use from pcaps",
               ".venv/bin/pfslab decode pcaps/samples/pfs"),
    "sim": ("pfslab.sim.run", "the same phones in memory, for sites too big for a lab",
            ".venv/bin/pfslab sim --subnets 4 --phones-per-subnet 200 --wan-bw 384kbit"),
    "scenario": ("pfslab.scenario", "validate scenario files (TOML; run them with "
                 "`pfslab lab/sim --scenario FILE`)",
                 ".venv/bin/pfslab scenario check scenarios/*.toml"),
    "doctor": ("pfslab.doctor", "check this machine for what the lab needs, and say how to "
               "fix what is missing", ".venv/bin/pfslab doctor --phones 1000"),
    "report": ("pfslab.view.report_html", "write report.html for a run folder (a lab run, or "
               "a bench folder)", ".venv/bin/pfslab report pcaps/<run-id>"),
}


def command_parser(sub, name: str, load: bool) -> argparse.ArgumentParser:
    """Subcommand ``name``'s parser (its module's options only if ``load``)."""
    modname, helptext, example = COMMANDS[name]
    p = sub.add_parser(name, help=helptext, description=helptext,
                       epilog=f"example: {example}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    if load:
        mod = importlib.import_module(modname)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return p


def build_parser(wanted: str | None = None) -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(prog="pfslab", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example: sudo make lab   (sudo .venv/bin/pfslab "
                                            "lab with its defaults: 2 subnets x 8 phones,\n"
                                            "         a PFS then a traditional upgrade over a "
                                            "384kbit, 75 ms WAN; see pfslab lab --help)")
    parser.add_argument("--version", action="version", version=f"pfslab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    subs = {name: command_parser(sub, name, name == wanted) for name in COMMANDS}
    return parser, subs


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser, _ = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"pfslab: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pfslab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
