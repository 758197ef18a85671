"""pfslab's pytest plugin, tested with pytest's own pytester: a generated test file using the
fixtures passes; one asserting a false claim fails and prints the run folder, the hierarchy
and the phones' log tails; a lab fixture without root skips with the reason, or fails under
PFSLAB_REQUIRE_LAB=1."""
from __future__ import annotations

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ('{"subnets": 1, "phones_per_subnet": 4, "models": ["CP-7961G"], '
         '"firmware": {"scale": 0.002}, "run": {"mode": "pfs"}}')


def test_the_plugin_is_installed_with_pfslab():
    from importlib.metadata import entry_points
    eps = [ep for ep in entry_points(group="pytest11") if ep.name == "pfslab"]
    assert eps and eps[0].value == "pfslab.pytest_plugin"


def test_a_generated_test_using_the_fixtures_passes(pytester):
    pytester.makepyfile(f"""
        import pytest

        def test_dict(pfs_sim):
            run = pfs_sim({SMALL})
            assert run.upgraded == 4 and run.makespan_s > 0 and run.wan_bytes > 0
            for tree in run.trees:
                assert run.hq_fetchers(tree.file) == {{tree.root}}
            assert all(run.boots_given_image(p) for p in run.phones)

        @pytest.mark.pfs_scenario("{REPO}/scenarios/cscud66570.toml", firmware_scale=0.002)
        def test_marker(pfs_sim):
            run = pfs_sim()
            assert run.fetched_from_hq("p1-4") == run.firmware_files("p1-4")

        def test_shared_run_is_cached(pfs_sim):
            assert pfs_sim({SMALL}) is pfs_sim({SMALL})
            assert pfs_sim({SMALL}, seed=2) is not pfs_sim({SMALL})
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=3)
    # one run per distinct scenario and overrides: the dict twice, seed=2, the marker's
    assert result.stdout.str().count("simulated pfs:") == 3


def test_a_false_claim_fails_with_the_run_folder_hierarchy_and_log_tail(pytester):
    pytester.makepyfile(f"""
        def test_false(pfs_sim):
            run = pfs_sim({SMALL})
            assert run.fetched_from_hq("p1-2") == run.firmware_files("p1-2")
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*- pfslab -*",
        "run folder: */pfslab-sim-scenario-*",
        "reproduce: .venv/bin/pfslab sim --scenario */scenario.toml *",
        "pfs: 4/4 upgraded, makespan *",
        "pfs hierarchies:",
        "*.loads subnet 1 CP-7961G: root p1-* * TFTP*",
        "pfs p1-2 log tail:",
        "*the simulator keeps no phone logs*",
    ])


def test_a_bad_scenario_fails_the_test_with_one_line(pytester):
    pytester.makepyfile("""
        def test_bad(pfs_sim):
            pfs_sim({"wan": {"delay": "soon"}})
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*pfslab scenario: scenario: wan.delay: bad delay 'soon'*"])
    assert "Traceback" not in result.stdout.str()


def test_without_root_the_lab_fixture_skips_or_fails_when_strict(pytester, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    pytester.makepyfile("""
        def test_lab(pfs_lab):
            pfs_lab({"subnets": 1})
    """)
    monkeypatch.delenv("PFSLAB_REQUIRE_LAB", raising=False)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*needs root (run: sudo make test)*"])
    monkeypatch.setenv("PFSLAB_REQUIRE_LAB", "1")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)      # the fixture fails the test at setup
    result.stdout.fnmatch_lines(["*lab test cannot run here: needs root*"])


def test_a_test_using_pfs_lab_is_a_lab_test(pytester):
    pytester.makepyfile("""
        def test_lab(pfs_lab):
            pass
        def test_sim(pfs_sim):
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "-m", "not lab", "--co", "-q")
    result.stdout.fnmatch_lines(["*test_sim*", "*1/2 tests collected (1 deselected)*"])


@pytest.mark.lab
def test_a_lab_failure_prints_the_phones_log_tail(pytester):
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.pfs_scenario("{REPO}/scenarios/cscus67416.toml", phones_per_subnet=3)
        def test_false(pfs_lab):
            run = pfs_lab()
            assert run.fetched_from_hq("p1-3") == {{"nothing"}}
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "run folder: */pfslab-lab-CSCus67416-*",
        "reproduce: sudo .venv/bin/pfslab lab --scenario */scenario.toml "
        "--phones-per-subnet 3 --out *",
        "pfs hierarchies:",
        "pfs p1-3 log tail:",
        "  *DLoad*",
    ])
