"""Every interlock x forward/reverse x accelerating/cruising/mid-direction-change.

Each case injects its fault into the simulator (or the controller, for the remote e-stop,
missed heartbeat and internal error) and then judges by the simulator's physics, not by
the controller's belief: the simulated belt reaches 0 within a bound computed from the
configured decelerations, the controller is latched, and no command that could move the
belt reaches the simulated firmware until reset and a new start.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import pytest

from treadctl.control.controller import ControlError, Controller, State
from treadctl.control.safety import Interlock, SafetyConfig
from treadctl.control.safety import stop_bound_s as safety_stop_bound_s
from treadctl.limits import Limits
from treadctl.profiles import load_profile

from harness import motion_writes_after, program, wait_for, with_sim

PROFILE = load_profile("treadctl-reference")
CFG = SafetyConfig()

# forward 6 km/h, reverse 4 km/h, forward 5 km/h: the three phases happen in both directions.
PROGRAM = program((40, 6.0, "forward"), (40, 4.0, "reverse"), (40, 5.0, "forward"), heartbeat_s=3.0)
MAX_SPEED_KMH = 6.0


def stop_bound_s(link_timeout_s: float) -> float:
    """Worst case from the trip to a standing belt: the stop is resent once, then the link is
    dropped and the firmware watchdog stops the belt at its controlled-stop deceleration."""
    # The one formula (treadctl.control.safety.stop_bound_s), with this link timeout.
    profile_link_s = PROFILE.control.link_timeout_ms / 1000
    return safety_stop_bound_s(PROFILE, CFG, MAX_SPEED_KMH) - profile_link_s + link_timeout_s


@dataclass(frozen=True)
class Case:
    interlock: str
    accepted: frozenset[Interlock]  # which trip reasons are a correct detection


def _c(name: str, *accepted: Interlock) -> Case:
    return Case(name, frozenset(accepted))


CASES = [
    _c("remote-estop", Interlock.REMOTE_ESTOP),
    _c("gym-estop", Interlock.GYM_ESTOP),
    # With the belt already standing (mid-direction-change) the firmware reports nothing and
    # refuses the next Start instead: that refusal is what latches.
    _c("safety-key", Interlock.SAFETY_KEY, Interlock.COMMAND_REJECTED),
    _c("machine-stop", Interlock.MACHINE_STOP),
    _c("control-lost", Interlock.CONTROL_LOST),
    _c("link-lost", Interlock.LINK_LOST),
    _c("link-drop", Interlock.TELEMETRY_SILENCE, Interlock.COMMAND_TIMEOUT, Interlock.LINK_LOST),
    _c("telemetry-stop", Interlock.TELEMETRY_SILENCE),
    # A stuck belt asked to slow down is faster than commanded: overspeed is right too.
    _c("stuck-belt", Interlock.TRACKING_ERROR, Interlock.OVERSPEED),
    _c("runaway", Interlock.OVERSPEED, Interlock.TRACKING_ERROR),
    _c("wrong-direction", Interlock.DIRECTION_MISMATCH),
    _c("heart-rate", Interlock.HEART_RATE),
    _c("heartbeat-missed", Interlock.HEARTBEAT_MISSED),
    _c("slow-acks", Interlock.COMMAND_TIMEOUT),
    _c("ignore-commands", Interlock.COMMAND_TIMEOUT),
    _c("internal-error", Interlock.INTERNAL_ERROR),
]
DIRECTIONS = ["forward", "reverse"]
PHASES = ["accelerating", "cruising", "mid-direction-change"]


def _segment_for(direction: str, phase: str) -> int:
    # Segment numbers (1-based) of PROGRAM where the phase happens in that direction.
    if direction == "forward":
        return 3 if phase == "mid-direction-change" else 1
    return 2


def _phase_reached(ctl: Controller, sim: Any, direction: str, phase: str) -> bool:
    snap = ctl.snapshot
    seg = _segment_for(direction, phase)
    if snap.segment != seg:
        return False
    if phase == "mid-direction-change":
        return snap.phase == "dwell"
    speed = abs(sim.truth().speed_kmh)
    target = PROGRAM.segments[seg - 1].speed_kmh
    if phase == "accelerating":
        return snap.state is State.RUNNING and 1.0 < speed < target - 1.0
    return (
        snap.state is State.RUNNING and abs(speed - target) < 0.05 and ctl.commanded_kmh == target
    )


def _plausible_hr_climb(sim: Any) -> None:
    """The firmware's heart rate climbs toward 190 bpm at its first-order kinetics (tau 30 s,
    at most 3 bpm/s): a plausible rise through the ceiling, the only kind the ceiling trusts.
    The simulator's ``hr-spike`` jumps there at once, which the supervisor rightly calls
    unreliable (tests/control/test_heart_sessions.py), so its onset jump is undone here
    and the fault's 190 bpm steady state does the climbing."""
    before = sim.truth().hr_bpm

    def undo_jump(name: str, onset: bool) -> None:
        if name == "hr-spike" and onset:
            sim._hr_bpm = before

    sim.add_fault_listener(undo_jump)
    sim.inject("hr-spike")


