"""pfslab.firmware: load sets, synthetic images, the signed .loads manifest."""
import hashlib
import os
import struct
import subprocess
import time

import pytest
from hypothesis import given, settings, strategies as st

from pfslab import firmware as fw
from pfslab.errors import UserError
from pfslab.firmware import (FIXTURE_SIGNER, FIXTURE_TRUST, KNOWN_LOADS, MODEL_LOAD,
                             PFS_CAPABLE, Component, FirmwareError, KeyFileError, LoadSet,
                             Signer, Trust, build_load, encode_loads, load_signer, model_load,
                             verify)

SCCP41 = "SCCP41.9-4-2SR3-1S"
T = FIXTURE_TRUST


def parse_loads(data, trust=T):
    return fw.parse_loads(data, trust)


@pytest.fixture(scope="module")
def sccp41():
    return build_load(SCCP41)


def test_sccp41_real_sizes_and_order(sccp41):
    load, files = sccp41
    assert [c.name for c in load.components] == [
        "jar41sccp.9-4-2ES26.sbn", "cnu41.9-4-2ES26.sbn", "apps41.9-4-2ES26.sbn",
        "dsp41.9-4-2ES26.sbn", "cvm41sccp.9-4-2ES26.sbn"]
    assert [c.size for c in load.components] == [1_630_052, 556_833, 3_157_527, 562_693,
                                                 2_219_477]
    assert sum(c.size for c in load.components) == 8_126_582
    assert load.total_size == 8_126_582
    assert sum(size for _, size in KNOWN_LOADS[SCCP41]) == 8_126_582


def test_sccp70_sizes_from_the_tech_note():
    sizes = dict(KNOWN_LOADS["SCCP70.9-4-2SR3-1S"])
    assert sizes["apps70.9-4-2ES26.sbn"] == 3_157_527
    assert sizes["cvm70sccp.9-4-2ES26.sbn"] == 2_222_958
    assert sizes["jar70sccp.9-4-2ES26.sbn"] == 1_830_557
    assert {"cnu70.9-4-2ES26.sbn", "dsp70.9-4-2ES26.sbn"} <= set(sizes)


def test_loadset_files_and_component(sccp41):
    load, files = sccp41
    assert load.loads_file == SCCP41 + ".loads"
    assert load.files() == [load.loads_file] + [c.name for c in load.components]
    assert list(files) == load.files()
    assert load.component("cnu41.9-4-2ES26.sbn").size == 556_833
    with pytest.raises(KeyError):
        load.component("nope.sbn")
    for c in load.components:
        assert len(files[c.name]) == c.size
        assert verify(c, files[c.name])


def test_models_and_capability():
    for model in ("CP-7941G", "CP-7941G-GE", "CP-7961G", "CP-7961G-GE"):
        assert model_load(model) == SCCP41
    for model in ("CP-7970G", "CP-7971G-GE"):
        assert model_load(model) == "SCCP70.9-4-2SR3-1S"
    assert model_load("CP-7911G") == model_load("CP-7906G") == "SCCP11.9-4-2SR3-1S"
    assert model_load("CP-7931G") == "SCCP31.9-4-2SR3-1S"
    assert model_load("CP-7940G") == model_load("CP-7960G") == "P0030801SR02"
    assert PFS_CAPABLE == {"CP-7906G", "CP-7911G", "CP-7931G", "CP-7941G", "CP-7941G-GE",
                           "CP-7961G", "CP-7961G-GE", "CP-7970G", "CP-7971G-GE"}
    assert "CP-7940G" not in PFS_CAPABLE and "CP-7960G" not in PFS_CAPABLE
    assert PFS_CAPABLE <= set(MODEL_LOAD)
    assert set(MODEL_LOAD.values()) <= set(KNOWN_LOADS)


@pytest.mark.parametrize("bad", ["CP-9999", "", None, "cp-7941g"])
def test_unknown_model_names_the_known_ones(bad):
    with pytest.raises(FirmwareError, match="CP-7961G"):
        model_load(bad)


def test_unknown_load():
    with pytest.raises(FirmwareError, match=SCCP41):
        build_load("SCCP99.1-0-0")


@pytest.mark.parametrize("name", sorted(KNOWN_LOADS))
def test_every_known_load_builds_and_roundtrips(name):
    load, files = build_load(name, scale=0.01)
    assert parse_loads(files[load.loads_file]) == load
    assert all(verify(c, files[c.name]) for c in load.components)
    assert fw.read_component_header(files[load.components[0].name], T) == (
        load.components[0].name, load.components[0].size)


