"""Interlocks and the latch: pure decisions, no I/O, no clock of its own.

Every check takes the values it judges (and ``now`` where time matters) and returns a
``Trip`` or ``None``. The controller calls the telemetry checks synchronously from the
notification handler, so a fault seen on the wire turns into a stop frame without waiting
for the next loop tick. The ``Latch`` records the first trip and stays set until an
explicit reset; nothing else clears it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from treadctl.control.planner import on_grid
from treadctl.profiles import FirmwareProfile
from treadctl.types import Direction

if TYPE_CHECKING:
    from treadctl.limits import EffectiveLimits


class Interlock(enum.StrEnum):
    """Every reason the controller latches (docs/safety.md)."""

    REMOTE_ESTOP = "remote-estop"
    GYM_ESTOP = "gym-estop"
    SAFETY_KEY = "safety-key"
    MACHINE_STOP = "machine-stop"
    MACHINE_FAULT = "machine-fault"
    CONTROL_LOST = "control-lost"
    LINK_LOST = "link-lost"
    TELEMETRY_SILENCE = "telemetry-silence"
    TRACKING_ERROR = "tracking-error"
    OVERSPEED = "overspeed"
    DIRECTION_MISMATCH = "direction-mismatch"
    HEART_RATE = "heart-rate"
    HEARTBEAT_MISSED = "heartbeat-missed"
    COMMAND_TIMEOUT = "command-timeout"
    COMMAND_REJECTED = "command-rejected"
    BROKER_LOST = "broker-lost"
    INTERNAL_ERROR = "internal-error"


@dataclass(frozen=True)
class SafetyConfig:
    """Interlock thresholds; defaults documented in docs/safety.md."""

    telemetry_timeout_s: float = 1.0
    tracking_band_kmh: float = 1.0
    tracking_time_s: float = 1.5
    overspeed_margin_kmh: float = 0.8
    direction_min_speed_kmh: float = 0.3  # below this a direction read is not trusted
    standstill_kmh: float = 0.0  # telemetry must read exactly 0 (its resolution is 0.01)
    hr_hold_s: float = 3.0  # heart rate must stay above the ceiling this long
    stop_confirm_s: float = 0.6  # after a stop, the belt must be decelerating by then
    escalate_after_resends: int = 1  # resend the stop this many times, then drop the link
    direction_readback_timeout_s: float = 2.0

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "safety") -> SafetyConfig:
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise ValueError(f"{where}.{key}: unknown field")
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{where}.{key}: must be a positive number")
            values[key] = type(getattr(cls(), key))(value)
        return cls(**values)


@dataclass(frozen=True)
class Trip:
    interlock: Interlock
    detail: str

    @property
    def reason(self) -> str:
        return f"{self.interlock.value}: {self.detail}"


class Latch:
    """Set by the first trip; cleared only by :meth:`reset` (which never moves the belt)."""

    def __init__(self) -> None:
        self.trip: Trip | None = None

    @property
    def latched(self) -> bool:
        return self.trip is not None

    def set(self, trip: Trip) -> bool:
        """Latch ``trip``; returns False when already latched (the first reason is kept)."""
        if self.trip is not None:
            return False
        self.trip = trip
        return True

    def reset(self) -> Trip | None:
        trip, self.trip = self.trip, None
        return trip


def check_overspeed(
    speed_kmh: float, commanded_kmh: float, cap_kmh: float, cfg: SafetyConfig
) -> Trip | None:
    """Measured speed above the active cap or clearly above what was commanded."""
    limit = min(cap_kmh, commanded_kmh) + cfg.overspeed_margin_kmh
    if speed_kmh > limit:
        return Trip(
            Interlock.OVERSPEED,
            f"belt at {speed_kmh:.2f} km/h, limit {limit:.2f} km/h "
            f"(commanded {commanded_kmh:.2f}, cap {cap_kmh:.2f})",
        )
    return None


def check_direction(
    measured: Direction | None, expected: Direction, speed_kmh: float, cfg: SafetyConfig
) -> Trip | None:
    if measured is None or speed_kmh < cfg.direction_min_speed_kmh:
        return None
    if measured is not expected:
        return Trip(
            Interlock.DIRECTION_MISMATCH,
            f"belt moving {measured.value} at {speed_kmh:.2f} km/h, expected {expected.value}",
        )
    return None


def check_heart_rate(
    hr_bpm: int | None, ceiling_bpm: float, above_since: float | None, now: float, cfg: SafetyConfig
) -> tuple[Trip | None, float | None]:
    """Returns (trip, new above_since)."""
    if hr_bpm is None or hr_bpm <= ceiling_bpm:
        return None, None
    since = now if above_since is None else above_since
    if now - since >= cfg.hr_hold_s:
        return Trip(Interlock.HEART_RATE, f"heart rate {hr_bpm} bpm above {ceiling_bpm:.0f}"), since
    return None, since


class TrackingMonitor:
    """Speed tracking error: measured vs commanded outside a band for longer than a time.

    The commanded value is what the firmware was told; since the planner never asks for
    more acceleration than the firmware's own ramp, the belt follows within the band
    except for a short lag, which the hold time absorbs."""

    def __init__(self, cfg: SafetyConfig) -> None:
        self._cfg = cfg
        self._outside_since: float | None = None

    def reset(self) -> None:
        self._outside_since = None

    def update(self, speed_kmh: float, commanded_kmh: float, now: float) -> Trip | None:
        error = abs(speed_kmh - commanded_kmh)
        if error <= self._cfg.tracking_band_kmh:
            self._outside_since = None
            return None
        if self._outside_since is None:
            self._outside_since = now
            return None
        if now - self._outside_since >= self._cfg.tracking_time_s:
            return Trip(
                Interlock.TRACKING_ERROR,
                f"belt at {speed_kmh:.2f} km/h, commanded {commanded_kmh:.2f} km/h "
                f"for {now - self._outside_since:.1f} s",
            )
        return None


def check_silence(last_rx: float, now: float, cfg: SafetyConfig) -> Trip | None:
    if now - last_rx > cfg.telemetry_timeout_s:
        return Trip(
            Interlock.TELEMETRY_SILENCE,
            f"no treadmill data for {now - last_rx:.2f} s (limit {cfg.telemetry_timeout_s} s)",
        )
    return None


def check_heartbeat(last_beat: float, now: float, period_s: float | None) -> Trip | None:
    if period_s is None:
        return None
    if now - last_beat > period_s:
        return Trip(
            Interlock.HEARTBEAT_MISSED,
            f"no dead-man heartbeat for {now - last_beat:.2f} s (limit {period_s} s)",
        )
    return None


#: Slack on top of the physics in :func:`stop_bound_s` (telemetry period, scheduling).
STOP_MARGIN_S = 0.5


def setpoint_refusal(
    lim: EffectiveLimits,
    direction: Direction,
    speed_kmh: float | None,
    incline_pct: float | None,
) -> str | None:
    """Why a manual setpoint (``Controller.set_manual``) is refused under ``lim`` for a belt
    (or, rear-facing, a user) going ``direction``, or None. Outside the range or off the
    increment grid is refused, never clamped (docs/safety.md)."""
    if speed_kmh is not None:
        cap = lim.reverse_max_speed_kmh if direction is Direction.REVERSE else lim.max_speed_kmh
        if not lim.min_speed_kmh <= speed_kmh <= cap:
            return (
                f"speed_kmh {speed_kmh} outside {lim.min_speed_kmh}..{cap} km/h "
                f"({direction.value})"
            )
        if not on_grid(speed_kmh, lim.speed_increment_kmh):
            return f"speed_kmh {speed_kmh} is not a multiple of {lim.speed_increment_kmh} km/h"
    if incline_pct is not None:
        lo, hi = (
            (lim.reverse_min_incline_pct, lim.reverse_max_incline_pct)
            if direction is Direction.REVERSE
            else (lim.min_incline_pct, lim.max_incline_pct)
        )
        if not lo <= incline_pct <= hi:
            return f"incline_pct {incline_pct} outside {lo}..{hi} %"
        if not on_grid(incline_pct, lim.incline_increment_pct):
            return f"incline_pct {incline_pct} is not a multiple of {lim.incline_increment_pct} %"
    return None


def stop_bound_s(profile: FirmwareProfile, cfg: SafetyConfig, speed_kmh: float) -> float:
    """Trip -> standing belt, worst case (docs/safety.md, "Escalation"): the stop is
    resent, then the link is dropped and the firmware's watchdog stops the belt at its
    controlled-stop deceleration. The one formula the controller, the fault matrix and
    the soak use."""
    escalation = cfg.stop_confirm_s * (cfg.escalate_after_resends + 1) + 0.3
    link_timeout_s = profile.control.link_timeout_ms / 1000
    decel = min(profile.motion.stop_decel_mps2, profile.reverse.decel_mps2)
    return escalation + link_timeout_s + abs(speed_kmh) / 3.6 / decel + STOP_MARGIN_S
