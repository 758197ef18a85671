"""The sans-I/O phone on the in-memory network with a virtual clock (no root, no sockets)."""
import hashlib
import re
from collections import Counter, defaultdict

import pytest

from pfslab import firmware
from pfslab.protocol import codec
from pfslab.protocol.codec import Message, MsgType
from pfslab.protocol.phone import Phone
from pfslab.sim import scenario

MODEL = "CP-7961G"


def run_site(n, models=(MODEL,), subnets=1, **kw):
    specs = scenario.phone_specs(subnets, n, list(models))
    net, phones = scenario.build(specs, **kw)
    for p in phones:
        net.reset(p)
    net.run()
    return net, phones, specs


def hierarchies(phones):
    """(subnet-less) {(model, file): {child ip: source}} from what each phone installed."""
    h = defaultdict(dict)
    for p in phones:
        for f, inst in p.installed.items():
            h[(p.id.model, f)][p.id.ip] = inst.source
    return h


def depth_of(ip, parents):
    d = 0
    while parents[ip] != "tftp":
        ip = parents[ip]
        d += 1
        assert d < 1000, "cycle in the tree"
    return d


def assert_byte_identical(net, phones):
    """CSCtg96408's regression: every phone ends with the server's exact bytes."""
    for p in phones:
        assert p.completed and p.completed.ok, p.id.name
        for f, s in p.sessions.items():
            assert s.data == net.files[f], (p.id.name, f)
            assert all(i.sha256_ok for i in p.installed.values())


# --------------------------------------------------------------------- one phone alone

def test_lone_phone_becomes_root_like_the_seed_log():
    net, [p], _ = run_site(1)
    assert p.completed.ok
    lines = net.log_text(p)
    text = "\n".join(lines)
    # The seed's sequence, for the .loads file: listen, open UDP, slots, offer, 4 ads with a
    # timeout before each, a timeout after the 4th, confirmation, @@@HROOT, XfrCmd.
    seq = [
        r"DBG \S+ DLoad: \+\+\+ fd=7 Listening on peer TCP port 4051",
        r"NOT \S+ DLoad: \^\.idl_child\.c-openUDPPort",
        r"NOT \S+ DLoad: \|parent=-1><fd\[0\]=-1 fd\[1\]=-1 FULL=0",
        r"NOT \S+ DLoad: \^\.idl_protocol\.c-sendBroadcastOffer",
        r"INF \S+ DLoad: (XID[0-9A-F]{8}) TxBdcst ClaimRoot\(tent\): map=[0-9a-f]{8} "
        r"strength=[0-9a-f]{8}",
    ]
    for n in range(1, 5):
        seq += [r"NOT \S+ DLoad: \^\.idl_timeout\.c-doTimeout",
                r"DBG \S+ DLoad: Timeout XID[0-9A-F]{8} hier=ClaimRoot\(tent\)",
                r"NOT \S+ DLoad: \^\.idl_protocol\.c-sendBroadcastOffer",
                rf"INF \S+ DLoad: XID[0-9A-F]{{8}} TxBdcst Ad {n}: ClaimRoot\(tent\)"]
    seq += [r"NOT \S+ DLoad: \^\.idl_timeout\.c-doTimeout",
            r"DBG \S+ DLoad: Timeout XID[0-9A-F]{8} hier=ClaimRoot\(tent\)",
            r"NOT \S+ DLoad: UT:Confirmed root bumping strength",
            r"NOT \S+ DLoad: @@@HROOT:XID[0-9A-F]{8} H=[0-9a-f]{8} m=CP-7961G ROOT=10\.0\.0\.10"
            r" /dnld/SCCP41\.9-4-2SR3-1S\.loads",
            r"INF \S+ DLoad: XID[0-9A-F]{8} Root sending TFTP XfrCmd on ROOT_WAITING TO"]
    start = next(i for i, line in enumerate(lines) if "+++ fd=7" in line)
    for want, got in zip(seq, lines[start:start + len(seq)]):
        assert re.fullmatch(want, got), (want, got)
    assert "H=%08x" % codec.name_hash("SCCP41.9-4-2SR3-1S.loads") in text

    # Timing: the offer, then ads 250 ms apart; confirmed 1.25 s after the offer; the
    # TFTP XfrCmd ROOT_WAIT (10 s) later.
    recs = net.nodes[p.id.ip].logs
    t_offer = next(r.t for r in recs if "TxBdcst ClaimRoot(tent):" in r.text)
    ads = [r.t for r in recs if "TxBdcst Ad " in r.text][:4]
    assert ads == pytest.approx([t_offer + 0.25 * k for k in range(1, 5)])
    t_conf = next(r.t for r in recs if "Confirmed root" in r.text)
    assert t_conf == pytest.approx(t_offer + 1.25)
    t_xfr = next(r.t for r in recs if "XfrCmd" in r.text)
    assert t_xfr == pytest.approx(t_conf + 10.0)