def test_scale():
    real = dict(KNOWN_LOADS[SCCP41])
    load, files = build_load(SCCP41, scale=0.1)
    for c in load.components:
        assert c.size == round(real[c.name] * 0.1)
        assert len(files[c.name]) == c.size
    tiny, files = build_load(SCCP41, scale=1e-9)
    assert all(c.size == 1024 for c in tiny.components)
    assert all(len(files[c.name]) == 1024 for c in tiny.components)


@pytest.mark.parametrize("scale", [0, -1, float("nan"), float("inf"), "1", None, True, 1000])
def test_bad_scale(scale):
    with pytest.raises(FirmwareError):
        build_load(SCCP41, scale=scale)


def test_deterministic(sccp41):
    fw._filler.cache_clear()
    again = build_load(SCCP41)
    assert again == sccp41
    # Pinned (fixture key): the synthetic bytes are part of the lab's repeatability; change
    # on purpose only.
    load, files = build_load(SCCP41, scale=1e-9)
    assert hashlib.sha256(files["cnu41.9-4-2ES26.sbn"]).hexdigest() == PINNED_CNU41_1K


PINNED_CNU41_1K = "84c3949ebab252d39ad6c00dbc5cda52d146ab98ac5a4ef0501e1c0662fa3c30"


def test_components_differ_and_do_not_repeat_at_block_offsets(sccp41):
    load, files = sccp41
    data = [files[c.name] for c in load.components]
    assert len({d[200:4096] for d in data}) == len(data)
    apps = files["apps41.9-4-2ES26.sbn"]
    for step in (512, 1428, 8192, 65536):
        assert apps[1000:1000 + 512] != apps[1000 + step:1000 + step + 512]


def test_full_size_build_is_fast():
    fw._filler.cache_clear()
    t = time.perf_counter()
    build_load(SCCP41)
    assert time.perf_counter() - t < 1.0


