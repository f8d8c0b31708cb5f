"""Keepalive cadence against the firmware's link watchdog (docs/framing.md).

Soak finding (8 h, seed 1, soak-3): the loop sent one keepalive per 100 ms tick against the
reference firmware's 500 ms link timeout. A 300 ms garbage burst bit-flipped the four
keepalives at its edges, and the fifth arrived exactly at the watchdog's deadline: the
firmware stopped the belt (machine-stop). The loop now sends at least 8 keepalives per
link timeout (and at least one per tick), so every host frame must be lost for 7/8 of the
timeout before the watchdog acts.
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
    ("profile", "tick_hz"),
    [("treadctl-reference", 10.0), ("treadctl-reference", 1.0), ("kinetic-rx2", 10.0),
     ("generic-ftms", 2.0)],
)
def test_host_frames_never_further_apart_than_an_eighth_of_the_link_timeout(
    profile: str, tick_hz: float
) -> None:
    limit_s = load_profile(profile).control.link_timeout_ms / 1000 / KEEPALIVES_PER_LINK_TIMEOUT

    async def scenario(ctl: Controller, sim: Any) -> None:
        times, _ = _spy_writes(ctl)
        await asyncio.sleep(5.0)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(times) >= 5.0 / limit_s - 1
        assert max(gaps) <= limit_s + 1e-6
        assert max(gaps) <= ctl.tick_s + 1e-6  # and never less often than a tick
        assert "watchdog" not in [e for _, e in sim.events]

    with_sim(scenario, profile=profile, tick_hz=tick_hz)


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
