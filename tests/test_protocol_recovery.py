"""Recovery without a thundering herd (issues 7 and 8): a lost root is replaced by an
election among its members, and the joiners of a root that lost a race end in the
winner's tree. In memory, on SimNet, with a virtual clock."""
from collections import Counter

import pytest

from pfslab.protocol import codec
from pfslab.protocol.phone import Phone, PhoneId, Timers
from pfslab.protocol.states import State
from pfslab.sim import scenario
from simcheck import assert_all_verified, assert_declared

MODEL = "CP-7961G"


def tftp_by_file(net):
    return Counter(f for _, _, f in net.tftp_requests if not f.endswith(".cnf.xml"))


def _root_in(phones, state, serving):
    for p in phones:
        for f, s in p.sessions.items():
            if s.state == state and (not serving or s.children):
                return p, f
    return None, None


@pytest.mark.parametrize("silent", [False, True], ids=["crash", "silent"])
@pytest.mark.parametrize("when,state", [("before its fetch", State.ROOT_WAITING),
                                        ("during its fetch", State.ROOT_FETCHING),
                                        ("while serving", State.ROOT_COMPLETE)])
def test_a_lost_root_is_replaced_by_an_election(when, state, silent):
    specs = scenario.phone_specs(1, 12, [MODEL])
    net, phones = scenario.build(specs, lan_bps=1e6, wan_bps=256e3)
    for p in phones:
        net.reset(p)
    t, victim = 0.0, None
    while victim is None:
        t += 0.02
        net.run(until=t)
        victim, file = _root_in(phones, state, serving=state == State.ROOT_COMPLETE)
        assert t < 300, f"no root {when}"
    members = sum(1 for p in phones if p is not victim and file in p.sessions)
    net.kill(victim, at=net.now, silent=silent)
    net.run(until=net.now + 1800)
    survivors = [p for p in phones if p is not victim]
    assert_all_verified(survivors)
    assert_declared(net)
    fetched = tftp_by_file(net)
    # the dead root's fetch (if it got that far) plus its successor's: not one per member
    assert fetched[file] <= 2 < members
    assert all(n <= 2 for n in fetched.values()), fetched
    assert sum(1 for p in survivors if p.installed[file].source == "tftp") <= 1
    if state != State.ROOT_COMPLETE:     # (a serving root's bytes in flight still arrive)
        text = "\n".join(r.text for p in survivors for r in net.nodes[p.id.ip].logs)
        assert "lost the root" in text and "listening again" in text


def _kill_first_root(phones, net, state, silent):
    """Run until some phone is root of a file in ``state`` (serving, for ROOT_COMPLETE), kill
    it there; returns (victim, file)."""
    t, victim = 0.0, None
    while victim is None:
        t += 0.02
        net.run(until=t)
        victim, file = _root_in(phones, state, serving=state == State.ROOT_COMPLETE)
        assert t < 300, f"no root in {state}"
    net.kill(victim, at=net.now, silent=silent)
    return victim, file


@pytest.mark.parametrize("state", [State.ROOT_WAITING, State.ROOT_FETCHING,
                                   State.ROOT_COMPLETE], ids=str)
@pytest.mark.parametrize("n", [8, 12, 20])
def test_re_election_rebuilds_one_tree_for_every_seed(n, state):
    """Whatever the seed (so XIDs, strengths and timing) and the tree's size: after the root
    dies, the survivors fetch each file from HQ once (plus what the dead root fetched itself),
    and every survivor ends verified."""
    for seed in range(1, 6):
        specs = scenario.phone_specs(1, n, [MODEL])
        net, phones = scenario.build(specs, seed=seed, lan_bps=1e6, wan_bps=256e3)
        for p in phones:
            net.reset(p)
        victim, file = _kill_first_root(phones, net, state, silent=seed % 2 == 0)
        net.run(until=net.now + 1800)
        survivors = [p for p in phones if p is not victim]
        assert_all_verified(survivors)
        assert_declared(net)
        by_survivors = Counter(f for _, ip, f in net.tftp_requests
                               if ip != victim.id.ip and not f.endswith(".cnf.xml"))
        load = survivors[0].load
        case = f"seed {seed}, {n} phones, root of {file} killed in {state}"
        assert set(by_survivors) <= {load.loads_file} | {c.name for c in load.components}
        assert all(k == 1 for k in by_survivors.values()), (case, by_survivors)
        if state != State.ROOT_COMPLETE:      # it never held the file: a survivor fetched it
            assert by_survivors[file] == 1, case
            # one tree, and its root's registrar knows it: each phone got the file from the
            # parent the new root placed it under
            new_root, = [p for p in survivors if p.sessions[file].registrar is not None]
            placed = new_root.sessions[file].registrar.parent
            assert {p.id.ip: p.installed[file].source for p in survivors if p is not new_root
                    } == {ip: up for ip, up in placed.items() if up is not None}, case


