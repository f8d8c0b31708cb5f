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
import typing
from dataclasses import dataclass, field, fields
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

from treadctl.ftms.treadmill_data import DEFAULT_PACE_FORMAT, PACE_FORMATS, PaceFormat

#: A reverse method's name: one registered in :mod:`treadctl.control.reverse` (the loader
#: checks it there, with the protocols it may run over and the fields it needs).
ReverseMethod = str
#: The forward-only method's name.
NO_REVERSE = "none"
#: Which driver talks to the machine: FTMS (the default) or a maker's own remote protocol
#: (docs/protocols.md).
Protocol = Literal["ftms", "biodex", "woodway", "bertec", "trackmaster"]
PROTOCOLS: tuple[str, ...] = ("ftms", "biodex", "woodway", "bertec", "trackmaster")
SpeedUnit = Literal["0.1mph", "0.1kmh"]

#: 16-bit alias of the treadctl reference firmware's Belt Direction characteristic
#: (full UUID 0000ff01-0000-1000-8000-00805f9b34fb); see docs/reference-firmware.md.
BELT_DIRECTION_UUID = 0xFF01

DEFAULT_PROFILE = "treadctl-reference"
#: The shortest lead time an announcement may have (``motion.announce_s``).
MIN_ANNOUNCE_S = 5.0
_SYSTEM_PROFILES = Path("/etc/treadctl/firmware_profiles")


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and field."""


# Fields that describe the real machine have no default: a profile file must state them
# (docs/reference-firmware.md, "Profile files"). A forgotten [speed] table must not turn
# into 18 km/h. Defaults are left only where the standard FTMS behaviour is the answer
# (quirks), where a value only matters to the simulator (ack_delay_ms), and in [reverse],
# whose fields are required by the loader once reverse.method is not "none".


@dataclass(frozen=True, kw_only=True)
class SpeedLimits:
    min_kmh: float
    max_kmh: float
    increment_kmh: float


@dataclass(frozen=True, kw_only=True)
class InclineLimits:
    min_pct: float
    max_pct: float
    increment_pct: float
    rate_pct_per_s: float  # incline motor speed


@dataclass(frozen=True, kw_only=True)
class MotionLimits:
    accel_mps2: float  # belt acceleration the firmware allows (and the motor achieves)
    decel_mps2: float  # normal deceleration
    stop_decel_mps2: float  # controlled stop (Stop opcode, link timeout)
    estop_decel_mps2: float  # safety key / emergency
    #: A program step that raises the speed by more than this is announced (``upcoming``
    #: event, live view countdown) ``announce_s`` before it begins; so is every direction
    #: change (docs/programs.md, "Announcements"). Defaults: existing files need nothing.
    announce_step_kmh: float = 1.0
    announce_s: float = 5.0


@dataclass(frozen=True, kw_only=True)
class ReverseSpec:
    """How reverse is commanded. ``ReverseSpec()`` is a forward-only machine; the other
    values only count when ``method`` is not ``none`` (and are then required in a file)."""

    method: ReverseMethod = "none"
    characteristic: int = BELT_DIRECTION_UUID
    max_speed_kmh: float = 6.0
    accel_mps2: float = 0.25
    decel_mps2: float = 0.5
    min_incline_pct: float = 0.0
    max_incline_pct: float = 6.0
    standstill_dwell_s: float = 2.0


@dataclass(frozen=True, kw_only=True)
class ControlSpec:
    ack_timeout_ms: int
    min_command_interval_ms: int
    link_timeout_ms: int  # firmware stops the belt without a frame for this long
    telemetry_hz: float
    requires_start_before_speed: bool = False  # FTMS itself needs no Start before a speed
    ack_delay_ms: int = 20  # how long this firmware takes to answer (simulator only)


@dataclass(frozen=True, kw_only=True)
class Quirks:
    pace_format: PaceFormat = DEFAULT_PACE_FORMAT  # the FTMS standard
    speed_rounding: Literal["nearest", "down"] = "nearest"


@dataclass(frozen=True, kw_only=True)
class WireSpec:
    """Settings of a native protocol (docs/protocols.md). Every default is the safe choice
    where the maker's manual is unclear; FTMS profiles ignore this table."""

    baud: int = 9600  # serial:// without ?baud= uses this
    #: Unit of the speed digits. Unclear on Biodex and on TrackMaster (tenths of the display
    #: unit): 0.1 mph is the safe default, a wrong guess then runs the belt slower, not faster.
    speed_unit: SpeedUnit = "0.1mph"
    #: Percent per elevation digit step (Biodex sends 2 digits: whole percent assumed).
    elevation_step_pct: float = 1.0
    #: How often the driver polls (and so feeds the machine's watchdog).
    poll_ms: int = 200
    #: The machine's own communication watchdog, 0 = none documented. The simulator models
    #: it with this value; the driver refuses a poll_ms that would not feed it in time.
    watchdog_ms: int = 0
    #: Consecutive NACKs / error replies that latch a danger.
    nack_limit: int = 3
    #: Consecutive unanswered requests that latch a communication fault.
    timeout_limit: int = 3
    #: Bertec: belt acceleration sent with every speed (mm/s^2), and the one of a stop.
    accel_mm_s2: int = 500
    stop_accel_mm_s2: int = 1000
    #: Bertec: refuse feedback whose padding is not zero (resync aid; unconfirmed).
    strict_feedback: bool = True


