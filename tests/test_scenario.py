"""Scenario files (pfslab.scenario): every shipped one parses and builds its site; each bad
key or value is one line naming the key and the fix, exit 2; flags beside --scenario win;
the seed's site runs in `pfslab sim`."""
from __future__ import annotations

import glob
import json
import os
import tomllib

import pytest

from pfslab import cli, scenario
from pfslab.settings import Settings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = sorted(glob.glob(os.path.join(REPO, "scenarios", "*.toml")))


def pfslab(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_the_promised_scenarios_are_shipped():
    names = {os.path.basename(p) for p in SHIPPED}
    assert {"seed-site.toml", "readme-default.toml", "mixed-models.toml", "cscus67416.toml",
            "csctg96408.toml", "cscud66570.toml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=os.path.basename)
def test_every_shipped_scenario_parses_and_checks(path, capsys):
    s = scenario.load(path)
    site = s.site()
    assert site.phones
    rc, out, err = pfslab(capsys, "scenario", "check", path)
    assert rc == 0 and err == "" and out.startswith(f"{path}: ok: {len(site.phones)} phones")


def test_seed_site_is_the_tech_notes_site():
    s = scenario.load(os.path.join(REPO, "scenarios", "seed-site.toml"))
    bps, delay, _ = s.wan()
    assert (len(s.site().phones), bps, delay) == (1000, 384_000, 0.075)


def test_readme_default_is_what_the_flags_default_to():
    s = scenario.load(os.path.join(REPO, "scenarios", "readme-default.toml"))
    assert s == Settings()


def test_mixed_site_has_pfs_incapable_phones_and_per_subnet_layout():
    s = scenario.load(os.path.join(REPO, "scenarios", "mixed-models.toml"))
    site = s.site()
    pfs = site.pfs_of("pfs")
    by_name = {p.name: p for p in site.phones}
    assert [len([p for p in site.phones if p.subnet == k]) for k in (1, 2, 3)] == [6, 5, 4]
    assert {"CP-7940G", "CP-7960G"} <= set(site.models())
    assert not any(pfs[n] for n, p in by_name.items() if p.model in ("CP-7940G", "CP-7960G"))
    assert by_name["p1-4"].model == "CP-7961G" and pfs["p1-4"] is False and pfs["p1-1"]
    assert [p.model for p in site.phones if p.subnet == 3] == [
        "CP-7931G", "CP-7931G", "CP-7961G-GE", "CP-7960G"]


def test_cscud66570_resolves_the_7931_per_level():
    site = scenario.load(os.path.join(REPO, "scenarios", "cscud66570.toml")).site()
    assert site.pfs_of("pfs") == {"p1-1": True, "p1-2": True, "p1-3": True, "p1-4": False,
                                  "p1-5": True, "p1-6": True}


def test_a_dict_and_its_toml_are_the_same_scenario(tmp_path):
    for path in SHIPPED:
        with open(path, "rb") as f:
            data = tomllib.load(f)
        (tmp_path / "x.toml").write_text(scenario.dumps(data))
        assert tomllib.loads((tmp_path / "x.toml").read_text()) == data
        assert scenario.load(tmp_path / "x.toml") == scenario.load(data) == scenario.load(path)


def test_loads_and_device_on_reach_the_site():
    s = scenario.load({"models": ["CP-7961G"], "phones_per_subnet": 2,
                       "config": {"profile": "off", "devices": {"p1-2": True}},
                       "firmware": {"loads": {"CP-7961G": "SCCP70.9-4-2SR3-1S"}}})
    site = s.site()
    assert site.pfs_of("pfs")["p1-1"] is False and site.pfs_of("pfs")["p1-2"] is True
    assert "SCCP70.9-4-2SR3-1S.loads" in site.files("pfs")


def test_lab_fault_kinds_become_the_runs_faults():
    s = scenario.load({"faults": [{"kind": "tftp-restart", "at": 10, "duration": 5},
                                  {"kind": "rogue", "how": "tamper", "subnet": 1}]})
    assert [(f.kind, f.at, f.duration) for f in s.all_faults()][0] == ("tftp-restart", 10, 5)
    assert s.all_faults()[1].kind == "rogue" and s.all_faults()[1].how == "tamper"


def test_fail_parent_fault_becomes_the_setting():
    s = scenario.load({"faults": [{"kind": "fail_parent", "after": 12, "how": "silent"}]})
    assert s.fail_parent == "12:silent" and s.all_faults()[0].how == "silent"


# ---------------------------------------------------------------- errors: one line, exit 2
BAD = [  # (scenario text, what the one line must say)
    ("subnets = 0", "subnets: 0 is out of range: 1..99"),
    ("subnets = 'two'", "subnets: want a whole number"),
    ("phones_per_subnet = 2.5", "phones_per_subnet: want a whole number"),
    ("phone_per_subnet = 4", "phone_per_subnet: unknown key; did you mean 'phones_per_subnet'"),
    ("models = ['CP-7961']", "models: unknown model 'CP-7961'; did you mean 'CP-7961G'"),
    ("models = []", "models: want a list of model names"),
    ("[wan]\nbandwith = '1mbit'", "wan.bandwith: unknown key; did you mean 'bandwidth'"),
    ("[wan]\nbandwidth = 'fast'", "wan.bandwidth: bad bandwidth 'fast': use e.g. 512kbit"),
    ("[wan]\ndelay = 'soon'", "wan.delay: bad delay 'soon': use e.g. 75ms"),
    ("[wan]\nloss = '120%'", "wan.loss: bad loss '120%'"),
    ("[wan]\nemulation = 'tc'", "wan.emulation: 'tc' is not one of auto, netem, nfqueue"),
    ("wan = 5", "wan: want a table: [wan]"),
    ("[run]\nmode = 'fast'", "run.mode: 'fast' is not one of pfs, traditional, both"),
    ("[run]\nreset = 'some'", "run.reset: 'some' is not one of all, staggered"),
    ("[run]\nseed = -1", "run.seed: -1 is out of range"),
    ("[run]\ntimeout = 0", "run.timeout: 0 must be greater than 0"),
    ("[run]\nblksize = 4", "run.blksize: 4 is out of range: 8..65464"),
    ("[run]\ntftp_refuse = 'blksize'", "run.tftp_refuse: want a list of strings"),
    ("[config]\nprofile = 'maybe'", "config.profile: 'maybe': want on, off or unset"),
    ("[config.devices]\np1-2 = 'no'", "config.devices.p1-2: 'no': want on, off or unset"),
    ("phones_per_subnet = 2\n[config.devices]\np9-9 = 'off'", "config.devices: no phone 'p9-9'"),
    ("[firmware]\nscale = -1", "firmware.scale: -1 must be greater than 0"),
    ("[firmware.loads]\nCP-7961G = 'SCCP99'", "firmware.loads.CP-7961G: unknown load 'SCCP99'"),
    ("[[subnets]]\nmodels = ['CP-7961G']", "subnets[1]: missing phones"),
    ("[[subnets]]\nphones = 2\ncount = 3", "subnets[1].count: unknown key"),
    ("phones_per_subnet = 3\n[[subnets]]\nphones = 2", "subnets: [[subnets]] tables give"),
    ("[[faults]]\nkind = 'meteor'", "faults[1] 'meteor::1': unknown kind; one of parent,"),
    ("[[faults]]\nkind = 'tftp-restart'\nwhen = 3", "faults[1]: unknown field 'when'"),
    ("[[faults]]\nafter = 3", "faults[1]: each fault is a table with a kind"),
    ("[[faults]]\nkind = 'fail_parent'\nhow = 'loud'", "faults[1].how: 'loud' is not one of"),
    ("name = 3", "name: want a string"),
    ("subnets = 2\nsubnets = 3", "not valid TOML"),
]


@pytest.mark.parametrize("text,expected", BAD, ids=[b[1].split(":")[0] for b in BAD])
def test_a_bad_key_or_value_is_one_line_and_exit_2(text, expected, tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    for argv in (["scenario", "check", str(path)], ["sim", "--scenario", str(path)]):
        rc, out, err = pfslab(capsys, *argv)
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1, (argv, err)
        assert lines[0].startswith(f"pfslab: {path}: ") and expected in lines[0], lines[0]
        assert "Traceback" not in out + err


def test_a_missing_file_is_one_line(tmp_path, capsys):
    rc, _, err = pfslab(capsys, "scenario", "check", str(tmp_path / "nope.toml"))
    assert rc == 2 and err.strip() == f"pfslab: {tmp_path / 'nope.toml'}: no such scenario " \
                                       "file (see scenarios/ for examples)"


# ---------------------------------------------------------------- flags beside --scenario
def test_flags_beside_the_scenario_win_and_defaults_do_not():
    parser, _ = cli.build_parser("sim")
    path = os.path.join(REPO, "scenarios", "seed-site.toml")
    s = Settings.from_args(parser.parse_args(["sim", "--scenario", path]))
    assert (s.subnets, s.phones_per_subnet, s.wan_bw) == (10, 100, "384kbit")
    # a flag equal to its default still overrides the file
    s = Settings.from_args(parser.parse_args(["sim", "--scenario", path,
                                              "--phones-per-subnet", "50", "--subnets", "2",
                                              "--wan-delay", "20ms"]))
    assert (s.subnets, s.phones_per_subnet, s.wan_delay, s.wan_bw) == (2, 50, "20ms", "384kbit")


def test_a_shape_flag_replaces_a_per_subnet_layout():
    parser, _ = cli.build_parser("lab")
    path = os.path.join(REPO, "scenarios", "mixed-models.toml")
    s = Settings.from_args(parser.parse_args(["lab", "--scenario", path,
                                              "--phones-per-subnet", "4"]))
    assert s.layout is None and len(s.site().phones) == 2 * 4   # the defaults' 2 subnets
    assert s.pfs_enterprise == "off" and s.seed == 7             # the rest of the file stays


def test_the_seed_site_runs_in_pfslab_sim(tmp_path, capsys):
    """1000 phones, 384 kbit/s, 75 ms: PFS mode, firmware scaled down to keep it quick."""
    out = tmp_path / "results.json"
    rc, text, err = pfslab(capsys, "sim", "--scenario", os.path.join(REPO, "scenarios",
                           "seed-site.toml"), "--mode", "pfs", "--firmware-scale", "0.001",
                           "--json", str(out))
    assert rc == 0, err
    r = json.loads(out.read_text())
    assert r["total"] == 1000 and r["completed"] == 1000
    assert r["wan"]["bw_bps"] == 384_000 and r["wan"]["delay_s"] == 0.075
    # one fetch from HQ per (subnet, model, file): 10 subnets x 2 models x 6 files
    fw = [q for q in r["tftp_requests"] if not q["file"].endswith(".cnf.xml")]
    assert len(fw) == 10 * 2 * 6


# ---------------------------------------------------------------- small ones run (plugin)
def check_mixed_site(run):
    incapable = [p for p in run.phones if run.model(p) in ("CP-7940G", "CP-7960G")]
    assert incapable and run.upgraded == len(run.phones)
    for p in run.phones:
        assert run.boots_given_image(p), p
        if p in incapable or p == "p1-4":         # no PFS: the whole load from HQ
            assert not run.pfs_enabled(p) and run.fetched_from_hq(p) == run.firmware_files(p)
    for tree in run.trees:                         # sharing phones: one fetch per tree
        assert run.hq_fetchers(tree.file) & tree.members == {tree.root}, tree
        assert not tree.members & set(incapable)


def test_mixed_models_in_the_sim(pfs_sim):
    check_mixed_site(pfs_sim(os.path.join(REPO, "scenarios", "mixed-models.toml")))


@pytest.mark.lab
def test_mixed_models_in_the_lab(pfs_lab):
    check_mixed_site(pfs_lab(os.path.join(REPO, "scenarios", "mixed-models.toml")))
