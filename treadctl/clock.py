"""Time for everything in treadctl: one injected clock backed by the event loop.

Every timeout in the controller, simulator and daemon is an asyncio timer, so the event
loop's own clock *is* the clock. We make that clock pluggable:

* ``speedup=1``   - an ordinary loop, real time (the daemon, real hardware);
* ``speedup=X``   - scaled real time: X virtual seconds pass per real second;
* ``speedup=None``- virtual time that jumps: whenever every task is waiting on a timer, the
  loop advances straight to the next timer. An hour-long session runs in well under a
  second of CPU, deterministically. Only valid when nothing in the loop waits on an
  outside process (in-process simulator). While an executor job (``asyncio.to_thread``)
  runs, virtual time stands still, so a slow disk never looks like a silent treadmill.
* ``speedup=X, virtual=True`` - *paced* virtual time: the same virtual clock, but each jump
  to the next timer takes 1/X of its length in real time (X=1: a session a person can
  watch). Time moves only while every task waits, never while code runs, so a starved CPU
  makes the run slower, never makes one side see the other "silent": the in-process
  simulator's link watchdog and the controller share this one clock (``treadctl run`` on
  ``sim://``). Like ``speedup=None``, only for loops that wait on nothing outside
  but signals, threads and the terminal.

Code takes a :class:`Clock`; tests and the simulator pick the loop.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

#: Timers nearer than this in virtual time are treated as due now (see WarpEventLoop.call_at).
_MIN_STEP_S = 1e-6
#: Paced virtual time that fell this far (real seconds) behind its pace does not catch up
#: in a burst: the pace restarts from now (a stall only makes the run slower).
_MAX_PACE_LAG_S = 0.25


class Clock(Protocol):
    """What code needs from time. ``now`` is monotonic seconds in the loop's time base."""

    def now(self) -> float: ...

    def wall(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class LoopClock:
    """The running loop's time, plus a wall clock anchored when the clock is created."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._t0 = self._loop.time()
        self._wall0 = datetime.now(UTC)

    def now(self) -> float:
        return self._loop.time()

    def wall(self) -> datetime:
        return self._wall0 + timedelta(seconds=self._loop.time() - self._t0)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _WarpSelector:
    """Selector proxy that turns blocking waits into time jumps or scaled waits."""

    def __init__(self, inner: selectors.BaseSelector, loop: WarpEventLoop) -> None:
        self._inner = inner
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        loop = self._loop
        if loop.virtual:
            events = self._inner.select(0)
            if events or timeout == 0:
                return events
            if loop._executor_jobs:
                # A worker thread is busy: virtual time stands still until it reports back.
                return self._inner.select(timeout if timeout is None else min(timeout, 0.05))
            if timeout is None:
                # Nothing scheduled: only outside I/O or a thread can wake us.
                return self._inner.select(None)
            if loop.speedup is None:
                loop._virtual += timeout
                return []
            return self._paced(timeout, loop.speedup)
        if timeout is not None:
            timeout = timeout / loop.speedup  # type: ignore[operator]
        return self._inner.select(timeout)

    def _paced(self, timeout: float, speedup: float) -> list[Any]:
        """Wait the real time that ``timeout`` virtual seconds take at ``speedup``, then
        advance virtual time by exactly that (less if outside I/O wakes us first)."""
        loop = self._loop
        now_real = time.monotonic()
        due_real = loop._pace_real + (loop._virtual + timeout - loop._pace_virtual) / speedup
        if now_real - (due_real - timeout / speedup) > _MAX_PACE_LAG_S:
            # Far behind the pace (a stall): restart the pace here instead of racing.
            loop._pace_real, loop._pace_virtual = now_real, loop._virtual
            due_real = now_real + timeout / speedup
        wait = due_real - now_real
        events = self._inner.select(wait) if wait > 0 else []
        if events:
            # Woken early (a signal, a thread): only the real time that passed, in virtual.
            passed = (time.monotonic() - loop._pace_real) * speedup + loop._pace_virtual
            loop._virtual = min(loop._virtual + timeout, max(loop._virtual, passed))
        else:
            loop._virtual += timeout
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class WarpEventLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose ``time()`` is virtual (jumping) or scaled real time."""

    def __init__(self, speedup: float | None = None, *, virtual: bool | None = None) -> None:
        super().__init__()
        if speedup is not None and speedup <= 0:
            raise ValueError(f"speedup must be > 0, got {speedup}")
        if virtual is None:
            virtual = speedup is None
        if speedup is None and not virtual:
            raise ValueError("scaled real time needs a speedup")
        self.speedup = speedup
        #: Virtual time (jumping, or paced at ``speedup``) instead of scaled real time.
        self.virtual = virtual
        self._virtual = 0.0
        self._executor_jobs = 0
        self._real0 = time.monotonic()
        self._pace_real = self._real0  # paced virtual time: real/virtual anchor of the pace
        self._pace_virtual = 0.0
        self._selector = _WarpSelector(self._selector, self)  # type: ignore[has-type,arg-type]

    def run_in_executor(  # type: ignore[override]
        self, executor: Any, func: Any, *args: Any
    ) -> asyncio.Future[Any]:
        fut = super().run_in_executor(executor, func, *args)
        self._executor_jobs += 1

        def done(_: asyncio.Future[Any]) -> None:
            self._executor_jobs -= 1

        fut.add_done_callback(done)
        return fut

    def call_at(  # type: ignore[override]
        self, when: float, callback: Any, *args: Any, context: Any = None
    ) -> Any:
        if self.virtual and 0 < when - self._virtual < _MIN_STEP_S:
            # A timer closer than the loop's resolution would fire without time moving, and
            # code that waits "until t" would spin on it: let that sliver of time pass now.
            self._virtual = when
        return super().call_at(when, callback, *args, context=context)

    def time(self) -> float:
        if self.virtual:
            return self._virtual
        return (time.monotonic() - self._real0) * self.speedup  # type: ignore[operator]


def loop_factory(
    speedup: float | None, *, virtual: bool = False
) -> Callable[[], asyncio.AbstractEventLoop]:
    """A loop factory for ``asyncio.Runner``: plain loop at 1x real time, warp loop
    otherwise (``virtual=True``: paced virtual time at ``speedup``)."""
    if speedup == 1 and not virtual:
        return asyncio.new_event_loop
    return lambda: WarpEventLoop(speedup, virtual=virtual or speedup is None)


def run(
    main: Coroutine[Any, Any, T], speedup: float | None = 1, *, virtual: bool = False
) -> T:
    """``asyncio.run`` with a chosen time base (see module docstring)."""
    with asyncio.Runner(loop_factory=loop_factory(speedup, virtual=virtual)) as runner:
        return runner.run(main)


def run_virtual(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main()`` on jumping virtual time: what tests use instead of sleeping."""

    async def _wrap() -> T:
        return await main()

    return run(_wrap(), speedup=None)


async def wait_until(cond: Callable[[], bool], timeout_s: float, step_s: float = 0.02) -> bool:
    """Poll ``cond`` every ``step_s`` on the loop's clock until it holds (True) or
    ``timeout_s`` has passed (its last value). On virtual time this costs no real time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if cond():
            return True
        await asyncio.sleep(step_s)
    return cond()
