"""Hostile and broken peers (issue 8): every honest phone ends verified or with an explicit
failure, within a virtual-time bound, holding bounded state. In memory, on SimNet."""
import hashlib
import random
from collections import Counter

import pytest

from pfslab import firmware
from pfslab.protocol import codec
from pfslab.protocol.codec import Frame, FrameType
from pfslab.protocol.phone import Fetch, Phone, PhoneId, Send, Timers, Write
from pfslab.protocol.states import ROOT_STATES, State
from pfslab.sim import scenario
from pfslab.site import Site
from simcheck import assert_all_verified, assert_declared

MODEL = "CP-7961G"
T = Timers()


def site(n, rogues=None, phone_cls=Phone, **kw):
    """n phones on one subnet; ``rogues`` maps a phone index to the Phone subclass it runs."""
    specs = scenario.phone_specs(1, n, [MODEL])
    net, phones = scenario.build(specs, phone_cls=phone_cls, **kw)
    for i, cls in (rogues or {}).items():
        sp = specs[i]
        node = net.nodes[sp.ip]
        node.phone = phones[i] = cls(PhoneId(sp.name, sp.ip, sp.mac, MODEL), net.server,
                                       trust=phones[i].trust)
    return net, phones


def start(net, phones, at=0.0):
    for p in phones:
        net.reset(p, at=at)


def logs(net, p):
    return [r.text for r in net.nodes[p.id.ip].logs]


def biggest_component(scale=0.01):
    load, _ = firmware.build_load(firmware.model_load(MODEL), scale)
    return max(c.size for c in load.components)


# --------------------------------------------------------------------- stalling parents

class Staller(Phone):
    """Takes children and keeps them waiting with a HOLD every 2 s, never sending the file."""
    every = 2.0

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.stalled: dict[int, bytes] = {}     # sid -> the file it pretends to send
        self.victims = 0
        self.tick_at = None

    def _serve(self, s, sid):
        self.stalled[sid] = s.data
        self.victims += 1
        self.started(sid, s.data)
        if self.tick_at is None:
            self.tick_at = self.now + self.every

    def started(self, sid, data):
        pass

    def tick(self, sid, data):
        return codec.encode_frame(Frame(FrameType.HOLD, have=1, total=2))

    def next_deadline(self):
        dl = super().next_deadline()
        return min(x for x in (dl, self.tick_at) if x is not None) if (
            dl is not None or self.tick_at is not None) else None

    def on_timer(self, now):
        super().on_timer(now)
        if self.tick_at is not None and now >= self.tick_at:
            for sid in [sid for sid in self.stalled if sid not in self.streams]:
                del self.stalled[sid]
            for sid, data in self.stalled.items():
                self._out.append(Write(sid, self.tick(sid, data)))
            self.tick_at = now + self.every


class ByteTrickler(Staller):
    """Sends the right HEADER, then one DATA byte every 7 s."""
    every = 7.0

    def started(self, sid, data):
        self.sent = getattr(self, "sent", {})
        self.sent[sid] = 0
        self._out.append(Write(sid, codec.encode_frame(Frame(
            FrameType.HEADER, size=len(data), sha256=hashlib.sha256(data).digest()))))

    def tick(self, sid, data):
        k = self.sent[sid]
        self.sent[sid] = k + 1
        return codec.encode_data(data[k:k + 1]) if k < len(data) - 1 else b""


@pytest.mark.parametrize("staller", [Staller, ByteTrickler], ids=["holds", "byte-trickle"])
def test_holds_cannot_keep_a_child_past_its_budget(staller):
    net, phones = site(10, rogues={0: staller})
    start(net, phones)
    honest = phones[1:]
    # the .loads' and then a component's whole PFS wait (DEADLINE), and TFTP time after
    bound = T.deadline(T.max_loads_size) + T.deadline(biggest_component()) + 60
    net.run(until=bound)
    assert phones[0].victims, "the staller had no children"
    assert_all_verified(honest)
    assert_declared(net)
    text = "\n".join(t for p in honest for t in logs(net, p))
    assert "within its budget" in text
    # nobody got a file from the staller
    assert not [p for p in honest for i in p.installed.values() if i.source == phones[0].id.ip]


