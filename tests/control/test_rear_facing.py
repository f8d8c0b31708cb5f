"""Rear-facing mode (forward-only treadmills): reverse segments run with the belt forward
while the user faces the rear, every turn stops the belt and waits for a confirmation
(never a timer), and the reverse cap and ramps apply. Judged from the simulator's physics
(sim truth) on virtual time; the CLI in real processes, Enter on a pipe or a pty."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from treadctl.clock import run_virtual
from treadctl.control.controller import ControlError, Controller, Outcome, State
from treadctl.control.safety import Interlock
from treadctl.limits import Limits, LimitsError, effective_limits
from treadctl.profiles import FirmwareProfile, load_profile
from treadctl.programs.validate import check_program, validate_program
from treadctl.store.db import SessionStore
from treadctl.store.integration import controller_recorder_factory
from treadctl.transport.sim import SimTransport
from treadctl.types import KMH_PER_MPS

from harness import motion_writes_after, program, wait_for

PROFILE = "generic-ftms"
#: forward 4.0 -> reverse 3.0 -> forward 4.0, 100 s listed.
FRR = program((30, 4.0, "forward"), (40, 3.0, "reverse"), (30, 4.0, "forward"))
WAIT_S = 600.0  # ten minutes of virtual time without a confirmation


def _run(scenario: Any, *, site_limits: Limits | None = None, record: Path | None = None,
         profile: str | FirmwareProfile = PROFILE) -> Any:
    factory = (
        controller_recorder_factory(
            data_dir=record, treadmill_id="t1", device="sim://", profile=PROFILE
        )
        if record is not None
        else None
    )

    async def main() -> Any:
        prof = load_profile(profile) if isinstance(profile, str) else profile
        transport = SimTransport(prof)
        ctl = Controller(
            transport, prof, rear_facing=True, site_limits=site_limits, recorder_factory=factory
        )
        events: list[tuple[float, dict[str, Any]]] = []
        ctl.event_listeners.append(lambda e: events.append((transport.sim.now_s(), e)))
        await ctl.open()
        try:
            return await scenario(ctl, transport.sim, events)
        finally:
            await ctl.close()

    out = run_virtual(main)
    if factory is not None:
        return out, factory.store
    return out


def _ramp_rate_mps2(trace: list[Any], t0: float, t1: float, lo: float, hi: float) -> float:
    """Average acceleration of the belt from ``lo`` to ``hi`` km/h within [t0, t1]."""
    window = [p for p in trace if t0 <= p.t_s <= t1]
    t_lo = next(p.t_s for p in window if p.speed_kmh >= lo)
    t_hi = next(p.t_s for p in window if p.speed_kmh >= hi)
    return (hi - lo) / KMH_PER_MPS / (t_hi - t_lo)


def test_forward_reverse_forward_stops_at_each_turn_and_waits_for_the_confirmation(
    tmp_path: Path,
) -> None:
    async def scenario(ctl: Controller, sim: Any, events: list[Any]) -> Any:
        task = ctl.start(FRR)
        waits: list[dict[str, Any]] = []
        while not task.done():
            if ctl.turn_pending is None:
                await wait_for(lambda: ctl.turn_pending is not None or task.done(), 300)
                continue
            t_prompt = sim.now_s()
            truth = sim.truth()
            snap = ctl.snapshot
            await wait_for(lambda: False, WAIT_S)  # nobody confirms for ten minutes
            waits.append({
                "t_prompt": t_prompt,
                "speed_at_prompt": truth.speed_kmh,
                "state": (snap.state, snap.phase),
                "still_pending": ctl.turn_pending,
                "moved": max(abs(p.speed_kmh) for p in sim.trace if p.t_s >= t_prompt),
                "motion_writes": motion_writes_after(sim, t_prompt),
                "speed_after_wait": sim.truth().speed_kmh,
            })
            t_confirm = sim.now_s()
            ctl.resume()  # the confirmation
            waits[-1]["t_confirm"] = t_confirm
        return await task, waits, list(sim.trace), events

    # Commands paced fast enough that the ramps, not the link, set the belt's acceleration.
    prof = load_profile(PROFILE)
    fast = dataclasses.replace(
        prof, control=dataclasses.replace(prof.control, min_command_interval_ms=50,
                                          ack_delay_ms=10)
    )
    (result, waits, trace, events), store = _run(scenario, record=tmp_path, profile=fast)
    assert result.outcome is Outcome.FINISHED and result.segments_completed == 3
    # The belt never ran backward, and stood at each of the two turns.
    assert min(p.speed_kmh for p in trace) >= 0.0
    assert {p.direction.value for p in trace} == {"forward"}
    assert len(waits) == 2
    for w in waits:
        assert w["speed_at_prompt"] == 0.0
        assert w["state"] == (State.PAUSED, "turn-around")
        assert w["still_pending"] is not None  # ten minutes later, still waiting
        assert w["moved"] == 0.0 and w["speed_after_wait"] == 0.0
        assert w["motion_writes"] == [], "a motion command went out before the confirmation"
    # Nothing moved between a prompt and its confirmation, then it moved again.
    for w in waits:
        assert all(p.speed_kmh == 0.0 for p in trace if w["t_prompt"] <= p.t_s <= w["t_confirm"])
        assert any(p.speed_kmh > 1.0 for p in trace if p.t_s > w["t_confirm"])
    # Asked to face the rear, then the console again.
    turns = [e for _, e in events if e["type"] == "turn-around"]
    assert [e["face"] for e in turns] == ["reverse", "forward"]
    assert [e["type"] for _, e in events].count("turn-confirmed") == 2
    # The waits do not count: the session took its listed time (100 s).
    assert abs(result.elapsed_s - FRR.total_duration_s) <= 0.5, result.elapsed_s
    # The reverse segment ramped at the reverse acceleration, the forward ones at theirs.
    lim = effective_limits(prof, rear_facing=True)
    w1, w2 = waits
    rev_rate = _ramp_rate_mps2(trace, w1["t_confirm"], w2["t_prompt"], 1.2, 2.8)
    fwd_rate = _ramp_rate_mps2(trace, w2["t_confirm"], trace[-1].t_s, 1.2, 2.8)
    assert rev_rate <= lim.reverse_accel_mps2 * 1.1, rev_rate
    assert fwd_rate > lim.reverse_accel_mps2 * 1.3, fwd_rate  # the two differ: it can fail
    # The session's record has the turns.
    recorded = [e.type for e in store.events(result.session_id)]
    assert recorded.count("turn-around") == 2 and recorded.count("turn-confirmed") == 2


def test_a_program_that_starts_in_reverse_asks_before_the_first_start() -> None:
    prog = program((20, 2.0, "reverse"), (20, 3.0, "forward"))

    async def scenario(ctl: Controller, sim: Any, events: list[Any]) -> Any:
        task = ctl.start(prog)
        await wait_for(lambda: ctl.turn_pending is not None, 10)
        asked = ctl.turn_pending
        await wait_for(lambda: False, 120)
        before = (sim.truth().speed_kmh, sim.truth().running, motion_writes_after(sim, 0.0))
        ctl.resume()
        await wait_for(lambda: sim.truth().speed_kmh > 1.5, 60)
        task.cancel()  # shutdown: the belt is commanded to stop
        return asked, before, await task

    asked, before, result = _run(scenario)
    assert asked is not None and asked.value == "reverse"
    assert before == (0.0, False, [])
    assert result.outcome is Outcome.STOPPED


def test_a_confirmation_before_the_prompt_does_not_count() -> None:
    async def scenario(ctl: Controller, sim: Any, events: list[Any]) -> Any:
        task = ctl.start(FRR)
        await wait_for(lambda: sim.truth().speed_kmh > 3.9, 60)
        with pytest.raises(ControlError):
            ctl.resume()  # nothing waits for a confirmation yet
        await wait_for(lambda: ctl.turn_pending is not None, 60)
        t_prompt = sim.now_s()
        await wait_for(lambda: False, 60)
        moved = motion_writes_after(sim, t_prompt)
        await ctl.stop()
        return moved, await task

    moved, result = _run(scenario)
    assert moved == [] and result.outcome is Outcome.STOPPED


def test_countdown_between_confirmation_and_start() -> None:
    """Confirmed at the console, the user still has to turn: the belt starts only after
    motion.announce_s, announced as `upcoming` (what = start)."""

    async def scenario(ctl: Controller, sim: Any, events: list[Any]) -> Any:
        task = ctl.start(FRR)
        await wait_for(lambda: ctl.turn_pending is not None, 60)
        ctl.resume()
        t_confirm = sim.now_s()
        await wait_for(lambda: sim.truth().speed_kmh > 0.0, 60)
        t_moving = sim.now_s()
        await ctl.stop()
        await task
        return t_confirm, t_moving, events

    t_confirm, t_moving, events = _run(scenario)
    lead = load_profile(PROFILE).motion.announce_s
    assert t_moving - t_confirm >= lead
    starts = [(t, e) for t, e in events if e["type"] == "upcoming" and e["what"] == "start"]
    assert len(starts) == 1
    t_event, event = starts[0]
    assert event["direction"] == "reverse" and event["in_s"] == lead
    assert t_moving - t_event >= lead


def test_stop_while_waiting_is_a_controlled_stop() -> None:
    async def scenario(ctl: Controller, sim: Any, events: list[Any]) -> Any:
        task = ctl.start(FRR)
        await wait_for(lambda: ctl.turn_pending is not None, 60)
        t = sim.now_s()
        await ctl.stop()
        result = await task
        return result, ctl.latch.latched, motion_writes_after(sim, t), sim.truth()

    result, latched, writes, truth = _run(scenario)
    assert result.outcome is Outcome.STOPPED and not latched
    assert writes == [] and truth.speed_kmh == 0.0 and not truth.running


def test_estop_while_waiting_latches_and_nothing_moves() -> None:
    async def scenario(ctl: Controller, sim: Any, events: list[Any]) -> Any:
        task = ctl.start(FRR)
        await wait_for(lambda: ctl.turn_pending is not None, 60)
        t = sim.now_s()
        ctl.estop("operator")
        result = await task
        with pytest.raises(ControlError):
            ctl.resume()  # latched: no confirmation moves anything
        await wait_for(lambda: False, 30)
        return result, motion_writes_after(sim, t), sim.truth()

    result, writes, truth = _run(scenario)
    assert result.outcome is Outcome.ESTOPPED
    assert writes == [] and truth.speed_kmh == 0.0


def test_the_dead_man_heartbeat_still_applies_while_waiting() -> None:
    prog = program((20, 3.0, "forward"), (20, 2.0, "reverse"), heartbeat_s=3.0)

    async def scenario(ctl: Controller, sim: Any, events: list[Any]) -> Any:
        task = ctl.start(prog)
        while ctl.turn_pending is None and not task.done():
            ctl.heartbeat()
            await wait_for(lambda: False, 1.0)
        assert ctl.turn_pending is not None
        t_last = sim.now_s()  # the heartbeats stop now, while the turn waits
        result = await task
        return result, ctl.latch.trip, sim.now_s() - t_last, sim.truth()

    result, trip, after_s, truth = _run(scenario)
    assert result.outcome is Outcome.ESTOPPED
    assert trip is not None and trip.interlock is Interlock.HEARTBEAT_MISSED
    assert after_s < 10 and truth.speed_kmh == 0.0


def test_reverse_segments_obey_the_reverse_cap() -> None:
    prof = load_profile(PROFILE)
    lim = effective_limits(prof, rear_facing=True)
    assert lim.reverse_max_speed_kmh == 6.0 < lim.max_speed_kmh
    too_fast = program((20, 3.0, "forward"), (20, 6.5, "reverse"))
    problems = validate_program(too_fast, lim)
    assert [v.field for v in problems] == ["speed_kmh"]
    assert "reverse cap" in str(problems[0])
    # Forward, the same speed is fine; reverse without the mode is refused outright.
    assert validate_program(program((20, 6.5, "forward")), lim) == []
    plain = validate_program(too_fast, effective_limits(prof))
    assert any(v.field == "direction" for v in plain)
    assert check_program(program((20, 3.0, "reverse")), prof, rear_facing=True).ok
    # A site's reverse cap tightens it; the controller refuses before anything moves.

    async def scenario(ctl: Controller, sim: Any, events: list[Any]) -> Any:
        with pytest.raises(ControlError, match="reverse cap"):
            ctl.start(program((20, 3.0, "forward"), (20, 4.5, "reverse")))
        with pytest.raises(ControlError, match="reverse cap"):
            ctl.start(too_fast)
        return motion_writes_after(sim, -1.0)

    assert _run(scenario, site_limits=Limits(reverse_max_speed_kmh=4.0)) == []


def test_manual_speed_in_a_reverse_segment_is_held_to_the_reverse_cap() -> None:
    async def scenario(ctl: Controller, sim: Any, events: list[Any]) -> Any:
        task = ctl.start(program((30, 2.0, "reverse"), (30, 3.0, "forward")))
        await wait_for(lambda: ctl.turn_pending is not None, 10)
        ctl.resume()
        await wait_for(lambda: ctl.snapshot.state is State.RUNNING, 60)
        with pytest.raises(ControlError, match="reverse"):
            ctl.set_manual(speed_kmh=6.5)  # forward it would be fine (16 km/h)
        ctl.set_manual(speed_kmh=2.5)
        await wait_for(lambda: ctl.snapshot.segment == 2 and ctl.turn_pending is not None, 60)
        ctl.resume()
        await wait_for(lambda: ctl.snapshot.state is State.RUNNING and sim.truth().speed_kmh
                       > 1.0, 60)
        ctl.set_manual(speed_kmh=6.5)
        await ctl.stop()
        await task
        return sim.trace

    trace = _run(scenario)
    assert min(p.speed_kmh for p in trace) >= 0.0


def test_refused_on_a_profile_that_can_reverse() -> None:
    ref = load_profile("treadctl-reference")

    async def main() -> Any:
        transport = SimTransport(ref)
        with pytest.raises(ValueError, match="forward-only"):
            Controller(transport, ref, rear_facing=True)
        with pytest.raises(RuntimeError, match="only after connect"):
            transport.sim  # noqa: B018 (the link was never opened: no simulator exists)
        return None

    assert run_virtual(main) is None  # the link was never opened: nothing moved
    with pytest.raises(LimitsError, match="forward-only"):
        effective_limits(ref, rear_facing=True)


# ------------------------------------------------------------------ treadctl run


def _rf_program(tmp_path: Path) -> str:
    path = tmp_path / "rf.toml"
    path.write_text(
        'name = "rf"\n'
        '[[segment]]\nduration_s = 20\nspeed_kmh = 3.0\ndirection = "forward"\n'
        '[[segment]]\nduration_s = 20\nspeed_kmh = 2.0\ndirection = "reverse"\n'
        '[[segment]]\nduration_s = 20\nspeed_kmh = 3.0\ndirection = "forward"\n'
    )
    return str(path)


def _popen(tmp_path: Path, stdin: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "treadctl", "run", _rf_program(tmp_path), "--profile", PROFILE,
         "--rear-facing", "--speedup", "max", "--json", "--data-dir", str(tmp_path)],
        stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_run_rear_facing_with_enter_on_a_pipe_completes(tmp_path: Path) -> None:
    proc = _popen(tmp_path, subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    lines: list[dict[str, Any]] = []
    prompts = 0
    for text in proc.stdout:
        line = json.loads(text)
        lines.append(line)
        if line.get("prompt") and line.get("phase") == "turn-around":
            prompts += 1
            proc.stdin.write("\n")
            proc.stdin.flush()
        if line.get("summary"):
            break
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    summary = lines[-1]
    assert summary["outcome"] == "finished" and summary["belt_stopped"] is True, summary
    assert summary["segments_completed"] == 3
    assert prompts >= 2
    asked = {line["prompt"] for line in lines[:-1] if line.get("prompt")}
    assert any("rear" in p and "Enter" in p for p in asked), asked
    assert any(line.get("phase") == "countdown" for line in lines[:-1])
    assert any(line["direction"] == "reverse" and line["speed_kmh"] > 1.5 for line in lines[:-1])
    store = SessionStore(tmp_path / "sessions.db")
    try:
        types = [e.type for e in store.events(store.get_session(summary["session_id"]).id)]
        assert types.count("turn-around") == 2, types
    finally:
        store.close()


def test_ctrl_c_while_waiting_for_the_turn_is_a_controlled_stop(tmp_path: Path) -> None:
    master, slave = os.openpty()  # Enter would come from a terminal: nobody presses it
    try:
        proc = _popen(tmp_path, slave)
        assert proc.stdout is not None
        for text in proc.stdout:
            if '"phase": "turn-around"' in text and '"prompt": "' in text:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    summary = [json.loads(x) for x in out.splitlines() if x.startswith("{")][-1]
    assert summary["outcome"] == "stopped" and summary["belt_stopped"] is True
    assert summary["segments_completed"] == 1


def test_run_rear_facing_is_refused_on_a_reversing_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from treadctl.cli import main

    rc = main(["run", "quick-demo", "--profile", "treadctl-reference", "--rear-facing",
               "--speedup", "max", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "forward-only" in err and "nothing moved" in err
    assert not (tmp_path / "sessions.db").exists() or not SessionStore(
        tmp_path / "sessions.db"
    ).list_sessions()


def test_the_live_panel_asks_to_turn_and_counts_down() -> None:
    """The terminal's live panel (rich), fed by a real session: the countdown before the
    turn, the question while the belt stands, the countdown to the start after Enter."""
    from rich.console import Console

    from treadctl.control.cli import _View

    frames: list[str] = []
    console = Console(width=120, record=True, file=open(os.devnull, "w"))  # noqa: SIM115

    class FakeLive:
        def update(self, renderable: Any, refresh: bool = False) -> None:
            console.print(renderable)
            frames.append(console.export_text())

        def stop(self) -> None:
            pass

    view = _View(False, FRR, rear_facing=True)
    view._live = FakeLive()

    async def scenario(ctl: Controller, sim: Any, events: list[Any]) -> Any:
        view.clock, view.session_time = ctl.clock, ctl.session_elapsed_s
        ctl.state_listeners.append(view.update)
        ctl.telemetry_listeners.append(view.update)
        ctl.event_listeners.append(view.event)
        task = ctl.start(FRR)
        await wait_for(lambda: ctl.turn_pending is not None, 60)
        waiting = len(frames)
        ctl.resume()
        await wait_for(lambda: sim.truth().speed_kmh > 1.0, 60)
        await ctl.stop()
        await task
        return waiting

    waiting = _run(scenario)
    before, after = frames[:waiting], frames[waiting:]
    assert any("next" in f and "direction change: reverse 3.0 km/h in 5 s" in f for f in before)
    assert any("in 1 s" in f for f in before)
    assert "TURN AROUND" in before[-1] and "face the rear" in before[-1]
    assert "press Enter" in before[-1] and "paused (turn-around)" in before[-1]
    assert "rear-facing: the belt runs forward" in before[-1]
    assert any("belt starts: reverse 3.0 km/h in 5 s" in f for f in after)
    assert not any("TURN AROUND" in f for f in after[1:])


def test_a_pause_in_a_reverse_segment_resumes_forward_without_a_new_turn() -> None:
    async def scenario(ctl: Controller, sim: Any, events: list[Any]) -> Any:
        task = ctl.start(FRR)
        await wait_for(lambda: ctl.turn_pending is not None, 60)
        ctl.resume()  # confirms the turn to reverse
        await wait_for(lambda: sim.truth().speed_kmh > 2.9, 60)
        ctl.pause()
        await wait_for(lambda: ctl.snapshot.state is State.PAUSED, 30)
        paused = (ctl.turn_pending, ctl.snapshot.phase, sim.truth().speed_kmh)
        ctl.resume()  # a resume: no turn is asked for
        await wait_for(lambda: sim.truth().speed_kmh > 2.9, 60)
        resumed = (ctl.snapshot.direction.value, sim.truth().direction.value)
        await ctl.stop()
        await task
        return paused, resumed, [e["type"] for _, e in events]

    paused, resumed, types = _run(scenario)
    assert paused == (None, None, 0.0)
    assert resumed == ("reverse", "forward")  # the user walks backward, the belt forward
    assert types.count("turn-around") == 1 and "resumed" in types
