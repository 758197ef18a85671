"""A run folder as `pfslab lab` leaves it: results.json, and per mode its pcaps and logs.

One mode: ``<run>/results.json`` (a dict) beside ``wan.pcap``, ``subnet-<k>.pcap``, ``logs/``.
Both modes: ``results.json`` is a list, and each mode's files are in ``<run>/<mode>/``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..errors import UserError


@dataclass
class Mode:
    result: dict        # one mode's dict of results.json
    dir: str            # where its pcaps and logs are
    rel: str            # that folder relative to the run folder ("" or "pfs/")

    @property
    def name(self) -> str:
        return str(self.result.get("mode", "?"))


def load_run(run_dir: str) -> list[Mode]:
    """The modes of a run folder; a folder that is not a run -> UserError (one line)."""
    if not os.path.isdir(run_dir):
        raise UserError(f"{run_dir}: no such folder (give a run folder, e.g. pcaps/<run-id>)")
    path = os.path.join(run_dir, "results.json")
    if not os.path.isfile(path):
        raise UserError(f"{run_dir} is not a pfslab run folder: it has no results.json "
                        "(pfslab lab writes one into every run folder)")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except ValueError as e:
        raise UserError(f"{path} is broken: {e} (re-run the lab, or restore the file)") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read it: {e.strerror}") from None
    results = data if isinstance(data, list) else [data]
    for r in results:
        if not (isinstance(r, dict) and isinstance(r.get("mode"), str)
                and isinstance(r.get("phones"), list)
                and all(isinstance(p, dict) for p in r["phones"])):
            raise UserError(f"{path} is not pfslab results: want one object (or a list of "
                            "them) with \"mode\" and a \"phones\" list")
    modes = []
    for r in results:
        sub = os.path.join(run_dir, r["mode"])
        if len(results) > 1 and r["mode"].isidentifier() and os.path.isdir(sub):
            modes.append(Mode(r, sub, r["mode"] + "/"))
        else:
            modes.append(Mode(r, run_dir, ""))
    return modes


#: files a mode folder may hold, in the order the report lists them, with what they are
ARTIFACTS = (("wan.pcap", "WAN capture (HQ side)"),
             ("subnet-*.pcap", "subnet capture"),
             ("tftpd.log", "HQ TFTP server log"),
             ("pfs-syslog.log", "PFS log server (syslog at HQ)"),
             ("agent-events.jsonl", "the phones' event stream"),
             ("decode.json", "the captures decoded (pfslab decode --json)"),
             ("logs", "one DLoad log per phone"))


def artifacts(mode: Mode) -> list[tuple[str, str]]:
    """(path relative to the run folder, description) of the files this mode has."""
    import glob
    out = []
    for pattern, what in ARTIFACTS:
        for p in sorted(glob.glob(os.path.join(mode.dir, pattern))):
            name = os.path.basename(p)
            out.append((mode.rel + name + ("/" if os.path.isdir(p) else ""), what))
    return out