# --------------------------------------------------------------------- oversized streams

class Inflater(Phone):
    """Serves a HEADER that claims 64 MiB, then 1 MiB of DATA."""

    def _serve(self, s, sid):
        chunk = codec.encode_data(b"\0" * codec.MAX_FRAME)
        head = codec.encode_frame(Frame(FrameType.HEADER, size=64 << 20, sha256=b"\1" * 32))
        self._out.append(Write(sid, head + chunk * 16 + codec.encode_frame(Frame(FrameType.END))))


class Metered(Phone):
    """An honest phone that records the most bytes it ever buffered on one stream."""
    peak = 0

    def _up_frame(self, st, f):
        super()._up_frame(st, f)
        Metered.peak = max(Metered.peak, st.got)


def test_header_beyond_the_manifest_size_is_a_protocol_error():
    Metered.peak = 0
    net, phones = site(10, rogues={0: Inflater}, phone_cls=Metered)
    start(net, phones)
    honest = phones[1:]
    net.run(until=T.deadline(T.max_loads_size) + T.deadline(biggest_component()) + 60)
    assert_all_verified(honest)
    assert_declared(net)
    text = "\n".join(t for p in honest for t in logs(net, p))
    assert "the manifest gives" in text, "the inflater served nobody"
    assert Metered.peak <= max(biggest_component(), T.max_loads_size)


# --------------------------------------------------------------------- rogue hosts

class Rogue(Phone):
    """A host on the subnet that speaks 4051 as it likes. By default it announces itself as
    root (max strength) of every file of the load every second for ``announce_for`` s, and
    answers each JOIN with ``offer()``; ``garbage`` serves wrong bytes of the right size;
    ``claims`` sends a stronger, never confirmed CLAIM for every file every 2.5 s instead."""

    strength = 0xFFFFFFFF
    announce_for = 60.0
    garbage = False
    claims = False

    def start(self, now):
        self.now = now
        name = firmware.model_load(MODEL)
        self.rmap, self.rfile = codec.load_map(name), name + ".loads"
        self.rload, _ = firmware.build_load(name, 0.01)
        self.next_ad = now
        self.joins = Counter()

    def msg(self, mtype, file=None, **kw):
        kw.setdefault("strength", self.strength)
        kw.setdefault("xid", 0xBAD)
        return codec.encode(codec.Message(mtype, map=self.rmap, model=MODEL,
                                          file=file or self.rfile, **kw))

    def next_deadline(self):
        return self.next_ad

    def on_timer(self, now):
        self.now = now
        if self.next_ad is not None and now >= self.next_ad:
            for f in self.rload.files():
                if self.claims:
                    self._send("<broadcast>", self.msg(codec.MsgType.CLAIM, f, ad=1,
                                                       strength=0x7FFFFFFF))
                else:
                    self._send("<broadcast>", self.msg(codec.MsgType.ROOT, f, server="10.0.0.10"))
            self.next_ad = now + (2.5 if self.claims else 1.0)
            if now >= self.announce_for:
                self.next_ad = None

    def on_datagram(self, now, data, src):
        self.now = now
        try:
            m = codec.decode(data)
        except codec.DecodeError:
            return
        if m.type == codec.MsgType.JOIN and m.map == self.rmap:
            self.joins[(m.file, src)] += 1
            reply = self.offer(src, m.file)
            if reply is not None:
                self._send(src, reply)

    def offer(self, src, file):
        if self.garbage:
            return self.msg(codec.MsgType.OFFER, file, parent=self.id.ip, slot=0, depth=1)
        return None

    def on_stream_data(self, now, sid, data):
        self.now = now
        st = self.streams.get(sid)
        if st is None or not self.garbage:
            return
        for f in st.reader.feed(data):
            if f.type != FrameType.REQUEST:
                continue
            size = (self.rload.component(f.file).size if f.file != self.rfile else 600)
            junk = bytes(size)
            self._out.append(Write(sid, codec.encode_frame(Frame(
                FrameType.HEADER, size=size, sha256=hashlib.sha256(junk).digest()))
                + codec.encode_data(junk) + codec.encode_frame(Frame(FrameType.END))))


