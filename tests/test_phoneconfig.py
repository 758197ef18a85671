"""pfslab.phoneconfig: PFS precedence, SEP<MAC>.cnf.xml and XMLDefault.cnf.xml."""
import itertools

import pytest
from hypothesis import given, settings, strategies as st

from pfslab.firmware import MODEL_LOAD, PFS_CAPABLE, model_load
from pfslab.phoneconfig import (XMLDEFAULT, Cluster, ConfigError, Device, PhoneConfig,
                                normalize_mac, parse_sep, parse_xmldefault, render_sep,
                                render_xmldefault, resolve_pfs, sep_filename)

LEVELS = (None, True, False)
COMBOS = list(itertools.product(LEVELS, repeat=3))
ALL_MODELS = sorted(MODEL_LOAD)
MAC = "08:00:27:0a:0b:0c"


def expected(model, device, profile, enterprise):
    """The rule, written out independently of the code under test."""
    if model not in PFS_CAPABLE:
        return False
    if device is not None:
        return device
    if profile is not None:
        return profile
    if enterprise is not None:
        return enterprise
    return False


@pytest.mark.parametrize("model", ALL_MODELS)
@pytest.mark.parametrize("device,profile,enterprise", COMBOS)
def test_precedence_every_combination(model, device, profile, enterprise):
    want = expected(model, device, profile, enterprise)
    assert resolve_pfs(model, device, profile, enterprise) is want
    # ... and through a cluster and the rendered file the phone reads
    c = Cluster(enterprise=enterprise, profiles={"cpp": profile})
    c.add_device(MAC, model, "cpp", device)
    assert c.pfs_for(MAC) is want
    assert parse_sep(c.files()[sep_filename(MAC)]).pfs is want


def test_precedence_spot_checks():
    assert resolve_pfs("CP-7961G", None, None, None) is False       # CUCM default: off
    assert resolve_pfs("CP-7961G", None, None, True) is True
    assert resolve_pfs("CP-7961G", None, False, True) is False
    assert resolve_pfs("CP-7961G", True, False, False) is True
    assert resolve_pfs("CP-7961G", False, True, True) is False


@pytest.mark.parametrize("device,profile,enterprise", COMBOS)
def test_7931_resolves_like_the_7941(device, profile, enterprise):
    """CSCud66570: PFS was always disabled on the 7931."""
    assert (resolve_pfs("CP-7931G", device, profile, enterprise)
            is resolve_pfs("CP-7941G", device, profile, enterprise))


@pytest.mark.parametrize("model", ["CP-7940G", "CP-7960G"])
@pytest.mark.parametrize("device,profile,enterprise", COMBOS)
def test_second_generation_never_shares(model, device, profile, enterprise):
    assert resolve_pfs(model, device, profile, enterprise) is False


@pytest.mark.parametrize("args", [("CP-1234", None, None, None), (None, None, None, None),
                                  ("CP-7961G", 1, None, None), ("CP-7961G", None, "yes", None),
                                  ("CP-7940G", None, None, 0)])
def test_resolve_bad_input(args):
    with pytest.raises(ConfigError):
        resolve_pfs(*args)


@pytest.mark.parametrize("spelling", ["08:00:27:0a:0b:0c", "08-00-27-0A-0B-0C",
                                      "0800.270a.0b0c", "0800270a0b0c", "SEP0800270A0B0C",
                                      " 08:00:27:0A:0b:0C "])
def test_sep_filename(spelling):
    assert sep_filename(spelling) == "SEP0800270A0B0C.cnf.xml"


@pytest.mark.parametrize("bad", ["", "08:00:27:0a:0b", "08:00-27:0a:0b:0c", "zz0027000000",
                                 "08:00:27:0a:0b:0c:0d", None, 0x0800270A0B0C,
                                 "SEP08:00:27:0a:0b:0c"])
def test_bad_mac(bad):
    with pytest.raises(ConfigError):
        sep_filename(bad)


@pytest.mark.parametrize("model", ALL_MODELS)
@pytest.mark.parametrize("pfs", [True, False])
@pytest.mark.parametrize("log_server,load_server", [(None, None), ("10.0.0.5:514", None),
                                                    ("192.0.2.1:5140", "198.51.100.7")])
def test_sep_roundtrip(model, pfs, log_server, load_server):
    load = model_load(model)
    if pfs and model not in PFS_CAPABLE:
        with pytest.raises(ConfigError, match="cannot do Peer Firmware Sharing"):
            render_sep(MAC, model, load, pfs, log_server, load_server)
        return
    data = render_sep(MAC, model, load, pfs, log_server, load_server)
    assert parse_sep(data) == PhoneConfig(load, pfs, log_server, load_server)


