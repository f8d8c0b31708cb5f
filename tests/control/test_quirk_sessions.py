"""Whole forward/reverse sessions on simulated machines that send real-world FTMS deviations.

For each firmware quirk (docs/simulator.md "Quirks") the controller must still see its
telemetry: the session finishes, and the interlocks that work from telemetry (runaway,
stuck belt) and from Machine Status (a stop at the machine) still stop the belt, judged
from the simulator's physics (``sim.truth()``, ``sim.wire_log``), not from the controller.
Each deviation is counted and reported once per connection, not once per frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from treadctl.clock import run_virtual
from treadctl.control.controller import ControlError, Controller, Outcome, State
from treadctl.control.safety import Interlock, SafetyConfig, stop_bound_s
from treadctl.profiles import load_profile
from treadctl.simulator.firmware import QUIRKS
from treadctl.transport.sim import SimTransport

from harness import motion_writes_after, program, wait_for

T = TypeVar("T")

SESSION = program(
    (20, 4.0, "forward"), (20, 3.0, "reverse", 2.0), (10, 0.0, "forward"), (20, 4.5, "forward")
)
QUIRK_SETS = [*QUIRKS, ",".join(QUIRKS)]
QUIRK_IDS = [*QUIRKS, "all"]
#: What a client reading each quirk's firmware reports (the names it notes at least once).
REPORTED = {
    "step-count": {"step-count"},
    "short-record": {"short-record"},
    "status-trailing-bytes": {"status-trailing-bytes"},
    "split-records": {"split-records"},
    "not-available": {"not-available"},
}


def with_quirks(
    scenario: Callable[[Controller, Any], Awaitable[T]],
    quirks: str,
    profile: str = "treadctl-reference",
) -> T:
    """harness.with_sim, with the simulated firmware's quirks switched on."""

    async def main() -> T:
        prof = load_profile(profile)
        transport = SimTransport(prof, quirks=quirks)
        ctl = Controller(transport, prof)
        await ctl.open()
        try:
            return await scenario(ctl, transport.sim)
        finally:
            await ctl.close()

    return run_virtual(main)


def _expected(quirks: str) -> set[str]:
    return set().union(*(REPORTED[q] for q in quirks.split(",")))


@pytest.mark.parametrize("profile", ["treadctl-reference", "kinetic-rx2"])
@pytest.mark.parametrize("quirks", QUIRK_SETS, ids=QUIRK_IDS)
def test_session_finishes_on_a_quirky_machine(
    quirks: str, profile: str, caplog: pytest.LogCaptureFixture
) -> None:
    samples: list[Any] = []
    events: list[dict[str, Any]] = []

    async def scenario(ctl: Controller, sim: Any) -> Any:
        ctl.event_listeners.append(events.append)
        to_controller = ctl.client.on_telemetry

        def tap(td: Any) -> None:
            samples.append(td)
            to_controller(td)

        ctl.client.on_telemetry = tap
        result = await ctl.start(SESSION)
        return result, list(sim.trace), dict(ctl.client.deviations), ctl.client.decode_errors

    with caplog.at_level(logging.WARNING, logger="treadctl.control.client"):
        result, trace, deviations, decode_errors = with_quirks(scenario, quirks, profile)
    # The controller got whole samples: a speed in each (split records merged), and the
    # distance, which every quirk keeps.
    assert len(samples) > 200  # 70 s at 4-10 Hz
    assert all(td.speed_kmh is not None and td.total_distance_m is not None for td in samples)
    assert result.outcome is Outcome.FINISHED, result
    assert result.segments_completed == 4
    speeds = [p.speed_kmh for p in trace]
    assert min(speeds) == pytest.approx(-3.0, abs=0.06)  # the reverse segment ran backward
    assert max(speeds) == pytest.approx(4.5, abs=0.06)
    assert abs(trace[-1].speed_kmh) < 0.01
    assert decode_errors == 0
    # Every deviation was seen, hundreds of times, and logged once.
    assert _expected(quirks) <= set(deviations), deviations
    for name in _expected(quirks) - {"status-trailing-bytes"}:
        assert deviations[name] > 100, (name, deviations)
    reports = [r for r in caplog.records if "read tolerantly" in r.getMessage()]
    assert len(reports) == len(deviations), [r.getMessage() for r in reports]
    # ... and reported once each as an event (MQTT `event`, `run` prints a note).
    noted = [e["deviation"] for e in events if e["type"] == "ftms-deviation"]
    assert sorted(noted) == sorted(set(noted)) and set(noted) <= set(deviations)
    assert _expected(quirks) - {"status-trailing-bytes"} <= set(noted)


