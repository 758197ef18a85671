"""Hostile and broken peers (issue 8): every honest phone ends verified or with an explicit
failure, within a virtual-time bound, holding bounded state. In memory, on SimNet."""
from collections import Counter

from pfslab import firmware
from pfslab.protocol import codec
from pfslab.protocol.codec import Frame, FrameType
from pfslab.protocol.phone import Phone, PhoneId, Timers, Write
from pfslab.sim import scenario

MODEL = "CP-7961G"
T = Timers()


def site(n, rogues=None, phone_cls=Phone, **kw):
    """n phones on one subnet; ``rogues`` maps a phone index to the Phone subclass it runs."""
    specs = scenario.phone_specs(1, n, [MODEL])
    net, phones = scenario.build(specs, phone_cls=phone_cls, **kw)
    for i, cls in (rogues or {}).items():
        sp = specs[i]
        node = net.nodes[sp.ip]
        node.phone = phones[i] = cls(PhoneId(sp.name, sp.ip, sp.mac, MODEL), net.server)
    return net, phones


def start(net, phones, at=0.0):
    for p in phones:
        net.reset(p, at=at)


def logs(net, p):
    return [r.text for r in net.nodes[p.id.ip].logs]


def biggest_component(scale=0.01):
    load, _ = firmware.build_load(firmware.model_load(MODEL), scale)
    return max(c.size for c in load.components)


def assert_all_verified(phones):
    for p in phones:
        assert p.completed is not None, f"{p.id.name} hangs"
        assert p.completed.ok, p.id.name
        assert all(i.sha256_ok for i in p.installed.values())


# --------------------------------------------------------------------- stalling parents

class Staller(Phone):
    """Takes children and keeps them waiting with a HOLD every 2 s, never sending the file."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.stalled: set[int] = set()
        self.hold_at = None

    def _serve(self, s, sid):
        self.stalled.add(sid)
        if self.hold_at is None:
            self.hold_at = self.now + 2.0

    def next_deadline(self):
        dl = super().next_deadline()
        return min(x for x in (dl, self.hold_at) if x is not None) if (
            dl is not None or self.hold_at is not None) else None

    def on_timer(self, now):
        super().on_timer(now)
        if self.hold_at is not None and now >= self.hold_at:
            hold = codec.encode_frame(Frame(FrameType.HOLD, have=1, total=2))
            self.stalled &= set(self.streams)
            for sid in self.stalled:
                self._out.append(Write(sid, hold))
            self.hold_at = now + 2.0


def test_holds_cannot_keep_a_child_past_its_budget():
    net, phones = site(10, rogues={0: Staller})
    start(net, phones)
    honest = phones[1:]
    bound = 3 * T.budget(biggest_component()) + 120
    net.run(until=bound)
    assert phones[0].stalled, "the staller had no children"
    assert_all_verified(honest)
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
    net.run(until=3 * T.budget(T.max_loads_size) + 120)
    assert_all_verified(honest)
    text = "\n".join(t for p in honest for t in logs(net, p))
    assert "the manifest gives" in text, "the inflater served nobody"
    assert Metered.peak <= max(biggest_component(), T.max_loads_size)


# --------------------------------------------------------------------- rogue hosts

class Rogue(Phone):
    """A host on the subnet that speaks 4051 as it likes. It announces itself as root of the
    .loads hierarchy (max strength) every second, and answers each JOIN with ``offer()``."""

    strength = 0xFFFFFFFF
    announce_for = 60.0

    def start(self, now):
        self.now = now
        load = firmware.model_load(MODEL)
        self.rmap, self.rfile = codec.load_map(load), load + ".loads"
        self.next_ad = now
        self.joins = Counter()

    def msg(self, mtype, **kw):
        return codec.encode(codec.Message(mtype, xid=0xBAD, strength=self.strength,
                                          map=self.rmap, model=MODEL, file=self.rfile, **kw))

    def next_deadline(self):
        return self.next_ad if self.next_ad is not None else None

    def on_timer(self, now):
        self.now = now
        if self.next_ad is not None and now >= self.next_ad:
            self._send("<broadcast>", self.msg(codec.MsgType.ROOT, server="10.0.0.10"))
            self.next_ad = now + 1.0 if now < self.announce_for else None

    def on_datagram(self, now, data, src):
        self.now = now
        try:
            m = codec.decode(data)
        except codec.DecodeError:
            return
        if m.type == codec.MsgType.JOIN and m.file == self.rfile:
            self.joins[src] += 1
            reply = self.offer(src)
            if reply is not None:
                self._send(src, reply)

    def on_accept(self, now, peer):
        return super().on_accept(now, peer)

    def offer(self, src):
        return None


def run_with_rogue(rogue_cls, n=6, until=None):
    net, phones = site(n, rogues={0: rogue_cls})
    start(net, phones)
    net.run(until=until or 3 * T.budget(T.max_loads_size) + 300)
    return net, phones[0], phones[1:]


def test_an_offer_naming_the_joiner_or_its_child_is_refused():
    """A rogue root pairs joiners as each other's parents, and offers one phone itself."""
    pairs = {}

    class LoopMaker(Rogue):
        def offer(self, src):
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
    first_load = min(p.installed[rogue.rfile].t for p in honest)
    edges = {(c, p) for t, c, p in net.connections if t < first_load}   # the .loads' edges
    assert not [(c, p) for c, p in edges if c == p], "a phone connected to itself"
    # a mutual pair may connect (both OFFERs cross), but is broken at once, far within the
    # progress budget that would otherwise be the only way out
    assert first_load < T.budget(0) / 2
