"""CUCM-like phone configuration: where the PFS setting comes from, and the TFTP config files.

CUCM sets Peer Firmware Sharing at three levels; the first level that sets it wins:

1. the device's own Phone Configuration;
2. its Common Phone Profile;
3. the Enterprise Phone Configuration.

Unset everywhere means off (the CUCM default). Models that cannot do PFS (7940, 7960) resolve
to off whatever the levels say. The 7931 resolves like every other capable model: the field
problem CSCud66570 ("sharing always disabled on the 7931") is a regression pfslab guards.

A phone learns the result from ``SEP<MAC>.cnf.xml``::

    <device>
      <loadInformation>SCCP41.9-4-2SR3-1S</loadInformation>
      <vendorConfig>
        <peerFirmwareSharing>1</peerFirmwareSharing>
        <loadServer/>
        <logServer>10.0.0.5:514</logServer>
      </vendorConfig>
    </device>

and a phone without its own file falls back to ``XMLDefault.cnf.xml``, whose load tags are
keyed by model: ``<loadInformation115 model="Cisco IP Phone 7941">``.

Everything here is pure (no I/O). Bad input raises :class:`ConfigError` only. Parsers refuse
DOCTYPE and entity declarations (no entity expansion, no external fetches).
"""
from __future__ import annotations

import ipaddress
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from xml.parsers import expat

from pfslab.firmware import MODEL_LOAD, PFS_CAPABLE, FirmwareError, model_load

__all__ = [
    "ConfigError", "PhoneConfig", "Device", "Cluster", "resolve_pfs", "normalize_mac",
    "sep_filename", "render_sep", "parse_sep", "render_xmldefault", "parse_xmldefault",
    "XMLDEFAULT", "MODEL_XML", "DEFAULT_LOG_PORT",
]

XMLDEFAULT = "XMLDefault.cnf.xml"
DEFAULT_LOG_PORT = 514
MAX_XML_BYTES = 65536

#: model -> (CUCM device type number, model string in XMLDefault.cnf.xml). 115 for the 7941
#: is from the tech note; the other numbers are CUCM's device type codes as we know them,
#: not checked against a source. Any unique number would do for pfslab.
MODEL_XML: dict[str, tuple[int, str]] = {
    "CP-7906G": (369, "Cisco IP Phone 7906"),
    "CP-7911G": (307, "Cisco IP Phone 7911"),
    "CP-7931G": (348, "Cisco IP Phone 7931"),
    "CP-7941G": (115, "Cisco IP Phone 7941"),
    "CP-7941G-GE": (309, "Cisco IP Phone 7941G-GE"),
    "CP-7961G": (30018, "Cisco IP Phone 7961"),
    "CP-7961G-GE": (308, "Cisco IP Phone 7961G-GE"),
    "CP-7970G": (30006, "Cisco IP Phone 7970"),
    "CP-7971G-GE": (119, "Cisco IP Phone 7971"),
    "CP-7940G": (8, "Cisco IP Phone 7940"),
    "CP-7960G": (7, "Cisco IP Phone 7960"),
}
_XML_MODEL = {xml_name: model for model, (_, xml_name) in MODEL_XML.items()}

_LOAD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,57}")
_MAC_RES = (
    re.compile(r"(?:SEP)?([0-9A-Fa-f]{12})"),
    re.compile(r"([0-9A-Fa-f]{2})([:-])([0-9A-Fa-f]{2})\2([0-9A-Fa-f]{2})\2"
               r"([0-9A-Fa-f]{2})\2([0-9A-Fa-f]{2})\2([0-9A-Fa-f]{2})"),
    re.compile(r"([0-9A-Fa-f]{4})\.([0-9A-Fa-f]{4})\.([0-9A-Fa-f]{4})"),
)
_LOADINFO_RE = re.compile(r"loadInformation([0-9]{1,6})")


class ConfigError(ValueError):
    """A bad phone configuration: unknown model or MAC, bad setting, bad or hostile XML."""


@dataclass(frozen=True)
class PhoneConfig:
    """What a phone reads from its ``SEP<MAC>.cnf.xml``."""
    load_name: str
    pfs: bool
    log_server: str | None     # "ip:port" (UDP syslog for PFS logs)
    load_server: str | None    # IPv4 address; None: the TFTP server itself


