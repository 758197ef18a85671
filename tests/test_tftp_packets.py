"""TFTP packet codec and the sans-I/O read state machine (no sockets, no root)."""
import pytest
from hypothesis import given, settings, strategies as st

from pfslab.agent.tftp import (
    Ack, Data, Error, ErrorCode, Oack, ReadTransfer, Rrq, TftpError, TftpPacketError, Wrq,
    decode, encode_ack, encode_data, encode_error, encode_oack, encode_rrq, encode_wrq,
)

SERVER = ("192.0.2.1", 69)
TID = ("192.0.2.1", 40000)


# -- codec ---------------------------------------------------------------------------------

def test_rrq_plain_bytes():
    assert encode_rrq("SEP001122334455.cnf.xml") == b"\0\1SEP001122334455.cnf.xml\0octet\0"
    assert decode(b"\0\1f\0octet\0") == Rrq("f", "octet", {})


def test_rrq_options_bytes_and_roundtrip():
    raw = encode_rrq("a.loads", options={"blksize": 1428, "tsize": 0, "timeout": 1})
    assert raw == b"\0\1a.loads\0octet\0blksize\x001428\0tsize\x000\0timeout\x001\0"
    assert decode(raw) == Rrq("a.loads", "octet", {"blksize": "1428", "tsize": "0", "timeout": "1"})


def test_wrq_roundtrip():
    assert decode(encode_wrq("x", "netascii")) == Wrq("x", "netascii", {})


def test_option_names_are_case_insensitive():
    assert decode(b"\0\6BlkSize\x00512\0") == Oack({"blksize": "512"})


def test_oack_roundtrip():
    raw = encode_oack({"blksize": 1428, "tsize": 3000000})
    assert raw == b"\0\6blksize\x001428\0tsize\x003000000\0"
    assert decode(raw) == Oack({"blksize": "1428", "tsize": "3000000"})
    assert decode(b"\0\6") == Oack({})


def test_data_ack_error_roundtrip():
    assert encode_data(1, b"abc") == b"\0\3\0\1abc"
    assert decode(b"\0\3\xff\xffxyz") == Data(65535, b"xyz")
    assert decode(b"\0\3\0\7") == Data(7, b"")
    assert encode_ack(65535) == b"\0\4\xff\xff"
    assert decode(b"\0\4\1\0") == Ack(256)
    assert encode_error(1, "File not found") == b"\0\5\0\1File not found\0"
    assert decode(b"\0\5\0\1File not found\0") == Error(1, "File not found")


def test_error_text_is_lenient():
    assert decode(b"\0\5\0\2no terminator") == Error(2, "no terminator")
    assert decode(b"\0\5\0\0\xffbad\0junk") == Error(0, "\ufffdbad")


@pytest.mark.parametrize("raw", [
    b"", b"\0", b"\0\3\0", b"\0\4\0", b"\0\4\0\1\0", b"\0\5\0", b"\0\7", b"\xff\xff\0\0",
    b"\0\1f\0octet",            # no final NUL
    b"\0\1f\0",                 # no mode
    b"\0\1\0octet\0",           # empty filename
    b"\0\6blksize\0",           # option without value
    b"\0\6\0512\0",             # empty option name
    b"\0\6blk\xffsize\x00512\0",  # non-ASCII
])
def test_malformed_raise_packet_error(raw):
    with pytest.raises(TftpPacketError):
        decode(raw)


def test_encoders_reject_bad_input():
    with pytest.raises(ValueError):
        encode_rrq("a\0b")
    with pytest.raises(ValueError):
        encode_rrq("")
    with pytest.raises(ValueError):
        encode_ack(65536)
    with pytest.raises(ValueError):
        encode_data(-1, b"")


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=80))
def test_decode_hostile_bytes_only_packet_error(raw):
    try:
        pkt = decode(raw)
    except TftpPacketError:
        return
    assert isinstance(pkt, (Rrq, Wrq, Data, Ack, Error, Oack))


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([1, 2, 3, 4, 5, 6]), st.binary(max_size=60))
def test_decode_hostile_bodies_with_valid_opcodes(op, body):
    try:
        decode(bytes([0, op]) + body)
    except TftpPacketError:
        pass


@given(st.integers(0, 65535), st.binary(max_size=600))
def test_data_roundtrip_property(block, payload):
    assert decode(encode_data(block, payload)) == Data(block, payload)


# -- the state machine ------------------------------------------------------------------------

def _xfer(**kw):
    kw.setdefault("blksize", 512)
    kw.setdefault("tsize", False)
    return ReadTransfer(SERVER, "f", **kw)


