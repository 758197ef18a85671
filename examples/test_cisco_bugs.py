"""Three Cisco field bugs as regression tests, written against pfslab's pytest plugin.

Copy this file beside your own tests (and the scenarios it names); `pip install pfslab` makes
the fixtures available. Each test runs its scenario once in the Mininet lab (root needed:
without it the test skips and says why) and asks the run what HQ's server and the wire saw.
"""
import pytest


@pytest.mark.pfs_scenario("scenarios/cscus67416.toml")
def test_cscus67416_only_roots_fetch_from_hq(pfs_lab):
    """CSCus67416: with PFS on, phone B still went to the server. Guard: each file crossed
    the WAN for its tree's root only; every other phone got it from a peer."""
    run = pfs_lab()
    assert run.trees, "no PFS tree was built"
    for tree in run.trees:
        assert run.hq_fetchers(tree.file) == {tree.root}, tree
    for phone in run.phones:
        assert run.pfs_configured(phone)
        roots_of = {t.file for t in run.trees if t.root == phone}
        assert run.fetched_from_hq(phone) == roots_of, phone


@pytest.mark.pfs_scenario("scenarios/csctg96408.toml")
def test_csctg96408_every_phone_boots_the_image_it_was_given(pfs_lab):
    """CSCtg96408: a phone could not boot after a PFS upgrade. Guard: every phone installed
    exactly the components of its load, each verified, whoever passed them on."""
    run = pfs_lab()
    for phone in run.phones:
        assert run.boots_given_image(phone), run.components(phone)
    # some components came from a peer, so the guard covered peer transfers
    assert any(c["source"] != "tftp" for phone in run.phones
               for c in run.components(phone).values())


@pytest.mark.pfs_scenario("scenarios/cscud66570.toml")
def test_cscud66570_the_7931_setting_is_honoured(pfs_lab):
    """CSCud66570: sharing was always disabled on the 7931. Guard: the 7931 resolves its
    setting per level: on via the profile (it shares), off at device level (it does not)."""
    run = pfs_lab()
    sharing = [p for p in run.phones if run.model(p) == "CP-7931G" and p != "p1-4"]
    for phone in sharing:
        assert run.pfs_configured(phone) and run.pfs_enabled(phone), phone
    trees = [t for t in run.trees if t.model == "CP-7931G"]
    assert trees, "the 7931s built no tree"
    for tree in trees:   # each file crossed the WAN once for the sharing 7931s, then spread
        assert tree.edges and tree.members <= set(sharing), tree
        assert run.hq_fetchers(tree.file) & set(sharing) == {tree.root}
    # p1-4 is a 7931 whose device level turns PFS off: it fetches its whole load from HQ
    assert not run.pfs_configured("p1-4") and not run.pfs_enabled("p1-4")
    assert run.fetched_from_hq("p1-4") == run.firmware_files("p1-4")
