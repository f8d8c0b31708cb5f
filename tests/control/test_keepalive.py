"""Keepalive cadence against the firmware's link watchdog (docs/framing.md).

Soak finding (8 h, seed 1, soak-3): the loop sent one keepalive per 100 ms tick against the
reference firmware's 500 ms link timeout. A 300 ms garbage burst bit-flipped the four
keepalives at its edges, and the fifth arrived exactly at the watchdog's deadline: the
firmware stopped the belt (machine-stop). The loop now sends at least 8 keepalives per
link timeout, so every host frame must be lost for 7/8 of the timeout before the watchdog
acts. A tick shorter than that spacing sends one only every few ticks (more would buy no
margin: at 50 Hz, one per tick was 50 sends a second against a 62.5 ms spacing).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from treadctl.control.controller import KEEPALIVES_PER_LINK_TIMEOUT, Controller
from treadctl.profiles import load_profile
from treadctl.transport.framed import FramedTransport

from harness import program, wait_for, with_sim


def _spy_writes(ctl: Controller) -> tuple[list[float], Any]:
    """Times at which the host put a frame on the wire; returns (times, the stream)."""
    assert isinstance(ctl.transport, FramedTransport)
    stream = ctl.transport.stream
    assert stream is not None
    times: list[float] = []
    original = stream.write

    def spy(data: bytes) -> None:
        times.append(ctl.clock.now())
        original(data)

    stream.write = spy
    return times, stream


@pytest.mark.parametrize(
    ("profile", "tick_hz", "spacing_s"),
    [("treadctl-reference", 10.0, 0.05), ("treadctl-reference", 1.0, 0.0625),
     ("treadctl-reference", 50.0, 0.06), ("treadctl-reference", 30.0, 1 / 30),
     ("treadctl-reference", 20.0, 0.05),
     ("kinetic-rx2", 10.0, 0.1), ("kinetic-rx2", 50.0, 0.12),
     ("generic-ftms", 2.0, 0.25), ("generic-ftms", 10.0, 0.2), ("generic-ftms", 50.0, 0.24)],
)
def test_host_frames_never_further_apart_than_an_eighth_of_the_link_timeout(
    profile: str, tick_hz: float, spacing_s: float
) -> None:
    """Steady (nothing but keepalives goes out): a host frame at least every eighth of the
    link timeout, and no more often than that needs on the loop's wake-ups: the last wake-up
    before the eighth is up (``spacing_s``: 60 ms = every 3rd 20 ms tick at 50 Hz on the
    reference's 62.5 ms)."""
    limit_s = load_profile(profile).control.link_timeout_ms / 1000 / KEEPALIVES_PER_LINK_TIMEOUT

    async def scenario(ctl: Controller, sim: Any) -> None:
        times, _ = _spy_writes(ctl)
        await asyncio.sleep(5.0)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(times) >= 5.0 / limit_s - 1
        assert max(gaps) <= limit_s + 1e-6
        assert min(gaps) == pytest.approx(spacing_s, abs=1e-6)
        assert max(gaps) == pytest.approx(spacing_s, abs=1e-6)
        assert "watchdog" not in [e for _, e in sim.events]

    with_sim(scenario, profile=profile, tick_hz=tick_hz)


def test_every_tick_still_runs_when_keepalives_are_sparser() -> None:
    """At 50 Hz the timer interlocks and the ramps still run every 20 ms tick; only the
    keepalive is sent every 3rd."""

    async def scenario(ctl: Controller, sim: Any) -> None:
        ticks: list[float] = []
        ctl.tick_listeners.append(ticks.append)
        times, _ = _spy_writes(ctl)
        await asyncio.sleep(3.0)
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        assert max(gaps) == pytest.approx(0.02, abs=1e-6)
        assert len(ticks) >= 149
        assert 3 * len(times) <= len(ticks) + 3

    with_sim(scenario, tick_hz=50.0)


def test_four_lost_tick_keepalives_do_not_starve_the_reference_watchdog() -> None:
    """Every host frame lost for 410 ms (what the soak's 300 ms burst did to the keepalives
    at its edges): the session keeps running, the firmware never stops the belt."""

    async def scenario(ctl: Controller, sim: Any) -> None:
        task = ctl.start(program((120, 4.0, "forward")))
        assert await wait_for(lambda: abs(sim.truth().speed_kmh - 4.0) < 0.05, 30)
        await asyncio.sleep(2.0)  # steady: nothing but keepalives goes out
        times, stream = _spy_writes(ctl)
        n = len(times)
        assert await wait_for(lambda: len(times) > n, 1, step_s=0.001)
        t_last = times[-1]
        original = stream.write
        lost: list[float] = []

        def noisy(data: bytes) -> None:
            now = ctl.clock.now()
            if t_last < now <= t_last + 0.41:
                lost.append(now)
                return
            original(data)

        stream.write = noisy
        await asyncio.sleep(3.0)
        assert len(lost) >= 4
        assert "watchdog" not in [e for _, e in sim.events], sim.events[-5:]
        assert not ctl.latch.latched, ctl.latch.trip
        assert abs(sim.truth().speed_kmh - 4.0) < 0.05
        await ctl.stop()
        await task

    with_sim(scenario)
