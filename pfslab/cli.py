"""`pfslab` command line. Each subcommand lives in its own module, imported only when used
(so `pfslab decode` never loads Mininet and `pfslab phone` never loads Scapy)."""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import UserError

#: subcommand -> (module, one-line help). The module has add_arguments(p) and run(args) -> int.
COMMANDS = {
    "lab": ("pfslab.lab.run", "build the lab, run PFS and/or traditional upgrades, capture"),
    "clean": ("pfslab.lab.clean", "remove what a crashed lab run left behind (its own only)"),
    "phone": ("pfslab.agent.cli", "run phone agents (one phone in a Mininet host, or many)"),
    "decode": ("pfslab.dissect.decode", "rebuild elections, trees and TFTP use from pcaps"),
    "sim": ("pfslab.sim.run", "the same phones in memory, for sites too big for a lab"),
    "report": ("pfslab.view.report_html", "write report.html for a run folder (pcaps/<run-id>)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="pfslab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = argv[0] if argv and argv[0] in COMMANDS else None
    for name, (modname, helptext) in COMMANDS.items():
        p = sub.add_parser(name, help=helptext, description=helptext)
        if name == wanted:  # only the chosen module is imported
            mod = importlib.import_module(modname)
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
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
