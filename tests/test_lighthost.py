"""Light hosts from a Mininet Topo (pfslab.lab.lighthost.hosts_from_topo): what Mininet would
have configured on a phone host, read from the Topo's host and link parameters. No root."""
from __future__ import annotations

import pytest

from pfslab.errors import UserError


def _branch():
    from pfslab.lab.net import build_topology
    from pfslab.site import Site
    return build_topology("branch", "lt", Site.branch(2, 2, "CP-7961G"))


def test_phone_hosts_become_light_hosts_with_the_topos_names_and_addresses():
    from pfslab.lab.lighthost import hosts_from_topo
    topo = _branch()
    hosts = hosts_from_topo(topo, set(topo.hosts_of.values()))
    assert [h.name for h in hosts] == ["ltP1", "ltP2", "ltP3", "ltP4"]
    h = hosts[2]
    assert (h.intf, h.port, h.bridge) == ("ltP3-0", "ltS2-0", "ltS2")
    assert (h.ip, h.mac, h.gateway) == ("10.1.2.10/24", "02:50:46:02:00:00", "10.1.2.1")
    assert h.netns == "/run/netns/ltP3"


def test_the_infrastructure_keeps_every_other_node_and_link():
    from pfslab.lab.net import infrastructure
    topo = _branch()
    phones = set(topo.hosts_of.values())
    infra = infrastructure(topo, phones)
    assert set(infra.nodes()) == set(topo.nodes()) - phones
    assert len(infra.links()) == len(topo.links()) - len(phones)
    assert infra.nodeInfo("ltRH") == topo.nodeInfo("ltRH")


@pytest.mark.parametrize("change, words", [
    (lambda t: t.g.node["ltP1"].update(privateDirs=["/x"]), "not supported for phones"),
    (lambda t: t.g.node["ltP1"].update(defaultRoute="ltP1-0"), "take 'via <gateway>'"),
    (lambda t: t.g.node["ltP1"].update(ip="10.1.1.10"), "ip='<address>/<len>'"),
    (lambda t: t.addLink("ltP1", "ltS2"), "exactly one link"),
])
def test_what_a_light_host_cannot_be_is_one_clear_error(change, words):
    from pfslab.lab.lighthost import hosts_from_topo
    topo = _branch()
    change(topo)
    with pytest.raises(UserError, match="ltP1") as e:
        hosts_from_topo(topo, set(topo.hosts_of.values()))
    assert words in str(e.value) and "\n" not in str(e.value)
