"""Woodway driver over RS-232, pyWoodway command set (codec: :mod:`treadctl.protocols.woodway`).

The speed command carries the direction. treadctl starts the belt only with ``A0`` (comm
timer on) and polls every ``wire.poll_ms`` to feed that timer; ``BD`` (master time-out)
latches ``watchdog-expired``. Woodway clamps out-of-range values without an error, so
every value is checked against the profile before it is sent, and the read-back is
checked: a belt running the other way latches ``wrong-direction``, one running faster
than asked latches ``overspeed``. A direction change is one speed command at 0 in the
new direction, sent at measured standstill and confirmed by the direction byte of ``D1``.
"""

from __future__ import annotations

from typing import Any

from treadctl.drivers._request import STANDSTILL_KMH, RequestDriver
from treadctl.drivers.base import (
    NotConfirmed,
    Telemetry,
    check_incline,
    check_speed,
    wire_steps_to_kmh,
)
from treadctl.protocols import woodway as ww
from treadctl.types import Direction


class WoodwayDriver(RequestDriver):
    protocol = "woodway"
    codec = ww

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.direction = Direction.FORWARD
        self.state: int | None = None

    def _reply_lead(self, reply: Any) -> int:
        if isinstance(reply, ww.Ack):
            return int(reply.code) + 0x10
        return {ww.State: 0xD0, ww.Speed: 0xD1, ww.Elevation: 0xD2, ww.Firmware: 0xD3}.get(
            type(reply), -1
        )

    def _is_error(self, reply: Any) -> bool:
        if isinstance(reply, ww.Fault) and reply.error is ww.Error.MASTER_TIMEOUT:
            self.latch("watchdog-expired", "the treadmill reports its comm timer expired (BD)")
        return isinstance(reply, ww.Fault)

    def _stop_message(self) -> Any:
        return ww.Command(ww.Code.AUTO_STOP)

    async def _hello(self) -> None:
        state = await self.request(ww.Command(ww.Code.TEST_COMMS))
        self.state = state.value
        await self._poll_once()

    async def _poll_once(self) -> None:
        speed = await self.request(ww.Command(ww.Code.GET_SPEED))
        elev = await self.request(ww.Command(ww.Code.GET_ELEVATION))
        magnitude = wire_steps_to_kmh(self.profile, speed.tenths_mph)
        moving = magnitude > STANDSTILL_KMH
        measured = Direction.REVERSE if speed.reverse else Direction.FORWARD
        if moving and measured is not self.direction:
            self.latch("wrong-direction", f"commanded {self.direction}, belt runs {measured}")
        self.publish(Telemetry(
            t=self.clock.now(),
            speed_kmh=-magnitude if speed.reverse else magnitude,
            direction=measured if moving else self.direction,
            incline_pct=elev.tenths_pct / 10,
        ))

    async def start(self) -> None:
        await self._start_with(ww.Command(ww.Code.START_WITH_TIMER))

    async def set_speed(self, speed_kmh: float) -> None:
        check_speed(self.profile, speed_kmh)
        self._check_speed_direction(speed_kmh, self.direction)
        reverse = self.direction is Direction.REVERSE
        await self._send_speed(speed_kmh, lambda steps: ww.SetSpeed(steps, reverse=reverse))

    async def set_incline(self, incline_pct: float) -> None:
        check_incline(self.profile, incline_pct, self.direction is Direction.REVERSE)
        epoch = self._check_motion()
        await self.request(ww.SetElevation(round(incline_pct * 10)), motion_epoch=epoch)

    async def set_direction(self, direction: Direction) -> None:
        self._check_direction_change(direction)
        epoch = self._check_motion()
        await self.request(ww.SetSpeed(0, direction is Direction.REVERSE), motion_epoch=epoch)
        reply = await self.request(ww.Command(ww.Code.GET_SPEED))
        got = Direction.REVERSE if reply.reverse else Direction.FORWARD
        if got is not direction:
            raise NotConfirmed(f"asked for {direction}, the treadmill reads back {got}")
        self.direction = direction
        self.on_direction(direction)

    async def read_direction(self) -> Direction:
        reply = await self.request(ww.Command(ww.Code.GET_SPEED))
        got = Direction.REVERSE if reply.reverse else Direction.FORWARD
        self.on_direction(got)
        return got