def test_verify_catches_a_flipped_byte(sccp41):
    load, files = sccp41
    c = load.component("dsp41.9-4-2ES26.sbn")
    data = bytearray(files[c.name])
    for pos in (0, 100, len(data) // 2, len(data) - 1):
        bad = bytearray(data)
        bad[pos] ^= 0x01
        assert not verify(c, bytes(bad))
    assert not verify(c, bytes(data[:-1]))
    assert not verify(c, bytes(data) + b"\0")
    assert not verify(c, None)
    assert verify(c, bytes(data))


def test_loads_size_is_close_to_the_real_one(sccp41):
    load, files = sccp41
    # The real SCCP41.9-4-2SR3-1S.loads is 652 bytes (256-byte RSA signature, no digests).
    assert 300 < len(files[load.loads_file]) < 1000
    assert files[load.loads_file] == encode_loads(load, FIXTURE_SIGNER)


def test_roundtrip_handmade_load():
    load = LoadSet("X1.0", [Component("a.sbn", 1, "0" * 64), Component("b.sbn", 2**32 - 1,
                                                                        "f" * 64)])
    assert isinstance(load.components, tuple)
    assert parse_loads(encode_loads(load, FIXTURE_SIGNER)) == load


@pytest.mark.parametrize("make", [
    lambda: Component("../etc/passwd", 1, "0" * 64),
    lambda: Component("a.sbn", 0, "0" * 64),
    lambda: Component("a.sbn", 2**32, "0" * 64),
    lambda: Component("a.sbn", 1, "0" * 63),
    lambda: Component("a.sbn", 1, "A" * 64),
    lambda: Component("x.loads", 1, "0" * 64),
    lambda: LoadSet("X", ()),
    lambda: LoadSet("a/b", (Component("a.sbn", 1, "0" * 64),)),
    lambda: LoadSet("X", (Component("a.sbn", 1, "0" * 64),) * 2),
])
def test_invalid_objects(make):
    with pytest.raises(FirmwareError):
        make()


ROGUE = Signer.generate()


def _resign(data: bytes) -> bytes:
    """Recompute the signature of a .loads image (to reach the checks past it)."""
    return _sign(data, FIXTURE_SIGNER)


def _sign(data: bytes, signer: Signer, key_id: bytes | None = None) -> bytes:
    """Sign a .loads image with ``signer``, naming ``key_id`` (default: the signer's own);
    unchanged if too short to hold a signature."""
    if len(data) < 7 or len(data) < 7 + data[5]:
        return data
    n1 = data[5]
    n2 = data[6 + n1]
    kid = 5 + 1 + n1 + 1 + n2 + 8
    at = kid + 8
    if len(data) < at + 64:
        return data
    data = data[:kid] + (key_id or signer.trust.key_id) + data[at:]
    return data[:at] + signer.sign(data[:at] + data[at + 64:]) + data[at + 64:]


def test_bad_signature_is_refused(sccp41):
    load, files = sccp41
    good = files[load.loads_file]
    for pos in range(len(good)):
        bad = bytearray(good)
        bad[pos] ^= 0x20
        with pytest.raises(FirmwareError):
            parse_loads(bytes(bad))
    for n in range(len(good)):
        with pytest.raises(FirmwareError):
            parse_loads(good[:n])
    with pytest.raises(FirmwareError, match="signature"):
        parse_loads(good.replace(b"cnu41", b"cnu42"))


def test_foreign_signer_and_trailing_bytes_are_refused(sccp41):
    load, files = sccp41
    good = files[load.loads_file]
    assert parse_loads(_resign(good)) == load
    rogue = _sign(good, ROGUE)
    with pytest.raises(FirmwareError, match="not by the trusted key"):
        parse_loads(rogue)
    assert parse_loads(rogue, ROGUE.trust) == load       # that key's own phones would take it
    # naming the trusted key's id does not help: the signature does not verify under it
    with pytest.raises(FirmwareError, match="bad .loads signature"):
        parse_loads(_sign(good, ROGUE, key_id=T.key_id))
    with pytest.raises(FirmwareError, match="trailing"):
        parse_loads(good + b"\0")


@pytest.mark.parametrize("old,new,match", [
    (b"\r\n", b"\n", "CRLF"),
    (b" 556833 ", b" 0556833 ", "line 2 is malformed"),
    (b" 556833 ", b" -1 ", "line 2 is malformed"),
    (b" 556833 ", b" 556833  ", "line 2 is malformed"),
    (b" 556833 ", b" 9999999999 ", "bad size"),
    (b"cnu41.9-4-2ES26.sbn", b"jar41sccp.9-4-2ES26.sbn", "twice"),
    (b"cnu41.9-4-2ES26.sbn", b"../cnu41.sbn", "bad component file name"),
    (b"cnu41.9-4-2ES26.sbn", b"cnu41\xe9.sbn", "not ASCII"),
    (b".loads", b".loadz", "does not end in .loads"),
])
def test_signed_but_malformed_manifests_are_refused(sccp41, old, new, match):
    """Re-signed with the lab key, so the check past the signature is the one that fires."""
    load, files = sccp41
    good = files[load.loads_file]
    bad = good.replace(old, new) if old == b"\r\n" else good.replace(old, new, 1)
    body_at = bad.index(b"jar41sccp")
    bad = bad[:body_at - 4] + struct.pack(">I", len(bad) - body_at) + bad[body_at:]
    with pytest.raises(FirmwareError, match=match):
        parse_loads(_resign(bad))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200))
def test_fuzz_random_bytes(data):
    with pytest.raises(FirmwareError):
        parse_loads(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_manifest(data):
    load, files = build_load(SCCP41, scale=0.001)
    raw = bytearray(files[load.loads_file])
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    mutated = bytes(raw[:cut])
    resign = data.draw(st.booleans())
    try:
        out = parse_loads(_resign(mutated) if resign else mutated)
    except FirmwareError:
        return
    assert isinstance(out, LoadSet)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}", fullmatch=True),
                          st.integers(1, 2**32 - 1), st.binary(min_size=1, max_size=8)),
                min_size=1, max_size=8, unique_by=lambda t: t[0]),
       st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,50}", fullmatch=True))
def test_fuzz_roundtrip(comps, name):
    comps = [c for c in comps if not c[0].endswith(".loads")]
    if not comps:
        return
    load = LoadSet(name, tuple(Component(n, s, hashlib.sha256(b).hexdigest())
                               for n, s, b in comps))
    assert parse_loads(encode_loads(load, FIXTURE_SIGNER)) == load


@pytest.mark.parametrize("data", [None, "text", 12])
def test_parse_loads_wrong_type(data):
    with pytest.raises(FirmwareError):
        parse_loads(data)


def test_component_header_checks():
    load, files = build_load(SCCP41, scale=0.001)
    img = files["apps41.9-4-2ES26.sbn"]
    assert fw.read_component_header(img, T) == ("apps41.9-4-2ES26.sbn", len(img))
    flipped_filler = img[:-1] + bytes([img[-1] ^ 1])
    for bad in (b"", img[:20], b"XXXX" + img[4:], img[:10] + b"\xff" + img[11:], None,
                img[:-1], flipped_filler):
        with pytest.raises(FirmwareError):
            fw.read_component_header(bad, T)
    with pytest.raises(FirmwareError, match="not by the trusted key"):
        fw.read_component_header(img, ROGUE.trust)



