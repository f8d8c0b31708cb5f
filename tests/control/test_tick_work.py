"""What the loop's tick and a Treadmill Data frame do, and in which order (the work cut for
CPU at 50 Hz must not cut what safety needs):

* the heart-rate supervisor ticks at most every HR_TICK_S (every tick up to 10 Hz, every
  5th at 50 Hz), while the loop's own timer interlocks and ramps run every tick;
* a frame that trips puts its Stop on the wire before anything else is done with it (the
  snapshot, the recorder, the listeners), and the estop snapshot still shows that frame.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from typing import Any

import pytest

from treadctl import ftms
from treadctl.clock import run_virtual
from treadctl.control.controller import Controller, State
from treadctl.control.heart import HR_TICK_S
from treadctl.limits import effective_limits
from treadctl.profiles import load_profile
from treadctl.transport.framed import FramedTransport
from treadctl.transport.framing import Frame, FrameDecoder, FrameType, encode_frame
from treadctl.transport.stream import memory_pipe

from harness import program, wait_for, with_sim

PROFILE = load_profile("treadctl-reference")


@pytest.mark.parametrize(("tick_hz", "per_s"), [(50.0, 10), (20.0, 10), (10.0, 10), (2.0, 2)])
def test_the_hr_supervisor_ticks_at_most_every_hr_tick_s(tick_hz: float, per_s: int) -> None:
    async def scenario(ctl: Controller, sim: Any) -> None:
        task = ctl.start(program((60, 4.0, "forward")))
        assert await wait_for(lambda: abs(sim.truth().speed_kmh - 4.0) < 0.05, 30)
        sup = ctl.hr_supervisor
        hr_ticks: list[float] = []
        loop_ticks: list[float] = []
        original = sup.tick

        def counting(now: float, *args: Any) -> Any:
            hr_ticks.append(now)
            return original(now, *args)

        sup.tick = counting  # type: ignore[method-assign]
        ctl.tick_listeners.append(loop_ticks.append)
        await asyncio.sleep(10.0)
        assert len(loop_ticks) == pytest.approx(10 * tick_hz, abs=1)
        assert len(hr_ticks) == pytest.approx(10 * per_s, abs=1)
        gaps = [b - a for a, b in itertools.pairwise(hr_ticks)]
        assert max(gaps) <= max(HR_TICK_S, 1 / tick_hz) + 1e-6
        await ctl.stop()
        await task

    with_sim(scenario, tick_hz=tick_hz)


def test_a_tripping_frame_puts_the_stop_out_before_anything_else() -> None:
    stop = ftms.encode_control_point(ftms.StopOrPause(pause=False))

    async def main() -> None:
        host, device = memory_pipe()

        async def ready() -> Any:
            return host

        transport = FramedTransport(ready, "test")
        ctl = Controller(transport, PROFILE)
        await transport.connect()
        transport.set_notify_handler(ctl.client.on_notification)
        ctl.arm_without_session(effective_limits(PROFILE))
        ctl.machine.reset(session_ending=False, speed_kmh=None, telemetry_age_s=math.inf)
        ctl.commanded_kmh = 5.0
        ctl.machine.arm()
        stream = transport.stream
        assert stream is not None
        written: list[bytes] = []
        original = stream.write

        def spy(data: bytes) -> None:
            written.append(data)
            original(data)

        stream.write = spy  # type: ignore[method-assign]

        def stops_written() -> int:
            frames = [f for chunk in written for f in FrameDecoder().feed(chunk)]
            return sum(f.type is FrameType.WRITE and f.value == stop for f in frames)

        seen: list[tuple[str, int, float]] = []
        ctl.telemetry_listeners.append(
            lambda s: seen.append(("telemetry", stops_written(), s.speed_kmh))
        )
        ctl.state_listeners.append(
            lambda s: seen.append((s.state.value, stops_written(), s.speed_kmh))
        )
        fast = ftms.encode_treadmill_data(ftms.TreadmillData(speed_kmh=9.0))
        device.write(encode_frame(Frame(FrameType.NOTIFY, ftms.TREADMILL_DATA, fast)))
        assert await wait_for(lambda: bool(seen) and seen[-1][0] == "telemetry", 1.0)
        assert ctl.machine.state is State.ESTOPPED
        # Every listener ran with the Stop already on the wire, and the estop's picture is
        # the frame that tripped.
        assert seen and all(n == 1 for _, n, _ in seen), seen
        assert (State.ESTOPPED.value, 1, 9.0) in seen, seen
        if ctl.escalation_task is not None:
            ctl.escalation_task.cancel()
        await ctl.close()

    run_virtual(main)


def test_a_frame_before_the_session_task_runs_counts_from_this_session() -> None:
    """Soak finding (8 h, seed 1, soak-3): a session's first sample had t_s 38.73, the
    previous session's clock, because a Treadmill Data frame arrived between start() and
    the session task's first step. The time base is now set by start() itself."""

    async def scenario(ctl: Controller, sim: Any) -> None:
        task = ctl.start(program((6, 3.0, "forward")))
        await task
        assert await ctl.wait_stopped(20)
        await asyncio.sleep(5.0)
        samples: list[float] = []
        ctl.telemetry_listeners.append(lambda s: samples.append(s.elapsed_s))
        task = ctl.start(program((3, 3.0, "forward")))
        frame = ftms.encode_treadmill_data(ftms.TreadmillData(speed_kmh=0.0))
        ctl.client.on_notification(ftms.TREADMILL_DATA, frame)  # before the task's first step
        assert samples == [0.0]
        await task
        assert all(b >= a for a, b in itertools.pairwise(samples)), samples

    with_sim(scenario)
