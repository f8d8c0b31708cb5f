"""The escalation's last step on a native machine without a watchdog (Biodex): the link is
kept and the stop repeated (cutting it would leave the belt running for good), the lane
stays ``estopped`` (not ``disconnected``), and the belt stops once the machine obeys again.
Judged from the in-process personality's physics."""

from __future__ import annotations

import asyncio
from typing import Any

from treadctl.clock import run_virtual
from treadctl.control.controller import Controller, State
from treadctl.control.safety import Interlock
from treadctl.profiles import load_profile
from treadctl.programs.model import program_from_dict
from treadctl.transport import open_transport


def test_a_stuck_belt_on_a_machine_without_watchdog_keeps_the_link_and_repeats_the_stop(
) -> None:
    async def main() -> tuple[list[dict[str, Any]], Any, Any, float, float]:
        prof = load_profile("biodex-rtm400")
        transport = open_transport("sim://?faults=stuck-belt@30+20", profile=prof)
        ctl = Controller(transport, prof)
        events: list[dict[str, Any]] = []
        ctl.event_listeners.append(events.append)
        await ctl.open()
        try:
            prog = program_from_dict({"name": "walk", "segment": [
                {"duration_s": 300, "speed_kmh": 3.0, "direction": "forward"}]}, "walk")
            task = ctl.start(prog)
            await asyncio.sleep(35)  # the belt is stuck from 30 s
            ctl.set_manual(speed_kmh=1.0)  # not obeyed: tracking error, stop, escalation
            await asyncio.sleep(10)
            machine: Any = transport.personality  # type: ignore[attr-defined]
            during = abs(machine.truth().speed_kmh)
            state_during = ctl.snapshot.state
            await asyncio.sleep(20)  # the fault is over at 50 s: the repeated stop works
            after = abs(machine.truth().speed_kmh)
            await asyncio.wait_for(task, 30)
            return events, ctl.latch.trip, state_during, during, after
        finally:
            await ctl.close()

    events, trip, state_during, during, after = run_virtual(main)
    actions = [e.get("action") for e in events if e["type"] == "escalate"]
    # The driver's motion watch sees the belt above its new setpoint first (overspeed);
    # the controller's tracking check would follow.
    assert trip is not None
    assert trip.interlock in (Interlock.OVERSPEED, Interlock.TRACKING_ERROR), trip
    assert actions[-1] == "keep-link" and "drop-link" not in actions, actions
    assert state_during is State.ESTOPPED  # the link is up: not "disconnected"
    assert during > 2.0  # stuck: nothing but the machine's own stop switch helps meanwhile
    assert after == 0.0  # obeying again, the machine is at rest under our stop