def test_lone_phone_fetches_everything_from_tftp_once():
    net, [p], _ = run_site(1)
    load, _ = firmware.build_load(firmware.model_load(MODEL), 0.01)
    fetched = [f for _, ip, f in net.tftp_requests if not f.endswith(".cnf.xml")]
    assert sorted(fetched) == sorted(load.files())
    assert_byte_identical(net, [p])


# --------------------------------------------------------------------- one hierarchy each

@pytest.mark.parametrize("n", [2, 3, 10, 100])
def test_n_phones_form_one_binary_tree_per_file(n):
    net, phones, _ = run_site(n)
    assert_byte_identical(net, phones)
    load, _ = firmware.build_load(firmware.model_load(MODEL), 0.01)
    h = hierarchies(phones)
    assert set(h) == {(MODEL, f) for f in load.files()}
    tftp_by_file = Counter(f for _, ip, f in net.tftp_requests if not f.endswith(".cnf.xml"))
    for (model, f), parents in h.items():
        roots = [ip for ip, src in parents.items() if src == "tftp"]
        assert len(roots) == 1, f"{f}: roots {roots}"
        assert len(parents) == n                    # every phone has the file, one source
        kids = Counter(src for src in parents.values() if src != "tftp")
        assert max(kids.values(), default=0) <= 2
        assert max(depth_of(ip, parents) for ip in parents) <= scenario.max_depth(n)
        assert tftp_by_file[f] == 1                 # CSCus67416: only the root used TFTP
        assert [ip for _, ip, ff in net.tftp_requests if ff == f] == roots


def test_each_file_has_its_own_hierarchy():
    """A phone can be a parent for one file and a child for another in the same upgrade."""
    net, phones, _ = run_site(10)
    h = hierarchies(phones)
    roots = {f: next(ip for ip, s in par.items() if s == "tftp") for (_, f), par in h.items()}
    assert len(set(roots.values())) > 1
    parent_of = {ip for par in h.values() for s in par.values() if s != "tftp" for ip in [s]}
    mixed = [p.id.ip for p in phones if p.id.ip in parent_of and any(
        par[p.id.ip] not in ("tftp",) for par in h.values())]
    assert mixed
    # every session's XID names its hierarchy: all members agree on the root's XID
    for f in roots:
        xids = {p.sessions[f].hier_xid for p in phones}
        assert len(xids) == 1


def test_two_models_form_separate_hierarchies():
    models = ("CP-7961G", "CP-7941G")
    net, phones, _ = run_site(8, models=models)
    assert_byte_identical(net, phones)
    model_of = {p.id.ip: p.id.model for p in phones}
    for (model, f), parents in hierarchies(phones).items():
        assert sum(s == "tftp" for s in parents.values()) == 1
        for child, src in parents.items():
            if src != "tftp":
                assert model_of[src] == model_of[child] == model
    # SCCP41 serves both models: each file crossed the WAN once per model
    fetched = Counter(f for _, _, f in net.tftp_requests if not f.endswith(".cnf.xml"))
    assert set(fetched.values()) == {2}


def test_subnets_are_separate_broadcast_domains():
    net, phones, specs = run_site(4, subnets=2)
    subnet = {sp.ip: sp.subnet for sp in specs}
    for p in phones:
        for inst in p.installed.values():
            if inst.source != "tftp":
                assert subnet[inst.source] == subnet[p.id.ip]
    fetched = Counter(f for _, _, f in net.tftp_requests if not f.endswith(".cnf.xml"))
    assert set(fetched.values()) == {2}


