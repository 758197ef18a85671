"""Real signatures on the in-memory network: a rogue peer that signs its own manifest and
components with a key the phones do not trust gets nothing installed (issue 8 item 6)."""
import hashlib

import pytest

from pfslab import firmware
from pfslab.protocol.phone import Phone, PhoneId
from pfslab.sim import scenario
from pfslab.site import Site
from pfslab.sim.memnet import SimNet

MODEL = "CP-7961G"
SCALE = 0.005


def forged_load(name: str, signer: firmware.Signer) -> dict[str, bytes]:
    """A complete load of the rogue's own: every component altered, and a manifest that lists
    the altered digests, all signed with the rogue's key."""
    _, files = firmware.build_load(name, SCALE, signer)
    genuine = firmware.parse_loads(files[name + ".loads"], signer.trust)
    out, comps = {}, []
    for c in genuine.components:
        data = files[c.name][:-8] + b"EVILBYTE"
        out[c.name] = data
        comps.append(firmware.Component(c.name, len(data), hashlib.sha256(data).hexdigest()))
    load = firmware.LoadSet(name, tuple(comps))
    out[load.loads_file] = firmware.encode_loads(load, signer)
    return out


class RoguePeer(Phone):
    """Fetches the genuine files (it is on the LAN like any phone), then serves its children
    the rogue's own signed load instead."""
    forged: dict[str, bytes] = {}

    def _serve(self, s, sid):
        good = s.data
        s.data = self.forged.get(s.file, good)
        try:
            super()._serve(s, sid)
        finally:
            s.data = good


def run_site(n: int, hq: firmware.Signer, rogue_key: firmware.Signer):
    """n phones trusting ``hq``'s key; the first is the rogue, reset 30 s before the others
    so that it is the root they all join."""
    specs = scenario.phone_specs(1, n, [MODEL])
    files = Site(specs, firmware_scale=SCALE).files("pfs", hq)
    net = SimNet(files)
    RoguePeer.forged = forged_load(firmware.model_load(MODEL), rogue_key)
    phones = [net.add((RoguePeer if i == 0 else Phone)(
        PhoneId(sp.name, sp.ip, sp.mac, sp.model), net.server, trust=hq.trust), sp.subnet)
        for i, sp in enumerate(specs)]
    for i, p in enumerate(phones):
        net.reset(p, at=0.0 if i == 0 else 30.0)
    net.run()
    return net, phones


@pytest.mark.parametrize("rogue_key", ["its own key", "the test fixture key"])
def test_rogue_signed_manifest_gets_nothing_installed(rogue_key):
    hq = firmware.Signer.generate()                    # the run's key, only at HQ
    key = firmware.Signer.generate() if rogue_key == "its own key" else firmware.FIXTURE_SIGNER
    net, phones = run_site(6, hq, key)
    rogue, honest = phones[0], phones[1:]
    loads = firmware.model_load(MODEL) + ".loads"
    served = [(child, parent) for _, child, parent in net.connections if parent == rogue.id.ip]
    assert served, "the rogue served nobody: the test proves nothing"
    tampered = 0
    for p in honest:
        assert p.completed and p.completed.ok, p.id.name
        for f, inst in p.installed.items():
            tampered += p.sessions[f].data != net.files[f]
        assert p.load == firmware.parse_loads(net.files[loads], hq.trust)
    assert tampered == 0
    refused = [p for p in honest if any(
        "bad signature" in r.text and "not by the trusted key" in r.text
        for r in net.nodes[p.id.ip].logs)]
    assert refused, "no phone saw and refused the rogue's manifest"


def test_phones_trusting_the_rogue_would_take_it():
    """The control: the same forged load is taken by phones that trust the rogue's key, so
    what stops the attack above is the key, not some other check."""
    rogue = firmware.Signer.generate()
    net, phones = run_site(4, rogue, rogue)
    forged = RoguePeer.forged
    took = [p for p in phones[1:] if any(p.sessions[f].data == forged.get(f)
                                         for f in p.installed)]
    assert took
