"""The surface a native-protocol driver gives the control core, and what drivers share.

:class:`TreadmillDriver` mirrors the surface of the FTMS client (``treadctl.control.client``)
that the controller drives: ``connect``/``close``, ``stop_now`` (synchronous: the stop bytes
are on the wire inside the call, ahead of anything queued), ``motion_blocked`` (while set,
nothing that can move the belt is sent), start / speed / incline / direction commands, the
direction read-back, and callbacks for telemetry and status. What FTMS spreads over Control
Point opcodes and Machine Status notifications, a driver offers as methods and two
callbacks: ``on_telemetry(Telemetry)`` and ``on_status(Danger)``. A danger LATCHES in the
driver (``danger``): the driver commands the stop itself, blocks motion and clears it only
on an explicit :meth:`~TreadmillDriver.reset_danger`, which never moves the belt.

The controller drives a driver through ``treadctl.drivers.link.DriverLink`` (docs/protocols.md).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from treadctl.profiles import FirmwareProfile
from treadctl.transport.stream import ByteStream
from treadctl.types import KMH_PER_MPS, Direction

KMH_PER_MPH = 1.609344
Opener = Callable[[], Awaitable[ByteStream]]
_EPS = 1e-6


class DriverError(Exception):
    """A driver command that did not succeed; ``str()`` is one line for the user."""


class Refused(DriverError):
    """Refused before anything was sent: out of range, reverse on a forward-only machine, a
    direction change away from standstill."""


class MotionBlocked(DriverError):
    """Refused locally: a danger is latched or the controller set ``motion_blocked``."""


class Preempted(DriverError):
    """A stop went out while this command waited its turn: it was not sent."""


class NoReply(DriverError):
    """The machine did not answer within the profile's ack timeout."""


class MachineRefused(DriverError):
    """The machine answered with its NACK / error code."""


class NotConfirmed(DriverError):
    """The read-back does not show what was commanded."""


@dataclass(frozen=True)
class Telemetry:
    t: float  # clock time of the reading
    speed_kmh: float  # signed: negative = belt running backward
    direction: Direction
    incline_pct: float | None
    distance_m: float | None = None  # None where the protocol's unit is not known


@dataclass(frozen=True)
class Danger:
    """A status that means danger: ``kind`` is one of ``lanyard``, ``comm-fault``,
    ``hardware-fault``, ``nacks``, ``no-reply``, ``link-lost``, ``machine-stopped``,
    ``wrong-direction``, ``cds-disarmed``, ``watchdog-expired``, ``belts-differ``."""

    kind: str
    detail: str
    t: float


@dataclass(frozen=True)
class LinkHealth:
    ok: bool
    last_rx_age_s: float
    requests: int
    timeouts: int
    nacks: int
    garbage_bytes: int


class TreadmillDriver(Protocol):
    """What the control core drives (mirrors the FTMS client's surface; module docstring)."""

    profile: FirmwareProfile
    motion_blocked: bool
    on_telemetry: Callable[[Telemetry], None]
    on_status: Callable[[Danger], None]
    on_direction: Callable[[Direction], None]

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    def abort(self) -> None:
        """Cut the link with no stop (the machine's own watchdog takes over)."""

    def stop_now(self) -> None: ...

    async def start(self) -> None: ...

    async def set_speed(self, speed_kmh: float) -> None: ...

    async def set_incline(self, incline_pct: float) -> None: ...

    async def set_direction(self, direction: Direction) -> None: ...

    async def read_direction(self) -> Direction: ...

    @property
    def danger(self) -> Danger | None: ...

    def reset_danger(self) -> None: ...

    def link_health(self) -> LinkHealth: ...

    @property
    def stops_sent(self) -> int: ...


def check_speed(profile: FirmwareProfile, speed_kmh: float) -> None:
    """Refuse (never clamp) a signed speed outside the profile's limits."""
    if not math.isfinite(speed_kmh):
        raise Refused(f"speed {speed_kmh} is not a number")
    mag = abs(speed_kmh)
    if speed_kmh < 0 and not profile.supports_reverse:
        raise Refused(f"{profile.name} runs forward only")
    if mag == 0:
        return
    if not profile.speed.min_kmh - _EPS <= mag <= profile.speed.max_kmh + _EPS:
        raise Refused(
            f"speed {mag:g} km/h outside {profile.speed.min_kmh:g}-{profile.speed.max_kmh:g} km/h"
        )
    if speed_kmh < 0 and mag > profile.reverse.max_speed_kmh + _EPS:
        raise Refused(f"reverse speed {mag:g} km/h above {profile.reverse.max_speed_kmh:g} km/h")


def check_incline(profile: FirmwareProfile, incline_pct: float, reverse: bool) -> None:
    if not math.isfinite(incline_pct):
        raise Refused(f"incline {incline_pct} is not a number")
    lo, hi = profile.incline.min_pct, profile.incline.max_pct
    if reverse:
        lo, hi = max(lo, profile.reverse.min_incline_pct), min(hi, profile.reverse.max_incline_pct)
    if not lo - _EPS <= incline_pct <= hi + _EPS:
        raise Refused(f"incline {incline_pct:g} % outside {lo:g}-{hi:g} %")


def wire_speed_steps(profile: FirmwareProfile, speed_kmh: float) -> int:
    """|speed| in tenths of the wire unit, rounded, never above the profile's maximum."""
    per_step = 0.1 * (KMH_PER_MPH if profile.wire.speed_unit == "0.1mph" else 1.0)
    steps = round(abs(speed_kmh) / per_step)
    cap = profile.reverse.max_speed_kmh if speed_kmh < 0 else profile.speed.max_kmh
    while steps > 0 and steps * per_step > cap + _EPS:
        steps -= 1
    return steps


def wire_steps_to_kmh(profile: FirmwareProfile, steps: int) -> float:
    per_step = 0.1 * (KMH_PER_MPH if profile.wire.speed_unit == "0.1mph" else 1.0)
    return round(steps * per_step, 3)


def mm_s_to_kmh(mm_s: float) -> float:
    return mm_s / 1000 * KMH_PER_MPS


def kmh_to_mm_s(kmh: float) -> int:
    return round(kmh / KMH_PER_MPS * 1000)
