"""Firmware load sets: the ``.loads`` manifest, its components, and how phones trust them.

A *load* (e.g. ``SCCP41.9-4-2SR3-1S``) is a ``.loads`` manifest plus the component files
(``.sbn``) it lists, in order. pfslab keeps Cisco's real file names and sizes
(:data:`KNOWN_LOADS`) but builds the bytes itself: deterministic synthetic images, optionally
scaled down (:func:`build_load`), so a lab run is repeatable and needs no Cisco software.

How pfslab stands in for Cisco's signatures
-------------------------------------------
Real ``.loads`` and ``.sbn`` files carry an RSA signature (256 bytes) from Cisco's signing CA,
and phones only accept signed images. pfslab replaces RSA with **HMAC-SHA256 under a fixed,
public lab key** (:data:`LAB_KEY`): "signed by the lab CA" means "carries a valid HMAC under
the lab key". This is not security (the key is in the source); it gives the emulation the same
*shape* of checks: a manifest that was tampered with, truncated or signed by someone else is
refused.

The chain of trust is pfslab's addition: the signed ``.loads`` body lists every component
with its size and SHA-256 digest. A phone checks the manifest signature (:func:`parse_loads`),
then verifies every component against its manifest digest (:func:`verify`) **before installing
it or passing it on** to a PFS child. A peer that serves bad bytes is therefore caught by the
child, whatever its source.

``.loads`` layout (all integers big-endian; names are a length byte then ASCII)::

    magic     4    b"PFSL"
    version   1    1
    signer    1+n  e.g. "CN=pfslab lab signer"
    ca        1+n  e.g. "CN=pfslab lab CA"
    serial    8    first 8 bytes of SHA-256 of the load name
    signature 32   HMAC-SHA256(LAB_KEY, every byte of the file except these 32)
    file      1+n  the file name, "<load>.loads"
    body_len  4    length of the body, which must end the file exactly
    body           CRLF text, one line per component in order: "<name> <size> <sha256 hex>"

Each synthetic component starts with a small signed header, then deterministic pseudo-random
filler up to its size::

    magic 4 b"PFSB" | version 1 | name 1+n | size 4 | HMAC-SHA256 over the preceding bytes 32

Everything here is pure (no I/O). Bad input raises :class:`FirmwareError` only.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import math
import re
import struct
from dataclasses import dataclass

__all__ = [
    "FirmwareError", "Component", "LoadSet", "build_load", "encode_loads", "parse_loads",
    "verify", "read_component_header", "model_load", "KNOWN_LOADS", "MODEL_LOAD",
    "PFS_CAPABLE", "LAB_KEY", "SIGNER", "CA",
]

#: The lab CA's "private key". Public on purpose: see the module docstring.
LAB_KEY = b"pfslab lab CA key: stands in for Cisco's RSA signing key; not a secret"
SIGNER = "CN=pfslab lab signer;OU=pfslab;O=pfslab lab"
CA = "CN=pfslab lab CA;OU=pfslab;O=pfslab lab"

LOADS_MAGIC = b"PFSL"
IMAGE_MAGIC = b"PFSB"
VERSION = 1
LOADS_SUFFIX = ".loads"
MIN_SIZE = 1024            # smallest synthetic component, bytes (whatever the scale)
MAX_SIZE = 256 * 2**20     # largest synthetic component (guards against a runaway scale)
MAX_COMPONENTS = 32
MAX_LOADS_BYTES = 8192     # no pfslab manifest comes close; bigger input is refused unread

# File names: a strict subset of what the CPPDP codec accepts (1..64 printable ASCII), and
# safe as TFTP paths (no "/", no "\", no leading dot).
_FILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_LOAD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,%d}" % (63 - len(LOADS_SUFFIX)))
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_SIZE_RE = re.compile(r"[1-9][0-9]{0,9}")


class FirmwareError(ValueError):
    """A bad, unsigned or truncated ``.loads`` or component, or an unknown load or model."""


# --------------------------------------------------------------------------- load sets

@dataclass(frozen=True)
class Component:
    """One component file of a load, as the signed manifest describes it."""
    name: str
    size: int
    sha256: str  # lowercase hex digest

    def __post_init__(self):
        if not isinstance(self.name, str) or not _FILE_RE.fullmatch(self.name):
            raise FirmwareError(f"bad component file name {self.name!r}")
        if self.name.endswith(LOADS_SUFFIX):
            raise FirmwareError(f"component {self.name!r} must not be a {LOADS_SUFFIX} file")
        if type(self.size) is not int or not 0 < self.size < 2**32:
            raise FirmwareError(f"bad size {self.size!r} for component {self.name}")
        if not isinstance(self.sha256, str) or not _HEX64_RE.fullmatch(self.sha256):
            raise FirmwareError(f"bad sha256 {self.sha256!r} for component {self.name}"
                                " (want 64 lowercase hex digits)")


@dataclass(frozen=True)
class LoadSet:
    """A load: its name (without ``.loads``) and its components, in manifest order."""
    name: str
    components: tuple[Component, ...]

    def __post_init__(self):
        if not isinstance(self.name, str) or not _LOAD_RE.fullmatch(self.name):
            raise FirmwareError(f"bad load name {self.name!r}")
        comps = tuple(self.components)
        object.__setattr__(self, "components", comps)
        if not comps:
            raise FirmwareError(f"load {self.name} has no components")
        if len(comps) > MAX_COMPONENTS:
            raise FirmwareError(f"load {self.name} has {len(comps)} components"
                                f" (at most {MAX_COMPONENTS})")
        if not all(isinstance(c, Component) for c in comps):
            raise FirmwareError(f"load {self.name}: components must be Component objects")
        names = [c.name for c in comps]
        if len(set(names)) != len(names):
            raise FirmwareError(f"load {self.name} lists a component twice")

    @property
    def loads_file(self) -> str:
        return self.name + LOADS_SUFFIX

    def files(self) -> list[str]:
        """Every file of the load, in fetch order: the ``.loads`` first, then the components."""
        return [self.loads_file] + [c.name for c in self.components]

    def component(self, name: str) -> Component:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def total_size(self) -> int:
        """Sum of the component sizes (the ``.loads`` itself not included)."""
        return sum(c.size for c in self.components)


# --------------------------------------------------------------------------- known loads

#: load name -> ((component file, real size in bytes), ...) in manifest order.
KNOWN_LOADS: dict[str, tuple[tuple[str, int], ...]] = {
    # 7941/7961, from the tech note (sizes quoted there; total 8,126,582).
    "SCCP41.9-4-2SR3-1S": (
        ("jar41sccp.9-4-2ES26.sbn", 1_630_052),
        ("cnu41.9-4-2ES26.sbn", 556_833),
        ("apps41.9-4-2ES26.sbn", 3_157_527),
        ("dsp41.9-4-2ES26.sbn", 562_693),
        ("cvm41sccp.9-4-2ES26.sbn", 2_219_477),
    ),
    # 7970/7971: jar70, apps70 and cvm70 sizes are from the tech note. cnu70 and dsp70 sizes
    # are NOT from a source: plausible values near their SCCP41 counterparts.
    "SCCP70.9-4-2SR3-1S": (
        ("jar70sccp.9-4-2ES26.sbn", 1_830_557),
        ("cnu70.9-4-2ES26.sbn", 558_311),       # plausible, not from a source
        ("apps70.9-4-2ES26.sbn", 3_157_527),
        ("dsp70.9-4-2ES26.sbn", 562_693),       # plausible, not from a source
        ("cvm70sccp.9-4-2ES26.sbn", 2_222_958),
    ),
    # 7906/7911: file names follow Cisco's pattern; sizes are NOT from a source (plausible).
    "SCCP11.9-4-2SR3-1S": (
        ("jar11sccp.9-4-2ES26.sbn", 1_419_936),
        ("cnu11.9-4-2ES26.sbn", 548_177),
        ("apps11.9-4-2ES26.sbn", 2_981_540),
        ("dsp11.9-4-2ES26.sbn", 336_012),
        ("cvm11sccp.9-4-2ES26.sbn", 2_062_715),
    ),
    # 7931: file names follow Cisco's pattern; sizes are NOT from a source (plausible).
    "SCCP31.9-4-2SR3-1S": (
        ("jar31sccp.9-4-2ES26.sbn", 1_502_408),
        ("cnu31.9-4-2ES26.sbn", 551_629),
        ("apps31.9-4-2ES26.sbn", 3_020_884),
        ("dsp31.9-4-2ES26.sbn", 341_296),
        ("cvm31sccp.9-4-2ES26.sbn", 2_101_353),
    ),
    # 7940/7960 (no PFS): second-generation single-image firmware 8.1(2)SR2. The file set
    # follows Cisco's P003 naming; sizes are NOT from a source (plausible).
    "P0030801SR02": (
        ("P0030801SR02.bin", 879_212),
        ("P0030801SR02.sb2", 701_440),
        ("P0030801SR02.sbn", 879_340),
    ),
}

#: phone model -> the load it upgrades to by default.
MODEL_LOAD: dict[str, str] = {
    "CP-7906G": "SCCP11.9-4-2SR3-1S",
    "CP-7911G": "SCCP11.9-4-2SR3-1S",
    "CP-7931G": "SCCP31.9-4-2SR3-1S",
    "CP-7941G": "SCCP41.9-4-2SR3-1S",
    "CP-7941G-GE": "SCCP41.9-4-2SR3-1S",
    "CP-7961G": "SCCP41.9-4-2SR3-1S",
    "CP-7961G-GE": "SCCP41.9-4-2SR3-1S",
    "CP-7970G": "SCCP70.9-4-2SR3-1S",
    "CP-7971G-GE": "SCCP70.9-4-2SR3-1S",
    "CP-7940G": "P0030801SR02",
    "CP-7960G": "P0030801SR02",
}

#: Third-generation models that can do Peer Firmware Sharing (firmware 8.3(1) and later).
#: The 7940/7960 (and OEM phones) cannot: they always upgrade the traditional way.
PFS_CAPABLE: frozenset[str] = frozenset({
    "CP-7906G", "CP-7911G", "CP-7931G",
    "CP-7941G", "CP-7941G-GE", "CP-7961G", "CP-7961G-GE",
    "CP-7970G", "CP-7971G-GE",
})


def model_load(model: str) -> str:
    """The default load name of ``model`` (e.g. ``CP-7961G``)."""
    try:
        return MODEL_LOAD[model]
    except (KeyError, TypeError):
        raise FirmwareError(f"unknown phone model {model!r}; known models: "
                            + ", ".join(sorted(MODEL_LOAD))) from None


# --------------------------------------------------------------------------- images

def _lp(text: str) -> bytes:
    """A length-prefixed ASCII name."""
    raw = text.encode("ascii")
    if not 0 < len(raw) < 256:
        raise FirmwareError(f"name too long or empty: {text!r}")
    return bytes([len(raw)]) + raw


# A prime period, so the filler never repeats at any power-of-two offset (TFTP blocks,
# 64 KiB DATA frames): a transfer that sends the wrong block changes the digest.
_PERIOD = 65521


@functools.lru_cache(maxsize=32)
def _image(name: str, size: int) -> bytes:
    """The deterministic synthetic image of component ``name`` with ``size`` bytes."""
    head = IMAGE_MAGIC + bytes([VERSION]) + _lp(name) + struct.pack(">I", size)
    head += hmac.new(LAB_KEY, head, hashlib.sha256).digest()
    seed = hashlib.sha256(b"pfslab image\0" + name.encode("ascii")).digest()
    block = b"".join(hashlib.sha256(seed + struct.pack(">I", i)).digest()
                     for i in range(_PERIOD // 32 + 1))[:_PERIOD]
    need = size - len(head)
    filler = block * (need // _PERIOD + 1)
    return head + filler[:need]


def read_component_header(data: bytes) -> tuple[str, int]:
    """The (name, size) from a component's signed header; FirmwareError if bad or unsigned."""
    try:
        mv = bytes(data[:4 + 1 + 256 + 4 + 32])
    except TypeError:
        raise FirmwareError("component data must be bytes") from None
    if mv[:4] != IMAGE_MAGIC:
        raise FirmwareError("not a pfslab component image (bad magic)")
    if len(mv) < 6 or mv[4] != VERSION:
        raise FirmwareError("unsupported or truncated component header")
    n = mv[5]
    end = 6 + n + 4
    if len(mv) < end + 32:
        raise FirmwareError("truncated component header")
    if not hmac.compare_digest(hmac.new(LAB_KEY, mv[:end], hashlib.sha256).digest(),
                               mv[end:end + 32]):
        raise FirmwareError("component header is not signed by the lab CA")
    name = mv[6:6 + n].decode("ascii", "replace")
    (size,) = struct.unpack(">I", mv[6 + n:end])
    return name, size


