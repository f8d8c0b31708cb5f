"""A stop request (Ctrl-C, SIGTERM, cmd/stop) is a controlled stop on every shipped profile,
in every phase, judged from the simulator: nothing that could move the belt reaches the
firmware after our Stop, the belt brakes no harder than the firmware's controlled-stop
rate, and nothing latches. A false e-stop is a hazard too (docs/safety.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from treadctl import ftms
from treadctl.control.controller import Controller, Outcome, State
from treadctl.profiles import load_profile

from harness import motion_writes_after, program, wait_for, with_sim

# Forward 4 km/h, then reverse 3 km/h (a direction change between them).
REVERSING = program((60, 4.0, "forward"), (60, 3.0, "reverse"))
FORWARD = program((60, 4.0, "forward"), (60, 5.0, "forward"))
PROFILES = ["generic-ftms", "treadctl-reference", "kinetic-rx2"]
PHASES = ["accelerating", "cruising", "mid-direction-change", "paused"]


def _reached(ctl: Controller, sim: Any, phase: str) -> bool:
    snap = ctl.snapshot
    speed = abs(sim.truth().speed_kmh)
    if phase == "accelerating":
        return snap.state is State.RUNNING and 1.0 < speed < 3.0
    if phase == "cruising":
        return snap.state is State.RUNNING and abs(speed - 4.0) < 0.05
    if phase == "mid-direction-change":
        return snap.segment == 2 and snap.phase == "dwell"
    return snap.state is State.PAUSED


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


# Forward-only firmware (generic-ftms) has no direction change to be in.
CASES = [
    (profile, phase)
    for profile in PROFILES
    for phase in PHASES
    if phase != "mid-direction-change" or load_profile(profile).supports_reverse
]


@pytest.mark.parametrize(("profile", "phase"), CASES)
def test_stop_request_is_a_controlled_stop(profile: str, phase: str) -> None:
    reverse = load_profile(profile).supports_reverse
    prog = REVERSING if reverse else FORWARD

    async def scenario(ctl: Controller, sim: Any) -> None:
        estops: list[dict[str, Any]] = []
        ctl.event_listeners.append(lambda e: estops.append(e) if e["type"] == "estop" else None)
        session = ctl.start(prog)
        if phase == "paused":
            assert await wait_for(lambda: _reached(ctl, sim, "cruising"), 60)
            ctl.pause()
        assert await wait_for(lambda: _reached(ctl, sim, phase), 120), ctl.snapshot
        t_request = sim.now_s()
        await ctl.stop()
        result = await asyncio.wait_for(session, 30)
        assert result.outcome is Outcome.STOPPED, result
        assert estops == [] and not ctl.latch.latched, estops
        assert result.belt_stopped
        assert ctl.snapshot.state is State.IDLE
        assert_controlled_stop(sim, t_request, profile)
        # Let the firmware answer everything still in flight: no late refusal latches.
        await asyncio.sleep(3.0)
        assert not ctl.latch.latched, ctl.latch.trip
        assert motion_writes_after(sim, first_stop_after(sim, t_request)) == []

    with_sim(scenario, profile=profile)


@pytest.mark.parametrize("profile", ["treadctl-reference", "kinetic-rx2"])
def test_estop_while_a_controlled_stop_runs_ends_the_session_estopped(profile: str) -> None:
    """A second Ctrl-C (e-stop) while the first one's stop is under way: the session task
    returns an e-stopped result (it is not left cancelled), and its 'finished' event goes out."""

    async def scenario(ctl: Controller, sim: Any) -> None:
        events: list[dict[str, Any]] = []
        ctl.event_listeners.append(events.append)
        session = ctl.start(REVERSING)
        assert await wait_for(lambda: _reached(ctl, sim, "cruising"), 60)
        await ctl.stop()
        assert await wait_for(lambda: ctl.snapshot.state is State.STOPPING, 2)
        await asyncio.sleep(0.3)  # the belt is still braking
        assert abs(sim.truth().speed_kmh) > 1.0
        ctl.estop("second interrupt from the terminal")
        result = await asyncio.wait_for(session, 30)
        assert not session.cancelled()
        assert result.outcome is Outcome.ESTOPPED
        assert [e["outcome"] for e in events if e["type"] == "finished"] == ["estopped"]
        assert await wait_for(lambda: sim.truth().speed_kmh == 0.0, 10)

    with_sim(scenario, profile=profile)
