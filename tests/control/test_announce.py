"""Announcements (``upcoming``): every direction change, a rear-facing turn included, and
every program step up by more than ``motion.announce_step_kmh`` is announced at least
``motion.announce_s`` before the belt's motion changes for it, judged from the
simulator's physics (its trace marks every change of acceleration) on virtual time."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from treadctl.cli import main
from treadctl.clock import run_virtual
from treadctl.control.announce import DIRECTION_CHANGE, SPEED_INCREASE, planned_changes
from treadctl.control.controller import Controller, Outcome
from treadctl.profiles import FirmwareProfile, ProfileError, list_profiles, load_profile
from treadctl.programs.model import load_builtin
from treadctl.store.integration import controller_recorder_factory
from treadctl.transport.sim import SimTransport

from harness import program, wait_for

#: forward 3 -> reverse 2 -> forward 3 -> stand still -> reverse 2 (4 direction changes).
TURNS = program(
    (30, 3.0, "forward"), (30, 2.0, "reverse"), (30, 3.0, "forward"), (10, 0.0, "forward"),
    (20, 2.0, "reverse"),
)
#: forward steps of +0.5, +1.0 (not above 1.0), +1.5, -2.0, to 0, then 0 -> 2.0.
STEPS = program(
    (30, 3.0, "forward"), (30, 3.5, "forward"), (30, 4.5, "forward"), (30, 6.0, "forward"),
    (30, 4.0, "forward"), (10, 0.0, "forward"), (30, 2.0, "forward"),
)


def _session(
    prog: Any, profile: str | FirmwareProfile, *, rear_facing: bool = False,
    record: Path | None = None,
) -> tuple[Any, list[tuple[float, dict[str, Any]]], list[Any], Any]:
    prof = load_profile(profile) if isinstance(profile, str) else profile
    factory = (
        controller_recorder_factory(
            data_dir=record, treadmill_id="t1", device="sim://", profile=prof.name
        )
        if record is not None
        else None
    )

    async def run() -> Any:
        transport = SimTransport(prof)
        ctl = Controller(transport, prof, rear_facing=rear_facing, recorder_factory=factory)
        events: list[tuple[float, dict[str, Any]]] = []
        ctl.event_listeners.append(lambda e: events.append((transport.sim.now_s(), e)))
        await ctl.open()
        try:
            task = ctl.start(prog)
            while not task.done():
                await wait_for(lambda: ctl.turn_pending is not None or task.done(), 600)
                if ctl.turn_pending is not None:
                    ctl.resume()
            return await task, events, list(transport.sim.trace)
        finally:
            await ctl.close()

    result, events, trace = run_virtual(run)
    return result, events, trace, factory.store if factory is not None else None


def _upcoming(events: list[tuple[float, dict[str, Any]]]) -> list[tuple[float, dict[str, Any]]]:
    return [(t, e) for t, e in events if e["type"] == "upcoming" and e["what"] != "start"]


def _change_begins(trace: list[Any], t_s: float, event: dict[str, Any]) -> Any:
    """Where the belt's motion changes for the announced change, after ``t_s`` (sim truth:
    the trace marks every change of acceleration): it starts to slow for a turn while
    moving, and to speed up for a faster step or a turn from a standstill."""
    slowing = event["what"] == DIRECTION_CHANGE and event["from_speed_kmh"] > 0
    return next(
        p for p in trace
        if p.t_s > t_s and (p.accel_mps2 < 0 if slowing else p.accel_mps2 > 0)
    )


@pytest.mark.parametrize("profile", ["treadctl-reference", "kinetic-rx2"])
def test_every_direction_change_is_announced_at_least_5_s_before_the_belt_changes(
    profile: str,
) -> None:
    result, events, trace, _ = _session(TURNS, profile)
    assert result.outcome is Outcome.FINISHED
    announced = _upcoming(events)
    assert [e["segment"] for _, e in announced] == [2, 3, 5]  # seg 4 slows: not announced
    assert all(e["what"] == DIRECTION_CHANGE for _, e in announced)
    lead = load_profile(profile).motion.announce_s
    assert lead >= 5.0
    for t_event, event in announced:
        seg = TURNS.segments[event["segment"] - 1]
        assert event["direction"] == seg.direction.value
        assert event["speed_kmh"] == seg.speed_kmh
        assert event["in_s"] >= lead
        change = _change_begins(trace, t_event, event)
        assert change.t_s - t_event >= lead - 1e-6, (event, change)


def test_a_rear_facing_turn_is_announced_before_the_belt_slows() -> None:
    prog = program((30, 4.0, "forward"), (30, 3.0, "reverse"), (30, 4.0, "forward"))
    result, events, trace, _ = _session(prog, "generic-ftms", rear_facing=True)
    assert result.outcome is Outcome.FINISHED
    announced = _upcoming(events)
    assert [(e["segment"], e["what"], e["direction"]) for _, e in announced] == [
        (2, DIRECTION_CHANGE, "reverse"), (3, DIRECTION_CHANGE, "forward"),
    ]
    for t_event, event in announced:
        change = _change_begins(trace, t_event, event)
        assert change.t_s - t_event >= 5.0 - 1e-6
    # The turn-around comes after the announcement, with the belt standing.
    t_turns = [t for t, e in events if e["type"] == "turn-around"]
    assert len(t_turns) == 2 and all(t > announced[0][0] for t in t_turns)


def test_big_speed_increases_are_announced_and_small_ones_are_not() -> None:
    result, events, trace, _ = _session(STEPS, "generic-ftms")
    assert result.outcome is Outcome.FINISHED
    announced = _upcoming(events)
    # +1.5 (segment 4) and 0 -> 2.0 (segment 7); not +0.5, not +1.0 (= the step), not -2.0.
    assert [(e["segment"], e["what"]) for _, e in announced] == [
        (4, SPEED_INCREASE), (7, SPEED_INCREASE),
    ]
    assert [(e["from_speed_kmh"], e["speed_kmh"]) for _, e in announced] == [(4.5, 6.0),
                                                                              (0.0, 2.0)]
    for t_event, event in announced:
        change = _change_begins(trace, t_event, event)
        assert change.t_s - t_event >= 5.0 - 1e-6  # the belt speeds up 5 s after


def test_the_step_and_the_lead_come_from_the_profile() -> None:
    prof = load_profile("generic-ftms")
    assert (prof.motion.announce_step_kmh, prof.motion.announce_s) == (1.0, 5.0)
    custom = dataclasses.replace(
        prof, motion=dataclasses.replace(prof.motion, announce_step_kmh=1.6, announce_s=8.0)
    )
    result, events, trace, _ = _session(STEPS, custom)
    assert result.outcome is Outcome.FINISHED
    announced = _upcoming(events)
    assert [e["segment"] for _, e in announced] == [7]  # +1.5 is no longer above the step
    t_event, event = announced[0]
    assert event["in_s"] == 8.0
    assert _change_begins(trace, t_event, event).t_s - t_event >= 8.0 - 1e-6


def test_profile_fields_have_defaults_and_a_5_s_minimum(tmp_path: Path) -> None:
    for prof in list_profiles():  # the shipped files need no change
        assert prof.motion.announce_s >= 5.0 and prof.motion.announce_step_kmh > 0
    text = (Path(load_profile("generic-ftms").source)).read_text()
    for line, message in [
        ("announce_s = 3.0", "motion.announce_s must be at least 5"),
        ("announce_step_kmh = 0.0", "motion.announce_step_kmh must be > 0"),
    ]:
        path = tmp_path / "p.toml"
        path.write_text(text.replace("[motion]\n", f"[motion]\n{line}\n"))
        with pytest.raises(ProfileError, match=message):
            load_profile(str(path))
    path.write_text(text.replace("[motion]\n", "[motion]\nannounce_s = 7.5\n"))
    assert load_profile(str(path)).motion.announce_s == 7.5


def test_planned_changes() -> None:
    changes = planned_changes(TURNS, 1.0)
    assert [(c.at_s, c.segment, c.direction.value, c.from_speed_kmh, c.speed_kmh)
            for c in changes] == [
        (30.0, 2, "reverse", 3.0, 2.0), (60.0, 3, "forward", 2.0, 3.0),
        (100.0, 5, "reverse", 0.0, 2.0),
    ]
    assert [c.segment for c in planned_changes(STEPS, 1.0)] == [4, 7]
    assert [c.segment for c in planned_changes(STEPS, 0.4)] == [2, 3, 4, 7]


@pytest.mark.parametrize("profile", ["treadctl-reference", "kinetic-rx2"])
def test_listed_durations_still_hold(profile: str) -> None:
    prog = load_builtin("quick-demo")
    result, events, _, _ = _session(prog, profile)
    assert result.outcome is Outcome.FINISHED
    assert _upcoming(events)  # it has changes to announce ...
    assert abs(result.elapsed_s - prog.total_duration_s) <= 0.2  # ... and keeps its time


def test_the_session_record_has_the_announcements(tmp_path: Path) -> None:
    result, _, _, store = _session(TURNS, "treadctl-reference", record=tmp_path)
    recorded = [e for e in store.events(result.session_id) if e.type == "upcoming"]
    assert [e.data["segment"] for e in recorded] == [2, 3, 5]
    assert all(e.data["in_s"] >= 5.0 and e.data["direction"] for e in recorded)


def test_run_json_shows_the_countdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        'name = "p"\n'
        '[[segment]]\nduration_s = 20\nspeed_kmh = 3.0\ndirection = "forward"\n'
        '[[segment]]\nduration_s = 20\nspeed_kmh = 5.0\ndirection = "forward"\n'
    )
    rc = main(["run", str(path), "--profile", "generic-ftms", "--speedup", "max", "--json",
               "--no-record"])
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    counting = [line for line in lines[:-1] if line.get("upcoming")]
    assert {line["upcoming"]["in_s"] for line in counting} >= {5, 4, 3, 2, 1}
    assert all(line["segment"] == 1 for line in counting)  # inside the segment before
    first = counting[0]["upcoming"]
    assert first == {"what": "speed-increase", "direction": "forward", "speed_kmh": 5.0,
                     "in_s": 5}
    assert all(line["upcoming"] is None for line in lines[:-1] if line["segment"] == 2)


def _pause_and_resume(profile: str, *, stop_in_countdown: bool = False) -> Any:
    prof = load_profile(profile)
    prog = program((120, 3.0, "reverse"))

    async def run() -> Any:
        transport = SimTransport(prof)
        ctl = Controller(transport, prof)
        events: list[tuple[float, dict[str, Any]]] = []
        ctl.event_listeners.append(lambda e: events.append((transport.sim.now_s(), e)))
        await ctl.open()
        try:
            task = ctl.start(prog)
            await wait_for(lambda: abs(transport.sim.truth().speed_kmh) > 2.9, 120)
            ctl.pause()
            await wait_for(lambda: ctl.snapshot.state.value == "paused", 60)
            t_resume = transport.sim.now_s()
            ctl.resume()
            if stop_in_countdown:
                await wait_for(lambda: transport.sim.now_s() >= t_resume + 2.0, 10)
                await ctl.stop("changed my mind")
            return await task, events, list(transport.sim.trace), t_resume
        finally:
            await ctl.close()

    return run_virtual(run)


@pytest.mark.parametrize("profile", ["treadctl-reference", "kinetic-rx2"])
def test_a_resume_is_announced_before_the_belt_starts_again(profile: str) -> None:
    """A resume (an operator's cmd/resume too) starts the belt only announce_s after its
    ``upcoming`` start event: nobody on a standing belt is surprised by it moving."""
    result, events, trace, t_resume = _pause_and_resume(profile)
    assert result.outcome is Outcome.FINISHED
    lead = load_profile(profile).motion.announce_s
    starts = [(t, e) for t, e in events if e["type"] == "upcoming" and t >= t_resume]
    assert len(starts) == 1, starts
    t_event, event = starts[0]
    assert event["what"] == "start" and event["in_s"] == lead
    assert event["direction"] == "reverse" and event["speed_kmh"] == 3.0
    moving = next(p for p in trace if p.t_s > t_event and p.accel_mps2 > 0)
    assert moving.t_s - t_event >= lead - 1e-6
    # The listed duration still holds: the countdown is paused time, not program time.
    assert result.elapsed_s == pytest.approx(120, abs=1.0)


def test_a_stop_during_the_resume_countdown_never_moves_the_belt() -> None:
    result, _events, trace, t_resume = _pause_and_resume("treadctl-reference",
                                                         stop_in_countdown=True)
    assert result.outcome is Outcome.STOPPED
    assert not any(p.t_s > t_resume and p.accel_mps2 > 0 for p in trace)