def build_load(name: str, scale: float = 1.0) -> tuple[LoadSet, dict[str, bytes]]:
    """Build load ``name`` from :data:`KNOWN_LOADS`: its LoadSet and every file's bytes.

    Component sizes are the real sizes times ``scale``, rounded, at least 1 KiB. The bytes
    are deterministic (same name and scale, same bytes). The dict maps each file name,
    the ``.loads`` included, to its content.
    """
    if name not in KNOWN_LOADS:
        raise FirmwareError(f"unknown load {name!r}; known loads: "
                            + ", ".join(sorted(KNOWN_LOADS)))
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) \
            or not math.isfinite(scale) or scale <= 0:
        raise FirmwareError(f"scale must be a positive number, not {scale!r}")
    files: dict[str, bytes] = {}
    comps = []
    for fname, real in KNOWN_LOADS[name]:
        size = max(MIN_SIZE, round(real * scale))
        if size > MAX_SIZE:
            raise FirmwareError(f"scale {scale} makes {fname} {size} bytes"
                                f" (at most {MAX_SIZE})")
        data = _image(fname, size)
        files[fname] = data
        comps.append(Component(fname, size, hashlib.sha256(data).hexdigest()))
    load = LoadSet(name, tuple(comps))
    return load, {load.loads_file: encode_loads(load), **files}


