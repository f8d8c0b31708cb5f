"""A reverse interval program start to finish over real links: TCP and a pty serial port,
with the simulator as its own process (real sockets, real pyserial). Both sides run at the
same time speed-up; the test waits on the session, never sleeps."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from treadctl import clock
from treadctl.control.controller import Controller, Outcome
from treadctl.profiles import load_profile
from treadctl.transport import open_transport

from harness import program

SPEEDUP = 3.0
# A segment's time includes its direction change and ramps (docs/programs.md): the reverse
# one is long enough to reach its speed after the dwell and the reverse acceleration.
PROGRAM = program((8, 4.0, "forward"), (14, 3.0, "reverse"), (6, 4.0, "forward"))


@pytest.fixture(params=["tcp", "pty"])
def device(request: pytest.FixtureRequest) -> Iterator[str]:
    args = [sys.executable, "-m", "treadctl", "sim", "--speedup", str(SPEEDUP)]
    args += ["--listen", "tcp://127.0.0.1:0"] if request.param == "tcp" else ["--pty"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first, proc.stderr.read() if proc.stderr else "no output"
        yield first if request.param == "tcp" else f"serial://{first}"
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_reverse_intervals_over_real_links(device: str) -> None:
    profile = load_profile("treadctl-reference")
    seen_reverse: list[float] = []

    async def main() -> object:
        ctl = Controller(open_transport(device, profile=profile), profile)
        ctl.telemetry_listeners.append(
            lambda s: seen_reverse.append(s.speed_kmh) if s.direction.value == "reverse" else None
        )
        await ctl.open()
        try:
            result = await ctl.start(PROGRAM)
            stopped = await ctl.wait_stopped(10.0)
            return result, stopped
        finally:
            await ctl.close()

    result, stopped = clock.run(main(), speedup=SPEEDUP)
    assert result.outcome is Outcome.FINISHED, result
    assert result.segments_completed == 3
    assert stopped
    # The belt really ran backward at the segment's speed (telemetry from the other process).
    assert max(seen_reverse) == pytest.approx(3.0, abs=0.06)
