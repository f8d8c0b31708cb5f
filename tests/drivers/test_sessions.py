"""Each native driver against its simulator personality in another process, over a real
pty (serial) or TCP socket: start, speed, a direction change at measured standstill
confirmed by read-back, stop; a pulled safety key; SIGKILL of the host. Judged from the
simulator's physics (its event lines carry ``sim.truth()`` at each event)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from treadctl import clock
from treadctl.drivers import make_driver
from treadctl.drivers.base import Danger, MotionBlocked, Telemetry
from treadctl.profiles import load_profile
from treadctl.types import Direction

from helpers import SPEEDUP, SimProcess, wait_for

REVERSING = ["biodex-rtm400", "woodway-serial", "bertec-treadmill"]
ALL = [*REVERSING, "trackmaster-tmx428"]
HERE = Path(__file__).resolve().parent


def _standstill(driver: Any) -> bool:
    t = driver.last_telemetry
    return t is not None and abs(t.speed_kmh) <= 0.05


async def _session(sp: SimProcess, name: str) -> tuple[list[Telemetry], list[Danger], Any]:
    profile = load_profile(name)
    driver = make_driver(sp.url, profile)
    seen: list[Telemetry] = []
    dangers: list[Danger] = []
    driver.on_telemetry = seen.append
    driver.on_status = dangers.append
    await driver.connect()
    try:
        await driver.start()
        await driver.set_speed(3.0)
        await wait_for(lambda: abs(seen[-1].speed_kmh - 3.0) < 0.2)
        await driver.set_incline(2.0 if name != "bertec-treadmill" else 1.0)
        if profile.supports_reverse:
            with pytest.raises(Exception, match="standstill"):
                await driver.set_direction(Direction.REVERSE)  # still moving: refused
            driver.stop_now()
            await wait_for(lambda: _standstill(driver))
            await driver.set_direction(Direction.REVERSE)  # confirmed by read-back
            assert await driver.read_direction() is Direction.REVERSE
            await driver.start()
            await driver.set_speed(-2.0)
            await wait_for(lambda: abs(seen[-1].speed_kmh + 2.0) < 0.2)
        driver.stop_now()
        await wait_for(lambda: _standstill(driver))
        return seen, dangers, driver.link_health()
    finally:
        await driver.close()


@pytest.mark.parametrize("name", ALL)
def test_session_over_a_real_link(sim_process: Any, name: str) -> None:
    sp = sim_process(name)
    seen, dangers, health = clock.run(_session(sp, name), speedup=SPEEDUP)
    assert dangers == [] and health.timeouts == 0 and health.nacks == 0
    events = sp.drain()
    kinds = [e["event"] for e in events]
    assert "watchdog-expired" not in kinds  # the poll kept the machine's watchdog fed
    # Physics: the belt ran forward at 3 km/h, and backward at 2 km/h where it can.
    assert max(t.speed_kmh for t in seen) == pytest.approx(3.0, abs=0.2)
    turns = [e for e in events if e["event"].startswith("direction:")]
    if name in REVERSING:
        assert min(t.speed_kmh for t in seen) == pytest.approx(-2.0, abs=0.2)
        assert [e["event"] for e in turns] == ["direction:reverse"]
        assert all(e["speed_at_kmh"] == 0 for e in turns)  # only at standstill (sim truth)
    else:
        assert turns == [] and min(t.speed_kmh for t in seen) >= 0
    # The belt came to rest after the last run (Bertec has no stop command: a 0 setpoint).
    last = [e for e in events if e["event"] in ("stop", "start") or e in turns][-1]
    sp.wait_event(lambda e: e["event"] == "standstill" and e["at_s"] >= last["at_s"])


async def _until_danger(sp: SimProcess, name: str) -> tuple[Danger, Any]:
    driver = make_driver(sp.url, load_profile(name))
    dangers: list[Danger] = []
    driver.on_status = dangers.append
    seen: list[Telemetry] = []
    driver.on_telemetry = seen.append
    await driver.connect()
    try:
        await driver.start()
        await driver.set_speed(3.0)
        await wait_for(lambda: bool(dangers), timeout_s=60)
        with pytest.raises(MotionBlocked):
            await driver.set_speed(3.0)  # latched: nothing that moves the belt goes out
        stops = driver.stops_sent
        driver.reset_danger()
        assert driver.stops_sent == stops  # reset sends nothing
        return dangers[0], driver
    finally:
        await driver.close()


@pytest.mark.parametrize("name", ALL)
def test_lanyard_pulled_is_a_latched_danger(sim_process: Any, name: str) -> None:
    sp = sim_process(name, faults="safety-key@6")
    danger, driver = clock.run(_until_danger(sp, name), speedup=SPEEDUP)
    # Biodex reports the lanyard in its status byte; the others only show a belt that
    # stopped without our stop, which latches too.
    assert danger.kind == ("lanyard" if name == "biodex-rtm400" else "machine-stopped")
    key = sp.wait_event(lambda e: e["event"] == "safety-key")
    assert key["t"] == pytest.approx(6.0, abs=0.3)
    assert driver.danger is None  # reset above


@pytest.mark.parametrize("name", ["trackmaster-tmx428", "woodway-serial"])
def test_sigkill_of_the_host_the_machine_watchdog_stops_the_belt(
    sim_process: Any, name: str
) -> None:
    sp = sim_process(name)
    profile = load_profile(name)
    host = subprocess.Popen(
        [sys.executable, str(HERE / "host_child.py"), name, sp.url, str(SPEEDUP)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert host.stdout is not None
        line = host.stdout.readline().strip()
        assert line == "running", host.stderr.read() if host.stderr else ""
        host.kill()  # SIGKILL: no stop, no goodbye
        host.wait(timeout=10)
        trip = sp.wait_event(lambda e: e["event"] == "watchdog-expired")
        still = sp.wait_event(lambda e: e["event"] == "standstill")
    finally:
        if host.poll() is None:
            host.kill()
            host.wait(timeout=10)
    watchdog_s = profile.wire.watchdog_ms / 1000
    # The machine's own timer fired one watchdog period after the last byte it heard.
    assert trip["t"] - trip["last_rx_s"] == pytest.approx(watchdog_s, abs=0.02)
    assert abs(trip["speed_kmh"]) == pytest.approx(2.0, abs=0.2)  # it was running
    if profile.supports_reverse:
        assert trip["direction"] == "reverse"
    # ... and the belt reached standstill within the physics' stop distance.
    stop_s = abs(trip["speed_kmh"]) / 3.6 / profile.motion.stop_decel_mps2
    assert still["at_s"] - trip["t"] == pytest.approx(stop_s, abs=0.05)