# --------------------------------------------------------------------------- settings

def _check_model(model: str) -> str:
    if not isinstance(model, str) or model not in MODEL_LOAD:
        raise ConfigError(f"unknown phone model {model!r}; known models: "
                          + ", ".join(sorted(MODEL_LOAD)))
    return model


def _check_setting(value, level: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"PFS setting at the {level} level must be True, False or None,"
                          f" not {value!r}")
    return value


def resolve_pfs(model: str, device: bool | None, profile: bool | None,
                enterprise: bool | None) -> bool:
    """The PFS setting a phone of ``model`` gets: device > common phone profile > enterprise.

    None means "not set at this level". Unset everywhere: False (CUCM's default). Models
    outside :data:`~pfslab.firmware.PFS_CAPABLE`: always False.
    """
    _check_model(model)
    levels = (_check_setting(device, "device"), _check_setting(profile, "common phone profile"),
              _check_setting(enterprise, "enterprise"))
    if model not in PFS_CAPABLE:
        return False
    for value in levels:
        if value is not None:
            return value
    return False


def normalize_mac(mac: str) -> str:
    """12 uppercase hex digits from ``08:00:27:0a:0b:0c``, ``08-00-...``, ``0800.270a.0b0c``,
    ``0800270a0b0c`` or ``SEP0800270A0B0C``."""
    if isinstance(mac, str):
        text = mac.strip()
        for rx in _MAC_RES:
            m = rx.fullmatch(text)
            if m:
                return "".join(g for g in m.groups() if g not in (":", "-")).upper()
    raise ConfigError(f"bad MAC address {mac!r} (e.g. 08:00:27:0a:0b:0c)")


def sep_filename(mac: str) -> str:
    """``SEP0800270A0B0C.cnf.xml``: the config file name of the phone with this MAC."""
    return f"SEP{normalize_mac(mac)}.cnf.xml"


def _check_load(load_name) -> str:
    if not isinstance(load_name, str) or not _LOAD_RE.fullmatch(load_name):
        raise ConfigError(f"bad load name {load_name!r} (the name without .loads,"
                          " e.g. SCCP41.9-4-2SR3-1S)")
    return load_name


def _norm_log_server(value) -> str:
    """``ip:port`` from ``ip:port`` or ``ip`` (port 514)."""
    if not isinstance(value, str):
        raise ConfigError(f"bad log server {value!r} (want ip:port)")
    host, sep, port = value.strip().partition(":")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise ConfigError(f"bad log server {value!r}: want an IPv4 address, e.g. 10.0.0.5:514")\
            from None
    if not sep:
        return f"{host}:{DEFAULT_LOG_PORT}"
    if not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536:
        raise ConfigError(f"bad log server port in {value!r} (1..65535)")
    return f"{host}:{int(port)}"


def _norm_load_server(value) -> str:
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return str(ipaddress.IPv4Address(value.strip()))
    except ValueError:
        raise ConfigError(f"bad load server {value!r}: want an IPv4 address") from None


# --------------------------------------------------------------------------- XML

def _safe_xml(data: bytes, what: str) -> ET.Element:
    """Parse untrusted XML; ConfigError for anything malformed, a DOCTYPE or an entity."""
    if not isinstance(data, (bytes, bytearray)):
        raise ConfigError(f"{what} must be bytes")
    if len(data) > MAX_XML_BYTES:
        raise ConfigError(f"{what} too large ({len(data)} bytes)")

    def refuse(*_args):
        raise ConfigError(f"{what}: DOCTYPE and entity declarations are not allowed")

    p = expat.ParserCreate()
    p.StartDoctypeDeclHandler = refuse
    p.EntityDeclHandler = refuse
    p.UnparsedEntityDeclHandler = refuse
    p.ExternalEntityRefHandler = refuse
    try:
        p.Parse(bytes(data), True)
        return ET.fromstring(bytes(data))
    except ConfigError:
        raise
    except (expat.ExpatError, ET.ParseError, ValueError, LookupError, RecursionError) as e:
        raise ConfigError(f"{what} is not well-formed XML: {e}") from None