def test_plain_transfer_with_tid_change():
    x = _xfer()
    assert x.start(0.0) == [(b"\0\1f\0octet\0timeout\x001\0", SERVER)]
    assert x.datagram_received(encode_data(1, b"a" * 512), TID, 0.1) == [(encode_ack(1), TID)]
    assert x.tid == TID and not x.done
    assert x.datagram_received(encode_data(2, b"bc"), TID, 0.2) == [(encode_ack(2), TID)]
    assert x.done and x.data == b"a" * 512 + b"bc"


def test_no_options_at_512_without_tsize_and_fractional_timeout():
    x = _xfer(timeout=0.5)
    assert x.start(0.0) == [(b"\0\1f\0octet\0", SERVER)]


def test_oack_negotiation_then_ack0():
    x = ReadTransfer(SERVER, "f", blksize=1428, tsize=True, timeout=2)
    x.start(0)
    out = x.datagram_received(encode_oack({"blksize": 1400, "tsize": 1500, "timeout": 2}), TID, 0)
    assert out == [(encode_ack(0), TID)]
    assert x.blksize == 1400 and x.tsize == 1500
    # A retransmitted OACK (our ACK 0 lost) is re-ACKed.
    assert x.datagram_received(encode_oack({"blksize": 1400, "tsize": 1500, "timeout": 2}),
                               TID, 0) == [(encode_ack(0), TID)]
    x.datagram_received(encode_data(1, b"x" * 1400), TID, 0)
    x.datagram_received(encode_data(2, b"y" * 100), TID, 0)
    assert x.done and len(x.data) == 1500


@pytest.mark.parametrize("oack,why", [
    ({"blksize": 2000}, "blksize"),          # larger than asked
    ({"blksize": "abc"}, "blksize"),
    ({"windowsize": 4}, "not requested"),
    ({"tsize": -1}, "tsize"),
    ({"timeout": 9}, "timeout"),
])
def test_bad_oack_refused_with_error_8(oack, why):
    x = ReadTransfer(SERVER, "f", blksize=1428, tsize=True, timeout=1)
    x.start(0)
    out = x.datagram_received(encode_oack(oack), TID, 0)
    assert len(out) == 1 and decode(out[0][0]).code == ErrorCode.OPTION_REFUSED
    assert isinstance(x.error, TftpError) and why in str(x.error)


def test_server_ignores_options_falls_back_to_512():
    x = ReadTransfer(SERVER, "f", blksize=1428, tsize=True)
    x.start(0)
    x.datagram_received(encode_data(1, b"a" * 512), TID, 0)
    assert x.blksize == 512 and not x.done
    x.datagram_received(encode_data(2, b""), TID, 0)
    assert x.done and x.data == b"a" * 512


def test_error_8_to_options_retries_plain():
    x = ReadTransfer(SERVER, "f", blksize=1428, tsize=True)
    x.start(0)
    out = x.datagram_received(encode_error(8, "no options"), TID, 0)
    assert out == [(b"\0\1f\0octet\0", SERVER)]
    # A second refusal (answer to a retransmitted RRQ with options) is ignored.
    assert x.datagram_received(encode_error(8, "no options"), ("192.0.2.1", 40001), 0) == []
    assert x.error is None
    x.datagram_received(encode_data(1, b"z"), ("192.0.2.1", 40002), 0)
    assert x.done and x.data == b"z"


def test_file_not_found_is_not_retried():
    x = ReadTransfer(SERVER, "f")
    x.start(0)
    assert x.datagram_received(encode_error(1, "File not found"), TID, 0) == []
    assert x.error.code == 1 and "File not found" in str(x.error)


def test_unknown_tid_gets_error_5_and_transfer_continues():
    x = _xfer()
    x.start(0)
    x.datagram_received(encode_data(1, b"a" * 512), TID, 0)
    other = ("192.0.2.1", 40001)
    out = x.datagram_received(encode_data(2, b"evil"), other, 0)
    assert out == [(encode_error(5, "Unknown transfer ID"), other)]
    stranger = ("198.51.100.7", 69)
    assert decode(x.datagram_received(b"garbage", stranger, 0)[0][0]).code == 5
    assert x.datagram_received(encode_error(0, "x"), stranger, 0) == []   # no error ping-pong
    x.datagram_received(encode_data(2, b"ok"), TID, 0)
    assert x.data == b"a" * 512 + b"ok"