def test_sep_layout():
    data = render_sep(MAC, "CP-7961G", "SCCP41.9-4-2SR3-1S", True, "10.0.0.5:514")
    assert b"<loadInformation>SCCP41.9-4-2SR3-1S</loadInformation>" in data
    assert b"<peerFirmwareSharing>1</peerFirmwareSharing>" in data
    assert b"<loadServer/>" in data
    assert b"<logServer>10.0.0.5:514</logServer>" in data
    assert b".loads" not in data


def test_log_server_default_port():
    data = render_sep(MAC, "CP-7961G", "SCCP41.9-4-2SR3-1S", True, "10.0.0.5")
    assert parse_sep(data).log_server == "10.0.0.5:514"


@pytest.mark.parametrize("kw", [dict(log_server="host:514"), dict(log_server="10.0.0.5:0"),
                                dict(log_server="10.0.0.5:70000"), dict(log_server="10.0.0.5:x"),
                                dict(load_server="not-an-ip"), dict(load_server=5),
                                dict(load_name="a/b"), dict(load_name="SCCP41.loads/../x"),
                                dict(load_name=""), dict(model="CP-0000"), dict(pfs=1),
                                dict(mac="nope")])
def test_render_sep_bad_input(kw):
    args = dict(mac=MAC, model="CP-7961G", load_name="SCCP41.9-4-2SR3-1S", pfs=True)
    args.update(kw)
    with pytest.raises(ConfigError):
        render_sep(**args)


def test_parse_sep_tolerates_cucm_extras_and_missing_vendor_config():
    data = (b"<?xml version='1.0'?><device><deviceProtocol>SCCP</deviceProtocol>"
            b"<devicePool><name>Default</name></devicePool>"
            b"<loadInformation> SCCP41.9-4-2SR3-1S </loadInformation></device>")
    assert parse_sep(data) == PhoneConfig("SCCP41.9-4-2SR3-1S", False, None, None)
    data = (b"<device><loadInformation>X1</loadInformation><vendorConfig>"
            b"<peerFirmwareSharing/></vendorConfig></device>")
    assert parse_sep(data).pfs is False


HOSTILE = [
    b"",
    b"not xml",
    b"<device>",
    b"<device><loadInformation>X</loadInformation></device><extra/>",
    b"\xff\xfe<\x00d\x00",
    b"<?xml version='1.0' encoding='bogus-enc'?><device/>",
    # billion laughs
    b"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
    b"<!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>]>"
    b"<device><loadInformation>&lol2;</loadInformation></device>",
    # external entity
    b"<?xml version='1.0'?><!DOCTYPE d [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>"
    b"<device><loadInformation>&x;</loadInformation></device>",
    b"<!DOCTYPE device SYSTEM 'http://example.invalid/d.dtd'><device/>",
    b"<!DOCTYPE device><device><loadInformation>X</loadInformation></device>",
    b"<device><loadInformation>&undefined;</loadInformation></device>",
    b"<config><loadInformation>X</loadInformation></config>",
    b"<device/>",
    b"<device><loadInformation>../../etc/passwd</loadInformation></device>",
    b"<device><loadInformation>A</loadInformation><loadInformation>B</loadInformation></device>",
    b"<device><loadInformation>A</loadInformation><vendorConfig><peerFirmwareSharing>yes"
    b"</peerFirmwareSharing></vendorConfig></device>",
    b"<device><loadInformation>A</loadInformation><vendorConfig><logServer>evil</logServer>"
    b"</vendorConfig></device>",
    b"<device><loadInformation>A</loadInformation><vendorConfig><loadServer>1.2.3.999"
    b"</loadServer></vendorConfig></device>",
    b"<device><loadInformation>A</loadInformation><vendorConfig/><vendorConfig/></device>",
    b"<device>" * 5000,
    b"<device><loadInformation>A</loadInformation></device>" + b" " * 70000,
    None,
    "<device><loadInformation>A</loadInformation></device>",
]


@pytest.mark.parametrize("data", HOSTILE)
def test_hostile_sep(data):
    with pytest.raises(ConfigError):
        parse_sep(data)


@pytest.mark.parametrize("data", HOSTILE)
def test_hostile_xmldefault(data):
    with pytest.raises(ConfigError):
        parse_xmldefault(data)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_sep_bytes(data):
    try:
        parse_sep(data)
    except ConfigError:
        pass


_frag = st.sampled_from([b"<device>", b"</device>", b"<loadInformation>", b"</loadInformation>",
                         b"<vendorConfig>", b"</vendorConfig>", b"<peerFirmwareSharing>",
                         b"</peerFirmwareSharing>", b"<logServer>", b"</logServer>",
                         b"<loadServer/>", b"1", b"0", b"SCCP41.9-4-2SR3-1S", b"10.0.0.1:514",
                         b"&amp;", b"&x;", b"<!DOCTYPE d>", b"<?xml version='1.0'?>", b"\xe9",
                         b"<Default>", b"</Default>",
                         b'<loadInformation115 model="Cisco IP Phone 7941">',
                         b"</loadInformation115>", b"<![CDATA[x]]>", b"<!-- c -->"])


