"""The controller (``treadctl.control.controller.Controller``) driving each native profile,
over a real pty (serial) or TCP socket to the simulator personality in ANOTHER process
(``treadctl sim --profile NAME``), judged from the simulator's physics: its event lines
carry ``sim.truth()`` at every event (start, stop, direction, standstill, faults).

* reverse programs run to their end on biodex-rtm400, woodway-serial, bertec-treadmill:
  the direction changes only at standstill, the belt really runs backward, and stands at
  the end; trackmaster-tmx428 runs a forward program with its Communication Disconnect
  Stop armed whenever the belt moves, and refuses a reverse program before anything moves;
* the fault matrix: every fault the personalities model, on every native profile -> the
  expected interlock latches, the simulated belt comes to rest, and a reset moves nothing;
* the user-action matrix (as tests/control/test_user_actions.py and
  test_controlled_stop.py cover on FTMS): set within and outside the limits, pause and
  resume, a stop during a direction change's dwell, an e-stop then reset, a controlled
  stop while running backward (outcome ``stopped``, never an e-stop, nothing latched).

The profiles (and the faults of one matrix row) run concurrently, each against its own
simulator process, to keep the wall time short at scaled real time (CTL_SPEEDUP).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import pytest

from treadctl import clock
from treadctl.clock import wait_until
from treadctl.control.controller import ControlError, State
from treadctl.control.snapshot import Outcome
from treadctl.profiles import load_profile
from treadctl.programs.model import Program, program_from_dict
from treadctl.protocols import trackmaster as tm

from helpers import (
    CTL_SPEEDUP,
    SimProcess,
    controller_on,
    rest_since,
    sim_now,
    starts_after,
    wait_sim_event,
)

REVERSING = ["biodex-rtm400", "woodway-serial", "bertec-treadmill"]
NATIVE = [*REVERSING, "trackmaster-tmx428"]
WATCHDOG = {"woodway-serial", "trackmaster-tmx428"}  # wire.watchdog_ms > 0


def _program(name: str, *segments: tuple[float, float, str]) -> Program:
    return program_from_dict({"name": name, "segment": [
        {"duration_s": d, "speed_kmh": v, "direction": dirn} for d, v, dirn in segments
    ]})  # fmt: skip


#: forward -> reverse -> forward within every reversing profile's limits (reverse cap
#: 3.0 km/h; 2.0 km/h goes out as 12 x 0.1 mph = 1.93 km/h on the mph machines).
REVERSE_PROGRAM = _program(
    "ctl-reverse", (6, 1.5, "forward"), (11, 2.0, "reverse"), (8, 1.5, "forward")
)
FORWARD_PROGRAM = _program("ctl-forward", (6, 1.5, "forward"), (6, 2.5, "forward"))


def _run(main: Any) -> Any:
    return clock.run(main, speedup=CTL_SPEEDUP)


def _kinds(events: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"].startswith(prefix)]


# ====================================================================== programs to the end


@dataclass
class Session:
    name: str
    outcome: Outcome | None = None
    reason: str | None = None
    latched: bool = False
    measured: list[float] = field(default_factory=list)
    belt_status_moving: set[tuple[bool, int]] = field(default_factory=set)
    refused: str | None = None
    started_without_cds: bool = False


async def _program_session(sp: SimProcess, name: str) -> Session:
    profile = load_profile(name)
    out = Session(name)
    async with controller_on(sp, name) as ctl:

        def on_telemetry(snap: Any) -> None:
            speed = snap.speed_kmh
            if snap.direction is not None and snap.direction.value == "reverse":
                speed = -speed
            out.measured.append(speed)
            driver = ctl.client.driver  # type: ignore[attr-defined]
            if name == "trackmaster-tmx428" and snap.speed_kmh > 0:
                # C0 as the machine last reported it, and whether we are driving the belt
                # (started, no stop of ours since)
                out.belt_status_moving.add((driver.started, driver.belt))

        ctl.telemetry_listeners.append(on_telemetry)
        if not profile.supports_reverse:
            with pytest.raises(ControlError) as refused:
                ctl.start(REVERSE_PROGRAM)
            out.refused = str(refused.value)
            await asyncio.sleep(1.0)  # the link runs on: nothing may start the belt
        program = REVERSE_PROGRAM if profile.supports_reverse else FORWARD_PROGRAM
        result = await ctl.start(program)
        out.outcome, out.reason = result.outcome, result.reason
        out.latched = ctl.latch.latched
        assert await ctl.wait_stopped(10)
        if name == "trackmaster-tmx428":
            no_cds = tm.encode_command(tm.Command(tm.Code.START_NO_CDS))
            wire = ctl.client.driver.wire_log  # type: ignore[attr-defined]
            out.started_without_cds = any(data == no_cds for _, data in wire)
    return out


def test_programs_run_to_their_end_over_a_real_link(sim_processes: Any) -> None:
    sims = sim_processes([(name, "") for name in NATIVE], speedup=CTL_SPEEDUP)

    async def main() -> list[Session]:
        return list(await asyncio.gather(*(
            _program_session(sp, name) for sp, name in zip(sims, NATIVE, strict=True))))

    sessions = _run(main())
    for sp, s in zip(sims, sessions, strict=True):
        events = sp.drain()
        assert s.outcome is Outcome.FINISHED and not s.latched, (s.name, s.outcome, s.reason)
        assert _kinds(events, "safety-key") == [] and _kinds(events, "watchdog") == [], s.name
        starts = _kinds(events, "start")
        assert starts, s.name
        if s.name in REVERSING:
            # The motor turned only at standstill (sim truth at the change), each turn
            # commanded (direction-cmd) and then read back by the driver.
            turns = _kinds(events, "direction:")
            assert [e["event"] for e in turns] == ["direction:reverse", "direction:forward"], (
                s.name, events)
            assert all(e["speed_at_kmh"] == 0 for e in turns), turns  # physics at the turn
            cmds = _kinds(events, "direction-cmd:")
            assert [e["event"] for e in cmds] == ["direction-cmd:reverse",
                                                   "direction-cmd:forward"], s.name
            assert all(abs(e["speed_at_kmh"]) == 0 for e in cmds), cmds
            # The belt really ran backward: the physics at the stop that ends the reverse
            # run (sent at the profile's minimum speed after the ramp down) shows it turning
            # backward, and the machine's read-back reached the reverse setpoint.
            t_rev, t_fwd = turns[0]["t"], turns[1]["t"]
            backward = [e for e in events if t_rev < e["t"] < t_fwd and e["event"] == "stop"]
            assert backward and backward[0]["speed_kmh"] < -0.05, (s.name, backward)
            assert backward[0]["direction"] == "reverse"
            assert min(s.measured) == pytest.approx(-2.0, abs=0.1), s.name
            # Every start is from standstill (the line's truth is 1 ms after the start).
            assert all(abs(e["speed_at_kmh"]) < 0.01 for e in starts), starts
        else:
            assert s.refused is not None and "reverse" in s.refused, s.refused
            assert _kinds(events, "direction") == []
            assert len(starts) == 1  # the refused reverse program moved nothing
            assert max(s.measured) == pytest.approx(2.5, abs=0.1)
            # The Communication Disconnect Stop was armed whenever the belt was driven:
            # every belt status the machine gave while moving was 32 (running, CDS armed),
            # or 31 (stopped) while it ran down after our stop; never 33 (running, CDS off).
            # The host never sent A1 (start without it).
            assert (True, tm.BELT_RUNNING_CDS) in s.belt_status_moving
            assert s.belt_status_moving <= {(True, tm.BELT_RUNNING_CDS),
                                            (False, tm.BELT_STOPPED)}, s.belt_status_moving
            assert not s.started_without_cds
        # The belt stands at the end (sim truth): a standstill after the last start.
        assert rest_since(events, starts[-1]["t"]) is not None, (s.name, events[-5:])


# ====================================================================== the fault matrix
AT_S = 7.0  # simulator time of the fault: the belt cruises (backward where it can) by then

#: fault spec -> the interlocks that are a correct detection, per profile family.
#: A fault with +DURATION ends: the lines come back, the key goes back in, the belt
#: unsticks (a machine without a watchdog can only be stopped once its line is back).
MATRIX: dict[str, dict[str, set[str]]] = {
    # Biodex reports the lanyard in its status; the others only show a belt that stopped
    # without our stop (machine-stop).
    f"safety-key@{AT_S}+4": {
        "biodex-rtm400": {"safety-key"},
        "*": {"machine-stop"},
    },
    f"runaway@{AT_S}": {"*": {"overspeed"}},
    f"link-drop@{AT_S}+3": {"*": {"telemetry-silence", "command-timeout"}},
    # Bertec's panel acknowledges nothing: a panel ignoring an unchanged setpoint is not
    # detectable (pinned in test_fault_matrix.py, docs/protocols.md).
    f"ignore-commands@{AT_S}+3": {"*": {"telemetry-silence", "command-timeout"},
                                  "bertec-treadmill": set()},
    # Only Bertec pushes its telemetry; the request/reply machines answer every poll.
    f"telemetry-stop@{AT_S}+3": {"bertec-treadmill": {"telemetry-silence", "command-timeout"}},
    # The belt keeps its speed: shown by a speed change asked for at the fault (set).
    f"stuck-belt@{AT_S}+8": {"*": {"tracking-error", "overspeed"}},
    # The motor runs the other way from its first start: the read-back or telemetry.
    # TrackMaster runs forward only and its speed has no sign: not modelled there.
    "wrong-direction@0": {"*": {"direction-mismatch"}, "trackmaster-tmx428": set()},
}
#: Garbage may be ridden out (no latch, belt at speed and fed) or latch; judged apart.
GARBAGE = f"garbage@{AT_S}+6"


def _expected(spec: str, name: str) -> set[str] | None:
    row = MATRIX[spec]
    return row.get(name, row.get("*"))


CASES = [(n, f) for f in MATRIX for n in NATIVE if _expected(f, n)] + [
    (n, GARBAGE) for n in NATIVE
]


@dataclass
class FaultRun:
    name: str
    spec: str
    trips: list[str] = field(default_factory=list)
    estops: int = 0
    state_after: str = ""
    outcome: Outcome | None = None
    reset_ok: bool | None = None
    latched_end: bool = True
    t_fault: float = 0.0  # sim time of the fault onset
    t_reset: float = 0.0  # sim time of the reset (from the simulator's clock)
    rode_out: bool = False  # nothing latched within the case's horizon


def _fault_program(name: str) -> Program:
    direction = "reverse" if load_profile(name).supports_reverse else "forward"
    return _program("ctl-fault", (60, 1.5, direction))


async def _fault_case(sp: SimProcess, name: str, spec: str) -> FaultRun:
    out = FaultRun(name, spec)
    fault = spec.split("@")[0]
    async with controller_on(sp, name) as ctl:
        ctl.event_listeners.append(
            lambda e: out.trips.append(e["interlock"]) if e["type"] == "estop" else None
        )
        session = ctl.start(_fault_program(name))
        onset = await wait_sim_event(sp, lambda e: e["event"] == f"fault:{fault}", 30)
        out.t_fault = onset["t"]
        if fault == "stuck-belt":
            with contextlib.suppress(ControlError):
                ctl.set_manual(speed_kmh=3.0)  # the belt must follow: it cannot
        # Detected within the fault's window and a little more (a ride-out: past it).
        duration = float(spec.partition("+")[2] or 8.0)
        await wait_until(lambda: ctl.latch.latched or session.done(), duration + 4.0, 0.05)
        if not ctl.latch.latched:
            out.rode_out = True
            out.t_reset = sim_now(ctl)  # no reset: the end of the ride-out
            out.latched_end = ctl.latch.latched
            out.state_after = ctl.snapshot.state.value
            return out
        # Latched: the belt must come to rest (sim truth) -- the machine's watchdog, its
        # key, our stop, or our stop once the line is back / the belt unsticks.
        await wait_until(lambda: rest_since(sp.drain(), out.t_fault) is not None, 20, 0.05)
        result = await asyncio.wait_for(session, 20)
        out.outcome = result.outcome
        out.state_after = ctl.snapshot.state.value
        if "+" in spec:  # staff reset once the fault is over (a line back, a key in)
            await wait_sim_event(sp, lambda e: e["event"] == f"fault-end:{fault}", 20)
        await asyncio.sleep(1.0)
        # A reset (staff checked the machine) clears the latch and sends nothing that moves.
        out.t_reset = sim_now(ctl)
        try:
            ctl.reset("test: staff checked the machine")
            out.reset_ok = True
        except ControlError:
            out.reset_ok = False  # refused (e.g. no fresh telemetry): also moves nothing
        await asyncio.sleep(3.0)
        out.latched_end = ctl.latch.latched
    return out


def test_fault_matrix_through_the_controller(sim_processes: Any) -> None:
    sims = sim_processes([(n, f) for n, f in CASES], speedup=CTL_SPEEDUP)

    async def main() -> list[FaultRun]:
        return list(await asyncio.gather(*(
            _fault_case(sp, n, f) for sp, (n, f) in zip(sims, CASES, strict=True))))

    runs = _run(main())
    problems: list[str] = []
    for sp, run in zip(sims, runs, strict=True):
        problems += _judge(run, sp.drain())
    assert not problems, "\n".join(problems)


def _judge(run: FaultRun, events: list[dict[str, Any]]) -> list[str]:
    """What is wrong with one case (empty: nothing), judged from the simulator's lines."""
    case = f"{run.name} x {run.spec}"
    if run.spec == GARBAGE and run.rode_out:
        # Ridden out: no latch, and up to then (our close stops the belt afterwards) the
        # belt ran on at speed, never stopped, its watchdog (if any) fed.
        during = [e for e in events if run.t_fault <= e["t"] <= run.t_reset - 0.1]
        end = [e for e in during if e["event"] == "fault-end:garbage"]
        stopped = [e for e in during if e["event"] in ("stop", "standstill")]
        if run.latched_end or _kinds(during, "watchdog") or stopped or not end or \
                abs(abs(end[0]["speed_kmh"]) - 1.5) > 0.2:
            return [f"{case}: neither latched nor rode it out: {during[-4:]}"]
        return []
    expected = _expected(run.spec, run.name) if run.spec != GARBAGE else {
        "telemetry-silence", "command-timeout", "command-rejected", "machine-fault"}
    problems = []
    if run.rode_out or not run.trips:
        return [f"{case}: nothing latched (state {run.state_after}); {events[-4:]}"]
    if run.trips[0] not in (expected or ()):
        problems.append(f"{case}: latched {run.trips[0]}, expected one of {expected}")
    if run.outcome not in (Outcome.ESTOPPED, Outcome.ERROR):
        problems.append(f"{case}: session ended {run.outcome}")
    rest = rest_since(events, run.t_fault)
    if rest is None:
        problems.append(f"{case}: the simulated belt did not come to rest: {events[-4:]}")
    elif starts_after(events, rest):
        problems.append(f"{case}: the belt was started after it came to rest")
    if run.reset_ok and run.latched_end:
        problems.append(f"{case}: latched again after the reset")
    # Reset never moves the belt: no start after it, and the belt still at rest.
    if starts_after(events, run.t_reset):
        problems.append(f"{case}: a start reached the machine after the reset")
    if events and abs(events[-1]["speed_kmh"]) > 0:
        problems.append(f"{case}: the belt moves at the end: {events[-1]}")
    fault = run.spec.split("@")[0]
    watchdog = fault in ("link-drop", "ignore-commands") and run.name in WATCHDOG
    if watchdog and not _kinds(events, "watchdog-expired"):
        problems.append(f"{case}: the machine's own watchdog did not stop the belt")
    return problems