def run_with_rogue(rogue_cls, n=6, until=None):
    net, phones = site(n, rogues={0: rogue_cls})
    start(net, phones)
    net.run(until=until or 3 * T.budget(T.max_loads_size) + 300)
    return net, phones[0], phones[1:]


def test_an_offer_naming_the_joiner_or_its_child_is_refused():
    """A rogue root pairs joiners as each other's parents, and offers one phone itself."""
    pairs = {}

    class LoopMaker(Rogue):
        def offer(self, src, file):
            if file != self.rfile:
                return None
            if src not in pairs:
                ips = [ip for ip in net_ips if ip != src and ip not in pairs]
                pairs[src] = ips[0] if ips and len(pairs) % 3 != 2 else src
                pairs.setdefault(pairs[src], src)
            return self.msg(codec.MsgType.OFFER, parent=pairs[src], slot=0, depth=1)

    specs = scenario.phone_specs(1, 6, [MODEL])
    net_ips = [sp.ip for sp in specs[1:]]
    net, rogue, honest = run_with_rogue(LoopMaker)
    assert rogue.joins, "nobody joined the rogue"
    assert_all_verified(honest)
    assert_declared(net)
    first_load = min(p.installed[rogue.rfile].t for p in honest)
    edges = {(c, p) for t, c, p in net.connections if t < first_load}   # the .loads' edges
    assert not [(c, p) for c, p in edges if c == p], "a phone connected to itself"
    # a mutual pair may connect (both OFFERs cross), but is broken at once, far within the
    # progress budget that would otherwise be the only way out
    assert first_load < T.budget(0) / 2


# --------------------------------------------------------------------- one phone by hand

ROGUE_IP = "10.1.0.200"


class Drive:
    """One phone driven by hand on a virtual clock; its TFTP fetches are answered at once."""

    def __init__(self, timers=None):
        specs = scenario.phone_specs(1, 3, [MODEL])
        self.files = Site(specs, firmware_scale=0.01).files("pfs")
        sp = specs[0]
        self.p = Phone(PhoneId(sp.name, sp.ip, sp.mac, MODEL), "10.0.0.10", timers=timers)
        self.now, self.out = 0.0, []
        self.loads = firmware.model_load(MODEL) + ".loads"
        self.p.start(0.0)
        self.pump()

    def pump(self):
        while out := self.p.pop_outputs():
            for o in out:
                self.out.append(o)
                if isinstance(o, Fetch):
                    self.p.on_fetched(self.now, o.file, self.files.get(o.file), "")

    def advance(self, dt):
        end = self.now + dt
        while (dl := self.p.next_deadline()) is not None and dl <= end:
            self.now = dl
            self.p.on_timer(dl)
            self.pump()
        self.now = end

    def feed(self, mtype, src, file=None, **kw):
        kw.setdefault("strength", codec.ROOT_BUMP | 7)
        m = codec.Message(mtype, xid=kw.pop("xid", 0x51), map=self.p.map, model=MODEL,
                          file=file or self.loads, **kw)
        self.p.on_datagram(self.now, codec.encode(m), src)
        self.pump()

    @property
    def state(self):
        return self.p.sessions[self.loads].state

    def tftp(self, file):
        return sum(1 for o in self.out if isinstance(o, Fetch) and o.file == file)

    def sent(self, mtype):
        return [o for o in self.out if isinstance(o, Send) and codec.decode(o.data).type == mtype]


