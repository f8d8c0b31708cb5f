"""Every (interlock, input) pair that ``INTERLOCK_INPUT`` (and so docs/safety.md, "Where each
interlock trips") claims is driven here by a stimulus through that input of the machine,
and the trip it returns is checked: the table cannot claim an input that does not decide
the interlock, and an input cannot be listed without a stimulus here. The danger kinds of
native drivers are checked against their own explicit table."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from treadctl import ftms
from treadctl.control.machine import (
    DANGER_INTERLOCK,
    INTERLOCK_INPUT,
    Event,
    Failure,
    SafetyMachine,
    Step,
)
from treadctl.control.safety import Interlock, SafetyConfig
from treadctl.types import Direction

from harness import reading

CFG = SafetyConfig()
I = Interlock  # noqa: E741 (short table keys)


def _running() -> SafetyMachine:
    m = SafetyMachine(CFG)
    m.session(Event.START)
    m.session(Event.RUNNING)
    m.arm()
    return m


def _until_trip(m: SafetyMachine, feed: Callable[[float], Step], span_s: float) -> Step:
    """Feed the input every 0.1 s of machine time until it trips (or ``span_s`` passes)."""
    step = feed(0.0)
    t = 0.0
    while step.trip is None and t < span_s:
        t = round(t + 0.1, 6)
        step = feed(t)
    return step


def _status(status: ftms.MachineStatus, *, belt_may_move: bool = True) -> Step:
    return _running().status(status, belt_may_move=belt_may_move, stop_is_ours=False)


def _danger(interlock: Interlock) -> Step:
    kind = next(k for k, v in DANGER_INTERLOCK.items() if v is interlock)
    return _running().danger(kind, "driver latched")


def _failed(failure: Failure) -> Step:
    return _running().command_failed(failure, "procedure failed")


def _telemetry_tracking() -> Step:
    m = _running()
    return _until_trip(m, lambda t: m.telemetry(reading(3.0, now=t)), CFG.tracking_time_s + 1)


def _telemetry_hr() -> Step:
    m = _running()
    return _until_trip(m, lambda t: m.telemetry(reading(5.0, hr=180, now=t)), CFG.hr_hold_s + 1)


def _heart_rate() -> Step:
    m = _running()
    return _until_trip(m, lambda t: m.heart_rate(180, 150, t), CFG.hr_hold_s + 1)


#: (interlock, input) -> a stimulus through that input alone.
STIMULI: dict[tuple[Interlock, str], Callable[[], Step]] = {
    (I.REMOTE_ESTOP, "estop"): lambda: _running().estop(I.REMOTE_ESTOP, "operator"),
    (I.GYM_ESTOP, "estop"): lambda: _running().estop(I.GYM_ESTOP, "fire alarm"),
    (I.BROKER_LOST, "broker_unreachable"): lambda: _running().broker_unreachable("broker gone"),
    (I.SAFETY_KEY, "status"): lambda: _status(ftms.StoppedBySafetyKey()),
    (I.SAFETY_KEY, "danger"): lambda: _danger(I.SAFETY_KEY),
    (I.MACHINE_STOP, "status"): lambda: _status(ftms.StoppedOrPausedByUser(paused=False)),
    (I.MACHINE_STOP, "danger"): lambda: _danger(I.MACHINE_STOP),
    (I.MACHINE_FAULT, "danger"): lambda: _danger(I.MACHINE_FAULT),
    (I.CONTROL_LOST, "status"): lambda: _status(ftms.ControlPermissionLost()),
    (I.LINK_LOST, "link_lost"): lambda: _running().link_lost("cable"),
    (I.TELEMETRY_SILENCE, "tick"): lambda: _running().tick(
        10.0, last_rx=0.0, last_heartbeat=10.0, heartbeat_s=None),
    (I.HEARTBEAT_MISSED, "tick"): lambda: _running().tick(
        10.0, last_rx=10.0, last_heartbeat=0.0, heartbeat_s=3.0),
    (I.OVERSPEED, "telemetry"): lambda: _running().telemetry(reading(9.0)),
    (I.OVERSPEED, "danger"): lambda: _danger(I.OVERSPEED),
    (I.TRACKING_ERROR, "telemetry"): _telemetry_tracking,
    (I.TRACKING_ERROR, "command_failed"): lambda: _failed(Failure.NOT_STOPPED),
    (I.HEART_RATE, "telemetry"): _telemetry_hr,
    (I.HEART_RATE, "heart_rate"): _heart_rate,
    (I.DIRECTION_MISMATCH, "telemetry"): lambda: _running().telemetry(
        reading(5.0, direction=Direction.REVERSE)),
    (I.DIRECTION_MISMATCH, "direction"): lambda: _running().direction(
        Direction.REVERSE, Direction.FORWARD, 3.0, fresh=True),
    (I.DIRECTION_MISMATCH, "command_failed"): lambda: _failed(Failure.DIRECTION),
    (I.DIRECTION_MISMATCH, "danger"): lambda: _danger(I.DIRECTION_MISMATCH),
    (I.COMMAND_TIMEOUT, "command_failed"): lambda: _failed(Failure.TIMEOUT),
    (I.COMMAND_TIMEOUT, "danger"): lambda: _danger(I.COMMAND_TIMEOUT),
    (I.COMMAND_REJECTED, "command_failed"): lambda: _failed(Failure.REJECTED),
    (I.COMMAND_REJECTED, "danger"): lambda: _danger(I.COMMAND_REJECTED),
    (I.INTERNAL_ERROR, "error"): lambda: _running().error("boom"),
}


def _claimed() -> set[tuple[Interlock, str]]:
    return {(i, w.strip()) for i, where in INTERLOCK_INPUT.items() for w in where.split(",")}


def test_every_claimed_input_has_a_stimulus_and_no_more() -> None:
    assert set(INTERLOCK_INPUT) == set(Interlock)
    assert set(STIMULI) == _claimed()


@pytest.mark.parametrize(("interlock", "where"), sorted(STIMULI, key=str))
def test_the_input_decides_the_interlock(interlock: Interlock, where: str) -> None:
    step = STIMULI[(interlock, where)]()
    assert step.trip is not None, (interlock, where)
    assert step.trip.interlock is interlock
    assert step.first


def test_danger_kinds_are_their_interlocks() -> None:
    # The drivers' danger kinds (treadctl.drivers.base.Danger.kind), written out.
    assert DANGER_INTERLOCK == {
        "lanyard": I.SAFETY_KEY,
        "machine-stopped": I.MACHINE_STOP,
        "wrong-direction": I.DIRECTION_MISMATCH,
        "overspeed": I.OVERSPEED,
        "nacks": I.COMMAND_REJECTED,
        "no-reply": I.COMMAND_TIMEOUT,
        "comm-fault": I.MACHINE_FAULT,
        "hardware-fault": I.MACHINE_FAULT,
        "cds-disarmed": I.MACHINE_FAULT,
        "watchdog-expired": I.MACHINE_FAULT,
        "belts-differ": I.MACHINE_FAULT,
    }
    step = _running().danger("a-kind-no-driver-has", "new")
    assert step.trip is not None and step.trip.interlock is I.MACHINE_FAULT
