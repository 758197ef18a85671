"""Parse and validate the WAN settings users type: `512kbit`, `75ms`, `0.5%`.

Each parser raises pfslab.errors.UserError with a message that says what is accepted.
"""
from __future__ import annotations

import re

from pfslab.errors import UserError

_NUM = r"(\d+(?:\.\d*)?|\.\d+)"

#: bandwidth units (tc's spelling) -> bits per second
_BW_UNITS = {
    "bit": 1, "bps": 8,
    "kbit": 1e3, "mbit": 1e6, "gbit": 1e9,
    "kibit": 1024, "mibit": 1024 ** 2, "gibit": 1024 ** 3,
    "kbps": 8e3, "mbps": 8e6, "gbps": 8e9,
}
_TIME_UNITS = {"us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3, "s": 1.0, "sec": 1.0}


def parse_bandwidth(text: str | int | float | None) -> int | None:
    """'512kbit' -> 512000 (bits/s). None, '', '0' or 'none'/'unlimited' -> None (no shaping).

    Units as in tc: bit, kbit, mbit, gbit (powers of 1000), kibit..., and bps/kbps/mbps for
    bytes per second. A bare number is bits per second.
    """
    if text is None:
        return None
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        s = str(text).strip().lower()
        if s in ("", "none", "unlimited", "off", "0"):
            return None
        m = re.fullmatch(_NUM + r"\s*([a-z]*)", s)
        if not m or m.group(2) not in _BW_UNITS | {"": 1}:
            raise UserError(f"bad bandwidth {text!r}: use e.g. 512kbit, 2mbit, 1gbit "
                            "(or 'none' for no limit)")
        value = float(m.group(1)) * _BW_UNITS.get(m.group(2), 1)
    if value <= 0:
        return None
    if value < 8000:
        raise UserError(f"bad bandwidth {text!r}: at least 8kbit")
    if value > 10e9:
        raise UserError(f"bad bandwidth {text!r}: at most 10gbit")
    return int(value)


def parse_delay(text: str | int | float | None) -> float:
    """'75ms' -> 0.075 (seconds, one way). A bare number is milliseconds. None/'' -> 0."""
    if text is None:
        return 0.0
    if isinstance(text, (int, float)):
        value = float(text) / 1000.0
    else:
        s = str(text).strip().lower()
        if s in ("", "none", "off"):
            return 0.0
        m = re.fullmatch(_NUM + r"\s*([a-z]*)", s)
        if not m or m.group(2) not in _TIME_UNITS | {"": 1}:
            raise UserError(f"bad delay {text!r}: use e.g. 75ms, 0.2s, 500us")
        value = float(m.group(1)) * _TIME_UNITS.get(m.group(2), 1e-3)
    if value < 0 or value > 10.0:
        raise UserError(f"bad delay {text!r}: between 0 and 10s one way")
    return value


def parse_loss(text: str | int | float | None) -> float:
    """'0.5%' -> 0.005 (probability per packet and direction). A bare number is percent."""
    if text is None:
        return 0.0
    if isinstance(text, (int, float)):
        value = float(text) / 100.0
    else:
        s = str(text).strip()
        if s.lower() in ("", "none", "off"):
            return 0.0
        m = re.fullmatch(_NUM + r"\s*(%?)", s)
        if not m:
            raise UserError(f"bad loss {text!r}: use a percentage, e.g. 0.5%")
        value = float(m.group(1)) / 100.0
    if not 0.0 <= value < 1.0:
        raise UserError(f"bad loss {text!r}: 0% up to (not including) 100%")
    return value


def format_bandwidth(bps: int | None) -> str:
    if not bps:
        return "unlimited"
    for unit, f in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
        if bps >= f:
            return f"{bps / f:g}{unit}"
    return f"{bps}bit"
