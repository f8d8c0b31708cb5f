"""A treadctl host in its own process for the SIGKILL tests: connect, start, run (backward
when the machine can), print "running" once the belt is at speed, then keep polling until
killed."""

from __future__ import annotations

import asyncio
import sys

from treadctl import clock
from treadctl.drivers import make_driver
from treadctl.profiles import load_profile
from treadctl.types import Direction


async def main(profile_name: str, url: str) -> None:
    profile = load_profile(profile_name)
    driver = make_driver(url, profile)
    await driver.connect()
    speed = 2.0
    if profile.supports_reverse:
        await driver.set_direction(Direction.REVERSE)
        speed = -2.0
    await driver.start()
    await driver.set_speed(speed)
    while True:
        t = driver.last_telemetry  # type: ignore[attr-defined]
        if t is not None and abs(t.speed_kmh - speed) < 0.2:
            break
        await asyncio.sleep(0.05)
    print("running", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    clock.run(main(sys.argv[1], sys.argv[2]), speedup=float(sys.argv[3]))