def verify(component: Component, data: bytes) -> bool:
    """True if ``data`` has exactly the component's size and SHA-256 digest."""
    try:
        return (len(data) == component.size
                and hmac.compare_digest(hashlib.sha256(data).hexdigest(), component.sha256))
    except TypeError:
        return False


# --------------------------------------------------------------------------- .loads

def _serial(name: str) -> bytes:
    return hashlib.sha256(b"pfslab serial\0" + name.encode("ascii")).digest()[:8]


def encode_loads(load: LoadSet) -> bytes:
    """The signed ``.loads`` manifest of ``load``."""
    if not isinstance(load, LoadSet):
        raise FirmwareError("encode_loads wants a LoadSet")
    body = "".join(f"{c.name} {c.size} {c.sha256}\r\n" for c in load.components).encode("ascii")
    before = LOADS_MAGIC + bytes([VERSION]) + _lp(SIGNER) + _lp(CA) + _serial(load.name)
    after = _lp(load.loads_file) + struct.pack(">I", len(body)) + body
    sig = hmac.new(LAB_KEY, before + after, hashlib.sha256).digest()
    return before + sig + after


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise FirmwareError(f"truncated .loads file (in {what})")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def name(self, what: str) -> str:
        n = self.take(1, what)[0]
        raw = self.take(n, what)
        if not n or any(not 0x20 <= b <= 0x7e for b in raw):
            raise FirmwareError(f"bad {what} in .loads header")
        return raw.decode("ascii")


