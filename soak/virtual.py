"""The fault campaign (soak): many treadmills, hours of sessions, random faults, judged by physics.

``python -m soak [--hours 8] [--treadmills 4] [--seed N] [--json] [--broker-phase]``

**Virtual-time phase** (always): ``--treadmills`` lanes, each a :class:`Controller` on its own
in-process simulator (profiles alternate ``treadctl-reference`` / ``kinetic-rx2``), run the
built-in programs back to back for ``--hours`` of simulated time on one jumping virtual clock
(:func:`treadctl.clock.run_virtual`). At random times a lane injects the next fault from a
shuffled deck holding EVERY simulator fault type plus remote and gym-wide e-stops, a console
stop press, a missed dead-man heartbeat and a link flap (unplug, then a new transport and
controller). After every trip it checks, against the simulator's ground truth:

* the belt reached 0 within the bound the fault matrix uses (escalation + link timeout +
  |v at trip| / min(stop decel, reverse decel) + 0.5 s margin);
* no motion command (speed, incline, start, belt direction) reached the firmware while
  latched, and the belt did not move again before the next start (reset never moves it);
* every sample recorded before the fault is in the :class:`SessionStore` (count, last t_s).

``garbage`` bursts are injected alone and must NOT trip anything. A fault that must be
detected (the belt was running) but was not is a violation too.

**Broker phase** (``--broker-phase``, REAL time, ~``--broker-minutes`` minutes): the real
daemon with sim treadmills against a real mosquitto that is killed and restarted, plus link
flaps; same invariants from the sims' ground truth. See docs/soak.md.

The summary table lists faults per type, trips per interlock, stops within bound, the
worst stop time against its bound, violations, sessions and samples; exit 1 on any violation.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import logging
import multiprocessing
import os
import random
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from treadctl.clock import run_virtual, wait_until
from treadctl.control import client as _client
from treadctl.control import safety as _safety
from treadctl.control.controller import ControlError, Controller, SessionResult, State
from treadctl.control.safety import Interlock, SafetyConfig
from treadctl.limits import Limits
from treadctl.profiles import load_profile
from treadctl.programs import builtin_names, load_builtin
from treadctl.programs.model import Program
from treadctl.programs.validate import validate_program
from treadctl.simulator.faults import FAULTS
from treadctl.store.db import SessionStore
from treadctl.store.integration import ControllerRecorder, RecorderFactory
from treadctl.transport.sim import SimTransport

log = logging.getLogger(__name__)

PROFILES = ("treadctl-reference", "kinetic-rx2")
#: Faults the soak adds on top of the simulator's own.
EXTRA_FAULTS = ("remote-estop", "gym-estop", "console-stop", "heartbeat-missed", "link-flap")
ALL_FAULTS: tuple[str, ...] = (*FAULTS, *EXTRA_FAULTS)
#: Faults that must trip when injected while a session runs the belt (> 1 km/h).
#: ``wrong-direction`` only shows at the next start from standstill, ``garbage`` must never trip.
MUST_TRIP = frozenset(ALL_FAULTS) - {"wrong-direction", "garbage"}
#: Faults that only show when a command is sent: the soak asks for a speed change.
NEEDS_COMMAND = frozenset({"stuck-belt", "slow-acks", "ignore-commands"})
#: Site heart-rate ceiling: above any steady effort of the built-ins, below the hr-spike 190.
MAX_HR_BPM = 165
#: Dead-man heartbeat period the lanes are configured with (the soak beats every second).
HEARTBEAT_S = 5.0
#: No data from the treadmill for this long: rebuild the link (daemon: LINK_SILENCE_S = 5).
LINK_SILENCE_S = 2.0
# "Motion write" and the stop bound have one definition each, shared with the controller,
# the tests and docs/safety.md (the soak re-exports them under its old names).
STOP_MARGIN_S = _safety.STOP_MARGIN_S
MOTION_OPCODES = _client.MOTION_OPCODES
stop_bound_s = _safety.stop_bound_s
is_motion_write = _client.is_motion_write


#: hr-spike must trip once the true heart rate was above the ceiling (by more than the
#: console's whole-bpm rounding) for the interlock's hold plus this much (the filter's lag),
#: all of it while the session still drove a moving belt.
HR_TRIP_MARGIN_S = 2.0


class _HeartOverCeiling:
    """Ground truth for hr-spike: the longest stretch (s) the runner's heart stayed above
    the ceiling while ``task`` (the session) was still running and the belt moved. A heart
    that crosses the ceiling after the program ended is not on a driven belt: nothing to
    stop, and the next start is judged afresh."""

    def __init__(self, sim: Any, task: asyncio.Task[SessionResult]) -> None:
        self.sim, self.task = sim, task
        self.since: float | None = None
        self.longest_s = 0.0

    def poll(self) -> None:
        truth = self.sim.truth()
        if truth.hr_bpm > MAX_HR_BPM + 1 and truth.speed_kmh != 0.0 and not self.task.done():
            self.since = truth.t_s if self.since is None else self.since
            self.longest_s = max(self.longest_s, truth.t_s - self.since)
        else:
            self.since = None


def _undo_hr_jump(sim: Any) -> None:
    """``hr-spike`` jumps the firmware's heart rate to 190 at once, which the controller's
    heart-rate supervisor rightly treats as unreliable (a warning, never an e-stop). Undo
    the jump at its onset: the fault's 190 bpm steady state then raises the heart rate at
    the firmware's first-order kinetics (tau 30 s), a plausible rise through the ceiling."""
    before = sim.truth().hr_bpm

    def undo(name: str, onset: bool) -> None:
        if name == "hr-spike" and onset:
            sim._hr_bpm = before
            sim.remove_fault_listener(undo)

    sim.add_fault_listener(undo)


