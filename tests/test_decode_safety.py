"""`pfslab decode` on hostile but valid captures: names that read like rich markup or
terminal escapes print as they are, output grows linearly with the capture, and a file that
is not a capture is one line and exit 2 (issue 8 item 7)."""
import json

from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.layers.tftp import TFTP, TFTP_RRQ  # noqa: E402
from scapy.utils import wrpcap, wrpcapng  # noqa: E402

from pfslab import cli
from pfslab.dissect import decode
from pfslab.dissect.scapy_cppdp import CPPDP

BCAST = "10.1.1.255"


class Ran:
    def __init__(self, returncode, out):
        self.returncode, self.stdout, self.stderr = returncode, out.out, out.err


def pfslab(capsys, *args):
    """`pfslab ARGS` in this process (the CLI's own main: exit code, stdout, stderr)."""
    capsys.readouterr()
    rc = cli.main(list(args))
    return Ran(rc, capsys.readouterr())


def udp(src, dst, payload, t):
    p = Ether() / IP(src=src, dst=dst) / UDP(sport=4051, dport=4051) / payload
    p.time = t
    return p


def election(model: bytes, file: bytes, t0=0.0):
    """Two claimants and the winner's ROOT, for one model and file."""
    kw = dict(model=model, file=file, map=0x1234)
    return [udp("10.1.1.11", BCAST, CPPDP(type=1, xid=0x11, strength=9, ad=0, **kw), t0),
            udp("10.1.1.12", BCAST, CPPDP(type=1, xid=0x12, strength=5, ad=0, **kw), t0 + .1),
            udp("10.1.1.11", BCAST, CPPDP(type=2, xid=0x11, strength=0x80000009,
                                          server="10.0.0.10", **kw), t0 + .5)]


MARKUP = [b"[/]", b"[bold]x[/bold]", b"[link=http://e]a", b":smile:", b"[red"]


def test_names_that_read_like_markup_print_as_they_are(tmp_path, capsys):
    pk = []
    for i, name in enumerate(MARKUP):
        pk += election(b"CP-" + name, b"f" + name + b".sbn", t0=i)
    rrq = Ether() / IP(src="10.1.1.11", dst="10.0.0.10") / UDP(sport=5000, dport=69) \
        / TFTP() / TFTP_RRQ(filename=b"[/]\x1b[31mred\x07.sbn", mode=b"octet")
    rrq.time = 9.0
    path = tmp_path / "run"
    path.mkdir()
    wrpcap(str(path / "subnet-1.pcap"), pk)
    wrpcap(str(path / "wan.pcap"), [rrq])
    for flag in ("--tree", "--table", None):
        p = pfslab(capsys, "decode", str(path), "--width", "250", *([flag] if flag else []))
        assert p.returncode == 0, p.stderr
        assert p.stderr == ""
        for name in MARKUP:
            if flag != "--table":
                assert f"f{name.decode()}.sbn" in p.stdout, (flag, name)
        assert "\x1b" not in p.stdout and "\x07" not in p.stdout
        if flag != "--tree":
            assert "[/]\\x1b[31mred\\x07.sbn" in p.stdout   # shown, escaped, not obeyed
    rep = json.loads(pfslab(capsys, "decode", str(path), "--json").stdout)
    assert {h["file"] for h in rep["hierarchies"]} == {f"f{n.decode()}.sbn" for n in MARKUP}


def roots_flood(n: int):
    """n phones each announcing a ROOT of its own (a new XID) for the same model and file,
    each after a claim: what a hostile subnet, or a long run with many re-elections, sends."""
    pk = []
    kw = dict(model=b"CP-7961G", file=b"apps41.9-4-2ES26.sbn", map=0x1234)
    for i in range(n):
        ip = f"10.1.{1 + i // 250}.{1 + i % 250}"
        pk.append(udp(ip, BCAST, CPPDP(type=1, xid=0x1000 + i, strength=i, ad=0, **kw), i))
        pk.append(udp(ip, BCAST, CPPDP(type=2, xid=0x1000 + i, strength=0x80000000 | i,
                                       server="10.0.0.10", **kw), i + .5))
    return pk


def test_output_grows_linearly_with_the_capture(tmp_path):
    """Every claim is listed once, in the hierarchy it belongs to: twice the ROOTs gives
    about twice the JSON (it was quadratic: each hierarchy copied its group's claims)."""
    sizes = {}
    for n in (150, 300):
        path = tmp_path / f"subnet-{n}.pcap"
        wrpcap(str(path), roots_flood(n))
        rep = decode.decode_paths([path])
        assert len(rep["hierarchies"]) == n
        assert sum(len(h["election"]["claims"]) for h in rep["hierarchies"]) == n
        assert all(h["election"]["claims"][0]["won"] for h in rep["hierarchies"])
        sizes[n] = len(json.dumps(rep)) + len(decode.render(rep))
    assert sizes[300] < 2.2 * sizes[150], sizes


def test_not_a_capture_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "notes.txt"
    bad.write_text("these are not packets\n")
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    for path, says in ((bad, "starts with"), (empty, "is empty"),
                       (tmp_path / "missing.pcap", "no such pcap")):
        p = pfslab(capsys, "decode", str(path))
        assert p.returncode == 2, p
        assert p.stdout == "" and p.stderr.count("\n") == 1, p.stderr
        assert p.stderr.startswith("pfslab: ") and says in p.stderr
        assert "Traceback" not in p.stderr


def test_pcapng_decodes_like_pcap(tmp_path):
    pk = election(b"CP-7961G", b"apps41.9-4-2ES26.sbn")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    wrpcap(str(tmp_path / "a" / "subnet-1.pcap"), pk)
    wrpcapng(str(tmp_path / "b" / "subnet-1.pcapng"), pk)
    a, b = decode.decode_paths([tmp_path / "a"]), decode.decode_paths([tmp_path / "b"])
    strip = lambda hs: [{k: v for k, v in h.items() if k != "pcap"} for h in hs]  # noqa: E731
    assert a["hierarchies"] and strip(a["hierarchies"]) == strip(b["hierarchies"])
    assert b["pcaps"][0]["kind"] == "subnet" and b["pcaps"][0]["subnet"] == 1