class Racer(Phone):
    """A phone on a lossy LAN: it misses the claims of ``deaf_to`` (and their ROOTs until
    ``deaf_until``) and the first JOIN of ``drop_join_from`` for each file; ``strength``
    fixes its tentative strengths."""
    deaf_to: tuple = ()
    deaf_until = 0.0
    drop_join_from = None
    strength = None

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.dropped = set()

    def on_datagram(self, now, data, src):
        try:
            m = codec.decode(data)
        except codec.DecodeError:
            m = None
        if m is not None and src in self.deaf_to and (
                m.type == codec.MsgType.CLAIM or (m.type == codec.MsgType.ROOT
                                                  and now < self.deaf_until)):
            return
        if (m is not None and m.type == codec.MsgType.JOIN and src == self.drop_join_from
                and m.file not in self.dropped):
            self.dropped.add(m.file)
            return
        super().on_datagram(now, data, src)

    def _begin_file(self, file):
        if self.strength is not None and self.pfs:
            super()._begin_file(file)
            self.sessions[file].strength = self.strength
        else:
            super()._begin_file(file)


def test_the_joiners_of_a_demoted_root_end_in_the_winners_tree():
    """Two phones that miss each other's claims both confirm. The weaker one (A, first to
    confirm) loses a joiner's first JOIN, then hears the stronger root (B) and demotes
    itself; the joiner's retried JOIN gets REFUSE NOT_ROOT. It must end in B's tree."""
    specs = scenario.phone_specs(1, 3, [MODEL])
    net, phones = scenario.build(specs)
    a_ip, b_ip, c_ip = (sp.ip for sp in specs)
    roles = {a_ip: dict(deaf_to=(b_ip,), drop_join_from=c_ip, strength=1,
                        t=Timers(listen_min=0.25, listen_spread=0.0)),
             b_ip: dict(deaf_to=(a_ip,), deaf_until=2.5, strength=0x7FFFFFF0,
                        t=Timers(listen_min=0.6, listen_spread=0.0)),
             c_ip: dict(t=Timers(listen_min=3.0, listen_spread=0.0))}
    for i, sp in enumerate(specs):
        r = dict(roles[sp.ip])
        timers = r.pop("t")
        cls = type(f"Racer{i}", (Racer,), r)
        net.nodes[sp.ip].phone = phones[i] = cls(PhoneId(sp.name, sp.ip, sp.mac, MODEL),
                                                 net.server, timers=timers,
                                                 trust=phones[i].trust)
    for p in phones:
        net.reset(p)
    net.run(until=600)
    assert_all_verified(phones)
    assert_declared(net)
    a, b, c = phones
    loads = a.load.loads_file
    text = "\n".join(r.text for r in net.nodes[c_ip].logs)
    assert "refused: NOT_ROOT" in text, "the race did not happen"
    assert "demoting" in "\n".join(r.text for r in net.nodes[a_ip].logs)
    assert c.installed[loads].source != "tftp"
    assert b.sessions[loads].is_root and set(b.sessions[loads].registrar.parent) >= {a_ip, c_ip}
    assert set(tftp_by_file(net).values()) == {1}        # nobody fell back to HQ
