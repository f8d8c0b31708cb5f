"""What users do to the daemon over MQTT, on every shipped profile and in every phase of a
session, judged from the simulator's physics (docs/mqtt.md "Endings", docs/daemon.md).

* **profiles:** generic-ftms (forward programs), treadctl-reference, kinetic-rx2;
* **phases:** accelerating, cruising, mid direction change (reverse profiles: braking for
  the turn, and the dwell at standstill), paused;
* **actions:** ``cmd/stop``, ``cmd/pause`` then ``cmd/resume``, ``cmd/set``, daemon
  SIGTERM, the program's natural end.

Documented outcomes:

* a stop is a controlled stop: outcome ``stopped``, one ``finished`` event with the
  summary, nothing latched, no ``estop`` event; the simulated belt brakes no harder than
  the firmware's controlled-stop rate, and nothing that could move it follows our Stop;
* pause then resume: the belt comes to a standstill and runs again, and the session goes
  on to its natural end (``finished``). Where the session is not running (a direction
  change, already paused) ``cmd/pause`` is refused with an ``error`` and changes nothing;
* set: a speed outside the limits is refused (``error``, the belt does not follow it); one
  inside them is acked and the belt goes there. Refused (``error``) while not running;
* daemon SIGTERM: a controlled stop of every belt, ``finished`` (``stopped``) for every
  session, exit 0, no traceback on stderr;
* the natural end: ``finished``, the belt stopped the controlled way;
* in every case: never latched, no traceback or error in the daemon's log, and no session
  left ``running`` in the store.

The MQTT cases run the daemon in this process on jumping virtual time, one lane per case
(all at once, on one daemon and one real mosquitto): commands go through the broker with
virtual time frozen (``frozen``), so a command sent in a phase is carried out in that
phase. The SIGTERM cases run ``treadctl daemon`` as its own process (real time), its
treadmills simulated in this process behind TCP, so their physics stay observable while
the daemon process is signalled; their programs use tightened ramps (program limits) so
that every phase lasts long enough to be hit at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import Probe, TcpSim, frozen, make_config, virtual_daemon

from soak.mosquitto import Mosquitto
from treadctl import clock, ftms
from treadctl.clock import wait_until
from treadctl.control.client import is_motion_write
from treadctl.control.controller import Controller, State
from treadctl.profiles import FirmwareProfile, load_profile
from treadctl.store.db import SessionStore, default_db_path

PROFILES = ("generic-ftms", "treadctl-reference", "kinetic-rx2")
PHASES = ("accelerating", "cruising", "turn-braking", "turn-dwell", "paused")
ACTIONS = ("stop", "pause-resume", "set")

FORWARD = {"name": "ua-forward", "segments": [
    {"duration_s": 40, "speed_kmh": 4.0, "direction": "forward"},
    {"duration_s": 20, "speed_kmh": 5.0, "direction": "forward"}]}
REVERSING = {"name": "ua-reversing", "segments": [
    {"duration_s": 30, "speed_kmh": 4.0, "direction": "forward"},
    {"duration_s": 30, "speed_kmh": 3.0, "direction": "reverse"}]}
#: The speed ``cmd/set`` asks for (inside every profile's limits), and one outside them.
SET_KMH = 5.0
SET_OUTSIDE_KMH = 30.0
STOP = b"\x08\x01"


def reverses(profile: str) -> bool:
    return load_profile(profile).supports_reverse


@dataclass(frozen=True)
class Case:
    profile: str
    phase: str  # "-" for the natural end
    action: str

    @property
    def id(self) -> str:
        if self.phase == "-":
            return f"{self.profile}-{self.action}"
        return f"{self.profile}-{self.phase}-{self.action}"

    @property
    def tid(self) -> str:
        short = {"generic-ftms": "g", "treadctl-reference": "r", "kinetic-rx2": "k"}
        phase = "" if self.phase == "-" else f"-{self.phase.replace('-', '')}"
        return f"{short[self.profile]}{phase}-{self.action}"

    @property
    def program(self) -> dict[str, Any]:
        return REVERSING if reverses(self.profile) else FORWARD


CASES = [Case(p, ph, a) for p in PROFILES for ph in PHASES for a in ACTIONS
         if reverses(p) or not ph.startswith("turn")]
CASES += [Case(p, "-", "natural-end") for p in PROFILES]


@dataclass
class Run:
    """What one case did and saw: the judge reads only this."""

    case: Case
    sim: Any = None
    profile: FirmwareProfile | None = None
    session_id: str | None = None
    t_action: float | None = None
    snapshot_at_action: str = ""
    replies: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    latched: str | None = None
    same_controller: bool = True
    final: Any = None
    outcome_in_store: str | None = None
    error: str | None = None


# --------------------------------------------------------------------------- phases


def reached(ctrl: Controller, sim: Any, phase: str, seg_kmh: float = 4.0) -> bool:
    snap = ctrl.snapshot
    truth = sim.truth()
    speed = abs(truth.speed_kmh)
    if phase == "accelerating":
        return (snap.state is State.RUNNING and snap.segment == 1 and 1.0 < speed < 3.0
                and truth.accel_mps2 > 0)
    if phase == "cruising":
        return (snap.state is State.RUNNING and snap.segment == 1
                and abs(speed - seg_kmh) < 0.05 and truth.accel_mps2 == 0.0)
    if phase == "turn-braking":  # ramping down for the turn, the belt still well under way
        return (snap.segment == 2 and snap.phase == "direction-change"
                and 1.0 < speed < seg_kmh - 1.0)
    if phase == "turn-dwell":
        return snap.segment == 2 and snap.phase == "dwell" and speed == 0.0
    if phase == "paused":
        return snap.state is State.PAUSED and speed == 0.0
    raise AssertionError(phase)


def describe(ctrl: Controller, sim: Any) -> str:
    s, t = ctrl.snapshot, sim.truth()
    return (f"state={s.state.value} phase={s.phase} segment={s.segment} "
            f"belt={t.speed_kmh:+.2f} km/h accel={t.accel_mps2:+.2f}")


# --------------------------------------------------------------------------- one case


async def run_case(case: Case, daemon: Any, probe: Probe) -> Run:
    run = Run(case)
    try:
        await _run_case(run, daemon, probe)
    except Exception as exc:  # reported by the judge with what was seen so far
        run.error = f"{type(exc).__name__}: {exc}"
    return run


async def _send(run: Run, probe: Probe, cmd: str, body: dict[str, Any] | None = None,
                key: str | None = None) -> dict[str, Any]:
    """A command through the broker, carried out at this very virtual instant."""
    reply = await frozen(probe.command(run.case.tid, cmd, body))
    run.replies[key or cmd] = reply
    return reply


async def _run_case(run: Run, daemon: Any, probe: Probe) -> None:
    case, tid = run.case, run.case.tid
    lane = daemon.lanes[tid]
    ctrl: Controller = lane.controller
    run.sim = sim = ctrl.transport.sim
    run.profile = load_profile(case.profile)
    reply = await _send(run, probe, "start", {"program": case.program})
    assert reply["type"] == "ack", reply
    run.session_id = reply["session_id"]

    if case.phase == "paused":
        assert await wait_until(lambda: reached(ctrl, sim, "cruising"), 120, 0.05), \
            describe(ctrl, sim)
        assert (await _send(run, probe, "pause", key="pause-to-phase"))["type"] == "ack"
    if case.phase != "-":
        assert await wait_until(lambda: reached(ctrl, sim, case.phase), 120, 0.05), \
            f"phase {case.phase} not reached: {describe(ctrl, sim)}"
        run.t_action = sim.now_s()
        run.snapshot_at_action = describe(ctrl, sim)

    running = ctrl.snapshot.state is State.RUNNING
    if case.action == "stop":
        await _send(run, probe, "stop")
    elif case.action == "pause-resume":
        pause = await _send(run, probe, "pause")
        if pause["type"] == "ack":
            assert await wait_until(lambda: reached(ctrl, sim, "paused"), 60, 0.05), \
                describe(ctrl, sim)
            run.notes.append("paused")
        await _send(run, probe, "resume")
        if ctrl.snapshot.state is not State.RUNNING:
            assert await wait_until(lambda: ctrl.snapshot.state is State.RUNNING, 120, 0.05)
        assert await wait_until(lambda: abs(sim.truth().speed_kmh) > 1.0, 60, 0.05), \
            describe(ctrl, sim)
        run.notes.append("moving again")
    elif case.action == "set":
        await _send(run, probe, "set", {"speed_kmh": SET_OUTSIDE_KMH}, key="set-outside")
        reply = await _send(run, probe, "set", {"speed_kmh": SET_KMH})
        if reply["type"] == "ack":
            assert await wait_until(lambda: abs(abs(sim.truth().speed_kmh) - SET_KMH) < 0.05,
                                    60, 0.05), describe(ctrl, sim)
            run.notes.append("at the set speed")
        elif not running and ctrl.snapshot.state is State.PAUSED:
            await _send(run, probe, "resume")  # on to the natural end

    # Every case ends: by its action (stop) or by the program's natural end.
    mark_end = await probe.event(tid, "finished", since=0, within_s=400)
    assert mark_end["session_id"] == run.session_id, mark_end
    assert await wait_until(lambda: sim.truth().speed_kmh == 0.0, 30, 0.05)
    await asyncio.sleep(3.0)  # answers still in flight would show now (a late refusal)
    run.final = sim.truth()
    run.latched = ctrl.latch.trip.reason if ctrl.latch.trip else None
    run.same_controller = lane.controller is ctrl
    for m in probe.messages:
        if m.topic == f"treadctl/{tid}/event":
            run.events.append(m.json)
        elif m.topic == f"treadctl/{tid}/state":
            run.states.append(m.json)


async def run_matrix(broker: Mosquitto, data_dir: Path, cases: list[Case],
                     log_records: list[logging.LogRecord]) -> dict[str, Run]:
    config = make_config(broker, data_dir, [c.tid for c in cases],
                         devices={c.tid: f"sim://?seed={i}" for i, c in enumerate(cases)})
    lanes = [dataclasses.replace(t, profile=c.profile)
             for t, c in zip(config.treadmills, cases, strict=True)]
    config = dataclasses.replace(config, treadmills=type(config.treadmills)(lanes))
    probe = Probe(broker.port)
    await frozen(probe.__aenter__())
    try:
        async with virtual_daemon(config) as daemon:
            runs = await asyncio.gather(*(run_case(c, daemon, probe) for c in cases))
    finally:
        await frozen(probe.__aexit__(None, None, None))
    with SessionStore(default_db_path(data_dir)) as store:
        for run in runs:
            if run.session_id is not None:
                run.outcome_in_store = str(store.get_session(run.session_id).outcome)
    return {run.case.id: run for run in runs}


class _Collect(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


@pytest.fixture(scope="module")
def matrix_log() -> list[logging.LogRecord]:
    return []


@pytest.fixture(scope="module")
def matrix(mosquitto_bin: str, tmp_path_factory: pytest.TempPathFactory,
           matrix_log: list[logging.LogRecord]) -> Iterator[dict[str, Run]]:
    # Nagle off at the broker too: a round trip is then ~1 ms, not a ~40 ms delayed ACK.
    broker = Mosquitto(tmp_path_factory.mktemp("ua-broker"), ["set_tcp_nodelay true"]).start()
    handler = _Collect(matrix_log)
    logging.getLogger("treadctl").addHandler(handler)
    try:
        yield clock.run(run_matrix(broker, tmp_path_factory.mktemp("ua-data"), CASES,
                                   matrix_log), speedup=None)
    finally:
        logging.getLogger("treadctl").removeHandler(handler)
        broker.stop()


# --------------------------------------------------------------------------- the judge


def motion_writes_after(sim: Any, profile: FirmwareProfile, t_s: float) -> list[Any]:
    """Host writes that could move the belt, received by the firmware after ``t_s``."""
    return [(t, u, v) for t, u, v in sim.wire_log if t > t_s and is_motion_write(profile, u, v)]


def first_stop_after(sim: Any, t_s: float) -> float:
    for t, u, v in sim.wire_log:
        if t >= t_s and u == ftms.CONTROL_POINT and v[:2] == STOP:
            return float(t)
    raise AssertionError(f"no Stop reached the firmware after t={t_s:.2f}")


def assert_never_latched(run: Run) -> None:
    estops = [e for e in run.events if e["type"] == "estop"]
    assert not estops, f"e-stop events: {estops}"
    assert not any(s["latched"] for s in run.states), [s for s in run.states if s["latched"]]
    assert run.latched is None, f"controller latched: {run.latched}"
    assert run.same_controller, "the link was rebuilt during the case"


def assert_controlled_braking(run: Run, since: float = 0.0) -> None:
    """From ``since`` on, the belt never braked harder than a controlled stop, and it
    stands at the end, stopped by us (not the watchdog, not the safety key)."""
    assert run.profile is not None
    limit = run.profile.motion.stop_decel_mps2
    hardest = min((p.accel_mps2 for p in run.sim.trace if p.t_s >= since), default=0.0)
    assert hardest >= -limit - 1e-6, f"braked at {-hardest:.2f} m/s^2 (controlled: {limit})"
    final = run.final
    assert final.speed_kmh == 0.0 and not final.running and final.safety_key_in, final
    assert final.stop_reason in ("user", "pause"), final.stop_reason


def assert_one_finished(run: Run, outcome: str) -> dict[str, Any]:
    finished = [e for e in run.events if e["type"] == "finished"]
    assert len(finished) == 1, finished
    fin = finished[0]
    assert fin["session_id"] == run.session_id and fin["outcome"] == outcome, fin
    assert isinstance(fin["summary"], dict) and fin["summary"]["outcome"] == outcome, fin
    assert run.outcome_in_store == outcome, f"store says {run.outcome_in_store}"
    return fin


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_user_action(matrix: dict[str, Run], case: Case) -> None:
    run = matrix[case.id]
    context = f"{case.id}: at the action {run.snapshot_at_action}; notes {run.notes}"
    assert run.error is None, f"{context}: {run.error}"
    assert_never_latched(run)
    replies = run.replies
    assert replies["start"]["type"] == "ack"
    if case.action == "stop":
        assert run.t_action is not None
        assert replies["stop"]["type"] == "ack", replies["stop"]
        assert_one_finished(run, "stopped")
        t_stop = first_stop_after(run.sim, run.t_action)
        assert t_stop - run.t_action < 0.5, f"{context}: Stop only {t_stop - run.t_action} s"
        assert motion_writes_after(run.sim, run.profile, t_stop) == [], context
        assert_controlled_braking(run, run.t_action)
        return
    # Everything else goes on to the program's natural end.
    fin = assert_one_finished(run, "finished")
    assert fin["segments_completed"] == len(case.program["segments"]), fin
    assert_controlled_braking(run)
    last_stop = max(t for t, u, v in run.sim.wire_log if u == ftms.CONTROL_POINT and v == STOP)
    assert motion_writes_after(run.sim, run.profile, last_stop) == [], context
    if case.action == "natural-end":
        return
    running = run.snapshot_at_action.startswith("state=running")
    if case.action == "pause-resume":
        pause, resume = replies["pause"], replies["resume"]
        if running:
            assert pause["type"] == "ack" and resume["type"] == "ack", (pause, resume)
            assert run.notes[:2] == ["paused", "moving again"], context
        elif case.phase == "paused":
            assert pause["type"] == "error" and "paused" in pause["error"], pause
            assert resume["type"] == "ack", resume
        else:  # mid direction change: neither applies, nothing changes
            assert pause["type"] == "error" and "stopping" in pause["error"], pause
            assert resume["type"] == "error", resume
    elif case.action == "set":
        outside, inside = replies["set-outside"], replies["set"]
        assert outside["type"] == "error", outside
        assert "outside" in outside["error"] or not running, outside
        top = max(abs(p.target_speed_kmh) for p in run.sim.trace)
        assert top <= SET_KMH + 1e-6, f"{context}: firmware target reached {top} km/h"
        if running:
            assert inside["type"] == "ack", inside
            assert "at the set speed" in run.notes, context
        else:
            assert inside["type"] == "error" and "cannot set" in inside["error"], inside


def test_matrix_log_has_no_error_or_traceback(matrix: dict[str, Run],
                                              matrix_log: list[logging.LogRecord]) -> None:
    """No interlock tripped anywhere, nothing logged as an error, no traceback."""
    assert len(matrix) == len(CASES)
    bad = [f"{r.levelname} {r.name}: {r.getMessage()}" for r in matrix_log
           if r.levelno >= logging.ERROR or r.exc_info or "interlock" in r.getMessage()]
    assert not bad, bad


# --------------------------------------------------------------------------- daemon SIGTERM

ROOT = Path(__file__).resolve().parents[2]
SIGTERM_PHASES = ("accelerating", "cruising", "turn", "paused")
#: Slow ramps (program limits may only tighten) so every phase lasts several seconds of
#: real time: a long acceleration, and a long braking before the turn.
SLOW_ACCEL = {"name": "ua-slow-accel", "limits": {"accel_mps2": 0.05},
              "segments": [{"duration_s": 120, "speed_kmh": 6.0, "direction": "forward"}]}
CRUISE = {"name": "ua-cruise",
          "segments": [{"duration_s": 120, "speed_kmh": 3.0, "direction": "forward"}]}
SLOW_TURN = {"name": "ua-slow-turn", "limits": {"decel_mps2": 0.05},
             "segments": [{"duration_s": 3, "speed_kmh": 4.0, "direction": "forward"},
                          {"duration_s": 120, "speed_kmh": 2.0, "direction": "reverse"}]}
SIGTERM_CASES = [(p, ph) for p in PROFILES for ph in SIGTERM_PHASES
                 if ph != "turn" or reverses(p)]


def _latest(probe: Probe, tid: str, kind: str) -> dict[str, Any] | None:
    for m in reversed(probe.messages):
        if m.topic == f"treadctl/{tid}/{kind}":
            return dict(m.json)
    return None


def _in_phase(probe: Probe, tid: str, sim: Any, phase: str) -> bool:
    state = _latest(probe, tid, "state")
    if state is None:
        return False
    truth = sim.truth()
    speed = abs(truth.speed_kmh)
    if phase == "accelerating":  # its target is 6 km/h: below that, it is on its way up
        return state["state"] == "running" and 1.0 < speed < 4.5
    if phase == "cruising":
        return state["state"] == "running" and abs(speed - 3.0) < 0.05
    if phase == "turn":
        segment_2 = any(m.topic == f"treadctl/{tid}/event" and m.json["type"] == "segment"
                        and m.json["segment"] == 2 for m in probe.messages)
        return segment_2 and state["state"] == "stopping" and truth.speed_kmh >= 0.0 and (
            speed > 1.0 or truth.speed_kmh == 0.0)
    return state["state"] == "paused" and speed == 0.0


async def test_daemon_sigterm_is_a_controlled_stop_in_every_phase(
        mosquitto: Any, tmp_path: Path) -> None:
    """One ``treadctl daemon`` process with a lane per (profile, phase); SIGTERM when every
    lane is in its phase. Every belt comes to a controlled stop, every session ends
    ``stopped`` with its ``finished`` event and its store record, exit 0, no traceback."""
    sims = {f"{p}-{ph}": await TcpSim(p, seed=i).start()
            for i, (p, ph) in enumerate(SIGTERM_CASES)}
    data_dir = tmp_path / "data"
    lanes = "".join(f'\n[[treadmill]]\nid = "{tid}"\ndevice = "{sim.url}"\n'
                    f'profile = "{tid.rsplit("-", 1)[0]}"\n' for tid, sim in sims.items())
    config = tmp_path / "daemon.toml"
    config.write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto.port}\n'
                      f'client_id = "ua-sigterm"\nkeepalive_s = 5\n'
                      f'[daemon]\ndata_dir = "{data_dir}"\n{lanes}')
    stderr = tmp_path / "daemon.stderr"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("NOTIFY_SOCKET", None)
    async with Probe(mosquitto.port) as probe:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "treadctl.cli", "daemon", "--config", str(config),
            stdout=asyncio.subprocess.DEVNULL, stderr=stderr.open("wb"), env=env, cwd=ROOT)
        try:
            for tid in sims:
                await probe.wait_for(lambda m, t=tid: m.topic == f"treadctl/{t}/status"
                                     and m.text == "online", 30, what=f"{tid} online")
            programs = {"accelerating": SLOW_ACCEL, "cruising": CRUISE, "paused": CRUISE,
                        "turn": SLOW_TURN}
            sessions: dict[str, str] = {}

            async def start(tid: str) -> None:
                reply = await probe.command(tid, "start",
                                            {"program": programs[tid.rsplit("-", 1)[1]]})
                assert reply["type"] == "ack", (tid, reply)
                sessions[tid] = reply["session_id"]

            # The paused lanes first (a stable phase once reached), then all the others at
            # once: the transient phases (accelerating, the turn) overlap for ~15 s.
            paused = [tid for tid in sims if tid.endswith("-paused")]
            for tid in paused:
                await start(tid)
            for tid in paused:
                await _until(lambda s=sims[tid]: abs(s.sim.truth().speed_kmh - 3.0) < 0.05,
                             20, f"{tid} cruising")
                assert (await probe.command(tid, "pause"))["type"] == "ack"
            await _until(lambda: all(_in_phase(probe, t, sims[t].sim, "paused")
                                     for t in paused), 20, "paused")
            for tid in sims:
                if tid not in paused:
                    await start(tid)
            await _until(lambda: all(_in_phase(probe, tid, sim.sim, tid.rsplit("-", 1)[1])
                                     for tid, sim in sims.items()), 30,
                         "every lane in its phase",
                         lambda: {tid: ((_latest(probe, tid, "state") or {}).get("state"),
                                        round(sim.sim.truth().speed_kmh, 2),
                                        sim.sim.truth().accel_mps2)
                                  for tid, sim in sims.items()})
            mark = probe.mark()
            t_term = {tid: sim.sim.now_s() for tid, sim in sims.items()}
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 60) == 0, stderr.read_text()[-3000:]
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        try:
            log = stderr.read_text()
            assert "Traceback" not in log, log[-3000:]
            bad = [line for line in log.splitlines()
                   if line.startswith(("ERROR", "CRITICAL")) or "interlock" in line]
            assert not bad, bad
            for tid, tcp in sims.items():
                profile = load_profile(tid.rsplit("-", 1)[0])
                events = [m.json for m in probe.messages[mark:]
                          if m.topic == f"treadctl/{tid}/event"]
                assert not [e for e in events if e["type"] == "estop"], (tid, events)
                fin = [e for e in events if e["type"] == "finished"]
                assert len(fin) == 1 and fin[0]["outcome"] == "stopped", (tid, fin)
                assert fin[0]["session_id"] == sessions[tid] and fin[0]["summary"], fin
                sim = tcp.sim
                t_stop = first_stop_after(sim, t_term[tid])
                assert motion_writes_after(sim, profile, t_stop) == [], tid
                hardest = min(p.accel_mps2 for p in sim.trace if p.t_s >= t_term[tid])
                assert hardest >= -profile.motion.stop_decel_mps2 - 1e-6, (tid, hardest)
                truth = sim.truth()
                assert truth.speed_kmh == 0.0 and truth.stop_reason == "user", (tid, truth)
            with SessionStore(default_db_path(data_dir)) as store:
                for tid, session_id in sessions.items():
                    assert str(store.get_session(session_id).outcome) == "stopped", tid
        finally:
            for tcp in sims.values():
                await tcp.stop()


async def _until(pred: Any, within_s: float, what: str, show: Any = None) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {show() if show else ''}")
        await asyncio.sleep(0.05)