@dataclass
class SoakStats:
    injected: Counter[str] = field(default_factory=Counter)
    tripped: Counter[str] = field(default_factory=Counter)  # faults (by type) that tripped
    no_effect: Counter[str] = field(default_factory=Counter)  # faults that did not trip
    interlocks: Counter[str] = field(default_factory=Counter)  # trips per interlock
    stops_checked: int = 0
    stops_within: int = 0
    worst_stop_s: float = 0.0
    worst_bound_s: float = 0.0
    worst_ratio: float = 0.0
    worst_what: str = ""
    spontaneous_trips: int = 0
    link_drops: int = 0  # escalations that cut the link (firmware watchdog acted)
    reconnects: int = 0
    sessions: int = 0
    sessions_finished: int = 0
    samples: int = 0
    data_checks: int = 0
    violations: list[str] = field(default_factory=list)
    spontaneous: list[str] = field(default_factory=list)  # trips with no fault injected
    findings: list[str] = field(default_factory=list)  # not violations, worth a look
    ts_regressions: int = 0
    time_stalls: int = 0
    sim_hours: float = 0.0
    treadmills: int = 0
    wall_s: float = 0.0

    def violation(self, text: str) -> None:
        log.error("VIOLATION %s", text)
        self.violations.append(text)

    def stop(self, stop_s: float, bound_s: float, what: str) -> None:
        self.stops_checked += 1
        if stop_s <= bound_s:
            self.stops_within += 1
        ratio = stop_s / bound_s
        if ratio > self.worst_ratio:
            self.worst_ratio, self.worst_stop_s, self.worst_bound_s = ratio, stop_s, bound_s
            self.worst_what = what

    def as_dict(self) -> dict[str, Any]:
        return {
            "sim_hours": self.sim_hours,
            "treadmills": self.treadmills,
            "wall_s": round(self.wall_s, 1),
            "faults_injected": dict(sorted(self.injected.items())),
            "faults_tripped": dict(sorted(self.tripped.items())),
            "faults_without_trip": dict(sorted(self.no_effect.items())),
            "trips_per_interlock": dict(sorted(self.interlocks.items())),
            "stops_checked": self.stops_checked,
            "stops_within_bound": self.stops_within,
            "worst_stop_s": round(self.worst_stop_s, 3),
            "worst_stop_bound_s": round(self.worst_bound_s, 3),
            "worst_stop": self.worst_what,
            "spontaneous_trips": self.spontaneous_trips,
            "spontaneous_details": self.spontaneous[:50],
            "sessions_with_t_s_going_backwards": self.ts_regressions,
            "virtual_time_stalls": self.time_stalls,
            "findings": self.findings[:50],
            "link_drops_by_escalation": self.link_drops,
            "reconnects": self.reconnects,
            "sessions_recorded": self.sessions,
            "sessions_finished": self.sessions_finished,
            "samples_recorded": self.samples,
            "data_checks": self.data_checks,
            "violations": len(self.violations),
            "violation_details": self.violations[:50],
        }


