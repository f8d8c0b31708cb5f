"""The soak's hr-spike oracle (soak/virtual.py Lane._fault), on virtual time, one lane."""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path

import pytest

from soak.virtual import MAX_HR_BPM, Lane, SoakStats, _Deck
from treadctl.clock import run_virtual, wait_until
from treadctl.control import machine
from treadctl.control.controller import State
from treadctl.programs import load_builtin
from treadctl.store.db import SessionStore


def _spike(tmp_path: Path, program: str, segment: int, after_s: float):
    """Start ``program`` on a kinetic-rx2 lane, inject hr-spike ``after_s`` into
    ``segment`` (belt above 1 km/h: the oracle's "running"), judge it like the soak does."""

    async def body():
        stats = SoakStats()
        store = SessionStore(tmp_path / "lane.sqlite")
        lane = Lane(
            3,
            "kinetic-rx2",
            rng=random.Random(1),
            deck=_Deck(random.Random(1)),
            store=store,
            stats=stats,
            end_t=1e9,
            gap_s=(20.0, 240.0),
        )
        peak: list[tuple[float, float, bool]] = []  # (t, truth HR, session still running)
        beats = asyncio.create_task(lane.heartbeats())  # the soak's dead-man beat
        try:
            ctl = await lane.connect()
            task = ctl.start(load_builtin(program))
            assert await wait_until(
                lambda: (
                    ctl.snapshot.segment == segment
                    and ctl.snapshot.state is State.RUNNING
                    and abs(lane.sim.truth().speed_kmh) > 1.5
                ),
                600.0,
            )
            await wait_until(lambda: False, after_s)
            ctl.telemetry_listeners.append(
                lambda s: peak.append((lane.sim.now_s(), lane.sim.truth().hr_bpm, not task.done()))
            )
            await lane._fault("hr-spike", task)
        finally:
            beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beats
            await lane.disconnect()
            store.close()
        return stats, peak

    return run_virtual(body)


def test_hr_spike_after_the_session_ended_is_not_a_miss(tmp_path: Path) -> None:
    # quick-demo's last segment (30 s at 3 km/h): the program ends ~20 s after the spike,
    # long before a heart at ~100 bpm (tau 30 s) reaches the 165 bpm ceiling.
    stats, peak = _spike(tmp_path, "quick-demo", 4, 1.0)
    over = [(t, running) for t, hr, running in peak if hr > MAX_HR_BPM]
    assert over and not any(running for _, running in over), peak[::20]  # idle when it rose
    assert stats.tripped["hr-spike"] == 0 and stats.no_effect["hr-spike"] == 1
    assert stats.violations == []


def test_hr_spike_on_a_belt_that_runs_on_trips(tmp_path: Path) -> None:
    # backward-walk-hr-zone's 12 min reverse segment: the belt runs through the whole spike.
    stats, _ = _spike(tmp_path, "backward-walk-hr-zone", 2, 5.0)
    assert stats.tripped["hr-spike"] == 1 and stats.violations == [], stats.violations


def test_a_blind_ceiling_on_a_running_belt_is_still_a_violation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The oracle still demands the trip where it matters: ceiling check disabled.
    monkeypatch.setattr(machine, "check_heart_rate", lambda *a: (None, None))
    stats, _ = _spike(tmp_path, "backward-walk-hr-zone", 2, 5.0)
    assert stats.tripped["hr-spike"] == 0
    assert [v for v in stats.violations if "hr-spike" in v and "not detected" in v], stats