def parse_loads(data: bytes) -> LoadSet:
    """Check the signature of a ``.loads`` file and return the load it describes.

    Raises FirmwareError, and nothing else, for anything that is not a well-formed ``.loads``
    signed by the lab CA.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FirmwareError(".loads data must be bytes")
    data = bytes(data)
    if len(data) > MAX_LOADS_BYTES:
        raise FirmwareError(f".loads file too large ({len(data)} bytes)")
    r = _Reader(data)
    if r.take(4, "magic") != LOADS_MAGIC:
        raise FirmwareError("not a pfslab .loads file (bad magic)")
    if r.take(1, "version")[0] != VERSION:
        raise FirmwareError("unsupported .loads version")
    r.name("signer")
    r.name("CA name")
    r.take(8, "serial")
    sig_at = r.pos
    sig = r.take(32, "signature")
    fname = r.name("file name")
    (body_len,) = struct.unpack(">I", r.take(4, "body length"))
    body = r.take(body_len, "body")
    if r.pos != len(data):
        raise FirmwareError("trailing bytes after the .loads body")
    want = hmac.new(LAB_KEY, data[:sig_at] + data[sig_at + 32:], hashlib.sha256).digest()
    if not hmac.compare_digest(sig, want):
        raise FirmwareError("bad .loads signature: not signed by the lab CA, or altered")
    if not fname.endswith(LOADS_SUFFIX):
        raise FirmwareError(f"file name {fname!r} in the .loads header does not end in .loads")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise FirmwareError(".loads body is not ASCII") from None
    if not text.endswith("\r\n"):
        raise FirmwareError(".loads body lines must end with CRLF")
    comps = []
    for i, line in enumerate(text[:-2].split("\r\n"), 1):
        parts = line.split(" ")
        if len(parts) != 3 or not _SIZE_RE.fullmatch(parts[1]) or "\n" in line or "\r" in line:
            raise FirmwareError(f".loads body line {i} is malformed: {line[:80]!r}")
        comps.append(Component(parts[0], int(parts[1]), parts[2]))
    return LoadSet(fname[:-len(LOADS_SUFFIX)], tuple(comps))
