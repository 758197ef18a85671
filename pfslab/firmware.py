"""Firmware load sets: the ``.loads`` manifest, its components, and how phones trust them.

A *load* (e.g. ``SCCP41.9-4-2SR3-1S``) is a ``.loads`` manifest plus the component files
(``.sbn``) it lists, in order. pfslab keeps Cisco's real file names and sizes
(:data:`KNOWN_LOADS`) but builds the bytes itself: deterministic synthetic images, optionally
scaled down (:func:`build_load`), so a lab run is repeatable and needs no Cisco software.

How pfslab stands in for Cisco's signatures
-------------------------------------------
Real ``.loads`` and ``.sbn`` files carry an RSA signature from Cisco's signing key, and a
phone only accepts images that verify against the certificates it trusts. pfslab does the
same with **Ed25519** (from ``cryptography``): a :class:`Signer` holds the private key and
exists only at HQ (made per run, or loaded from a PEM file the user names:
:func:`load_signer`); a phone holds only a :class:`Trust`, the public key, the stand-in for
its trust list. A peer cannot forge a ``.loads`` or a component: it has no private key.

:data:`FIXTURE_SIGNER` is a **test fixture key**: its private key is derived from a constant in
this file, so anyone can sign with it. It is the default of :func:`build_load` and of the
phone's ``trust`` only so that tests and callers that do not yet make a per-run signer keep
working; a lab run must use its own :class:`Signer` and give the phones ``signer.trust``.

The chain of trust: the signed ``.loads`` body lists every component with its size and
SHA-256 digest. A phone checks the manifest signature (:func:`parse_loads`), then verifies
every component against its manifest digest (:func:`verify`) **before installing it or
passing it on** to a PFS child. A peer that serves bad bytes is therefore caught by the
child, whatever its source. Each component also carries its own signed header
(:func:`read_component_header`), as Cisco's images do.

``.loads`` layout (all integers big-endian; names are a length byte then ASCII)::

    magic     4    b"PFSL"
    version   1    2
    signer    1+n  the signer's name, e.g. "CN=pfslab HQ signer;OU=pfslab;O=pfslab lab"
    ca        1+n  e.g. "CN=pfslab lab CA;OU=pfslab;O=pfslab lab"
    serial    8    first 8 bytes of SHA-256 of the load name
    key id    8    first 8 bytes of SHA-256 of the signer's raw public key
    signature 64   Ed25519 over every byte of the file except these 64
    file      1+n  the file name, "<load>.loads"
    body_len  4    length of the body, which must end the file exactly
    body           CRLF text, one line per component in order: "<name> <size> <sha256 hex>"

Each synthetic component starts with a signed header, then deterministic pseudo-random
filler up to its size::

    magic 4 b"PFSB" | version 1 (2) | name 1+n | size 4 | key id 8 | signature 64

The signature is Ed25519 over the header bytes before it and the SHA-256 of the filler,
so it covers the whole image.

Everything here is pure (no I/O) except the key files (:func:`load_signer`,
:meth:`Signer.write`). Bad input raises :class:`FirmwareError` only, and a bad key file
:class:`KeyFileError` (a UserError: one line, exit 2).
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import math
import os
import re
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (Ed25519PrivateKey,
                                                               Ed25519PublicKey)

from .errors import UserError

__all__ = [
    "FirmwareError", "KeyFileError", "Signer", "Trust", "load_signer", "FIXTURE_SIGNER",
    "FIXTURE_TRUST", "Component", "LoadSet", "build_load", "encode_loads", "parse_loads",
    "peek_loads",
    "verify", "read_component_header", "model_load", "KNOWN_LOADS", "MODEL_LOAD",
    "PFS_CAPABLE", "CA",
]

SIGNER_NAME = "CN=pfslab HQ signer;OU=pfslab;O=pfslab lab"
CA = "CN=pfslab lab CA;OU=pfslab;O=pfslab lab"

LOADS_MAGIC = b"PFSL"
IMAGE_MAGIC = b"PFSB"
VERSION = 2                # 1 was pfslab's shared-key HMAC: refused now
KEY_ID_LEN = 8
SIG_LEN = 64               # Ed25519
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


class KeyFileError(UserError):
    """A signing-key file that cannot be used: one line saying why and how to fix it."""


# --------------------------------------------------------------------------- keys

def _key_id(raw_public: bytes) -> bytes:
    return hashlib.sha256(raw_public).digest()[:KEY_ID_LEN]


class Trust:
    """What a phone trusts: one Ed25519 public key (the stand-in for its trust list).

    It can check signatures and nothing else. ``hex()`` / ``from_hex()`` carry it in the
    agent's spec.
    """

    __slots__ = ("_key", "raw", "key_id")

    def __init__(self, public_key: Ed25519PublicKey):
        if not isinstance(public_key, Ed25519PublicKey):
            raise FirmwareError("a Trust holds an Ed25519 public key")
        self._key = public_key
        self.raw = public_key.public_bytes(serialization.Encoding.Raw,
                                           serialization.PublicFormat.Raw)
        self.key_id = _key_id(self.raw)

    @classmethod
    def from_hex(cls, text: str) -> "Trust":
        """The trust of a public key written as 64 hex digits (see :meth:`hex`)."""
        try:
            raw = bytes.fromhex(text)
            if len(raw) != 32:
                raise ValueError
            return cls(Ed25519PublicKey.from_public_bytes(raw))
        except (TypeError, ValueError):
            raise FirmwareError(f"bad trusted public key {str(text)[:80]!r}: want 64 hex"
                                " digits (an Ed25519 public key)") from None

    def hex(self) -> str:
        return self.raw.hex()

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            self._key.verify(signature, data)
            return True
        except InvalidSignature:
            return False

    def __eq__(self, other):
        return isinstance(other, Trust) and other.raw == self.raw

    def __hash__(self):
        return hash(self.raw)

    def __repr__(self):
        return f"Trust(key id {self.key_id.hex()})"


class Signer:
    """HQ's signing key (Ed25519, private). Only the lab's HQ side ever holds one."""

    __slots__ = ("_key", "name", "trust")

    def __init__(self, private_key: Ed25519PrivateKey, name: str = SIGNER_NAME):
        if not isinstance(private_key, Ed25519PrivateKey):
            raise FirmwareError("a Signer holds an Ed25519 private key")
        self._key = private_key
        self.name = name
        self.trust = Trust(private_key.public_key())   # what the phones are given

    @classmethod
    def generate(cls) -> "Signer":
        """A fresh key, e.g. one per lab run."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes, name: str = SIGNER_NAME) -> "Signer":
        """A deterministic key from ``seed`` (anyone who knows the seed can sign)."""
        return cls(Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest()), name)

    @classmethod
    def from_pem(cls, data: bytes, where: str = "signing key") -> "Signer":
        """The signer of an unencrypted PEM Ed25519 private key; KeyFileError if it is not."""
        fix = ("make one with: openssl genpkey -algorithm ed25519 -out KEY.pem")
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except TypeError:
            raise KeyFileError(f"{where} is encrypted: pfslab needs an unencrypted key ({fix})"
                               ) from None
        except (ValueError, UnsupportedAlgorithm):
            raise KeyFileError(f"{where} is not a PEM private key ({fix})") from None
        if not isinstance(key, Ed25519PrivateKey):
            kind = type(key).__name__.lstrip("_").replace("PrivateKey", "")
            raise KeyFileError(f"{where} holds a key of type {kind}, not an Ed25519 key"
                               f" ({fix})")
        return cls(key)

    def private_pem(self) -> bytes:
        return self._key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())

    def write(self, path: str) -> None:
        """Save the private key as PEM, readable by its owner only (mode 0600)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.private_pem())

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def __repr__(self):
        return f"Signer({self.name!r}, key id {self.trust.key_id.hex()})"


MAX_KEY_FILE = 64 * 1024


def load_signer(path: str | None) -> Signer:
    """HQ's signer: the key in PEM file ``path``, or a fresh one when ``path`` is None.

    Raises :class:`KeyFileError` (a :class:`~pfslab.errors.UserError`: one line, exit 2)
    for a missing, unreadable, encrypted or wrong-kind key file.
    """
    if path is None:
        return Signer.generate()
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE + 1)
    except OSError as e:
        raise KeyFileError(f"cannot read signing key file {path}: {e.strerror or e}") from None
    if len(data) > MAX_KEY_FILE:
        raise KeyFileError(f"signing key file {path} is too large to be a PEM key")
    return Signer.from_pem(data, f"signing key file {path}")


#: TEST FIXTURE KEY. Its private key comes from this constant, so it proves nothing: it is the
#: transitional default for callers that do not make a per-run :class:`Signer` yet.
#: It signs under the same name as any HQ signer, so a load's file sizes do not depend on the key.
FIXTURE_SIGNER = Signer.from_seed(b"pfslab test fixture key: public, never a lab run's key")
FIXTURE_TRUST = FIXTURE_SIGNER.trust


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
def _filler(name: str, need: int) -> tuple[bytes, bytes]:
    """The deterministic filler of component ``name`` (``need`` bytes) and its SHA-256."""
    seed = hashlib.sha256(b"pfslab image\0" + name.encode("ascii")).digest()
    block = b"".join(hashlib.sha256(seed + struct.pack(">I", i)).digest()
                     for i in range(_PERIOD // 32 + 1))[:_PERIOD]
    filler = (block * (need // _PERIOD + 1))[:need]
    return filler, hashlib.sha256(filler).digest()


def _image(name: str, size: int, signer: Signer) -> bytes:
    """The synthetic image of component ``name`` with ``size`` bytes, signed by ``signer``."""
    head = (IMAGE_MAGIC + bytes([VERSION]) + _lp(name) + struct.pack(">I", size)
            + signer.trust.key_id)
    filler, digest = _filler(name, size - len(head) - SIG_LEN)
    return head + signer.sign(head + digest) + filler


def read_component_header(data: bytes, trust: Trust) -> tuple[str, int]:
    """The (name, size) from a whole component image whose signature ``trust`` accepts.

    The signature covers the header and the SHA-256 of the rest of the image, so ``data``
    must be the whole image. FirmwareError if it is bad, truncated or signed by another key.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FirmwareError("component data must be bytes")
    mv = bytes(data[:4 + 1 + 256 + 4 + KEY_ID_LEN + SIG_LEN])
    if mv[:4] != IMAGE_MAGIC:
        raise FirmwareError("not a pfslab component image (bad magic)")
    if len(mv) < 6 or mv[4] != VERSION:
        raise FirmwareError("unsupported or truncated component header")
    n = mv[5]
    end = 6 + n + 4 + KEY_ID_LEN
    if len(mv) < end + SIG_LEN:
        raise FirmwareError("truncated component header")
    name = mv[6:6 + n].decode("ascii", "replace")
    (size,) = struct.unpack(">I", mv[6 + n:6 + n + 4])
    if size != len(data):
        raise FirmwareError(f"component header says {size} bytes, the image has {len(data)}")
    _check_signed(trust, mv[end - KEY_ID_LEN:end], mv[end:end + SIG_LEN],
                  mv[:end] + hashlib.sha256(data[end + SIG_LEN:]).digest(), "component")
    return name, size