def test_non_pfs_models_and_disabled_phones_upgrade_traditionally():
    specs = scenario.phone_specs(1, 4, ["CP-7961G", "CP-7960G"])
    specs[2] = scenario.PhoneSpec(**{**specs[2].__dict__, "pfs": False})   # a 7961, PFS off
    net, phones = scenario.build(specs)
    for p in phones:
        net.reset(p)
    net.run()
    assert_byte_identical(net, phones)
    traditional = {specs[1].ip, specs[2].ip, specs[3].ip}
    for p in phones:
        sources = {i.source for i in p.installed.values()}
        assert sources == {"tftp"} if p.id.ip in traditional else True
        if p.id.ip in traditional:
            assert not any("TxBdcst" in r.text for r in net.nodes[p.id.ip].logs)


# --------------------------------------------------------------------- failures

def _phone_with_children(phones, file):
    for p in phones:
        s = p.sessions.get(file)
        if s and s.children and s.registrar is None:
            return p
    return None


@pytest.mark.parametrize("silent", [False, True], ids=["reset", "silent"])
def test_parent_vanishing_mid_transfer_its_subtree_still_completes(silent):
    specs = scenario.phone_specs(1, 12, [MODEL])
    net, phones = scenario.build(specs, lan_bps=2e6)   # a slow LAN: transfers take a while
    for p in phones:
        net.reset(p)
    # Run until a non-root phone has children waiting or receiving for some component.
    victim = None
    t = 0.0
    while victim is None:
        t += 0.5
        net.run(until=t)
        for p in phones:
            if p.load is None:
                continue
            for c in p.load.components:
                s = p.sessions.get(c.name)
                if s is not None and s.children and s.registrar is None and s.state != "COMPLETE":
                    victim = p
        assert t < 200
    net.kill(victim, at=net.now, silent=silent)
    net.run()
    survivors = [p for p in phones if p is not victim]
    assert_byte_identical(net, survivors)
    assert victim.completed is None
    # somebody noticed and recovered, by rejoining or by TFTP fallback
    text = "\n".join(line for p in survivors for line in net.log_text(p))
    assert victim.id.ip in text and ("lost parent" in text or "fallback to TFTP" in text)


class CorruptingPhone(Phone):
    """Serves its children altered bytes, with a header that matches the altered bytes."""

    def _serve(self, s, sid):
        good = s.data
        s.data = bytes([good[0] ^ 0xFF]) + good[1:]
        try:
            super()._serve(s, sid)
        finally:
            s.data = good


def test_bad_digest_is_never_installed_nor_passed_on():
    specs = scenario.phone_specs(1, 10, [MODEL])
    net, phones = scenario.build(specs)
    evil_ip = specs[0].ip
    # replace phone 0 with a corrupting one
    from pfslab.protocol.phone import PhoneId
    node = net.nodes[evil_ip]
    node.phone = CorruptingPhone(PhoneId(specs[0].name, evil_ip, specs[0].mac, MODEL),
                                 net.server, trust=phones[0].trust)
    phones[0] = node.phone
    for p in phones:
        net.reset(p)
    net.run()
    assert_byte_identical(net, phones)        # every installed byte is the server's
    victims = [p for p in phones[1:]
               if any("digest check FAILED" in r.text for r in net.nodes[p.id.ip].logs)]
    assert victims, "the corrupting phone served nobody"
    for p in victims:
        bad = [r.text for r in net.nodes[p.id.ip].logs if "digest check FAILED" in r.text]
        for line in bad:
            f = line.split()[1].rstrip(":")
            assert p.installed[f].source != evil_ip   # never installed the bad copy
            assert evil_ip in p.distrusted
            # the root heard of it (JOIN naming it as lost) and never offers it again
            root = next(r for r in phones if r.sessions[f].is_root)
            if root is not phones[0]:
                assert evil_ip in root.sessions[f].registrar.dead
    for p in phones:
        for f, inst in p.installed.items():
            assert hashlib.sha256(p.sessions[f].data).digest() == \
                hashlib.sha256(net.files[f]).digest()