def test_duplicate_data_is_reacked_once_and_not_appended():
    x = _xfer()
    x.start(0)
    x.datagram_received(encode_data(1, b"a" * 512), TID, 0)
    assert x.datagram_received(encode_data(1, b"a" * 512), TID, 0) == [(encode_ack(1), TID)]
    assert x.received == 512
    assert x.datagram_received(encode_data(5, b"a" * 512), TID, 0) == []   # from the future
    x.datagram_received(encode_data(2, b""), TID, 0)
    assert x.data == b"a" * 512


def test_timeout_retransmits_with_backoff_then_fails():
    x = _xfer(timeout=1.0, retries=3)
    rrq = x.start(0)
    assert x.timer_expired(0.5) == []             # not yet
    assert x.timer_expired(1.0) == rrq            # then wait 2 s
    assert x.timer_expired(2.5) == []
    assert x.timer_expired(3.0) == rrq            # then 4 s
    assert x.timer_expired(6.9) == []
    assert x.timer_expired(7.0) == rrq            # then 8 s
    assert x.timer_expired(15.0) == [] and "timeout" in str(x.error)


def test_backoff_is_capped():
    from pfslab.agent.tftp import MAX_BACKOFF
    x = _xfer(timeout=1.0, retries=10)
    x.start(0)
    t, gaps = 0.0, []
    while x.error is None:
        t = x.deadline
        before = t
        x.timer_expired(t)
        if x.error is None:
            gaps.append(x.deadline - before)
    assert max(gaps) == MAX_BACKOFF


def test_progress_resets_retry_budget():
    x = _xfer(timeout=1.0, retries=1)
    x.start(0)
    x.timer_expired(1.0)
    x.datagram_received(encode_data(1, b"a" * 512), TID, 1.5)
    assert x.deadline == 2.5
    assert x.timer_expired(2.5) == [(encode_ack(1), TID)]
    assert x.error is None


def test_oversized_and_tsize_violations():
    x = _xfer()
    x.start(0)
    out = x.datagram_received(encode_data(1, b"a" * 513), TID, 0)
    assert decode(out[0][0]).code == 4 and "more than the block size" in str(x.error)

    y = ReadTransfer(SERVER, "f", blksize=1428, tsize=True)
    y.start(0)
    y.datagram_received(encode_oack({"blksize": 512, "tsize": 10}), TID, 0)
    y.datagram_received(encode_data(1, b"short"), TID, 0)
    assert y.error is not None and "tsize" in str(y.error)


@pytest.mark.parametrize("wrap_to", [0, 1])
def test_block_number_wraparound(wrap_to):
    """70000 blocks of 8 bytes: the block number wraps past 65535 (to 0, or to 1)."""
    x = ReadTransfer(SERVER, "f", blksize=8, tsize=False)
    x.start(0)
    x.datagram_received(encode_oack({"blksize": 8}), TID, 0)
    n = 70000
    wire = 1
    for i in range(n):
        payload = (i).to_bytes(8, "big")
        out = x.datagram_received(encode_data(wire, payload), TID, 0)
        assert out == [(encode_ack(wire), TID)], i
        if i == 65536:   # a duplicate right after the wrap is re-ACKed, not appended
            assert x.datagram_received(encode_data(wire, payload), TID, 0) == [(encode_ack(wire), TID)]
        wire = wire + 1 if wire < 65535 else wrap_to
    x.datagram_received(encode_data(wire, b""), TID, 0)
    assert x.done and len(x.data) == n * 8
    assert all(int.from_bytes(x.data[i * 8:i * 8 + 8], "big") == i for i in range(0, n, 997))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([SERVER, TID, ("192.0.2.1", 1), ("10.0.0.1", 69)]),
                          st.one_of(st.binary(max_size=40),
                                    st.builds(encode_data, st.integers(0, 3),
                                              st.binary(max_size=600)),
                                    st.builds(encode_oack, st.dictionaries(
                                        st.sampled_from(["blksize", "tsize", "timeout", "x"]),
                                        st.integers(-5, 70000), max_size=3)),
                                    st.builds(encode_error, st.integers(0, 9), st.text(max_size=5)))),
                max_size=30),
       st.floats(0, 10))
def test_state_machine_never_raises_on_hostile_traffic(packets, t):
    x = ReadTransfer(SERVER, "f", blksize=1428, tsize=True)
    x.start(0)
    for addr, raw in packets:
        for pkt, dst in x.datagram_received(raw, addr, t):
            assert isinstance(pkt, bytes)
            decode(pkt)
        x.timer_expired(t)
    assert x.error is None or isinstance(x.error, TftpError)
