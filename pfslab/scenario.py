"""Scenario files: one TOML file (read with ``tomllib``) describes a site and a run.

A scenario becomes the run's :class:`pfslab.settings.Settings` (the same object the flags
build), so ``pfslab lab --scenario FILE`` and ``pfslab sim --scenario FILE`` run it exactly as
the equivalent flags would; flags given beside ``--scenario`` override the file. Every key,
its meaning and its flag are in ``KEYS`` and in docs/testing.md. A bad key or value is one
:class:`UserError` line naming the key and the fix (exit 2). ``pfslab scenario check FILE``
validates files.

Shape (every key optional; the defaults are `pfslab lab --help`'s)::

    name = "seed site"                   # and description: for people
    subnets = 10                         # K subnets of N phones, models cycled...
    phones_per_subnet = 100
    models = ["CP-7961G", "CP-7941G"]
    # ...or one table per subnet: a count (models cycled) or an explicit model list
    # [[subnets]]  phones = 6  models = ["CP-7961G"]     [[subnets]]  phones = ["CP-7931G"]
    [config]     enterprise = "unset"  profile = "on"    # on / off / unset (or true / false)
    [config.devices]  "p1-2" = "off"                     # per-device override, by phone name
    [firmware]   scale = 0.035                           # and [firmware.loads] model = load
    [wan]        bandwidth = "384kbit"  delay = "75ms"  loss = "0%"  emulation = "auto"
    [run]        mode = "pfs"  reset = "all"  stagger = 0.5  seed = 1  timeout = 600
                 blksize = 1428  tftp_refuse = []
    [[faults]]   kind = "fail_parent"  after = 12  how = "silent"
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import sys
import tomllib
from typing import Callable

from . import firmware
from .errors import UserError
from .settings import BLKSIZE_RANGE, LEVELS, OPTIONS, Settings

#: Settings fields that describe the phones: overriding one drops a [[subnets]] layout
SHAPE_FIELDS = ("subnets", "phones_per_subnet", "models")
MAX_PHONES = 100_000


class ScenarioError(UserError):
    """One line: which key is wrong and how to fix it."""


def _fail(key: str, problem: str) -> None:
    raise ScenarioError(f"{key}: {problem}")


# ---------------------------------------------------------------- value checkers
def _int(lo: int, hi: int | None = None) -> Callable:
    def check(key, v):
        if isinstance(v, bool) or not isinstance(v, int):
            _fail(key, f"want a whole number, not {v!r} (e.g. {key.split('.')[-1]} = {lo})")
        if v < lo or (hi is not None and v > hi):
            _fail(key, f"{v} is out of range: {lo}..{hi if hi is not None else ''}")
        return v
    return check


def _number(lo: float = 0.0, positive: bool = False) -> Callable:
    def check(key, v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            _fail(key, f"want a number, not {v!r}")
        if (positive and not v > lo) or v < lo:
            _fail(key, f"{v} must be {'greater than' if positive else 'at least'} {lo:g}")
        return float(v)
    return check


def _choice(name: str) -> Callable:
    choices = OPTIONS[name].choices

    def check(key, v):
        if v not in choices:
            _fail(key, f"{v!r} is not one of {', '.join(choices)}")
        return v
    return check


def _level(key, v):
    """on / off / unset, or a TOML boolean."""
    if isinstance(v, bool):
        return "on" if v else "off"
    if v not in LEVELS:
        _fail(key, f"{v!r}: want on, off or unset (or true / false)")
    return v


def _units(parser: str, example: str) -> Callable:
    def check(key, v):
        from .lab import units
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            _fail(key, f"want a string such as {example!r}, not {v!r}")
        try:
            getattr(units, parser)(v)
        except UserError as e:
            _fail(key, str(e))
        return str(v)
    return check


def _models(key, v):
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not v or not all(isinstance(m, str) for m in v):
        _fail(key, f"want a list of model names such as [\"CP-7961G\", \"CP-7960G\"], not {v!r}")
    for m in v:
        if m not in firmware.MODEL_LOAD:
            close = difflib.get_close_matches(m, firmware.MODEL_LOAD, 1)
            _fail(key, f"unknown model {m!r}; "
                  + (f"did you mean {close[0]!r}? " if close else "")
                  + "known: " + ", ".join(sorted(firmware.MODEL_LOAD)))
    return list(v)


def _devices(key, v):
    if not isinstance(v, dict):
        _fail(key, f"want a table of phone name = on/off/unset, e.g. \"p1-2\" = \"off\"")
    return {str(name): _level(f"{key}.{name}", lvl) for name, lvl in v.items()}


def _loads(key, v):
    if not isinstance(v, dict):
        _fail(key, "want a table of model = load name, e.g. \"CP-7961G\" = "
                   "\"SCCP41.9-4-2SR3-1S\"")
    for model, load in v.items():
        _models(f"{key}.{model}", [model])
        if load not in firmware.KNOWN_LOADS:
            _fail(f"{key}.{model}", f"unknown load {load!r}; known: "
                  + ", ".join(sorted(firmware.KNOWN_LOADS)))
    return dict(v)


def _strings(key, v):
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        _fail(key, f"want a list of strings, e.g. [\"blksize\"], not {v!r}")
    return list(v)


def _text(key, v):
    if not isinstance(v, str):
        _fail(key, f"want a string, not {v!r}")
    return v


#: scenario key -> (Settings field or None for information only, checker)
KEYS: dict[str, tuple[str | None, Callable]] = {
    "name": (None, _text),
    "description": (None, _text),
    "subnets": ("subnets", _int(1, 99)),                 # or [[subnets]]: see _layout
    "phones_per_subnet": ("phones_per_subnet", _int(1, 60000)),
    "models": ("models", _models),
    "config.enterprise": ("pfs_enterprise", _level),
    "config.profile": ("pfs_profile", _level),
    "config.devices": ("devices", _devices),
    "firmware.scale": ("firmware_scale", _number(0.0, positive=True)),
    "firmware.loads": ("loads", _loads),
    "wan.bandwidth": ("wan_bw", _units("parse_bandwidth", "384kbit")),
    "wan.delay": ("wan_delay", _units("parse_delay", "75ms")),
    "wan.loss": ("wan_loss", _units("parse_loss", "0.5%")),
    "wan.emulation": ("wan_emulation", _choice("wan_emulation")),
    "run.mode": ("mode", _choice("mode")),
    "run.reset": ("reset", _choice("reset")),
    "run.stagger": ("stagger", _number(0.0)),
    "run.seed": ("seed", _int(0)),
    "run.timeout": ("timeout", _number(0.0, positive=True)),
    "run.blksize": ("blksize", _int(*BLKSIZE_RANGE)),
    "run.tftp_refuse": ("tftp_refuse", _strings),
    "faults": ("faults", None),                           # see _faults
}
TABLES = sorted({k.split(".")[0] for k in KEYS if "." in k})
#: the fault kinds this module turns into settings; pfslab.lab.faults may add more
FAULT_KINDS = {"fail_parent": ("after", "how")}


def _layout(value) -> list[list[str]]:
    """[[subnets]] tables -> one model list per subnet."""
    if not 1 <= len(value) <= 99:
        _fail("subnets", f"{len(value)} subnet tables: give 1..99")
    layout = []
    for i, t in enumerate(value, start=1):
        key = f"subnets[{i}]"
        if not isinstance(t, dict):
            _fail(key, "want a table with phones (a count or a list of models)")
        _unknown(t, {"phones", "models"}, key)
        if "phones" not in t:
            _fail(key, "missing phones: a count (phones = 8) or a model list "
                       "(phones = [\"CP-7961G\", \"CP-7931G\"])")
        phones = t["phones"]
        if isinstance(phones, list):
            if "models" in t:
                _fail(f"{key}.models", "phones is already a model list; drop models")
            layout.append(_models(f"{key}.phones", phones))
            continue
        n = _int(1, 60000)(f"{key}.phones", phones)
        ml = _models(f"{key}.models", t.get("models", ["CP-7961G", "CP-7941G", "CP-7960G"]))
        layout.append([ml[j % len(ml)] for j in range(n)])
    return layout


def _faults(value) -> tuple[list, str | None]:
    """[[faults]] -> (the lab faults as tables, checked by pfslab.lab.faults; Settings.
    fail_parent or None). ``kind = "fail_parent"`` (after, how) is the older form of
    ``kind = "parent"``; every kind of pfslab.lab.faults is accepted with its fields."""
    from .lab.faults import Fault, FaultSpecError
    if not isinstance(value, list):
        _fail("faults", "want [[faults]] tables, e.g. kind = \"tftp-restart\", at = 10, "
                        "duration = 5")
    fail_parent, lab = None, []
    for i, f in enumerate(value, start=1):
        key = f"faults[{i}]"
        if not isinstance(f, dict) or not isinstance(f.get("kind"), str):
            _fail(key, "each fault is a table with a kind, e.g. kind = \"fail_parent\"")
        kind = f["kind"]
        if kind == "fail_parent":
            _unknown(f, {"kind", *FAULT_KINDS[kind]}, key)
            if fail_parent is not None:
                _fail(key, "one fail_parent fault per scenario")
            after = _number(0.0)(f"{key}.after", f.get("after", 0))
            how = f.get("how", "crash")
            if how not in ("crash", "silent"):
                _fail(f"{key}.how", f"{how!r} is not one of crash, silent")
            fail_parent = f"{after:g}:{how}"
            continue
        try:
            lab.append(Fault.from_dict(f, key).to_dict())
        except FaultSpecError as e:
            raise ScenarioError(str(e)) from None
    return lab, fail_parent


def _unknown(table: dict, known, where: str) -> None:
    for k in table:
        if k not in known:
            close = difflib.get_close_matches(str(k), list(known), 1)
            hint = f"did you mean {close[0]!r}?" if close else \
                "known: " + ", ".join(sorted(known))
            _fail(f"{where}.{k}" if where else str(k), f"unknown key; {hint}")


# ---------------------------------------------------------------- reading
def read(source) -> tuple[dict, str]:
    """(the scenario as a dict, a name for messages) from a path or a dict."""
    if isinstance(source, dict):
        return source, "scenario"
    path = os.fspath(source)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f), path
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file (see scenarios/ for examples)")
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read it ({e.strerror})")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ScenarioError(f"{path}: not valid TOML ({e}); see docs/testing.md")


def fields(data: dict) -> dict:
    """A scenario dict -> Settings field values (only those the scenario sets)."""
    if not isinstance(data, dict):
        _fail("scenario", "want a table of keys (see docs/testing.md)")
    _unknown(data, {k for k in KEYS if "." not in k} | set(TABLES), "")
    out: dict = {}
    for table in TABLES:
        if table in data and not isinstance(data[table], dict):
            _fail(table, f"want a table: [{table}]")
        _unknown(data.get(table, {}), {k.split(".", 1)[1] for k in KEYS
                                       if k.startswith(table + ".")}, table)
    for key, (name, check) in KEYS.items():
        head, _, tail = key.partition(".")
        here = data.get(head, {}) if tail else data
        if (tail or head) not in here or name == "faults":
            continue
        value = here[tail or head]
        if key == "subnets" and isinstance(value, list):
            out["layout"] = _layout(value)
        elif name is None:
            check(key, value)
        else:
            out[name] = check(key, value)
    if "layout" in out and ("phones_per_subnet" in data or "models" in data):
        _fail("subnets", "[[subnets]] tables give each subnet's phones; drop the top-level "
                         "phones_per_subnet and models")
    if "faults" in data:
        out["faults"], fail_parent = _faults(data["faults"])
        if fail_parent:
            out["fail_parent"] = fail_parent
    if "models" in out:
        out["models"] = ",".join(out["models"])
    if "layout" in out:
        out["subnets"] = len(out["layout"])
        out["phones_per_subnet"] = max(len(row) for row in out["layout"])
    return out


def load(source, overrides: dict | None = None) -> Settings:
    """A scenario (path or dict) -> checked Settings; ``overrides`` (Settings field names, as
    flags give them) win over the file. Raises ScenarioError (one line) on any problem."""
    data, where = read(source)
    try:
        values = fields(data)
        total = (sum(len(r) for r in values["layout"]) if "layout" in values else
                 values.get("subnets", 1) * values.get("phones_per_subnet", 1))
        if total > MAX_PHONES:
            _fail("subnets", f"{total} phones: at most {MAX_PHONES}")
    except ScenarioError as e:
        raise ScenarioError(f"{where}: {e}") from None
    overrides = dict(overrides or {})
    if any(k in overrides for k in SHAPE_FIELDS) and "layout" in values:
        values.pop("layout")
        for k in SHAPE_FIELDS:              # the file's per-subnet shape no longer applies
            values.pop(k, None)
    known = {f.name for f in dataclasses.fields(Settings)}
    bad = sorted(set(overrides) - known)
    if bad:
        close = difflib.get_close_matches(bad[0], sorted(known), 1)
        raise ScenarioError(f"override {bad[0]!r}: not a setting"
                            + (f"; did you mean {close[0]!r}?" if close else
                               "; use the flag names of pfslab lab --help (underscores)"))
    s = Settings(**{**values, **overrides})
    try:
        return s.check()
    except UserError as e:
        raise ScenarioError(f"{where}: {e}") from None


def describe(s: Settings) -> str:
    """One line: what the scenario builds."""
    site = s.site()
    models = ", ".join(site.models())
    k = site.subnets()
    return (f"{len(site.phones)} phones in {k} subnet{'s' if k > 1 else ''} ({models}); WAN "
            f"{s.wan_bw}, "
            f"{s.wan_delay} one way, loss {s.wan_loss}; mode {s.mode}, reset {s.reset}, seed "
            f"{s.seed}, firmware x{s.firmware_scale:g}")


def dumps(data: dict) -> str:
    """A scenario dict as TOML (the subset scenarios use: strings, numbers, booleans, lists,
    tables, arrays of tables), so a run folder holds the scenario it ran."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise ScenarioError(f"cannot write {v!r} to a scenario file")

    def key(k) -> str:
        return k if re.fullmatch(r"[A-Za-z0-9_-]+", str(k)) else value(str(k))

    def table(d: dict, path: str) -> list[str]:
        lines = [f"{key(k)} = {value(v)}" for k, v in d.items()
                 if not isinstance(v, dict) and not _tables(v)]
        for k, v in d.items():
            sub = f"{path}.{key(k)}" if path else key(k)
            if isinstance(v, dict):
                lines += ["", f"[{sub}]", *table(v, sub)]
            elif _tables(v):
                for t in v:
                    lines += ["", f"[[{sub}]]", *table(t, sub)]
        return lines
    return "\n".join(table(data, "")).strip() + "\n"


def _tables(v) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(t, dict) for t in v)


# ---------------------------------------------------------------- `pfslab scenario`
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("check",), help="check: validate scenario files")
    p.add_argument("files", nargs="+", metavar="FILE", help="scenario files (TOML)")


def run(args) -> int:
    for path in args.files:
        s = load(path)
        print(f"{path}: ok: {describe(s)}")
    sys.stdout.flush()
    return 0
