"""pfslab's pytest plugin (installed with pfslab: the ``pytest11`` entry point ``pfslab``).

Fixtures ``pfs_sim`` and ``pfs_lab`` are factories: ``pfs_sim("scenarios/x.toml",
phones_per_subnet=50)`` or ``pfs_lab({"subnets": 1, "phones_per_subnet": 4})`` runs the site
(a scenario file or a dict of its keys, then overrides named like the flags) through
``pfslab sim`` / ``pfslab lab`` and returns a :class:`PfsRun`. Called with no scenario, they
run the one the nearest ``@pytest.mark.pfs_scenario(SOURCE, **overrides)`` marker names.
Runs are cached for the session: tests asking for the same scenario share one run.

A lab fixture needs root and the lab's tools: without them it skips with the reason, or fails
when ``PFSLAB_REQUIRE_LAB=1``. When a test that used a run fails, the report gets a
"pfslab" section: the run folder, the command that reproduces the run, the hierarchies and the
log tail of the phones the test asked about. See docs/testing.md.
"""
from __future__ import annotations

import io
import json
import os
import shutil
from collections import defaultdict

import pytest

from . import firmware
from .errors import UserError

LAB_TOOLS = ("mnexec", "tcpdump", "tshark", "in.tftpd", "iptables")
REQUIRE_LAB = "PFSLAB_REQUIRE_LAB"
LOG_TAIL = 15


