"""What the request/reply drivers (Biodex, Woodway, TrackMaster) share: one reader task,
replies matched to requests in order, one request at a time except the stop, a poll loop
that reads telemetry and status (and so feeds the machine's watchdog), and the danger latch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from treadctl.clock import Clock
from treadctl.drivers.base import (
    Danger,
    DriverError,
    LinkHealth,
    MachineRefused,
    MotionBlocked,
    NoReply,
    Opener,
    Preempted,
    Refused,
    Telemetry,
    wire_speed_steps,
)
from treadctl.profiles import FirmwareProfile
from treadctl.protocols.common import StreamDecoder
from treadctl.transport.stream import ByteStream
from treadctl.types import Direction

log = logging.getLogger(__name__)

#: A measured speed at or below this counts as standstill (km/h).
STANDSTILL_KMH = 0.05
#: A belt seen above this and then at standstill without our stop has stopped on its own.
MOVING_KMH = 0.3
#: Measured above the commanded speed by more than this (km/h): the machine is not obeying.
OVERSPEED_KMH = 0.5


@dataclass
class _Pending:
    expect: int  # lead byte of the reply that answers it
    future: asyncio.Future[Any]
    sent_at: float
    is_stop: bool = False


@dataclass
class _Counters:
    requests: int = 0
    timeouts: int = 0
    nacks: int = 0
    consecutive_nacks: int = 0
    consecutive_timeouts: int = 0
    unmatched: int = 0
    stops: int = 0


@dataclass
class MotionWatch:
    """Detects a belt that stopped without being told to (a lanyard, a console stop, the
    machine's own watchdog) on machines that do not say why they stopped."""

    commanded_kmh: float = 0.0
    ceiling_kmh: float = 0.0  # the highest speed the belt may still show (while slowing)
    seen_moving: bool = False
    stopping: bool = True
    history: list[float] = field(default_factory=list)

    def command(self, speed_kmh: float) -> None:
        """A new setpoint went out: while the belt slows to it, the old one is the ceiling."""
        old = 0.0 if self.stopping else abs(self.commanded_kmh)
        self.ceiling_kmh = max(old, abs(speed_kmh))
        self.commanded_kmh = speed_kmh
        self.stopping = speed_kmh == 0

    def overspeed(self, speed_kmh: float) -> bool:
        """True when the belt runs faster than commanded (a runaway, a clamp gone wrong)."""
        if self.stopping:
            return False
        if abs(speed_kmh) <= abs(self.commanded_kmh) + OVERSPEED_KMH:
            self.ceiling_kmh = abs(self.commanded_kmh)  # reached: no more slack
            return False
        return abs(speed_kmh) > self.ceiling_kmh + OVERSPEED_KMH

    def update(self, speed_kmh: float) -> bool:
        """True when the belt stopped on its own."""
        if abs(speed_kmh) >= MOVING_KMH:
            self.seen_moving = True
        stopped = abs(speed_kmh) <= STANDSTILL_KMH
        if stopped and self.seen_moving and not self.stopping and self.commanded_kmh != 0:
            self.seen_moving = False
            return True
        if stopped:
            self.seen_moving = False
        return False


def check_speed_direction(speed_kmh: float, direction: Direction) -> None:
    """A non-zero setpoint must run the way the belt is set (``direction``)."""
    wanted = Direction.REVERSE if speed_kmh < 0 else Direction.FORWARD
    if speed_kmh != 0 and wanted is not direction:
        raise Refused(f"the belt is set {direction}: set_direction first, at standstill")


def check_direction_change(
    profile: FirmwareProfile, direction: Direction, at_standstill: bool
) -> None:
    """A direction change needs a reversible profile and measured standstill."""
    if direction is Direction.REVERSE and not profile.supports_reverse:
        raise Refused(f"{profile.name} runs forward only")
    if not at_standstill:
        raise Refused("the direction changes only at measured standstill")


async def end_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel a driver's tasks and wait for them to end; what they raise is dropped."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


class DriverCore:
    """What every native driver (request/reply or Bertec's pushed feedback) holds: the
    link, the callbacks, the motion watch, the wire log and the danger latch."""

    protocol = ""
    #: Where the latch logs (a driver module may name its own logger).
    _log = log
    #: What the danger details call the machine's belt ("belts" on a split-belt machine).
    _belt = "belt"

    def __init__(self, opener: Opener, profile: FirmwareProfile, clock: Clock) -> None:
        self.profile = profile
        self.clock = clock
        self._opener = opener
        self.motion_blocked = False
        self.on_telemetry: Callable[[Telemetry], None] = lambda t: None
        self.on_status: Callable[[Danger], None] = lambda d: None
        self.on_direction: Callable[[Direction], None] = lambda d: None
        self._stream: ByteStream | None = None
        self._danger: Danger | None = None
        self._last_rx = -math.inf
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self.started = False
        self.last_telemetry: Telemetry | None = None
        self.last_stop_sent = -math.inf
        self.watch = MotionWatch()
        #: Every write, for tests and benchmarks: (clock time, bytes).
        self.wire_log: list[tuple[float, bytes]] = []

    def stop_now(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await end_tasks(self._tasks)
        self._on_close()
        if self._stream is not None:
            self._stream.close()

    def _on_close(self) -> None:
        """After the tasks ended, before the link closes."""

    def abort(self) -> None:
        """Cut the link at once, with no stop and no goodbye: the last step of a stop
        escalation, so that the machine's own watchdog (where it has one) stops the belt."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        self._on_close()
        if self._stream is not None:
            self._stream.close()

    def publish(self, telemetry: Telemetry) -> None:
        """New telemetry: checked by the motion watch (overspeed, a stop of its own), then
        handed on."""
        self.last_telemetry = telemetry
        if self.watch.overspeed(telemetry.speed_kmh):
            self.latch("overspeed", f"{self._belt} at {abs(telemetry.speed_kmh):g} km/h,"
                       f" commanded {abs(self.watch.commanded_kmh):g}")
        if self.watch.update(telemetry.speed_kmh):
            self.latch("machine-stopped",
                       f"the {self._belt} stopped without a stop from treadctl")
        self.on_telemetry(telemetry)

    @property
    def danger(self) -> Danger | None:
        return self._danger

    def latch(self, kind: str, detail: str) -> None:
        if self._danger is not None:
            return
        self._danger = Danger(kind, detail, self.clock.now())
        self.motion_blocked = True
        self._log.warning("%s: danger latched: %s (%s)", self.protocol, kind, detail)
        self.stop_now()
        self.on_status(self._danger)


class RequestDriver(DriverCore):
    """Base of the drivers whose machine only answers requests. Subclasses give the codec
    module (``codec``: its ``reply_decoder``, ``encode_command`` and ``expected_reply``),
    ``_reply_lead``, ``_is_error`` and the machine's commands."""

    #: The protocol module (treadctl.protocols.<name>) the default codec hooks call.
    codec: Any = None

    def __init__(self, opener: Opener, profile: FirmwareProfile, clock: Clock) -> None:
        super().__init__(opener, profile, clock)
        self._decoder: StreamDecoder[Any] = self._make_decoder()
        self._pending: deque[_Pending] = deque()
        self._lock = asyncio.Lock()
        self._stop_epoch = 0
        self._c = _Counters()
        self._ack_timeout_s = profile.control.ack_timeout_ms / 1000
        self._poll_s = profile.wire.poll_ms / 1000
        self._last_stop: asyncio.Future[Any] | None = None

    # ---------------------------------------------------------------- subclass hooks

    def _make_decoder(self) -> StreamDecoder[Any]:
        return self.codec.reply_decoder()  # type: ignore[no-any-return]

    def _encode(self, msg: Any) -> bytes:
        return self.codec.encode_command(msg)  # type: ignore[no-any-return]

    def _expected(self, msg: Any) -> int:
        return self.codec.expected_reply(msg)  # type: ignore[no-any-return]

    def _reply_lead(self, reply: Any) -> int:
        raise NotImplementedError

    def _is_error(self, reply: Any) -> bool:
        raise NotImplementedError

    def _stop_message(self) -> Any:
        raise NotImplementedError

    async def _poll_once(self) -> None:
        raise NotImplementedError

    async def _hello(self) -> None:
        """First exchange after the link opens (proves the machine answers)."""

    # ---------------------------------------------------------------- lifecycle

    async def connect(self) -> None:
        self._stream = await self._opener()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._reader()))
        for attempt in range(self.profile.wire.timeout_limit):
            try:
                await self._hello()
                break
            except NoReply:
                if attempt + 1 == self.profile.wire.timeout_limit:
                    await self.close()
                    raise
        self._c.consecutive_timeouts = 0
        self._tasks.append(loop.create_task(self._poller()))

    def _on_close(self) -> None:
        self._fail_pending(DriverError("driver closed"))

    # ---------------------------------------------------------------- the stop

    def stop_now(self) -> None:
        """Put the stop on the wire now, ahead of anything waiting; queued commands that
        have not been sent yet are dropped (they raise :class:`Preempted`)."""
        self._stop_epoch += 1
        self.watch.stopping = True
        self.watch.commanded_kmh = 0.0
        self.started = False
        stream = self._stream
        if stream is None or stream.closed:
            return
        msg = self._stop_message()
        data = self._encode(msg)
        now = self.clock.now()
        stream.write(data)
        self.wire_log.append((now, data))
        self.last_stop_sent = now
        self._c.stops += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_consume)
        self._last_stop = fut
        self._pending.append(_Pending(self._expected(msg), fut, now, is_stop=True))
        self._arm_timeout(self._pending[-1])

    @property
    def stops_sent(self) -> int:
        return self._c.stops

    # ---------------------------------------------------------------- danger latch

    def reset_danger(self) -> None:
        """Clear the latch. Sends nothing: the belt stays stopped until a new start."""
        self._danger = None
        self.motion_blocked = False
        self._c.consecutive_nacks = 0
        self._c.consecutive_timeouts = 0

    def _check_motion(self) -> int:
        if self.motion_blocked or self._danger is not None:
            why = self._danger.kind if self._danger else "motion blocked"
            raise MotionBlocked(f"{self.protocol}: {why}: nothing that moves the belt is sent")
        return self._stop_epoch

    # ---------------------------------------------------------------- shared commands

    async def _start_with(self, msg: Any) -> None:
        """Send the machine's start command (a motion command) and mark the belt started."""
        epoch = self._check_motion()
        await self.request(msg, motion_epoch=epoch)
        if epoch != self._stop_epoch:
            return  # our stop went out while the start waited for its reply: it stands
        self.started = True
        self.watch.stopping = False

    async def _send_speed(self, speed_kmh: float, message: Callable[[int], Any]) -> None:
        """Send the speed setpoint ``message(wire steps)`` (a motion command) and tell the
        motion watch; the caller has checked the speed against the profile."""
        epoch = self._check_motion()
        steps = wire_speed_steps(self.profile, speed_kmh)
        await self.request(message(steps), motion_epoch=epoch)
        if epoch == self._stop_epoch:
            # Not after a stop that went out while this waited for its reply: the belt
            # then stops because of OUR stop, and the watch must still know it (else a
            # false "stopped on its own" latch, machine-stopped).
            self.watch.command(speed_kmh)

    def _check_speed_direction(self, speed_kmh: float, direction: Direction) -> None:
        check_speed_direction(speed_kmh, direction)

    def _check_direction_change(self, direction: Direction) -> None:
        check_direction_change(self.profile, direction, self.at_standstill())

    # ---------------------------------------------------------------- requests

    async def request(self, msg: Any, *, motion_epoch: int | None = None) -> Any:
        """Send ``msg`` when it is its turn and wait for its reply. A motion command whose
        turn comes after a stop (``motion_epoch`` older than the last stop) is dropped."""
        async with self._lock:
            if motion_epoch is not None:
                if motion_epoch != self._stop_epoch:
                    raise Preempted(f"{self.protocol}: a stop went out first; not sent")
                self._check_motion()
            return await self._send_and_wait(msg)

    async def _send_and_wait(self, msg: Any) -> Any:
        stream = self._stream
        if stream is None or stream.closed:
            raise DriverError(f"{self.protocol}: link closed")
        data = self._encode(msg)
        now = self.clock.now()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        pending = _Pending(self._expected(msg), fut, now)
        self._pending.append(pending)
        self._c.requests += 1
        stream.write(data)
        self.wire_log.append((now, data))
        self._arm_timeout(pending)
        return await fut

    def _arm_timeout(self, pending: _Pending) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(self._ack_timeout_s, self._timeout, pending)

    def _timeout(self, pending: _Pending) -> None:
        if pending.future.done():
            return
        with contextlib.suppress(ValueError):
            self._pending.remove(pending)
        self._c.timeouts += 1
        self._c.consecutive_timeouts += 1
        pending.future.set_exception(NoReply(f"{self.protocol}: no reply within "
                                             f"{self.profile.control.ack_timeout_ms} ms"))
        if self._c.consecutive_timeouts >= self.profile.wire.timeout_limit:
            self.latch("no-reply", f"{self._c.consecutive_timeouts} requests unanswered")

    async def _reader(self) -> None:
        stream = self._stream
        assert stream is not None
        while True:
            data = await stream.read()
            if not data:
                self._fail_pending(DriverError(f"{self.protocol}: link closed"))
                if not self._closed:
                    self.latch("link-lost", "the serial/TCP link closed")
                return
            for reply in self._decoder.feed(data):
                self._last_rx = self.clock.now()
                self._dispatch(reply)

    def _dispatch(self, reply: Any) -> None:
        if not self._pending:
            self._c.unmatched += 1
            return
        if self._is_error(reply):
            pending = self._pending.popleft()
            self._c.nacks += 1
            self._c.consecutive_nacks += 1
            self._c.consecutive_timeouts = 0
            if not pending.future.done():
                pending.future.set_exception(MachineRefused(f"{self.protocol}: {reply!r}"))
            if self._c.consecutive_nacks >= self.profile.wire.nack_limit:
                self.latch("nacks", f"{self._c.consecutive_nacks} refusals in a row")
            return
        lead = self._reply_lead(reply)
        for i, pending in enumerate(self._pending):
            if pending.expect == lead:
                for _ in range(i):  # earlier requests were never answered
                    lost = self._pending.popleft()
                    if not lost.future.done():
                        lost.future.set_exception(NoReply(f"{self.protocol}: reply lost"))
                self._pending.popleft()
                self._c.consecutive_nacks = 0
                self._c.consecutive_timeouts = 0
                if not pending.future.done():
                    pending.future.set_result(reply)
                return
        self._c.unmatched += 1

    def _fail_pending(self, exc: Exception) -> None:
        while self._pending:
            p = self._pending.popleft()
            if not p.future.done():
                p.future.set_exception(exc)
                p.future.exception()  # retrieved: nobody may wait for a stop's reply

    # ---------------------------------------------------------------- polling

    async def _poller(self) -> None:
        while True:
            t0 = self.clock.now()
            try:
                await self._poll_once()
            except DriverError as exc:
                log.debug("%s: poll failed: %s", self.protocol, exc)
            except Exception:  # a bug here must not silence the watchdog feed
                log.exception("%s: poll failed", self.protocol)
            last = self._last_stop
            if self.watch.stopping and self.last_telemetry is not None and last is not None:
                moving = abs(self.last_telemetry.speed_kmh) > STANDSTILL_KMH
                unanswered = last.done() and last.exception() is not None
                if moving and unanswered:
                    self.stop_now()  # the stop was lost or refused and the belt turns: again
            await self.clock.sleep(max(0.0, self._poll_s - (self.clock.now() - t0)))

    def at_standstill(self) -> bool:
        t = self.last_telemetry
        fresh = t is not None and self.clock.now() - t.t <= 3 * self._poll_s + self._ack_timeout_s
        return bool(fresh and t is not None and abs(t.speed_kmh) <= STANDSTILL_KMH)

    def link_health(self) -> LinkHealth:
        age = self.clock.now() - self._last_rx
        return LinkHealth(
            ok=age * 1000 <= self.profile.control.link_timeout_ms and self._danger is None,
            last_rx_age_s=age,
            requests=self._c.requests,
            timeouts=self._c.timeouts,
            nacks=self._c.nacks,
            garbage_bytes=self._decoder.garbage_bytes,
        )


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
