"""The phone socket's kernel filter drops exactly what Phone.on_datagram would ignore."""
import socket

import pytest

from pfslab.agent import sockfilter
from pfslab.protocol import codec
from pfslab.protocol.codec import Message, MsgType

MAP = codec.load_map("SCCP41.9-4-2SR3-1S")


def _msg(model="CP-7961G", lmap=MAP):
    return codec.encode(Message(MsgType.CLAIM, xid=1, strength=2, map=lmap, model=model,
                                file="x.sbn"))


@pytest.fixture
def pair():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0.2)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    yield rx, tx
    rx.close()
    tx.close()


def _got(rx, tx, data):
    tx.sendto(data, rx.getsockname())
    try:
        return rx.recv(2048) == data
    except socket.timeout:
        return False


def test_pfs_filter_passes_own_model_and_load(pair):
    rx, tx = pair
    sockfilter.attach(rx, sockfilter.pfs_filter("10.1.1.1", "CP-7961G", MAP))
    assert _got(rx, tx, _msg())


@pytest.mark.parametrize("data", [_msg(model="CP-7941G"), _msg(model="CP-7961"),
                                  _msg(model="CP-7961GX"), _msg(lmap=MAP ^ 1)])
def test_pfs_filter_drops_other_models_and_loads(pair, data):
    rx, tx = pair
    sockfilter.attach(rx, sockfilter.pfs_filter("10.1.1.1", "CP-7961G", MAP))
    assert not _got(rx, tx, data)


def test_pfs_filter_drops_own_datagrams(pair):
    rx, tx = pair
    sockfilter.attach(rx, sockfilter.pfs_filter("127.0.0.1", "CP-7961G", MAP))
    assert not _got(rx, tx, _msg())


@pytest.mark.parametrize("data", [b"hostile", b"CPDP" + b"\x00" * 40,
                                  _msg(model="CP-7941G") + b"trailing"])
def test_malformed_datagrams_reach_the_protocol(pair, data):
    """So that the protocol logs them as before (a kernel drop would hide them)."""
    rx, tx = pair
    sockfilter.attach(rx, sockfilter.pfs_filter("10.1.1.1", "CP-7961G", MAP))
    assert _got(rx, tx, data)


def test_drop_all_and_replace(pair):
    rx, tx = pair
    sockfilter.attach(rx, sockfilter.drop_all())
    assert not _got(rx, tx, _msg())
    sockfilter.attach(rx, sockfilter.pfs_filter("10.1.1.1", "CP-7961G", MAP))
    assert _got(rx, tx, _msg())
