"""Every subcommand's --help names the default of each option that has one, and shows a
one-line example; `pfslab --version` prints the version (issue 13). Table-driven: one row per
(sub)command parser."""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from pfslab import __version__, bench, cli


def _parsers():
    out = {}
    for name in cli.COMMANDS:
        _, subs = cli.build_parser(name)
        p = subs[name]
        if name == "phone":   # its own sub-subcommands
            sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
            out.update({f"phone {k}": v for k, v in sub.choices.items()})
        else:
            out[name] = p
    out["bench"] = bench.build_parser()
    return out


PARSERS = _parsers()
#: argparse defaults that are not defaults a user sets (flags, repeatable lists)
NOT_A_DEFAULT = (None, False, [], argparse.SUPPRESS)


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_help_names_each_default(name):
    p = PARSERS[name]
    text = " ".join(p.format_help().split())
    for a in p._actions:
        if not a.option_strings or a.default in NOT_A_DEFAULT or a.help == argparse.SUPPRESS:
            continue
        h = " ".join((a.help or "").replace("%%", "%").replace("%(default)s",
                                                                _shown(a.default)).split())
        assert "default" in h and _shown(a.default) in h, (name, a.option_strings, a.help)
        assert h in text


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_help_shows_a_one_line_example(name):
    lines = PARSERS[name].format_help().splitlines()
    ex = [ln for ln in lines if ln.startswith("example: ")]
    assert len(ex) == 1 and "pfslab" in ex[0], lines[-3:]


def test_version():
    r = subprocess.run([sys.executable, "-m", "pfslab.cli", "--version"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"pfslab {__version__}"