def test_run_view_prints_a_deviation_once_as_a_note(capsys: pytest.CaptureFixture[str]) -> None:
    from treadctl.control.cli import _View
    from treadctl.ftms import DEVIATIONS

    view = _View(as_json=False, program=SESSION)
    view.event({"type": "ftms-deviation", "deviation": "step-count",
                "description": DEVIATIONS["step-count"]})
    out = capsys.readouterr().out
    assert out == f"note: this machine sends {DEVIATIONS['step-count']} (read tolerantly)\n"


@pytest.mark.parametrize("fault", ["runaway", "stuck-belt"])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("quirks", QUIRK_SETS, ids=QUIRK_IDS)
def test_interlocks_work_from_quirky_telemetry(quirks: str, direction: str, fault: str) -> None:
    prof = load_profile("treadctl-reference")
    seg = 1 if direction == "forward" else 2
    target = SESSION.segments[seg - 1].speed_kmh

    async def scenario(ctl: Controller, sim: Any) -> None:
        session = ctl.start(SESSION)
        cruising = await wait_for(
            lambda: ctl.snapshot.segment == seg
            and ctl.snapshot.state is State.RUNNING
            and abs(abs(sim.truth().speed_kmh) - target) < 0.05,
            120,
        )
        assert cruising, f"never cruised in segment {seg}: {ctl.snapshot} {sim.truth()}"
        assert not ctl.latch.latched
        sim.inject(fault)
        if fault == "stuck-belt":  # shows when the speed must change: ask for one
            with contextlib.suppress(ControlError):
                ctl.set_manual(speed_kmh=target - 1.0)
        assert await wait_for(lambda: ctl.latch.latched, 30), f"{fault} not detected"
        trip = ctl.latch.trip
        assert trip is not None
        assert trip.interlock in (Interlock.OVERSPEED, Interlock.TRACKING_ERROR), trip
        t_trip = sim.now_s()
        # The one stop bound (treadctl.control.safety), from the faster of the segment's
        # speed and the belt's at the trip (a runaway is past its target by then).
        bound = stop_bound_s(prof, SafetyConfig(), max(target, abs(sim.truth().speed_kmh)))
        stopped = await wait_for(lambda: sim.truth().speed_kmh == 0.0, bound)
        assert stopped, f"belt still at {sim.truth().speed_kmh} km/h after the trip"
        result = await asyncio.wait_for(session, 30)
        assert result.outcome in (Outcome.ESTOPPED, Outcome.ERROR)
        await asyncio.sleep(3.0)
        assert motion_writes_after(sim, t_trip) == []
        assert sim.truth().speed_kmh == 0.0

    with_quirks(scenario, quirks)


@pytest.mark.parametrize("quirks", ["status-trailing-bytes", ",".join(QUIRKS)], ids=["one", "all"])
def test_a_stop_at_the_machine_is_seen_with_trailing_status_bytes(quirks: str) -> None:
    """CITYSPORTS sends 02 01 00 for Stop pressed at the machine: the controller must see it
    (strict decoding dropped it as undecodable and the session ran on)."""

    async def scenario(ctl: Controller, sim: Any) -> None:
        session = ctl.start(SESSION)
        cruising = await wait_for(
            lambda: ctl.snapshot.segment == 2
            and ctl.snapshot.state is State.RUNNING
            and abs(sim.truth().speed_kmh + 3.0) < 0.05,
            120,
        )
        assert cruising
        sim.press_stop()
        assert await wait_for(lambda: ctl.latch.latched, 5), "stop at the machine not seen"
        trip = ctl.latch.trip
        assert trip is not None and trip.interlock is Interlock.MACHINE_STOP, trip
        t_trip = sim.now_s()
        assert await wait_for(lambda: sim.truth().speed_kmh == 0.0, 10)
        await asyncio.wait_for(session, 30)
        assert motion_writes_after(sim, t_trip) == []
        assert ctl.client.decode_errors == 0
        assert ctl.client.deviations["status-trailing-bytes"] >= 1

    with_quirks(scenario, quirks)


def test_each_session_reports_a_deviation_once_on_a_kept_connection() -> None:
    """A daemon lane keeps its connection across sessions: each session's events (and
    record) say once what the machine sends, not only the first session's."""
    events: list[dict[str, Any]] = []
    short = program((6, 3.0, "forward"))

    async def scenario(ctl: Controller, sim: Any) -> None:
        ctl.event_listeners.append(events.append)
        await wait_for(lambda: "step-count" in ctl.client.deviations, 5)
        for _ in range(2):
            result = await ctl.start(short)
            assert result.outcome is Outcome.FINISHED, result

    with_quirks(scenario, "step-count")
    per_session: list[list[str]] = []
    for e in events:
        if e["type"] == "session-start":
            per_session.append([])
        elif e["type"] == "ftms-deviation" and per_session:
            per_session[-1].append(e["deviation"])
    assert per_session == [["step-count"], ["step-count"]], events
