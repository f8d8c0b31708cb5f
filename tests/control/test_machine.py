"""The safety state machine alone (no I/O, no clock): every (state, event) pair, the latch,
the one reset rule, typed failures, and docs/safety.md's interlock table against the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from treadctl import ftms
from treadctl.control.machine import (
    FAILURE_INTERLOCK,
    INTERLOCK_INPUT,
    ControlError,
    Event,
    Failure,
    IllegalTransition,
    SafetyMachine,
    State,
)
from treadctl.control.safety import Interlock, SafetyConfig
from treadctl.types import Direction

from harness import reading

DOCS = Path(__file__).resolve().parents[2] / "docs" / "safety.md"

# Written out by hand (not read from TRANSITIONS): what each event does in each state.
# "!" is an illegal event there (IllegalTransition).
_EVENTS = ["start", "belt-starting", "running", "stopping", "paused", "ended", "trip",
           "link-lost", "link-up", "reset"]
EXPECTED = """
idle         starting ! ! ! ! idle estopped disconnected idle idle
starting     ! starting running stopping ! idle estopped disconnected idle !
running      ! starting running stopping ! idle estopped disconnected idle !
stopping     ! starting running stopping paused idle estopped disconnected idle !
paused       ! starting ! stopping ! idle estopped disconnected idle !
estopped     ! estopped estopped estopped estopped estopped estopped disconnected estopped idle
fault        ! fault fault fault fault fault fault disconnected fault idle
disconnected ! disc disc disc disc disc disc disc idle disc
"""


_SHORT = {"disc": "disconnected"}


def _in(state: State) -> SafetyMachine:
    m = SafetyMachine()
    path = {
        State.IDLE: [],
        State.STARTING: [Event.START],
        State.RUNNING: [Event.START, Event.RUNNING],
        State.STOPPING: [Event.START, Event.RUNNING, Event.STOPPING],
        State.PAUSED: [Event.START, Event.RUNNING, Event.STOPPING, Event.PAUSED],
    }
    if state in path:
        for e in path[state]:
            m.session(e)
    elif state is State.ESTOPPED:
        m.estop(Interlock.REMOTE_ESTOP, "operator")
    elif state is State.FAULT:
        m.error("boom")
    elif state is State.DISCONNECTED:
        m.link_lost("cable")
    assert m.state is state
    return m


def _apply(m: SafetyMachine, event: Event) -> State:
    if event is Event.TRIP:
        return m.estop(Interlock.GYM_ESTOP, "all").state
    if event is Event.LINK_LOST:
        return m.link_lost("gone").state
    if event is Event.LINK_UP:
        return m.link_up().state
    if event is Event.RESET:
        m.reset(session_ending=False, speed_kmh=0.0, telemetry_age_s=0.0)
        return m.state
    return m.session(event)


def _cases() -> list[tuple[State, Event, str]]:
    out = []
    for line in EXPECTED.strip().splitlines():
        state, *cells = line.split()
        assert len(cells) == len(_EVENTS), line
        for event, cell in zip(_EVENTS, cells, strict=True):
            out.append((State(state), Event(event), _SHORT.get(cell, cell)))
    return out


def test_the_expected_table_covers_every_state_and_event() -> None:
    pairs = {(s, e) for s, e, _ in _cases()}
    assert pairs == {(s, e) for s in State for e in Event}


@pytest.mark.parametrize(("state", "event", "expected"), _cases(),
                         ids=[f"{s.value}-{e.value}" for s, e, _ in _cases()])
def test_every_state_event_pair(state: State, event: Event, expected: str) -> None:
    m = _in(state)
    if expected == "!":
        with pytest.raises(IllegalTransition):
            _apply(m, event)
        assert m.state is state  # an illegal event changes nothing
    else:
        assert _apply(m, event) is State(expected)


# broker_unreachable in each state (by hand): the state after it, and whether broker-lost
# tripped. It trips only while a session drives the belt (paused too).
BROKER_UNREACHABLE = {
    State.IDLE: (State.IDLE, False),
    State.STARTING: (State.ESTOPPED, True),
    State.RUNNING: (State.ESTOPPED, True),
    State.STOPPING: (State.ESTOPPED, True),
    State.PAUSED: (State.ESTOPPED, True),
    State.ESTOPPED: (State.ESTOPPED, False),
    State.FAULT: (State.FAULT, False),
    State.DISCONNECTED: (State.DISCONNECTED, False),
}


@pytest.mark.parametrize("state", list(State))
def test_broker_unreachable_trips_only_while_a_session_drives_the_belt(state: State) -> None:
    m = _in(state)
    held = m.trip
    after, trips = BROKER_UNREACHABLE[state]
    step = m.broker_unreachable("broker gone for 10 s")
    assert step.state is after is m.state
    assert step.first is trips
    if trips:
        assert step.trip is not None and step.trip.interlock is Interlock.BROKER_LOST
        assert m.latched
    else:
        assert step.trip is None and m.trip == held


@pytest.mark.parametrize("interlock", sorted(set(Interlock) - {Interlock.REMOTE_ESTOP,
                                                               Interlock.GYM_ESTOP}))
def test_estop_takes_only_the_operator_estops(interlock: Interlock) -> None:
    m = _in(State.RUNNING)
    with pytest.raises(ValueError, match="not an operator e-stop"):
        m.estop(interlock, "x")
    assert not m.latched and m.state is State.RUNNING


def test_latch_is_cleared_only_by_reset_and_survives_a_new_link() -> None:
    m = SafetyMachine()
    step = m.estop(Interlock.REMOTE_ESTOP, "operator")
    assert step.first and step.trip is not None and m.motion_blocked
    again = m.estop(Interlock.GYM_ESTOP, "all")
    assert again.trip is not None and not again.first  # Stop again, first reason kept
    assert m.trip is not None and m.trip.interlock is Interlock.REMOTE_ESTOP
    m.link_lost("cable")
    assert m.state is State.DISCONNECTED and m.latched
    up = m.link_up()
    assert up.trip is not None and m.state is State.ESTOPPED and m.motion_blocked
    for e in (Event.BELT_STARTING, Event.RUNNING, Event.ENDED):
        m.session(e)
        assert m.latched
    cleared = m.reset(session_ending=False, speed_kmh=0.0, telemetry_age_s=0.1)
    assert cleared is not None and cleared.interlock is Interlock.REMOTE_ESTOP
    assert not m.latched and not m.motion_blocked and m.state is State.IDLE


def test_a_link_lost_latch_ends_with_the_link() -> None:
    m = SafetyMachine()
    m.link_lost("cable")
    assert m.latched
    assert m.link_up().trip is None and not m.latched and m.state is State.IDLE


def test_an_estop_while_disconnected_latches_and_comes_back_with_the_link() -> None:
    m = SafetyMachine()
    m.link_lost("cable")
    m.link_up()
    m.link_dropped()  # the lane closed the link
    step = m.estop(Interlock.GYM_ESTOP, "gym-wide e-stop while the link was down")
    assert step.first and m.state is State.DISCONNECTED
    assert m.link_up().trip is not None and m.state is State.ESTOPPED


def test_an_estop_while_disconnected_after_a_link_loss_outlives_the_link_loss() -> None:
    # The daemon's order: the link is lost (link-lost latch), the lane closes it, an e-stop
    # arrives while it is down. The link-lost latch ends with the old link; the e-stop must
    # not end with it (it was kept behind the link loss's "first reason" and forgotten).
    m = SafetyMachine()
    m.link_lost("cable")
    m.link_dropped()
    step = m.estop(Interlock.REMOTE_ESTOP, "e-stop (MQTT) while the link was down")
    assert step.first and m.state is State.DISCONNECTED
    assert m.trip is not None and m.trip.interlock is Interlock.REMOTE_ESTOP
    up = m.link_up()
    assert up.trip is not None and up.trip.interlock is Interlock.REMOTE_ESTOP
    assert m.state is State.ESTOPPED and m.latched
    # Any other latch keeps its first reason against a later e-stop.
    m2 = SafetyMachine()
    m2.estop(Interlock.REMOTE_ESTOP, "first")
    assert not m2.estop(Interlock.GYM_ESTOP, "second").first
    assert m2.trip is not None and m2.trip.detail == "first"
    # A command failure behind a link-lost latch does not replace it (the link loss ends
    # with its link: a plain link loss comes back idle).
    m3 = SafetyMachine()
    m3.link_lost("cable")
    m3.command_failed(Failure.TIMEOUT, "no reply")
    assert m3.link_up().trip is None and m3.state is State.IDLE


@pytest.mark.parametrize(("ending", "speed", "age", "refused"), [
    (True, 0.0, 0.0, "session still ending"),
    (False, 3.0, 0.2, "belt still moving"),
    (False, 3.0, 5.0, None),  # stale telemetry: the speed is not known to be moving
    (False, None, 0.0, None),  # no speed at all (link down)
    (False, 0.0, 0.0, None),
])
def test_one_reset_rule(ending: bool, speed: float | None, age: float,
                        refused: str | None) -> None:
    m = SafetyMachine()
    m.estop(Interlock.REMOTE_ESTOP, "x")
    if refused:
        with pytest.raises(ControlError, match=refused):
            m.reset(session_ending=ending, speed_kmh=speed, telemetry_age_s=age)
        assert m.latched and m.state is State.ESTOPPED
    else:
        m.reset(session_ending=ending, speed_kmh=speed, telemetry_age_s=age)
        assert not m.latched


def test_failures_are_typed_and_standstill_is_not_a_rejected_command() -> None:
    assert FAILURE_INTERLOCK[Failure.NOT_STOPPED] is Interlock.TRACKING_ERROR
    assert FAILURE_INTERLOCK[Failure.TIMEOUT] is Interlock.COMMAND_TIMEOUT
    assert FAILURE_INTERLOCK[Failure.DIRECTION] is Interlock.DIRECTION_MISMATCH
    for harmless in (Failure.BLOCKED, Failure.PREEMPTED):
        m = _in(State.RUNNING)
        assert m.command_failed(harmless, "x").trip is None and not m.latched
    m = _in(State.STOPPING)
    step = m.command_failed(Failure.NOT_STOPPED, "belt did not reach standstill after stop")
    assert step.trip is not None and step.trip.interlock is Interlock.TRACKING_ERROR
    assert m.state is State.ESTOPPED


def test_controller_failure_types_map_to_their_interlocks() -> None:
    from treadctl.control.client import CommandError, CommandTimeout, MotionBlocked, Preempted
    from treadctl.control.controller import DirectionError

    assert CommandTimeout("x").failure is Failure.TIMEOUT
    assert MotionBlocked("x").failure is Failure.BLOCKED
    assert Preempted("x").failure is Failure.PREEMPTED
    assert DirectionError("x").failure is Failure.DIRECTION
    with pytest.raises(TypeError):
        CommandError("x")  # no default: every raise says how the command failed
    assert CommandError("x", failure=Failure.REJECTED).failure is Failure.REJECTED
    assert CommandError("x", failure=Failure.NOT_STOPPED).failure is Failure.NOT_STOPPED


def test_telemetry_interlocks_judge_only_an_armed_machine() -> None:
    m = _in(State.RUNNING)
    assert m.telemetry(reading(9.0)).trip is None  # not armed: no session drives the belt
    m.arm()
    assert m.telemetry(reading(5.5)).trip is None
    step = m.telemetry(reading(9.0))
    assert step.trip is not None and step.trip.interlock is Interlock.OVERSPEED
    assert not m.armed  # a trip disarms


def test_telemetry_direction_tracking_and_heart_rate() -> None:
    m = _in(State.RUNNING)
    m.arm()
    step = m.telemetry(reading(5.0, direction=Direction.REVERSE))
    assert step.trip is not None and step.trip.interlock is Interlock.DIRECTION_MISMATCH
    m = _in(State.RUNNING)
    m.arm()
    cfg = SafetyConfig()
    assert m.telemetry(reading(3.0, now=0.0)).trip is None
    step = m.telemetry(reading(3.0, now=cfg.tracking_time_s))
    assert step.trip is not None and step.trip.interlock is Interlock.TRACKING_ERROR
    m = _in(State.RUNNING)
    m.arm()
    assert m.telemetry(reading(5.0, hr=180, now=0.0)).trip is None
    step = m.telemetry(reading(5.0, hr=180, now=cfg.hr_hold_s))
    assert step.trip is not None and step.trip.interlock is Interlock.HEART_RATE


def test_the_heart_rate_hold_starts_over_with_each_arming() -> None:
    hold = SafetyConfig().hr_hold_s
    m = SafetyMachine()
    m.arm()
    # Session 1 ends with the heart above the ceiling, short of the hold.
    assert m.heart_rate(180, 150, 10.0).trip is None
    assert m.heart_rate(180, 150, 10.0 + hold / 2).trip is None
    m.disarm()
    # Session 2: its first sample above the ceiling starts a new hold.
    m.arm()
    assert m.heart_rate(180, 150, 100.0).trip is None
    assert m.telemetry(reading(5.0, hr=180, now=100.0 + hold / 2)).trip is None
    # Re-arming within the session (a segment's start) keeps the hold running.
    m.arm()
    step = m.heart_rate(180, 150, 100.0 + hold)
    assert step.trip is not None and step.trip.interlock is Interlock.HEART_RATE
    # Arming after a trip and reset (not disarmed in between) starts over too.
    m.reset(session_ending=False, speed_kmh=0.0, telemetry_age_s=0.0)
    m.arm()
    assert m.heart_rate(180, 150, 200.0).trip is None


def test_status_and_tick_interlocks() -> None:
    m = _in(State.IDLE)
    step = m.status(ftms.StoppedBySafetyKey(), belt_may_move=False, stop_is_ours=False)
    assert step.trip is not None and step.trip.interlock is Interlock.SAFETY_KEY
    m = _in(State.RUNNING)
    assert m.status(ftms.ControlPermissionLost(), belt_may_move=False,
                    stop_is_ours=False).trip is None
    step = m.status(ftms.ControlPermissionLost(), belt_may_move=True, stop_is_ours=False)
    assert step.trip is not None and step.trip.interlock is Interlock.CONTROL_LOST
    m = _in(State.RUNNING)
    m.arm()
    user = ftms.StoppedOrPausedByUser(paused=False)
    assert m.status(user, belt_may_move=True, stop_is_ours=True).trip is None
    step = m.status(user, belt_may_move=True, stop_is_ours=False)
    assert step.trip is not None and step.trip.interlock is Interlock.MACHINE_STOP
    m = _in(State.RUNNING)
    m.arm()
    assert m.tick(1.0, last_rx=0.5, last_heartbeat=0.0, heartbeat_s=None).trip is None
    step = m.tick(2.0, last_rx=0.5, last_heartbeat=2.0, heartbeat_s=None)
    assert step.trip is not None and step.trip.interlock is Interlock.TELEMETRY_SILENCE
    m = _in(State.RUNNING)
    m.arm()
    step = m.tick(10.0, last_rx=10.0, last_heartbeat=0.0, heartbeat_s=3.0)
    assert step.trip is not None and step.trip.interlock is Interlock.HEARTBEAT_MISSED


def test_command_guards() -> None:
    m = SafetyMachine()
    m.check_start(session_active=False, speed_kmh=0.0)
    with pytest.raises(ControlError, match="still moving"):
        m.check_start(session_active=False, speed_kmh=0.5)
    with pytest.raises(ControlError, match="cannot pause while idle"):
        m.check_pause()
    with pytest.raises(ControlError, match="cannot set while idle"):
        m.check_set()
    m.estop(Interlock.REMOTE_ESTOP, "x")
    with pytest.raises(ControlError, match="send reset first"):
        m.check_start(session_active=False, speed_kmh=0.0)
    with pytest.raises(ControlError, match="latched"):
        m.check_resume(pause_requested=True)


def _doc_table(heading: str) -> list[list[str]]:
    text = DOCS.read_text()
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]
    return [[c.strip().strip("`") for c in r.strip("|").split("|")] for r in rows]


def test_docs_interlock_table_matches_the_machine() -> None:
    rows = _doc_table("## Where each interlock trips")
    documented = {r[0]: r[1] for r in rows}
    assert set(documented) == {i.value for i in Interlock}, "docs/safety.md misses or adds one"
    for interlock, where in INTERLOCK_INPUT.items():
        inputs = {w.strip() for w in documented[interlock.value].replace("`", "").split(",")}
        assert inputs == {w.strip() for w in where.split(",")}, interlock.value


def test_docs_standstill_matches_safety_config() -> None:
    rows = _doc_table("## Default thresholds")
    standstill = next(r for r in rows if r[0] == "standstill")
    value = float(re.findall(r"[\d.]+", standstill[1])[0])
    assert value == SafetyConfig().standstill_kmh
    assert "0.05" not in DOCS.read_text(), "docs/safety.md still says standstill is 0.05 km/h"