def _one(parent: ET.Element, tag: str, what: str) -> ET.Element | None:
    found = parent.findall(tag)
    if len(found) > 1:
        raise ConfigError(f"{what}: <{tag}> appears {len(found)} times")
    return found[0] if found else None


def _text(el: ET.Element | None) -> str:
    return (el.text or "").strip() if el is not None else ""


def _serialize(root: ET.Element) -> bytes:
    ET.indent(root)
    # "<x />" -> "<x/>" as in Cisco's files; safe: ElementTree escapes ">" in text.
    out = ET.tostring(root, encoding="UTF-8", xml_declaration=True).replace(b" />", b"/>")
    return out + b"\n"


def render_sep(mac: str, model: str, load_name: str, pfs: bool,
               log_server: str | None = None, load_server: str | None = None) -> bytes:
    """The ``SEP<MAC>.cnf.xml`` of one phone.

    ``pfs`` is the resolved setting (see :func:`resolve_pfs`); True for a model that cannot
    do PFS is a ConfigError. ``log_server`` is ``ip:port`` (``ip`` alone means port 514).
    """
    normalize_mac(mac)
    _check_model(model)
    _check_load(load_name)
    if not isinstance(pfs, bool):
        raise ConfigError(f"pfs must be True or False, not {pfs!r}")
    if pfs and model not in PFS_CAPABLE:
        raise ConfigError(f"{model} cannot do Peer Firmware Sharing; capable models: "
                          + ", ".join(sorted(PFS_CAPABLE)))
    root = ET.Element("device")
    ET.SubElement(root, "loadInformation").text = load_name
    vendor = ET.SubElement(root, "vendorConfig")
    ET.SubElement(vendor, "peerFirmwareSharing").text = "1" if pfs else "0"
    ls = ET.SubElement(vendor, "loadServer")
    if load_server is not None:
        ls.text = _norm_load_server(load_server)
    lg = ET.SubElement(vendor, "logServer")
    if log_server is not None:
        lg.text = _norm_log_server(log_server)
    return _serialize(root)


def parse_sep(data: bytes) -> PhoneConfig:
    """Read a ``SEP<MAC>.cnf.xml``. A missing or empty ``<peerFirmwareSharing>`` means off."""
    what = "phone config"
    root = _safe_xml(data, what)
    if root.tag != "device":
        raise ConfigError(f"{what}: root element is <{root.tag}>, want <device>")
    load = _text(_one(root, "loadInformation", what))
    if not load:
        raise ConfigError(f"{what}: no <loadInformation>")
    _check_load(load)
    vendor = _one(root, "vendorConfig", what)
    pfs, log_server, load_server = False, None, None
    if vendor is not None:
        flag = _text(_one(vendor, "peerFirmwareSharing", what))
        if flag not in ("", "0", "1"):
            raise ConfigError(f"{what}: <peerFirmwareSharing> must be 0 or 1, not {flag[:20]!r}")
        pfs = flag == "1"
        if text := _text(_one(vendor, "logServer", what)):
            log_server = _norm_log_server(text)
        if text := _text(_one(vendor, "loadServer", what)):
            load_server = _norm_load_server(text)
    return PhoneConfig(load, pfs, log_server, load_server)


def render_xmldefault(model_loads: dict[str, str]) -> bytes:
    """``XMLDefault.cnf.xml`` with one ``<loadInformationNNN model="...">`` tag per model."""
    if not isinstance(model_loads, Mapping):
        raise ConfigError("model_loads must map model -> load name")
    root = ET.Element("Default")
    for model, load in sorted(model_loads.items(), key=lambda kv: str(kv[0])):
        _check_model(model)
        num, xml_name = MODEL_XML[model]
        ET.SubElement(root, f"loadInformation{num}", model=xml_name).text = _check_load(load)
    return _serialize(root)


def parse_xmldefault(data: bytes) -> dict[str, str]:
    """model -> load name from ``XMLDefault.cnf.xml``. Tags for models pfslab does not know
    are skipped (a real file lists every model); other elements are ignored."""
    what = XMLDEFAULT
    root = _safe_xml(data, what)
    if root.tag != "Default":
        raise ConfigError(f"{what}: root element is <{root.tag}>, want <Default>")
    out: dict[str, str] = {}
    for el in root:
        if not isinstance(el.tag, str) or not _LOADINFO_RE.fullmatch(el.tag):
            continue
        model = _XML_MODEL.get(el.get("model", ""))
        if model is None:
            continue
        if model in out:
            raise ConfigError(f"{what}: model {el.get('model')!r} appears twice")
        out[model] = _check_load(_text(el))
    return out


