"""Driver behaviour against the in-process personality on virtual time (a memory pipe):
the stop leaves first, dangers latch, values are refused before they are sent, the
machines' watchdogs, forward-only TrackMaster. Judged from the simulator (truth, the bytes
the machine received)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from treadctl.clock import run_virtual
from treadctl.drivers.base import MotionBlocked, NotConfirmed, Preempted, Refused
from treadctl.protocols import trackmaster as tm
from treadctl.protocols import woodway as ww
from treadctl.types import Direction

from helpers import in_process, wait_for


def _rx(machine: Any) -> bytes:
    return b"".join(data for _, data in machine.rx_log)


def test_stop_leaves_first_and_queued_motion_is_dropped() -> None:
    async def main() -> None:
        async with in_process("biodex-rtm400") as (driver, machine):
            await driver.connect()
            await driver.start()
            await driver.set_speed(3.0)
            await wait_for(lambda: machine.truth().speed_kmh > 2.9)
            driver._tasks[-1].cancel()  # type: ignore[attr-defined]  # no poll in between
            in_flight = asyncio.ensure_future(driver.set_speed(4.0))
            await asyncio.sleep(0)  # on the wire, waiting for its echo
            queued = asyncio.ensure_future(driver.set_incline(2.0))
            await asyncio.sleep(0)  # waiting for its turn
            assert driver.wire_log[-1][1] == b"\x82\x30\x32\x35"
            driver.stop_now()  # synchronous: on the wire inside the call, ahead of the queue
            assert driver.wire_log[-1][1] == b"\x81"
            await in_flight  # already sent before the stop: answered normally
            with pytest.raises(Preempted):
                await queued
            await wait_for(lambda: machine.truth().speed_kmh == 0)
            tail = _rx(machine).split(b"\x81")[-1]
            assert b"\x82" not in tail and b"\x83" not in tail  # no motion after the stop
            assert machine.truth().stop_reason == "user"

    run_virtual(main)


def test_repeated_nacks_latch_a_danger_that_only_reset_clears() -> None:
    async def main() -> None:
        async with in_process("biodex-rtm400") as (driver, machine):
            dangers: list[Any] = []
            driver.on_status = dangers.append
            await driver.connect()
            await driver.start()
            await driver.set_speed(3.0)
            machine.execute = lambda msg: machine.nack(0x01)  # type: ignore[method-assign]
            await wait_for(lambda: bool(dangers))
            assert dangers[0].kind == "nacks" and driver.motion_blocked
            assert _rx(machine).endswith(b"\x81") or b"\x81" in _rx(machine)
            with pytest.raises(MotionBlocked):
                await driver.start()
            sent = len(driver.wire_log)
            driver.reset_danger()
            assert len(driver.wire_log) == sent and driver.danger is None

    run_virtual(main)


def test_a_machine_that_stops_answering_latches_no_reply() -> None:
    async def main() -> None:
        async with in_process("trackmaster-tmx428", faults="ignore-commands@3") as (d, m):
            dangers: list[Any] = []
            d.on_status = dangers.append
            await d.connect()
            await d.start()
            await d.set_speed(3.0)
            await wait_for(lambda: bool(dangers))
            assert dangers[0].kind == "no-reply"
            # The stop we sent was ignored too; the machine's own CDS (fed by commands it
            # acts on) stops the belt.
            await wait_for(lambda: m.truth().speed_kmh == 0)
            assert m.truth().stop_reason == "watchdog"

    run_virtual(main)


def test_woodway_clamps_silently_so_the_driver_refuses_before_sending() -> None:
    async def main() -> None:
        async with in_process("woodway-serial") as (driver, machine):
            await driver.connect()
            before = len(driver.wire_log)
            with pytest.raises(Refused):
                await driver.set_speed(25.0)  # above the profile's 18 km/h
            with pytest.raises(Refused):
                await driver.set_speed(-4.0)  # above the 3 km/h reverse cap
            with pytest.raises(Refused):
                await driver.set_incline(40.0)
            assert all(data[0] not in (0xA3, 0xA4) for _, data in driver.wire_log[before:])
            # What the machine itself would do with 29.9 mph: clamp, no error.
            machine.receive(ww.encode_command(ww.SetSpeed(299)))
            assert machine.clamped == 1
            assert machine.sim._target_kmh == pytest.approx(18.0, abs=0.01)

    run_virtual(main)


def test_trackmaster_forward_only_and_always_cds() -> None:
    async def main() -> None:
        async with in_process("trackmaster-tmx428") as (driver, machine):
            await driver.connect()
            with pytest.raises(Refused):
                await driver.set_speed(-2.0)
            with pytest.raises(Refused):
                await driver.set_direction(Direction.REVERSE)
            with pytest.raises(Refused):
                await driver.set_incline(2.3)  # not a half percent
            await driver.start()
            await driver.set_speed(3.0)
            await wait_for(lambda: machine.truth().speed_kmh > 2.9)
            assert machine.watchdog_armed and driver.belt == tm.BELT_RUNNING_CDS
            sent = _rx(machine)
            assert bytes([tm.Code.START_CDS]) in sent
            assert bytes([tm.Code.START_NO_CDS]) not in sent

    run_virtual(main)


def test_trackmaster_started_without_cds_from_the_console_latches() -> None:
    async def main() -> None:
        async with in_process("trackmaster-tmx428") as (driver, machine):
            dangers: list[Any] = []
            driver.on_status = dangers.append
            await driver.connect()
            machine.start()  # like the console START key: CDS disabled (33)
            await wait_for(lambda: bool(dangers))
            assert dangers[0].kind == "cds-disarmed"
            await wait_for(lambda: not machine.truth().running)

    run_virtual(main)


@pytest.mark.parametrize("name", ["biodex-rtm400", "bertec-treadmill"])
def test_machines_without_a_documented_watchdog_keep_running_when_the_host_dies(
    name: str,
) -> None:
    # The hazard docs/protocols.md states: nothing stops these belts but their own keys.
    async def main() -> None:
        async with in_process(name) as (driver, machine):
            await driver.connect()
            await driver.start()
            await driver.set_speed(3.0)
            await asyncio.sleep(20)  # at its setpoint (3.0 km/h as the nearest wire step)
            running = machine.truth().speed_kmh
            assert running == pytest.approx(3.0, abs=0.1)
            for task in driver._tasks:  # type: ignore[attr-defined]
                task.cancel()  # the host goes silent without a stop
            await asyncio.sleep(60)
            assert machine.truth().speed_kmh == pytest.approx(running, abs=0.01)

    run_virtual(main)


def test_woodway_timer_expires_then_bd_latches() -> None:
    async def main() -> None:
        async with in_process("woodway-serial") as (driver, machine):
            dangers: list[Any] = []
            driver.on_status = dangers.append
            await driver.connect()
            await driver.start()
            await driver.set_speed(3.0)
            await wait_for(lambda: machine.truth().speed_kmh > 2.9)
            poller = driver._tasks[-1]  # type: ignore[attr-defined]
            poller.cancel()  # the feed stops
            await wait_for(lambda: machine.truth().speed_kmh == 0, timeout_s=10)
            assert machine.truth().stop_reason == "watchdog"
            with pytest.raises(Exception, match="MASTER_TIMEOUT"):
                await driver.read_direction()
            assert dangers and dangers[0].kind == "watchdog-expired"

    run_virtual(main)


@pytest.mark.parametrize("name", ["biodex-rtm400", "woodway-serial"])
def test_a_direction_the_read_back_does_not_confirm_is_refused(name: str) -> None:
    async def main() -> None:
        async with in_process(name, faults="wrong-direction@0") as (driver, machine):
            await driver.connect()
            with pytest.raises(NotConfirmed):
                await driver.set_direction(Direction.REVERSE)
            assert machine.truth().speed_kmh == 0

    run_virtual(main)


def test_trackmaster_belt_not_moving_yet_after_a0_is_not_a_danger() -> None:
    async def main() -> None:
        async with in_process("trackmaster-tmx428") as (driver, machine):
            dangers: list[Any] = []
            driver.on_status = dangers.append
            await driver.connect()
            answer, execute = machine.answer, machine.execute
            late = {"n": 0}

            def on_command(msg: Any) -> None:
                if msg == tm.Command(tm.Code.START_CDS):
                    late["n"] = 3  # the next belt statuses still read 31: a slow start
                execute(msg)

            def slow_start(status: Any) -> None:
                if status is tm.Status.BELT and late["n"]:
                    late["n"] -= 1
                    machine.reply(tm.BeltStatus(tm.BELT_STOPPED))
                    return
                answer(status)

            machine.answer = slow_start  # type: ignore[method-assign]
            machine.execute = on_command  # type: ignore[method-assign]
            await driver.start()
            await driver.set_speed(3.0)
            await wait_for(lambda: machine.truth().speed_kmh > 2.9)
            assert dangers == [] and driver.belt == tm.BELT_RUNNING_CDS

    run_virtual(main)


@pytest.mark.parametrize("name", ["biodex-rtm400", "woodway-serial", "bertec-treadmill",
                                  "trackmaster-tmx428"])
def test_slowing_down_to_a_lower_setpoint_is_not_an_overspeed(name: str) -> None:
    async def main() -> None:
        async with in_process(name) as (driver, machine):
            dangers: list[Any] = []
            driver.on_status = dangers.append
            await driver.connect()
            await driver.start()
            await driver.set_speed(5.0)
            await wait_for(lambda: machine.truth().speed_kmh > 4.9)
            await driver.set_speed(2.0)  # the belt is above 2.5 km/h for a while
            await wait_for(lambda: machine.truth().speed_kmh < 2.1)
            await driver.set_speed(2.0)
            await asyncio.sleep(2)
            assert dangers == []

    run_virtual(main)


@pytest.mark.parametrize("name", ["biodex-rtm400", "woodway-serial", "trackmaster-tmx428"])
def test_a_setpoint_answered_after_our_stop_is_no_false_machine_stop(name: str) -> None:
    # A speed command on the wire when our stop goes out is answered after the stop: the
    # belt then stops because of OUR stop, which must not read as "stopped on its own"
    # (a false machine-stop e-stop; seen through the controller when a pause or a user's
    # stop met a ramp step in flight).
    async def main() -> None:
        async with in_process(name) as (driver, machine):
            dangers: list[Any] = []
            driver.on_status = dangers.append
            await driver.connect()
            await driver.start()
            await driver.set_speed(3.0)
            await wait_for(lambda: machine.truth().speed_kmh > 2.9)
            in_flight = asyncio.ensure_future(driver.set_speed(3.5))
            await asyncio.sleep(0)  # on the wire, waiting for its reply
            driver.stop_now()
            await in_flight  # sent before the stop: answered normally
            await wait_for(lambda: machine.truth().speed_kmh == 0)
            await asyncio.sleep(2.0)  # several polls at standstill
            assert dangers == [], dangers
            assert machine.truth().stop_reason == "user"

    run_virtual(main)
