"""Helpers: native drivers against their simulator personality: in another process over a real pty
or TCP socket (``treadctl sim --profile NAME``), or in-process on virtual time over a
memory pipe. The simulator's event lines (TREADCTL_SIM_EVENTS=1) carry its physics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from treadctl.clock import LoopClock, wait_until
from treadctl.drivers import make_driver
from treadctl.drivers.base import TreadmillDriver
from treadctl.profiles import load_profile
from treadctl.simulator.personalities import Personality, make_personality
from treadctl.simulator.personalities import serve_stream as serve_machine
from treadctl.transport.stream import memory_pipe

SPEEDUP = 2.0  # scaled real time on both sides; low enough for a loaded 2-core CI box
TRANSPORT = {"biodex-rtm400": "pty", "woodway-serial": "pty", "trackmaster-tmx428": "pty",
             "bertec-treadmill": "tcp"}  # fmt: skip


@dataclass
class SimProcess:
    proc: subprocess.Popen[str]
    url: str
    events: list[dict[str, Any]] = field(default_factory=list)
    _q: queue.Queue[dict[str, Any] | None] = field(default_factory=queue.Queue)

    def wait_event(
        self, pred: Callable[[dict[str, Any]], bool], timeout_s: float = 30
    ) -> dict[str, Any]:
        """Block (real time) until an event line matches; the lines seen are kept."""
        for e in self.events:
            if pred(e):
                return e
        while True:
            try:
                e = self._q.get(timeout=timeout_s)
            except queue.Empty:
                raise AssertionError(f"no matching simulator event; seen {self.events}") from None
            if e is None:
                raise AssertionError(f"simulator exited; events {self.events}")
            self.events.append(e)
            if pred(e):
                return e

    def drain(self) -> list[dict[str, Any]]:
        while True:
            try:
                e = self._q.get_nowait()
            except queue.Empty:
                return self.events
            if e is not None:
                self.events.append(e)


def start_sim(profile: str, faults: str = "", transport: str | None = None) -> SimProcess:
    transport = transport or TRANSPORT[profile]
    args = [sys.executable, "-m", "treadctl", "sim", "--profile", profile,
            "--speedup", str(SPEEDUP)]
    args += ["--pty"] if transport == "pty" else ["--listen", "tcp://127.0.0.1:0"]
    if faults:
        args += ["--faults", faults]
    env = dict(os.environ, TREADCTL_SIM_EVENTS="1")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    assert proc.stdout is not None
    first = proc.stdout.readline().strip()
    assert first, proc.stderr.read() if proc.stderr else "no output"
    url = first if transport == "tcp" else f"serial://{first}"
    sp = SimProcess(proc, url)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with contextlib.suppress(ValueError):
                sp._q.put(json.loads(line))
        sp._q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return sp


@contextlib.asynccontextmanager
async def in_process(
    profile_name: str, faults: str = ""
) -> AsyncIterator[tuple[TreadmillDriver, Personality]]:
    """Driver and personality in this loop (virtual time), over a memory pipe."""
    profile = load_profile(profile_name)
    machine = make_personality(profile, faults=faults)
    host_end, dev_end = memory_pipe()
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(machine.run()), loop.create_task(serve_machine(machine, dev_end))]

    async def opener() -> Any:
        return host_end

    driver = make_driver("tcp://unused:1", profile, LoopClock())
    driver._opener = opener  # type: ignore[attr-defined]
    try:
        yield driver, machine
    finally:
        await driver.close()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


async def wait_for(pred: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll ``pred`` on the loop's clock (virtual or scaled) until it holds."""
    if not await wait_until(pred, timeout_s, 0.05):
        raise AssertionError(f"condition not met within {timeout_s} s")
