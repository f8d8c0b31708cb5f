"""Controller + in-process simulator on virtual time, with ground-truth helpers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from treadctl import ftms
from treadctl.clock import run_virtual, wait_until
from treadctl.control.client import is_motion_write
from treadctl.control.controller import Controller
from treadctl.control.machine import Reading
from treadctl.control.safety import SafetyConfig
from treadctl.limits import Limits
from treadctl.profiles import load_profile
from treadctl.programs.model import Program, program_from_dict
from treadctl.transport.sim import SimTransport
from treadctl.types import Direction

T = TypeVar("T")


def program(
    *segments: tuple[float, float, str] | tuple[float, float, str, float], **extra: Any
) -> Program:
    """program((duration_s, speed_kmh, direction[, incline_pct]), ...)"""
    segs = []
    for s in segments:
        seg: dict[str, Any] = {"duration_s": s[0], "speed_kmh": s[1], "direction": s[2]}
        if len(s) > 3:
            seg["incline_pct"] = s[3]
        segs.append(seg)
    return program_from_dict({"name": extra.pop("name", "test"), "segment": segs, **extra}, "test")


def with_sim(
    scenario: Callable[[Controller, Any], Awaitable[T]],
    *,
    profile: str = "treadctl-reference",
    faults: str | None = None,
    site_limits: Limits | None = None,
    safety: SafetyConfig | None = None,
    tick_hz: float = 10.0,
    seed: int = 0,
) -> T:
    async def main() -> T:
        prof = load_profile(profile)
        transport = SimTransport(prof, faults=faults, seed=seed)
        ctl = Controller(transport, prof, site_limits=site_limits, safety=safety, tick_hz=tick_hz)
        await ctl.open()
        try:
            return await scenario(ctl, transport.sim)
        finally:
            await ctl.close()

    return run_virtual(main)


#: Poll a condition on virtual time (costs no real time); the tests' name for it.
wait_for = wait_until


def reading(speed: float, *, now: float = 0.0, hr: int | None = None,
            direction: Direction | None = Direction.FORWARD) -> Reading:
    """One Treadmill Data sample for the safety machine: commanded forward at 5 km/h
    (the reference), cap 18 km/h, heart-rate ceiling 150 bpm."""
    return Reading(now=now, speed_kmh=speed, direction=direction, hr_bpm=hr, reference_kmh=5.0,
                   commanded_kmh=5.0, cap_kmh=18.0, expected=Direction.FORWARD, max_hr_bpm=150)


def motion_writes_after(sim: Any, t_s: float) -> list[tuple[float, int, bytes]]:
    """Host writes that could move the belt, received by the simulated firmware after t_s
    (simulator session time), by the client's one rule for the simulated profile
    (:func:`treadctl.control.client.is_motion_write`)."""
    return [
        (t, u, v) for (t, u, v) in sim.wire_log if t > t_s and is_motion_write(sim.profile, u, v)
    ]


def first_stop_after(sim: Any, t_s: float) -> float:
    """Simulator time of the first Stop (0x08 0x01) the firmware received after ``t_s``."""
    for t, uuid, value in sim.wire_log:
        if t >= t_s and uuid == ftms.CONTROL_POINT and value[:2] == b"\x08\x01":
            return float(t)
    raise AssertionError(f"no Stop reached the firmware after t={t_s}")


def assert_controlled_stop(sim: Any, t_request: float, profile_name: str) -> None:
    """Physics of a controlled stop from ``t_request`` on: a Stop reached the firmware,
    no motion command after it, the belt decelerated no harder than ``stop_decel_mps2``
    and stands, stopped by the user's request (not the watchdog or the safety key)."""
    profile = load_profile(profile_name)
    t_stop = first_stop_after(sim, t_request)
    assert motion_writes_after(sim, t_stop) == [], "a motion command followed our Stop"
    after = [p for p in sim.trace if p.t_s >= t_request]
    assert after, "no trace after the stop request"
    hardest = min(p.accel_mps2 for p in after)
    assert hardest >= -profile.motion.stop_decel_mps2 - 1e-6, (
        f"braked at {-hardest} m/s^2, controlled stop is {profile.motion.stop_decel_mps2}"
    )
    assert hardest > -profile.motion.estop_decel_mps2
    truth = sim.truth()
    assert truth.speed_kmh == 0.0 and not truth.running
    assert truth.safety_key_in
    assert truth.stop_reason in ("user", "pause"), truth.stop_reason
