"""A stop request (Ctrl-C, SIGTERM, cmd/stop) is a controlled stop on every shipped profile,
in every phase, judged from the simulator: nothing that could move the belt reaches the
firmware after our Stop, the belt brakes no harder than the firmware's controlled-stop
rate, and nothing latches. A false e-stop is a hazard too (docs/safety.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from treadctl.control.controller import Controller, Outcome, State
from treadctl.profiles import load_profile

from harness import (
    assert_controlled_stop,
    first_stop_after,
    motion_writes_after,
    program,
    wait_for,
    with_sim,
)

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


def test_estop_before_the_session_task_first_runs_cancels_it() -> None:
    """An e-stop in the same step as the start: the session never commands anything."""

    async def scenario(ctl: Controller, sim: Any) -> None:
        events: list[dict[str, Any]] = []
        ctl.event_listeners.append(events.append)
        t0 = sim.now_s()
        session = ctl.start(REVERSING)
        ctl.estop("pressed at once")
        result = await asyncio.wait_for(session, 10)  # not a task cancelled before it ran
        assert result.outcome is Outcome.ESTOPPED
        assert [e["outcome"] for e in events if e["type"] == "finished"] == ["estopped"]
        assert motion_writes_after(sim, t0) == []

    with_sim(scenario, profile="kinetic-rx2")