def lab_unavailable_reason() -> str | None:
    """Why the lab cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root (run: sudo make test)"
    missing = [t for t in LAB_TOOLS if not shutil.which(t)]
    if missing:
        return (f"missing lab tools {missing} (run: sudo make test, which installs them; "
                "pfslab doctor says what else is missing)")
    return None


def skip_or_fail_without_lab() -> None:
    """Skip with the reason, or fail when PFSLAB_REQUIRE_LAB=1 (CI: never pass by skipping)."""
    reason = lab_unavailable_reason()
    if reason is None:
        return
    if os.environ.get(REQUIRE_LAB) == "1":
        pytest.fail(f"lab test cannot run here: {reason}", pytrace=False)
    pytest.skip(reason)


# ---------------------------------------------------------------- the result
class ModeRun:
    """One mode of a finished run, answered from HQ's side: the server's record of requests
    (lab: in.tftpd's log), the site's configuration, the trees (lab: rebuilt from the
    pcaps) and the WAN capture. Installed components and their verification are the phone's
    own check (digest and HQ's signature against the load HQ gave it). Phones are named
    ``p<subnet>-<n>``; methods taking a phone remember it for the failure report."""

    def __init__(self, result: dict, site, folder: str, engine: str):
        self.result, self.site, self.folder, self.engine = result, site, folder, engine
        self.mode = result["mode"]
        self._by_name = {p["name"]: p for p in result["phones"]}
        self._name_of = {p.ip: p.name for p in site.phones}
        self._spec = {p.name: p for p in site.phones}
        self._pfs = site.pfs_of(self.mode)
        self.asked: list[str] = []

    # ---- names
    def name(self, ip: str) -> str:
        """The phone at ``ip`` (the IP itself if no phone has it)."""
        return self._name_of.get(ip, ip)

    def _phone(self, name: str) -> dict:
        if name not in self._by_name:
            raise KeyError(f"no phone {name!r} in this run (phones are p1-1.."
                           f"{self.site.phones[-1].name})")
        if name not in self.asked:
            self.asked.append(name)
        return self._by_name[name]

    @property
    def phones(self) -> list[str]:
        return [p.name for p in self.site.phones]

    # ---- HQ's side
    def firmware_files(self, phone: str | None = None) -> set[str]:
        """The firmware HQ gave ``phone`` (its model's load: the .loads and its components),
        or every firmware file HQ served."""
        if phone:
            self._phone(phone)
        models = [self._spec[phone].model] if phone else self.site.models()
        out = set()
        for m in models:
            load = self.site.load_of(m)
            out |= {load + firmware.LOADS_SUFFIX, *(c for c, _ in firmware.KNOWN_LOADS[load])}
        return out

    @property
    def hq_requests(self) -> list[tuple[str, str]]:
        """(phone, file) of every read request HQ's TFTP server recorded, in order; in the
        lab also those seen in wan.pcap that in.tftpd did not log (its queue can overflow)."""
        logged = [(self.name(r["client"]), r["file"]) for r in self.result["tftp_requests"]]
        wire_only = (self._tftp_check().get("only_on_wire") or [])
        return logged + [(self.name(ip), f) for ip, _, f in (x.partition(" ")
                                                            for x in wire_only)]

    def _tftp_check(self) -> dict:
        return (self.result.get("wire_check") or {}).get("tftp_vs_log") or {}

    def fetched_from_hq(self, phone: str | None = None, firmware_only: bool = True):
        """The files ``phone`` fetched from HQ (a set); without a phone, phone -> set."""
        fw = self.firmware_files() if firmware_only else None
        by = defaultdict(set)
        for who, f in self.hq_requests:
            if fw is None or f in fw:
                by[who].add(f)
        if phone is None:
            return dict(by)
        self._phone(phone)
        return by.get(phone, set())

    def hq_fetchers(self, file: str) -> set[str]:
        """The phones that fetched ``file`` from HQ."""
        return {who for who, f in self.hq_requests if f == file}

    def pfs_configured(self, phone: str) -> bool:
        """The PFS setting HQ's configuration resolved for ``phone`` (device > profile >
        enterprise; traditional mode: off)."""
        self._phone(phone)
        return self._pfs[phone]

    def model(self, phone: str) -> str:
        return self._phone(phone)["model"]

    # ---- trees
    @property
    def trees(self) -> list["Tree"]:
        """The PFS hierarchies (lab: rebuilt from the subnet pcaps), phones by name."""
        return [Tree(h, self.name) for h in self.result.get("hierarchies", [])]

    def tree(self, file: str, subnet: int | None = None, model: str | None = None) -> "Tree":
        found = [t for t in self.trees if t.file == file and subnet in (None, t.subnet)
                 and model in (None, t.model)]
        if len(found) != 1:
            raise KeyError(f"{len(found)} trees for {file} (subnet {subnet}, model {model}); "
                           "give subnet= and model=")
        return found[0]

    @property
    def hierarchies_source(self) -> str:
        return self.result.get("hierarchies_source", "agents")

    # ---- the phones' installed firmware
    def components(self, phone: str) -> dict[str, dict | None]:
        """Component -> {"source": "tftp" or the parent's name, "verified": bool} (None: not
        installed), for the components of the load HQ gave ``phone``."""
        p = self._phone(phone)
        want = self.firmware_files(phone) - {self.site.load_of(self.model(phone))
                                             + firmware.LOADS_SUFFIX}
        got = p.get("components") or {}
        out = {}
        for c in sorted(want | set(got)):
            i = got.get(c)
            out[c] = None if not i else {
                "source": i["source"] if i["source"] == "tftp" else self.name(i["source"]),
                "verified": bool(i.get("sha256_ok"))}
        return out

    def boots_given_image(self, phone: str) -> bool:
        """``phone`` installed exactly the components of the load HQ gave it, each verified."""
        comps = self.components(phone)
        want = self.firmware_files(phone) - {self.site.load_of(self.model(phone))
                                             + firmware.LOADS_SUFFIX}
        return set(comps) == want and all(c and c["verified"] for c in comps.values())

    def pfs_enabled(self, phone: str) -> bool:
        """The PFS setting the phone read from its configuration file."""
        return bool(self._phone(phone).get("pfs_enabled"))

    def completed(self, phone: str) -> bool:
        return bool(self._phone(phone).get("completed"))

    # ---- figures
    @property
    def wan_bytes(self) -> int | None:
        """Lab: every frame in wan.pcap; simulator: the TFTP payload HQ sent."""
        return self.result.get("wan_bytes")

    @property
    def makespan_s(self) -> float | None:
        return self.result.get("makespan_s")

    @property
    def upgraded(self) -> int:
        return self.result.get("completed", 0)

    @property
    def fidelity(self):
        """The lab's fidelity verdict, when the lab writes one (else None)."""
        return self.result.get("fidelity")

    @property
    def wire_disagreements(self) -> list:
        """Lab: where the pcaps and the phones' own account differ (empty: they agree)."""
        wc, t = self.result.get("wire_check") or {}, self._tftp_check()
        return [*(wc.get("hierarchies_vs_agents") or []),
                *(f"RRQ only on the wire: {x}" for x in t.get("only_on_wire") or []),
                *(f"RRQ only in in.tftpd's log: {x}" for x in t.get("only_in_log") or [])]

    # ---- for people
    def log_tail(self, phone: str, lines: int = LOG_TAIL) -> list[str]:
        path = os.path.join(self.folder, "logs", f"{phone}.log")
        try:
            with open(path, errors="replace") as f:
                return f.read().splitlines()[-lines:]
        except OSError:
            why = ("the simulator keeps no phone logs" if self.engine == "sim" else
                   f"{path} is missing")
            return [f"(no log: {why})"]

    def hierarchy_text(self, phones: list[str] = (), limit: int = 3) -> str:
        """The trees holding ``phones`` (else the largest), as `pfslab lab` prints them."""
        from rich.console import Console

        from .report import hierarchy_tree
        hs = self.result.get("hierarchies", [])
        ips = {self._spec[n].ip for n in phones if n in self._spec}
        mine = [h for h in hs if ips & ({h["root"]} | {x for e in h["edges"] for x in e}
                                        | set(h.get("tftp_fetchers", [])))]
        hs = (mine or sorted(hs, key=lambda h: -len(h["edges"])))[:limit]
        if not hs:
            return "(no PFS hierarchy in this mode)"
        buf = io.StringIO()
        con = Console(file=buf, width=100, color_system=None, emoji=False, highlight=False)
        for h in hs:
            con.print(hierarchy_tree(h, self._name_of))
        return buf.getvalue().rstrip()

    def __repr__(self):
        return (f"<{self.engine} {self.mode}: {self.upgraded}/{len(self.phones)} upgraded, "
                f"makespan {self.makespan_s} s, WAN {self.wan_bytes} bytes; {self.folder}>")


class Tree:
    """One PFS hierarchy (subnet, model, file), phones by name."""

    def __init__(self, h: dict, name):
        self.subnet, self.model, self.file = h["subnet"], h["model"], h["file"]
        self.root = name(h["root"]) if h.get("root") else None
        self.edges = [(name(p), name(c)) for p, c in h["edges"]]
        self.fetchers = {name(ip) for ip in h.get("tftp_fetchers", [])}

    @property
    def members(self) -> set[str]:
        return {x for e in self.edges for x in e} | ({self.root} if self.root else set())

    def children(self, phone: str) -> list[str]:
        return [c for p, c in self.edges if p == phone]

    def parent(self, phone: str) -> str | None:
        return next((p for p, c in self.edges if c == phone), None)

    def depth(self, phone: str | None = None) -> int:
        """``phone``'s depth (root = 0), or the deepest phone's."""
        def d(n):
            k, seen = 0, set()
            while self.parent(n) and n not in seen:
                seen.add(n)
                n, k = self.parent(n), k + 1
            return k
        return d(phone) if phone else max((d(n) for n in self.members), default=0)

    def __repr__(self):
        return f"<tree {self.file} subnet {self.subnet} {self.model}: root {self.root}, " \
               f"{len(self.edges)} edges>"


class PfsRun:
    """A finished run: one :class:`ModeRun` per mode (``run.pfs``, ``run.traditional``);
    with one mode, the run answers as that mode does."""

    def __init__(self, engine: str, folder: str, command: str, modes: dict[str, ModeRun],
                 exit_code: int):
        self.engine, self.folder, self.command = engine, folder, command
        self.modes, self.exit_code = modes, exit_code

    def __repr__(self):
        return f"<pfslab {self.engine} run: {', '.join(map(repr, self.modes.values()))}>"

    def mode(self, name: str) -> ModeRun:
        if name not in self.modes:
            raise KeyError(f"this run has no {name} mode (it ran {', '.join(self.modes)}); "
                           f"set run.mode or mode= to both")
        return self.modes[name]

    @property
    def pfs(self) -> ModeRun:
        return self.mode("pfs")

    @property
    def traditional(self) -> ModeRun:
        return self.mode("traditional")

    def __getattr__(self, attr):
        modes = self.__dict__.get("modes") or {}
        if len(modes) == 1:
            return getattr(next(iter(modes.values())), attr)
        raise AttributeError(f"{attr}: this run has modes {', '.join(modes)}; ask run.pfs."
                             f"{attr} or run.traditional.{attr}")

    def report(self) -> str:
        """What a person needs when a test fails: the folder, the command, the hierarchies
        and the log tail of the phones the test asked about (else of unfinished phones)."""
        out = [f"run folder: {self.folder}", f"reproduce: {self.command}"]
        for m in self.modes.values():
            out.append(f"{m.mode}: {m.upgraded}/{len(m.phones)} upgraded, makespan "
                       f"{m.makespan_s} s, WAN {m.wan_bytes} bytes, {len(m.hq_requests)} "
                       f"TFTP requests at HQ (folder {m.folder})")
            phones = m.asked or [n for n in m.phones
                                 if not m._by_name.get(n, {}).get("completed")][:3]
            if m.mode == "pfs":
                out += [f"{m.mode} hierarchies:", m.hierarchy_text(phones)]
            for n in phones[:3]:
                out.append(f"{m.mode} {n} log tail:")
                out += ["  " + line for line in m.log_tail(n)]
        return "\n".join(out)


# ---------------------------------------------------------------- running
def _flags(overrides: dict) -> list[str]:
    """Overrides (settings names) -> the flags that set them."""
    from .settings import OPTIONS
    out = []
    for k, v in overrides.items():
        if k not in OPTIONS:
            raise UserError(f"override {k}={v!r}: not a flag of pfslab lab/sim; put it in the "
                            "scenario (docs/testing.md lists the keys)")
        flag = "--" + k.replace("_", "-")
        if isinstance(v, (list, tuple)) and isinstance(OPTIONS[k].default, tuple):
            out += [x for item in v for x in (flag, str(item))]
        else:
            out += [flag, ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)]
    return out


class RunCache:
    """The session's runs, keyed by engine, scenario content and overrides."""

    def __init__(self, tmp_path_factory):
        self.tmp = tmp_path_factory
        self.runs: dict[str, PfsRun | Exception] = {}

    def get(self, engine: str, source, overrides: dict) -> PfsRun:
        from . import scenario
        try:
            data, where = scenario.read(source)
            settings = scenario.load(data, overrides)
            flags = _flags(overrides)
        except UserError as e:
            pytest.fail(f"pfslab scenario: {e}", pytrace=False)
        key = json.dumps([engine, data, overrides], sort_keys=True, default=str)
        if key not in self.runs:
            try:
                self.runs[key] = self._run(engine, data, where, settings, flags)
            except Exception as e:  # noqa: BLE001 - kept, so later tests do not rerun it
                self.runs[key] = e
        r = self.runs[key]
        if isinstance(r, UserError):
            pytest.fail(f"pfslab {engine}: {r}", pytrace=False)
        if isinstance(r, Exception):
            raise r
        return r

    def _run(self, engine, data, where, settings, flags) -> PfsRun:
        from . import cli, scenario
        name = str(data.get("name") or os.path.splitext(os.path.basename(str(where)))[0])
        folder = str(self.tmp.mktemp(f"pfslab-{engine}-" + "".join(
            c if c.isalnum() else "-" for c in name)[:40] + "-"))
        path = os.path.join(folder, "scenario.toml")
        with open(path, "w") as f:
            f.write(f"# from {where}\n" + scenario.dumps(data))
        out = (["--json", os.path.join(folder, "results.json")] if engine == "sim" else
               ["--out", folder])
        argv = [engine, "--scenario", path, *flags, *out]
        parser, _ = cli.build_parser(engine)
        args = parser.parse_args(argv)
        rc = int(args._run(args) or 0)
        with open(os.path.join(folder, "results.json")) as f:
            results = json.load(f)
        results = results if isinstance(results, list) else [results]
        site = settings.site()
        modes = {r["mode"]: ModeRun(r, site, r.get("out_dir") or folder, engine)
                 for r in results}
        command = ("sudo .venv/bin/pfslab " if engine == "lab" else ".venv/bin/pfslab ") + \
            " ".join(argv)
        return PfsRun(engine, folder, command, modes, rc)


def _factory(request, cache: RunCache, engine: str):
    runs = request.node.__dict__.setdefault("_pfslab_runs", [])
    base = os.path.dirname(str(request.node.fspath))

    def run(source=None, /, **overrides) -> PfsRun:
        if source is None:
            marker = request.node.get_closest_marker("pfs_scenario")
            if marker is None or not marker.args:
                pytest.fail(f"{engine} run: give a scenario (pfs_{engine}(\"scenarios/x.toml\")"
                            " or a dict) or mark the test @pytest.mark.pfs_scenario(SOURCE)",
                            pytrace=False)
            source, overrides = marker.args[0], {**marker.kwargs, **overrides}
        for where in (base, str(request.config.rootpath)):
            if not isinstance(source, dict) and not os.path.isabs(os.fspath(source)) \
                    and os.path.exists(os.path.join(where, os.fspath(source))):
                source = os.path.join(where, os.fspath(source))
                break
        r = cache.get(engine, source, overrides)
        if r not in runs:
            runs.append(r)
        return r
    return run


# ---------------------------------------------------------------- pytest hooks and fixtures
def pytest_configure(config):
    config.addinivalue_line(
        "markers", "pfs_scenario(source, **overrides): the scenario (a file or a dict of its "
                   "keys) that pfs_sim() and pfs_lab() run when called without one")
    config.addinivalue_line(
        "markers", "lab: needs root, network namespaces and the lab's tools (tests using "
                   "pfs_lab have it)")


def pytest_collection_modifyitems(items):
    """A test using pfs_lab is a lab test: `-m "not lab"` deselects it."""
    for item in items:
        if "pfs_lab" in getattr(item, "fixturenames", ()):
            item.add_marker("lab")


@pytest.fixture(scope="session")
def pfs_run_cache(tmp_path_factory) -> RunCache:
    return RunCache(tmp_path_factory)


@pytest.fixture
def pfs_sim(request, pfs_run_cache):
    """Factory: pfs_sim(SOURCE=None, **overrides) -> PfsRun of `pfslab sim`."""
    return _factory(request, pfs_run_cache, "sim")


@pytest.fixture
def pfs_lab(request, pfs_run_cache):
    """Factory: pfs_lab(SOURCE=None, **overrides) -> PfsRun of `pfslab lab` (needs root)."""
    skip_or_fail_without_lab()
    return _factory(request, pfs_run_cache, "lab")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    runs = item.__dict__.get("_pfslab_runs")
    if rep.failed and runs and call.when == "call":
        rep.sections.append(("pfslab", "\n\n".join(r.report() for r in runs)))
    if call.when == "teardown":
        for r in runs or ():
            for m in r.modes.values():
                m.asked.clear()
