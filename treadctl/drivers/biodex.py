"""Biodex RTM 400/500 driver over RS-232 (codec: :mod:`treadctl.protocols.biodex`).

Reverse is the Set Belt Direction command (``84`` + ``F``/``R``), sent only at measured
standstill and confirmed by reading the direction back (``A2``). Every poll reads the
system status (``A7``): a pulled lanyard, a communication fault and a hardware fault latch
a danger, as do repeated NACKs. The manual documents no host watchdog: a dead host leaves
the belt running (docs/protocols.md).
"""

from __future__ import annotations

from typing import Any

from treadctl.drivers._request import RequestDriver
from treadctl.drivers.base import (
    NotConfirmed,
    Refused,
    Telemetry,
    check_incline,
    check_speed,
    wire_steps_to_kmh,
)
from treadctl.protocols import biodex as bx
from treadctl.types import Direction


class BiodexDriver(RequestDriver):
    protocol = "biodex"
    codec = bx

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.direction = Direction.FORWARD  # as last read back
        self.commanded_direction = Direction.FORWARD  # as last confirmed by read-back
        self.identity: str | None = None

    def _reply_lead(self, reply: Any) -> int:
        if isinstance(reply, bx.Ack):
            return int(reply.code)
        if isinstance(reply, bx.Identity):
            return 0x96
        if isinstance(reply, bx.FirmwareVersion):
            return 0x9E
        if isinstance(reply, bx.Direction):
            return 0xA2
        if isinstance(reply, bx.Status):
            return 0xA7
        if isinstance(reply, bx.Value):
            return bx.expected_reply(bx.Read(reply.request))
        return -1

    def _is_error(self, reply: Any) -> bool:
        return isinstance(reply, bx.Nack)

    def _stop_message(self) -> Any:
        return bx.Command(bx.Code.STOP)

    async def _hello(self) -> None:
        reply = await self.request(bx.Command(bx.Code.WHO_ARE_YOU))
        self.identity = reply.kind
        await self._poll_once()

    async def _poll_once(self) -> None:
        status = await self.request(bx.Read(bx.Request.STATUS))
        self._check_status(status)
        speed = await self.request(bx.Read(bx.Request.SPEED))
        elev = await self.request(bx.Read(bx.Request.ELEVATION))
        direction = await self.request(bx.Read(bx.Request.DIRECTION))
        self.direction = Direction.REVERSE if direction.reverse else Direction.FORWARD
        magnitude = wire_steps_to_kmh(self.profile, speed.value)
        if magnitude > 0.05 and self.direction is not self.commanded_direction:
            self.latch("wrong-direction",
                       f"commanded {self.commanded_direction}, belt runs {self.direction}")
        sign = -1.0 if self.direction is Direction.REVERSE else 1.0
        self.publish(Telemetry(
            t=self.clock.now(),
            speed_kmh=sign * magnitude,
            direction=self.direction,
            incline_pct=elev.value * self.profile.wire.elevation_step_pct,
            distance_m=None,  # A4 has 4 digits of an unstated unit
        ))

    def _check_status(self, status: bx.Status) -> None:
        if status.lanyard_pulled:
            self.latch("lanyard", "System Status 1 bit 6: safety lanyard pulled off")
        elif status.hardware_fault:
            self.latch("hardware-fault", f"status {status.comm:02x} {status.system:02x}")
        elif status.comm_fault:
            self.latch("comm-fault", f"status {status.comm:02x} {status.system:02x}")

    # ---------------------------------------------------------------- commands

    async def start(self) -> None:
        await self._start_with(bx.Command(bx.Code.START))

    async def set_speed(self, speed_kmh: float) -> None:
        check_speed(self.profile, speed_kmh)
        self._check_speed_direction(speed_kmh, self.direction)
        await self._send_speed(speed_kmh, lambda steps: bx.SetValue(bx.Code.SET_SPEED, steps))

    async def set_incline(self, incline_pct: float) -> None:
        check_incline(self.profile, incline_pct, self.direction is Direction.REVERSE)
        step = self.profile.wire.elevation_step_pct
        value = round(incline_pct / step)
        if abs(value * step - incline_pct) > 1e-6:
            raise Refused(f"incline {incline_pct:g} % is not a multiple of {step:g} %")
        epoch = self._check_motion()
        await self.request(bx.SetValue(bx.Code.SET_ELEVATION, value), motion_epoch=epoch)

    async def set_direction(self, direction: Direction) -> None:
        self._check_direction_change(direction)
        epoch = self._check_motion()
        await self.request(bx.SetDirection(direction is Direction.REVERSE), motion_epoch=epoch)
        got = await self.read_direction()
        if got is not direction:
            raise NotConfirmed(f"asked for {direction}, the treadmill reads back {got}")
        self.commanded_direction = direction

    async def read_direction(self) -> Direction:
        reply = await self.request(bx.Read(bx.Request.DIRECTION))
        self.direction = Direction.REVERSE if reply.reverse else Direction.FORWARD
        self.on_direction(self.direction)
        return self.direction