@dataclass(frozen=True, kw_only=True)
class FirmwareProfile:
    name: str
    description: str = ""
    speed: SpeedLimits
    incline: InclineLimits
    motion: MotionLimits
    reverse: ReverseSpec = field(default_factory=ReverseSpec)
    control: ControlSpec
    quirks: Quirks = field(default_factory=Quirks)
    protocol: Protocol = "ftms"
    wire: WireSpec = field(default_factory=WireSpec)
    source: str = "<builtin>"

    @property
    def supports_reverse(self) -> bool:
        return self.reverse.method != NO_REVERSE


_SECTIONS: dict[str, type] = {
    "speed": SpeedLimits,
    "incline": InclineLimits,
    "motion": MotionLimits,
    "reverse": ReverseSpec,
    "control": ControlSpec,
    "quirks": Quirks,
    "wire": WireSpec,
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "wire.speed_unit": ("0.1mph", "0.1kmh"),
    "quirks.pace_format": PACE_FORMATS,
    "quirks.speed_rounding": ("nearest", "down"),
}
#: Fields every profile file states, whatever the machine.
REQUIRED_FIELDS: tuple[str, ...] = (
    "speed.min_kmh", "speed.max_kmh", "speed.increment_kmh",
    "incline.min_pct", "incline.max_pct", "incline.increment_pct", "incline.rate_pct_per_s",
    "motion.accel_mps2", "motion.decel_mps2", "motion.stop_decel_mps2",
    "motion.estop_decel_mps2",
    "reverse.method",
    "control.ack_timeout_ms", "control.min_command_interval_ms", "control.link_timeout_ms",
    "control.telemetry_hz",
)  # fmt: skip
#: ... and once ``reverse.method`` is not ``none``.
REQUIRED_FOR_REVERSE: tuple[str, ...] = (
    "reverse.max_speed_kmh", "reverse.accel_mps2", "reverse.decel_mps2",
    "reverse.min_incline_pct", "reverse.max_incline_pct", "reverse.standstill_dwell_s",
)  # fmt: skip
#: ... and what the method itself needs (``required_fields`` of its class in
#: :mod:`treadctl.control.reverse`: ``vendor-characteristic`` names its characteristic).


def _field_type(cls: type, key: str) -> type:
    hint = typing.get_type_hints(cls)[key]
    return str if typing.get_origin(hint) is Literal else hint


