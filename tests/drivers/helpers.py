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


def start_sim(
    profile: str, faults: str = "", transport: str | None = None, speedup: float | None = None
) -> SimProcess:
    return start_sims([(profile, faults)], transport, speedup)[0]


def start_sims(
    specs: list[tuple[str, str]], transport: str | None = None, speedup: float | None = None
) -> list[SimProcess]:
    """One simulator process per ``(profile, faults)``, all started before any is waited
    for (a process takes a moment to import)."""
    procs = []
    for profile, faults in specs:
        kind = transport or TRANSPORT[profile]
        args = [sys.executable, "-m", "treadctl", "sim", "--profile", profile,
                "--speedup", str(speedup or SPEEDUP)]
        args += ["--pty"] if kind == "pty" else ["--listen", "tcp://127.0.0.1:0"]
        if faults:
            args += ["--faults", faults]
        env = dict(os.environ, TREADCTL_SIM_EVENTS="1")
        procs.append((kind, subprocess.Popen(args, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True, env=env)))
    return [_attach(kind, proc) for kind, proc in procs]


def _attach(transport: str, proc: subprocess.Popen[str]) -> SimProcess:
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


def stop_sims(sims: list[SimProcess]) -> None:
    for sp in sims:
        sp.proc.terminate()
    for sp in sims:
        try:
            sp.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sp.proc.kill()
            sp.proc.wait(timeout=10)


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


# ---------------------------------------------------------------- the controller over a link
#: The controller tests' time scale (both processes). Lower than SPEEDUP: the controller
#: adds real-time limits of its own (1 s of telemetry silence, Woodway's 0.5 s comm timer
#: in the other process), and at 2x a loaded 2-core machine tripped them falsely.
CTL_SPEEDUP = 1.5


def sim_events(sp: SimProcess) -> list[dict[str, Any]]:
    """The simulator's event lines so far, without blocking (for async code)."""
    return sp.drain()


async def wait_sim_event(
    sp: SimProcess, pred: Callable[[dict[str, Any]], bool], timeout_s: float = 30.0
) -> dict[str, Any]:
    """Wait (on the loop's clock) until an event line of the simulator matches."""
    found: list[dict[str, Any]] = []

    def seen() -> bool:
        found[:] = [e for e in sp.drain() if pred(e)]
        return bool(found)

    if not await wait_until(seen, timeout_s, 0.05):
        raise AssertionError(f"no matching simulator event within {timeout_s} s: {sp.events}")
    return found[0]


@contextlib.asynccontextmanager
async def controller_on(sp: SimProcess, name: str, **kwargs: Any) -> AsyncIterator[Any]:
    """A :class:`~treadctl.control.controller.Controller` of profile ``name`` on the
    simulator process's pty/TCP link (``open_transport`` with the native profile), open;
    closed (belt commanded to stop) on exit."""
    from treadctl.control.controller import Controller
    from treadctl.transport import open_transport
    from treadctl.transport.url import parse_device_url

    profile = load_profile(name)
    transport = open_transport(parse_device_url(sp.url), profile=profile)
    ctl = Controller(transport, profile, **kwargs)
    # The simulator's clock starts at the host's first byte, sent inside open(): its time
    # is this clock's minus this (both run at the same speed-up), a few ms behind at most.
    ctl.sim_t0 = ctl.clock.now()  # type: ignore[attr-defined]
    await ctl.open()
    try:
        yield ctl
    finally:
        await ctl.close()


def sim_now(ctl: Any) -> float:
    """The simulator process's clock now, from the controller's (:func:`controller_on`);
    it may run a few ms ahead of the simulator's own (the latency to the first byte)."""
    return float(ctl.clock.now() - ctl.sim_t0)


def rest_since(events: list[dict[str, Any]], t0: float) -> float | None:
    """Simulator time from which the belt has rested for good, looking from ``t0`` on (sim
    truth): the last standstill at or after ``t0`` with no start after it; ``t0`` itself if
    the belt stood at ``t0`` and nothing started it later. None: it still runs."""
    starts = [e["t"] for e in events if e["event"] == "start" and e["t"] >= t0]
    stills = [e["at_s"] for e in events if e["event"] == "standstill" and e["at_s"] >= t0]
    if stills and (not starts or max(stills) >= max(starts)):
        return float(max(stills))
    at_t0 = [e for e in events if e["t"] <= t0]
    if not starts and not stills and at_t0 and at_t0[-1]["speed_kmh"] == 0:
        return t0
    return None


def starts_after(events: list[dict[str, Any]], t: float) -> list[dict[str, Any]]:
    """The simulated firmware's belt starts after sim time ``t``."""
    return [e for e in events if e["event"] == "start" and e["t"] > t]