# --------------------------------------------------------------------------- cluster

@dataclass(frozen=True)
class Device:
    """One phone as CUCM knows it: its model, its Common Phone Profile, its own PFS setting."""
    model: str
    profile: str | None = None    # a key of Cluster.profiles, or None for no profile
    pfs: bool | None = None       # the device-level setting; None: not set
    log_server: bool = True       # False: its config names no log server


@dataclass
class Cluster:
    """The three configuration levels of one lab run, and the config files they produce.

    ``profiles`` maps a Common Phone Profile name to its PFS setting (None: not set).
    ``devices`` maps a MAC (any spelling; stored normalized) to its :class:`Device`.
    ``log_server`` / ``load_server`` go into every phone's config.
    """
    enterprise: bool | None = None
    profiles: dict[str, bool | None] = field(default_factory=dict)
    devices: dict[str, Device] = field(default_factory=dict)
    log_server: str | None = None
    load_server: str | None = None

    def __post_init__(self):
        _check_setting(self.enterprise, "enterprise")
        for name, value in self.profiles.items():
            _check_setting(value, f"common phone profile {name!r}")
        devices, self.devices = self.devices, {}
        for mac, dev in devices.items():
            if not isinstance(dev, Device):
                raise ConfigError(f"device {mac!r} must be a Device, not {dev!r}")
            self.add_device(mac, dev.model, dev.profile, dev.pfs, dev.log_server)

    def add_device(self, mac: str, model: str, profile: str | None = None,
                   pfs: bool | None = None, log_server: bool = True) -> Device:
        key = normalize_mac(mac)
        if key in self.devices:
            raise ConfigError(f"device {mac} is configured twice")
        _check_model(model)
        _check_setting(pfs, f"device {key}")
        if profile is not None and profile not in self.profiles:
            raise ConfigError(f"device {key}: unknown common phone profile {profile!r};"
                              " known: " + (", ".join(sorted(self.profiles)) or "none"))
        dev = self.devices[key] = Device(model, profile, pfs, log_server)
        return dev

    def device(self, mac: str) -> Device:
        try:
            return self.devices[normalize_mac(mac)]
        except KeyError:
            raise ConfigError(f"no device {mac} in the cluster") from None

    def pfs_for(self, mac: str) -> bool:
        """The resolved PFS setting of the phone with this MAC."""
        dev = self.device(mac)
        if dev.profile is not None and dev.profile not in self.profiles:
            raise ConfigError(f"unknown common phone profile {dev.profile!r}")
        profile = self.profiles[dev.profile] if dev.profile is not None else None
        return resolve_pfs(dev.model, dev.pfs, profile, self.enterprise)

    def files(self, load_for_model: Callable[[str], str] | Mapping[str, str] = model_load
              ) -> dict[str, bytes]:
        """Every ``SEP<MAC>.cnf.xml`` plus ``XMLDefault.cnf.xml`` (for the devices' models).

        ``load_for_model`` gives the load of a model: a function or a mapping
        (default: :func:`pfslab.firmware.model_load`).
        """
        def load_of(model: str) -> str:
            try:
                if isinstance(load_for_model, Mapping):
                    return load_for_model[model]
                return load_for_model(model)
            except (KeyError, FirmwareError) as e:
                raise ConfigError(f"no load for model {model}: {e}") from None

        out: dict[str, bytes] = {}
        models: dict[str, str] = {}
        made: dict[tuple, bytes] = {}        # phones alike get the same bytes (made once)
        for mac, dev in sorted(self.devices.items()):
            load = models.setdefault(dev.model, load_of(dev.model))
            how = (dev.model, load, self.pfs_for(mac),
                   self.log_server if dev.log_server else None, self.load_server)
            data = made.get(how)
            if data is None:
                data = made[how] = render_sep(mac, *how)
            else:
                normalize_mac(mac)           # what render_sep checks of the MAC itself
            out[sep_filename(mac)] = data
        out[XMLDEFAULT] = render_xmldefault(models)
        return out
