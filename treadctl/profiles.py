"""Firmware profiles: each treadmill firmware's limits, reverse method and quirks, as data.

A profile is a TOML file. The shipped ones are package data (``treadctl/firmware_profiles/``,
read with :mod:`importlib.resources`, so they are there in any install). A directory named
by ``TREADCTL_PROFILES_DIR`` (``os.pathsep``-separated) and ``/etc/treadctl/firmware_profiles``
are searched first and override a shipped profile of the same name. A profile is loaded into
frozen dataclasses; every problem is reported as ``ProfileError`` naming the file and the
dotted field.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

ReverseMethod = Literal["none", "vendor-characteristic", "signed-speed"]
PaceFormat = Literal["uint8-0.1kmpmin", "uint16-s-per-km"]

#: 16-bit alias of the treadctl reference firmware's Belt Direction characteristic
#: (full UUID 0000ff01-0000-1000-8000-00805f9b34fb); see docs/reference-firmware.md.
BELT_DIRECTION_UUID = 0xFF01

DEFAULT_PROFILE = "treadctl-reference"
_SYSTEM_PROFILES = Path("/etc/treadctl/firmware_profiles")


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and field."""


@dataclass(frozen=True)
class SpeedLimits:
    min_kmh: float = 0.5
    max_kmh: float = 18.0
    increment_kmh: float = 0.1


@dataclass(frozen=True)
class InclineLimits:
    min_pct: float = 0.0
    max_pct: float = 12.0
    increment_pct: float = 0.5
    rate_pct_per_s: float = 0.5  # incline motor speed


@dataclass(frozen=True)
class MotionLimits:
    accel_mps2: float = 0.4  # belt acceleration the firmware allows (and the motor achieves)
    decel_mps2: float = 0.6  # normal deceleration
    stop_decel_mps2: float = 1.0  # controlled stop (Stop opcode, link timeout)
    estop_decel_mps2: float = 2.0  # safety key / emergency


@dataclass(frozen=True)
class ReverseSpec:
    method: ReverseMethod = "none"
    characteristic: int = BELT_DIRECTION_UUID
    max_speed_kmh: float = 6.0
    accel_mps2: float = 0.25
    decel_mps2: float = 0.5
    min_incline_pct: float = 0.0
    max_incline_pct: float = 6.0
    standstill_dwell_s: float = 2.0


@dataclass(frozen=True)
class ControlSpec:
    ack_timeout_ms: int = 500
    min_command_interval_ms: int = 100
    link_timeout_ms: int = 1000  # firmware stops the belt without a frame for this long
    telemetry_hz: float = 4.0
    requires_start_before_speed: bool = False
    ack_delay_ms: int = 20  # how long this firmware takes to answer (simulator)


@dataclass(frozen=True)
class Quirks:
    pace_format: PaceFormat = "uint8-0.1kmpmin"
    speed_rounding: Literal["nearest", "down"] = "nearest"


@dataclass(frozen=True)
class FirmwareProfile:
    name: str
    description: str = ""
    speed: SpeedLimits = field(default_factory=SpeedLimits)
    incline: InclineLimits = field(default_factory=InclineLimits)
    motion: MotionLimits = field(default_factory=MotionLimits)
    reverse: ReverseSpec = field(default_factory=ReverseSpec)
    control: ControlSpec = field(default_factory=ControlSpec)
    quirks: Quirks = field(default_factory=Quirks)
    source: str = "<builtin>"

    @property
    def supports_reverse(self) -> bool:
        return self.reverse.method != "none"


_SECTIONS: dict[str, type] = {
    "speed": SpeedLimits,
    "incline": InclineLimits,
    "motion": MotionLimits,
    "reverse": ReverseSpec,
    "control": ControlSpec,
    "quirks": Quirks,
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "reverse.method": ("none", "vendor-characteristic", "signed-speed"),
    "quirks.pace_format": ("uint8-0.1kmpmin", "uint16-s-per-km"),
    "quirks.speed_rounding": ("nearest", "down"),
}