def test_a_spoofed_refuse_does_not_send_a_phone_to_tftp():
    d = Drive()
    d.feed(codec.MsgType.ROOT, "10.1.0.50", server="10.0.0.10")
    assert d.state == State.JOINING
    d.feed(codec.MsgType.REFUSE, "10.1.0.50", reason=codec.RefuseReason.NOT_ROOT)
    assert d.tftp(d.loads) == 0
    assert d.state == State.LISTENING
    d.feed(codec.MsgType.ROOT, "10.1.0.50", server="10.0.0.10")   # the real root, again
    assert d.state == State.JOINING


def test_an_unconfirmed_root_captures_nobody():
    d = Drive()
    d.feed(codec.MsgType.ROOT, ROGUE_IP, strength=0, server="10.0.0.10")
    assert d.state == State.LISTENING and not d.sent(codec.MsgType.JOIN)


def test_a_silent_max_strength_root_costs_a_re_election_not_a_fallback():
    d = Drive()
    d.feed(codec.MsgType.ROOT, ROGUE_IP, strength=0xFFFFFFFF, server="10.0.0.10")
    assert d.state == State.JOINING
    d.advance(T.join_retry * T.join_tries + 0.01)
    assert d.state == State.LISTENING and d.tftp(d.loads) == 0
    d.feed(codec.MsgType.ROOT, ROGUE_IP, strength=0xFFFFFFFF, server="10.0.0.10")
    assert d.state == State.LISTENING                    # shunned for this file
    d.advance(T.listen_min + T.listen_spread + T.ad_interval * (T.ads + 1) + 0.01)
    assert d.state in ROOT_STATES                        # alone: it became the root itself


def test_retried_refusals_end_in_a_fallback_eventually():
    d = Drive()
    for _ in range(T.max_attempts + 1):
        d.feed(codec.MsgType.ROOT, "10.1.0.50", server="10.0.0.10")
        d.feed(codec.MsgType.REFUSE, "10.1.0.50", reason=codec.RefuseReason.FULL)
    assert d.tftp(d.loads) == 1 and d.p.installed[d.loads].source == "tftp"


def tftp_by_file(net):
    return Counter(f for _, _, f in net.tftp_requests if not f.endswith(".cnf.xml"))


def test_a_claim_trickle_cannot_starve_the_election():
    """A stronger claim every 2.5 s, never confirmed: phones stop yielding to that claimer
    after one YIELD_WAIT and elect among themselves."""

    class Trickler(Rogue):
        claims = True
        announce_for = 3600.0

    net, rogue, honest = run_with_rogue(Trickler, n=8, until=200)
    assert_all_verified(honest)
    assert_declared(net)
    assert set(tftp_by_file(net).values()) == {1}          # one root per file, no fallback


def test_a_root_serving_bad_bytes_is_distrusted_for_every_file():
    """A max-strength rogue root answers every JOIN with itself as parent and serves wrong
    bytes: no phone installs them, and after the first file nobody follows it again."""

    class Poisoner(Rogue):
        garbage = True
        announce_for = 3600.0

    net, rogue, honest = run_with_rogue(Poisoner, n=8, until=300)
    assert_all_verified(honest)
    assert_declared(net)
    assert not [p for p in honest for i in p.installed.values() if i.source == rogue.id.ip]
    joined = {src for (f, src) in rogue.joins}
    assert joined, "nobody joined the rogue"
    for p in honest:
        if p.id.ip in joined:
            assert rogue.id.ip in p.distrusted
    # each phone was caught at most once: no JOINs to the rogue after it served bad bytes
    files_per_phone = Counter(src for (f, src) in rogue.joins)
    assert max(files_per_phone.values()) == 1


# --------------------------------------------------------------------- bounded tables

def spoofed(i):
    return f"10.2.{i // 250}.{i % 250 + 1}"