# ====================================================================== the user-action matrix
UA_PROGRAM = _program("ctl-ua", (9, 1.5, "forward"), (14, 2.0, "reverse"), (8, 1.5, "forward"))
UA_FORWARD = _program("ctl-ua", (9, 1.5, "forward"), (14, 2.5, "forward"))
UA_BACKWARD = _program("ctl-ua-back", (20, 2.0, "reverse"))


@dataclass
class UserRun:
    name: str
    rejected: list[str] = field(default_factory=list)
    accepted_set: bool = False
    peak_kmh: float = 0.0
    estop_events: list[dict[str, Any]] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)  # sim time of each action
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    latched_after: dict[str, bool] = field(default_factory=dict)
    paused_state: str = ""
    resumed_state: str = ""
    speed_after_set: float = 0.0
    speed_after_resume: float = 0.0


async def _until(pred: Any, timeout_s: float = 30.0) -> None:
    if not await wait_until(pred, timeout_s, 0.02):
        raise AssertionError(f"not reached within {timeout_s} s")


async def _user_actions(sp: SimProcess, name: str) -> UserRun:
    profile = load_profile(name)
    rev = profile.supports_reverse
    out = UserRun(name)
    async with controller_on(sp, name) as ctl:
        ctl.event_listeners.append(
            lambda e: out.estop_events.append(e) if e["type"] == "estop" else None)

        def track(snap: Any) -> None:
            out.peak_kmh = max(out.peak_kmh, snap.speed_kmh)

        ctl.telemetry_listeners.append(track)
        lim = ctl.limits_for(UA_PROGRAM if rev else UA_FORWARD)

        def cruising(target: float, segment: int = 1) -> bool:
            s = ctl.snapshot
            return (s.state is State.RUNNING and s.segment == segment
                    and abs(s.speed_kmh - target) < 0.1)

        # 1. set: within the limits it is followed; outside (or off the grid) refused.
        session = ctl.start(UA_PROGRAM if rev else UA_FORWARD)
        await _until(lambda: cruising(1.5))
        inc = lim.speed_increment_kmh
        for bad in ({"speed_kmh": lim.max_speed_kmh + 1.0},
                    {"speed_kmh": lim.min_speed_kmh / 2},
                    {"speed_kmh": 1.5 + inc / 2},
                    {"incline_pct": lim.max_incline_pct + 1.0},
                    {"incline_pct": lim.min_incline_pct - 1.0}):
            try:
                ctl.set_manual(**bad)
            except ControlError:
                out.rejected.append(next(iter(bad)))
        ctl.set_manual(speed_kmh=2.0, incline_pct=lim.incline_increment_pct * 2)
        out.accepted_set = True
        await _until(lambda: cruising(2.0))
        out.speed_after_set = ctl.snapshot.speed_kmh
        # 2. pause: the belt stops, nothing latches; resume: it runs again.
        ctl.pause()
        out.marks["pause"] = sim_now(ctl)
        await _until(lambda: ctl.snapshot.state is State.PAUSED)
        out.paused_state = ctl.snapshot.state.value
        await asyncio.sleep(1.0)
        ctl.resume()
        out.marks["resume"] = sim_now(ctl)
        await _until(lambda: cruising(2.0))
        out.resumed_state = ctl.snapshot.state.value
        out.speed_after_resume = ctl.snapshot.speed_kmh
        # 3. a stop during the direction change's dwell (TrackMaster: while it slows for
        # its next segment... it has none: while it speeds up into it).
        if rev:
            await _until(lambda: ctl.snapshot.segment == 2 and ctl.snapshot.phase == "dwell")
        else:
            await _until(lambda: ctl.snapshot.segment == 2 and ctl.snapshot.speed_kmh > 2.0)
        out.marks["stop-dwell"] = sim_now(ctl)
        await ctl.stop()
        out.outcomes["stop-dwell"] = (await session).outcome
        out.latched_after["stop-dwell"] = ctl.latch.latched
        assert await ctl.wait_stopped(10)
        await asyncio.sleep(1.0)
        # 4. an e-stop, then a reset: the reset moves nothing.
        out.marks["restart"] = sim_now(ctl)
        session = ctl.start(UA_FORWARD)
        await _until(lambda: cruising(1.5))
        out.marks["estop"] = sim_now(ctl)
        ctl.estop("test: remote e-stop")
        out.outcomes["estop"] = (await session).outcome
        out.latched_after["estop"] = ctl.latch.latched
        assert await ctl.wait_stopped(10)
        await asyncio.sleep(0.5)
        ctl.reset("test: staff checked the machine")
        out.marks["reset"] = sim_now(ctl)
        out.latched_after["reset"] = ctl.latch.latched
        await asyncio.sleep(2.0)
        # 5. a controlled stop at speed (backward where the machine can).
        session = ctl.start(UA_BACKWARD if rev else UA_FORWARD)
        await _until(lambda: cruising(2.0) if rev else cruising(1.5), 40)
        out.marks["stop"] = sim_now(ctl)
        await ctl.stop()
        out.outcomes["stop"] = (await session).outcome
        out.latched_after["stop"] = ctl.latch.latched
        assert await ctl.wait_stopped(10)
        await asyncio.sleep(1.0)
    return out