def _section(src: str, name: str, cls: type, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ProfileError(f"{src}: [{name}] must be a table")
    defaults = cls()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"{name}.{key}"
        if not hasattr(defaults, key):
            raise ProfileError(f"{src}: unknown field {where}")
        expected = type(getattr(defaults, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ProfileError(
                f"{src}: {where} must be {expected.__name__}, got {type(value).__name__}"
            )
        if where in _CHOICES and value not in _CHOICES[where]:
            raise ProfileError(f"{src}: {where} must be one of {', '.join(_CHOICES[where])}")
        if isinstance(value, float | int) and not isinstance(value, bool):
            negative_ok = where in ("incline.min_pct", "reverse.min_incline_pct")
            if value < 0 and not negative_ok:
                raise ProfileError(f"{src}: {where} must not be negative, got {value}")
        values[key] = value
    return cls(**values)


def _check(src: str, p: FirmwareProfile) -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ProfileError(f"{src}: {msg}")

    need(0 <= p.speed.min_kmh < p.speed.max_kmh, "speed.min_kmh must be below speed.max_kmh")
    need(p.speed.increment_kmh > 0, "speed.increment_kmh must be > 0")
    need(p.incline.min_pct <= p.incline.max_pct, "incline.min_pct must be <= incline.max_pct")
    need(p.incline.increment_pct > 0, "incline.increment_pct must be > 0")
    need(p.incline.rate_pct_per_s > 0, "incline.rate_pct_per_s must be > 0")
    for key in ("accel_mps2", "decel_mps2", "stop_decel_mps2", "estop_decel_mps2"):
        need(getattr(p.motion, key) > 0, f"motion.{key} must be > 0")
    need(p.control.telemetry_hz > 0, "control.telemetry_hz must be > 0")
    need(p.control.ack_timeout_ms > 0, "control.ack_timeout_ms must be > 0")
    need(p.control.link_timeout_ms > 0, "control.link_timeout_ms must be > 0")
    if p.supports_reverse:
        r = p.reverse
        need(
            0 < r.max_speed_kmh <= p.speed.max_kmh,
            "reverse.max_speed_kmh must be in (0, speed.max_kmh]",
        )
        need(r.accel_mps2 > 0 and r.decel_mps2 > 0, "reverse.accel_mps2 and decel_mps2 must be > 0")
        need(
            r.min_incline_pct <= r.max_incline_pct,
            "reverse.min_incline_pct must be <= max_incline_pct",
        )
        need(0 <= r.characteristic <= 0xFFFF, "reverse.characteristic must be a 16-bit UUID")


def profile_from_dict(data: dict[str, Any], src: str = "<dict>") -> FirmwareProfile:
    data = dict(data)
    name = data.pop("name", None)
    if not isinstance(name, str) or not name:
        raise ProfileError(f"{src}: name must be a non-empty string")
    description = data.pop("description", "")
    if not isinstance(description, str):
        raise ProfileError(f"{src}: description must be a string")
    sections: dict[str, Any] = {}
    for key, raw in data.items():
        if key not in _SECTIONS:
            raise ProfileError(f"{src}: unknown section or field {key!r}")
        sections[key] = _section(src, key, _SECTIONS[key], raw)
    profile = FirmwareProfile(name=name, description=description, source=src, **sections)
    _check(src, profile)
    return profile


def load_profile_file(path: str | os.PathLike[str] | Traversable) -> FirmwareProfile:
    if isinstance(path, (str, os.PathLike)):
        path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{path}: not UTF-8 text: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: invalid TOML: {exc}") from None
    return profile_from_dict(data, str(path))


def shipped_profiles_dir() -> Traversable:
    """The profiles that come with the package (package data, any kind of install)."""
    return resources.files("treadctl").joinpath("firmware_profiles")


def profile_dirs() -> list[Traversable]:
    """Where profiles are looked up, first match wins: ``TREADCTL_PROFILES_DIR``, then
    ``/etc/treadctl/firmware_profiles``, then the shipped ones."""
    dirs: list[Traversable] = []
    env = os.environ.get("TREADCTL_PROFILES_DIR")
    if env:
        dirs.extend(Path(p) for p in env.split(os.pathsep) if p)
    dirs.extend([_SYSTEM_PROFILES, shipped_profiles_dir()])
    return [d for d in dirs if d.is_dir()]


def list_profiles() -> list[FirmwareProfile]:
    seen: dict[str, FirmwareProfile] = {}
    for d in profile_dirs():
        for path in sorted((e for e in d.iterdir() if e.name.endswith(".toml")),
                           key=lambda e: e.name):
            profile = load_profile_file(path)
            seen.setdefault(profile.name, profile)
    return sorted(seen.values(), key=lambda p: p.name)


def load_profile(name_or_path: str) -> FirmwareProfile:
    """A profile by name (searched in :func:`profile_dirs`) or by path to a TOML file."""
    if name_or_path.endswith(".toml") or os.sep in name_or_path:
        return load_profile_file(name_or_path)
    for d in profile_dirs():
        candidate = d.joinpath(f"{name_or_path}.toml")
        if candidate.is_file():
            return load_profile_file(candidate)
    known = ", ".join(p.name for p in list_profiles()) or "none found"
    raise ProfileError(f"unknown firmware profile {name_or_path!r} (known: {known})")