def test_the_registrar_is_bounded_and_forgets_members_that_never_report():
    d = Drive(Timers(max_members=64))
    d.advance(3)
    s = d.p.sessions[d.loads]
    assert s.is_root
    for i in range(5000):
        d.feed(codec.MsgType.JOIN, spoofed(i), xid=s.xid, strength=0)
    assert s.registrar.members == 64
    assert len(d.sent(codec.MsgType.OFFER)) == 64          # the rest were refused FULL
    d.advance(2 * T.budget(T.max_loads_size) + 10)          # nobody ever reported READY
    assert s.registrar.members == 0


def test_idle_connections_are_bounded_and_closed():
    d = Drive()
    for i in range(10000):
        d.p.on_accept(d.now, spoofed(i))
    d.pump()
    assert len(d.p.streams) <= T.max_idle_streams
    d.advance(T.request_wait + 0.1)
    assert not [st for st in d.p.streams.values() if not st.up]


def test_remembered_roots_are_bounded():
    d = Drive()
    for i in range(10000):
        d.feed(codec.MsgType.ROOT, "10.1.0.60", file=f"made-up-{i}.sbn", server="10.0.0.10")
    assert len(d.p.heard_roots) <= T.max_heard_roots
    d.advance(T.root_memory + 1)
    d.feed(codec.MsgType.ROOT, "10.1.0.60", file="one-more.sbn", server="10.0.0.10")
    assert list(d.p.heard_roots) == ["one-more.sbn"]


# --------------------------------------------------------------------- a noisy neighbour

class Chaos(Rogue):
    """Sends a random, well-formed datagram five times a second, for two minutes: every kind,
    XIDs and addresses it overheard, random strengths and fields, broadcast or unicast."""

    announce_for = 120.0

    def start(self, now):
        super().start(now)
        self.rng = random.Random(7)
        self.xids, self.ips = {0xBAD}, set()

    def on_datagram(self, now, data, src):
        super().on_datagram(now, data, src)
        try:
            m = codec.decode(data)
        except codec.DecodeError:
            return
        self.xids.add(m.xid)
        self.ips.add(src)

    def on_timer(self, now):
        self.now = now
        if self.next_ad is None or now < self.next_ad:
            return
        r, ips = self.rng, sorted(self.ips) or ["10.1.0.12"]
        mtype = r.choice(list(codec.MsgType))
        kw = {"xid": r.choice(sorted(self.xids)),
              "strength": r.choice([0, 1, 0x7FFFFFFF, 0x80000001, 0xFFFFFFFF,
                                    r.getrandbits(32)])}
        if mtype == codec.MsgType.CLAIM:
            kw["ad"] = r.randrange(6)
        elif mtype == codec.MsgType.OFFER:
            kw.update(parent=r.choice(ips + [self.id.ip, "0.0.0.0"]), slot=r.randrange(3),
                      depth=r.randrange(9))
        elif mtype == codec.MsgType.JOIN:
            kw["lost_parent"] = r.choice(ips + ["0.0.0.0"])
        elif mtype == codec.MsgType.REFUSE:
            kw["reason"] = r.randrange(6)
        elif mtype == codec.MsgType.ROOT:
            kw["server"] = "10.0.0.10"
        elif mtype == codec.MsgType.READY:
            kw.update(source=r.randrange(2), size=r.getrandbits(32))
        file = r.choice(self.rload.files())
        self._send(r.choice(["<broadcast>"] * 3 + ips), self.msg(mtype, file, **kw))
        self.next_ad = now + 0.2 if now < self.announce_for else None


def test_a_noisy_neighbour_cannot_hang_or_break_anyone():
    net, rogue, honest = run_with_rogue(Chaos, n=8, until=T.deadline(T.max_loads_size)
                                        + T.deadline(biggest_component()) + 120)
    assert rogue.ips, "the rogue heard nobody"
    assert_all_verified(honest)
    assert_declared(net)
