"""The heart-rate chain on the real simulated treadmill: SimTreadmill (treadctl-reference,
FTMS Control Point, its own reverse ramps) -> belt truth -> heart model -> simulated strap ->
codec -> filter -> governor -> FTMS Set Target Speed, on virtual time. Judged from the
simulator's physics (``sim.truth()``, ``sim.trace``) and the heart model, not from the
governor's own bookkeeping. The control core is not in this loop (a scripted FTMS host is):
that wiring comes with the control core's seams (docs/heart-rate.md)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.simulator.conftest import BELT, Host, simulate
from treadctl.ftms.control_point import (
    RequestControl,
    ResultCode,
    SetTargetSpeed,
    StartOrResume,
    StopOrPause,
)
from treadctl.hr.codec import decode_heart_rate_measurement
from treadctl.hr.filter import CeilingMonitor, HRFilter
from treadctl.hr.governor import Governor, GovernorLimits
from treadctl.hr.workload import met
from treadctl.profiles import load_profile
from treadctl.simulator import SimTreadmill
from treadctl.simulator.heart import SimStrap, belt_workload

REF = load_profile("treadctl-reference")
ZONE = (100, 110)


async def governed_reverse_walk(sim: SimTreadmill, host: Host, faults: str | None,
                                seconds: int) -> dict[str, object]:
    assert await host.command(RequestControl()) == ResultCode.SUCCESS
    assert sim.handle_write(BELT, b"\x01") == 0  # reverse, at standstill
    assert await host.command(SetTargetSpeed(3.0)) == ResultCode.SUCCESS
    assert await host.command(StartOrResume()) == ResultCode.SUCCESS
    workload = belt_workload(sim.truth)
    strap = SimStrap(workload, faults=faults)
    filt, ceiling = HRFilter(), CeilingMonitor()
    gov = Governor(ZONE, GovernorLimits(2.0, 5.5, 0.1), 3.0)
    commanded = [3.0]
    hr: list[tuple[float, float]] = []
    decisions: list[str] = []
    stop_at: float | None = None
    t0 = sim.now_s()
    for _ in range(seconds):
        await asyncio.sleep(1.0)
        t = sim.now_s() - t0
        raw = strap.sample(t)
        w = met(*workload())
        r = filt.update(decode_heart_rate_measurement(raw), t, w) if raw else filt.tick(t, w)
        decisions.append(ceiling.update(r, 185).action)
        hr.append((t, strap.true_hr()))
        if stop_at is not None:
            continue
        out = gov.update(t, r)
        if out.stop:
            stop_at = t
            assert await host.command(StopOrPause(pause=False)) == ResultCode.SUCCESS
        elif out.speed_kmh != commanded[-1]:
            assert await host.command(SetTargetSpeed(out.speed_kmh)) == ResultCode.SUCCESS
            commanded.append(out.speed_kmh)
    return {"hr": hr, "commanded": commanded, "decisions": decisions, "stop_at": stop_at}


def test_governed_reverse_walk_on_the_simulator() -> None:
    async def body(sim: SimTreadmill, host: Host) -> None:
        res = await governed_reverse_walk(sim, host, None, 600)
        hr = res["hr"]
        outside = [t for t, v in hr if not ZONE[0] <= v <= ZONE[1]]  # type: ignore[union-attr]
        top = max(v for _, v in hr)  # type: ignore[union-attr]
        print(f"on the simulator: inside the zone from {max(outside):.0f} s, "
              f"max HR {top:.1f} bpm, final belt {sim.truth().speed_kmh:.2f} km/h")
        assert max(outside) <= 180
        assert top <= ZONE[1] + 8
        # The belt never sped up or slowed down harder than the profile's reverse ramps, and
        # it ran backward the whole time (simulator physics).
        moving = [p for p in sim.trace if p.speed_kmh != 0.0]
        assert all(p.speed_kmh < 0 for p in moving)
        assert max(p.accel_mps2 for p in sim.trace) <= REF.reverse.accel_mps2 + 1e-9
        assert min(p.accel_mps2 for p in sim.trace) >= -REF.reverse.decel_mps2 - 1e-9
        steps = res["commanded"]
        assert max(abs(b - a) for a, b in itertools.pairwise(steps)) <= 0.1 + 1e-9  # type: ignore[arg-type]
        assert set(res["decisions"]) == {"none"}  # type: ignore[arg-type]
        assert 4.0 <= -sim.truth().speed_kmh <= 5.5

    simulate("treadctl-reference", body)


@pytest.mark.parametrize("fault", ["dropout@200", "contact-lost@200", "fake-199@200",
                                   "stuck@200", "wrong-person@20"])
def test_strap_faults_end_in_a_controlled_stop_on_the_simulator(fault: str) -> None:
    async def body(sim: SimTreadmill, host: Host) -> None:
        res = await governed_reverse_walk(sim, host, fault, 600)
        assert res["stop_at"] is not None
        truth = sim.truth()
        assert truth.speed_kmh == 0.0 and not truth.running
        assert truth.stop_reason == "user"  # a controlled stop, not an e-stop
        assert "trip" not in res["decisions"]  # type: ignore[operator]
        # Before the stop the belt had come down to walking speed (3 km/h) and held.
        stop_t = sim.now_s() - (600 - float(res["stop_at"]))  # type: ignore[arg-type]
        before = [p for p in sim.trace if stop_t - 20 <= p.t_s < stop_t - 1]
        assert before and all(abs(p.speed_kmh + 3.0) < 1e-6 for p in before)

    simulate("treadctl-reference", body)