@settings(max_examples=600, deadline=None)
@given(st.lists(_frag, max_size=14))
def test_fuzz_xml_fragments(parts):
    data = b"".join(parts)
    for parse in (parse_sep, parse_xmldefault):
        try:
            parse(data)
        except ConfigError:
            pass


def test_xmldefault_roundtrip_and_tags():
    loads = {m: model_load(m) for m in ALL_MODELS}
    data = render_xmldefault(loads)
    assert b'<loadInformation115 model="Cisco IP Phone 7941">SCCP41.9-4-2SR3-1S' in data
    assert parse_xmldefault(data) == loads
    assert parse_xmldefault(render_xmldefault({})) == {}


def test_xmldefault_skips_foreign_models_and_elements():
    data = (b"<Default><callManagerGroup><name>x</name></callManagerGroup>"
            b'<loadInformation30008 model="Cisco IP Phone 7905">CP7905080003SCCP070409A'
            b"</loadInformation30008>"
            b'<loadInformation115 model="Cisco IP Phone 7941">SCCP41.9-4-2SR3-1S'
            b"</loadInformation115></Default>")
    assert parse_xmldefault(data) == {"CP-7941G": "SCCP41.9-4-2SR3-1S"}


@pytest.mark.parametrize("data", [
    b'<Default><loadInformation115 model="Cisco IP Phone 7941">A</loadInformation115>'
    b'<loadInformation115 model="Cisco IP Phone 7941">B</loadInformation115></Default>',
    b'<Default><loadInformation115 model="Cisco IP Phone 7941"></loadInformation115></Default>',
    b'<Default><loadInformation115 model="Cisco IP Phone 7941">a b</loadInformation115></Default>',
])
def test_xmldefault_bad(data):
    with pytest.raises(ConfigError):
        parse_xmldefault(data)


@pytest.mark.parametrize("loads", [{"CP-0000": "X"}, {"CP-7941G": "a/b"}, ["CP-7941G"]])
def test_render_xmldefault_bad(loads):
    with pytest.raises(ConfigError):
        render_xmldefault(loads)


def test_cluster_files():
    c = Cluster(enterprise=True, profiles={"branch": None, "no-pfs": False},
                devices={"08:00:27:00:00:01": Device("CP-7961G", "branch"),
                         "0800.2700.0002": Device("CP-7961G", "no-pfs"),
                         "080027000003": Device("CP-7961G", "no-pfs", True),
                         "08-00-27-00-00-04": Device("CP-7960G", None, True),
                         "080027000005": Device("CP-7931G")},
                log_server="10.0.0.9:514")
    assert [c.pfs_for(f"08:00:27:00:00:0{i}") for i in range(1, 6)] == [
        True, False, True, False, True]
    files = c.files()
    assert set(files) == {f"SEP08002700000{i}.cnf.xml" for i in range(1, 6)} | {XMLDEFAULT}
    assert parse_sep(files["SEP080027000001.cnf.xml"]) == PhoneConfig(
        "SCCP41.9-4-2SR3-1S", True, "10.0.0.9:514", None)
    assert parse_xmldefault(files[XMLDEFAULT]) == {
        "CP-7961G": "SCCP41.9-4-2SR3-1S", "CP-7960G": "P0030801SR02",
        "CP-7931G": "SCCP31.9-4-2SR3-1S"}
    # a mapping works as load_for_model too
    files = c.files({"CP-7961G": "SCCP41.9-9-9", "CP-7960G": "P0030801SR02",
                     "CP-7931G": "SCCP31.9-4-2SR3-1S"})
    assert parse_sep(files["SEP080027000002.cnf.xml"]).load_name == "SCCP41.9-9-9"
    with pytest.raises(ConfigError, match="CP-7931G"):
        c.files({"CP-7961G": "A", "CP-7960G": "B"})


def test_cluster_errors():
    c = Cluster(profiles={"p": True})
    c.add_device(MAC, "CP-7941G", "p")
    with pytest.raises(ConfigError):
        c.add_device("0800270A0B0C", "CP-7941G")          # same MAC, other spelling
    with pytest.raises(ConfigError):
        c.add_device("08:00:27:00:00:01", "CP-7941G", "missing")
    with pytest.raises(ConfigError):
        c.add_device("08:00:27:00:00:01", "CP-0000")
    with pytest.raises(ConfigError):
        c.pfs_for("08:00:27:00:00:99")
    with pytest.raises(ConfigError):
        Cluster(enterprise="on")
    with pytest.raises(ConfigError):
        Cluster(profiles={"p": 1})
    with pytest.raises(ConfigError):
        Cluster(devices={MAC: ("CP-7941G",)})
    assert c.pfs_for("0800.270a.0b0c") is True


def test_normalize_mac():
    assert normalize_mac("0800.270a.0b0c") == "0800270A0B0C"