def _inject(case: str, ctl: Controller, sim: Any, transport: Any) -> None:
    if case == "remote-estop":
        ctl.estop("test: remote e-stop")
    elif case == "gym-estop":
        ctl.estop("test: gym-wide e-stop", Interlock.GYM_ESTOP)
    elif case == "machine-stop":
        sim.press_stop()
    elif case == "link-lost":
        transport.unplug()
    elif case == "link-drop":
        sim.inject("link-drop")
    elif case == "heart-rate":
        _plausible_hr_climb(sim)
    elif case == "heartbeat-missed":
        pass  # the scenario simply stops sending heartbeats
    elif case == "internal-error":

        def broken_tick(now: float) -> None:
            raise RuntimeError("injected control-loop bug")

        ctl.tick_listeners.append(broken_tick)  # raises inside the loop's tick
    else:
        sim.inject(case)
    if case in ("slow-acks", "ignore-commands", "stuck-belt") and ctl.snapshot.phase != "dwell":
        # These only show when a command is sent or the speed must change: ask for one.
        target = 3.0 if ctl.commanded_dir.value == "reverse" else 4.0
        with contextlib.suppress(ControlError):
            ctl.set_manual(speed_kmh=target)


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("case", CASES, ids=[c.interlock for c in CASES])
def test_interlock_stops_the_belt(case: Case, direction: str, phase: str) -> None:
    site = Limits(max_hr_bpm=150)

    async def scenario(ctl: Controller, sim: Any) -> None:
        trips: list[float] = []
        ctl.event_listeners.append(
            lambda e: trips.append(sim.now_s()) if e["type"] == "estop" else None
        )
        session = ctl.start(PROGRAM)
        beating = True

        async def heartbeats() -> None:
            while beating:
                ctl.heartbeat()
                await asyncio.sleep(0.5)

        hb = asyncio.create_task(heartbeats())
        reached = await wait_for(lambda: _phase_reached(ctl, sim, direction, phase), 200)
        assert reached, f"phase {direction}/{phase} never reached: {ctl.snapshot}"
        assert not ctl.latch.latched, f"tripped before the fault: {ctl.latch.trip}"
        t_fault = sim.now_s()
        if case.interlock == "heartbeat-missed":
            beating = False
        _inject(case.interlock, ctl, sim, ctl.transport)
        # A wrong motor direction shows at the next start from standstill (next segment).
        # A plausible heart-rate climb from ~80 bpm needs about 30 s to pass 150 bpm.
        horizon = {"wrong-direction": 90, "heart-rate": 60}.get(case.interlock, 30)
        detected = await wait_for(lambda: ctl.latch.latched, horizon)
        beating = False
        hb.cancel()
        assert detected, f"{case.interlock} not detected; truth {sim.truth()}"
        assert ctl.latch.trip is not None
        assert ctl.latch.trip.interlock in case.accepted, ctl.latch.trip
        t_trip = trips[0]
        assert t_trip >= t_fault

        link_timeout_s = PROFILE.control.link_timeout_ms / 1000
        bound = stop_bound_s(link_timeout_s)
        stopped = await wait_for(lambda: abs(sim.truth().speed_kmh) == 0.0, bound + 0.5)
        assert stopped, f"belt still at {sim.truth().speed_kmh} km/h {bound:.1f} s after the trip"
        t_stopped = sim.truth().t_s
        assert t_stopped - t_trip <= bound, (t_stopped - t_trip, bound)
        # The session ends as e-stopped / fault, and the controller stays latched.
        result = await asyncio.wait_for(session, 30)
        assert result.outcome.value in ("estopped", "error")
        assert ctl.latch.latched
        with pytest.raises(ControlError):
            ctl.start(PROGRAM)
        # Let a few seconds pass latched: nothing that moves may reach the firmware.
        await asyncio.sleep(3.0)
        assert motion_writes_after(sim, t_trip) == []
        assert abs(sim.truth().speed_kmh) == 0.0
        if ctl.snapshot.state is not State.DISCONNECTED:
            ctl.reset("test: staff checked the machine")
            assert not ctl.latch.latched
            await asyncio.sleep(3.0)
            # Reset never moves the belt.
            assert motion_writes_after(sim, t_trip) == []
            assert abs(sim.truth().speed_kmh) == 0.0

    with_sim(scenario, site_limits=site)