# --------------------------------------------------------------------------- keys

def test_a_per_run_signer_and_its_trust():
    signer = Signer.generate()
    load, files = build_load(SCCP41, 0.001, signer)
    assert parse_loads(files[load.loads_file], signer.trust) == load
    assert fw.read_component_header(files[load.components[0].name], signer.trust)[0] == \
        load.components[0].name
    with pytest.raises(FirmwareError, match="not by the trusted key"):
        parse_loads(files[load.loads_file], T)
    assert signer.trust != T and Signer.generate().trust != signer.trust
    # what a phone holds can check signatures and do nothing else
    assert not hasattr(signer.trust, "sign") and not hasattr(signer.trust, "private_pem")


def test_trust_travels_as_hex():
    signer = Signer.generate()
    assert Trust.from_hex(signer.trust.hex()) == signer.trust
    for bad in ("", "00" * 31, "zz" * 32, None, 12):
        with pytest.raises(FirmwareError, match="64 hex"):
            Trust.from_hex(bad)


def test_fixture_key_is_the_default_and_sizes_do_not_depend_on_the_key():
    load, files = build_load(SCCP41, 0.001)               # the transitional default
    assert parse_loads(files[load.loads_file], FIXTURE_TRUST) == load
    run = load_signer(None)                               # a run without a key file
    assert run.trust != FIXTURE_TRUST
    again, other = build_load(SCCP41, 0.001, run)
    assert {k: len(v) for k, v in other.items()} == {k: len(v) for k, v in files.items()}
    assert other != files


def test_key_file_round_trip(tmp_path):
    signer = Signer.generate()
    path = tmp_path / "hq.pem"
    signer.write(str(path))
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_signer(str(path)).trust == signer.trust


@pytest.mark.skipif(not os.path.exists("/usr/bin/openssl"), reason="needs openssl")
def test_openssl_made_keys(tmp_path):
    """The key that the error messages tell users to make is accepted; others are not."""
    good, rsa = tmp_path / "ed.pem", tmp_path / "rsa.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(good)],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "genpkey", "-algorithm", "rsa", "-pkeyopt",
                    "rsa_keygen_bits:1024", "-out", str(rsa)], check=True, capture_output=True)
    load, files = build_load(SCCP41, 0.001, load_signer(str(good)))
    assert parse_loads(files[load.loads_file], load_signer(str(good)).trust) == load
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        load_signer(str(rsa))


@pytest.mark.parametrize("content,match", [
    (None, "cannot read signing key file .*: No such file or directory"),
    (b"", "is not a PEM private key"),
    (b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n",
     "is not a PEM private key"),
    (b"\x00\xff" * 50_000, "too large"),
    ("encrypted", "is encrypted"),
    ("public", "is not a PEM private key"),
    ("dir", "cannot read signing key file"),
])
def test_bad_key_files_get_one_clear_line(tmp_path, content, match):
    from cryptography.hazmat.primitives import serialization as ser
    path = tmp_path / "key.pem"
    key = Signer.generate()
    if content == "encrypted":
        content = key._key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8,
                                         ser.BestAvailableEncryption(b"pw"))
    elif content == "public":
        content = key._key.public_key().public_bytes(ser.Encoding.PEM,
                                                     ser.PublicFormat.SubjectPublicKeyInfo)
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(KeyFileError, match=match) as e:
        load_signer(str(path))
    assert isinstance(e.value, UserError)           # the CLI: one line on stderr, exit 2
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    if content not in (None, "dir") and "large" not in match:
        assert "openssl genpkey -algorithm ed25519" in msg


def test_old_shared_key_manifests_are_refused(sccp41):
    """pfslab's version-1 manifests (HMAC under a key every phone held) are not accepted."""
    load, files = sccp41
    old = bytearray(files[load.loads_file])
    old[4] = 1
    with pytest.raises(FirmwareError, match="unsupported .loads version"):
        parse_loads(bytes(old))


def test_peek_loads_reads_sizes_without_trust_but_parse_loads_checks_the_key():
    """Tools that only count bytes (estimate, bench bounds) can read any .loads; a phone's
    parse still refuses one signed by another key."""
    load, files = fw.build_load(MODEL_LOAD["CP-7961G"], 0.01, ROGUE)
    data = files[load.loads_file]
    assert fw.peek_loads(data) == load
    with pytest.raises(fw.FirmwareError):
        fw.parse_loads(data, T)
