"""Device URLs (docs/transports.md): one string selects the transport and its endpoint.

``parse_device_url`` is pure: it validates the syntax and values and returns a frozen
:class:`DeviceURL`; nothing is opened or looked up here (profiles and ports are checked
when the transport is opened). Every problem is one line naming the URL::

    bad device URL 'tcp://x': missing port
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote, urlsplit

Scheme = Literal["sim", "ble", "serial", "tcp"]
SCHEMES: tuple[Scheme, ...] = ("sim", "ble", "serial", "tcp")

DEFAULT_BAUD = 115200
# Query parameters each scheme accepts; anything else is a typo we refuse to guess about.
_ALLOWED: dict[str, tuple[str, ...]] = {
    "sim": ("profile", "speedup", "faults", "seed", "quirks"),
    "ble": ("timeout",),
    "serial": ("baud",),
    "tcp": ("timeout",),
}
_MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
# macOS (CoreBluetooth) hides MACs and names peripherals by a per-host UUID instead.
_CB_UUID = re.compile(r"^[0-9A-Fa-f]{8}-([0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}$")
_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MAX_BAUD = 12_000_000

_Bad = Callable[[str], "DeviceURLError"]


class DeviceURLError(ValueError):
    """A device URL that cannot be used; the message is one line naming the URL."""


@dataclass(frozen=True)
class DeviceURL:
    """A parsed, validated device URL. Fields not used by ``scheme`` are None."""

    scheme: Scheme
    url: str
    # ble
    ble_address: str | None = None
    ble_name_prefix: str | None = None
    # serial
    serial_path: str | None = None
    baud: int | None = None
    # tcp
    host: str | None = None
    port: int | None = None
    # sim
    profile: str | None = None
    speedup: float | None = None
    faults: str | None = None
    seed: int = 0
    #: Simulated firmware quirks (FTMS deviations of real machines), comma-separated names.
    quirks: str | None = None
    # ble scan / tcp connect timeout, seconds (None = transport default)
    timeout_s: float | None = None
    #: The raw query parameters, in order, as (name, value) pairs.
    params: tuple[tuple[str, str], ...] = ()

    def param(self, name: str, default: str | None = None) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        return default

    @property
    def endpoint(self) -> str:
        """A short human-readable endpoint (for logs and ``Transport.name``)."""
        if self.scheme == "tcp":
            host = f"[{self.host}]" if self.host and ":" in self.host else self.host
            return f"tcp://{host}:{self.port}"
        if self.scheme == "serial":
            return f"serial://{self.serial_path}"
        if self.scheme == "ble":
            if self.ble_address:
                return f"ble://{self.ble_address}"
            return f"ble://name={quote(self.ble_name_prefix or '')}"
        return "sim://" + (f"?profile={self.profile}" if self.profile else "")

    def __str__(self) -> str:
        return self.url


def parse_device_url(url: str) -> DeviceURL:
    """Parse and validate ``url``; raises :class:`DeviceURLError` (one line)."""

    def bad(reason: str) -> DeviceURLError:
        return DeviceURLError(f"bad device URL {url!r}: {reason}")

    if not isinstance(url, str) or not url.strip():
        raise DeviceURLError(f"bad device URL {url!r}: empty")
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        if text.lower() in SCHEMES:
            raise bad(f"expected {text.lower()}://...")
        raise bad("expected SCHEME://... with scheme sim, ble, serial or tcp")
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise bad(f"unknown scheme {scheme!r} (expected sim, ble, serial or tcp)")
    if "#" in rest:
        raise bad("fragments ('#') are not allowed")
    location, _, query = rest.partition("?")
    params = _split_query(query, bad)
    allowed = _ALLOWED[scheme]
    seen: set[str] = set()
    for key, _value in params:
        if key not in allowed:
            hint = ", ".join(allowed) if allowed else "none"
            raise bad(f"unknown query parameter {key!r} for {scheme}:// (allowed: {hint})")
        if key in seen:
            raise bad(f"query parameter {key!r} given twice")
        seen.add(key)
    q = dict(params)
    timeout_s = _positive_float(q["timeout"], "timeout", bad) if "timeout" in q else None

    if scheme == "sim":
        if location:
            raise bad(f"sim:// takes no host or path (got {location!r}); use sim://?profile=NAME")
        profile = q.get("profile")
        if profile is not None and not _PROFILE_NAME.match(profile):
            raise bad(f"bad profile name {profile!r}")
        speedup = _positive_float(q["speedup"], "speedup", bad) if "speedup" in q else None
        faults = q.get("faults")
        if faults is not None:
            _check_faults(faults, bad)
        quirks = q.get("quirks")
        if quirks is not None:
            _check_quirks(quirks, bad)
        seed = 0
        if "seed" in q:
            try:
                seed = int(q["seed"])
            except ValueError:
                raise bad(f"seed must be an integer, got {q['seed']!r}") from None
            if seed < 0:
                raise bad(f"seed must be >= 0, got {seed}")
        return DeviceURL(
            "sim", text, profile=profile, speedup=speedup, faults=faults or None, seed=seed,
            quirks=quirks or None, params=params,
        )

    if scheme == "ble":
        if not location:
            raise bad("missing address (ble://AA:BB:CC:DD:EE:FF or ble://name=PREFIX)")
        if location.lower().startswith("name="):
            prefix = unquote(location[5:])
            if not prefix:
                raise bad("empty name prefix")
            return DeviceURL(
                "ble", text, ble_name_prefix=prefix, timeout_s=timeout_s, params=params
            )
        address = unquote(location).rstrip("/")
        if _MAC.match(address):
            address = address.upper()
        elif not _CB_UUID.match(address):
            raise bad(f"bad MAC address {address!r} (expected AA:BB:CC:DD:EE:FF or name=PREFIX)")
        return DeviceURL("ble", text, ble_address=address, timeout_s=timeout_s, params=params)

    if scheme == "serial":
        # serial:///dev/ttyUSB0 -> empty authority, absolute path.
        if location.startswith("/"):
            path = unquote(location)
            if path.startswith("//"):
                path = path[1:]
        else:
            raise bad("expected serial:///PATH (three slashes, absolute device path)")
        if path in ("", "/"):
            raise bad("missing serial device path")
        baud = DEFAULT_BAUD
        if "baud" in q:
            try:
                baud = int(q["baud"])
            except ValueError:
                raise bad(f"bad baud {q['baud']!r}: not an integer") from None
            if not 0 < baud <= _MAX_BAUD:
                raise bad(f"bad baud {baud}: must be 1..{_MAX_BAUD}")
        return DeviceURL("serial", text, serial_path=path, baud=baud, params=params)

    # tcp
    if "/" in location.strip("/"):
        raise bad("tcp:// takes HOST:PORT only, no path")
    try:
        parts = urlsplit("tcp://" + location.rstrip("/"))
        host = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise bad(f"bad port ({exc})") from None
    if not host:
        raise bad("missing host")
    if port is None:
        raise bad("missing port")
    if not 0 < port < 65536:
        raise bad(f"bad port {port}: must be 1..65535")
    return DeviceURL("tcp", text, host=host, port=port, timeout_s=timeout_s, params=params)


def _split_query(query: str, bad: _Bad) -> tuple[tuple[str, str], ...]:
    """``a=1&b=2`` -> pairs, %-decoded. Unlike HTML forms, '+' stays '+' (fault specs use it)."""
    if not query:
        return ()
    pairs = []
    for part in query.split("&"):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise bad(f"malformed query {query!r} (expected NAME=VALUE&...)")
        pairs.append((unquote(key), unquote(value)))
    return tuple(pairs)


def _positive_float(raw: str, name: str, bad: _Bad) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise bad(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise bad(f"{name} must be a positive number, got {raw!r}")
    return value


def _check_faults(spec: str, bad: _Bad) -> None:
    """Validate a fault spec with the simulator's own parser when it is installed."""
    try:
        from treadctl.simulator.faults import parse_faults
    except ImportError:
        return
    try:
        parse_faults(spec)
    except ValueError as exc:
        raise bad(f"faults: {exc}") from None


def _check_quirks(spec: str, bad: _Bad) -> None:
    """Validate simulator quirk names with the simulator's own parser when it is installed."""
    try:
        from treadctl.simulator.firmware import parse_quirks
    except ImportError:
        return
    try:
        parse_quirks(spec)
    except ValueError as exc:
        raise bad(f"quirks: {exc}") from None
