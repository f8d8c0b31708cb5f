"""The fault matrix at the driver level, on every native profile: the simulator's faults
injected mid-run (backward where the machine can), the outcome judged from the
simulator's physics. In-process on virtual time; the same drivers and personalities run
over real ptys/TCP in test_sessions.py."""

from __future__ import annotations

from typing import Any

import pytest

from treadctl.clock import run_virtual
from treadctl.profiles import load_profile
from treadctl.types import Direction

from helpers import in_process, wait_for

PROFILES = ["biodex-rtm400", "woodway-serial", "bertec-treadmill", "trackmaster-tmx428"]
WATCHDOG = {"woodway-serial", "trackmaster-tmx428"}
AT_S = 12.0


async def _run(name: str, fault: str) -> tuple[Any, Any, list[Any]]:
    profile = load_profile(name)
    async with in_process(name, faults=f"{fault}@{AT_S}") as (driver, machine):
        dangers: list[Any] = []
        driver.on_status = dangers.append
        await driver.connect()
        speed = 2.0
        if profile.supports_reverse:
            await driver.set_direction(Direction.REVERSE)
            speed = -2.0
        await driver.start()
        await driver.set_speed(speed)
        await wait_for(lambda: abs(machine.truth().speed_kmh - speed) < 0.1)
        assert machine.sim.now_s() < AT_S  # running before the fault
        await wait_for(lambda: bool(dangers) or machine.sim.now_s() > AT_S + 20, 60)
        if dangers:
            await wait_for(lambda: machine.truth().speed_kmh == 0 or
                           machine.sim.now_s() > AT_S + 30, 60)
        return driver, machine, dangers


# Bertec x ignore-commands is not in the matrix: with no acks, a panel that ignores an
# unchanged setpoint is not detectable (docs/protocols.md); a test below pins that.
CASES = [(n, f) for f in ("safety-key", "runaway", "link-drop", "ignore-commands")
         for n in PROFILES if (n, f) != ("bertec-treadmill", "ignore-commands")]


@pytest.mark.parametrize(("name", "fault"), CASES)
def test_fault_is_latched_and_the_belt_stops(name: str, fault: str) -> None:

    async def main() -> None:
        driver, machine, dangers = await _run(name, fault)
        truth = machine.truth()
        assert dangers, f"{fault} on {name}: no danger latched"
        kind = dangers[0].kind
        expected = {
            "safety-key": {"lanyard", "machine-stopped"},
            "runaway": {"overspeed"},
            "link-drop": {"no-reply"},
            "ignore-commands": {"no-reply"},
        }[fault]
        assert kind in expected, (fault, name, dangers)
        if fault == "link-drop" and name not in WATCHDOG:
            # Nothing reaches the machine and it has no watchdog: the belt keeps running
            # (docs/protocols.md). The driver has latched and blocks motion.
            assert abs(truth.speed_kmh) > 1.5 and driver.motion_blocked
            return
        if fault == "ignore-commands" and name not in WATCHDOG:
            assert abs(truth.speed_kmh) > 1.5 and driver.motion_blocked  # same: no watchdog
            return
        assert truth.speed_kmh == 0, (fault, name, truth)
        if fault in ("link-drop", "ignore-commands"):
            assert truth.stop_reason == "watchdog"  # the machine's own watchdog did it

    run_virtual(main)


@pytest.mark.parametrize("name", PROFILES)
def test_garbage_on_the_line_never_leaves_a_moving_belt_unwatched(name: str) -> None:
    async def main() -> None:
        driver, machine, dangers = await _run(name, "garbage")
        truth = machine.truth()
        if dangers:  # repeated refusals may latch: then the belt is stopped
            assert truth.speed_kmh == 0 and driver.motion_blocked
        else:  # or the session rode it out, still at speed and fed
            assert abs(truth.speed_kmh) == pytest.approx(2.0, abs=0.1)
            assert truth.stop_reason is None

    run_virtual(main)


def test_bertec_ignoring_an_unchanged_setpoint_is_not_detectable() -> None:
    # Pins the documented gap: the belts keep the speed they were given, no danger.
    async def main() -> None:
        _, machine, dangers = await _run("bertec-treadmill", "ignore-commands")
        assert dangers == [] and machine.truth().speed_kmh == pytest.approx(-2.0, abs=0.1)

    run_virtual(main)


def test_bertec_belts_running_the_other_way_latch_wrong_direction() -> None:
    async def main() -> None:
        async with in_process("bertec-treadmill", faults="wrong-direction@0") as (d, m):
            dangers: list[Any] = []
            d.on_status = dangers.append
            await d.connect()
            await d.set_direction(Direction.REVERSE)  # no read-back at standstill on Bertec
            await d.start()
            await d.set_speed(-2.0)
            await wait_for(lambda: bool(dangers))
            assert dangers[0].kind == "wrong-direction"
            await wait_for(lambda: m.truth().speed_kmh == 0)
            assert m.truth().speed_kmh == 0

    run_virtual(main)
