"""Stop pre-emption: with a setpoint waiting for its ack and more queued, the stop is the
next frame that reaches the (simulated) firmware, and nothing that moves follows it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from treadctl import ftms
from treadctl.clock import LoopClock, run_virtual
from treadctl.control.client import FTMSClient, Preempted, is_motion_write
from treadctl.control.controller import Controller
from treadctl.profiles import load_profile
from treadctl.transport.framed import FramedTransport
from treadctl.transport.sim import SimTransport

from harness import program, wait_for, with_sim

STOP = ftms.encode_control_point(ftms.StopOrPause(pause=False))


def test_stop_is_next_on_the_wire_while_an_ack_is_outstanding() -> None:
    async def scenario(ctl: Controller, sim: Any) -> None:
        ctl.start(program((60, 5.0, "forward")))

        def setpoint_in_flight() -> bool:
            wanted = ctl.wanted_speed
            return (
                ctl.client.in_flight_opcode == ftms.OpCode.SET_TARGET_SPEED
                and wanted is not None
                and wanted > ctl.commanded_kmh  # more setpoints queued behind it
                and sim.truth().speed_kmh > 1.0
            )

        assert await wait_for(setpoint_in_flight, 30, step_s=0.001)
        received_before = len(sim.wire_log)
        ctl.estop("test: pre-emption")
        assert await wait_for(lambda: len(sim.wire_log) > received_before, 1, step_s=0.001)
        after = sim.wire_log[received_before:]
        assert after[0][1] == ftms.CONTROL_POINT and after[0][2] == STOP, after[:3]
        await wait_for(lambda: sim.truth().speed_kmh == 0.0, 15)
        moved = [w for w in sim.wire_log[received_before:] if is_motion_write(sim.profile, *w[1:])]
        assert not moved

    # kinetic-rx2 acknowledges slowly (150 ms), so an outstanding ack is easy to catch.
    with_sim(scenario, profile="kinetic-rx2")


def test_stop_now_bytes_leave_before_the_call_returns() -> None:
    """The stop frame is handed to the link inside ``stop_now`` (no task, no await)."""

    async def scenario(ctl: Controller, sim: Any) -> None:
        sent: list[bytes] = []
        assert isinstance(ctl.transport, FramedTransport)
        stream = ctl.transport.stream
        assert stream is not None
        original = stream.write

        def spy(data: bytes) -> None:
            sent.append(bytes(data))
            original(data)

        stream.write = spy
        ctl.client.stop_now()
        assert len(sent) == 1  # before any await
        stream.write = original

    with_sim(scenario)


@pytest.mark.parametrize("profile", ["kinetic-rx2", "treadctl-reference"])
def test_retry_of_a_setpoint_never_follows_a_stop_queued_behind_it(profile: str) -> None:
    """Soak finding (8 h, seed 1, soak-4): a SetTargetSpeed whose answer was lost to line
    noise timed out; the lock was free between its sends, so the controlled Stop queued
    behind it went out first, and the retry reached a kinetic-rx2 after that Stop
    ("speed before Start": operation_failed -> command-rejected trip). The Stop supersedes
    the setpoint: the retry must not be sent at all."""

    async def main() -> None:
        prof = load_profile(profile)
        transport = SimTransport(prof, seed=3)
        client = FTMSClient(transport, prof, LoopClock())
        await client.connect()
        sim = transport.sim
        try:
            await client.request_control()
            if prof.control.requires_start_before_speed:
                await client.command(ftms.StartOrResume())
                await client.command(ftms.SetTargetSpeed(2.0))
            else:
                await client.command(ftms.SetTargetSpeed(2.0))
                await client.command(ftms.StartOrResume())
            # Line noise eats the answer to the next setpoint (once).
            deliver = client.on_notification  # the handler connect() installed
            lost: list[bytes] = []

            def noisy(uuid: int, value: bytes) -> None:
                if uuid == ftms.CONTROL_POINT and value[:2] == b"\x80\x02" and not lost:
                    lost.append(value)
                    return
                deliver(uuid, value)

            transport.set_notify_handler(noisy)
            setpoint = asyncio.create_task(client.command(ftms.SetTargetSpeed(3.0)))
            n = len(sim.wire_log)
            assert await wait_for(lambda: len(sim.wire_log) > n, 1, step_s=0.001)
            stop = asyncio.create_task(client.command(ftms.StopOrPause(pause=False)))
            with pytest.raises(Preempted):
                await setpoint
            await stop
            assert lost  # the answer really was lost, so the setpoint was due for a retry
            await asyncio.sleep(2 * prof.control.ack_timeout_ms / 1000)
            i_stop = next(i for i, w in enumerate(sim.wire_log) if w[2] == STOP and i >= n)
            moved = [w for w in sim.wire_log[i_stop:] if is_motion_write(sim.profile, *w[1:])]
            assert not moved
        finally:
            await client.close()
            await transport.close()

    run_virtual(main)