class _CountingRecorder:
    """Wraps the store's recorder and counts what the controller handed it (the reference
    for "no session data before the fault was lost")."""

    def __init__(self, inner: ControllerRecorder) -> None:
        self.inner = inner
        self.session_id = inner.session_id
        self.t_s: list[float] = []  # t_s of every sample handed to the store, in order

    @property
    def count(self) -> int:
        return len(self.t_s)

    def sample(self, ctl: Controller, now: float) -> None:
        self.inner.sample(ctl, now)
        self.t_s.append(ctl.snapshot.elapsed_s)

    def event(self, ctl: Controller, event: dict[str, Any]) -> None:
        self.inner.event(ctl, event)

    async def finish(self, ctl: Controller, result: SessionResult) -> dict[str, Any]:
        return await self.inner.finish(ctl, result)


class _Deck:
    """Every fault type once per round, in a random order (even coverage, random times)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.cards: list[str] = []

    def draw(self) -> str:
        if not self.cards:
            self.cards = list(ALL_FAULTS)
            self.rng.shuffle(self.cards)
        return self.cards.pop()


class Lane:
    """One treadmill of the soak: controller + simulator, programs back to back, faults."""

    def __init__(
        self,
        index: int,
        profile_name: str,
        *,
        rng: random.Random,
        deck: _Deck,
        store: SessionStore,
        stats: SoakStats,
        end_t: float,
        gap_s: tuple[float, float],
    ) -> None:
        self.index = index
        self.id = f"soak-{index + 1}"
        self.profile = load_profile(profile_name)
        self.rng = rng
        self.deck = deck
        self.stats = stats
        self.end_t = end_t
        self.gap_s = gap_s
        self.cfg = SafetyConfig()
        self.site = Limits(max_hr_bpm=MAX_HR_BPM)
        self.factory = RecorderFactory(
            store, treadmill_id=self.id, device="sim://", profile=profile_name
        )
        self.store = store
        self.recorders: dict[str, _CountingRecorder] = {}
        self.ctl: Controller | None = None
        self.transport: SimTransport | None = None
        self.trips: list[tuple[float, str, float]] = []  # (sim t, interlock, |v| at trip)
        self.beating = True
        self.n_at_fault: int | None = None
        self.exercised = True  # the last fault could show (a command was asked where needed)
        self.seed = rng.randrange(1 << 30)
        self.programs: list[Program] = []

    # ------------------------------------------------------------------ wiring
    def _recorder(self, ctl: Controller, program: Program, session_id: str) -> _CountingRecorder:
        rec = _CountingRecorder(self.factory(ctl, program, session_id))
        self.recorders[rec.session_id] = rec
        self.stats.sessions += 1
        return rec

    @property
    def sim(self) -> Any:
        assert self.transport is not None
        return self.transport.sim

    async def connect(self) -> Controller:
        self.seed += 1
        self.transport = SimTransport(self.profile, seed=self.seed)
        ctl = Controller(
            self.transport,
            self.profile,
            site_limits=self.site,
            safety=self.cfg,
            treadmill_id=self.id,
            heartbeat_s=HEARTBEAT_S,
            recorder_factory=self._recorder,
        )
        self.trips = []

        def on_event(event: dict[str, Any]) -> None:
            if event["type"] == "estop":
                speed = abs(self.sim.truth().speed_kmh)
                self.trips.append((self.sim.now_s(), str(event["interlock"]), speed))
            elif event["type"] == "escalate" and event.get("action") == "drop-link":
                self.stats.link_drops += 1

        ctl.event_listeners.append(on_event)
        await ctl.open()
        self.ctl = ctl
        if not self.programs:
            limits = ctl.limits_for(None)
            for name in builtin_names():
                prog = load_builtin(name)
                if not validate_program(prog, ctl.limits_for(prog)) and limits is not None:
                    self.programs.append(prog)
        return ctl

    async def disconnect(self) -> None:
        ctl, self.ctl = self.ctl, None
        if ctl is not None:
            await ctl.close()
        self.transport = None

    async def heartbeats(self) -> None:
        while True:
            if self.beating and self.ctl is not None:
                self.ctl.heartbeat()
            await asyncio.sleep(1.0)

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    # ------------------------------------------------------------------ main loop
    async def run(self) -> None:
        hb = asyncio.create_task(self.heartbeats())
        try:
            await self._run()
        finally:
            hb.cancel()
            with contextlib.suppress(BaseException):
                await hb
            await self.disconnect()

    async def _run(self) -> None:
        task: asyncio.Task[SessionResult] | None = None
        while self.now() < self.end_t:
            if self.ctl is None:
                await self.connect()
            ctl = self.ctl
            assert ctl is not None
            if task is None or task.done():
                task = await self._start(ctl)
                if task is None:
                    continue
            delay = self.rng.uniform(*self.gap_s)
            delay = min(delay, max(0.1, self.end_t - self.now()))
            await asyncio.wait({task}, timeout=delay)
            if self.now() >= self.end_t:
                break
            if task.done():
                result = task.result()
                if result.outcome.value == "finished":
                    self.stats.sessions_finished += 1
                elif ctl.latch.latched:
                    # Tripped with no fault injected: judged like any other trip.
                    self.stats.spontaneous_trips += 1
                    snap = ctl.snapshot
                    self.stats.spontaneous.append(
                        f"{self.id} {self.profile.name} t={self.sim.now_s():.1f}s "
                        f"{ctl.latch.trip.reason if ctl.latch.trip else '?'} "
                        f"(program {snap.program}, segment {snap.segment})"
                    )
                    log.warning("%s: spontaneous trip %s", self.id, ctl.latch.trip)
                    await self._after_trip("spontaneous", task, None, -1.0)
                    trip = ctl.latch.trip if self.ctl is ctl else None
                    # Known controller gap (docs/soak.md): after a failed direction change
                    # the firmware keeps the other direction and every new start trips on
                    # direction mismatch. Staff power-cycle the treadmill: a new link.
                    if (
                        trip is None
                        and self.ctl is ctl
                        and "direction" in self.stats.spontaneous[-1]
                    ):
                        await self._reconnect()
                task = None
                continue
            task = await self._fault(self.deck.draw(), task)
        if task is not None and not task.done() and self.ctl is not None:
            await self.ctl.stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), 60)

    async def _start(self, ctl: Controller) -> asyncio.Task[SessionResult] | None:
        program = self.rng.choice(self.programs)
        try:
            return ctl.start(program)
        except ControlError as exc:
            log.info("%s: start refused (%s); retrying", self.id, exc)
            await asyncio.sleep(1.0)
            if self._link_dead(ctl):
                await self._reconnect()
            return None

    def _link_dead(self, ctl: Controller) -> bool:
        # Like the daemon's link supervision: a link the controller dropped itself (escalation)
        # is not reported as DISCONNECTED, it just goes silent; rebuild it.
        silent_s = ctl.clock.now() - ctl.last_rx
        return ctl.snapshot.state is State.DISCONNECTED or silent_s > LINK_SILENCE_S

    async def _reconnect(self) -> None:
        await self.disconnect()
        self.stats.reconnects += 1
        await self.connect()

    # ------------------------------------------------------------------ one fault
    async def _fault(
        self, kind: str, task: asyncio.Task[SessionResult]
    ) -> asyncio.Task[SessionResult] | None:
        ctl, sim = self.ctl, self.sim
        assert ctl is not None and self.transport is not None
        self.stats.injected[kind] += 1
        self.trips.clear()
        t_fault = sim.now_s()
        self.n_at_fault = self._recorded(ctl)
        running = ctl.snapshot.state is State.RUNNING and abs(sim.truth().speed_kmh) > 1.0
        window = self._inject(kind, ctl, sim)
        horizon = (window or 0.0) + 10.0
        if kind == "garbage":
            assert window is not None
            await wait_until(lambda: ctl.latch.latched, window + 2.0, step_s=0.1)
            if ctl.latch.latched:
                trip = ctl.latch.trip
                seen = [(round(t, 2), e) for (t, e) in sim.events if t >= t_fault][:6]
                self.stats.violation(
                    f"{self.id}: garbage alone tripped {trip}; firmware events {seen}"
                )
                self.stats.tripped[kind] += 1
                await self._after_trip(kind, task, window, t_fault)
                return None
            self.stats.no_effect[kind] += 1
            return task
        # hr-spike is judged by the heart, not the clock: the ceiling is owed only while
        # the session drives the belt (SafetyMachine.telemetry judges an armed machine).
        heart = _HeartOverCeiling(sim, task) if kind == "hr-spike" else None

        def latched() -> bool:
            if heart is not None:
                heart.poll()
            return ctl.latch.latched

        tripped = await wait_until(latched, horizon, step_s=0.05)
        self.beating = True
        if not tripped:
            self.stats.no_effect[kind] += 1
            owed = running and kind in MUST_TRIP and self.exercised
            if heart is not None:
                owed = owed and heart.longest_s >= self.cfg.hr_hold_s + HR_TRIP_MARGIN_S
            if owed:
                hr = ""
                if heart is not None:
                    st = ctl.hr_supervisor.status
                    hr = (
                        f"; heart above {MAX_HR_BPM} bpm for {heart.longest_s:.1f} s on the"
                        f" session's moving belt, now {sim.truth().hr_bpm:.0f} bpm, the"
                        f" lane's {st.quality} {st.reason or ''} from {st.source}"
                    )
                self.stats.violation(
                    f"{self.id}: {kind} at t={t_fault:.1f}s on a running belt was not detected "
                    f"(now {ctl.snapshot.state.value}, belt {sim.truth().speed_kmh:.2f} km/h{hr})"
                )
            # Let the fault window end before anything else happens on this lane.
            if window is not None:
                await asyncio.sleep(max(0.0, t_fault + window - sim.now_s()) + 0.5)
            return None if task.done() else task
        self.stats.tripped[kind] += 1
        await self._after_trip(kind, task, window, t_fault)
        return None

    def _inject(self, kind: str, ctl: Controller, sim: Any) -> float | None:
        """Apply the fault; returns its window length in seconds (None = instantaneous)."""
        rng = self.rng
        self.exercised = True
        if kind == "remote-estop":
            ctl.estop("soak: remote e-stop")
            return None
        if kind == "gym-estop":
            ctl.estop("soak: gym-wide e-stop", Interlock.GYM_ESTOP)
            return None
        if kind == "console-stop":
            sim.press_stop()
            return None
        if kind == "heartbeat-missed":
            self.beating = False
            return HEARTBEAT_S + 3.0
        if kind == "link-flap":
            assert self.transport is not None
            self.transport.unplug()
            return None
        window = {
            "hr-spike": rng.uniform(60.0, 90.0),
            "wrong-direction": rng.uniform(30.0, 120.0),
            "garbage": rng.uniform(5.0, 30.0),
            "stuck-belt": rng.uniform(15.0, 30.0),
        }.get(kind, rng.uniform(3.0, 20.0))
        if kind == "hr-spike":
            _undo_hr_jump(sim)  # the ceiling trusts only a plausible rise (docs/heart-rate.md)
        sim.inject(kind, duration_s=window)
        self.exercised = kind not in NEEDS_COMMAND or (
            ctl.snapshot.state is State.RUNNING and self._ask_speed_change(ctl)
        )
        return window

    def _ask_speed_change(self, ctl: Controller) -> bool:
        """Ask for a speed 2 km/h away (down if possible, else up) inside the limits of the
        running program; False when no such change is allowed right now."""
        lim = ctl.active_limits or ctl.limits_for(None)
        reverse = ctl.commanded_dir.value == "reverse"
        cap = lim.reverse_max_speed_kmh if reverse else min(lim.max_speed_kmh, 8.0)
        now = ctl.commanded_kmh
        for target in (now - 2.0, now + 2.0, now - 1.5, now + 1.5):
            target = round(target, 1)
            if not max(lim.min_speed_kmh, 0.5) <= target <= cap:
                continue
            try:
                ctl.set_manual(speed_kmh=target)
                return True
            except ControlError:
                continue
        return False

    # ------------------------------------------------------------------ the checks
    def _recorded(self, ctl: Controller) -> int | None:
        sid = ctl.snapshot.session_id
        rec = self.recorders.get(sid) if sid is not None else None
        return rec.count if rec is not None else None

    async def _after_trip(
        self, kind: str, task: asyncio.Task[SessionResult], window: float | None, t_fault: float
    ) -> None:
        ctl, sim = self.ctl, self.sim
        n_at_fault = self.n_at_fault if t_fault >= 0 else None
        assert ctl is not None and ctl.latch.trip is not None
        interlock = ctl.latch.trip.interlock.value
        self.stats.interlocks[interlock] += 1
        if not self.trips:
            self.stats.violation(f"{self.id}: {kind} latched without an estop event")
            return
        t_trip, _, v_trip = self.trips[0]
        bound = stop_bound_s(self.profile, self.cfg, v_trip)
        what = f"{self.id} {self.profile.name} {kind} -> {interlock} at {v_trip:.1f} km/h"
        stopped = await wait_until(lambda: sim.truth().speed_kmh == 0.0, bound + 1.0)
        t_stop = sim.truth().t_s
        if not stopped:
            self.stats.violation(
                f"{what}: belt still at {sim.truth().speed_kmh:.2f} km/h "
                f"{bound + 1.0:.1f} s after the trip"
            )
        else:
            self.stats.stop(t_stop - t_trip, bound, what)
            if t_stop - t_trip > bound:
                self.stats.violation(f"{what}: stopped after {t_stop - t_trip:.2f} s > {bound:.2f}")
        # The session ends (e-stopped) and the controller stays latched.
        try:
            await asyncio.wait_for(asyncio.shield(task), 60)
        except TimeoutError:
            self.stats.violation(f"{what}: session task did not end")
        except Exception as exc:
            self.stats.violation(f"{what}: session task raised {exc!r}")
        # Wait out the fault window, latched: nothing may move meanwhile.
        end = max(sim.now_s() + 2.0, t_fault + (window or 0.0) + 1.0)
        await asyncio.sleep(end - sim.now_s())
        if not ctl.latch.latched:
            self.stats.violation(f"{what}: latch cleared without reset")
        if kind == "hr-spike":
            # Staff let the runner recover before the next session (the interlock would trip
            # again, correctly, on a heart rate still above the ceiling).
            await wait_until(lambda: sim.truth().hr_bpm < MAX_HR_BPM - 15, 600.0, step_s=1.0)
        await self._check_still(what, t_trip, t_stop if stopped else None)
        await self._check_data(what, n_at_fault, task)
        if self._link_dead(ctl):
            await self._reconnect()
            return
        # Reset (staff checked the machine): never moves the belt; a new start is needed.
        t_reset = sim.now_s()
        for _ in range(30):
            try:
                ctl.reset("soak: staff checked the machine")
                break
            except ControlError:
                await asyncio.sleep(1.0)
        else:
            self.stats.violation(f"{what}: reset refused for 30 s ({ctl.snapshot})")
            await self._reconnect()
            return
        self.trips.clear()
        await asyncio.sleep(2.0)
        await self._check_still(what + " after reset", t_reset, t_reset)
        if self._link_dead(ctl):
            await self._reconnect()
            return
        self._trim()

    async def _check_still(self, what: str, t_from: float, t_stop: float | None) -> None:
        sim = self.sim
        prof = self.profile
        moved = [
            (t, u, v.hex())
            for (t, u, v) in sim.wire_log
            if t > t_from and is_motion_write(prof, u, v)
        ]
        if moved:
            self.stats.violation(f"{what}: motion writes while latched/before start: {moved[:3]}")
        if t_stop is not None:
            bad = [p for p in sim.trace if p.t_s > t_stop and p.speed_kmh != 0.0]
            if bad or sim.truth().speed_kmh != 0.0:
                self.stats.violation(f"{what}: belt moved again after standing still")

    async def _check_data(
        self, what: str, n_at_fault: int | None, task: asyncio.Task[SessionResult]
    ) -> None:
        if not task.done() or task.cancelled() or task.exception() is not None:
            return
        sid = task.result().session_id
        rec = self.recorders.pop(sid, None)
        if rec is None:
            return
        # What had been recorded when the fault was injected is a prefix of what we have now;
        # the session is finished (flushed + committed) so the store must hold all of it.
        rows = await asyncio.to_thread(self.store.samples, sid)
        self.stats.data_checks += 1
        n = n_at_fault if n_at_fault is not None else rec.count
        before = Counter(round(t, 2) for t in rec.t_s[:n])
        stored = Counter(round(r.t_s, 2) for r in rows)
        missing = before - stored
        if missing:
            self.stats.violation(
                f"{what}: {sum(missing.values())} of the {n} samples recorded before the fault "
                f"are not in the store (e.g. t_s {sorted(missing)[:3]})"
            )
        back = sum(1 for a, b in zip(rec.t_s, rec.t_s[1:], strict=False) if b < a - 1e-9)
        if back:
            self.stats.ts_regressions += 1
            self.stats.findings.append(
                f"{what}: session {sid} has {back} sample(s) whose t_s goes backwards "
                f"(first t_s {rec.t_s[0]:.2f})"
            )

    def _trim(self) -> None:
        # The sim's logs grow without bound; everything before now has been judged.
        sim = self.sim
        sim.trace.clear()
        sim.wire_log.clear()


async def soak_virtual(
    *,
    hours: float,
    treadmills: int,
    seed: int,
    data_dir: Path,
    gap_s: tuple[float, float] = (20.0, 240.0),
    lanes_of: tuple[int, ...] | None = None,
) -> SoakStats:
    """The virtual-time campaign of the lanes ``lanes_of`` (default: all) on ONE loop; call
    inside a virtual-time loop (see :func:`run_soak`)."""
    indices = tuple(range(treadmills)) if lanes_of is None else lanes_of
    stats = SoakStats(sim_hours=hours, treadmills=len(indices))
    store = SessionStore(data_dir / f"soak-{indices[0] + 1}.sqlite")
    loop = asyncio.get_running_loop()
    end_t = loop.time() + hours * 3600.0
    lanes = [
        Lane(
            i,
            PROFILES[i % len(PROFILES)],
            rng=random.Random(seed * 7919 + i),
            # One deck per lane: a lane's faults depend on the seed and its index, not on
            # how the lanes are spread over processes (--workers, the CPU count).
            deck=_Deck(random.Random(seed * 1000 + i)),
            store=store,
            stats=stats,
            end_t=end_t,
            gap_s=gap_s,
        )
        for i in indices
    ]
    try:
        async with asyncio.TaskGroup() as tg:
            for lane in lanes:
                tg.create_task(lane.run())
        for lane in lanes:
            # Sessions still open at the end (or never judged) are flushed and counted.
            for rec in lane.recorders.values():
                await rec.inner.recorder.aclose()
        stats.samples = await asyncio.to_thread(_count_rows, store)
    finally:
        await asyncio.to_thread(store.close)
    return stats


def _count_rows(store: SessionStore) -> int:
    with store.connection() as conn:
        return int(conn.execute("SELECT count(*) FROM samples").fetchone()[0])


def _run_lanes(
    hours: float,
    treadmills: int,
    seed: int,
    data_dir: str,
    gap_s: tuple[float, float],
    lanes_of: tuple[int, ...],
) -> SoakStats:
    stalls: list[float] = []

    async def main() -> SoakStats:
        guard = _StallGuard(asyncio.get_running_loop(), stalls)
        try:
            stats = await soak_virtual(
                hours=hours,
                treadmills=treadmills,
                seed=seed,
                data_dir=Path(data_dir),
                gap_s=gap_s,
                lanes_of=lanes_of,
            )
        finally:
            guard.stop()
        stats.time_stalls = len(stalls)
        stats.findings += [
            f"virtual time stood still at t={t:.6f} s (a sub-nanosecond sleep loop, see "
            f"docs/soak.md); nudged by 1 us"
            for t in stalls[:10]
        ]
        return stats

    logging.basicConfig(level=logging.CRITICAL)
    return run_virtual(main)


class _StallGuard:
    """Watches the virtual clock from a thread. A coroutine that sleeps less than the loop's
    clock resolution (1 ns) never lets virtual time advance, and the loop spins forever (the
    simulator's garbage noise loop can do this when ``now % period`` lands within 1 ns of the
    period). When virtual time has not moved for 2 s of real time while nothing runs in an
    executor, the guard nudges it by 1 us and records the stall as a finding."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stalls: list[float]) -> None:
        self.loop = loop
        self.stalls = stalls
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-stall-guard", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        last = self.loop.time()
        while not self._stop.wait(2.0):
            now = self.loop.time()
            busy = getattr(self.loop, "_executor_jobs", 0)
            if now == last and not busy:
                self.loop.call_soon_threadsafe(self._nudge, now)
            last = now

    def _nudge(self, at: float) -> None:
        if self.loop.time() == at and hasattr(self.loop, "_virtual"):
            self.loop._virtual += 1e-6
            self.stalls.append(at)


