"""The controller over a real BLE stack: treadctl.transport.ble -> bleak's BleakClient ->
a Bumble central -> virtual controllers with 30 ms connection events -> the simulator as an
FTMS GATT server on Bumble, at the default ATT MTU of 23 with the long Treadmill Data
record of a full-featured console (split in two notifications). Virtual time; every fault
is injected in the simulator and judged from its physics (sim.truth(), wire log)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from test_fault_matrix import PROGRAM as MATRIX_PROGRAM
from test_fault_matrix import _phase_reached, stop_bound_s

from treadctl import ftms
from treadctl.clock import run_virtual
from treadctl.control.client import is_motion_write
from treadctl.control.controller import ControlError, Controller, Outcome, State
from treadctl.control.safety import Interlock
from treadctl.profiles import load_profile
from treadctl.simulator import SimTreadmill
from treadctl.simulator.ble import VirtualLink
from treadctl.transport.ble import BleTransport

from harness import motion_writes_after, program, wait_for

T = TypeVar("T")
STOP = ftms.encode_control_point(ftms.StopOrPause(pause=False))
CONNECTION_INTERVAL_MS = 30.0


def with_ble(
    scenario: Callable[[Controller, SimTreadmill, VirtualLink], Awaitable[T]],
    *,
    profile: str = "treadctl-reference",
    faults: str | None = None,
    supervision_timeout_s: float = 2.0,
) -> T:
    async def main() -> T:
        prof = load_profile(profile)
        sim = SimTreadmill(prof, faults=faults)
        sim_task = asyncio.get_running_loop().create_task(sim.run())
        link = VirtualLink(sim, long_records=True, connection_interval_ms=CONNECTION_INTERVAL_MS,
                           supervision_timeout_s=supervision_timeout_s)
        await link.start()
        transport = BleTransport(name_prefix="TREADCTL", client_factory=link.client_factory,
                                 scanner=link.scanner, scan_timeout_s=3.0)
        ctl = Controller(transport, prof, tick_hz=10.0)
        await ctl.open()
        try:
            return await scenario(ctl, sim, link)
        finally:
            await ctl.close()
            await link.close()
            sim_task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sim_task

    return run_virtual(main)


def test_forward_reverse_session_over_ble() -> None:
    async def scenario(ctl: Controller, sim: SimTreadmill, link: VirtualLink) -> None:
        assert link.last_client.mtu_size == 23
        samples: list[float] = []
        ctl.telemetry_listeners.append(lambda s: samples.append(s.speed_kmh))
        result = await ctl.start(program((8, 4.0, "forward"), (14, 3.0, "reverse"),
                                         (6, 4.0, "forward")))
        assert result.outcome is Outcome.FINISHED, result
        assert result.segments_completed == 3
        assert await wait_for(lambda: sim.truth().speed_kmh == 0.0, 10)
        speeds = [p.speed_kmh for p in sim.trace]
        assert min(speeds) == pytest.approx(-3.0, abs=0.01)  # really ran backward
        assert max(speeds) == pytest.approx(4.0, abs=0.01)
        # Every record was split at MTU 23 and merged back into one sample each.
        parts = [v for _, u, v in link.peripheral.sent if u == ftms.TREADMILL_DATA]
        records = [v for v in parts if not v[0] & 0x01]
        assert len(parts) > len(records) > 200
        assert ctl.client.deviations["split-records"] == len(parts) - len(records)
        assert ctl.client.decode_errors == 0
        assert not ctl.latch.latched

    with_ble(scenario)


def test_estop_preempts_a_setpoint_waiting_for_its_ack_over_ble() -> None:
    async def scenario(ctl: Controller, sim: SimTreadmill, link: VirtualLink) -> None:
        ctl.start(program((60, 5.0, "forward")))

        def setpoint_in_flight() -> bool:
            wanted = ctl.wanted_speed
            return (
                ctl.client.in_flight_opcode == ftms.OpCode.SET_TARGET_SPEED
                and wanted is not None
                and wanted > ctl.commanded_kmh
                and sim.truth().speed_kmh > 1.0
            )

        assert await wait_for(setpoint_in_flight, 30, step_s=0.001)
        gatt_client = link.last_client._backend._peer.gatt_client
        pending = gatt_client.pending_request  # an ATT request not answered yet, if any
        on_air = None if pending is None else bytes(pending.attribute_value)
        received_before = len(sim.wire_log)
        t_estop = sim.now_s()
        ctl.estop("test: pre-emption over BLE")
        assert await wait_for(
            lambda: any(v == STOP for _, _, v in sim.wire_log[received_before:]), 1, step_s=0.001
        )
        after = sim.wire_log[received_before:]
        stop_index = next(i for i, (_, _, v) in enumerate(after) if v == STOP)
        # Nothing made after the e-stop arrives before the Stop. ATT allows one request
        # on the air: only that one may reach the firmware first.
        assert stop_index == 0 or (stop_index == 1 and after[0][2] == on_air), after[:3]
        assert after[stop_index][1] == ftms.CONTROL_POINT
        # ...and the Stop arrives within two connection events of the e-stop.
        assert after[stop_index][0] - t_estop <= 2 * CONNECTION_INTERVAL_MS / 1000 + 1e-6
        assert await wait_for(lambda: sim.truth().speed_kmh == 0.0, 15)
        assert not [w for w in after[stop_index:] if is_motion_write(sim.profile, *w[1:])]
        assert ctl.latch.latched

    # kinetic-rx2 acknowledges slowly (150 ms), so an outstanding ack is easy to catch.
    with_ble(scenario, profile="kinetic-rx2")


# The fault-matrix cases a BLE link can carry, with the trip reasons that are correct.
BLE_CASES = {
    "link-lost": {Interlock.LINK_LOST},
    "link-drop": {Interlock.TELEMETRY_SILENCE, Interlock.COMMAND_TIMEOUT, Interlock.LINK_LOST},
    "telemetry-stop": {Interlock.TELEMETRY_SILENCE},
    "safety-key": {Interlock.SAFETY_KEY, Interlock.COMMAND_REJECTED},
    "slow-acks": {Interlock.COMMAND_TIMEOUT},
}


@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("case", list(BLE_CASES))
def test_fault_over_ble_stops_the_belt(case: str, direction: str) -> None:
    profile = load_profile("treadctl-reference")

    async def scenario(ctl: Controller, sim: SimTreadmill, link: VirtualLink) -> None:
        trips: list[float] = []
        ctl.event_listeners.append(
            lambda e: trips.append(sim.now_s()) if e["type"] == "estop" else None
        )
        session = ctl.start(MATRIX_PROGRAM)

        async def heartbeats() -> None:
            while True:
                ctl.heartbeat()
                await asyncio.sleep(0.5)

        hb = asyncio.create_task(heartbeats())
        try:
            assert await wait_for(lambda: _phase_reached(ctl, sim, direction, "cruising"), 200)
            assert not ctl.latch.latched, ctl.latch.trip
            t_fault = sim.now_s()
            if case == "link-lost":
                link.peripheral.drop_connection()  # power cut at the treadmill
            else:
                sim.inject(case)
            if case == "slow-acks":
                ctl.set_manual(speed_kmh=3.0 if direction == "reverse" else 4.0)
            assert await wait_for(lambda: ctl.latch.latched, 30), sim.truth()
        finally:
            hb.cancel()
        assert ctl.latch.trip is not None and ctl.latch.trip.interlock in BLE_CASES[case], (
            ctl.latch.trip
        )
        t_trip = trips[0]
        assert t_trip >= t_fault
        bound = stop_bound_s(profile.control.link_timeout_ms / 1000)
        assert await wait_for(lambda: sim.truth().speed_kmh == 0.0, bound + 0.5), sim.truth()
        assert sim.truth().t_s - t_trip <= bound
        result = await asyncio.wait_for(session, 30)
        assert result.outcome.value in ("estopped", "error")
        with pytest.raises(ControlError):
            ctl.start(MATRIX_PROGRAM)
        await asyncio.sleep(3.0)
        assert motion_writes_after(sim, t_trip) == []
        assert sim.truth().speed_kmh == 0.0
        if ctl.snapshot.state is not State.DISCONNECTED:
            ctl.reset("test: staff checked the machine")
            await asyncio.sleep(3.0)
            assert motion_writes_after(sim, t_trip) == []  # reset never moves the belt
            assert sim.truth().speed_kmh == 0.0

    with_ble(scenario)