def _check_signed(trust: Trust, key_id: bytes, sig: bytes, signed: bytes, what: str) -> None:
    """FirmwareError unless ``sig`` is ``trust``'s signature over ``signed``."""
    if not isinstance(trust, Trust):
        raise FirmwareError(f"checking a {what} needs a Trust (the trusted public key)")
    if key_id != trust.key_id:
        raise FirmwareError(f"{what} is signed by key {key_id.hex()}, not by the trusted"
                            f" key {trust.key_id.hex()}")
    if not trust.verify(sig, signed):
        raise FirmwareError(f"bad {what} signature: altered, or not signed by the trusted key")


def build_load(name: str, scale: float = 1.0, signer: Signer = FIXTURE_SIGNER
               ) -> tuple[LoadSet, dict[str, bytes]]:
    """Build load ``name`` from :data:`KNOWN_LOADS`, signed by ``signer``: its LoadSet and
    every file's bytes.

    Component sizes are the real sizes times ``scale``, rounded, at least 1 KiB. The bytes
    are deterministic (same name, scale and key, same bytes). The dict maps each file name,
    the ``.loads`` included, to its content. The default signer is the test fixture key
    (:data:`FIXTURE_SIGNER`); a lab run passes its own.
    """
    if not isinstance(signer, Signer):
        raise FirmwareError("build_load needs a Signer (HQ's signing key)")
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
        data = _image(fname, size, signer)
        files[fname] = data
        comps.append(Component(fname, size, hashlib.sha256(data).hexdigest()))
    load = LoadSet(name, tuple(comps))
    return load, {load.loads_file: encode_loads(load, signer), **files}


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