def merge(parts: list[SoakStats]) -> SoakStats:
    out = SoakStats(sim_hours=parts[0].sim_hours)
    for p in parts:
        out.treadmills += p.treadmills
        for name in ("injected", "tripped", "no_effect", "interlocks"):
            getattr(out, name).update(getattr(p, name))
        for name in (
            "stops_checked",
            "stops_within",
            "spontaneous_trips",
            "link_drops",
            "reconnects",
            "sessions",
            "sessions_finished",
            "samples",
            "data_checks",
            "ts_regressions",
            "time_stalls",
        ):
            setattr(out, name, getattr(out, name) + getattr(p, name))
        out.violations += p.violations
        out.spontaneous += p.spontaneous
        out.findings += p.findings
        if p.worst_ratio > out.worst_ratio:
            out.worst_ratio, out.worst_stop_s = p.worst_ratio, p.worst_stop_s
            out.worst_bound_s, out.worst_what = p.worst_bound_s, p.worst_what
    return out


def run_soak(
    hours: float = 8.0,
    treadmills: int = 4,
    seed: int = 1,
    data_dir: Path | None = None,
    gap_s: tuple[float, float] = (20.0, 240.0),
    workers: int = 1,
) -> SoakStats:
    """Run the virtual-time soak to completion and return its statistics.

    Lanes are independent (each has its own simulator; the gym-wide e-stop is applied per
    lane), so ``workers`` > 1 splits them over processes, each on its own virtual clock."""
    t0 = time.perf_counter()
    workers = max(1, min(workers, treadmills))
    groups = [tuple(range(k, treadmills, workers)) for k in range(workers)]
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
        if workers == 1:
            parts = [_run_lanes(hours, treadmills, seed, str(data_dir), gap_s, groups[0])]
        else:
            ctx = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                futures = [
                    pool.submit(_run_lanes, hours, treadmills, seed, str(data_dir), gap_s, g)
                    for g in groups
                ]
                parts = [f.result() for f in futures]
    stats = merge(parts)
    stats.wall_s = time.perf_counter() - t0
    return stats


