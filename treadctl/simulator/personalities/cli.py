"""``treadctl sim --profile NAME`` for a profile whose protocol is not FTMS."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import Any

from treadctl import clock
from treadctl.profiles import FirmwareProfile
from treadctl.simulator.faults import FaultPlan
from treadctl.simulator.personalities import Personality, make_personality, serve_pty, serve_tcp


def serve_native(
    profile: FirmwareProfile,
    plan: FaultPlan,
    seed: int,
    speedup: float,
    listen: tuple[str, int] | None,
) -> int:
    def make() -> Personality:
        return make_personality(profile, faults=FaultPlan(list(plan.windows)), seed=seed)

    def announce(text: str) -> None:
        print(text, flush=True)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        if listen is None:
            await serve_pty(make, on_path=announce)
            return
        ready: asyncio.Future[tuple[str, int]] = loop.create_future()
        server = asyncio.ensure_future(serve_tcp(make, *listen, ready=ready))
        try:
            waiters: set[asyncio.Future[Any]] = {server, ready}
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if ready.done():
                host, port = ready.result()
                announce(f"tcp://{host}:{port}")
            await server
        finally:
            server.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server

    try:
        clock.run(main(), speedup)
    except asyncio.CancelledError:
        pass
    except OSError as exc:
        print(f"treadctl sim: {exc}", file=sys.stderr)
        return 1
    return 0