def _section(src: str, name: str, cls: type, raw: Any) -> dict[str, Any]:
    """The checked values of one table (types, choices, signs); missing ones are left out."""
    if not isinstance(raw, dict):
        raise ProfileError(f"{src}: [{name}] must be a table")
    known = {f.name for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"{name}.{key}"
        if key not in known:
            raise ProfileError(f"{src}: unknown field {where}")
        expected = _field_type(cls, key)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ProfileError(
                f"{src}: {where} must be {expected.__name__}, got {type(value).__name__}"
            )
        if where in _CHOICES and value not in _CHOICES[where]:
            raise ProfileError(f"{src}: {where} must be one of {', '.join(_CHOICES[where])}")
        if where == "reverse.method" and _reverse().method_class(value) is None:
            raise ProfileError(f"{src}: {where} must be one of {', '.join(_reverse().methods())}")
        if isinstance(value, float | int) and not isinstance(value, bool):
            negative_ok = where in ("incline.min_pct", "reverse.min_incline_pct")
            if value < 0 and not negative_ok:
                raise ProfileError(f"{src}: {where} must not be negative, got {value}")
        values[key] = value
    return values


def _missing(src: str, values: dict[str, dict[str, Any]]) -> None:
    required = list(REQUIRED_FIELDS)
    method = values.get("reverse", {}).get("method")
    if method not in (None, NO_REVERSE):
        required += REQUIRED_FOR_REVERSE
    cls = _reverse().method_class(method) if isinstance(method, str) else None
    if cls is not None:
        required += cls.required_fields
    missing = []
    for where in required:
        section, _, key = where.partition(".")
        if key not in values.get(section, {}):
            missing.append(where)
    if missing:
        noun = "field" if len(missing) == 1 else "fields"
        raise ProfileError(
            f"{src}: missing required {noun} {', '.join(missing)}"
            " (see docs/reference-firmware.md, 'Profile files')"
        )


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
    need(p.motion.announce_step_kmh > 0, "motion.announce_step_kmh must be > 0")
    need(
        p.motion.announce_s >= MIN_ANNOUNCE_S,
        f"motion.announce_s must be at least {MIN_ANNOUNCE_S:g} s (a user must see it coming)",
    )
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
    _check_protocol(src, p)


def _reverse() -> Any:
    """The reverse-method registry (imported when a profile is checked: it builds on this
    module's types)."""
    from treadctl.control import reverse

    return reverse


def _check_protocol(src: str, p: FirmwareProfile) -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ProfileError(f"{src}: {msg}")

    allowed = _reverse().methods_over(p.protocol)
    need(
        p.reverse.method in allowed,
        f"reverse.method {p.reverse.method!r} is not possible over protocol {p.protocol!r}"
        f" (possible: {', '.join(allowed)})",
    )
    if p.protocol == "ftms":
        return
    w = p.wire
    need(w.baud > 0, "wire.baud must be > 0")
    need(w.poll_ms > 0, "wire.poll_ms must be > 0")
    need(w.elevation_step_pct > 0, "wire.elevation_step_pct must be > 0")
    need(w.nack_limit >= 1 and w.timeout_limit >= 1,
         "wire.nack_limit and wire.timeout_limit must be >= 1")
    need(w.accel_mm_s2 > 0 and w.stop_accel_mm_s2 > 0,
         "wire.accel_mm_s2 and wire.stop_accel_mm_s2 must be > 0")
    if w.watchdog_ms:
        # Two polls must fit in the machine's watchdog, or one late poll stops the belt.
        need(2 * w.poll_ms <= w.watchdog_ms,
             f"wire.poll_ms {w.poll_ms} does not feed wire.watchdog_ms {w.watchdog_ms} twice")


def profile_from_dict(data: dict[str, Any], src: str = "<dict>") -> FirmwareProfile:
    """A profile from its TOML structure; every problem is a :class:`ProfileError` that
    names ``src`` and the field, a missing required field included."""
    data = dict(data)
    name = data.pop("name", None)
    if not isinstance(name, str) or not name:
        raise ProfileError(f"{src}: name must be a non-empty string")
    description = data.pop("description", "")
    if not isinstance(description, str):
        raise ProfileError(f"{src}: description must be a string")
    protocol = data.pop("protocol", "ftms")
    if protocol not in PROTOCOLS:
        raise ProfileError(f"{src}: protocol must be one of {', '.join(PROTOCOLS)}")
    values: dict[str, dict[str, Any]] = {}
    for key, raw in data.items():
        if key not in _SECTIONS:
            raise ProfileError(f"{src}: unknown section or field {key!r}")
        values[key] = _section(src, key, _SECTIONS[key], raw)
    _missing(src, values)
    sections = {key: _SECTIONS[key](**vals) for key, vals in values.items()}
    profile = FirmwareProfile(
        name=name, description=description, protocol=protocol, source=src, **sections
    )
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
