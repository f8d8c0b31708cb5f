"""Stop pre-emption: with a setpoint waiting for its ack and more queued, the stop is the
next frame that reaches the (simulated) firmware, and nothing that moves follows it."""

from __future__ import annotations

from typing import Any

from treadctl import ftms
from treadctl.control.controller import Controller

from harness import is_motion_write, program, wait_for, with_sim

STOP = ftms.encode_control_point(ftms.StopOrPause(pause=False))


def test_stop_is_next_on_the_wire_while_an_ack_is_outstanding() -> None:
    async def scenario(ctl: Controller, sim: Any) -> None:
        ctl.start(program((60, 5.0, "forward")))

        def setpoint_in_flight() -> bool:
            inflight = ctl.client._inflight
            return (
                inflight is not None
                and inflight[0] == ftms.OpCode.SET_TARGET_SPEED
                and ctl._want_speed is not None
                and ctl._want_speed > ctl.commanded_kmh  # more setpoints queued behind it
                and sim.truth().speed_kmh > 1.0
            )

        assert await wait_for(setpoint_in_flight, 30, step_s=0.001)
        received_before = len(sim.wire_log)
        ctl.estop("test: pre-emption")
        assert await wait_for(lambda: len(sim.wire_log) > received_before, 1, step_s=0.001)
        after = sim.wire_log[received_before:]
        assert after[0][1] == ftms.CONTROL_POINT and after[0][2] == STOP, after[:3]
        await wait_for(lambda: sim.truth().speed_kmh == 0.0, 15)
        assert not [w for w in sim.wire_log[received_before:] if is_motion_write(w[1], w[2])]

    # kinetic-rx2 acknowledges slowly (150 ms), so an outstanding ack is easy to catch.
    with_sim(scenario, profile="kinetic-rx2")


def test_stop_now_bytes_leave_before_the_call_returns() -> None:
    """The stop frame is handed to the link inside ``stop_now`` (no task, no await)."""

    async def scenario(ctl: Controller, sim: Any) -> None:
        sent: list[bytes] = []
        stream = ctl.transport._stream
        original = stream.write

        def spy(data: bytes) -> None:
            sent.append(bytes(data))
            original(data)

        stream.write = spy
        ctl.client.stop_now()
        assert len(sent) == 1  # before any await
        stream.write = original

    with_sim(scenario)