def encode_loads(load: LoadSet, signer: Signer) -> bytes:
    """The ``.loads`` manifest of ``load``, signed by ``signer``."""
    if not isinstance(load, LoadSet):
        raise FirmwareError("encode_loads wants a LoadSet")
    if not isinstance(signer, Signer):
        raise FirmwareError("encode_loads needs a Signer (HQ's signing key)")
    body = "".join(f"{c.name} {c.size} {c.sha256}\r\n" for c in load.components).encode("ascii")
    before = (LOADS_MAGIC + bytes([VERSION]) + _lp(signer.name) + _lp(CA) + _serial(load.name)
              + signer.trust.key_id)
    after = _lp(load.loads_file) + struct.pack(">I", len(body)) + body
    return before + signer.sign(before + after) + after


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


def parse_loads(data: bytes, trust: Trust) -> LoadSet:
    """Check the signature of a ``.loads`` file against ``trust`` and return its load.

    Raises FirmwareError, and nothing else, for anything that is not a well-formed ``.loads``
    signed by the trusted key.
    """
    return _parse_loads(data, trust)


def peek_loads(data: bytes) -> LoadSet:
    """The load a well-formed ``.loads`` lists, WITHOUT checking its signature: for tools
    that only count sizes (cost estimates, bench bounds). A phone never calls this."""
    return _parse_loads(data, None)


def _parse_loads(data: bytes, trust: Trust | None) -> LoadSet:
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
    key_id = r.take(KEY_ID_LEN, "key id")
    sig_at = r.pos
    sig = r.take(SIG_LEN, "signature")
    fname = r.name("file name")
    (body_len,) = struct.unpack(">I", r.take(4, "body length"))
    body = r.take(body_len, "body")
    if r.pos != len(data):
        raise FirmwareError("trailing bytes after the .loads body")
    if trust is not None:
        _check_signed(trust, key_id, sig, data[:sig_at] + data[sig_at + SIG_LEN:], ".loads")
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
