"""What a session's record and its published snapshot say at its ends: the ``finished``
event is in the store, the belt's run-down after an e-stop is recorded, and the target
shown while the belt slows (end of program, pause) is where the belt is heading (0)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from treadctl.clock import run_virtual
from treadctl.control.controller import Controller, Outcome, Snapshot, State
from treadctl.profiles import load_profile
from treadctl.store.db import SessionStore
from treadctl.store.integration import controller_recorder_factory
from treadctl.transport.sim import SimTransport

from harness import program, wait_for

PROFILE = "treadctl-reference"


def _recorded(tmp_path: Path, scenario: Any) -> tuple[SessionStore, Any]:
    factory = controller_recorder_factory(
        data_dir=tmp_path, treadmill_id="t1", device="sim://", profile=PROFILE
    )

    async def main() -> Any:
        prof = load_profile(PROFILE)
        transport = SimTransport(prof)
        ctl = Controller(transport, prof, recorder_factory=factory)
        await ctl.open()
        try:
            return await scenario(ctl, transport.sim)
        finally:
            await ctl.close()

    out = run_virtual(main)
    return factory.store, out


def test_the_finished_event_reaches_the_store(tmp_path: Path) -> None:
    async def scenario(ctl: Controller, sim: Any) -> Any:
        return await ctl.start(program((8, 3.0, "forward")))

    store, result = _recorded(tmp_path, scenario)
    assert result.outcome is Outcome.FINISHED
    events = [e for e in store.events(result.session_id) if e.type == "finished"]
    assert len(events) == 1 and events[0].data["outcome"] == "finished", events


def test_the_run_down_after_an_estop_is_recorded(tmp_path: Path) -> None:
    async def scenario(ctl: Controller, sim: Any) -> Any:
        task = ctl.start(program((60, 6.0, "forward")))
        await wait_for(lambda: sim.truth().speed_kmh > 5.9, 30)
        ctl.estop("operator")
        result = await task
        return result, sim.truth().speed_kmh

    store, (result, speed_at_end) = _recorded(tmp_path, scenario)
    assert result.outcome is Outcome.ESTOPPED
    samples = store.samples(result.session_id)
    # Judged from the simulated belt: it stood when the record closed, and the record
    # holds its deceleration down to 0, not only the moment of the latch.
    assert speed_at_end == 0.0
    assert samples[-1].speed_kmh == 0.0, samples[-5:]
    assert result.belt_stopped
    slowing = [s for s in samples if 0.5 < s.speed_kmh < 5.0 and s.state == "estopped"]
    assert len(slowing) >= 5, [(s.speed_kmh, s.state) for s in samples[-20:]]


def test_target_is_zero_while_the_belt_slows_at_the_end_and_at_a_pause() -> None:
    from harness import with_sim

    seen: list[Snapshot] = []

    async def scenario(ctl: Controller, sim: Any) -> None:
        ctl.state_listeners.append(seen.append)
        ctl.telemetry_listeners.append(seen.append)
        task = ctl.start(program((30, 4.0, "forward")))
        await wait_for(lambda: sim.truth().speed_kmh > 3.9, 20)
        ctl.pause()
        await wait_for(lambda: ctl.snapshot.state is State.PAUSED, 20)
        ctl.resume()
        await wait_for(lambda: ctl.snapshot.state is State.RUNNING, 20)
        result = await task
        assert result.outcome is Outcome.FINISHED

    with_sim(scenario)
    slowing = [s for s in seen if s.state is State.STOPPING]
    phases = {s.phase for s in slowing}
    assert {"pausing", "stopping"} <= phases, phases
    wrong = [(s.phase, s.target_speed_kmh) for s in slowing if s.target_speed_kmh != 0.0]
    assert not wrong, wrong
    # After the resume the target is the segment's again.
    running = [s for s in seen if s.state is State.RUNNING]
    assert running[-1].target_speed_kmh == 4.0
