"""Whole sessions on the simulator: programs finish, reverse really runs backward, pause,
resume, manual set, stop, reset rules; judged from the simulator's ground truth."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from treadctl import ftms
from treadctl.control.controller import ControlError, Controller, Outcome, State
from treadctl.programs.model import load_program

from harness import motion_writes_after, program, wait_for, with_sim

REVERSE_PROGRAM = program(
    (20, 4.0, "forward"), (20, 3.0, "reverse", 2.0), (10, 0.0, "forward"), (20, 4.5, "forward", 1.0)
)


@pytest.mark.parametrize("profile", ["treadctl-reference", "kinetic-rx2"])
def test_reverse_program_finishes_and_runs_backward(profile: str) -> None:
    async def scenario(ctl: Controller, sim: Any) -> Any:
        result = await ctl.start(REVERSE_PROGRAM)
        return result, list(sim.trace)

    result, trace = with_sim(scenario, profile=profile)
    assert result.outcome is Outcome.FINISHED, result
    assert result.segments_completed == 4
    assert result.belt_stopped
    speeds = [p.speed_kmh for p in trace]
    assert min(speeds) == pytest.approx(-3.0, abs=0.06)  # reverse segment really ran backward
    assert max(speeds) == pytest.approx(4.5, abs=0.06)
    # Standstill is what telemetry can show: below its 0.01 km/h resolution it reads 0.
    assert abs(trace[-1].speed_kmh) < 0.01
    assert max(p.incline_pct for p in trace) == pytest.approx(2.0, abs=0.01)


def test_forward_only_program_on_generic_ftms() -> None:
    async def scenario(ctl: Controller, sim: Any) -> Any:
        return await ctl.start(load_program("forward-warmup-cooldown"))

    result = with_sim(scenario, profile="generic-ftms")
    assert result.outcome is Outcome.FINISHED


def test_reverse_program_refused_before_start_on_forward_only_firmware() -> None:
    async def scenario(ctl: Controller, sim: Any) -> None:
        with pytest.raises(ControlError, match="reverse"):
            ctl.start(REVERSE_PROGRAM)
        await asyncio.sleep(2)
        assert motion_writes_after(sim, 0.0) == []

    with_sim(scenario, profile="generic-ftms")


def test_out_of_range_program_rejected_not_clamped() -> None:
    too_fast = program((10, 6.5, "reverse"))

    async def scenario(ctl: Controller, sim: Any) -> None:
        with pytest.raises(ControlError, match="segment 1"):
            ctl.start(too_fast)
        await asyncio.sleep(1)
        assert motion_writes_after(sim, 0.0) == []

    with_sim(scenario)


def test_open_commands_stop_first_even_if_belt_was_moving() -> None:
    """On connect the controller takes control and commands Stop before anything else."""

    async def scenario(ctl: Controller, sim: Any) -> list[tuple[float, int, bytes]]:
        await asyncio.sleep(0.5)
        return list(sim.wire_log)

    log = with_sim(scenario)
    cp = [v for (_, u, v) in log if u == ftms.CONTROL_POINT]
    assert cp[0][0] == ftms.OpCode.REQUEST_CONTROL
    assert cp[1][0] == ftms.OpCode.STOP_OR_PAUSE and cp[1][1] == 0x01


def test_pause_resume_and_manual_set() -> None:
    async def scenario(ctl: Controller, sim: Any) -> None:
        task = ctl.start(program((60, 4.0, "forward")))
        assert await wait_for(lambda: abs(sim.truth().speed_kmh - 4.0) < 0.05, 20)
        ctl.set_manual(speed_kmh=5.0, incline_pct=1.0)
        assert await wait_for(lambda: abs(sim.truth().speed_kmh - 5.0) < 0.05, 20)
        with pytest.raises(ControlError):
            ctl.set_manual(speed_kmh=25.0)  # out of range: rejected, nothing changes
        with pytest.raises(ControlError):
            ctl.set_manual(speed_kmh=4.55)  # not on the 0.1 km/h grid
        ctl.pause()
        assert await wait_for(lambda: ctl.snapshot.state is State.PAUSED, 20)
        assert sim.truth().speed_kmh == 0.0
        elapsed = ctl.snapshot.elapsed_s
        await asyncio.sleep(10)
        assert ctl.snapshot.elapsed_s == pytest.approx(elapsed, abs=0.5)  # session time frozen
        ctl.resume()
        assert await wait_for(lambda: abs(sim.truth().speed_kmh - 5.0) < 0.05, 20)
        result = await task
        assert result.outcome is Outcome.FINISHED

    with_sim(scenario)


def test_stop_request_is_a_controlled_stop_without_latch() -> None:
    async def scenario(ctl: Controller, sim: Any) -> None:
        task = ctl.start(program((60, 5.0, "reverse")))
        assert await wait_for(lambda: sim.truth().speed_kmh < -4.9, 30)
        await ctl.stop()
        result = await task
        assert result.outcome is Outcome.STOPPED
        assert not ctl.latch.latched
        assert sim.truth().speed_kmh == 0.0
        # A new session can start straight away (no reset needed after a controlled stop).
        again = ctl.start(program((5, 3.0, "forward")))
        assert (await again).outcome is Outcome.FINISHED

    with_sim(scenario)


def test_reset_refused_while_belt_moves_and_never_moves_it() -> None:
    async def scenario(ctl: Controller, sim: Any) -> None:
        task = ctl.start(program((60, 6.0, "forward")))
        assert await wait_for(lambda: sim.truth().speed_kmh > 5.9, 30)
        sim.inject("stuck-belt")
        ctl.estop("test")
        await task
        with pytest.raises(ControlError, match="moving"):
            ctl.reset("too early")
        assert await wait_for(lambda: sim.truth().speed_kmh == 0.0, 10)  # watchdog after drop

    with_sim(scenario)


def test_direction_changes_only_at_standstill_with_dwell_and_readback() -> None:
    prog = program((15, 4.0, "forward"), (15, 3.0, "reverse"), (15, 4.0, "forward"))

    async def scenario(ctl: Controller, sim: Any) -> Any:
        await ctl.start(prog)
        return list(sim.trace), list(sim.wire_log)

    trace, wire = with_sim(scenario)
    # Every change of the motor's direction happened with the belt standing.
    for a, b in itertools.pairwise(trace):
        if a.direction != b.direction:
            assert a.speed_kmh == 0.0 and b.speed_kmh == 0.0
    # Between the last stop before a direction write and the write: at least the dwell.
    dir_writes = [t for (t, u, _) in wire if u == 0xFF01]
    assert len(dir_writes) == 2
    for t_write in dir_writes:
        last_moving = max(p.t_s for p in trace if p.t_s <= t_write and p.speed_kmh != 0.0)
        # The simulator records a trace point at every knee, so this is when the belt stood.
        stood_at = min(p.t_s for p in trace if p.t_s > last_moving and p.speed_kmh == 0.0)
        assert t_write - stood_at >= 2.0 - 1e-6
