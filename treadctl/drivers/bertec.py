"""Bertec treadmill driver over TCP (codec: :mod:`treadctl.protocols.bertec`).

The panel acknowledges nothing: it pushes 32-byte feedback records, and the host sends
64-byte setpoints. Both belts always get the same signed speed (a split-belt setpoint is
not offered). The driver re-sends its setpoint every ``wire.poll_ms``; the stop is a
setpoint of 0 at ``wire.stop_accel_mm_s2``, written at once. A sign change is allowed only
at measured standstill (both belts 0 in the feedback), and the feedback must then show
the belts turning the commanded way, or ``wrong-direction`` latches. No watchdog is
documented for the panel: a dead host leaves the belts running (docs/protocols.md).
"""

from __future__ import annotations

import asyncio
import logging
import math

from treadctl.clock import Clock
from treadctl.drivers._request import (
    STANDSTILL_KMH,
    DriverCore,
    check_direction_change,
    check_speed_direction,
)
from treadctl.drivers.base import (
    DriverError,
    LinkHealth,
    MotionBlocked,
    NoReply,
    Opener,
    Refused,
    Telemetry,
    check_incline,
    check_speed,
    kmh_to_mm_s,
    mm_s_to_kmh,
)
from treadctl.profiles import FirmwareProfile
from treadctl.protocols import bertec as bt
from treadctl.types import Direction

log = logging.getLogger(__name__)

#: Belts differing by more than this (mm/s) while both are meant to run alike.
BELTS_DIFFER_MM_S = 150


def incline_pct_to_centideg(pct: float) -> int:
    return round(math.degrees(math.atan(pct / 100)) * 100)


def centideg_to_pct(centideg: int) -> float:
    return round(math.tan(math.radians(centideg / 100)) * 100, 2)


class BertecDriver(DriverCore):
    protocol = "bertec"
    _log = log
    _belt = "belts"

    def __init__(self, opener: Opener, profile: FirmwareProfile, clock: Clock) -> None:
        super().__init__(opener, profile, clock)
        self._decoder = bt.feedback_decoder(profile.wire.strict_feedback)
        self._target_mm_s = 0
        self._incline_cdeg = 0
        self._accel = profile.wire.accel_mm_s2
        self.direction = Direction.FORWARD
        self._first = asyncio.Event()
        self._stops = 0
        self._sent = 0

    async def connect(self) -> None:
        self._stream = await self._opener()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._reader()))
        try:
            async with asyncio.timeout(self.profile.control.link_timeout_ms / 1000):
                await self._first.wait()
        except TimeoutError:
            raise NoReply("bertec: the panel sends no feedback (remote control enabled?)") from None
        self._tasks.append(loop.create_task(self._repeater()))

    def _write(self, speed_mm_s: int, accel: int) -> None:
        stream = self._stream
        if stream is None or stream.closed:
            return
        data = bt.encode_command(bt.Command(speed_mm_s, speed_mm_s, accel, accel,
                                            self._incline_cdeg))
        stream.write(data)
        self.wire_log.append((self.clock.now(), data))
        self._sent += 1

    def stop_now(self) -> None:
        self._target_mm_s = 0
        self._accel = self.profile.wire.stop_accel_mm_s2
        self.started = False
        self.watch.stopping = True
        self.watch.commanded_kmh = 0.0
        self.last_stop_sent = self.clock.now()
        self._stops += 1
        self._write(0, self._accel)

    @property
    def stops_sent(self) -> int:
        return self._stops

    def reset_danger(self) -> None:
        self._danger = None
        self.motion_blocked = False

    def _check_motion(self) -> None:
        if self.motion_blocked or self._danger is not None:
            why = self._danger.kind if self._danger else "motion blocked"
            raise MotionBlocked(f"bertec: {why}: nothing that moves the belt is sent")
        if self._stream is None or self._stream.closed:
            raise DriverError("bertec: link closed")

    async def start(self) -> None:
        self._check_motion()
        self.started = True
        self.watch.stopping = False
        self._accel = self.profile.wire.accel_mm_s2

    async def set_speed(self, speed_kmh: float) -> None:
        check_speed(self.profile, speed_kmh)
        self._check_motion()
        if not self.started and speed_kmh != 0:
            raise Refused("bertec: start first")
        check_speed_direction(speed_kmh, self.direction)
        mm_s = kmh_to_mm_s(speed_kmh)
        self._target_mm_s = mm_s
        self._accel = self.profile.wire.accel_mm_s2
        self.watch.command(speed_kmh)
        self._write(mm_s, self._accel)

    async def set_incline(self, incline_pct: float) -> None:
        check_incline(self.profile, incline_pct, self.direction is Direction.REVERSE)
        self._check_motion()
        self._incline_cdeg = incline_pct_to_centideg(incline_pct)
        self._write(self._target_mm_s, self._accel)

    async def set_direction(self, direction: Direction) -> None:
        check_direction_change(self.profile, direction, self.at_standstill())
        self._check_motion()
        # The panel has no direction state: the sign of the next setpoint is the direction,
        # and the feedback confirms it once the belts move (checked on every record).
        self.direction = direction
        self.on_direction(direction)

    async def read_direction(self) -> Direction:
        t = self.last_telemetry
        if t is None or abs(t.speed_kmh) <= STANDSTILL_KMH:
            return self.direction
        return Direction.REVERSE if t.speed_kmh < 0 else Direction.FORWARD

    def at_standstill(self) -> bool:
        t = self.last_telemetry
        fresh = t is not None and (self.clock.now() - t.t) * 1000 <= (
            self.profile.control.link_timeout_ms
        )
        return bool(fresh and t is not None and abs(t.speed_kmh) <= STANDSTILL_KMH)

    async def _reader(self) -> None:
        stream = self._stream
        assert stream is not None
        while True:
            data = await stream.read()
            if not data:
                if not self._closed:
                    self.latch("link-lost", "the TCP connection to the panel closed")
                return
            for fb in self._decoder.feed(data):
                self._last_rx = self.clock.now()
                self._first.set()
                self._on_feedback(fb)

    def _on_feedback(self, fb: bt.Feedback) -> None:
        mean = (fb.speed_right + fb.speed_left) / 2
        speed = mm_s_to_kmh(mean)
        moving = abs(speed) > STANDSTILL_KMH
        if abs(fb.speed_right - fb.speed_left) > BELTS_DIFFER_MM_S:
            self.latch("belts-differ", f"right {fb.speed_right} mm/s, left {fb.speed_left} mm/s")
        measured = Direction.REVERSE if mean < 0 else Direction.FORWARD
        if moving and measured is not self.direction and not self.watch.stopping:
            self.latch("wrong-direction", f"commanded {self.direction}, belts run {measured}")
        t = Telemetry(
            t=self.clock.now(),
            speed_kmh=round(speed, 3),
            direction=measured if moving else self.direction,
            incline_pct=centideg_to_pct(fb.incline),
        )
        self.publish(t)

    async def _repeater(self) -> None:
        period = self.profile.wire.poll_ms / 1000
        while True:
            await self.clock.sleep(period)
            if self.clock.now() - self._last_rx > self.profile.control.link_timeout_ms / 1000:
                self.latch("no-reply", "the panel's feedback stopped")
            self._write(self._target_mm_s, self._accel)

    def link_health(self) -> LinkHealth:
        age = self.clock.now() - self._last_rx
        return LinkHealth(
            ok=age * 1000 <= self.profile.control.link_timeout_ms and self._danger is None,
            last_rx_age_s=age,
            requests=self._sent,
            timeouts=0,
            nacks=0,
            garbage_bytes=self._decoder.garbage_bytes,
        )