def test_user_action_matrix_through_the_controller(sim_processes: Any) -> None:
    sims = sim_processes([(name, "") for name in NATIVE], speedup=CTL_SPEEDUP)

    async def main() -> list[UserRun]:
        return list(await asyncio.gather(*(
            _user_actions(sp, name) for sp, name in zip(sims, NATIVE, strict=True))))

    for sp, run in zip(sims, _run(main()), strict=True):
        _judge_user(run, sp.drain())


def _judge_user(run: UserRun, events: list[dict[str, Any]]) -> None:
    profile = load_profile(run.name)
    name = run.name
    # set: all five refused, the in-range one followed; nothing beyond the limits ran.
    assert run.rejected == ["speed_kmh", "speed_kmh", "speed_kmh", "incline_pct",
                            "incline_pct"], (name, run.rejected)
    assert run.accepted_set and run.speed_after_set == pytest.approx(2.0, abs=0.1)
    assert run.peak_kmh <= 2.0 + 0.3, (name, run.peak_kmh)  # the set, never the refused
    # pause: the belt came to rest (sim truth), nothing latched; resume ran it again.
    assert run.paused_state == "paused" and run.resumed_state == "running"
    paused = [e for e in events if run.marks["pause"] <= e.get("at_s", e["t"])
              and e["event"] == "standstill" and e["at_s"] <= run.marks["resume"] + 0.5]
    assert paused, (name, "the belt did not stand while paused")
    assert starts_after(events, run.marks["resume"] - 0.5), (name, "resume started nothing")
    assert run.speed_after_resume == pytest.approx(2.0, abs=0.1)
    # the user's stops are controlled stops: outcome stopped, nothing latched, no e-stop.
    for action in ("stop-dwell", "stop"):
        assert run.outcomes[action] is Outcome.STOPPED, (name, action, run.outcomes)
        assert not run.latched_after[action], (name, action)
    t_dwell = run.marks["stop-dwell"]
    if profile.supports_reverse:
        # Stopped in the dwell: the belt already stood; it never turned or started again.
        assert rest_since(events, t_dwell) is not None, (name, events[-6:])
        moved = [e for e in events if t_dwell < e["t"] < run.marks["restart"] - 0.1
                 and e["event"].startswith(("direction", "start"))]
        assert not moved, (name, moved)
        assert run.marks["restart"] - t_dwell > 0.5  # a window that means something
    # the e-stop latched, and only it; the reset cleared it and moved nothing.
    assert [e["interlock"] for e in run.estop_events] == ["remote-estop"], (name, run.estop_events)
    assert run.outcomes["estop"] is Outcome.ESTOPPED and run.latched_after["estop"]
    assert not run.latched_after["reset"]
    t_reset = run.marks["reset"]
    stood = [e for e in events if e["event"] == "standstill"
             and run.marks["estop"] <= e["at_s"] <= t_reset]
    assert stood, (name, "the belt did not stand after the e-stop")
    next_start = [e for e in starts_after(events, t_reset)]
    assert next_start and next_start[0]["t"] >= t_reset + 1.5, (
        name, "something started the belt right after the reset", next_start[:1])
    # the last controlled stop (backward where possible): the firmware braked at its
    # controlled-stop rate, not the e-stop's, and the belt stands.
    # The mark runs a few ms ahead of the simulator's clock (sim_now), and the walker
    # puts the Stop on the wire in the stop() call's wake-up, so it can land "before" it.
    t_stop = run.marks["stop"] - 0.05
    stop = next(e for e in events if e["event"] == "stop" and e["at_s"] >= t_stop)
    still = next(e for e in events if e["event"] == "standstill" and e["at_s"] >= stop["at_s"])
    if profile.supports_reverse:
        assert stop["speed_at_kmh"] < -1.5, (name, stop)  # it was running backward
    decel = abs(stop["speed_at_kmh"]) / 3.6 / (still["at_s"] - stop["at_s"])
    assert decel <= profile.motion.stop_decel_mps2 + 0.05, (name, decel)
    assert decel < profile.motion.estop_decel_mps2
    assert rest_since(events, still["at_s"]) is not None, (name, events[-4:])
    assert not _kinds(events, "safety-key") and not _kinds(events, "watchdog"), name