def format_table(stats: SoakStats) -> str:
    d = stats.as_dict()
    lines = [
        f"soak: {stats.sim_hours:g} simulated h x {stats.treadmills} treadmills "
        f"in {stats.wall_s:.1f} s wall",
        "",
        f"{'fault':<18} {'injected':>8} {'tripped':>8} {'no trip':>8}",
    ]
    for name in ALL_FAULTS:
        lines.append(
            f"{name:<18} {stats.injected[name]:>8} {stats.tripped[name]:>8} "
            f"{stats.no_effect[name]:>8}"
        )
    lines.append(
        f"{'total':<18} {sum(stats.injected.values()):>8} "
        f"{sum(stats.tripped.values()):>8} {sum(stats.no_effect.values()):>8}"
    )
    lines += ["", f"{'interlock':<20} {'trips':>6}"]
    for name, n in sorted(stats.interlocks.items()):
        lines.append(f"{name:<20} {n:>6}")
    lines += [
        "",
        f"stops within bound      {stats.stops_within}/{stats.stops_checked}",
        f"worst stop vs bound     {stats.worst_stop_s:.2f} s / {stats.worst_bound_s:.2f} s "
        f"({stats.worst_what})",
        f"spontaneous trips       {stats.spontaneous_trips}",
        f"link drops (escalation) {stats.link_drops}",
        f"reconnects              {stats.reconnects}",
        f"sessions recorded       {stats.sessions} ({stats.sessions_finished} finished)",
        f"samples recorded        {stats.samples}",
        f"data-kept checks        {stats.data_checks}",
        f"sessions with t_s going backwards {stats.ts_regressions}",
        f"virtual-time stalls     {stats.time_stalls}",
        f"violations              {d['violations']}",
    ]
    lines += [f"  - {v}" for v in stats.violations[:20]]
    if stats.spontaneous:
        lines.append("spontaneous trips (no fault injected; belt stopped, judged as above):")
        lines += [f"  - {v}" for v in stats.spontaneous[:20]]
    if stats.findings:
        lines.append("findings (not violations):")
        lines += [f"  - {v}" for v in stats.findings[:20]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--hours", type=float, default=8.0, help="simulated hours (default 8)")
    parser.add_argument("--treadmills", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep the session store here (default: a temp dir)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes to spread the lanes over (default: CPU count)",
    )
    parser.add_argument(
        "--broker-phase",
        action="store_true",
        help="also run the REAL-TIME daemon + mosquitto phase",
    )
    parser.add_argument("--broker-minutes", type=float, default=3.0)
    parser.add_argument("--skip-virtual", action="store_true", help="only the broker phase")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.hours <= 0 or args.treadmills < 1:
        parser.error("--hours must be > 0 and --treadmills >= 1")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.CRITICAL,
        format="%(levelname)s %(name)s: %(message)s",
    )
    violations = 0
    out: dict[str, Any] = {}
    if not args.skip_virtual:
        stats = run_soak(
            args.hours, args.treadmills, args.seed, args.data_dir, workers=args.workers
        )
        violations += len(stats.violations)
        out["virtual"] = {**stats.as_dict(), "table": format_table(stats)}
        if not args.json:
            print(format_table(stats))
    if args.broker_phase:
        from soak.broker import run_broker_phase

        broker = run_broker_phase(minutes=args.broker_minutes, seed=args.seed)
        violations += len(broker["violations"])
        out["broker"] = broker
        if not args.json:
            print()
            print(broker["table"])
    if args.json:
        print(json.dumps(out))
    elif violations:
        print(f"\n{violations} violation(s)")
    return 1 if violations else 0