def test_staggered_reset_late_phone_joins_the_existing_root():
    specs = scenario.phone_specs(1, 4, [MODEL])
    net, phones = scenario.build(specs)
    for i, p in enumerate(phones):
        net.reset(p, at=0.0 if i < 3 else 30.0)
    net.run()
    assert_byte_identical(net, phones)
    late = phones[3]
    assert all(i.source != "tftp" for i in late.installed.values())
    fetched = Counter(f for _, _, f in net.tftp_requests if not f.endswith(".cnf.xml"))
    assert set(fetched.values()) == {1}


def test_hostile_datagrams_and_frames_are_dropped_not_fatal():
    net, phones, _ = run_site(3)
    p = phones[0]
    p.on_datagram(net.now, b"\x00" * 7, "10.1.1.99")
    p.on_datagram(net.now, codec.MAGIC + b"\xff" * 40, "10.1.1.99")
    sid = p.on_accept(net.now, "10.1.1.99")
    p.on_stream_data(net.now, sid, b"GET / HTTP/1.0\r\n\r\n")
    out = p.pop_outputs()
    assert any(getattr(o, "sid", None) == sid for o in out)   # ABORT + close, no exception


def test_listening_first_keeps_a_bulk_reset_from_flooding_offers():
    """Phones listen 250..750 ms before their offer: most hear a stronger claim first and
    never send one, so 100 phones send far fewer than 100 offers per file."""
    net, phones, _ = run_site(100)
    per_file = Counter()
    for p in phones:
        for f, s in p.sessions.items():
            if any(f"{'XID%08X' % s.xid} TxBdcst ClaimRoot(tent):" in r.text
                   for r in net.nodes[p.id.ip].logs):
                per_file[f] += 1
    assert per_file and max(per_file.values()) < 25, per_file


def test_late_phone_joins_existing_roots_without_sending_a_claim():
    specs = scenario.phone_specs(1, 3, [MODEL])
    net, phones = scenario.build(specs)
    for i, p in enumerate(phones):
        net.reset(p, at=0.0 if i < 2 else 20.0)
    net.run()
    assert_byte_identical(net, phones)
    late = phones[2]
    comp_xids = {"XID%08X" % late.sessions[c.name].xid for c in late.load.components}
    claims = [r.text for r in net.nodes[late.id.ip].logs if "TxBdcst ClaimRoot" in r.text]
    assert not [c for c in claims if c.split()[0] in comp_xids]   # roots were announcing
    assert all(i.source != "tftp" for i in late.installed.values())


def test_a_root_heard_before_the_file_is_reached_is_joined_without_election():
    net, phones, _ = run_site(2)
    p, other = phones
    root = Message(MsgType.ROOT, xid=0x1234, strength=codec.ROOT_BUMP | 5, map=p.map,
                   model=p.id.model, file="later.sbn", server=net.server)
    p.on_datagram(net.now, codec.encode(root), other.id.ip)
    p.pop_outputs()
    p._begin_file("later.sbn")
    out = p.pop_outputs()
    sends = [o for o in out if getattr(o, "dst", None) == other.id.ip]
    assert sends and codec.decode(sends[0].data).type == MsgType.JOIN
    assert not [o for o in out if getattr(o, "dst", None) == "<broadcast>"]


def test_roots_fall_quiet_when_done_and_late_phones_still_join():
    """Issue 7: once every member of a hierarchy holds the file, its root stops its ROOT
    broadcasts, so the subnet's broadcast load falls to nothing; a phone reset later asks
    (a CLAIM gets a unicast ROOT) and joins the existing trees."""
    specs = scenario.phone_specs(1, 11, [MODEL])
    net, phones = scenario.build(specs)
    *early, late = phones
    for p in early:
        net.reset(p)
    t_done = net.run()
    assert all(p.completed and p.completed.ok for p in early)
    net.reset(late, at=t_done + 120)
    before = net.datagrams
    net.run(until=t_done + 30)                     # let the last announcements drain
    settled = net.datagrams
    net.run(until=t_done + 119)
    assert net.datagrams == settled, "roots keep broadcasting after completion"
    assert settled - before < 10 * len(early)
    net.run()
    assert late.completed and late.completed.ok
    assert all(i.source != "tftp" for i in late.installed.values())
    fetched = Counter(f for _, _, f in net.tftp_requests if not f.endswith(".cnf.xml"))
    assert set(fetched.values()) == {1}
